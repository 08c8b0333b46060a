//! `oauth2_jwt_bearer` (issue 26, RFC 7523 §2.1) against a real authorization server:
//! Authlib's `JWTBearerGrant` (tests/py/jwt_bearer_server.py) trusting one issuer with one
//! public key, issuing 3-second access tokens and checking them at its `/api/…` resource.
//! The sidecar signs an assertion for every token request (there is no refresh token),
//! injects the token, and renews it at expiry; an assertion Authlib refuses — signed with
//! another key, or expired when checked — is reported as Authlib's `invalid_grant`, terminal,
//! and not retried.
//!
//! Needs the packages of tests/py/requirements.txt (tests/deps.sh); without them these
//! tests fail.

use crate::support::logs::Logs;
use crate::support::python::{JwtBearerServer, KeyPair, JWT_ISSUER, JWT_SUBJECT};
use crate::support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = "box";
/// Access-token lifetime at the server, in seconds.
const ACCESS_TTL: u64 = 3;
const JWT_BEARER: &str = "oauth2_jwt_bearer";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Proxied requests are sent this often while tokens come and go.
const REQUEST_EVERY: Duration = Duration::from_millis(100);

/// The `assertion:` block of a test connection, beyond issuer, audience and key.
struct Assertion {
    alg: &'static str,
    /// None: the default lifetime (300 s).
    lifetime: Option<u64>,
    kid: bool,
    scope: Option<&'static str>,
}

/// Connection [`KEY`] to the server (its `/api/…` is the upstream, its `/oauth2/token` the
/// token endpoint), signing with `key`: issuer `<client_id>`, subject alice, the server's
/// token URL as audience, an extra claim from a placeholder. The private key is in the
/// secrets, or read from `key_file` (`${file:…}`) when given.
fn jwt_conn(
    server: &JwtBearerServer,
    key: &KeyPair,
    a: &Assertion,
    key_file: Option<&Path>,
) -> Conn {
    let private_key = match key_file {
        Some(f) => format!("\"${{file:{}}}\"", f.display()),
        None => key.private_yaml(),
    };
    let mut assertion = format!(
        "          assertion:\n            issuer: <client_id>\n            subject: {JWT_SUBJECT}\n            audience: \"{}\"\n            key: <private_key>\n            alg: {}\n            claims:\n              tenant: <tenant>\n",
        server.token_url, a.alg
    );
    if let Some(l) = a.lifetime {
        assertion.push_str(&format!("            lifetime: {l}\n"));
    }
    if a.kid {
        assertion.push_str("            kid: <key_id>\n");
    }
    if let Some(s) = a.scope {
        assertion.push_str(&format!("            scope: \"{s}\"\n"));
    }
    Conn::new(KEY, server.server.authority(), JWT_BEARER)
        .secrets(&format!(
            "client_id: {JWT_ISSUER}, tenant: acme, key_id: key-1, private_key: {private_key}"
        ))
        .configure(
            "          token_request:\n            method: POST\n            path: /oauth2/token\n            headers: [{ name: Content-Type, value: application/x-www-form-urlencoded }]\n",
        )
        .configure(&assertion)
}

/// `GET /{KEY}/api/items?n=…` through the proxy every [`REQUEST_EVERY`] until at least
/// `min_tokens` tokens were issued and `min_time` has passed; every request must reach the
/// protected resource with a valid token. Returns the distinct tokens it saw there.
async fn keep_calling(
    sc: &Sidecar,
    server: &JwtBearerServer,
    min_tokens: u64,
    min_time: Duration,
) -> BTreeSet<String> {
    let started = Instant::now();
    let deadline = started + min_time + Duration::from_secs(4 * ACCESS_TTL + 5);
    let mut seen = BTreeSet::new();
    for sent in 1.. {
        let (status, body) = sc.get(&format!("/{KEY}/api/items?n={sent}")).await;
        assert_eq!(
            status,
            200,
            "proxied request #{sent}: {body}; sidecar {}; server {}\n{}",
            sc.status(KEY).await,
            server.stats().await,
            server.server.stderr_tail(3000)
        );
        assert_eq!(body["path"], "/api/items", "{body}");
        assert_eq!(body["query"], format!("n={sent}"), "{body}");
        assert_eq!(body["client_id"], JWT_ISSUER, "{body}");
        assert_eq!(body["sub"], JWT_SUBJECT, "{body}");
        seen.insert(body["access_token"].as_str().unwrap().to_owned());
        let issued = server.stats().await["issued"].as_u64().unwrap();
        if issued >= min_tokens && started.elapsed() >= min_time {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{issued} tokens after {sent} requests in {:?}; sidecar {}",
            started.elapsed(),
            sc.status(KEY).await
        );
        tokio::time::sleep(REQUEST_EVERY).await;
    }
    seen
}

/// Every token request the server saw was granted and carried a well-formed assertion:
/// grant_type and assertion in a form body; header {alg, typ JWT, kid if configured};
/// claims iss, sub, aud, iat, exp = iat + `lifetime`, a fresh jti, the extra claim, and
/// `scope` if configured. Returns the requests.
async fn check_assertions(server: &JwtBearerServer, a: &Assertion, lifetime: i64) -> Vec<Value> {
    let requests = server.requests().await;
    let mut jtis = BTreeSet::new();
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r["status"], 200, "token request #{i}: {r}");
        assert_eq!(
            r["content_type"], "application/x-www-form-urlencoded",
            "{r}"
        );
        let form = r["form"].as_array().unwrap();
        let field = |name: &str| -> Vec<&str> {
            form.iter()
                .filter(|f| f[0] == name)
                .map(|f| f[1].as_str().unwrap())
                .collect()
        };
        assert_eq!(field("grant_type"), [GRANT_TYPE], "{r}");
        assert_eq!(field("assertion").len(), 1, "{r}");

        let mut header = json!({"alg": a.alg, "typ": "JWT"});
        if a.kid {
            header["kid"] = json!("key-1");
        }
        assert_eq!(r["assertion_header"], header, "token request #{i}");

        let claims = &r["assertion_claims"];
        assert_eq!(claims["iss"], JWT_ISSUER, "{claims}");
        assert_eq!(claims["sub"], JWT_SUBJECT, "{claims}");
        assert_eq!(claims["aud"], server.token_url.as_str(), "{claims}");
        assert_eq!(claims["tenant"], "acme", "extra claim: {claims}");
        let (iat, exp) = (
            claims["iat"].as_i64().expect("iat"),
            claims["exp"].as_i64().expect("exp"),
        );
        assert_eq!(exp - iat, lifetime, "exp = iat + lifetime: {claims}");
        assert!((iat - unix_now()).abs() < 60, "iat is now-ish: {claims}");
        match a.scope {
            Some(s) => assert_eq!(claims["scope"], s, "{claims}"),
            None => assert!(claims.get("scope").is_none(), "{claims}"),
        }
        let jti = claims["jti"].as_str().expect("jti");
        assert!(jtis.insert(jti.to_owned()), "jti {jti} used twice");
        let mut names: Vec<&str> = claims
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        let mut expected = vec!["aud", "exp", "iat", "iss", "jti", "sub", "tenant"];
        if a.scope.is_some() {
            expected.push("scope");
        }
        expected.sort_unstable();
        assert_eq!(names, expected, "no other claims: {claims}");
    }
    requests
}

/// RS256 with a `kid`, a 60 s assertion lifetime and an extra claim: a token is obtained
/// and injected (Authlib's resource answers 200), and renewed as each 3 s token expires —
/// several token requests across more than two lifetimes, every proxied request 200. The
/// private key never reaches a log line.
#[tokio::test]
async fn rs256_tokens_are_obtained_injected_and_renewed_at_expiry() {
    let (logs, _capture) = Logs::capture();
    let key = KeyPair::rsa().await;
    let server = JwtBearerServer::start(&key.public_pem, ACCESS_TTL, &[]).await;
    let a = Assertion {
        alg: "RS256",
        lifetime: Some(60),
        kid: true,
        scope: None,
    };
    let sc = Sidecar::start(&connections(&[jwt_conn(&server, &key, &a, None)])).await;
    let st = sc.wait_state(KEY, "ready").await;
    assert_eq!(st["has_token"], true, "{st}");
    assert_eq!(st["has_refresh_token"], false, "no refresh token: {st}");

    let lifetimes = Duration::from_millis(2 * ACCESS_TTL * 1000 + 500);
    let seen = keep_calling(&sc, &server, 3, lifetimes).await;
    let stats = server.stats().await;
    assert!(
        seen.len() >= 3,
        "{} distinct tokens injected; {stats}",
        seen.len()
    );
    assert_eq!(stats["errors"], json!({}), "{stats}");
    assert_eq!(
        stats["api_refused"], 0,
        "no request with a stale token: {stats}"
    );

    let requests = check_assertions(&server, &a, 60).await;
    let issued: BTreeSet<String> = requests
        .iter()
        .map(|r| r["access_token"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        seen.is_subset(&issued),
        "only tokens issued by the server were injected"
    );
    assert!(
        requests.len() <= seen.len() + 1,
        "{} token requests for {} tokens used: not renewed needlessly",
        requests.len(),
        seen.len()
    );
    logs.assert_free_of(&[("private key", key.private_body_line())]);
    sc.stop().await;
}

/// ES256 (a P-256 key read from a `${file:}` secret), no `kid`, a `scope`, and the default
/// lifetime (300 s): obtained, injected, renewed once.
#[tokio::test]
async fn es256_tokens_are_obtained_injected_and_renewed() {
    let key = KeyPair::ec().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("issuer-key.pem");
    std::fs::write(&key_file, &key.private_pem).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = JwtBearerServer::start(&key.public_pem, ACCESS_TTL, &[]).await;
    let a = Assertion {
        alg: "ES256",
        lifetime: None,
        kid: false,
        scope: Some("api:read api:write"),
    };
    let sc = Sidecar::start(&connections(&[jwt_conn(
        &server,
        &key,
        &a,
        Some(&key_file),
    )]))
    .await;
    sc.wait_state(KEY, "ready").await;
    let seen = keep_calling(&sc, &server, 2, Duration::from_secs(ACCESS_TTL)).await;
    assert!(seen.len() >= 2, "{seen:?}");
    let stats = server.stats().await;
    assert_eq!(stats["errors"], json!({}), "{stats}");
    assert_eq!(stats["api_refused"], 0, "{stats}");
    check_assertions(&server, &a, 300).await;
    sc.stop().await;
}

/// The sidecar's view of a refused assertion: state `failed`, `last_error` naming the
/// server's `invalid_grant` (and its description, if any), no token, the proxy's 503
/// `no_token`; the server saw one token request, refused with `invalid_grant`, and sees no
/// other over the next seconds (a transient failure would be retried within a second).
async fn refused_for_good(
    sc: &Sidecar,
    server: &JwtBearerServer,
    logs: &Logs,
    description: Option<&str>,
) {
    let st = sc.wait_state(KEY, "failed").await;
    let error = st["last_error"].as_str().expect("last_error");
    assert!(
        error.contains("`invalid_grant`") && error.contains(KEY),
        "{error}"
    );
    if let Some(d) = description {
        assert!(error.contains(d), "Authlib's description {d:?} in {error}");
    }
    assert_eq!(st["has_token"], false, "{st}");

    let requests = server.requests().await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["status"], 400, "{}", requests[0]);
    assert_eq!(requests[0]["error"], "invalid_grant", "{}", requests[0]);
    assert_eq!(
        requests[0]["error_description"].as_str(),
        description,
        "{}",
        requests[0]
    );

    let (status, body) = sc.get(&format!("/{KEY}/api/items")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "no_token", "{body}");
    assert_eq!(body["state"], "failed", "{body}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = server.stats().await;
    assert_eq!(stats["token_requests"], 1, "not retried: {stats}");
    assert_eq!(stats["errors"], json!({"invalid_grant": 1}), "{stats}");
    assert_eq!(stats["api_ok"], 0, "{stats}");
    assert_eq!(sc.status(KEY).await["state"], "failed");
    let text = logs.text();
    assert!(
        text.contains("invalid_grant"),
        "the refusal is logged:\n{text}"
    );
}

/// Mis-signed: the sidecar signs with another key than the one the server trusts. Authlib
/// refuses the signature with `invalid_grant`; the sidecar reports it and stops — until
/// the key file holds the right key.
#[tokio::test]
async fn an_assertion_signed_with_another_key_is_refused_for_good_until_the_key_file_is_replaced() {
    let (logs, _capture) = Logs::capture();
    let trusted = KeyPair::rsa().await;
    let other = KeyPair::rsa().await;
    let server = JwtBearerServer::start(&trusted.public_pem, ACCESS_TTL, &[]).await;
    let a = Assertion {
        alg: "RS256",
        lifetime: Some(60),
        kid: true,
        scope: None,
    };
    // The key comes from a file, as a mounted Secret's does, so that it can be replaced.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("issuer-key.pem");
    std::fs::write(&key_file, &other.private_pem).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let yaml = format!(
        "admin: {{ watch_config: 100ms }}\n{}",
        connections(&[jwt_conn(&server, &other, &a, Some(&key_file))])
    );
    let sc = Sidecar::start(&yaml).await;
    refused_for_good(&sc, &server, &logs, None).await;

    // The operator installs the registered key: the watch reloads it and the connection,
    // failed for good until then, gets its token with no restart and no retry call.
    let next = dir.path().join("issuer-key.next");
    std::fs::write(&next, &trusted.private_pem).unwrap();
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&next, &key_file).unwrap();
    sc.wait_state(KEY, "ready").await;
    let (status, body) = sc.get(&format!("/{KEY}/api/items")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.stats().await["token_requests"], 2);
    logs.assert_free_of(&[
        ("private key", other.private_body_line()),
        ("private key", trusted.private_body_line()),
    ]);
    sc.stop().await;
}

/// Expired: a 1 s assertion lifetime, and the server (leeway 0) holds each token request
/// 2.1 s before checking it, so `exp` has really passed when Authlib looks. Refused with
/// `invalid_grant` ("The token is expired"); the sidecar reports it and stops.
#[tokio::test]
async fn an_assertion_expired_when_checked_is_refused_as_invalid_grant_for_good() {
    let (logs, _capture) = Logs::capture();
    let key = KeyPair::rsa().await;
    let server = JwtBearerServer::start(
        &key.public_pem,
        ACCESS_TTL,
        &[("TOKEN_DELAY_MS", "2100"), ("JWT_LEEWAY", "0")],
    )
    .await;
    let a = Assertion {
        alg: "RS256",
        lifetime: Some(1),
        kid: true,
        scope: None,
    };
    let sc = Sidecar::start(&connections(&[jwt_conn(&server, &key, &a, None)])).await;
    refused_for_good(&sc, &server, &logs, Some("The token is expired")).await;
    let claims = &server.requests().await[0]["assertion_claims"];
    let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
    assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(1), "{claims}");
    sc.stop().await;
}
