//! Signed JWTs for the token endpoint (RFC 7523): the assertion of the JWT-bearer grant
//! (§2.1: `oauth2_jwt_bearer`, `google_cloud_service_account`) and the client assertion of
//! `private_key_jwt` client authentication (§2.2). A [`SigningKey`] is read once from a PEM
//! (PKCS#8, PKCS#1 RSA or SEC1 EC) or a private JWK; `jsonwebtoken` (over ring) signs.
//! No crypto here: this module only picks the key's form and the algorithm, and checks
//! that they fit together before the first token request needs them.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};
use serde_json::{Map, Value};

/// Why a key, an algorithm or a certificate cannot be used. Never quotes key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is neither a PEM private key nor a private JWK{0}")]
    Unreadable(String),
    #[error("the key is a {0} key; RS256 and PS256 need an RSA key, ES256 a P-256 EC key")]
    Unsupported(String),
    #[error("unknown alg `{0}`: expected RS256, PS256 or ES256")]
    UnknownAlg(String),
    #[error("alg {alg} cannot sign with this {kind} key")]
    Mismatch {
        alg: &'static str,
        kind: &'static str,
    },
    #[error("the key is encrypted (a passphrase-protected PEM); give tokenwarden the decrypted key, e.g. from `openssl pkey -in key.pem -out decrypted.pem`")]
    Encrypted,
    #[error("the key cannot sign: {0}")]
    Refused(String),
    #[error("the certificate {0}")]
    Certificate(String),
}

/// The kind of a private key, which decides the algorithms it can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rsa,
    P256,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rsa => "RSA",
            Kind::P256 => "P-256 EC",
        }
    }
}

/// A private key read from its text: the DER `jsonwebtoken` signs with (PKCS#1 for RSA,
/// PKCS#8 for EC, as ring wants them) and the form rustls checks certificates against.
pub struct PrivateKey {
    kind: Kind,
    signing_der: Vec<u8>,
    tls_der: PrivateKeyDer<'static>,
    /// A JWK's own `kid`.
    jwk_kid: Option<String>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.kind.name())
    }
}

impl PrivateKey {
    /// Reads a PEM private key or a private JWK (JSON). A PEM pasted with `\n` escapes (as
    /// in a service-account key file's JSON string) is read too, as Fides does.
    pub fn parse(text: &str) -> Result<PrivateKey, KeyError> {
        let text = text.trim();
        if text.starts_with('{') {
            return from_jwk(text);
        }
        let pem = text.replace("\\n", "\n");
        if pem.lines().any(|l| {
            l.starts_with("-----BEGIN ENCRYPTED") || l.starts_with("Proc-Type: 4,ENCRYPTED")
        }) {
            return Err(KeyError::Encrypted);
        }
        let mut reader = pem.as_bytes();
        let mut found = None;
        for item in rustls_pemfile::read_all(&mut reader) {
            let item = item.map_err(|e| KeyError::Unreadable(format!(" ({e:?})")))?;
            match item {
                rustls_pemfile::Item::Pkcs1Key(k) => found = Some(PrivateKeyDer::Pkcs1(k)),
                rustls_pemfile::Item::Pkcs8Key(k) => found = Some(PrivateKeyDer::Pkcs8(k)),
                rustls_pemfile::Item::Sec1Key(k) => found = Some(PrivateKeyDer::Sec1(k)),
                _ => continue,
            }
            break;
        }
        let der = found.ok_or_else(|| KeyError::Unreadable(String::new()))?;
        from_der(der)
    }

    /// The key with a certificate that must hold its public key (rustls compares them).
    pub fn certified(
        &self,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<rustls::sign::CertifiedKey, KeyError> {
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(chain, self.tls_der.clone_key(), &provider).map_err(
            |e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    KeyError::Certificate("does not match the key".into())
                }
                other => KeyError::Certificate(format!("cannot be used: {other}")),
            },
        )
    }
}

fn from_der(der: PrivateKeyDer<'static>) -> Result<PrivateKey, KeyError> {
    use p256::pkcs8::DecodePrivateKey;
    let bad = |what: &str| KeyError::Unreadable(format!(" (an unreadable {what} key)"));
    match der {
        PrivateKeyDer::Pkcs1(k) => Ok(PrivateKey {
            kind: Kind::Rsa,
            signing_der: k.secret_pkcs1_der().to_vec(),
            tls_der: PrivateKeyDer::Pkcs1(k),
            jwk_kid: None,
        }),
        PrivateKeyDer::Sec1(k) => ec_key(
            p256::SecretKey::from_sec1_der(k.secret_sec1_der())
                .map_err(|_| KeyError::Unsupported("non-P-256 EC".into()))?,
        ),
        PrivateKeyDer::Pkcs8(k) => {
            let info =
                pkcs8::PrivateKeyInfo::try_from(k.secret_pkcs8_der()).map_err(|_| bad("PKCS#8"))?;
            match info.algorithm.oid.to_string().as_str() {
                RSA_ENCRYPTION => Ok(PrivateKey {
                    kind: Kind::Rsa,
                    signing_der: info.private_key.to_vec(),
                    tls_der: PrivateKeyDer::Pkcs8(k.clone_key()),
                    jwk_kid: None,
                }),
                EC_PUBLIC_KEY => ec_key(
                    p256::SecretKey::from_pkcs8_der(k.secret_pkcs8_der())
                        .map_err(|_| KeyError::Unsupported("non-P-256 EC".into()))?,
                ),
                ED25519 => Err(KeyError::Unsupported("Ed25519".into())),
                other => Err(KeyError::Unsupported(format!("OID {other}"))),
            }
        }
        _ => Err(KeyError::Unreadable(String::new())),
    }
}

/// A P-256 key, in the PKCS#8 form (public key included) that ring reads.
fn ec_key(secret: p256::SecretKey) -> Result<PrivateKey, KeyError> {
    use p256::pkcs8::EncodePrivateKey;
    let pkcs8 = secret
        .to_pkcs8_der()
        .map_err(|_| KeyError::Unreadable(" (an unreadable EC key)".into()))?;
    let bytes = pkcs8.as_bytes().to_vec();
    Ok(PrivateKey {
        kind: Kind::P256,
        tls_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes.clone())),
        signing_der: bytes,
        jwk_kid: None,
    })
}

const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const ED25519: &str = "1.3.101.112";

/// A private JWK: RSA (n, e, d, p, q, dp, dq, qi) or EC P-256 (d, x, y).
fn from_jwk(text: &str) -> Result<PrivateKey, KeyError> {
    let jwk: Map<String, Value> = serde_json::from_str(text)
        .map_err(|_| KeyError::Unreadable(" (the JWK is not a JSON object)".into()))?;
    let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
    let field = |name: &str| -> Result<Vec<u8>, KeyError> {
        use base64::Engine;
        let text = jwk.get(name).and_then(Value::as_str).ok_or_else(|| {
            KeyError::Unreadable(format!(" (the JWK has no `{name}`: is it the public key?)"))
        })?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| KeyError::Unreadable(format!(" (the JWK's `{name}` is not base64url)")))
    };
    let mut key = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let parts: Vec<Vec<u8>> = ["n", "e", "d", "p", "q", "dp", "dq", "qi"]
                .iter()
                .map(|n| field(n))
                .collect::<Result<_, _>>()?;
            let der = pkcs1::der::Encode::to_der(&pkcs1::RsaPrivateKey {
                modulus: uint(&parts[0])?,
                public_exponent: uint(&parts[1])?,
                private_exponent: uint(&parts[2])?,
                prime1: uint(&parts[3])?,
                prime2: uint(&parts[4])?,
                exponent1: uint(&parts[5])?,
                exponent2: uint(&parts[6])?,
                coefficient: uint(&parts[7])?,
                other_prime_infos: None,
            })
            .map_err(|_| KeyError::Unreadable(" (the RSA JWK cannot be encoded)".into()))?;
            from_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)))?
        }
        Some("EC") => {
            if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
                return Err(KeyError::Unsupported("non-P-256 EC".into()));
            }
            let secret = p256::SecretKey::from_slice(&field("d")?).map_err(|_| {
                KeyError::Unreadable(" (the JWK's `d` is not a P-256 private key)".into())
            })?;
            ec_key(secret)?
        }
        Some(other) => return Err(KeyError::Unsupported(format!("JWK kty {other}"))),
        None => return Err(KeyError::Unreadable(" (the JWK has no `kty`)".into())),
    };
    key.jwk_kid = kid;
    Ok(key)
}

/// A big-endian integer of an RSA JWK, for DER.
fn uint(bytes: &[u8]) -> Result<pkcs1::UintRef<'_>, KeyError> {
    pkcs1::UintRef::new(bytes)
        .map_err(|_| KeyError::Unreadable(" (a JWK number is malformed)".into()))
}

/// A key ready to sign JWTs: its algorithm chosen and checked, its header fixed.
pub struct SigningKey {
    key: EncodingKey,
    header: Header,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?})", self.header.alg)
    }
}

/// The algorithms tokenwarden signs with.
pub const ALGORITHMS: [&str; 3] = ["RS256", "PS256", "ES256"];

impl SigningKey {
    /// `alg` (default: RS256 for an RSA key, ES256 for P-256) checked against the key;
    /// `kid` (default: the JWK's); with a `certificate` (PEM), its SHA-1 and SHA-256
    /// thumbprints go in `x5t` and `x5t#S256` (what Entra ID expects), once it is checked
    /// to hold the key's public half.
    pub fn new(
        key: &PrivateKey,
        alg: Option<&str>,
        kid: Option<String>,
        certificate: Option<&str>,
    ) -> Result<SigningKey, KeyError> {
        let alg = match alg {
            None if key.kind == Kind::Rsa => Algorithm::RS256,
            None => Algorithm::ES256,
            Some("RS256") => Algorithm::RS256,
            Some("PS256") => Algorithm::PS256,
            Some("ES256") => Algorithm::ES256,
            Some(other) => return Err(KeyError::UnknownAlg(other.to_owned())),
        };
        let fits = match alg {
            Algorithm::ES256 => key.kind == Kind::P256,
            _ => key.kind == Kind::Rsa,
        };
        if !fits {
            return Err(KeyError::Mismatch {
                alg: alg_name(alg),
                kind: key.kind.name(),
            });
        }
        let mut header = Header::new(alg);
        header.kid = kid.or_else(|| key.jwk_kid.clone());
        if let Some(pem) = certificate {
            let chain = certificates(pem)?;
            key.certified(chain.clone())?;
            let (sha1, sha256) = thumbprints(&chain[0]);
            header.x5t = Some(sha1);
            header.x5t_s256 = Some(sha256);
        }
        let encoding = match key.kind {
            Kind::Rsa => EncodingKey::from_rsa_der(&key.signing_der),
            Kind::P256 => EncodingKey::from_ec_der(&key.signing_der),
        };
        Ok(SigningKey {
            key: encoding,
            header,
        })
    }

    /// Whether the key in `text` reads and signs with `alg` (the load-time check of a key
    /// that is read again for each token request).
    pub fn try_key(text: &str, alg: Option<&str>) -> Result<(), KeyError> {
        SigningKey::new(&PrivateKey::parse(text)?, alg, None, None)?.check()
    }

    /// Signs once, to learn at load (not at the first token request) whether ring refuses
    /// the key — an RSA modulus too short, say.
    pub fn check(&self) -> Result<(), KeyError> {
        self.sign(&Map::new()).map(drop)
    }

    /// The signed JWT (compact form) of `claims`.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, KeyError> {
        jsonwebtoken::encode(&self.header, claims, &self.key).map_err(|e| {
            let reason = e.to_string();
            KeyError::Refused(if reason.contains("TooSmall") {
                "RSA keys shorter than 2048 bits are refused".into()
            } else {
                reason
            })
        })
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::PS256 => "PS256",
        Algorithm::ES256 => "ES256",
        _ => "RS256",
    }
}

/// The certificates of a PEM chain, the end-entity one first; at least one.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| KeyError::Certificate("is not a readable PEM certificate".into()))?;
    if chain.is_empty() {
        return Err(KeyError::Certificate(
            "has no `-----BEGIN CERTIFICATE-----` block".into(),
        ));
    }
    Ok(chain)
}

/// base64url of the SHA-1 and SHA-256 digests of a certificate's DER (RFC 7515 §4.1.7–8).
fn thumbprints(cert: &CertificateDer<'_>) -> (String, String) {
    use base64::Engine;
    use sha1::Digest as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    (
        b64.encode(sha1::Sha1::digest(cert.as_ref())),
        b64.encode(sha2::Sha256::digest(cert.as_ref())),
    )
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh `jti`: 128 random bits, base64url.
pub fn jti() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const RSA: &str = include_str!("../tests/fixtures/keys/rsa.pem");
    const RSA_PKCS1: &str = include_str!("../tests/fixtures/keys/rsa-pkcs1.pem");
    const RSA_JWK: &str = include_str!("../tests/fixtures/keys/rsa.jwk.json");
    const RSA_PUBLIC: &str = include_str!("../tests/fixtures/keys/rsa-public.pem");
    const RSA_CERT: &str = include_str!("../tests/fixtures/keys/rsa-cert.pem");
    const EC: &str = include_str!("../tests/fixtures/keys/ec.pem");
    const EC_SEC1: &str = include_str!("../tests/fixtures/keys/ec-sec1.pem");
    const EC_JWK: &str = include_str!("../tests/fixtures/keys/ec.jwk.json");
    const EC_PUBLIC: &str = include_str!("../tests/fixtures/keys/ec-public.pem");
    const EC_P384: &str = include_str!("../tests/fixtures/keys/ec-p384.pem");
    const RSA_1024: &str = include_str!("../tests/fixtures/keys/rsa-1024.pem");

    fn claims() -> Map<String, Value> {
        let mut c = Map::new();
        c.insert("iss".into(), "me".into());
        c.insert("exp".into(), (now() + 60).into());
        c
    }

    /// Signs with `key` and `alg`, verifies with the public key; the header's parts.
    fn round_trip(key: &str, alg: Option<&str>, public: &str) -> Header {
        let signer = SigningKey::new(&PrivateKey::parse(key).unwrap(), alg, None, None).unwrap();
        let jwt = signer.sign(&claims()).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        let decoding = match header.alg {
            Algorithm::ES256 => DecodingKey::from_ec_pem(public.as_bytes()),
            _ => DecodingKey::from_rsa_pem(public.as_bytes()),
        }
        .unwrap();
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Map<String, Value>>(&jwt, &decoding, &validation)
            .expect("the public key verifies the signature");
        assert_eq!(data.claims["iss"], "me");
        header
    }

    #[test]
    fn every_key_form_signs_with_its_default_and_allowed_algorithms() {
        for key in [RSA, RSA_PKCS1, RSA_JWK] {
            assert_eq!(round_trip(key, None, RSA_PUBLIC).alg, Algorithm::RS256);
            assert_eq!(
                round_trip(key, Some("PS256"), RSA_PUBLIC).alg,
                Algorithm::PS256
            );
        }
        for key in [EC, EC_SEC1, EC_JWK] {
            assert_eq!(round_trip(key, None, EC_PUBLIC).alg, Algorithm::ES256);
        }
        // A key pasted as a JSON string's text, with `\n` escapes.
        round_trip(&RSA.replace('\n', "\\n"), None, RSA_PUBLIC);
        let header = round_trip(RSA, None, RSA_PUBLIC);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid, None);
    }

    #[test]
    fn a_jwk_names_its_kid_unless_one_is_configured() {
        let key = PrivateKey::parse(RSA_JWK).unwrap();
        let kid = |configured: Option<&str>| {
            let signer = SigningKey::new(&key, None, configured.map(Into::into), None).unwrap();
            jsonwebtoken::decode_header(&signer.sign(&claims()).unwrap())
                .unwrap()
                .kid
        };
        assert_eq!(kid(None).as_deref(), Some("rsa-jwk-1"));
        assert_eq!(kid(Some("mine")).as_deref(), Some("mine"));
    }

    #[test]
    fn an_algorithm_the_key_cannot_sign_with_is_refused() {
        let rsa = PrivateKey::parse(RSA).unwrap();
        let ec = PrivateKey::parse(EC).unwrap();
        let err = |key: &PrivateKey, alg| SigningKey::new(key, Some(alg), None, None).unwrap_err();
        assert_eq!(
            err(&ec, "RS256").to_string(),
            "alg RS256 cannot sign with this P-256 EC key"
        );
        assert_eq!(
            err(&rsa, "ES256").to_string(),
            "alg ES256 cannot sign with this RSA key"
        );
        assert!(matches!(err(&rsa, "HS256"), KeyError::UnknownAlg(_)));
        assert!(matches!(
            PrivateKey::parse(EC_P384).unwrap_err(),
            KeyError::Unsupported(_)
        ));
    }

    #[test]
    fn unreadable_keys_are_refused_without_quoting_them() {
        for text in [
            "not a key s3cr3t",
            "-----BEGIN PRIVATE KEY-----\ns3cr3t\n-----END PRIVATE KEY-----\n",
            RSA_PUBLIC,
            r#"{"kty":"RSA","n":"s3cr3t"}"#,
        ] {
            let message = PrivateKey::parse(text).unwrap_err().to_string();
            assert!(!message.contains("s3cr3t"), "{message}");
        }
        assert!(
            PrivateKey::parse(r#"{"kty":"EC","crv":"P-256","x":"a","y":"b"}"#)
                .unwrap_err()
                .to_string()
                .contains("public key")
        );
    }

    #[test]
    fn a_certificate_gives_its_thumbprints_and_must_hold_the_key() {
        use base64::Engine;
        use sha1::Digest as _;
        let rsa = PrivateKey::parse(RSA).unwrap();
        let signer = SigningKey::new(&rsa, None, None, Some(RSA_CERT)).unwrap();
        let header = jsonwebtoken::decode_header(&signer.sign(&claims()).unwrap()).unwrap();
        let der = certificates(RSA_CERT).unwrap().remove(0);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(
            header.x5t,
            Some(b64.encode(sha1::Sha1::digest(der.as_ref())))
        );
        assert_eq!(
            header.x5t_s256,
            Some(b64.encode(sha2::Sha256::digest(der.as_ref())))
        );
        let other = PrivateKey::parse(RSA_JWK.replace("rsa-jwk-1", "x").as_str()).unwrap();
        assert!(
            SigningKey::new(&other, None, None, Some(RSA_CERT)).is_ok(),
            "the same key as a JWK"
        );
        let ec = PrivateKey::parse(EC).unwrap();
        assert_eq!(
            SigningKey::new(&ec, None, None, Some(RSA_CERT))
                .unwrap_err()
                .to_string(),
            "the certificate does not match the key"
        );
        assert!(matches!(
            SigningKey::new(&rsa, None, None, Some(RSA)).unwrap_err(),
            KeyError::Certificate(_)
        ));
    }

    #[test]
    fn encrypted_and_short_keys_are_refused_in_words() {
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            PrivateKey::parse(encrypted).unwrap_err(),
            KeyError::Encrypted
        );
        let short = PrivateKey::parse(RSA_1024).unwrap();
        assert_eq!(
            SigningKey::new(&short, None, None, None)
                .unwrap()
                .check()
                .unwrap_err()
                .to_string(),
            "the key cannot sign: RSA keys shorter than 2048 bits are refused"
        );
    }

    #[test]
    fn every_jti_differs() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| jti()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
