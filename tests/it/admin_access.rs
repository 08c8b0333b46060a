//! Who reaches the admin listener, with raw requests (issue 20): a `Host` that is not one of
//! the listener's own names gets 421 (DNS rebinding), except on the probes; a present
//! `Origin` of another site cannot act; a request forwarded by a proxy is not a loopback
//! caller unless `admin.trusted_proxies` names the proxy, and then the client is the one
//! the proxy names.

use crate::support::raw::{self, RawResponse};
use crate::support::*;

const STORE_KEY: &str = "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=";
/// The admin token of the sidecars that set one.
const ADMIN_TOKEN: &str = "adm1n-T0KEN";
/// The test connection (authorization code, never authorized here).
const KEY: &str = "crm";
const PUBLIC_URL: &str = "https://tw.example";

/// A sidecar with one authorization-code connection and `admin` lines under `admin:`.
async fn sidecar(admin: &str) -> Sidecar {
    let echo = Echo::start().await;
    Sidecar::start(&format!(
        "admin:\n{admin}store: {{ path: tokens.db, key: \"{STORE_KEY}\" }}\n{}",
        connections(&[fixture_authcode(KEY, echo.addr, None, false)])
    ))
    .await
}

/// `{method} {target}` to the admin listener with `Host: {host}` and `headers`, as is.
async fn ask(
    sc: &Sidecar,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    raw::send(sc.admin, &request).await
}

/// The routes that act, each with the status it answers a trusted caller here (the
/// connection has no grant, so retry answers 409).
const ACTING: [(&str, &str, u16); 3] = [
    ("POST", "/api/v1/reload", 200),
    ("GET", "/api/v1/connection/crm/authorize", 200),
    ("POST", "/api/v1/connection/crm/retry", 409),
];

/// Authorization states minted so far, from `/metrics`.
async fn pending(sc: &Sidecar) -> String {
    let metrics = sc.metrics().await;
    metrics
        .lines()
        .find(|l| l.starts_with("tokenwarden_pending_authorizations "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .to_owned()
}

/// 20.3: a name re-pointed at the listener (DNS rebinding) is answered 421 on every route
/// but the probes, even with a same-origin `Origin`; the listener's own names are served.
#[tokio::test]
async fn a_host_that_is_not_the_listeners_own_is_misdirected() {
    let sc = sidecar(&format!("  public_url: {PUBLIC_URL}/\n")).await;
    let port = sc.admin.port();
    let rebound = [
        format!("rebind.example:{port}"),
        "rebind.example".to_owned(),
        format!("127.0.0.1.rebind.example:{port}"),
        format!("localhost.rebind.example:{port}"),
        "tw.example.rebind.example".to_owned(),
        format!("10.0.0.1:{port}"),
    ];
    for host in &rebound {
        let origin = format!("http://{host}");
        let same_origin = [
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        for (method, path, _) in ACTING {
            let r = ask(&sc, method, path, host, &same_origin).await;
            assert_eq!(r.status, 421, "{method} {path} Host {host}: {}", r.head);
            assert_eq!(r.json()["error"], "misdirected_request");
            assert!(!String::from_utf8_lossy(&r.body).contains(host.as_str()));
        }
        for path in ["/", "/api/v1/connections", "/api/v1/oauth/callback?state=x"] {
            let r = ask(&sc, "GET", path, host, &[]).await;
            assert_eq!(r.status, 421, "GET {path} Host {host}");
        }
        // Probes and scrapes answer whatever name the kubelet or Prometheus uses.
        for path in ["/healthz", "/readyz", "/metrics"] {
            let r = ask(&sc, "GET", path, host, &[]).await;
            assert_eq!(r.status, 200, "GET {path} Host {host}");
        }
    }
    // The target's authority wins over Host (RFC 9112 §3.2.2).
    let absolute = format!("http://rebind.example:{port}/api/v1/connections");
    let r = ask(&sc, "GET", &absolute, &sc.admin.to_string(), &[]).await;
    assert_eq!(r.status, 421);
    assert_eq!(pending(&sc).await, "tokenwarden_pending_authorizations 0");
    let last = ask(&sc, "GET", "/api/v1/reload", "127.0.0.1", &[]).await;
    assert_eq!(last.json()["result"], "none", "no reload happened");

    // Its own names: the listen address (with or without a port), localhost (any case, any
    // port: a port-forward may change it) and admin.public_url's host.
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        format!("localhost:{port}"),
        "LocalHost:19090".to_owned(),
        "tw.example".to_owned(),
        "TW.EXAMPLE:443".to_owned(),
    ] {
        let r = ask(&sc, "GET", "/api/v1/connections", &host, &[]).await;
        assert_eq!(r.status, 200, "Host {host}: {}", r.head);
        let r = ask(&sc, "GET", "/api/v1/oauth/callback?state=x", &host, &[]).await;
        assert_eq!(r.status, 400, "the callback is reached through {host}");
    }
    let r = ask(&sc, "POST", "/api/v1/reload", "tw.example", &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// 20.4: a present `Origin` that is not the listener's own (nor `admin.public_url`'s)
/// cannot act, with or without Fetch Metadata; the own origins can.
#[tokio::test]
async fn a_foreign_origin_cannot_act() {
    let sc = sidecar(&format!("  public_url: {PUBLIC_URL}\n")).await;
    let host = sc.admin.to_string();
    for origin in [
        "http://evil.example",
        "null",
        "http://127.0.0.1:1",
        "https://tw.example.evil",
        "http://localhost",
    ] {
        for (method, path, _) in ACTING {
            let r = ask(&sc, method, path, &host, &[("origin", origin)]).await;
            assert_eq!(r.status, 403, "{method} {path} Origin {origin}: {}", r.head);
            assert_eq!(r.json()["error"], "cross_origin");
        }
    }
    assert_eq!(pending(&sc).await, "tokenwarden_pending_authorizations 0");
    let last = ask(&sc, "GET", "/api/v1/reload", &host, &[]).await;
    assert_eq!(last.json()["result"], "none", "no reload happened");
    let own = format!("http://{host}");
    for origin in [None, Some(own.as_str()), Some(PUBLIC_URL)] {
        for (method, path, status) in ACTING {
            let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
            let r = ask(&sc, method, path, &host, &headers).await;
            assert_eq!(r.status, status, "{method} {path} Origin {origin:?}");
        }
    }
}

/// Headers a same-host reverse proxy adds: naming a public client, a loopback one, or none.
const FORWARDED_PUBLIC: [(&str, &str); 6] = [
    ("x-forwarded-for", "203.0.113.7"),
    ("forwarded", "for=203.0.113.7;proto=https"),
    ("x-real-ip", "203.0.113.7"),
    ("x-forwarded-for", "127.0.0.1"),
    ("x-forwarded-proto", "https"),
    ("via", "1.1 proxy"),
];

/// 20.8: by default a request that a proxy forwarded (it carries `Forwarded`,
/// `X-Forwarded-*`, `X-Real-IP` or `Via`) is not a loopback caller, whatever the header
/// says: it needs the admin token, and the status page shows it no Authorize button.
#[tokio::test]
async fn a_forwarded_request_needs_the_admin_token_by_default() {
    let sc = sidecar(&format!("  token: {ADMIN_TOKEN}\n")).await;
    let host = sc.admin.to_string();
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for header in FORWARDED_PUBLIC {
        for (method, path, status) in ACTING {
            let r = ask(&sc, method, path, &host, &[header]).await;
            assert_eq!(r.status, 401, "{method} {path} {header:?}: {}", r.head);
            let with_token = [header, ("authorization", bearer.as_str())];
            let r = ask(&sc, method, path, &host, &with_token).await;
            assert_eq!(
                r.status, status,
                "{method} {path} {header:?} with the token"
            );
        }
        let page = ask(&sc, "GET", "/", &host, &[header]).await;
        let html = String::from_utf8_lossy(&page.body);
        assert!(
            html.contains("Authorize from loopback"),
            "{header:?}: {html}"
        );
    }
    for (method, path, status) in ACTING {
        let r = ask(&sc, method, path, &host, &[]).await;
        assert_eq!(r.status, status, "{method} {path}: loopback, not forwarded");
    }
}

/// 20.8: with `admin.trusted_proxies`, the client of a request from a trusted proxy is the
/// one its headers name (the rightmost address that is not a trusted proxy); every header
/// present must name a loopback client. Others' headers are never believed.
#[tokio::test]
async fn trusted_proxies_name_the_client() {
    let sc = sidecar("  trusted_proxies: [\"127.0.0.1\", \"10.0.0.0/8\"]\n").await;
    let host = sc.admin.to_string();
    let loopback: [&[(&str, &str)]; 5] = [
        &[("x-forwarded-for", "127.0.0.1")],
        &[("x-forwarded-for", "127.0.0.1, 10.1.2.3")],
        &[("forwarded", "for=\"[::1]:5000\";proto=https")],
        &[("x-real-ip", "::1"), ("x-forwarded-for", "127.0.0.1")],
        &[],
    ];
    for headers in loopback {
        for (method, path, status) in ACTING {
            let r = ask(&sc, method, path, &host, headers).await;
            assert_eq!(r.status, status, "{method} {path} {headers:?}: {}", r.head);
        }
    }
    let public: [&[(&str, &str)]; 7] = [
        &[("x-forwarded-for", "203.0.113.7")],
        &[("x-forwarded-for", "127.0.0.1, 203.0.113.7")],
        &[("x-forwarded-for", "203.0.113.7, 10.1.2.3, 127.0.0.1")],
        &[("forwarded", "for=127.0.0.1"), ("x-real-ip", "203.0.113.7")],
        &[("forwarded", "for=unknown")],
        &[("x-forwarded-for", "not-an-address")],
        &[("x-forwarded-for", "")],
    ];
    for headers in public {
        for (method, path, _) in ACTING {
            let r = ask(&sc, method, path, &host, headers).await;
            assert_eq!(r.status, 401, "{method} {path} {headers:?}: {}", r.head);
        }
    }
    // A peer that is not a trusted proxy: its headers prove nothing.
    let other = sidecar("  trusted_proxies: [\"10.0.0.0/8\"]\n").await;
    let host = other.admin.to_string();
    let r = ask(
        &other,
        "POST",
        "/api/v1/reload",
        &host,
        &[FORWARDED_PUBLIC[3]],
    )
    .await;
    assert_eq!(r.status, 401);
}

/// `admin.trusted_proxies` entries are IP addresses or CIDR ranges; anything else is a
/// config problem naming the entry.
#[test]
fn a_trusted_proxy_must_be_an_address_or_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "admin:\n  trusted_proxies: [\"127.0.0.1\", \"proxy.internal\", \"10.0.0.0/33\", \"::1/128\"]\n{}",
            connections(&[cc_conn("api", "127.0.0.1:1", "127.0.0.1:2".parse().unwrap())])
        ),
    )
    .unwrap();
    let problems = tokenwarden::config::load(&file).err().unwrap().to_string();
    assert!(problems.contains("admin.trusted_proxies[1]"), "{problems}");
    assert!(
        !problems.contains("proxy.internal"),
        "never quoted: {problems}"
    );
    assert!(problems.contains("admin.trusted_proxies[2]"), "{problems}");
    assert!(!problems.contains("trusted_proxies[0]"), "{problems}");
    assert!(!problems.contains("trusted_proxies[3]"), "{problems}");
}
