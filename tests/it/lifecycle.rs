//! The token lifecycle seen through the proxy: refresh before expiry without a failed
//! request, the valid token kept while the endpoint fails or is unreachable,
//! `invalid_client` stopping the hammering, `expires_in` from config or response, and
//! readiness, health, metrics and status never showing a token.

use crate::support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test]
async fn refreshes_before_expiry_without_a_failed_request() {
    // 3 s tokens: refreshed after 1.35–1.5 s (half the lifetime, less up to 10 % jitter),
    // never injected in their last 300 ms (a tenth of the lifetime).
    const LIFETIME: Duration = Duration::from_secs(3);
    const USABLE: Duration = Duration::from_millis(2700);
    let (tokens, _echo, sidecar) = setup(token(LIFETIME.as_secs()), "").await;
    sidecar.wait_state("api", "ready").await;
    let started = Instant::now();
    // Two clients hammer until a request has carried the token of the second refresh.
    let newest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let url = sidecar.url("/api/loop");
        let newest = std::sync::Arc::clone(&newest);
        workers.push(tokio::spawn(async move {
            let client = client();
            let mut seen: Vec<(u64, Instant)> = Vec::new();
            while newest.load(Ordering::SeqCst) < 3 && started.elapsed() < WAIT {
                let r = client.get(&url).send().await.unwrap();
                let status = r.status().as_u16();
                let body: Value =
                    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
                assert_eq!(status, 200, "a request failed during refresh: {body}");
                let n = token_number(&body);
                newest.fetch_max(n, Ordering::SeqCst);
                seen.push((n, Instant::now()));
            }
            seen
        }));
    }
    let mut first_seen = std::collections::BTreeMap::new();
    let mut last_seen = std::collections::BTreeMap::new();
    for w in workers {
        let seen = w.await.unwrap();
        assert!(seen.len() > 10, "too few requests: {}", seen.len());
        // Each client sees tokens only move forward.
        assert!(
            seen.windows(2).all(|p| p[0].0 <= p[1].0),
            "an older token came back: {:?}",
            seen.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        for (n, at) in seen {
            first_seen.entry(n).or_insert(at);
            let last = last_seen.entry(n).or_insert(at);
            *last = (*last).max(at);
        }
    }
    assert!(
        tokens.count() >= 3,
        "only {} token requests",
        tokens.count()
    );
    let numbers: BTreeSet<u64> = first_seen.keys().copied().collect();
    assert!(
        numbers.len() >= 3 && numbers.contains(&3),
        "the token did not change across refreshes: {numbers:?}"
    );
    // No token was used for longer than it was usable.
    for (n, first) in &first_seen {
        let span = last_seen[n].duration_since(*first);
        assert!(span < USABLE, "tok-{n} injected for {span:?}");
    }
}

#[tokio::test]
async fn keeps_the_valid_token_while_the_endpoint_fails_then_recovers() {
    // 6 s tokens: the refresh comes after about 3 s; the token stays usable until 5.4 s.
    let (tokens, _echo, sidecar) = setup(token(6), "").await;
    sidecar.wait_state("api", "ready").await;
    tokens.set_default(Reply::Status {
        status: 503,
        retry_after: None,
    });
    let down = sidecar
        .wait_status("api", "the failed refresh to show in status", |s| {
            !s["last_error"].is_null()
        })
        .await;
    let failures_seen = tokens.count();
    assert!(failures_seen >= 2);
    assert_eq!(down["state"], "ready");
    assert!(down["consecutive_failures"].as_u64() >= Some(1), "{down}");
    let error = down["last_error"].as_str().unwrap();
    assert!(error.contains("api") && error.contains("503"), "{error}");
    assert!(!error.contains(CLIENT_SECRET) && !error.contains("tok-"));
    // Requests keep going out with the still-valid token.
    for _ in 0..5 {
        let (status, body) = sidecar.get("/api/while-down").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(token_number(&body), 1);
    }
    // The endpoint comes back: the retry (backoff from 1 s) brings a new token.
    tokens.set_default(token(3600));
    sidecar
        .wait_status("api", "a new token after the endpoint recovered", |s| {
            s["last_error"].is_null() && s["consecutive_failures"] == 0
        })
        .await;
    let (status, body) = sidecar.get("/api/after").await;
    assert_eq!(status, 200, "{body}");
    assert!(token_number(&body) >= 2);
    assert_eq!(sidecar.status("api").await["state"], "ready");
    // Backed off, not hammered: a handful of failed attempts at most.
    assert!(
        tokens.count() <= failures_seen + 3,
        "{} requests",
        tokens.count()
    );
}

#[tokio::test]
async fn keeps_the_valid_token_while_the_endpoint_is_unreachable() {
    let (tokens, _echo, sidecar) = setup(token(6), "").await;
    sidecar.wait_state("api", "ready").await;
    tokens.stop();
    let down = sidecar
        .wait_status("api", "the unreachable endpoint to show in status", |s| {
            !s["last_error"].is_null()
        })
        .await;
    let error = down["last_error"].as_str().unwrap();
    assert!(error.contains("unreachable"), "{error}");
    assert_eq!(down["state"], "ready");
    let (status, body) = sidecar.get("/api/while-unreachable").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(token_number(&body), 1);
}

#[tokio::test]
async fn invalid_client_fails_the_connection_without_hammering() {
    let (tokens, echo, sidecar) = setup(
        Reply::OAuthError {
            status: 400,
            code: "invalid_client",
        },
        "",
    )
    .await;
    let status = sidecar.wait_state("api", "failed").await;
    let error = status["last_error"].as_str().expect("last_error");
    assert!(
        error.contains("invalid_client") && error.contains("api"),
        "{error}"
    );
    assert!(!error.contains(CLIENT_SECRET), "{error}");
    assert_eq!(status["has_token"], false);

    let r = client().get(sidecar.url("/api/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"error": "no_token", "connection": "api", "state": "failed"})
    );
    assert_eq!(echo.hits(), 0, "a request without a token went upstream");

    let (ready, why) = get_json(&sidecar.admin_url("/readyz")).await;
    assert_eq!(ready, 503);
    assert_eq!(why["waiting_for"], json!(["api"]));
    let (_, metrics) = get_text(&sidecar.admin_url("/metrics")).await;
    assert!(
        metrics.contains("tokenwarden_connection_state{connection=\"api\",state=\"failed\"} 1"),
        "{metrics}"
    );
    // A transient failure would be retried within a second; a terminal one never is.
    assert_eq!(tokens.count(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(tokens.count(), 1, "the token endpoint was asked again");
}

#[tokio::test]
async fn readiness_health_metrics_and_status_never_show_a_token() {
    let tokens = TokenServer::start(token(3600)).await;
    // Hold the first token back to look at the sidecar before it has one (longer than a
    // request waits for a token on its way, so that request still gets its 503).
    tokens.script([Reply::Slow(Duration::from_millis(3500))]);
    let echo = Echo::start().await;
    let sidecar = cc_sidecar("api", echo.addr, tokens.addr).await;
    assert_eq!(
        get_json(&sidecar.admin_url("/healthz")).await,
        (200, json!({"status": "ok"}))
    );
    let (status, body) = get_json(&sidecar.admin_url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["waiting_for"], json!(["api"]));
    let (status, body) = sidecar.get("/api/early").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"error": "no_token", "connection": "api", "state": "pending"})
    );

    sidecar.wait_state("api", "ready").await;
    assert_eq!(
        get_json(&sidecar.admin_url("/readyz")).await,
        (
            200,
            json!({"status": "ready", "store": {"backend": "sqlite", "state": "ok", "last_error": null}})
        )
    );
    for _ in 0..3 {
        assert_eq!(sidecar.get("/api/counted").await.0, 200);
    }
    let issued: Vec<String> = (1..=tokens.count()).map(|n| format!("tok-{n}")).collect();

    let (status, metrics) = get_text(&sidecar.admin_url("/metrics")).await;
    assert_eq!(status, 200);
    for series in [
        "tokenwarden_connection_state{connection=\"api\",state=\"ready\"} 1",
        "tokenwarden_connection_state{connection=\"api\",state=\"pending\"} 0",
        "tokenwarden_token_requests_total{connection=\"api\",outcome=\"ok\"} 1",
        "tokenwarden_token_requests_total{connection=\"api\",outcome=\"error\"} 0",
        "tokenwarden_proxied_requests_total{connection=\"api\"} 3",
        "tokenwarden_no_token_total{connection=\"api\",state=\"pending\"} 1",
        "tokenwarden_token_expires_at_seconds{connection=\"api\"} ",
    ] {
        assert!(metrics.contains(series), "no `{series}` in\n{metrics}");
    }
    let (status, list) = get_text(&sidecar.admin_url("/api/v1/connections")).await;
    assert_eq!(status, 200);
    let (status, one) = get_text(&sidecar.admin_url("/api/v1/connection/api")).await;
    assert_eq!(status, 200);
    for text in [&metrics, &list, &one] {
        for secret in issued.iter().map(String::as_str).chain([CLIENT_SECRET]) {
            assert!(!text.contains(secret), "`{secret}` shown in\n{text}");
        }
    }
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["key"], "api");
    assert_eq!(list[0]["state"], "ready");
    assert_eq!(list[0]["has_token"], true);
    assert_eq!(list[0]["strategy"], "oauth2_client_credentials");
    let (status, body) = get_json(&sidecar.admin_url("/api/v1/connection/nope")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "unknown_connection");
}

/// GET `url` → (status, body text).
async fn get_text(url: &str) -> (u16, String) {
    let r = client().get(url).send().await.expect("request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_configured_expires_in_wins_over_the_response() {
    let (_tokens, _echo, sidecar) = setup(token(3600), "          expires_in: 600\n").await;
    let status = sidecar.wait_state("api", "ready").await;
    let expires_at = status["expires_at"].as_i64().expect("expires_at");
    let expected = unix_now() + 600;
    assert!((expires_at - expected).abs() <= 5, "{status}");
}

#[tokio::test]
async fn a_response_without_expires_in_is_long_lived() {
    let (_tokens, _echo, sidecar) = setup(Reply::token_without_expiry(), "").await;
    let status = sidecar.wait_state("api", "ready").await;
    assert_eq!(status["expires_at"], Value::Null, "{status}");
    assert_eq!(get_json(&sidecar.admin_url("/readyz")).await.0, 200);
    let (code, body) = sidecar.get("/api/x").await;
    assert_eq!(code, 200);
    assert_eq!(token_number(&body), 1);
}

#[tokio::test]
async fn a_string_expires_in_and_any_case_token_type_work() {
    let (_tokens, _echo, sidecar) = setup(
        Reply::Raw(r#"{"access_token":"tok-7","token_type":"BEARER","expires_in":"1200"}"#),
        "",
    )
    .await;
    let status = sidecar.wait_state("api", "ready").await;
    let expires_at = status["expires_at"].as_i64().expect("expires_at");
    assert!((expires_at - (unix_now() + 1200)).abs() <= 5, "{status}");
    let (code, body) = sidecar.get("/api/x").await;
    assert_eq!(code, 200);
    assert_eq!(token_number(&body), 7);
}

// ---- the real binary ----
