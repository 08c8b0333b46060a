//! What a signed token request costs tokenwarden (issue 26): reading a key and signing one
//! JWT with it, per algorithm — the work of each `oauth2_jwt_bearer` or
//! `google_cloud_service_account` token request (the key is read and the assertion signed
//! each time, since its values come from the connection's params) and of each
//! `private_key_jwt` token request (the key read once at load, signed each time). Never on
//! the proxied request path.
//!
//! `cargo bench --bench signing` (a few seconds after the build).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{Map, Value};
use tokenwarden::jwt::{PrivateKey, SigningKey};

const RSA: &str = include_str!("../tests/fixtures/keys/rsa.pem");
const EC: &str = include_str!("../tests/fixtures/keys/ec.pem");

/// The claims of a typical assertion.
fn claims() -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("iss".into(), "sa@project.iam.gserviceaccount.com".into());
    c.insert("aud".into(), "https://oauth2.googleapis.com/token".into());
    c.insert(
        "scope".into(),
        "https://www.googleapis.com/auth/cloud-platform".into(),
    );
    c.insert("iat".into(), 1_800_000_000u64.into());
    c.insert("exp".into(), 1_800_003_600u64.into());
    c
}

fn signing(c: &mut Criterion) {
    let claims = claims();
    for (alg, pem) in [("RS256", RSA), ("PS256", RSA), ("ES256", EC)] {
        let key = PrivateKey::parse(pem).unwrap();
        let signer = SigningKey::new(&key, Some(alg), None, None).unwrap();
        c.bench_function(&format!("sign {alg} (key read at load)"), |b| {
            b.iter(|| signer.sign(black_box(&claims)).unwrap())
        });
        c.bench_function(&format!("read the key and sign {alg}"), |b| {
            b.iter(|| {
                let key = PrivateKey::parse(black_box(pem)).unwrap();
                SigningKey::new(&key, Some(alg), None, None)
                    .unwrap()
                    .sign(&claims)
                    .unwrap()
            })
        });
    }
}

criterion_group!(benches, signing);
criterion_main!(benches);
