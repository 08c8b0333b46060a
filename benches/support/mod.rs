//! Shared by `benches/hot_path.rs` and `tests/alloc.rs`: a connection loaded through the real
//! config loader with a token installed, a realistic request and response, and the work the
//! proxy does between reading a request and sending it upstream, by the product's own
//! functions — on the fast path (`fast::request::translate_request`,
//! `response::translate_response`, as bytes) and on the hyper path
//! (`Proxy::prepare_request`: the shared plan, then the `HeaderMap`).

#![allow(dead_code)]

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Uri;
use http::Request;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokenwarden::proxy::fast::request::{self, Outcome};
use tokenwarden::proxy::response::{self, Parsed};
use tokenwarden::proxy::Proxy;
use tokenwarden::registry::Entry;
use tokenwarden::registry::Registry;
use tokenwarden::token::TokenSet;

/// The connection key used in reverse mode (`/{KEY}/…`).
pub const KEY: &str = "api";
/// The request target an app sends in reverse mode.
pub const REVERSE_TARGET: &str = "/api/v1/accounts/12345/contacts?limit=50&cursor=abc123";

/// A client-credentials connection loaded with `tokenwarden::config::load` from a temp
/// file, and the proxy that routes to it. The temp dir must outlive them (the store path
/// points into it).
pub fn loaded_state() -> (tempfile::TempDir, Arc<Entry>, Proxy) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        format!(
            r#"store: {{ path: tokens.db }}
connections:
  - key: {KEY}
    secrets: {{ client_id: bench-client, client_secret: bench-secret }}
    client_config:
      protocol: https
      host: api.example.com
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "client_credentials", "client_id": "<client_id>", "client_secret": "<client_secret>"}}'
"#
        ),
    )
    .expect("write config");
    let config = tokenwarden::config::load(&file).unwrap_or_else(|p| panic!("config: {p}"));
    let registry = Arc::new(Registry::new(&config.connections));
    let state = Arc::clone(registry.iter().next().unwrap());
    let proxy = Proxy::new(registry, &config.proxy, Vec::new());
    (dir, state, proxy)
}

/// Installs an access token of `len` characters that stays usable for an hour.
pub fn install_token(state: &Entry, len: usize) {
    let token: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let set = TokenSet::new(
        token.into(),
        None,
        None,
        SystemTime::now(),
        Some(Duration::from_secs(3600)),
        0.0,
    )
    .expect("token set");
    state.tokens.restore(set, 0);
}

/// The headers of a typical API call from an app, as hyper hands them over (plus a
/// `Connection: keep-alive` and a stale `Authorization` the proxy must replace).
pub fn realistic_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("host", "127.0.0.1:8080"),
        (
            "user-agent",
            "my-app/2.3.1 (+https://example.com) reqwest/0.12",
        ),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("content-type", "application/json"),
        ("x-request-id", "7f0c1f9e-3b5a-4d0e-9a65-2b8f0f5c1d42"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("connection", "keep-alive"),
        ("authorization", "Bearer stale-app-token"),
    ] {
        h.append(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    h
}

/// The same request as the app sends it: bytes on the wire.
pub fn raw_request() -> Vec<u8> {
    let mut raw = format!("GET {REVERSE_TARGET} HTTP/1.1\r\n");
    for (name, value) in &realistic_headers() {
        raw.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

/// A typical small JSON response head from an API.
pub const RAW_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\n\
    Date: Sun, 29 Nov 2026 17:00:00 GMT\r\nContent-Type: application/json\r\n\
    Content-Length: 74\r\nConnection: keep-alive\r\nCache-Control: no-cache\r\n\
    X-RateLimit-Remaining: 4999\r\n\r\n";

/// The fast path's request work: parse, route, inject, write the upstream head into
/// `out`. Returns the app's head length when the request goes upstream.
#[inline]
pub fn translate_request(proxy: &Proxy, raw: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    match request::translate_request(proxy, raw, out, tokio::time::Instant::now(), None) {
        Outcome::Ready(req) => Some(req.framed.head_len),
        Outcome::Partial(_) | Outcome::Fallback | Outcome::Refused(_) => None,
    }
}

/// The fast path's response work: parse the upstream head, write the app's into `out`.
#[inline]
pub fn translate_response(raw: &[u8], out: &mut Vec<u8>) -> bool {
    matches!(
        response::translate_response(raw, out, false, false),
        Ok(Parsed::Final(_))
    )
}

/// A parsed reverse-mode request, as the hyper path receives it (body omitted).
pub fn parsed_request() -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = Uri::from_static(REVERSE_TARGET);
    *req.headers_mut() = realistic_headers();
    req
}

/// Everything the hyper path (`Proxy::forward`) does between the parsed request and the
/// request handed to the upstream pool: `Proxy::prepare_request` itself.
pub fn prepare(proxy: &Proxy, req: Request<()>) -> Option<Request<()>> {
    let (req, _) = proxy
        .prepare_request(req, tokio::time::Instant::now())
        .ok()?;
    Some(req)
}
