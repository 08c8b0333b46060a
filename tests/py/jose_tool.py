"""Key and JWT chores of the Python-backed integration tests, done with `cryptography` and
joserfc so the Rust tests need no JOSE code of their own.

  jose_tool.py keygen rsa|ec
      a fresh RSA-2048 or P-256 key pair; prints JSON
      {"private_pem": PKCS#8 PEM, "public_pem": SubjectPublicKeyInfo PEM}
  jose_tool.py verify PUBLIC_PEM_FILE JWT
      checks the JWT's signature with the public key (alg from its header: RS256, PS256 or
      ES256); prints JSON {"valid": bool, "header": {...}, "claims": {...}, "error": str|null}
      with header and claims in the order they were encoded.
"""

import base64
import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.jwk import RSAKey


def keygen(kind):
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        sys.exit(f"keygen: unknown key kind {kind!r} (rsa | ec)")
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {"private_pem": private_pem.decode(), "public_pem": public_pem.decode()}


def part(segment):
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def verify(public_pem_file, token):
    with open(public_pem_file, "rb") as f:
        public = serialization.load_pem_public_key(f.read())
    key = RSAKey.import_key(public) if isinstance(public, rsa.RSAPublicKey) else ECKey.import_key(public)
    segments = token.split(".")
    if len(segments) != 3:
        return {"valid": False, "header": None, "claims": None, "error": "not a compact JWS"}
    header, claims = part(segments[0]), part(segments[1])
    try:
        jws.deserialize_compact(token, key, algorithms=[header.get("alg")])
        return {"valid": True, "header": header, "claims": claims, "error": None}
    except (JoseError, ValueError) as e:
        return {"valid": False, "header": header, "claims": claims, "error": repr(e)}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "keygen":
        out = keygen(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "verify":
        out = verify(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
