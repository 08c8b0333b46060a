//! Server-to-server credentials (issue 26) on the wire, against in-process endpoints:
//! the `private_key_jwt` client assertion and the JWT-bearer grant's assertion as the
//! token endpoint receives them (verified with the public key, claim by claim), and
//! `tls_client_auth`'s certificate shown to a token endpoint and an upstream that refuse a
//! handshake without one. The same flows against real authorization servers are in
//! `client_auth.rs` (oidc-provider) and `jwt_bearer.rs` (Authlib).

use crate::support::capture::{self, Capture};
use crate::support::redis_topology::Pki;
use crate::support::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

/// `file` copied into `dir` readable by its owner only (`${file:}` refuses others).
fn private_copy(dir: &Path, file: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(file.file_name().unwrap());
    std::fs::copy(file, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    to
}

/// The header and claims of `jwt`, its signature verified with `public` (PEM) and `alg`.
fn verified(jwt: &str, public: &str, alg: Algorithm) -> (jsonwebtoken::Header, Map<String, Value>) {
    let pem = std::fs::read(key_file(public)).unwrap();
    let key = match alg {
        Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
        _ => DecodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    let mut validation = Validation::new(alg);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Map<String, Value>>(jwt, &key, &validation)
        .unwrap_or_else(|e| panic!("the JWT does not verify with {public}: {e}"));
    (data.header, data.claims)
}

/// The form fields of a recorded token request, in order.
fn fields(r: &token_server::Recorded) -> Vec<String> {
    r.form().into_iter().map(|(n, _)| n).collect()
}

/// Client-credentials connection `okta` to `echo`, its token request (scope `api`) to
/// `tokens` at `/oauth2/v1/token`, authenticated by `private_key_jwt` with the key in
/// `key` (`${file:}`) and `more` fields of `client_auth`.
fn private_key_jwt_conn(
    echo: std::net::SocketAddr,
    tokens: std::net::SocketAddr,
    key: &Path,
    more: &str,
) -> Conn {
    Conn::new("okta", echo, CLIENT_CREDENTIALS)
        .secrets("client_id: the-client")
        .configure(&form_request(
            "token_request",
            "/oauth2/v1/token",
            tokens,
            r#"{"grant_type": "client_credentials", "scope": "api"}"#,
        ))
        .field(&format!(
            "client_auth: {{ method: private_key_jwt, key: \"${{file:{}}}\"{more} }}",
            key.display()
        ))
}

#[tokio::test]
async fn private_key_jwt_sends_a_fresh_signed_client_assertion_and_no_secret() {
    let keys = tempfile::tempdir().unwrap();
    let key = private_copy(keys.path(), &key_file("rsa.pem"));
    // Two-second tokens: the second token request shows the assertion is not reused.
    let tokens = TokenServer::start(Reply::token(2, false)).await;
    let echo = Echo::start().await;
    let conn = private_key_jwt_conn(echo.addr, tokens.addr, &key, ", kid: key-1");
    let sc = Sidecar::start(&connections(&[conn])).await;
    let (status, body) = sc.get("/okta/x").await;
    assert_eq!(status, 200, "{body}");
    assert!(echoed_authorization(&body).is_some_and(|a| a.starts_with("Bearer ")));
    tokens.wait_count(2).await;

    let mut jtis = Vec::new();
    for r in tokens.requests().iter().take(2) {
        assert_eq!(
            fields(r),
            [
                "grant_type",
                "scope",
                "client_assertion_type",
                "client_assertion"
            ]
        );
        assert_eq!(r.header("authorization"), None, "no Basic credentials");
        assert_eq!(
            r.field("client_assertion_type").as_deref(),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        let jwt = r.field("client_assertion").unwrap();
        let (header, claims) = verified(&jwt, "rsa-public.pem", Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("key-1"));
        assert_eq!(claims["iss"], "the-client");
        assert_eq!(claims["sub"], "the-client");
        let endpoint = format!("http://{}/oauth2/v1/token", tokens.addr);
        assert_eq!(
            claims["aud"],
            endpoint.as_str(),
            "the token endpoint, by default"
        );
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(lifetime, 60);
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    assert_ne!(jtis[0], jtis[1], "every assertion has its own jti");
}

/// A Box-style `oauth2_jwt_bearer` connection: client id and secret in the form body,
/// an ES256 key from a `${file:}` secret, extra claims.
fn jwt_bearer(
    key: &str,
    tokens: std::net::SocketAddr,
    echo: std::net::SocketAddr,
    body: &str,
) -> Conn {
    Conn::new(key, echo, "oauth2_jwt_bearer")
        .secrets(r#"client_id: box-client, client_secret: box-secret, enterprise: "4242", private_key: "${file:KEY}""#)
        .configure(&form_request("token_request", "/oauth2/token", tokens, body))
        .configure(
            r#"          assertion:
            issuer: <client_id>
            subject: <enterprise>
            audience: https://api.box.com/oauth2/token
            lifetime: 45
            claims: { box_sub_type: enterprise, tier: 2 }
            key: <private_key>
            kid: box-key
"#,
        )
}

#[tokio::test]
async fn jwt_bearer_sends_the_assertion_and_its_grant_type_once() {
    let keys = tempfile::tempdir().unwrap();
    let key = private_copy(keys.path(), &key_file("ec.pem"));
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let echo = Echo::start().await;
    let box_body = r#"{"client_id": "<client_id>", "client_secret": "<client_secret>"}"#;
    let own_grant = r#"{"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}"#;
    let yaml = connections(&[
        jwt_bearer("box", tokens.addr, echo.addr, box_body),
        jwt_bearer("own", tokens.addr, echo.addr, own_grant),
    ])
    .replace("KEY", &key.display().to_string());
    let sc = Sidecar::start(&yaml).await;
    for path in ["/box/files", "/own/files"] {
        let (status, body) = sc.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let requests = tokens.requests();
    let by_field = |name: &str| {
        requests
            .iter()
            .find(|r| fields(r).first().map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("a token request starting with {name}"))
            .clone()
    };
    let boxed = by_field("client_id");
    assert_eq!(
        fields(&boxed),
        ["client_id", "client_secret", "assertion", "grant_type"]
    );
    assert_eq!(
        boxed.field("grant_type").as_deref(),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    let (header, claims) = verified(
        &boxed.field("assertion").unwrap(),
        "ec-public.pem",
        Algorithm::ES256,
    );
    assert_eq!(header.kid.as_deref(), Some("box-key"));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let names: Vec<&str> = claims.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "iat",
            "exp",
            "iss",
            "sub",
            "aud",
            "jti",
            "box_sub_type",
            "tier"
        ]
    );
    assert_eq!(claims["iss"], "box-client");
    assert_eq!(claims["sub"], "4242");
    assert_eq!(claims["aud"], "https://api.box.com/oauth2/token");
    assert_eq!(claims["box_sub_type"], "enterprise");
    assert_eq!(claims["tier"], json!(2), "a number stays a number");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        45
    );
    // A body that names the grant type already keeps its own, once.
    let own = by_field("grant_type");
    assert_eq!(fields(&own), ["grant_type", "assertion"]);
}

/// A connection to `upstream` over https, its client-credentials token request to
/// `token` over https, authenticated by `tls_client_auth` with the test PKI's client
/// certificate (shown to the upstream too when `upstream`).
fn mtls_conn(
    key: &str,
    upstream: &Capture,
    token: &Capture,
    pki: &Pki,
    dir: &Path,
    show_upstream: bool,
) -> String {
    let cert = private_copy(dir, &pki.client_cert());
    let client_key = private_copy(dir, &pki.client_key());
    format!(
        r#"  - key: {key}
    secrets: {{ client_id: mtls-client }}
    client_auth:
      method: tls_client_auth
      cert: "${{file:{cert}}}"
      key: "${{file:{client_key}}}"
      upstream: {show_upstream}
    client_config:
      protocol: https
      host: "127.0.0.1:{upstream}"
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /token
            client_config: {{ protocol: https, host: "127.0.0.1:{token}" }}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "client_credentials"}}'
"#,
        cert = cert.display(),
        client_key = client_key.display(),
        upstream = upstream.addr.port(),
        token = token.addr.port(),
    )
}

#[tokio::test]
async fn tls_client_auth_shows_the_certificate_to_the_token_endpoint_and_when_asked_the_upstream() {
    let pki = Pki::mint();
    let files = tempfile::tempdir().unwrap();
    let token_reply =
        json!({"access_token": "mtls-token", "token_type": "Bearer", "expires_in": 3600});
    let token = Capture::start_requiring_client_cert(token_reply, &pki.ca_pem()).await;
    let upstream = Capture::start_requiring_client_cert(json!({"ok": true}), &pki.ca_pem()).await;
    let yaml = format!(
        "tls: {{ ca_file: \"{}\" }}\nconnections:\n{}{}",
        capture::ca_file().display(),
        mtls_conn("shown", &upstream, &token, &pki, files.path(), true),
        mtls_conn("hidden", &upstream, &token, &pki, files.path(), false),
    );
    let sc = Sidecar::start(&yaml).await;

    let (status, body) = sc.get("/shown/v1/items").await;
    assert_eq!(status, 200, "{body}");
    let seen = upstream.nth(1).await;
    assert_eq!(seen.header("authorization"), Some("Bearer mtls-token"));
    // The token request came over a handshake with the certificate, with client_id added.
    let token_request = token.nth(1).await;
    assert_eq!(
        String::from_utf8_lossy(&token_request.body),
        "grant_type=client_credentials&client_id=mtls-client"
    );

    // Without `upstream: true` the upstream, which requires one, refuses the handshake.
    let (status, body) = sc.get("/hidden/v1/items").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        upstream.count(),
        1,
        "no request arrived without the certificate"
    );
    sc.wait_state("hidden", "ready").await;
}

#[tokio::test]
async fn a_private_key_jwt_key_replaced_on_disk_signs_the_next_token_request_without_a_failed_request(
) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("client.key");
    std::fs::copy(private_copy(keys.path(), &key_file("rsa.pem")), &key).unwrap();
    // Two-second tokens: token requests keep coming while requests flow.
    let tokens = TokenServer::start(Reply::token(2, false)).await;
    let echo = Echo::start().await;
    let conn = private_key_jwt_conn(echo.addr, tokens.addr, &key, "");
    let yaml = format!("admin: {{ watch_config: 100ms }}\n{}", connections(&[conn]));
    let sc = Sidecar::start(&yaml).await;
    let (status, body) = sc.get("/okta/x").await;
    assert_eq!(status, 200, "{body}");

    // Requests flow from a client while the key is replaced (renamed over, as a deploy does).
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, sent, failed, url) = (
            stop.clone(),
            sent.clone(),
            failed.clone(),
            sc.url("/okta/x"),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (status, _) = get_json(&url).await;
                sent.fetch_add(1, Ordering::SeqCst);
                if status != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let before = tokens.count();
    let next = keys.path().join("client.key.next");
    std::fs::copy(private_copy(keys.path(), &key_file("ec.pem")), &next).unwrap();
    std::fs::rename(&next, &key).unwrap();

    // The first token request signed with the new key: ES256, verified with its public key.
    let deadline = tokio::time::Instant::now() + WAIT;
    let rotated = loop {
        let found = tokens.requests().into_iter().skip(before).find(|r| {
            r.field("client_assertion")
                .and_then(|jwt| jsonwebtoken::decode_header(&jwt).ok())
                .is_some_and(|h| h.alg == Algorithm::ES256)
        });
        if let Some(r) = found {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no token request signed with the new key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (_, claims) = verified(
        &rotated.field("client_assertion").unwrap(),
        "ec-public.pem",
        Algorithm::ES256,
    );
    assert_eq!(claims["iss"], "the-client");
    // A little longer under the new key, then no request may have failed.
    tokens.wait_count(tokens.count() + 1).await;
    stop.store(true, Ordering::SeqCst);
    client.await.unwrap();
    assert!(
        sent.load(Ordering::SeqCst) > 20,
        "requests flowed throughout"
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no request failed");
    let last = tokens.requests().pop().unwrap();
    let last_alg = jsonwebtoken::decode_header(&last.field("client_assertion").unwrap())
        .unwrap()
        .alg;
    assert_eq!(last_alg, Algorithm::ES256, "the old key is not used again");
}
