//! The request path end to end: the token injected and the app's `Authorization`
//! replaced, hop-by-hop hygiene in both directions, routing and upstream failures mapped
//! to statuses, and 50 MB streamed each way with flat memory.

use crate::support::memory::{rss_bytes, PeakRss};
use crate::support::upload::post_generated;
use crate::support::upstream::{Scripted, Step};
use crate::support::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Size of the streamed upload and download.
const BIG: usize = 50 * 1024 * 1024;
/// Largest growth of resident memory accepted while `BIG` bytes stream each way.
const MAX_RSS_GROWTH: u64 = 20 * 1024 * 1024;

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
    let upstream = Scripted::always(Step::AnswerAndClose(
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
    ))
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
        .texts()
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
async fn maps_routing_and_upstream_failures_to_statuses() {
    let tokens = TokenServer::start(token(3600)).await;
    let refused: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let silent = Scripted::always(Step::Silent).await;
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
    assert_eq!(silent.texts().len(), 1, "the slow upstream got the request");
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
