//! Header hygiene: hop-by-hop headers (the fixed list and every header named in
//! `Connection`) are removed in both directions, and so are their lookalikes with `_` for
//! `-` ([`Known::Lookalike`]); `Via` marks and detects our hops; the framing headers'
//! values are read here for both paths (`Content-Length`, `Transfer-Encoding`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the non-standard ones proxies meet).
pub static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and their lookalikes ([`Known::Lookalike`]). Allocates only
/// when a `Connection` header names others, or a lookalike is there.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers
        .keys()
        .any(|name| classify(name.as_str()) == Known::Lookalike)
    {
        let lookalikes: Vec<HeaderName> = headers
            .keys()
            .filter(|name| classify(name.as_str()) == Known::Lookalike)
            .cloned()
            .collect();
        for name in lookalikes {
            headers.remove(name);
        }
    }
    let names_others = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| connection_options(v.as_bytes()).1);
    if names_others {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| connection_names(v.as_bytes()))
            .filter_map(|n| HeaderName::from_bytes(n).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether the request's `TE` names `trailers` (it is hop-by-hop: an HTTP/2 upstream is
/// told again, [`super::full::pool`]).
pub fn asks_for_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

/// [`strip_hop_by_hop`] for a response hyper decoded, with the fast path's rule for its
/// length ([`forwards_length`]), which it writes as one number, as the fast path does
/// (`Content-Length: 5, 5` or the header twice become `content-length: 5`).
pub fn strip_response(status: u16, headers: &mut HeaderMap) {
    if !forwards_length(status, headers.contains_key(header::TRANSFER_ENCODING)) {
        headers.remove(header::CONTENT_LENGTH);
    } else {
        one_length(headers);
    }
    strip_hop_by_hop(headers);
}

/// Makes the `Content-Length` values (equal ones: hyper refused the rest) one number.
fn one_length(headers: &mut HeaderMap) {
    let length = {
        let mut all = headers.get_all(header::CONTENT_LENGTH).iter();
        match (all.next(), all.next()) {
            (None, _) => return,
            (Some(one), None) if parse_length(one.as_bytes()).is_some() => return,
            (Some(first), _) => parse_length_list(first.as_bytes()),
        }
    };
    match length {
        Some(n) => headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n)),
        None => headers.remove(header::CONTENT_LENGTH),
    };
}

/// What the framing headers of an upstream response hyper parsed leave of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// It may carry another request once the body is read.
    Clean,
    /// `Content-Length` beside `Transfer-Encoding` (RFC 9112 §6.3: a smuggling vector):
    /// the body is relayed as chunked, and the connection is never used again.
    Ambiguous,
    /// A transfer coding other than chunked: a 502, as on the fast path.
    Refused,
}

impl ResponseFraming {
    pub fn of(headers: &HeaderMap) -> ResponseFraming {
        let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
        if codings.peek().is_none() {
            ResponseFraming::Clean
        } else if !codings.all(|v| only_chunked(v.as_bytes())) {
            ResponseFraming::Refused
        } else if headers.contains_key(header::CONTENT_LENGTH) {
            ResponseFraming::Ambiguous
        } else {
            ResponseFraming::Clean
        }
    }
}

/// Whether a `Transfer-Encoding` value names the chunked coding only (once or more). The
/// proxy implements no other: a request with another is a 501 (RFC 9112 §6.1), and as it
/// never sends `TE`, a response with another is malformed (a 502).
pub fn only_chunked(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .all(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Longest Content-Length value in digits (below `u64::MAX`, as hyper's limit).
const MAX_LENGTH_DIGITS: usize = 18;

/// A Content-Length value: decimal digits only.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > MAX_LENGTH_DIGITS || !value.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    Some(value.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// A response Content-Length, which may repeat one value as a list (`5, 5`).
pub fn parse_length_list(value: &[u8]) -> Option<u64> {
    let mut values = value.split(|&b| b == b',').map(parse_length);
    let first = values.next()??;
    values.all(|v| v == Some(first)).then_some(first)
}

/// Whether a response's `Content-Length` goes on to the app: not beside
/// `Transfer-Encoding` (RFC 9112 §6.3: it is wrong, and the body is relayed or re-framed
/// as chunked), and never on a 1xx or 204 (RFC 9110 §8.6: they have none).
pub fn forwards_length(status: u16, transfer_encoded: bool) -> bool {
    !transfer_encoded && status != 204 && !(100..200).contains(&status)
}

/// Whether one option of a `Connection` value names a header: anything but `close` and
/// `keep-alive` (any case) — the one definition of "named in `Connection`".
fn names_a_header(option: &[u8]) -> bool {
    !option.is_empty()
        && !option.eq_ignore_ascii_case(b"close")
        && !option.eq_ignore_ascii_case(b"keep-alive")
}

/// The options of one `Connection` value that name headers ([`names_a_header`]).
pub fn connection_names(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|option| names_a_header(option))
}

/// A `Connection` header value: whether it says `close`, and whether it names headers
/// ([`names_a_header`]), which are then hop-by-hop. One pass: the fast path asks this of
/// every request.
#[inline]
pub fn connection_options(value: &[u8]) -> (bool, bool) {
    let (mut close, mut others) = (false, false);
    for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if option.eq_ignore_ascii_case(b"close") {
            close = true;
        } else {
            others |= names_a_header(option);
        }
    }
    (close, others)
}

/// Whether one of the `Connection` values lists `name` (so it is hop-by-hop here).
pub fn named_in_connection<'v>(
    mut connection_values: impl Iterator<Item = &'v [u8]>,
    name: &str,
) -> bool {
    connection_values.any(|value| {
        connection_names(value).any(|named| named.eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// The header names the proxy treats specially (any case), told apart with one length
/// test and at most two comparisons: the fast path classifies every header it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    ContentLength,
    TransferEncoding,
    Connection,
    /// The other names of [`HOP_BY_HOP`].
    HopByHop,
    Expect,
    Via,
    Host,
    Authorization,
    /// `tokenwarden-connection` ([`super::choice`]): read, never forwarded.
    Named,
    /// `tokenwarden-subject` ([`crate::grants::subject`]): read, never forwarded.
    Subject,
    /// `Proxy-Authorization`: hop-by-hop, read in forward mode for a per-user grant's subject.
    ProxyAuthorization,
    /// A name that is one of the framing or hop-by-hop names with `_` for a `-`
    /// (`Transfer_Encoding`, `Content_Length`, `Keep_Alive`, `Proxy_Connection`,
    /// `Proxy_Authenticate`, `Proxy_Authorization`), which a server that treats `_` and `-`
    /// alike (as CGI-style variables do) would read as that header: dropped both ways.
    Lookalike,
    Other,
}

#[inline]
pub fn classify(name: &str) -> Known {
    let is = |known: &str| name.eq_ignore_ascii_case(known);
    let dashed = |known: &str, kind: Known| match dashed_name(name.as_bytes(), known.as_bytes()) {
        Some(false) => kind,
        Some(true) => Known::Lookalike,
        None => Known::Other,
    };
    match name.len() {
        2 if is("te") => Known::HopByHop,
        3 if is("via") => Known::Via,
        4 if is("host") => Known::Host,
        6 if is("expect") => Known::Expect,
        7 if is("upgrade") || is("trailer") => Known::HopByHop,
        10 if is("connection") => Known::Connection,
        10 => dashed("keep-alive", Known::HopByHop),
        13 if is("authorization") => Known::Authorization,
        14 => dashed("content-length", Known::ContentLength),
        16 => dashed("proxy-connection", Known::HopByHop),
        17 => dashed("transfer-encoding", Known::TransferEncoding),
        18 => dashed("proxy-authenticate", Known::HopByHop),
        19 if is(crate::grants::subject::SUBJECT_HEADER) => Known::Subject,
        19 => dashed("proxy-authorization", Known::ProxyAuthorization),
        22 if is(super::choice::CONNECTION_HEADER) => Known::Named,
        _ => Known::Other,
    }
}

/// Compares `name` with the lower-case `known` of the same length, in one pass:
/// `Some(false)` equal in any case, `Some(true)` equal once its `_` are read as `-`,
/// `None` different.
#[inline]
fn dashed_name(name: &[u8], known: &[u8]) -> Option<bool> {
    let mut underscores = false;
    for (&n, &k) in name.iter().zip(known) {
        if n.to_ascii_lowercase() != k {
            if n == b'_' && k == b'-' {
                underscores = true;
            } else {
                return None;
            }
        }
    }
    Some(underscores)
}

/// The value this proxy appends to `Via`: `1.1 <pseudonym>`.
pub fn via_value(pseudonym: &str) -> HeaderValue {
    HeaderValue::try_from(format!("1.1 {pseudonym}"))
        .expect("pseudonym validated as a header token")
}

/// Whether a `Via` entry already names `pseudonym` (the request looped back to us).
pub fn has_our_via(headers: &HeaderMap, pseudonym: &str) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .any(|v| via_names(v.as_bytes(), pseudonym))
}

/// Whether one `Via` header value has an entry received by `pseudonym`.
pub fn via_names(value: &[u8], pseudonym: &str) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    value.split(',').any(|entry| {
        entry
            .split_whitespace()
            .nth(1)
            .is_some_and(|by| by.eq_ignore_ascii_case(pseudonym))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            "close, X-Secret-Hop, authorization".parse().unwrap(),
        );
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("authorization", "Bearer app".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn hop_by_hop_names_are_the_list() {
        for name in &HOP_BY_HOP {
            for name in [name.to_string(), name.as_str().to_ascii_uppercase()] {
                assert!(
                    matches!(
                        classify(&name),
                        Known::Connection
                            | Known::TransferEncoding
                            | Known::HopByHop
                            | Known::ProxyAuthorization
                    ),
                    "{name}"
                );
            }
        }
        assert_eq!(classify("connectio"), Known::Other);
        assert_eq!(classify("authorization"), Known::Authorization);
        assert_eq!(classify("Content-LENGTH"), Known::ContentLength);
        assert_eq!(classify("VIA"), Known::Via);
        assert_eq!(classify("Tokenwarden-Connection"), Known::Named);
        assert_eq!(classify("Tokenwarden-Subject"), Known::Subject);
        assert_eq!(classify("tokenwarden_subject"), Known::Other);
        assert_eq!(classify("x-via"), Known::Other);
        for lookalike in [
            "Transfer_Encoding",
            "content_length",
            "KEEP_ALIVE",
            "proxy_connection",
            "Proxy-Authenticate".replace('-', "_").as_str(),
            "proxy_authorization",
        ] {
            assert_eq!(classify(lookalike), Known::Lookalike, "{lookalike}");
        }
        for other in [
            "x_forwarded",
            "content-lengt_",
            "transfer_encodin",
            "keep__alive",
        ] {
            assert_eq!(classify(other), Known::Other, "{other}");
        }
    }

    #[test]
    fn lookalikes_are_stripped_and_lengths_made_one_number() {
        let mut h = HeaderMap::new();
        h.insert("transfer_encoding", "chunked".parse().unwrap());
        h.insert("content-length", "5, 5".parse().unwrap());
        h.insert("x_kept", "1".parse().unwrap());
        strip_response(200, &mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["content-length"], "5");
        let mut twice = HeaderMap::new();
        twice.append("content-length", "7".parse().unwrap());
        twice.append("content-length", "7".parse().unwrap());
        strip_response(200, &mut twice);
        assert_eq!(twice.get_all("content-length").iter().count(), 1);
    }

    #[test]
    fn response_framing() {
        let of = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            ResponseFraming::of(&h)
        };
        assert_eq!(of(&[("content-length", "3")]), ResponseFraming::Clean);
        assert_eq!(
            of(&[("transfer-encoding", "Chunked")]),
            ResponseFraming::Clean
        );
        let both = [("transfer-encoding", "chunked"), ("content-length", "3")];
        assert_eq!(of(&both), ResponseFraming::Ambiguous);
        for coding in ["chunked, identity", "gzip, chunked", "gzip", ""] {
            let te = [("transfer-encoding", coding)];
            assert_eq!(of(&te), ResponseFraming::Refused, "{coding}");
        }
    }

    #[test]
    fn via_detection() {
        let mut h = HeaderMap::new();
        assert!(!has_our_via(&h, "tokenwarden"));
        h.append("via", "1.1 proxy-a, 1.0 other".parse().unwrap());
        assert!(!has_our_via(&h, "tokenwarden"));
        h.append("via", via_value("TokenWarden"));
        assert!(has_our_via(&h, "tokenwarden"));
    }
}
