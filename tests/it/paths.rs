//! The differential table: every case runs down **both** request paths (the fast path, and
//! hyper alone with `app::Options::hyper_only`) against the same scripted raw upstream,
//! and must come out the same — the same responses to the app (status, headers but
//! `Date`, body), the same connection fate, the same requests upstream (line, headers
//! with names lower-cased, body bytes as framed). On top, each case's outcome is asserted:
//! refused (a 4xx, nothing upstream) or forwarded as exactly the requests the app made,
//! each with the connection's token once and its `Host`; never leftovers becoming a
//! request, never a poisoned upstream connection pooled (a clean probe afterwards gets its
//! own answer), never a token on a request the app did not make, never a header that an
//! upstream or app mapping `_` to `-` would read as framing or hop-by-hop.

mod h2;

use crate::support::differential::{observe, Observed, Path, TOKEN, UP};
use crate::support::upstream::Step;
use futures_util::future::join_all;

/// The answer to every request once a case's script is done (and to the probe).
const FOLLOW: &str = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfollow";
const OK_5: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

/// What a case must come to, on both paths.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// These requests went upstream, in order (request lines), and each got its answer.
    Forwarded(&'static [&'static str]),
    /// Answered with this status and the connection closed; nothing went upstream.
    Rejected(u16),
    /// Forwarded as these requests with no `Content-Length` (re-framed chunked), then the
    /// app's connection closed (RFC 9112 §6.1 for a request with both lengths).
    Normalised(&'static [&'static str]),
    /// Answered with this status (the connection may stay open); nothing went upstream.
    Refused(u16),
    /// One request went upstream; the app got this status (response-side cases).
    Answered(u16),
    /// Nothing answered and nothing upstream (the request never completes).
    Nothing,
    /// One request went upstream; the app's connection closed without a whole answer, and
    /// that upstream connection was not used again.
    Cut,
    /// One request went upstream, with this request line and this body (de-chunked).
    Carried(&'static str, &'static str),
    /// One request went upstream; the app got this status; that upstream connection was
    /// not used again (its framing was ambiguous or refused).
    Unpooled(u16),
}

struct Case {
    name: &'static str,
    /// The app's bytes; `{up}` is the upstream's `host:port`.
    request: &'static str,
    /// The upstream's answers (then [`FOLLOW`] for every further request).
    script: &'static [Step],
    expect: Expect,
}

const fn case(name: &'static str, request: &'static str, expect: Expect) -> Case {
    Case {
        name,
        request,
        script: &[],
        expect,
    }
}

const fn answered(
    name: &'static str,
    request: &'static str,
    script: &'static [Step],
    expect: Expect,
) -> Case {
    Case {
        name,
        request,
        script,
        expect,
    }
}

use Expect::{Answered, Carried, Cut, Forwarded, Normalised, Nothing, Refused, Rejected, Unpooled};

const GET_A: &[&str] = &["GET /a HTTP/1.1"];
const POST_A: &[&str] = &["POST /a HTTP/1.1"];

/// Request-side cases.
const REQUESTS: &[Case] = &[
    case("plain get", "GET /api/a HTTP/1.1\r\nHost: app\r\n\r\n", Forwarded(GET_A)),
    case("CL and TE", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Normalised(POST_A)),
    case("TE and CL", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Normalised(POST_A)),
    case("CL twice, same", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", Forwarded(POST_A)),
    case("CL conflicting", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", Rejected(400)),
    case("CL +5", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: +5\r\n\r\nhello", Rejected(400)),
    case("CL 0x5", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 0x5\r\n\r\nhello", Rejected(400)),
    case("CL leading zeros", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 005\r\n\r\nhello", Forwarded(POST_A)),
    case("CL list", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 5, 5\r\n\r\nhello", Rejected(400)),
    case("CL negative", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: -1\r\n\r\nhello", Rejected(400)),
    case("CL with a space inside", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 5 5\r\n\r\nhello", Rejected(400)),
    case("TE chunked, identity", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Rejected(400)),
    case("TE identity", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: identity\r\n\r\nhello", Rejected(400)),
    case("TE CHUNKED", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Forwarded(POST_A)),
    case("TE chunked;x", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked;x\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Rejected(400)),
    case("TE twice", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Forwarded(POST_A)),
    case("TE gzip, chunked", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Rejected(501)),
    case("TE gzip, then TE chunked", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Rejected(501)),
    case("Transfer_Encoding beside CL", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\nhello", Forwarded(POST_A)),
    case("Transfer_Encoding alone: no body, the rest a bad request", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer_Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Forwarded(POST_A)),
    case("Content_Length beside TE", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent_Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Forwarded(POST_A)),
    case("hop-by-hop names with underscores", "GET /api/a HTTP/1.1\r\nHost: app\r\nKeep_Alive: 5\r\nProxy_Authorization: Basic eA==\r\nProxy_Connection: close\r\n\r\n", Forwarded(GET_A)),
    case("GET with a chunked body", "GET /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Carried("GET /a HTTP/1.1", "hello")),
    case("TE on HTTP/1.0", "POST /api/a HTTP/1.0\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Rejected(400)),
    case("obs-fold", "GET /api/a HTTP/1.1\r\nHost: app\r\nX-A: 1\r\n  folded\r\n\r\n", Rejected(400)),
    case("space before the colon", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length : 5\r\n\r\nhello", Rejected(400)),
    case("bare LF", "GET /api/a HTTP/1.1\nHost: app\n\n", Forwarded(GET_A)),
    case("bare CR", "GET /api/a HTTP/1.1\rHost: app\r\n\r\n", Rejected(400)),
    case("NUL in a value", "GET /api/a HTTP/1.1\r\nHost: app\r\nX-A: a\0b\r\n\r\n", Rejected(400)),
    case("CR in a value", "GET /api/a HTTP/1.1\r\nHost: app\r\nX-A: a\rb\r\n\r\n", Rejected(400)),
    case("chunk size overflow", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n", Rejected(400)),
    case("chunk extensions", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"v\"\r\nhello\r\n0;last\r\n\r\n", Forwarded(POST_A)),
    case("no CRLF after the last chunk", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", Nothing),
    case("trailers naming Authorization, Host, Content-Length", "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTrailer: Authorization\r\n\r\n5\r\nhello\r\n0\r\nAuthorization: Bearer evil\r\nHost: evil.example\r\nContent-Length: 3\r\n\r\n", Forwarded(POST_A)),
    case("pipelined, the first with a body", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhelloGET /api/b HTTP/1.1\r\nHost: app\r\n\r\n", Forwarded(&["POST /a HTTP/1.1", "GET /b HTTP/1.1"])),
    case("smuggling: CL.TE", "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: app\r\n\r\n", Normalised(POST_A)),
    case("absolute-form vs a different Host", "GET http://{up}/x HTTP/1.1\r\nHost: other.example\r\n\r\n", Forwarded(&["GET /x HTTP/1.1"])),
    case("absolute-form to another host", "GET http://other.example/x HTTP/1.1\r\nHost: {up}\r\n\r\n", Refused(403)),
    case("Host missing", "GET /api/a HTTP/1.1\r\n\r\n", Forwarded(GET_A)),
    case("Host twice", "GET /api/a HTTP/1.1\r\nHost: app\r\nHost: evil.example\r\n\r\n", Forwarded(GET_A)),
    case("Connection: Authorization", "GET /api/a HTTP/1.1\r\nHost: app\r\nConnection: Authorization\r\nAuthorization: Bearer app\r\n\r\n", Forwarded(GET_A)),
    case("Connection: close, Content-Length", "POST /api/a HTTP/1.1\r\nHost: app\r\nConnection: close, Content-Length\r\nContent-Length: 5\r\n\r\nhello", Forwarded(POST_A)),
    case("Expect: 100-continue", "POST /api/a HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", Forwarded(POST_A)),
    case("lower-case method", "get /api/a HTTP/1.1\r\nHost: app\r\n\r\n", Forwarded(&["get /a HTTP/1.1"])),
    case("two spaces in the request line", "GET  /api/a HTTP/1.1\r\nHost: app\r\n\r\n", Rejected(400)),
    case("HTTP/2.0 request line", "GET /api/a HTTP/2.0\r\nHost: app\r\n\r\n", Rejected(400)),
    case("no version", "GET /api/a\r\n\r\n", Rejected(400)),
    case("HTTP/1.0", "GET /api/a HTTP/1.0\r\nHost: app\r\n\r\n", Forwarded(GET_A)),
    case("trace, lower case", "trace /api/a HTTP/1.1\r\nHost: app\r\n\r\n", Refused(403)),
    case("a fragment", "GET /api/a#frag HTTP/1.1\r\nHost: app\r\n\r\n", Forwarded(GET_A)),
    case("our own Via", "GET /api/a HTTP/1.1\r\nHost: app\r\nVia: 1.1 other, 1.1 TokenWarden\r\n\r\n", Refused(508)),
    case("no token", "GET /nok/a HTTP/1.1\r\nHost: app\r\n\r\n", Refused(503)),
    case("no token, with a body", "POST /nok/a HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhelloGET /api/a HTTP/1.1\r\nHost: app\r\n\r\n", Forwarded(GET_A)),
    case("unknown key", "GET /nope/a HTTP/1.1\r\nHost: app\r\n\r\n", Refused(404)),
];

/// Request-side cases built at run time (sizes).
fn sized_requests() -> Vec<(String, String, Expect)> {
    let body = |n: usize| {
        format!(
            "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: {n}\r\n\r\n{}",
            "b".repeat(n)
        )
    };
    vec![
        ("body of 64 KiB".into(), body(64 * 1024), Forwarded(POST_A)),
        (
            "body of 64 KiB + 1".into(),
            body(64 * 1024 + 1),
            Forwarded(POST_A),
        ),
        (
            "URI of 70 KiB".into(),
            format!(
                "GET /api/{} HTTP/1.1\r\nHost: app\r\n\r\n",
                "u".repeat(70 * 1024)
            ),
            Rejected(414),
        ),
        (
            "headers of 500 KiB".into(),
            format!(
                "GET /api/a HTTP/1.1\r\nHost: app\r\nX-Big: {}\r\n\r\n",
                "h".repeat(500 * 1024)
            ),
            Rejected(431),
        ),
    ]
}

const GET_R: &str = "GET /api/r HTTP/1.1\r\nHost: app\r\n\r\n";

/// Response-side cases.
const RESPONSES: &[Case] = &[
    answered("response CL and TE", GET_R, &[Step::Answer("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")], Unpooled(200)),
    answered("response CL 5, 5", GET_R, &[Step::Answer("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello")], Answered(200)),
    answered("response CL twice, same", GET_R, &[Step::Answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")], Answered(200)),
    answered("response TE chunked, identity", GET_R, &[Step::Answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n")], Unpooled(502)),
    answered("response TE gzip, chunked", GET_R, &[Step::Answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")], Unpooled(502)),
    answered("response TE on HTTP/1.0", GET_R, &[Step::Answer("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")], Unpooled(502)),
    answered("response Transfer_Encoding beside CL", GET_R, &[Step::Answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\nKeep_Alive: 5\r\n\r\nhello")], Answered(200)),
    answered("response chunk extension with a control byte", GET_R, &[Step::Answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01b\r\nhello\r\n0\r\n\r\n")], Cut),
    answered("response with two lengths", GET_R, &[Step::Answer("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")], Answered(502)),
    answered("response with a bad chunk", GET_R, &[Step::Answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")], Cut),
    answered("a body on HEAD", "HEAD /api/r HTTP/1.1\r\nHost: app\r\n\r\n", &[Step::Answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")], Answered(200)),
    answered("a body on 204", GET_R, &[Step::Answer("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")], Answered(204)),
    answered("a body on 304", GET_R, &[Step::Answer("HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")], Answered(304)),
    answered("1xx then the final response", GET_R, &[Step::Answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")], Answered(200)),
    answered("more bytes than declared", GET_R, &[Step::Answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")], Answered(200)),
    answered("close in the middle of the body", GET_R, &[Step::AnswerAndClose("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")], Cut),
    answered("a pooled connection closed before the answer, GET", "GET /api/a HTTP/1.1\r\nHost: app\r\n\r\nGET /api/b HTTP/1.1\r\nHost: app\r\n\r\n", &[Step::Answer(OK_5), Step::Drop], Forwarded(&["GET /a HTTP/1.1", "GET /b HTTP/1.1", "GET /b HTTP/1.1"])),
    answered("a pooled connection closed before the answer, POST", "GET /api/a HTTP/1.1\r\nHost: app\r\n\r\nPOST /api/b HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\n{}", &[Step::Answer(OK_5), Step::Drop], Forwarded(&["GET /a HTTP/1.1", "POST /b HTTP/1.1"])),
];

/// A case ready to run: name, the app's bytes, whether it is a HEAD, script, outcome.
type Row = (String, Vec<u8>, bool, &'static [Step], Expect);

/// Runs one case down both paths.
async fn both(request: Vec<u8>, is_head: bool, script: &'static [Step]) -> (Observed, Observed) {
    let fast = observe(Path::Fast, &request, is_head, script, Step::Answer(FOLLOW));
    let hyper = observe(Path::Hyper, &request, is_head, script, Step::Answer(FOLLOW));
    tokio::join!(fast, hyper)
}

/// Names that read as framing or hop-by-hop ones once `_` is read as `-`.
const LOOKALIKES: [&str; 6] = [
    "content_length",
    "transfer_encoding",
    "keep_alive",
    "proxy_connection",
    "proxy_authenticate",
    "proxy_authorization",
];

/// Why `seen` does not meet `expect` (and the invariants of every case), if it does not.
fn check(expect: Expect, seen: &Observed) -> Result<(), String> {
    let answered = seen.answers.iter().map(|a| &a.headers);
    let forwarded = seen.upstream.iter().map(|(_, h, _)| h);
    for name in answered.chain(forwarded).flat_map(|h| h.keys()) {
        if LOOKALIKES.contains(&name.as_str()) {
            return Err(format!("{name} was passed on"));
        }
    }
    for (line, headers, body) in &seen.upstream {
        let one = |name: &str| headers.get(name).cloned().unwrap_or_default();
        // What the app put in trailers or smuggled bodies never reaches the upstream.
        for planted in [&b"Bearer evil"[..], b"evil.example", b"/smuggled"] {
            if body.windows(planted.len()).any(|w| w == planted) {
                let planted = String::from_utf8_lossy(planted);
                return Err(format!("{line}: the body carries {planted}"));
            }
        }
        if one("authorization") != [TOKEN] {
            return Err(format!("{line}: authorization {:?}", one("authorization")));
        }
        if one("host") != [UP] {
            return Err(format!("{line}: host {:?}", one("host")));
        }
        if !one("via").iter().any(|v| v.contains("tokenwarden")) {
            return Err(format!("{line}: no Via"));
        }
        for hop in [
            "connection",
            "transfer-encoding",
            "trailer",
            "te",
            "keep-alive",
        ] {
            if headers.contains_key(hop) && hop != "transfer-encoding" {
                return Err(format!("{line}: hop-by-hop {hop} forwarded"));
            }
        }
    }
    match seen.after.as_ref() {
        Some(after) if after.status == 200 && after.body == b"follow" => {}
        other => return Err(format!("the probe afterwards got {other:?}")),
    }
    let lines: Vec<&str> = seen.upstream.iter().map(|(l, _, _)| l.as_str()).collect();
    let status = seen
        .answers
        .iter()
        .find(|a| a.status >= 200 && a.whole)
        .map(|a| a.status);
    let ok = match expect {
        Forwarded(expected) => {
            lines == expected
                && (expected.is_empty()
                    || seen.answers.iter().filter(|a| a.status >= 200).count()
                        >= expected.len() - 1)
        }
        Rejected(code) => lines.is_empty() && status == Some(code) && seen.closed,
        Normalised(expected) => {
            lines == expected
                && seen.closed
                && seen
                    .upstream
                    .iter()
                    .all(|(_, h, _)| !h.contains_key("content-length"))
        }
        Refused(code) => lines.is_empty() && status == Some(code),
        Answered(code) => lines.len() == 1 && status == Some(code),
        Nothing => lines.is_empty() && seen.answers.is_empty(),
        Cut => {
            lines.len() == 1 && seen.closed && seen.answers.iter().all(|a| !a.whole) && !seen.reused
        }
        Carried(line, body) => {
            let [(_, headers, framed)] = &seen.upstream[..] else {
                return Err(format!("expected one request upstream, got {lines:?}"));
            };
            let chunked = headers
                .get("transfer-encoding")
                .is_some_and(|v| v == &["chunked"]);
            let sent = if chunked {
                crate::support::raw::dechunk(framed)
                    .ok()
                    .flatten()
                    .map(|(b, _)| b)
            } else {
                Some(framed.clone())
            };
            lines == [line] && sent.as_deref() == Some(body.as_bytes())
        }
        Unpooled(code) => lines.len() == 1 && status == Some(code) && !seen.reused,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected {expect:?}; upstream {lines:?}, status {status:?}"
        ))
    }
}

/// Every case on both paths; all failures are reported together.
async fn run(cases: Vec<Row>) {
    let runs = cases
        .iter()
        .map(|(_, request, is_head, script, _)| both(request.clone(), *is_head, script));
    let results = join_all(runs).await;
    let mut failures = Vec::new();
    for ((name, _, _, _, expect), (fast, hyper)) in cases.iter().zip(results) {
        if !fast.same_as(&hyper) {
            failures.push(format!(
                "{name}: the paths differ\n  fast:  {fast:?}\n  hyper: {hyper:?}"
            ));
        }
        for (path, seen) in [("fast", &fast), ("hyper", &hyper)] {
            if let Err(why) = check(*expect, seen) {
                failures.push(format!("{name} ({path}): {why}\n  {seen:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn table(cases: &'static [Case]) -> Vec<Row> {
    cases
        .iter()
        .map(|c| {
            let is_head = c.request.starts_with("HEAD ");
            (
                c.name.to_owned(),
                c.request.as_bytes().to_vec(),
                is_head,
                c.script,
                c.expect,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_shapes_come_out_the_same_on_both_paths() {
    let mut cases = table(REQUESTS);
    for (name, request, expect) in sized_requests() {
        cases.push((name, request.into_bytes(), false, &[], expect));
    }
    run(cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_shapes_come_out_the_same_on_both_paths() {
    run(table(RESPONSES)).await;
}

/// The switch is real: the fast path keeps the app's header-name case, hyper writes names
/// lower-case, so the two sidecars of the table do run different code.
#[tokio::test]
async fn hyper_only_really_turns_the_fast_path_off() {
    use crate::support::differential::sidecar_for;
    for (path, name) in [(Path::Fast, "X-Mixed-Case"), (Path::Hyper, "x-mixed-case")] {
        let upstream = crate::support::upstream::Scripted::always(Step::Answer(FOLLOW)).await;
        let (sidecar, _dead) = sidecar_for(path, upstream.addr).await;
        let request =
            "GET /api/a HTTP/1.1\r\nHost: app\r\nX-Mixed-Case: 1\r\nConnection: close\r\n\r\n";
        let r = crate::support::raw::send(sidecar.proxy, request).await;
        assert_eq!(r.status, 200, "{}", r.head);
        let seen = upstream.texts().pop().expect("forwarded");
        assert!(
            seen.contains(&format!("\r\n{name}: 1\r\n")),
            "{path:?}: {seen}"
        );
        sidecar.stop().await;
    }
}
