//! Running one request down both proxy paths: two sidecars, one with the fast path and
//! one with `app::Options::hyper_only`, each in front of its own [`Scripted`] upstream
//! with the same script. The app's bytes go out as given (on one connection, in one
//! write); everything the app reads back until the proxy closes or falls silent, and
//! every request the upstream received, is normalised into an [`Observed`] so the two
//! paths can be compared as values.

use super::config::{cc_conn, connections, Conn};
use super::upstream::{Scripted, Step};
use super::{Sidecar, WAIT};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokenwarden::app::Options;
use tokio::io::AsyncReadExt;

/// The app is done reading when the proxy says nothing for this long.
pub const SILENCE: Duration = Duration::from_millis(400);
/// The token the `api` connection injects.
pub const TOKEN: &str = "Bearer t0ken";
/// Placeholder for the upstream's `host:port` in requests and in what is observed.
pub const UP: &str = "{up}";

/// Which path a sidecar serves with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Fast,
    Hyper,
}

/// One response as the app read it, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-cased and sorted (values in order within a name), without `date`.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The body, de-chunked (trailers dropped); as received when cut short.
    pub body: Vec<u8>,
    /// The body was whole (not cut short by a close).
    pub whole: bool,
}

/// One upstream request, normalised: the request line, the headers (names lower-cased,
/// sorted), the body as framed on the wire.
pub type Forwarded = (String, BTreeMap<String, Vec<String>>, Vec<u8>);

/// What one path did with the app's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub answers: Vec<Answer>,
    /// The proxy closed the app's connection (or the app's bytes could not be parsed
    /// further: `unparsed` holds the rest).
    pub closed: bool,
    pub unparsed: Vec<u8>,
    /// Each upstream request: the request line, the headers (names lower-cased, sorted),
    /// and the body as framed on the wire.
    pub upstream: Vec<Forwarded>,
    /// The answer to a clean GET sent afterwards on a new connection (proves nothing
    /// poisoned was pooled and no leftover became a request).
    pub after: Option<Answer>,
    /// That GET went upstream on a connection one of the case's requests had used: the
    /// proxy pooled it. Not part of [`Observed::same_as`]: after stray bytes it races with
    /// hyper noticing them, so a case asserts it only where it expects the connection
    /// closed.
    pub reused: bool,
}

impl Observed {
    /// Whether two paths did the same, [`Observed::reused`] aside.
    pub fn same_as(&self, other: &Observed) -> bool {
        let Observed {
            answers,
            closed,
            unparsed,
            upstream,
            after,
            reused: _,
        } = self;
        (answers, closed, unparsed, upstream, after)
            == (
                &other.answers,
                &other.closed,
                &other.unparsed,
                &other.upstream,
                &other.after,
            )
    }
}

/// The sidecar config: `api` (static bearer `t0ken`) and `nok` (client credentials with
/// an unreachable token endpoint: never a token), both to `upstream`, one worker.
fn config(upstream: SocketAddr, dead: SocketAddr) -> String {
    let api = Conn::new("api", upstream, "bearer")
        .secrets("token: t0ken")
        .configure("          token: \"<token>\"\n");
    let nok = cc_conn("nok", dead, dead);
    format!(
        "proxy: {{ worker_threads: 1, header_read_timeout: 2s }}\n{}",
        connections(&[api.to_string(), nok.to_string()])
    )
}

/// A sidecar serving with `path` in front of `upstream` ([`config`]), and the token
/// endpoint that never gives a token (keep it until the sidecar stops).
pub async fn sidecar_for(path: Path, upstream: SocketAddr) -> (Sidecar, Scripted) {
    let options = Options {
        hyper_only: path == Path::Hyper,
        ..Options::default()
    };
    let dir = tempfile::tempdir().unwrap();
    // It closes every connection unanswered, at once (a transient failure: the
    // connection stays without a token), and holds its port for the whole run.
    let dead = Scripted::always(Step::Drop).await;
    let yaml = config(upstream, dead.addr);
    (Sidecar::start_in(dir, &yaml, options).await, dead)
}

/// Runs `request` (with [`UP`] standing for the upstream's authority) down `path`, the
/// upstream answering with `script`, then a clean probe GET that `then` answers.
pub async fn observe(
    path: Path,
    request: &[u8],
    is_head: bool,
    script: &[Step],
    then: Step,
) -> Observed {
    let upstream = Scripted::with_then(script, then).await;
    let (sidecar, dead) = sidecar_for(path, upstream.addr).await;
    let up = upstream.addr.to_string();
    let request = replace(request, UP.as_bytes(), up.as_bytes());
    let (answers, closed, unparsed) = talk(sidecar.proxy, &request, is_head).await;
    let before = upstream.requests().len();
    let probe = b"GET /api/probe HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";
    let (mut probed, _, _) = talk(sidecar.proxy, probe, false).await;
    let received = upstream.requests();
    const PROBE: &str = "GET /probe HTTP/1.1";
    let reused = received[before..].iter().any(|probe| {
        probe.line() == PROBE
            && received[..before]
                .iter()
                .any(|r| r.connection == probe.connection)
    });
    let mut upstream_seen: Vec<_> = received
        .iter()
        .map(|r| {
            let line = r.line().replace(&up, UP);
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (n, v) in &r.headers {
                let name = n.to_ascii_lowercase();
                headers.entry(name).or_default().push(v.replace(&up, UP));
            }
            (line, headers, r.body.clone())
        })
        .collect();
    // The probe's own request is not part of what the case sent.
    let probe_seen = upstream_seen.len() > before
        && upstream_seen[before..]
            .iter()
            .any(|(line, _, _)| line == PROBE);
    if probe_seen {
        upstream_seen.retain(|(line, _, _)| line != PROBE);
    }
    sidecar.stop().await;
    drop(dead);
    Observed {
        answers,
        closed,
        unparsed,
        upstream: upstream_seen,
        after: probed.pop(),
        reused,
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Writes `request` on a new connection and reads until close or [`SILENCE`].
async fn talk(proxy: SocketAddr, request: &[u8], is_head: bool) -> (Vec<Answer>, bool, Vec<u8>) {
    let mut app = super::raw::connect(proxy).await;
    let _ =
        tokio::time::timeout(WAIT, tokio::io::AsyncWriteExt::write_all(&mut app, request)).await;
    let mut bytes = Vec::new();
    let mut closed = false;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(SILENCE, app.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    let (answers, rest) = parse_answers(&bytes, is_head, closed);
    (answers, closed, rest)
}

/// Splits what the app read into responses; the unparsable rest is returned.
fn parse_answers(mut bytes: &[u8], is_head: bool, closed: bool) -> (Vec<Answer>, Vec<u8>) {
    let mut answers = Vec::new();
    loop {
        if bytes.is_empty() {
            return (answers, Vec::new());
        }
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut res = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = res.parse(bytes) else {
            return (answers, bytes.to_vec());
        };
        let status = res.code.unwrap_or(0);
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in res.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            if name != "date" {
                map.entry(name)
                    .or_default()
                    .push(String::from_utf8_lossy(h.value).into_owned());
            }
        }
        let rest = &bytes[head_len..];
        let one = |k: &str| map.get(k).and_then(|v| v.first()).cloned();
        let no_body = is_head || (100..200).contains(&status) || status == 204 || status == 304;
        let chunked =
            one("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"));
        let length = one("content-length").and_then(|v| v.parse::<usize>().ok());
        let framed = if no_body {
            Some((Vec::new(), 0))
        } else if chunked {
            super::raw::dechunk(rest).ok().flatten()
        } else if let Some(length) = length {
            (rest.len() >= length).then(|| (rest[..length].to_vec(), length))
        } else if closed {
            Some((rest.to_vec(), rest.len()))
        } else {
            None
        };
        let Some((body, used)) = framed else {
            // Cut short: what arrived of it, if the proxy closed (else it is unparsed).
            if closed {
                answers.push(Answer {
                    status,
                    headers: map,
                    body: rest.to_vec(),
                    whole: false,
                });
                return (answers, Vec::new());
            }
            return (answers, bytes.to_vec());
        };
        answers.push(Answer {
            status,
            headers: map,
            body,
            whole: true,
        });
        bytes = &rest[used..];
    }
}
