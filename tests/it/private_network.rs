//! `allow_private_network` belongs to the connection that sets it (issue 20.9): two
//! connections on one host *name* that resolves to 127.0.0.1, one opted in and one not.
//! The one that did not is refused by the SSRF guard, on both request paths, even right
//! after the other one opened (and pooled) a link to that very address.

use crate::support::raw;
use crate::support::*;
use std::net::{IpAddr, Ipv4Addr};
use tokenwarden::app::Options;

/// The made-up host name both connections use (resolves to 127.0.0.1).
const SHARED: &str = "shared.saas.test";

#[tokio::test]
async fn only_the_connection_that_sets_allow_private_network_reaches_a_private_address() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let echo = Echo::start().await;
    let host = format!("{SHARED}:{}", echo.addr.port());
    let conn = |key: &str, allow: bool| {
        cc_conn(key, &host, tokens.addr)
            .field(&format!("allow_private_network: {allow}"))
            .to_string()
    };
    let yaml = connections(&[conn("opted", true), conn("guarded", false)]);
    for hyper_only in [false, true] {
        let options = Options {
            static_hosts: [(SHARED.to_string(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])].into(),
            hyper_only,
            ..Options::default()
        };
        let sidecar = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await;
        for key in ["opted", "guarded"] {
            sidecar.wait_state(key, "ready").await;
        }
        let before = echo.hits();
        // The opted-in connection reaches the private address (and pools the link)...
        let opted = raw::send(sidecar.proxy, &raw::get("/opted/v1/x", "app", "")).await;
        assert_eq!(opted.status, 200, "hyper_only {hyper_only}: {}", opted.head);
        // ...the other one, on the same host name, does not, then or on a new connection.
        for _ in 0..2 {
            let guarded = raw::send(sidecar.proxy, &raw::get("/guarded/v1/x", "app", "")).await;
            assert_eq!(
                guarded.status, 502,
                "hyper_only {hyper_only}: {}",
                guarded.head
            );
            let body = guarded.json();
            assert_eq!(body["connection"], "guarded");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("allow_private_network"), "{message}");
        }
        assert_eq!(echo.hits() - before, 1, "hyper_only {hyper_only}");
        sidecar.stop().await;
    }
}
