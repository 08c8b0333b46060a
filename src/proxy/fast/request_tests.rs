//! Tests of [`super`].

use super::*;
use crate::registry::Registry;
use std::sync::Arc;

/// A proxy with connection `api` (bearer `sekrit`, upstream api.example.com:8443) and
/// connection `keyed` (api_key), loaded through the real config loader.
fn proxy() -> (tempfile::TempDir, Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    let connection = |key: &str, strategy: &str, conf: &str| {
        format!(
            "  - key: {key}\n    secrets: {{ token: sekrit }}\n    client_config:\n      protocol: https\n      host: api.example.com:8443\n      authentication:\n        strategy: {strategy}\n        configuration:\n{conf}"
        )
    };
    std::fs::write(
        &file,
        format!(
            "store: {{ path: tokens.bin }}\nconnections:\n{}{}",
            connection("api", "bearer", "          token: \"<token>\"\n"),
            connection(
                "keyed",
                "api_key",
                "          headers: [{ name: X-Key, value: \"<token>\" }]\n"
            ),
        ),
    )
    .unwrap();
    let config = crate::config::load(&file).unwrap_or_else(|p| panic!("{p}"));
    let registry = Arc::new(Registry::new(&config.connections));
    let proxy = Proxy::new(registry, &config.proxy, Vec::new());
    (dir, proxy)
}

fn translate(proxy: &Proxy, request: &str) -> (Option<(usize, usize, bool, bool)>, String) {
    let mut out = Vec::new();
    match translate_request(proxy, request.as_bytes(), &mut out, Instant::now(), None) {
        Outcome::Ready(r) => (
            Some((
                r.framed.head_len,
                r.framed.body_len,
                r.prepared.idempotent,
                r.framed.close,
            )),
            String::from_utf8(out).unwrap(),
        ),
        Outcome::Partial(_) => (None, "partial".into()),
        Outcome::Fallback => (None, "fallback".into()),
        Outcome::Refused(r) => (None, format!("refused {}", r.error.status().as_u16())),
    }
}

#[test]
fn request_head_is_rewritten_as_bytes() {
    let (_dir, proxy) = proxy();
    let request = "GET /api/v1/items?limit=5 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
        X-Request-ID: 7\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\
        Authorization: Bearer from-the-app\r\nProxy-Authorization: Basic eA==\r\n\
        TE: trailers\r\nUpgrade: h2c\r\nVia: 1.1 other\r\n\r\n";
    let (ready, out) = translate(&proxy, request);
    assert_eq!(ready, Some((request.len(), 0, true, false)));
    assert_eq!(
        out,
        "GET /v1/items?limit=5 HTTP/1.1\r\nX-Request-ID: 7\r\nVia: 1.1 other\r\n\
         host: api.example.com:8443\r\nauthorization: Bearer sekrit\r\n\
         via: 1.1 tokenwarden\r\n\r\n"
    );
}

#[test]
fn targets_are_cut_as_the_hyper_path_cuts_them() {
    let (_dir, proxy) = proxy();
    for (target, upstream) in [
        ("/api", "/"),
        ("/api?x=1", "/?x=1"),
        ("/api/", "/"),
        ("/api/a/b?c=/d", "/a/b?c=/d"),
        ("http://api.example.com:8443/v1?q", "/v1?q"),
        ("http://API.example.com.:8443", "/"),
        ("http://api.example.com:8443?q", "/?q"),
    ] {
        // (Both connections are on api.example.com:8443: forward mode needs the header.)
        let request = format!("GET {target} HTTP/1.1\r\ntokenwarden-connection: api\r\n\r\n");
        let (ready, out) = translate(&proxy, &request);
        assert!(ready.is_some(), "{target}: {out}");
        assert!(
            out.starts_with(&format!("GET {upstream} HTTP/1.1\r\n")),
            "{target}: {out}"
        );
    }
}

#[test]
fn a_body_is_sent_with_its_head() {
    let (_dir, proxy) = proxy();
    let head = "POST /api/items HTTP/1.1\r\nContent-Length: 11\r\nConnection: close\r\n\r\n";
    let (ready, out) = translate(&proxy, &format!("{head}{{\"a\": 1}}"));
    assert_eq!(out, "partial", "two body bytes are missing");
    assert!(ready.is_none());
    let (ready, out) = translate(&proxy, &format!("{head}{{\"a\": 1}} xxGET"));
    assert_eq!(ready, Some((head.len(), 11, false, true)));
    assert!(out.contains("\r\nContent-Length: 11\r\n"), "{out}");
    assert!(!out.to_ascii_lowercase().contains("connection"), "{out}");
    assert_eq!(
        translate(&proxy, "GET /api/x HTTP/1.1\r\nHost: a").1,
        "partial"
    );
}

#[test]
fn refusals_of_the_plan_are_answered_here() {
    let (_dir, proxy) = proxy();
    for (request, status) in [
        ("GET /nope/x HTTP/1.1\r\n\r\n", 404),
        ("GET https://api.example.com:8443/x HTTP/1.1\r\n\r\n", 403),
        ("GET http://api.example.com:8443/x HTTP/1.1\r\n\r\n", 421),
        ("GET http://other.example.com/x HTTP/1.1\r\n\r\n", 403),
        (
            "GET http://user@api.example.com:8443/x HTTP/1.1\r\n\r\n",
            400,
        ),
        ("TRACE /api/x HTTP/1.1\r\n\r\n", 403),
        ("trace /api/x HTTP/1.1\r\n\r\n", 403),
        ("GET /api/x HTTP/1.1\r\nVia: 1.1 TokenWarden\r\n\r\n", 508),
    ] {
        assert_eq!(
            translate(&proxy, request).1,
            format!("refused {status}"),
            "{request}"
        );
    }
    // Not before its body is whole: the request's framing comes first.
    assert_eq!(
        translate(
            &proxy,
            "POST /nope/x HTTP/1.1\r\nContent-Length: 2\r\n\r\na"
        )
        .1,
        "partial"
    );
}

#[test]
fn the_connection_header_chooses_on_a_shared_host_and_is_never_forwarded() {
    let (_dir, proxy) = proxy();
    for request in [
        "GET /api/x HTTP/1.1\r\nTokenwarden-Connection: api\r\nX-A: 1\r\n\r\n",
        "GET http://api.example.com:8443/x HTTP/1.1\r\ntokenwarden-connection: api\r\nX-A: 1\r\n\r\n",
    ] {
        let (ready, out) = translate(&proxy, request);
        assert!(ready.is_some(), "{request}: {out}");
        assert!(!out.to_ascii_lowercase().contains("tokenwarden-connection"), "{out}");
        assert!(out.contains("\r\nX-A: 1\r\n") && out.contains("Bearer sekrit"), "{out}");
    }
    // The api_key connection is chosen too (then the hyper path applies its key).
    let keyed =
        "GET http://api.example.com:8443/x HTTP/1.1\r\ntokenwarden-connection: keyed\r\n\r\n";
    assert_eq!(translate(&proxy, keyed).1, "fallback");
    for (request, status, code) in [
        // Two connections on the host, none named.
        ("GET http://api.example.com:8443/x HTTP/1.1\r\n\r\n", 421, "connection_not_named"),
        // Named, but not a connection on that host.
        (
            "GET http://api.example.com:8443/x HTTP/1.1\r\ntokenwarden-connection: nope\r\n\r\n",
            421,
            "connection_mismatch",
        ),
        // Reverse mode: the header names another connection than the path.
        (
            "GET /api/x HTTP/1.1\r\ntokenwarden-connection: keyed\r\n\r\n",
            421,
            "connection_mismatch",
        ),
        // Named twice.
        (
            "GET /api/x HTTP/1.1\r\ntokenwarden-connection: api\r\ntokenwarden-connection: api\r\n\r\n",
            400,
            "bad_request",
        ),
        // A host without connections stays a 403 whatever is named.
        (
            "GET http://other.example.com/x HTTP/1.1\r\ntokenwarden-connection: api\r\n\r\n",
            403,
            "forbidden",
        ),
    ] {
        let mut out = Vec::new();
        let Outcome::Refused(r) = translate_request(&proxy, request.as_bytes(), &mut out, Instant::now(), None) else {
            panic!("{request}: not refused");
        };
        assert_eq!(r.error.status().as_u16(), status, "{request}");
        let body = r.error.body();
        assert_eq!(body["error"], code, "{request}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(status != 421 || message.contains("tokenwarden-connection"), "{body}");
        assert!(status != 421 || message.contains("api.example.com") || message.contains("path"), "{body}");
        assert!(!body.to_string().contains("sekrit"), "{body}");
    }
}

#[test]
fn everything_else_goes_to_the_hyper_path() {
    let (_dir, proxy) = proxy();
    let big = format!(
        "POST /api/x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        MAX_BUFFERED_BODY + 1
    );
    let long_head = format!("GET /api/x HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
    for request in [
        "CONNECT api.example.com:443 HTTP/1.1\r\n\r\n",
        "GET /api/x HTTP/1.0\r\n\r\n",
        "GET /keyed/x HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "GET /api/a<b> HTTP/1.1\r\n\r\n",
        "GET /api/a#frag HTTP/1.1\r\n\r\n",
        "GET /api/?q={\"a\":1} HTTP/1.1\r\n\r\n",
        "POST /api/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /api/x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        "POST /api/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
        "POST /api/x HTTP/1.1\r\nContent-Length: +1\r\n\r\nab",
        "GET /api/x HTTP/1.1\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n",
        "GET /api/x HTTP/1.1\r\nBad Header: 1\r\n\r\n",
        &big,
        &long_head,
    ] {
        assert_eq!(translate(&proxy, request).1, "fallback", "{request:.80}");
    }
}

/// Properties of the request head parser (`proptest`).
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A valid request the fast path forwards: method, target, `X-` headers, a body.
    fn request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);
        let path = prop::collection::vec("[a-z0-9._~-]{1,8}", 0..4);
        let query = prop::option::of("[a-z]{1,5}=[a-zA-Z0-9%]{0,8}");
        let headers =
            prop::collection::vec(("X-[A-Za-z0-9-]{1,12}", "[!-~]([ -~]{0,30}[!-~])?"), 0..8);
        let body = prop::collection::vec(any::<u8>(), 0..300);
        (method, path, query, headers, body).prop_map(|(method, path, query, headers, body)| {
            let mut raw = format!("{method} /api/{}", path.join("/"));
            if let Some(q) = query {
                raw.push('?');
                raw.push_str(&q);
            }
            raw.push_str(" HTTP/1.1\r\nHost: app\r\n");
            for (name, value) in headers {
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut raw = raw.into_bytes();
            raw.extend_from_slice(&body);
            raw
        })
    }

    /// The outcome of translating `buf`, as a comparable value.
    fn outcome(proxy: &Proxy, buf: &[u8]) -> (String, Vec<u8>) {
        let mut out = Vec::new();
        let kind = match translate_request(proxy, buf, &mut out, Instant::now(), None) {
            Outcome::Ready(r) => format!("ready {:?}", r.framed),
            Outcome::Partial(n) => format!("partial {n:?}"),
            Outcome::Fallback => "fallback".into(),
            Outcome::Refused(r) => format!("refused {}", r.error.status()),
        };
        (kind, out)
    }

    proptest! {
        #[test]
        fn every_prefix_is_partial_and_the_whole_parses_as_itself(
            raw in request(),
            next in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let (_dir, proxy) = proxy();
            let whole = outcome(&proxy, &raw);
            prop_assert!(whole.0.starts_with("ready"), "{:?}", whole.0);
            for cut in 0..raw.len() {
                let (kind, _) = outcome(&proxy, &raw[..cut]);
                prop_assert!(kind.starts_with("partial"), "prefix {cut}: {kind}");
            }
            // Whatever follows (a pipelined request, noise) changes nothing.
            let mut more = raw.clone();
            more.extend_from_slice(&next);
            prop_assert_eq!(outcome(&proxy, &more), whole);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let (_dir, proxy) = proxy();
            let _ = outcome(&proxy, &bytes);
            let mut framed = b"GET /api/x HTTP/1.1\r\n".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = outcome(&proxy, &framed);
        }
    }
}
