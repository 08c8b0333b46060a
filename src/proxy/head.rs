//! Message heads on the fast path ([`super::fast`]), as bytes: the app's request head is
//! parsed with `httparse` and written out as the upstream request head (target rewritten,
//! hop-by-hop headers dropped, `Host`, the credential and `Via` set); the upstream's
//! response head is parsed and written out for the app the same way, with its body
//! framing worked out. No `HeaderMap`, no allocation: heads go into reused buffers.
//!
//! Anything this path does not handle returns [`Outcome::Fallback`], and the connection
//! goes to the hyper path ([`super::Proxy::handle`]), which answers it with exactly the
//! behaviour (and the error) it always had: errors of routing and credentials, `CONNECT`,
//! `api_key` connections, HTTP/1.0, `Expect`, chunked or large request bodies, and
//! `Connection` headers that name other headers.

use super::headers::{classify, via_names, Known};
use super::Proxy;
use crate::config::Auth;
use crate::registry::Entry;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::sync::Arc;
use tokio::time::Instant;

/// Most headers in a head (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Largest head the fast path reads; a larger request head goes to the hyper path (which
/// takes heads up to about 400 KiB), a larger response head is a 502.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest request body the fast path buffers and sends with its head; larger bodies
/// stream through the hyper path.
pub const MAX_BUFFERED_BODY: usize = 64 * 1024;

/// What to do with the bytes at the start of the app's connection buffer.
pub enum Outcome<'p> {
    /// Not a whole head (and body) yet: read more. When the head is whole, the length the
    /// buffer must reach (head and body) before the request is.
    Partial(Option<usize>),
    /// Hand the connection to the hyper path.
    Fallback,
    /// The upstream request head is written; send it with `body_len` bytes of body.
    Ready(Request<'p>),
}

/// A request the fast path forwards.
pub struct Request<'p> {
    pub state: &'p Arc<Entry>,
    /// Bytes of the app's head, then of its body, at the start of the buffer.
    pub head_len: usize,
    pub body_len: usize,
    /// HEAD: the response has no body whatever its headers say.
    pub is_head: bool,
    /// Safe to send again on a new connection when a reused one fails before answering.
    pub idempotent: bool,
    /// The app sent `Connection: close`.
    pub close: bool,
}

/// Parses the app's request at the start of `buf` and, when the fast path can forward
/// it, writes the upstream request head into `out` (cleared first).
pub fn translate_request<'p>(
    proxy: &'p Proxy,
    buf: &[u8],
    out: &mut Vec<u8>,
    now: Instant,
) -> Outcome<'p> {
    // Uninitialised: filling 100 empty headers first costs more than parsing a typical head.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Outcome::Partial(None),
        // Too large or malformed: hyper answers it.
        _ => return Outcome::Fallback,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Outcome::Fallback;
    };
    // TRACE would have the upstream echo the injected credential back: the hyper path
    // refuses it.
    if method == "CONNECT"
        || method.eq_ignore_ascii_case("TRACE")
        || !target.bytes().all(is_plain_target_byte)
    {
        return Outcome::Fallback;
    }
    let Some((origin, path_and_query)) = split_target(target) else {
        return Outcome::Fallback;
    };
    let Ok((state, target)) = proxy.route(origin, path_and_query) else {
        return Outcome::Fallback;
    };
    let token = state.tokens.current();
    let credential = match &state.conn.auth {
        Auth::OAuth2(_) => match token.as_deref().and_then(|t| t.header_at(now)) {
            Some(value) => value,
            None => return Outcome::Fallback,
        },
        Auth::Header(value) => value,
        Auth::ApiKey(_) => return Outcome::Fallback,
    };

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    target.write_to(out);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut body_len = None;
    let mut close = false;
    for h in req.headers.iter() {
        match classify(h.name) {
            Known::ContentLength => match parse_length(h.value) {
                Some(n) if body_len.is_none() && n <= MAX_BUFFERED_BODY as u64 => {
                    body_len = Some(n as usize)
                }
                _ => return Outcome::Fallback,
            },
            Known::Connection => {
                let (closes, names_others) = connection_options(h.value);
                if names_others {
                    return Outcome::Fallback;
                }
                close |= closes;
                continue;
            }
            Known::TransferEncoding | Known::Expect => return Outcome::Fallback,
            Known::Via if via_names(h.value, &proxy.pseudonym) => return Outcome::Fallback,
            Known::HopByHop | Known::Host | Known::Authorization => continue,
            Known::Via | Known::Other => {}
        }
        write_header(out, h.name.as_bytes(), h.value);
    }
    let body_len = body_len.unwrap_or(0);
    if buf.len() < head_len + body_len {
        return Outcome::Partial(Some(head_len + body_len));
    }
    write_header(out, b"host", state.host_header.as_bytes());
    write_header(out, b"authorization", credential.as_bytes());
    write_header(out, b"via", proxy.via.as_bytes());
    out.extend_from_slice(b"\r\n");
    state.counters.proxied.inc();
    Outcome::Ready(Request {
        state,
        head_len,
        body_len,
        is_head: method == "HEAD",
        idempotent: matches!(method, "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS"),
        close,
    })
}

/// Bytes a request target may hold on the fast path: RFC 3986's unreserved, sub-delims,
/// `:@/?%` and `[]` (IPv6 hosts). Anything else (`#`, `<`, `"`, `{`, …) goes to the hyper
/// path, which decides as it always has (400, or a fragment dropped).
fn is_plain_target_byte(b: u8) -> bool {
    const PLAIN: [bool; 256] = {
        let mut table = [false; 256];
        let extra = b"-._~!$&'()*+,;=:@/?%[]";
        let mut i = 0;
        while i < 256 {
            table[i] = (i as u8).is_ascii_alphanumeric();
            i += 1;
        }
        let mut j = 0;
        while j < extra.len() {
            table[extra[j] as usize] = true;
            j += 1;
        }
        table
    };
    PLAIN[b as usize]
}

/// An origin-form target (`None`, the target) or an absolute-form one
/// (`Some((scheme, authority))`, the rest); `None` for anything else.
fn split_target(target: &str) -> Option<(Option<(&str, &str)>, &str)> {
    if target.starts_with('/') {
        return Some((None, target));
    }
    let (scheme, rest) = target.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(end);
    Some((Some((scheme, authority)), path_and_query))
}

/// How the upstream delimits a response body (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// An upstream response head, written out for the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream connection can take another request once the body is read.
    pub reusable: bool,
    /// The app's connection ends after this response (`connection: close` was sent).
    pub close: bool,
}

/// What [`translate_response`] found at the start of the upstream's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Partial,
    /// An interim (1xx) response of this many bytes: skip it and read on.
    Interim(usize),
    Final(Response),
}

/// Parses the upstream's response head at the start of `buf` and writes the head for the
/// app into `out` (cleared first). `close` asks for `connection: close` toward the app.
pub fn translate_response(
    buf: &[u8],
    out: &mut Vec<u8>,
    is_head: bool,
    close: bool,
) -> Result<Parsed, String> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(Parsed::Partial),
        Ok(httparse::Status::Partial) => {
            return Err("the upstream's response head is too large".into())
        }
        Err(e) => return Err(format!("the upstream sent a malformed response head: {e}")),
    };
    let (Some(code), Some(version)) = (res.code, res.version) else {
        return Err("the upstream sent a malformed response head".into());
    };
    if code == 101 {
        return Err("the upstream switched protocols, which nothing asked for".into());
    }
    if (100..200).contains(&code) {
        return Ok(Parsed::Interim(head_len));
    }

    // First pass: framing and the connection's fate.
    let mut length = None;
    let mut chunked = false;
    let mut transfer_encoded = false;
    let mut upstream_close = version == 0;
    let mut names_others = false;
    for h in res.headers.iter() {
        match classify(h.name) {
            Known::ContentLength => {
                let n = parse_length_list(h.value)
                    .ok_or("the upstream sent an invalid Content-Length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("the upstream sent conflicting Content-Length values".into());
                }
                length = Some(n);
            }
            Known::TransferEncoding => {
                transfer_encoded = true;
                // Only the last coding matters for framing (RFC 9112 §6.3).
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            Known::Connection => {
                let (closes, others) = connection_options(h.value);
                upstream_close |= closes;
                names_others |= others;
            }
            _ => {}
        }
    }
    let framing = if is_head || code == 204 || code == 304 {
        Framing::Empty
    } else if transfer_encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    // Content-Length beside Transfer-Encoding is a smuggling vector: never reuse then.
    let reusable = !upstream_close
        && framing != Framing::UntilClose
        && !(transfer_encoded && length.is_some());
    let close = close || framing == Framing::UntilClose;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(code).as_slice());
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        let skip = match classify(h.name) {
            Known::Connection | Known::HopByHop => true,
            // Kept: the body is relayed as the upstream encoded it.
            Known::TransferEncoding => false,
            // Written once below, as one number.
            Known::ContentLength => true,
            _ => names_others && named_in_connection(res.headers, h.name),
        };
        if !skip {
            write_header(out, h.name.as_bytes(), h.value);
        }
    }
    if let (Some(length), false) = (length, transfer_encoded) {
        // Formatting into the Vec itself: no allocation, and writing to a Vec cannot fail.
        let _ = write!(out, "content-length: {length}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Parsed::Final(Response {
        head_len,
        framing,
        reusable,
        close,
    }))
}

/// A `Connection` header value: whether it says `close`, and whether it names anything
/// but `close` and `keep-alive` (headers that are then hop-by-hop).
fn connection_options(value: &[u8]) -> (bool, bool) {
    let (mut close, mut others) = (false, false);
    for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if option.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !option.eq_ignore_ascii_case(b"keep-alive") && !option.is_empty() {
            others = true;
        }
    }
    (close, others)
}

/// Whether some `Connection` header lists `name` (so it is hop-by-hop for this message).
fn named_in_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|option| option.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// Writes an error response of the proxy's own (an upstream failure after the request was
/// sent) into `out`: the same status, headers and JSON as the hyper path's.
pub fn write_error(out: &mut Vec<u8>, error: super::error::ProxyError, is_head: bool, close: bool) {
    let status = error.status();
    let body = error.body().to_string();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &super::error::OWN_HEADERS {
        write_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    write_header(out, b"content-length", body.len().to_string().as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !is_head {
        out.extend_from_slice(body.as_bytes());
    }
}

fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A Content-Length value: decimal digits only.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// A response Content-Length, which may repeat one value as a list (`5, 5`).
fn parse_length_list(value: &[u8]) -> Option<u64> {
    let mut values = value.split(|&b| b == b',').map(parse_length);
    let first = values.next()??;
    values.all(|v| v == Some(first)).then_some(first)
}

/// A status code (100–999) as its three digits.
fn itoa3(code: u16) -> [u8; 3] {
    let code = code.min(999);
    [
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

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
        match translate_request(proxy, request.as_bytes(), &mut out, Instant::now()) {
            Outcome::Ready(r) => (
                Some((r.head_len, r.body_len, r.idempotent, r.close)),
                String::from_utf8(out).unwrap(),
            ),
            Outcome::Partial(_) => (None, "partial".into()),
            Outcome::Fallback => (None, "fallback".into()),
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
            let (ready, out) = translate(&proxy, &format!("GET {target} HTTP/1.1\r\n\r\n"));
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
            "GET /nope/x HTTP/1.1\r\n\r\n",
            "GET /keyed/x HTTP/1.1\r\n\r\n",
            "GET https://api.example.com:8443/x HTTP/1.1\r\n\r\n",
            "GET http://other.example.com/x HTTP/1.1\r\n\r\n",
            "GET http://user@api.example.com:8443/x HTTP/1.1\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "TRACE /api/x HTTP/1.1\r\n\r\n",
            "GET /api/a<b> HTTP/1.1\r\n\r\n",
            "GET /api/a#frag HTTP/1.1\r\n\r\n",
            "GET /api/?q={\"a\":1} HTTP/1.1\r\n\r\n",
            "POST /api/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /api/x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST /api/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
            "POST /api/x HTTP/1.1\r\nContent-Length: +1\r\n\r\nab",
            "GET /api/x HTTP/1.1\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n",
            "GET /api/x HTTP/1.1\r\nVia: 1.1 TokenWarden\r\n\r\n",
            "GET /api/x HTTP/1.1\r\nBad Header: 1\r\n\r\n",
            &big,
            &long_head,
        ] {
            assert_eq!(translate(&proxy, request).1, "fallback", "{request:.80}");
        }
    }

    fn respond(response: &str, is_head: bool, close: bool) -> (Result<Parsed, String>, String) {
        let mut out = Vec::new();
        let parsed = translate_response(response.as_bytes(), &mut out, is_head, close);
        (parsed, String::from_utf8(out).unwrap())
    }

    fn framing(response: &str) -> Framing {
        match respond(response, false, false).0 {
            Ok(Parsed::Final(r)) => r.framing,
            other => panic!("{response:?}: {other:?}"),
        }
    }

    #[test]
    fn response_head_is_rewritten_as_bytes() {
        let response = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\
            Content-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
            Keep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\n{}";
        let (parsed, out) = respond(response, false, false);
        let head_len = response.len() - 2;
        assert_eq!(
            parsed,
            Ok(Parsed::Final(Response {
                head_len,
                framing: Framing::Length(2),
                reusable: true,
                close: false
            }))
        );
        assert_eq!(
            out,
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Kept: yes\r\n\
             content-length: 2\r\n\r\n"
        );
        let (_, out) = respond(response, false, true);
        assert!(
            out.ends_with("content-length: 2\r\nconnection: close\r\n\r\n"),
            "{out}"
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\n\r\n"), Framing::Empty);
        let (parsed, out) = respond("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, false);
        assert!(matches!(
            parsed,
            Ok(Parsed::Final(Response {
                framing: Framing::Empty,
                ..
            }))
        ));
        assert!(
            out.contains("content-length: 9\r\n"),
            "HEAD keeps the length: {out}"
        );
        let (_, out) = respond(
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
            false,
            false,
        );
        assert_eq!(
            out, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            "one length"
        );
        // Until close: the app is told the connection ends.
        let (_, out) = respond("HTTP/1.1 200 OK\r\n\r\n", false, false);
        assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
    }

    #[test]
    fn chunked_with_a_length_is_relayed_chunked_and_never_reused() {
        let (parsed, out) = respond(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            false,
        );
        let Ok(Parsed::Final(r)) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!((r.framing, r.reusable), (Framing::Chunked, false));
        assert!(!out.contains("Content-Length"), "{out}");
        assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
    }

    #[test]
    fn connection_fate_and_bad_heads() {
        let reusable = |response: &str| match respond(response, false, false).0 {
            Ok(Parsed::Final(r)) => r.reusable,
            other => panic!("{other:?}"),
        };
        assert!(reusable("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!reusable(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!reusable("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert_eq!(
            respond(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
                false,
                false
            )
            .0,
            Ok(Parsed::Interim(25))
        );
        assert_eq!(
            respond("HTTP/1.1 200 OK\r\nContent-Le", false, false).0,
            Ok(Parsed::Partial)
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(respond(bad, false, false).0.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn proxy_errors_match_the_hyper_path() {
        let mut out = Vec::new();
        let error = super::super::error::ProxyError::UpstreamTimeout {
            connection: "api".into(),
        };
        let body = error.body().to_string();
        write_error(&mut out, error, false, true);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            format!(
                "HTTP/1.1 504 Gateway Timeout\r\ncontent-type: application/json\r\n\
                 cache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        );
    }
}
