//! The app's request head on the fast path, as bytes: parsed with `httparse`, its framing
//! decided (strictly: anything unusual goes to hyper), then planned by the shared
//! [`Proxy::plan`] and written out as the upstream request head (target rewritten,
//! hop-by-hop headers and `tokenwarden-connection` dropped, the plan's `Host` and
//! `Authorization` set, our `Via` appended). No `HeaderMap`, no allocation: the head goes into a reused buffer.
//!
//! Framing is decided before routing, so a request this path would not frame itself
//! ([`Outcome::Fallback`]) is planned only by the hyper path ([`crate::proxy::full`]):
//! `CONNECT`, HTTP/1.0, `Transfer-Encoding`, `Expect`, a missing, repeated or non-decimal
//! `Content-Length` above [`MAX_BUFFERED_BODY`], `Connection` naming other headers,
//! `api_key` connections, heads above [`MAX_HEAD`] and targets with unusual bytes.

use crate::config::Inject;
use crate::grants::subject::Said;
use crate::proxy::choice::Named;
use crate::proxy::error::{write_header, ProxyError};
use crate::proxy::headers::{classify, connection_options, parse_length, via_names, Known};
use crate::proxy::heads::{MAX_HEAD, MAX_HEADERS};
use crate::proxy::placeholder;
use crate::proxy::route::{Ask, Credential, Prepared};
use crate::proxy::tunnel::Inside;
use crate::proxy::unauthorized::MAX_REPLAY_BODY;
use crate::proxy::Proxy;
use crate::registry::Version;
use std::mem::MaybeUninit;
use tokio::time::Instant;

/// What ends the upstream request line.
const REQUEST_LINE_END: &[u8] = b" HTTP/1.1\r\n";

/// Largest request body the fast path buffers and sends with its head: the replay bound
/// ([`MAX_REPLAY_BODY`]), so every buffered body can be replayed after a 401; larger bodies
/// stream through the hyper path.
pub const MAX_BUFFERED_BODY: usize = MAX_REPLAY_BODY;

/// What to do with the bytes at the start of the app's connection buffer.
pub enum Outcome<'p> {
    /// Not a whole head (and body) yet: read more. When the head is whole, the length the
    /// buffer must reach (head and body) before the request is.
    Partial(Option<usize>),
    /// Hand the connection to the hyper path.
    Fallback,
    /// The upstream request head is written; send it with `body_len` bytes of body.
    Ready(Request<'p>),
    /// The plan refused the whole request (head and body at hand): answer `error`.
    Refused(Refusal),
}

/// Where a request sits in the app's buffer, and what its head asked of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed {
    /// Bytes of the app's head, then of its body, at the start of the buffer.
    pub head_len: usize,
    pub body_len: usize,
    /// HEAD: the response has no body whatever its headers say.
    pub is_head: bool,
    /// The app sent `Connection: close`.
    pub close: bool,
}

/// A request the fast path forwards: what the lifecycle keeps of its plan, and where it
/// sits in the buffer.
pub struct Request<'p> {
    pub(crate) prepared: Prepared<'p>,
    pub framed: Framed,
}

/// A request the plan refused.
pub struct Refusal {
    pub error: ProxyError,
    pub framed: Framed,
}

/// Parses the app's request at the start of `buf` and, when the fast path can forward
/// it, writes the upstream request head into `out` (cleared first). `tunnel`: the
/// `host:port` of the intercepted tunnel the request arrived in ([`Ask::tunnel`]).
///
/// One function, longer than the 80-line rule, as [`super::response::translate_response`]:
/// the hot path's per-request work, kept in one piece the compiler optimises as a whole.
#[allow(
    clippy::too_many_lines,
    reason = "the hot path, kept whole like translate_response"
)]
pub fn translate_request<'p>(
    proxy: &'p Proxy,
    buf: &[u8],
    out: &mut Vec<u8>,
    now: Instant,
    tunnel: Option<&Inside>,
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
    if method == "CONNECT" || !target.bytes().all(is_plain_target_byte) {
        return Outcome::Fallback;
    }
    let Some((origin, path_and_query)) = split_target(target) else {
        return Outcome::Fallback;
    };

    // Framing first, before anything is decided on the request; the headers that go
    // upstream are written meanwhile (one pass), the request line goes before them once
    // the plan has the target.
    out.clear();
    let mut body_len = None;
    let mut close = false;
    let mut looped = false;
    let mut named = Named::Absent;
    let mut subject = Said::Absent;
    let mut proxy_authorization = None;
    // Placeholders (`crate::proxy::placeholder`): looked for only when some connection
    // has one; the app's `Authorization` is kept aside, and headers that may hold one are
    // written after the plan.
    let scan = proxy.registry.has_placeholders();
    let mut authorization = None;
    let mut held: [(&str, &[u8]); MAX_HELD] = [("", &[]); MAX_HELD];
    let mut holding = 0;
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
            // (A placeholder in `Via`, or two `Authorization`s: the hyper path checks
            // every header and reads the first.)
            Known::Via if scan && placeholder::may_hold(h.value) => return Outcome::Fallback,
            Known::Via => looped |= via_names(h.value, &proxy.pseudonym),
            Known::Named => {
                named = named.and(h.value);
                continue;
            }
            Known::Subject => {
                subject = subject.and(h.value);
                continue;
            }
            Known::ProxyAuthorization => {
                proxy_authorization = Some(h.value);
                continue;
            }
            Known::Authorization if scan && authorization.is_some() => return Outcome::Fallback,
            Known::Authorization => {
                authorization = Some(h.value);
                continue;
            }
            Known::HopByHop | Known::Lookalike | Known::Host => continue,
            Known::Other if scan && placeholder::may_hold(h.value) => {
                let Some(slot) = held.get_mut(holding) else {
                    return Outcome::Fallback;
                };
                *slot = (h.name, h.value);
                holding += 1;
                continue;
            }
            Known::Other => {}
        }
        write_header(out, h.name.as_bytes(), h.value);
    }
    let framed = Framed {
        head_len,
        body_len: body_len.unwrap_or(0),
        is_head: method == "HEAD",
        close,
    };
    if buf.len() < head_len + framed.body_len {
        return Outcome::Partial(Some(head_len + framed.body_len));
    }
    // A placeholder in the target or the body: the hyper path swaps it.
    if scan
        && (placeholder::may_hold(target.as_bytes())
            || placeholder::may_hold(&buf[head_len..head_len + framed.body_len]))
    {
        return Outcome::Fallback;
    }

    let ask = Ask {
        method,
        origin,
        path_and_query,
        looped,
        tunnel: tunnel.map(|t| &*t.authority),
        connection: named,
        subject,
        // Inside a tunnel, its CONNECT's.
        proxy_authorization: proxy_authorization
            .or_else(|| tunnel.and_then(|t| t.proxy_authorization.as_deref())),
    };
    let mut plan = match proxy.plan(&ask, now) {
        Ok(plan) => plan,
        Err(error) => return Outcome::Refused(Refusal { error, framed }),
    };
    let egress = &plan.entry.conn.egress;
    // (An upstream known to speak HTTP/2 is the hyper path's too: decided before the
    // request counts as sent.)
    if matches!(plan.credential, Credential::ApiKey(_))
        || egress.scrub_response_bodies
        || plan.entry.version.get() == Version::Http2
    {
        return Outcome::Fallback;
    }
    if scan || egress.inject != Inject::Always || egress.require_placeholder {
        let carried = authorization
            .into_iter()
            .chain(held[..holding].iter().map(|h| h.1));
        let own = match placeholder::check(&proxy.registry, plan.entry, carried) {
            Ok(own) => own,
            Err(error) => return Outcome::Refused(Refusal { error, framed }),
        };
        if egress.require_placeholder && !own {
            let error = placeholder::required(plan.entry);
            return Outcome::Refused(Refusal { error, framed });
        }
        plan.keeps_authorization = !placeholder::sets_authorization(egress, authorization);
    }
    // The request line, before the headers written above.
    let headers_len = out.len();
    let line_len = method.len() + 1 + plan.target.len() + REQUEST_LINE_END.len();
    out.resize(headers_len + line_len, 0);
    out.copy_within(..headers_len, line_len);
    let line = &mut out[..line_len];
    let (m, rest) = line.split_at_mut(method.len());
    m.copy_from_slice(method.as_bytes());
    rest[0] = b' ';
    let (t, end) = rest[1..].split_at_mut(plan.target.len());
    plan.target.write_into(t);
    end.copy_from_slice(REQUEST_LINE_END);
    for (name, value) in plan.set_headers() {
        write_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let (true, Some(value)) = (plan.keeps_authorization, authorization) {
        write_header(out, b"authorization", value);
    }
    if holding > 0 {
        write_swapped(out, &held[..holding], &plan);
    }
    write_header(out, b"via", proxy.via.as_bytes());
    out.extend_from_slice(b"\r\n");
    plan.sent();
    Outcome::Ready(Request {
        prepared: plan.prepared(),
        framed,
    })
}

/// Headers (other than `Authorization`) one request may hold placeholders in on this
/// path; more go to the hyper path.
const MAX_HELD: usize = 8;

/// Writes the `held` headers with the plan's connection's placeholder replaced by its
/// credential (another string that looks like one is left as it is).
fn write_swapped(out: &mut Vec<u8>, held: &[(&str, &[u8])], plan: &crate::proxy::Plan<'_, '_>) {
    let own = plan
        .entry
        .conn
        .egress
        .placeholder
        .as_deref()
        .map(str::as_bytes);
    let secret = plan.credential.authorization().map(placeholder::secret);
    for (name, value) in held {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        match (own, secret) {
            (Some(own), Some(secret)) => placeholder::swap_into(value, own, secret, out),
            _ => out.extend_from_slice(value),
        }
        out.extend_from_slice(b"\r\n");
    }
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

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
