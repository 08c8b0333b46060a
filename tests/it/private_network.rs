//! `allow_private_network` belongs to the connection that sets it (issue 20.9): two
//! connections on one host *name* that resolves to 127.0.0.1, one opted in and one not.
//! The one that did not is refused by the SSRF guard, on both request paths, even right
//! after the other one opened (and pooled) a link to that very address on the same worker;
//! and a reload that turns the setting off leaves no pooled link behind that still works.

use crate::support::raw::{self, RawResponse};
use crate::support::*;
use std::net::{IpAddr, Ipv4Addr};
use tokenwarden::app::Options;

/// The made-up host name both connections use (resolves to 127.0.0.1).
const SHARED: &str = "shared.saas.test";

/// The config: one worker (so a pooled link would be at hand), and connections on
/// `SHARED:<port>` by key, each with its `allow_private_network`.
fn config(port: u16, tokens: &TokenServer, conns: &[(&str, bool)]) -> String {
    let host = format!("{SHARED}:{port}");
    let all: Vec<String> = conns
        .iter()
        .map(|(key, allow)| {
            cc_conn(key, &host, tokens.addr)
                .field(&format!("allow_private_network: {allow}"))
                .to_string()
        })
        .collect();
    format!("proxy: {{ worker_threads: 1 }}\n{}", connections(&all))
}

/// `SHARED` resolves to 127.0.0.1; the fast path on or off.
fn options(hyper_only: bool) -> Options {
    Options {
        static_hosts: [(SHARED.to_string(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])].into(),
        hyper_only,
        ..Options::default()
    }
}

async fn get(sidecar: &Sidecar, key: &str) -> RawResponse {
    raw::send(sidecar.proxy, &raw::get(&format!("/{key}/v1/x"), "app", "")).await
}

/// The SSRF guard's 502 for connection `key`.
fn assert_guarded(r: &RawResponse, key: &str) {
    assert_eq!(r.status, 502, "{}", r.head);
    let body = r.json();
    assert_eq!(body["connection"], key);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("allow_private_network"), "{message}");
}

#[tokio::test]
async fn only_the_connection_that_sets_allow_private_network_reaches_a_private_address() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let echo = Echo::start().await;
    let yaml = config(
        echo.addr.port(),
        &tokens,
        &[("opted", true), ("guarded", false)],
    );
    for hyper_only in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = Sidecar::start_in(dir, &yaml, options(hyper_only)).await;
        for key in ["opted", "guarded"] {
            sidecar.wait_state(key, "ready").await;
        }
        let before = echo.hits();
        // The opted-in connection reaches the private address (and pools the link)...
        let opted = get(&sidecar, "opted").await;
        assert_eq!(opted.status, 200, "hyper_only {hyper_only}: {}", opted.head);
        // ...the other one, on the same host name, does not, then or on a new connection.
        for _ in 0..2 {
            assert_guarded(&get(&sidecar, "guarded").await, "guarded");
        }
        assert_eq!(echo.hits() - before, 1, "hyper_only {hyper_only}");
        sidecar.stop().await;
    }
}

#[tokio::test]
async fn a_reload_that_turns_allow_private_network_off_leaves_no_link_that_works() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let echo = Echo::start().await;
    let port = echo.addr.port();
    for hyper_only in [false, true] {
        let yaml = config(port, &tokens, &[("flip", true)]);
        let dir = tempfile::tempdir().unwrap();
        let sidecar = Sidecar::start_in(dir, &yaml, options(hyper_only)).await;
        sidecar.wait_state("flip", "ready").await;
        let before = echo.hits();
        let opted = get(&sidecar, "flip").await;
        assert_eq!(opted.status, 200, "hyper_only {hyper_only}: {}", opted.head);
        let (status, outcome) = sidecar
            .reload(&config(port, &tokens, &[("flip", false)]))
            .await;
        assert_eq!(status, 200, "{outcome}");
        sidecar.wait_state("flip", "ready").await;
        assert_guarded(&get(&sidecar, "flip").await, "flip");
        assert_eq!(echo.hits() - before, 1, "hyper_only {hyper_only}");
        sidecar.stop().await;
    }
}
