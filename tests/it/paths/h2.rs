//! The HTTP/2 rows of the smuggling table (`paths.rs` has the HTTP/1.1 ones, down both of
//! its paths): each case is one header block (sent byte-exact, without the client's own
//! checks, by `tests/py/h2_raw.py`) and its DATA, h2c with prior knowledge to the proxy
//! listener, against the same sidecar and scripted upstream as `paths.rs`. A case that is
//! a shape of the HTTP/1.1 table names its row there (`shares`), and its outcome must agree
//! with that row's: forwarded as the same upstream request, or refused with the same
//! status — except that what RFC 9113 §8.2 calls malformed, which HTTP/1.1 answers 400, is
//! a stream reset. Nothing malformed reaches the upstream.

use crate::support::differential::{sidecar_for, Path, TOKEN};
use crate::support::grpc::h2_raw;
use crate::support::upstream::Step;
use serde_json::{json, Value};

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// What a case must come to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Answered 200, after this one request went upstream (request line), with the token.
    Forwarded(&'static str),
    /// Answered with this status; nothing upstream.
    Refused(u16),
    /// The stream (or the connection) reset as malformed; nothing upstream.
    Reset,
}
use Expect::{Forwarded, Refused, Reset};

/// `{proxy}` in a value is the proxy listener's `host:port`, `{up}` the upstream's.
struct Case {
    name: &'static str,
    headers: &'static [(&'static str, &'static str)],
    data: &'static [&'static str],
    expect: Expect,
    /// The row of the HTTP/1.1 table (`super::REQUESTS`) this is the shape of.
    shares: Option<&'static str>,
}

const fn case(
    name: &'static str,
    headers: &'static [(&'static str, &'static str)],
    expect: Expect,
) -> Case {
    Case {
        name,
        headers,
        data: &[],
        expect,
        shares: None,
    }
}

impl Case {
    /// The case, the shape of row `row` of the HTTP/1.1 table.
    const fn of(self, row: &'static str) -> Case {
        Case {
            shares: Some(row),
            ..self
        }
    }
}

const fn with_data(
    name: &'static str,
    headers: &'static [(&'static str, &'static str)],
    data: &'static [&'static str],
    expect: Expect,
) -> Case {
    Case {
        name,
        headers,
        data,
        expect,
        shares: None,
    }
}

const GET: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "{proxy}"),
    (":path", "/api/a"),
];
const POST: [(&str, &str); 4] = [
    (":method", "POST"),
    (":scheme", "http"),
    (":authority", "{proxy}"),
    (":path", "/api/a"),
];

macro_rules! get {
    ($($h:expr),*) => { &[GET[0], GET[1], GET[2], GET[3] $(, $h)*] };
}
macro_rules! post {
    ($($h:expr),*) => { &[POST[0], POST[1], POST[2], POST[3] $(, $h)*] };
}

/// The table. Names shared with `paths.rs` are the same shapes there.
const CASES: &[Case] = &[
    case("plain get", get!(), Forwarded("GET /a HTTP/1.1")).of("plain get"),
    with_data(
        "post with a matching content-length",
        post!(("content-length", "5")),
        &["hello"],
        Forwarded("POST /a HTTP/1.1"),
    ),
    with_data(
        "CL conflicting (more data than declared)",
        post!(("content-length", "5")),
        &["hello!"],
        Reset,
    )
    .of("CL conflicting"),
    with_data(
        "CL conflicting (less data than declared)",
        post!(("content-length", "10")),
        &["hello"],
        Reset,
    ),
    with_data(
        "TE chunked",
        post!(("transfer-encoding", "chunked")),
        &["5\r\nhello\r\n0\r\n\r\n"],
        Reset,
    ),
    case("Connection: close", get!(("connection", "close")), Reset),
    case("keep-alive", get!(("keep-alive", "5")), Reset),
    case(
        "proxy-connection",
        get!(("proxy-connection", "close")),
        Reset,
    ),
    case("upgrade", get!(("upgrade", "websocket")), Reset),
    case("te: gzip", get!(("te", "gzip")), Reset),
    case(
        "te: trailers",
        get!(("te", "trailers")),
        Forwarded("GET /a HTTP/1.1"),
    ),
    case("an upper-case name", get!(("X-A", "1")), Reset),
    case("CR in a value", get!(("x-a", "a\rb")), Reset).of("CR in a value"),
    case("LF in a value", get!(("x-a", "a\nb")), Reset),
    case("NUL in a value", get!(("x-a", "a\u{0}b")), Reset).of("NUL in a value"),
    case(
        "a pseudo-header after a regular one",
        &[GET[0], GET[1], GET[2], ("x-a", "1"), GET[3]],
        Reset,
    ),
    case("an unknown pseudo-header", get!((":foo", "bar")), Reset),
    case(":path twice", get!((":path", "/api/b")), Reset),
    case("no :path", &[GET[0], GET[1], GET[2]], Reset),
    case(
        ":path not origin-form",
        &[GET[0], GET[1], GET[2], (":path", "api/a")],
        Reset,
    ),
    case(
        ":path absolute-form",
        &[GET[0], GET[1], GET[2], (":path", "http://other.example/x")],
        Reset,
    ),
    case(
        ":path empty",
        &[GET[0], GET[1], GET[2], (":path", "")],
        Reset,
    ),
    case(
        "Host beside :authority",
        get!(("host", "evil.example")),
        Forwarded("GET /a HTTP/1.1"),
    ),
    case(
        "our own Via",
        get!(("via", "1.1 other, 1.1 TokenWarden")),
        Refused(508),
    )
    .of("our own Via"),
    case(
        "unknown key",
        &[GET[0], GET[1], GET[2], (":path", "/nope/a")],
        Refused(404),
    )
    .of("unknown key"),
    case(
        "no token",
        &[GET[0], GET[1], GET[2], (":path", "/nok/a")],
        Refused(503),
    )
    .of("no token"),
    case(
        "trace, lower case",
        &[(":method", "trace"), GET[1], GET[2], GET[3]],
        Refused(403),
    )
    .of("trace, lower case"),
    case(
        "absolute-form to another host",
        &[
            GET[0],
            GET[1],
            (":authority", "other.example"),
            (":path", "/x"),
        ],
        Refused(403),
    )
    .of("absolute-form to another host"),
    case(
        "forward mode: the upstream as :authority",
        &[GET[0], GET[1], (":authority", "{up}"), (":path", "/x")],
        Forwarded("GET /x HTTP/1.1"),
    ),
    case(
        "https through h2c",
        &[
            GET[0],
            (":scheme", "https"),
            (":authority", "other.example"),
            (":path", "/x"),
        ],
        Refused(403),
    ),
    case(
        "CONNECT",
        &[(":method", "CONNECT"), (":authority", "other.example:443")],
        Refused(400),
    ),
];

#[tokio::test]
async fn h2_rows_agree_with_http1_and_malformed_blocks_never_reach_the_upstream() {
    let upstream = crate::support::upstream::Scripted::with_then(&[], Step::Answer(OK)).await;
    let (sidecar, _dead) = sidecar_for(Path::Fast, upstream.addr).await;
    let (proxy, up) = (sidecar.proxy.to_string(), upstream.addr.to_string());
    let mut failures = Vec::new();
    for case in CASES {
        let before = upstream.requests().len();
        let headers: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(k, v)| {
                let v = v.replace("{proxy}", &proxy).replace("{up}", &up);
                ((*k).to_owned(), v)
            })
            .collect();
        let got = h2_raw(json!({
            "host": "127.0.0.1", "port": sidecar.proxy.port(), "tls": false,
            "headers": headers, "data": case.data, "end_stream": true,
        }))
        .await;
        if let Some(row) = case.shares {
            let h1 = super::REQUESTS.iter().find(|c| c.name == row);
            let h1 = h1.unwrap_or_else(|| panic!("{}: no row {row} in paths.rs", case.name));
            if !agrees(h1.expect, case.expect) {
                let (h1, h2) = (h1.expect, case.expect);
                failures.push(format!("{}: HTTP/1.1 {h1:?}, HTTP/2 {h2:?}", case.name));
            }
        }
        let sent: Vec<_> = upstream.requests()[before..].to_vec();
        let ok = match case.expect {
            Forwarded(line) => {
                got["outcome"] == "response"
                    && got["status"] == 200
                    && sent.len() == 1
                    && sent[0].line() == line
                    && sent[0].all("authorization") == [TOKEN]
            }
            Refused(status) => {
                got["outcome"] == "response" && got["status"] == status && sent.is_empty()
            }
            Reset => is_reset(&got) && sent.is_empty(),
        };
        if !ok {
            let lines: Vec<String> = sent.iter().map(|r| r.line()).collect();
            failures.push(format!(
                "{}: expected {:?}, got {got} (upstream: {lines:?})",
                case.name, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Whether an HTTP/2 outcome agrees with the HTTP/1.1 table's for the same shape: the same
/// request forwarded, the same refusal, or a reset where HTTP/1.1 answers a malformed
/// request 400.
fn agrees(h1: super::Expect, h2: Expect) -> bool {
    use super::Expect as H1;
    match (h1, h2) {
        (H1::Forwarded(lines), Forwarded(line)) => lines == [line],
        (H1::Rejected(400) | H1::Refused(400), Reset) => true,
        (H1::Rejected(a) | H1::Refused(a), Refused(b)) => a == b,
        _ => false,
    }
}

/// A stream reset or a GOAWAY with `PROTOCOL_ERROR` (1) (or the connection closed).
fn is_reset(got: &Value) -> bool {
    match got["outcome"].as_str() {
        Some("reset") | Some("goaway") => got["error_code"] == 1,
        Some("closed") => true,
        _ => false,
    }
}

/// Rapid reset (CVE-2023-44487): streams opened and reset at once, 1,000 of them. The
/// connection ends with a GOAWAY (`ENHANCE_YOUR_CALM`) once more than the allowed few are
/// pending, what went upstream stays bounded, and the proxy serves the next connection.
#[tokio::test]
async fn a_rapid_reset_burst_ends_the_connection_and_the_proxy_carries_on() {
    let upstream = crate::support::upstream::Scripted::with_then(&[], Step::Answer(OK)).await;
    let (sidecar, _dead) = sidecar_for(Path::Fast, upstream.addr).await;
    let proxy = sidecar.proxy.to_string();
    let headers: Vec<(String, String)> = GET
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.replace("{proxy}", &proxy)))
        .collect();
    let burst = h2_raw(json!({
        "host": "127.0.0.1", "port": sidecar.proxy.port(), "tls": false,
        "headers": headers, "data": [], "end_stream": true, "rst_burst": 1000,
    }))
    .await;
    assert_eq!(burst["outcome"], "goaway", "{burst}");
    assert_eq!(burst["error_code"], 11, "ENHANCE_YOUR_CALM: {burst}");
    let forwarded = upstream.requests().len();
    assert!(
        forwarded <= 100,
        "{forwarded} of the reset streams went upstream"
    );
    let after = h2_raw(json!({
        "host": "127.0.0.1", "port": sidecar.proxy.port(), "tls": false,
        "headers": headers, "data": [], "end_stream": true,
    }))
    .await;
    assert_eq!(
        (&after["outcome"], &after["status"]),
        (&json!("response"), &json!(200)),
        "{after}"
    );
}
