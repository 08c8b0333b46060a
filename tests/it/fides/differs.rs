//! Where tokenwarden deliberately differs from Fides (FIDES-BEHAVIOUR.md §3, §5): each
//! test pins tokenwarden's behaviour; docs/fides-compatibility.md says why.

use super::*;
use crate::support::authz::{authorize, authorize_with, callback, query, redeem};
use crate::support::golden;
use crate::support::*;
use serde_json::Value;
use std::time::Duration;
use tokenwarden::app::Options;

/// §5.2 case 6, different on purpose: without a `refresh_request`, Fides keeps sending the
/// token after it expires; tokenwarden stops at expiry and asks for a new authorization.
#[tokio::test]
async fn without_refresh_request_an_expired_token_is_not_sent() {
    let key = "ac";
    let (tokens, _echo, sidecar) = start_fixture(key, Reply::token(3, true), false).await;
    authorize_with(&sidecar, key, "auth_code").await;
    let (code, body) = sidecar.get(&format!("/{key}/x")).await;
    assert_eq!(code, 200);
    assert_eq!(echoed(&body, "authorization"), ["Bearer tok-1"]);
    sidecar.wait_state(key, "needs_reauthorization").await;
    let (code, body) = sidecar.get(&format!("/{key}/x")).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        body["authorize"],
        format!("/api/v1/connection/{key}/authorize")
    );
    assert_eq!(tokens.count(), 1, "no refresh attempted");
}

/// §5.2 case 7 and §5.3 case 7, different on purpose: Fides fails the request with
/// "Unable to retrieve token for K (invalid_request)"; tokenwarden records the error,
/// retries a transient one with backoff, and stops at a terminal one.
#[tokio::test]
async fn a_failed_token_request_is_retried_or_halted() {
    let flaky = TokenServer::start(Reply::token(3600, false)).await;
    flaky.script([Reply::OAuthError {
        status: 400,
        code: "invalid_request",
    }]);
    let refused = TokenServer::start(Reply::OAuthError {
        status: 401,
        code: "invalid_client",
    })
    .await;
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&connections(&[
        cc_connection("flaky", echo.addr, flaky.addr, ""),
        cc_connection("refused", echo.addr, refused.addr, ""),
    ]))
    .await;
    let failing = sidecar
        .wait_status("flaky", "an error", |s| !s["last_error"].is_null())
        .await;
    let error = failing["last_error"].as_str().unwrap();
    assert!(
        error.contains("invalid_request") && !error.contains("s3cret"),
        "{error}"
    );
    sidecar.wait_state("flaky", "ready").await;
    assert_eq!(flaky.count(), 2);

    let status = sidecar.wait_state("refused", "failed").await;
    assert!(status["last_error"]
        .as_str()
        .unwrap()
        .contains("invalid_client"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(refused.count(), 1, "a terminal error is not retried");
    let (code, body) = sidecar.get("/refused/x").await;
    assert_eq!((code, body["error"].as_str()), (503, Some("no_token")));
}

/// §5.2 cases 4, 9, 14 and §5.3 cases 4, 10, different on purpose: Fides finds missing
/// secrets when a request runs; tokenwarden refuses the config, naming each one.
#[test]
fn missing_secrets_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    let unused = "127.0.0.1:9".parse().unwrap();
    let without_id_and_secret = fixture_authcode("k", "localhost", Some(unused), true)
        .protocol("https")
        .secrets(r#"domain: localhost, redirect_uri: "https://localhost/callback""#);
    let yaml = connections(&[without_id_and_secret]);
    std::fs::write(&file, yaml).unwrap();
    let problems = tokenwarden::config::load_with_env(&file, &|_| None)
        .expect_err("missing secrets are refused")
        .to_string();
    for name in ["<client_id>", "<client_secret>"] {
        assert!(problems.contains(name), "{problems}");
    }
    assert!(!problems.contains("<redirect_uri>"), "{problems}");
}

/// §3.3, different on purpose: a Fides state never expires, is never consumed, and is
/// replaced by the next authorize call; tokenwarden's is single-use, expires
/// (`admin.state_ttl`), and several may be pending at once.
#[tokio::test]
async fn state_is_single_use_and_expires() {
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let echo = Echo::start().await;
    let key = "ac";
    let sidecar = Sidecar::start(&format!(
        "admin:\n  state_ttl: 700ms\n{}",
        fixture_yaml(key, &echo, &tokens, true)
    ))
    .await;
    let first = authorize(&sidecar, key).await;
    let second = authorize(&sidecar, key).await;
    let used = query(&[("code", "c1"), ("state", &first.state)]);
    assert_eq!(callback(&sidecar, &used).await.status, 200);
    assert_eq!(
        callback(&sidecar, &used).await.status,
        400,
        "used once only"
    );
    assert_eq!(tokens.count(), 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let late = redeem(&sidecar, "c2", &second.state).await;
    assert_eq!(late.status, 400, "expired");
    assert_eq!(tokens.count(), 1);
    let unknown = redeem(&sidecar, "c3", "not_found").await;
    assert_eq!(unknown.status, 400);
    assert_eq!(tokens.count(), 1);
}

/// §3.7, different on purpose: Fides refreshes on a request once less than ten minutes
/// are left — with a five-minute token, on every request; tokenwarden refreshes in the
/// background at a fraction of the lifetime, requests or not.
#[tokio::test]
async fn refresh_follows_the_lifetime_not_the_requests() {
    let five_minutes = TokenServer::start(Reply::token(300, false)).await;
    let short = TokenServer::start(Reply::token(3600, false)).await;
    short.script([Reply::token(2, false)]);
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&connections(&[
        cc_connection("five", echo.addr, five_minutes.addr, ""),
        cc_connection("short", echo.addr, short.addr, ""),
    ]))
    .await;
    sidecar.wait_state("five", "ready").await;
    for _ in 0..5 {
        let (code, body) = sidecar.get("/five/x").await;
        assert_eq!(code, 200);
        assert_eq!(echoed(&body, "authorization"), ["Bearer tok-1"]);
    }
    assert_eq!(five_minutes.count(), 1);
    // no request through "short" at all: renewed anyway, before it expired
    short.wait_count(2).await;
    let status = sidecar
        .wait_status("short", "an hour-long token", |s| lifetime_left(s) > 1800)
        .await;
    assert_eq!(status["consecutive_failures"], 0);
}

/// §3.6, different on purpose: `"expires_in": "3600"` is a TypeError in Fides.
#[tokio::test]
async fn string_expires_in_is_accepted() {
    let tokens = TokenServer::start(Reply::Raw(
        r#"{"access_token": "tok-s", "token_type": "bearer", "expires_in": "3600"}"#,
    ))
    .await;
    let echo = Echo::start().await;
    let sidecar = cc_sidecar("s", echo.addr, tokens.addr).await;
    let status = sidecar.wait_state("s", "ready").await;
    assert!((3595..=3600).contains(&lifetime_left(&status)), "{status}");
    let (_, body) = sidecar.get("/s/x").await;
    assert_eq!(echoed(&body, "authorization"), ["Bearer tok-s"]);
}

/// §3.6 "stale-expiry quirk", different on purpose: Fides keeps the old `expires_at` when
/// a refresh answer has no `expires_in` and refreshes on every later request; in
/// tokenwarden the new token is long-lived and is not refreshed per request.
#[tokio::test]
async fn no_expires_in_means_long_lived() {
    let tokens = TokenServer::start(Reply::token_without_expiry()).await;
    let echo = Echo::start().await;
    let key = "ac";
    let dir = tempfile::tempdir().unwrap();
    store_due_token(dir.path(), key);
    let yaml = fixture_yaml(key, &echo, &tokens, true);
    let sidecar = Sidecar::start_in(dir, &yaml, Options::default()).await;
    assert_eq!(
        tokens.nth(1).await.field("refresh_token").as_deref(),
        Some(golden::REFRESH_TOKEN)
    );
    let status = sidecar.wait_state(key, "ready").await;
    assert_eq!(status["expires_at"], Value::Null, "{status}");
    assert_eq!(status["has_refresh_token"], true, "kept: {status}");
    for _ in 0..3 {
        let (code, body) = sidecar.get(&format!("/{key}/x")).await;
        assert_eq!(code, 200);
        assert_eq!(echoed(&body, "authorization"), ["Bearer tok-1"]);
    }
    assert_eq!(tokens.count(), 1);
}

/// §3.4, different on purpose: Fides saves the callback's `code` in the connection's
/// secrets, so later requests can still resolve `<code>`; tokenwarden uses it for the
/// exchange only.
#[tokio::test]
async fn the_code_is_not_persisted() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    tokens.script([Reply::token(2, true)]);
    let echo = Echo::start().await;
    let key = "ac";
    let refresh_with_code = form_request(
        "refresh_request",
        "/oauth/token",
        tokens.addr,
        r#"{"grant_type": "refresh_token", "refresh_token": "<refresh_token>", "code": "<code?>"}"#,
    );
    let fixture =
        fixture_authcode(key, echo.addr, Some(tokens.addr), false).configure(&refresh_with_code);
    let sidecar = Sidecar::start(&connections(&[fixture])).await;
    authorize_with(&sidecar, key, "CODE456").await;
    assert_eq!(
        tokens.requests()[0].field("code").as_deref(),
        Some("CODE456")
    );
    let refresh = tokens.nth(2).await;
    assert_eq!(
        String::from_utf8_lossy(&refresh.body),
        "code=&grant_type=refresh_token&refresh_token=ref-1"
    );
}

/// Different on purpose: Fides merges every token answer into the old secrets, so a new
/// authorization whose answer has no refresh token keeps the previous grant's; in
/// tokenwarden a new authorization replaces the whole token set (it may be another
/// account's grant).
#[tokio::test]
async fn a_new_authorization_replaces_the_old_grant() {
    let key = "ac";
    let (tokens, _echo, sidecar) = start_fixture(key, Reply::token(3600, false), true).await;
    tokens.script([Reply::token(3600, true)]);
    authorize_with(&sidecar, key, "first").await;
    assert_eq!(sidecar.status(key).await["has_refresh_token"], true);
    authorize_with(&sidecar, key, "second").await;
    let status = sidecar.status(key).await;
    assert_eq!(status["has_refresh_token"], false, "{status}");
    let (_, body) = sidecar.get(&format!("/{key}/x")).await;
    assert_eq!(echoed(&body, "authorization"), ["Bearer tok-2"]);
}
