//! Several connections on one host (issue 23): forward mode routes by host, so a request
//! to a host with several connections names one with `tokenwarden-connection: {key}`,
//! which is removed before forwarding. Without it, or naming a connection on another host,
//! it is refused with a 421 that names the header — never sent with the first
//! connection's token. Reverse mode strips the header too, and refuses one that names
//! another connection than the path. Both request paths (the fast path, and hyper for a
//! chunked body) are asked. Intercepted tunnels are in `intercept.rs`.

use crate::support::raw::{self, RawResponse};
use crate::support::*;
use std::net::{IpAddr, Ipv4Addr};
use tokenwarden::app::Options;

/// The made-up host two connections share (resolves to 127.0.0.1).
const SHARED: &str = "shared.saas.test";
/// A made-up host with one connection.
const SOLO: &str = "solo.saas.test";

/// A static-bearer connection `key` (token `{key}-tok`) to `http://{host}`.
fn bearer(key: &str, host: &str) -> Conn {
    Conn::new(key, host, "bearer")
        .field("allow_private_network: true")
        .secrets(&format!("token: {key}-tok"))
        .configure("          token: \"<token>\"\n")
}

/// Connections `a` and `b` on `shared.saas.test:<echo port>`, `solo` on
/// `solo.saas.test:<echo port>`.
async fn start() -> (Echo, Sidecar) {
    let echo = Echo::start().await;
    let port = echo.addr.port();
    let yaml = connections(&[
        bearer("a", &format!("{SHARED}:{port}")),
        bearer("b", &format!("{SHARED}:{port}")),
        bearer("solo", &format!("{SOLO}:{port}")),
    ]);
    let options = Options {
        static_hosts: [SHARED, SOLO]
            .into_iter()
            .map(|n| (n.to_string(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]))
            .collect(),
        ..Options::default()
    };
    let sidecar = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await;
    (echo, sidecar)
}

/// A 421 that names the header (and no token).
fn assert_misdirected(r: &RawResponse, code: &str) {
    assert_eq!(r.status, 421, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("tokenwarden-connection"), "{body}");
    assert!(!body.to_string().contains("-tok"), "{body}");
}

/// An echo answer with `key`'s token, and no `tokenwarden-connection` header.
fn assert_sent_with(r: &RawResponse, key: &str) {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(
        echoed(&body, "authorization"),
        [format!("Bearer {key}-tok")],
        "{body}"
    );
    assert!(echoed(&body, "tokenwarden-connection").is_empty(), "{body}");
}

#[tokio::test]
async fn forward_mode_needs_the_header_on_a_shared_host_and_strips_it() {
    let (echo, sidecar) = start().await;
    let shared = format!("http://{SHARED}:{}/x", echo.addr.port());
    let host = format!("{SHARED}:{}", echo.addr.port());
    let send = |extra: String| {
        let (shared, host) = (shared.clone(), host.clone());
        async move { raw::send(sidecar.proxy, &raw::get(&shared, &host, &extra)).await }
    };
    let refused = send(String::new()).await;
    assert_misdirected(&refused, "connection_not_named");
    assert!(refused.json()["message"].as_str().unwrap().contains(SHARED));
    assert_sent_with(&send("tokenwarden-connection: b\r\n".into()).await, "b");
    assert_sent_with(&send("Tokenwarden-Connection: a\r\n".into()).await, "a");
    assert_misdirected(
        &send("tokenwarden-connection: solo\r\n".into()).await,
        "connection_mismatch",
    );
    assert_misdirected(
        &send("tokenwarden-connection: nope\r\n".into()).await,
        "connection_mismatch",
    );
    // The hyper path (a chunked body) chooses and strips alike.
    let chunked = format!(
        "POST {shared} HTTP/1.1\r\nHost: {host}\r\ntokenwarden-connection: b\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    );
    assert_sent_with(&raw::send(sidecar.proxy, &chunked).await, "b");
    let unnamed = chunked.replace("tokenwarden-connection: b\r\n", "");
    assert_misdirected(
        &raw::send(sidecar.proxy, &unnamed).await,
        "connection_not_named",
    );
    // One connection on its host: no header needed, and the right one is accepted.
    let solo = format!("http://{SOLO}:{}/x", echo.addr.port());
    let r = raw::send(sidecar.proxy, &raw::get(&solo, SOLO, "")).await;
    assert_sent_with(&r, "solo");
    let r = raw::send(
        sidecar.proxy,
        &raw::get(&solo, SOLO, "tokenwarden-connection: solo\r\n"),
    )
    .await;
    assert_sent_with(&r, "solo");
    assert_eq!(echo.hits(), 5, "no refused request reached the upstream");
}

#[tokio::test]
async fn reverse_mode_strips_the_header_and_refuses_another_connection() {
    let (_echo, sidecar) = start().await;
    let get = |extra: &str| raw::get("/a/x", "localhost", extra);
    assert_sent_with(&raw::send(sidecar.proxy, &get("")).await, "a");
    let named = raw::send(sidecar.proxy, &get("tokenwarden-connection: a\r\n")).await;
    assert_sent_with(&named, "a");
    let other = raw::send(sidecar.proxy, &get("tokenwarden-connection: b\r\n")).await;
    assert_misdirected(&other, "connection_mismatch");
}
