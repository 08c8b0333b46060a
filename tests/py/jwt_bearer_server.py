"""Loopback OAuth 2.0 authorization server for tokenwarden's integration tests: Authlib's
RFC 7523 §2.1 JWT-bearer grant (``JWTBearerGrant``) behind Flask, and a protected resource.

Prints exactly one stdout line, ``LISTENING http://127.0.0.1:<port>``, after binding port 0 on
127.0.0.1, then serves until stdin closes (parent died) or SIGTERM/SIGINT. Logs go to stderr.

Environment:
  JWT_ISSUER           the one trusted issuer (the assertion's ``iss``, also the client id);
                       default ``tw-client``
  JWT_PUBLIC_KEY_FILE  PEM public key (or certificate), RSA or EC, the issuer's assertions must
                       verify with (required). Authlib accepts joserfc's recommended algorithms
                       only: RS256 and ES256 (not PS256).
  JWT_AUDIENCE         the audience assertions must name; default the token endpoint URL,
                       ``http://127.0.0.1:<port>/oauth2/token``
  JWT_SUBJECTS         comma-separated subjects the issuer may act for (``sub``); default ``alice``
  JWT_LEEWAY           clock-skew allowance in seconds when checking ``exp``/``nbf``; default 0
  ACCESS_TTL           lifetime of the access tokens issued, in seconds; default 3
  TOKEN_DELAY_MS       hold every token request this long before checking it; default 0
                       (with a short assertion ``lifetime``, the assertion is really expired when
                       Authlib checks it)

Endpoints:
  POST /oauth2/token   the token endpoint (grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer)
  ANY  /api/<path>     200 and a JSON echo for a currently valid access token issued here,
                       401 ``invalid_token`` otherwise
  GET  /__requests     every token request: form fields, the assertion's decoded (unverified)
                       header and claims, the answer's status, error and issued token
  GET  /__stats        counters: token requests, tokens issued, errors by code, API hits
"""

import base64
import json
import os
import signal
import sys
import threading
import time

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7523 import JWTBearerGrant
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask import jsonify
from flask import request
from joserfc.jwk import ECKey
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

GRANT_TYPE = JWTBearerGrant.GRANT_TYPE


def log(*args):
    print("jwt_bearer_server:", *args, file=sys.stderr, flush=True)


def env_int(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        log(f"{name} must be a non-negative integer, got {raw!r}")
        sys.exit(2)
    return value


def import_public_key(pem):
    """The joserfc key of a PEM public key or certificate (RSA or EC)."""
    if b"CERTIFICATE" in pem:
        public = x509.load_pem_x509_certificate(pem).public_key()
    else:
        public = serialization.load_pem_public_key(pem)
    if isinstance(public, rsa.RSAPublicKey):
        return RSAKey.import_key(public)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ECKey.import_key(public)
    log(f"unsupported public key type {type(public).__name__}")
    sys.exit(2)


ISSUER = os.environ.get("JWT_ISSUER", "tw-client")
KEY_FILE = os.environ.get("JWT_PUBLIC_KEY_FILE")
if not KEY_FILE:
    log("JWT_PUBLIC_KEY_FILE is required")
    sys.exit(2)
with open(KEY_FILE, "rb") as f:
    PUBLIC_KEY = import_public_key(f.read())
SUBJECTS = set(s for s in os.environ.get("JWT_SUBJECTS", "alice").split(",") if s)
LEEWAY = env_int("JWT_LEEWAY", 0)
ACCESS_TTL = env_int("ACCESS_TTL", 3)
TOKEN_DELAY_MS = env_int("TOKEN_DELAY_MS", 0)
if ACCESS_TTL < 1:
    log("ACCESS_TTL must be at least 1")
    sys.exit(2)

# Bind first so the default audience can carry the real port.
app = Flask(__name__)
server = make_server("127.0.0.1", 0, app, threaded=True)
BASE = f"http://127.0.0.1:{server.server_port}"
TOKEN_PATH = "/oauth2/token"
AUDIENCE = os.environ.get("JWT_AUDIENCE") or BASE + TOKEN_PATH

lock = threading.Lock()
tokens = {}  # access_token -> Token
requests_seen = []  # one dict per token request
stats = {"token_requests": 0, "issued": 0, "errors": {}, "api_ok": 0, "api_refused": 0}


class Client(ClientMixin):
    def get_client_id(self):
        return ISSUER

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        return scope or ""

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return False

    def check_endpoint_auth_method(self, method, endpoint):
        return method == "none"

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type == GRANT_TYPE


class User:
    def __init__(self, sub):
        self.sub = sub

    def get_user_id(self):
        return self.sub


class Token:
    def __init__(self, data, client_id, sub):
        self.access_token = data["access_token"]
        self.scope = data.get("scope", "")
        self.issued_at = time.time()
        self.expires_in = data["expires_in"]
        self.client_id = client_id
        self.sub = sub

    def is_expired(self):
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self):
        return False

    def get_scope(self):
        return self.scope


class Grant(JWTBearerGrant):
    LEEWAY = LEEWAY

    def resolve_issuer_client(self, issuer):
        return CLIENT if issuer == ISSUER else None

    def resolve_client_public_key(self, client):
        return PUBLIC_KEY

    def authenticate_user(self, subject):
        return User(subject) if subject in SUBJECTS else None

    def has_granted_permission(self, client, user):
        return True

    def get_audiences(self):
        return [AUDIENCE]


CLIENT = Client()


def save_token(token, req):
    sub = req.user.get_user_id() if getattr(req, "user", None) else None
    with lock:
        tokens[token["access_token"]] = Token(token, ISSUER, sub)
        stats["issued"] += 1


app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {GRANT_TYPE: ACCESS_TTL}
authorization = AuthorizationServer(
    app,
    query_client=lambda client_id: CLIENT if client_id == ISSUER else None,
    save_token=save_token,
)
authorization.register_grant(Grant)


class Validator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        with lock:
            return tokens.get(token_string)


require_oauth = ResourceProtector()
require_oauth.register_token_validator(Validator())


def b64json(part):
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except Exception:  # an unreadable part is recorded as absent
        return None


@app.post(TOKEN_PATH)
def token_endpoint():
    if TOKEN_DELAY_MS:
        time.sleep(TOKEN_DELAY_MS / 1000)
    form = list(request.form.items(multi=True))
    assertion = request.form.get("assertion", "")
    parts = assertion.split(".")
    record = {
        "at": time.time(),
        "content_type": request.headers.get("Content-Type"),
        "form": form,
        "assertion_header": b64json(parts[0]) if len(parts) == 3 else None,
        "assertion_claims": b64json(parts[1]) if len(parts) == 3 else None,
    }
    response = authorization.create_token_response()
    body = response.get_json(silent=True) or {}
    record["status"] = response.status_code
    record["error"] = body.get("error")
    record["error_description"] = body.get("error_description")
    record["access_token"] = body.get("access_token")
    with lock:
        stats["token_requests"] += 1
        if record["error"]:
            errors = stats["errors"]
            errors[record["error"]] = errors.get(record["error"], 0) + 1
        requests_seen.append(record)
    if record["error"]:
        log(f"token request refused: {record['error']} ({record['error_description']})")
    else:
        log(f"token issued, expires_in {body.get('expires_in')}")
    return response


@app.route("/api/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@app.route("/api/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def api(rest):
    # ResourceProtector's check, unrolled so that a refusal is counted too.
    try:
        token = require_oauth.acquire_token()
    except OAuth2Error as error:
        with lock:
            stats["api_refused"] += 1
        require_oauth.raise_error_response(error)
    with lock:
        stats["api_ok"] += 1
    return jsonify(
        {
            "path": request.path,
            "method": request.method,
            "query": request.query_string.decode(),
            "client_id": token.client_id,
            "sub": token.sub,
            "scope": token.scope,
            "access_token": token.access_token,
            "body": request.get_data(as_text=True),
        }
    )


@app.get("/__requests")
def recorded():
    with lock:
        return jsonify(requests_seen)


@app.get("/__stats")
def counters():
    with lock:
        return jsonify(stats)


def exit_when_stdin_closes():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: os._exit(0))
threading.Thread(target=exit_when_stdin_closes, daemon=True).start()

log(f"issuer {ISSUER!r}, audience {AUDIENCE!r}, access ttl {ACCESS_TTL}s, leeway {LEEWAY}s")
print(f"LISTENING {BASE}", flush=True)
server.serve_forever()
