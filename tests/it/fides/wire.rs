//! Golden requests on the wire, one test per connector file: the running sidecar sends
//! the token and renewal requests over TLS (test CA through `tls.ca_file`) to a capture
//! server that the files' real host names resolve to, and each arrives exactly as Fides
//! sends it — method, request target, Host, Content-Type, Authorization, Content-Length
//! and body bytes. The authorization URL is checked both from the authorize route (up to
//! its random state) and built with the fixed state `STATE123`.

use super::*;
use crate::support::authz::{authorize, query, redeem};
use crate::support::capture::{Capture, Captured};
use crate::support::golden::{self, Expected};
use crate::support::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokenwarden::app::Options;

/// Compares a request captured on the wire with the golden one.
fn assert_wire(got: &Captured, expected: &Expected, what: &str) {
    assert_eq!(got.method, expected.method, "{what}: method");
    assert_eq!(got.target, expected.target(), "{what}: request target");
    assert_eq!(
        got.header("host"),
        Some(expected.authority()),
        "{what}: Host"
    );
    let host = expected.authority().split(':').next().unwrap();
    if host.parse::<std::net::IpAddr>().is_err() {
        assert_eq!(got.sni.as_deref(), Some(host), "{what}: TLS server name");
    }
    assert_eq!(
        got.header("content-type"),
        Some(expected.content_type),
        "{what}: Content-Type"
    );
    assert_eq!(
        got.header("authorization"),
        expected.authorization,
        "{what}: Authorization"
    );
    assert_eq!(
        got.header("content-length"),
        Some(expected.body.len().to_string().as_str()),
        "{what}: Content-Length"
    );
    // Nothing else: the config's headers plus the client's own Accept and User-Agent
    // (Fides' library sends its own too; they are not part of the config).
    let mut names: Vec<&str> = got.headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    let mut want = vec![
        "accept",
        "content-length",
        "content-type",
        "host",
        "user-agent",
    ];
    if expected.authorization.is_some() {
        want.push("authorization");
    }
    want.sort_unstable();
    assert_eq!(names, want, "{what}: header names");
    assert_eq!(got.header("accept"), Some("application/json"), "{what}");
    assert!(
        got.header("user-agent")
            .is_some_and(|u| u.starts_with("tokenwarden/")),
        "{what}"
    );
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        expected.body,
        "{what}: body bytes"
    );
}

/// Token hosts of the corpus → the capture server.
fn resolve_to(addr: SocketAddr) -> HashMap<String, SocketAddr> {
    golden::TOKEN_HOSTS
        .iter()
        .map(|h| (h.to_string(), addr))
        .collect()
}

/// The long-lived token the capture server answers by default.
fn long_token() -> Value {
    json!({"access_token": "tok-long", "token_type": "Bearer", "expires_in": 3600})
}

/// A token living two seconds with refresh token `REFRESH789`: the refresher renews it
/// about a second later.
fn short_token() -> Value {
    json!({"access_token": "tok-short", "token_type": "Bearer", "expires_in": 2,
           "refresh_token": golden::REFRESH_TOKEN})
}

/// The authorization-code dance through the running sidecar: the route's URL equals the
/// golden one up to the state it minted, and equals it exactly when built with the fixed
/// state; the callback with `CODE456` makes the sidecar send the token request.
async fn authorize_and_callback(sidecar: &Sidecar, key: &str, domain: &str) {
    let expected = golden::authorize_url(key, domain).unwrap();
    let auth = authorize(sidecar, key).await;
    assert_ne!(auth.state, golden::STATE);
    assert!(auth.state.len() >= 43, "a random state: {}", auth.state);
    let minted = query(&[("state", &auth.state)]);
    assert_eq!(
        auth.url.replace(&minted, "state=STATE123"),
        expected,
        "{key}: the authorize route's URL"
    );
    let fixed = authorization_url_with_state(sidecar, key, golden::STATE);
    assert_eq!(
        fixed, expected,
        "{key}: authorization URL with a fixed state"
    );
    let page = redeem(sidecar, golden::CODE, &auth.state).await;
    assert_eq!(page.status, 200, "{key} callback: {}", page.body);
}

/// How the connector's connection is defined.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// A `connections:` entry of the config file.
    File,
    /// Instantiated through the connection API from the unchanged file as a template.
    Api,
}

/// The golden secrets of connector `c`, as the connection API takes them: each a connector
/// param of its file (a client-credentials file has no `redirect_uri`).
fn golden_secrets(c: &golden::Connector, domain: &str) -> Value {
    let mut secrets =
        json!({"client_id": golden::CLIENT_ID, "client_secret": golden::CLIENT_SECRET});
    if c.authorization_code {
        secrets["redirect_uri"] = json!(golden::REDIRECT_URI);
    }
    if c.needs_domain {
        secrets["domain"] = json!(domain);
    }
    secrets
}

/// Instantiates connector `key` through the connection API of `sidecar`.
async fn instantiate(sidecar: &Sidecar, key: &str, domain: &str) {
    let body =
        json!({"instance_key": key, "secrets": golden_secrets(&golden::connector(key), domain)});
    let r = client()
        .post(sidecar.admin_url(&format!("/api/v1/connection/instantiate/{key}")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 200, "{key}: {}", r.text().await.unwrap());
}

/// The sidecar for connector `key`, its connection defined `via` the file or the API: with
/// `due`, it starts with a stored token that needs renewing (for the API, the connection is
/// created, the sidecar stopped, the token stored and the sidecar started again).
async fn start(key: &str, via: Via, capture: &Capture, due: bool) -> Sidecar {
    let c = golden::connector(key);
    let domain = capture.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        resolve: resolve_to(capture.addr),
        ..Options::default()
    };
    if via == Via::File {
        if due {
            store_due_token(dir.path(), key);
        }
        return Sidecar::start_in(dir, &golden_yaml(&[c], &domain), options()).await;
    }
    let yaml = golden_templates_yaml(&[c]);
    let sidecar = Sidecar::start_in(dir, &yaml, options()).await;
    instantiate(&sidecar, key, &domain).await;
    if !due {
        return sidecar;
    }
    let dir = sidecar.stop().await;
    store_due_token(dir.path(), key);
    Sidecar::start_in(dir, &yaml, options()).await
}

/// One connector on the wire: its token and renewal requests, sent by the running sidecar
/// over TLS (test CA through `tls.ca_file`) to the capture server, where the file's real
/// host names resolve to; the connection defined in the file, or through the API.
async fn wire(key: &str, via: Via) {
    let c = golden::connector(key);
    let capture = Capture::start(long_token()).await;
    let domain = capture.addr.to_string();
    // Configured lifetimes (Google, Microsoft, Salesforce) win over the response's, so a
    // short-lived answer cannot make those renew soon: they start with a stored token that
    // is due instead, and the renewal comes first.
    let renew_first = c.authorization_code && c.expires_in.is_some();
    if !renew_first {
        capture.script([if c.authorization_code {
            short_token()
        } else {
            json!({"access_token": "tok-short", "expires_in": 2})
        }]);
    }
    let sidecar = start(key, via, &capture, renew_first).await;

    let token = golden::token(key, &domain);
    let refresh = golden::refresh(key, &domain);
    if !c.authorization_code {
        // client credentials: fetched at start, renewed by the token request again
        assert_wire(&capture.nth(1).await, &token, &format!("{key} token"));
        assert_wire(&capture.nth(2).await, &refresh, &format!("{key} renewal"));
    } else if renew_first {
        assert_wire(&capture.nth(1).await, &refresh, &format!("{key} refresh"));
        let status = sidecar.wait_state(key, "ready").await;
        assert_eq!(
            status["has_refresh_token"], true,
            "the old one is kept: {status}"
        );
        authorize_and_callback(&sidecar, key, &domain).await;
        assert_wire(&capture.nth(2).await, &token, &format!("{key} token"));
    } else {
        authorize_and_callback(&sidecar, key, &domain).await;
        assert_wire(&capture.nth(1).await, &token, &format!("{key} token"));
        assert_wire(&capture.nth(2).await, &refresh, &format!("{key} refresh"));
    }
    // the last answer (tok-long) lives an hour or more
    let status = sidecar
        .wait_status(key, "a ready, hour-long token", |s| {
            s["state"] == "ready" && s["expires_at"].as_u64().unwrap_or_default() > now() + 1800
        })
        .await;
    if !renew_first {
        // the renewal answer has no refresh token: an authorization-code connection keeps
        // REFRESH789; client credentials never had one
        assert_eq!(
            status["has_refresh_token"], c.authorization_code,
            "{status}"
        );
    }

    if c.needs_domain {
        // Its API is the capture server too: a proxied call carries the renewed token.
        let r = client()
            .get(sidecar.url(&format!("/{key}/api/v2/users?q=a+b")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let upstream = capture.nth(3).await;
        assert_eq!(upstream.target, "/api/v2/users?q=a+b");
        assert_eq!(upstream.header("authorization"), Some("Bearer tok-long"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let extra = capture.count() - if c.needs_domain { 3 } else { 2 };
    assert_eq!(extra, 0, "{key}: no further token requests");
    sidecar.stop().await;
}

#[tokio::test]
async fn adobe_sign() {
    wire("adobe_sign", Via::File).await;
}

#[tokio::test]
async fn auth0() {
    wire("auth0", Via::File).await;
}

#[tokio::test]
async fn domo() {
    wire("domo", Via::File).await;
}

#[tokio::test]
async fn google_analytics() {
    wire("google_analytics", Via::File).await;
}

#[tokio::test]
async fn microsoft_advertising() {
    wire("microsoft_advertising", Via::File).await;
}

#[tokio::test]
async fn outreach() {
    wire("outreach", Via::File).await;
}

#[tokio::test]
async fn powerreviews() {
    wire("powerreviews", Via::File).await;
}

#[tokio::test]
async fn salesforce() {
    wire("salesforce", Via::File).await;
}

#[tokio::test]
async fn snap() {
    wire("snap", Via::File).await;
}

#[tokio::test]
async fn unbounce() {
    wire("unbounce", Via::File).await;
}

#[tokio::test]
async fn universal_analytics() {
    wire("universal_analytics", Via::File).await;
}

/// The same requests when each connector's connection is instantiated through the
/// connection API from the unchanged file (a template) with the same secrets.
mod through_the_api {
    use super::{wire, Via};

    #[tokio::test]
    async fn adobe_sign() {
        wire("adobe_sign", Via::Api).await;
    }

    #[tokio::test]
    async fn auth0() {
        wire("auth0", Via::Api).await;
    }

    #[tokio::test]
    async fn domo() {
        wire("domo", Via::Api).await;
    }

    #[tokio::test]
    async fn google_analytics() {
        wire("google_analytics", Via::Api).await;
    }

    #[tokio::test]
    async fn microsoft_advertising() {
        wire("microsoft_advertising", Via::Api).await;
    }

    #[tokio::test]
    async fn outreach() {
        wire("outreach", Via::Api).await;
    }

    #[tokio::test]
    async fn powerreviews() {
        wire("powerreviews", Via::Api).await;
    }

    #[tokio::test]
    async fn salesforce() {
        wire("salesforce", Via::Api).await;
    }

    #[tokio::test]
    async fn snap() {
        wire("snap", Via::Api).await;
    }

    #[tokio::test]
    async fn unbounce() {
        wire("unbounce", Via::Api).await;
    }

    #[tokio::test]
    async fn universal_analytics() {
        wire("universal_analytics", Via::Api).await;
    }
}
