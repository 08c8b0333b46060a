//! The foundation: token injection, header hygiene, refresh, failures, status, streaming,
//! secrets in logs, and the CLI.

use crate::support::memory::{rss_bytes, PeakRss};
use crate::support::raw_upstream::RawUpstream;
use crate::support::upload::post_generated;
use crate::support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Size of the streamed upload and download.
const BIG: usize = 50 * 1024 * 1024;
/// Largest growth of resident memory accepted while `BIG` bytes stream each way.
const MAX_RSS_GROWTH: u64 = 20 * 1024 * 1024;
/// Exit status of `tokenwarden` for an invalid config.
const EXIT_INVALID_CONFIG: i32 = 64;

/// A token endpoint answering `reply`, an echo upstream, and a sidecar with one
/// client-credentials connection `api` between them (`extra`: lines under `configuration:`).
async fn setup(reply: Reply, extra: &str) -> (TokenServer, Echo, Sidecar) {
    let tokens = TokenServer::start(reply).await;
    let echo = Echo::start().await;
    let yaml = connections(&[cc_connection("api", echo.addr, tokens.addr, extra)]);
    let sidecar = Sidecar::start(&yaml).await;
    (tokens, echo, sidecar)
}

/// A token living `expires_in` seconds, without a refresh token.
fn token(expires_in: u64) -> Reply {
    Reply::token(expires_in, false)
}

/// The number `N` of the `Bearer tok-N` an echo response received.
fn token_number(body: &Value) -> u64 {
    let auth = echoed(body, "authorization");
    assert_eq!(auth.len(), 1, "one Authorization header: {body}");
    auth[0]
        .strip_prefix("Bearer tok-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected Authorization {auth:?}"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `check` every 20 ms until it holds, or panics with `what` after [`WAIT`].
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port with nothing listening on it (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn injects_the_token_and_replaces_the_apps_authorization() {
    let (_tokens, _echo, sidecar) = setup(token(3600), "").await;
    sidecar.wait_state("api", "ready").await;
    let r = client()
        .get(sidecar.url("/api/v1/things?a=1&b=%2F+x"))
        .header("authorization", "Bearer from-the-app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["target"], "/v1/things?a=1&b=%2F+x");
    assert_eq!(echoed(&body, "authorization"), ["Bearer tok-1"]);
}

#[tokio::test]
async fn strips_hop_by_hop_request_headers_but_never_the_injected_token() {
    let (_tokens, echo, sidecar) = setup(token(3600), "").await;
    sidecar.wait_state("api", "ready").await;
    let hop_by_hop = [
        "connection",
        "x-hop-named",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ];
    let send = |url: String| async move {
        let r = client()
            .get(url)
            .header("host", "app-chosen.example")
            .header("connection", "keep-alive, X-Hop-Named, Authorization")
            .header("x-hop-named", "must not pass")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic cHJveHk6cGFzcw==")
            .header("proxy-connection", "keep-alive")
            .header("te", "trailers")
            .header("trailer", "x-checksum")
            .header("upgrade", "h2c")
            .header("authorization", "Bearer from-the-app")
            .header("x-kept", "yes")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()
    };
    // Control: sent straight to the echo, every one of them arrives.
    let direct = send(format!("http://{}/hop", echo.addr)).await;
    for name in hop_by_hop {
        assert_eq!(echoed(&direct, name).len(), 1, "{name} missing: {direct}");
    }

    let body = send(sidecar.url("/api/hop")).await;
    for name in hop_by_hop.iter().chain(&["transfer-encoding"]) {
        assert!(
            echoed(&body, name).is_empty(),
            "{name} reached the upstream: {body}"
        );
    }
    // `Connection: Authorization` named the app's header, not the injected one.
    assert_eq!(echoed(&body, "authorization"), ["Bearer tok-1"]);
    assert_eq!(echoed(&body, "host"), [echo.addr.to_string()]);
    assert_eq!(echoed(&body, "via"), ["1.1 tokenwarden"]);
    assert_eq!(echoed(&body, "x-kept"), ["yes"]);
}

/// The hop-by-hop headers the raw upstream answers with (besides `Connection` itself).
const HOP_BY_HOP_RESPONSE: [&str; 6] = [
    "x-resp-hop",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "trailer",
    "upgrade",
];

#[tokio::test]
async fn strips_hop_by_hop_response_headers() {
    let upstream = RawUpstream::respond(
        "HTTP/1.1 200 OK\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 5\r\n\
         Connection: close, X-Resp-Hop\r\n\
         X-Resp-Hop: upstream-only\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Authenticate: Basic realm=\"upstream\"\r\n\
         Proxy-Connection: close\r\n\
         Trailer: X-Checksum\r\n\
         Upgrade: h2c\r\n\
         X-Kept: yes\r\n\
         \r\n\
         hello",
    )
    .await;
    let tokens = TokenServer::start(token(3600)).await;
    let sidecar = cc_sidecar("api", upstream.addr, tokens.addr).await;
    sidecar.wait_state("api", "ready").await;
    // Control: fetched straight from the upstream, the client sees them all.
    let direct = client()
        .get(format!("http://{}/r", upstream.addr))
        .send()
        .await
        .unwrap();
    for name in HOP_BY_HOP_RESPONSE {
        assert!(
            direct.headers().contains_key(name),
            "{name} missing: {direct:?}"
        );
    }

    let r = client().get(sidecar.url("/api/r")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    assert_eq!(r.text().await.unwrap(), "hello");
    for name in HOP_BY_HOP_RESPONSE {
        assert!(
            !headers.contains_key(name),
            "{name} reached the app: {headers:?}"
        );
    }
    // The upstream's `Connection: close` was for the upstream hop only.
    assert!(
        headers.get_all("connection").iter().all(|v| !v
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("x-resp-hop")),
        "{headers:?}"
    );
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(headers["content-type"], "text/plain");
    // The upstream saw the injected token and its own authority.
    let head = upstream
        .heads()
        .pop()
        .expect("a request reached the upstream");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("\r\nauthorization: bearer tok-1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nhost: {}\r\n", upstream.addr)),
        "{head}"
    );
}

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
async fn maps_routing_and_upstream_failures_to_statuses() {
    let tokens = TokenServer::start(token(3600)).await;
    let refused: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let silent = RawUpstream::silent().await;
    let sidecar = Sidecar::start(&format!(
        "proxy:\n  response_timeout: 300ms\n{}",
        connections(&[
            cc_connection("down", refused, tokens.addr, ""),
            cc_connection("slow", silent.addr, tokens.addr, ""),
        ])
    ))
    .await;
    sidecar.wait_state("down", "ready").await;
    sidecar.wait_state("slow", "ready").await;

    let (status, body) = sidecar.get("/nope/x").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "unknown_connection");
    assert_eq!(body["connection"], "nope");

    let (status, body) = sidecar.get("/down/x").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "upstream_unreachable");
    assert_eq!(body["connection"], "down");

    let started = Instant::now();
    let (status, body) = sidecar.get("/slow/x").await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        body,
        json!({"error": "upstream_timeout", "connection": "slow"})
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert_eq!(silent.heads().len(), 1, "the slow upstream got the request");
}

#[tokio::test]
async fn streams_50_mb_each_way_with_flat_memory() {
    let (_tokens, _echo, sidecar) = setup(token(3600), "").await;
    sidecar.wait_state("api", "ready").await;
    // Warm up the pools and buffers on both paths before the baseline.
    let (status, body) = post_generated(sidecar.proxy, "/api/count", 1024 * 1024).await;
    assert_eq!(status, 200, "{body:?}");
    let mut r = client()
        .get(sidecar.url("/api/bytes/1048576"))
        .send()
        .await
        .unwrap();
    while r.chunk().await.unwrap().is_some() {}

    let baseline = rss_bytes();
    let peak = PeakRss::start();
    let mut r = client()
        .get(sidecar.url(&format!("/api/bytes/{BIG}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut downloaded = 0usize;
    while let Some(chunk) = r.chunk().await.unwrap() {
        assert!(chunk.iter().all(|b| *b == b'x'));
        downloaded += chunk.len();
    }
    let (status, body) = post_generated(sidecar.proxy, "/api/count", BIG).await;
    let peak = peak.finish();

    assert_eq!(downloaded, BIG);
    assert_eq!(status, 200, "{body:?}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["received"], BIG);
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < MAX_RSS_GROWTH,
        "resident memory grew by {} MiB while streaming {} MiB each way",
        growth / (1024 * 1024),
        BIG / (1024 * 1024)
    );
}

#[tokio::test]
async fn readiness_health_metrics_and_status_never_show_a_token() {
    let tokens = TokenServer::start(token(3600)).await;
    // Hold the first token back to look at the sidecar before it has one.
    tokens.script([Reply::Slow(Duration::from_millis(1500))]);
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
            json!({"status": "ready", "store": {"backend": "file", "state": "ok", "last_error": null}})
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
        "tokenwarden_no_token_total{connection=\"api\"} 1",
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

fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
}

/// `tokenwarden run --config {config}` with the binary tests' secrets in its environment,
/// killed when dropped.
fn run_binary(config: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env("TW_TEST_SECRET", ENV_SECRET)
        .env("TW_STORE_KEY", STORE_KEY)
        .kill_on_drop(true);
    cmd
}

/// A config for the binary: one client-credentials connection whose secret comes from
/// `${TW_TEST_SECRET}`, and the listeners on the given ports.
fn binary_config(
    proxy_port: u16,
    admin_port: u16,
    upstream: SocketAddr,
    token: SocketAddr,
) -> String {
    format!(
        r#"proxy:
  listen: 127.0.0.1:{proxy_port}
admin:
  listen: 127.0.0.1:{admin_port}
store:
  key: ${{TW_STORE_KEY}}
log:
  level: trace
connections:
  - key: api
    secrets:
      client_id: the-client
      client_secret: ${{TW_TEST_SECRET}}
    client_config:
      protocol: http
      host: "{upstream}"
      authentication:
        strategy: oauth2_client_credentials
        configuration:
{token_request}"#,
        token_request = cc_token_request(token)
    )
}

/// Base64 of 32 bytes: a valid store key (and a secret that must not be logged).
const STORE_KEY: &str = "c3RvcmUta2V5LW11c3QtbmV2ZXItYmUtbG9nZ2VkLiE=";
/// The client secret the binary tests pass through the environment.
const ENV_SECRET: &str = "env-s3cret-never-logged";
/// The app's own credential, replaced by the proxy (and not logged either).
const APP_SECRET: &str = "app-credential-never-logged";

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let tokens = TokenServer::start(Reply::token(2, true)).await;
    // The first answer is a (transient) OAuth error, so a token failure is logged too.
    tokens.script([Reply::Raw(
        r#"{"error":"temporarily_unavailable","error_description":"the server is busy, try later"}"#,
    )]);
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy_port, admin_port) = (free_port(), free_port());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        binary_config(proxy_port, admin_port, echo.addr, tokens.addr),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut child = run_binary(&config)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start tokenwarden");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    wait_until("/readyz to answer 200", || {
        let url = format!("{admin}/readyz");
        async move {
            match client().get(&url).send().await {
                Ok(r) => r.status() == 200,
                Err(_) => false,
            }
        }
    })
    .await;
    for (path, expected) in [
        ("/api/one", 200),
        ("/api/two?x=1", 200),
        ("/nope/unknown", 404),
    ] {
        let r = client()
            .get(format!("{proxy}{path}"))
            .header("authorization", format!("Bearer {APP_SECRET}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected, "{path}");
    }
    // Let the 2 s tokens (with rotating refresh tokens) be refreshed twice.
    tokens.wait_count(4).await;
    let (status, _) = proxied_at(&proxy, "/api/three").await;
    assert_eq!(status, 200);

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("tokenwarden stops on SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    // The log is real: it holds the start, the failure and the new tokens.
    assert!(log.contains("tokenwarden is listening"), "{log}");
    assert!(log.contains("temporarily_unavailable"), "{log}");
    assert!(log.contains("new token"), "{log}");
    let issued = tokens.count();
    let mut secrets: Vec<String> = vec![ENV_SECRET.into(), STORE_KEY.into(), APP_SECRET.into()];
    for n in 1..=issued {
        secrets.push(format!("tok-{n}"));
        secrets.push(format!("ref-{n}"));
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "`{secret}` is in the log:\n{log}"
        );
    }
}

async fn proxied_at(proxy: &str, path: &str) -> (u16, Value) {
    get_json(&format!("{proxy}{path}")).await
}

/// Writes `yaml` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, yaml: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn check_prints_the_connections_without_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = write(
        dir.path(),
        "good.yaml",
        &binary_config(18080, 19090, upstream, upstream),
    );
    let out = binary()
        .args(["check", "--config"])
        .arg(&config)
        .env("TW_TEST_SECRET", ENV_SECRET)
        .env("TW_STORE_KEY", STORE_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("  - api  (api)"), "{stdout}");
    assert!(stdout.contains("upstream  http://127.0.0.1:9"), "{stdout}");
    assert!(
        stdout.contains("strategy  oauth2_client_credentials"),
        "{stdout}"
    );
    assert!(
        stdout.contains("client_id"),
        "the param names are listed: {stdout}"
    );
    assert!(stdout.contains("client_secret"), "{stdout}");
    assert!(stdout.contains("proxy listen  127.0.0.1:18080"), "{stdout}");
    for secret in [ENV_SECRET, STORE_KEY] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}{stderr}"
        );
    }
}

#[test]
fn check_lists_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.yaml",
        "proxy:\n  listen: nowhere\nmystery: 1\nconnections:\n  - key: api\n    secrets:\n      client_secret: ${TW_UNSET_VARIABLE}\n    client_config:\n      protocol: https\n      host: example.com\n      authentication:\n        strategy: oauth2_telepathy\n",
    );
    let out = binary()
        .args(["check", "--config"])
        .arg(&config)
        .env_remove("TW_UNSET_VARIABLE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = config.display();
    let expected = [
        format!("{file}:2:3: proxy.listen: bad listen address `nowhere`: expected IP:PORT, such as 127.0.0.1:8080"),
        format!("{file}:3:1: mystery: unknown field `mystery`, expected one of `proxy`, `admin`, `store`, `tls`, `log`, `connections`"),
        format!("{file}:7:7: connections[0].secrets.client_secret: environment variable `TW_UNSET_VARIABLE` is not set"),
        format!("{file}:12:9: connections[0].client_config.authentication.strategy: connection `api`: unknown strategy `oauth2_telepathy`; supported strategies: oauth2_authorization_code, oauth2_client_credentials, bearer, basic, api_key"),
        "4 problem(s); tokenwarden did not start.".to_owned(),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");
}

#[tokio::test]
async fn run_refuses_a_bad_config_before_binding_any_port() {
    let dir = tempfile::tempdir().unwrap();
    // Hold the configured proxy port: a `run` that bound before validating would fail
    // on it ("cannot listen", exit 1) instead of listing the problems (exit 64).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let good = binary_config(port, free_port(), upstream, upstream);
    let bad = good.replace("log:\n", "mystery: 1\nlog:\n");
    let run = |yaml: &str, name: &str| {
        let config = write(dir.path(), name, yaml);
        let mut cmd = run_binary(&config);
        cmd.env_remove("RUST_LOG");
        async move {
            tokio::time::timeout(WAIT, cmd.output())
                .await
                .expect("tokenwarden exits")
                .unwrap()
        }
    };
    let out = run(&bad, "bad.yaml").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG), "{stderr}");
    assert!(stderr.contains("unknown field `mystery`"), "{stderr}");
    assert!(
        stderr.contains("1 problem(s); tokenwarden did not start."),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    // The same file without the problem does try to bind (and the held port stops it).
    let out = run(&good, "good.yaml").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    drop(held);
}

#[test]
fn debug_output_of_a_config_never_shows_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.yaml",
        r#"admin:
  token: admin-token-never-shown
store:
  key: ${TW_STORE_KEY}
connections:
  - key: cc
    secrets:
      client_id: the-client
      client_secret: ${TW_TEST_SECRET}
    client_config:
      protocol: https
      host: api.example.com
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            body: '{"client_id": "<client_id>", "client_secret": "<client_secret>"}'
  - key: static
    secrets: { api_token: static-token-never-shown }
    client_config:
      protocol: https
      host: static.example.com
      authentication: { strategy: bearer, configuration: { token: "<api_token>" } }
  - key: inline
    client_config:
      protocol: https
      host: inline.example.com
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            body: '{"client_secret": "inline-secret-never-shown"}'
  - key: keyed
    secrets: { key: query-key-never-shown, body_key: body-key-never-shown }
    client_config:
      protocol: https
      host: keyed.example.com
      authentication:
        strategy: api_key
        configuration:
          query_params: [{ name: api_key, value: "<key>" }]
          body: '{"token": "<body_key>"}'
"#,
    );
    let config = tokenwarden::config::load_with_env(&config, &|name| match name {
        "TW_STORE_KEY" => Some(STORE_KEY.to_owned()),
        "TW_TEST_SECRET" => Some(ENV_SECRET.to_owned()),
        _ => None,
    })
    .unwrap_or_else(|p| panic!("{p}"));
    let debug = format!("{config:?}");
    assert!(debug.contains("api.example.com"), "{debug}");
    for secret in [
        ENV_SECRET,
        STORE_KEY,
        "admin-token-never-shown",
        "static-token-never-shown",
        "query-key-never-shown",
        "body-key-never-shown",
        "inline-secret-never-shown",
    ] {
        assert!(
            !debug.contains(secret),
            "`{secret}` in Debug output:\n{debug}"
        );
    }
}
