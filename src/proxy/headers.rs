//! Header hygiene: hop-by-hop headers (the fixed list and every header named in
//! `Connection`) are removed in both directions, and `Via` marks and detects our hops.

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

/// Removes hop-by-hop headers. Allocates only when a `Connection` header names others.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// [`strip_hop_by_hop`] for a response hyper decoded, with the fast path's rule for its
/// length ([`forwards_length`]).
pub fn strip_response(status: u16, headers: &mut HeaderMap) {
    if !forwards_length(status, headers.contains_key(header::TRANSFER_ENCODING)) {
        headers.remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(headers);
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
    Other,
}

#[inline]
pub fn classify(name: &str) -> Known {
    let is = |known: &str| name.eq_ignore_ascii_case(known);
    match name.len() {
        2 if is("te") => Known::HopByHop,
        3 if is("via") => Known::Via,
        4 if is("host") => Known::Host,
        6 if is("expect") => Known::Expect,
        7 if is("upgrade") || is("trailer") => Known::HopByHop,
        10 if is("connection") => Known::Connection,
        10 if is("keep-alive") => Known::HopByHop,
        13 if is("authorization") => Known::Authorization,
        14 if is("content-length") => Known::ContentLength,
        16 if is("proxy-connection") => Known::HopByHop,
        17 if is("transfer-encoding") => Known::TransferEncoding,
        18 if is("proxy-authenticate") => Known::HopByHop,
        19 if is("proxy-authorization") => Known::HopByHop,
        _ => Known::Other,
    }
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
                        Known::Connection | Known::TransferEncoding | Known::HopByHop
                    ),
                    "{name}"
                );
            }
        }
        assert_eq!(classify("connectio"), Known::Other);
        assert_eq!(classify("authorization"), Known::Authorization);
        assert_eq!(classify("Content-LENGTH"), Known::ContentLength);
        assert_eq!(classify("VIA"), Known::Via);
        assert_eq!(classify("x-via"), Known::Other);
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
