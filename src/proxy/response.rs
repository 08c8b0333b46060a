//! The upstream's response head as bytes — shared: the fast path relays the head it
//! writes, the hyper path's `full/checked.rs` checks hyper's responses by the same
//! framing. Parsed with `httparse`, its
//! body framing worked out (RFC 9112 §6.3) and whether the upstream connection may be
//! reused, then written out for the app with hop-by-hop headers dropped (the shared
//! [`headers`](crate::proxy::headers) definitions), one `Content-Length`, and
//! `connection: close` when the app's connection ends. No allocation.

use super::heads::{MAX_HEAD, MAX_HEADERS};
use crate::proxy::error::write_header;
use crate::proxy::headers::{
    classify, connection_options, forwards_length, named_in_connection, only_chunked,
    parse_length_list, Known,
};
use std::io::Write as _;
use std::mem::MaybeUninit;

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
    /// The status code (for the access log).
    pub status: u16,
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
///
/// One function, longer than the 80-line rule: split into a framing pass and a write pass
/// it measured about 10 % slower (`cargo bench --bench hot_path`, translate_response).
#[allow(
    clippy::too_many_lines,
    reason = "the hot path: one function measured fastest"
)]
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
            // Chunked only, and only from HTTP/1.1 (hyper refuses the same): the proxy
            // never sends `TE`, so no other transfer coding was asked for, and relaying
            // one (or reading until close under a `Transfer-Encoding`) is not one framing.
            Known::TransferEncoding if version == 0 || !only_chunked(h.value) => {
                return Err("the upstream sent a transfer coding other than chunked".into())
            }
            Known::TransferEncoding => transfer_encoded = true,
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
        Framing::Chunked
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
            Known::Connection | Known::HopByHop | Known::ProxyAuthorization | Known::Lookalike => {
                true
            }
            // Kept: the body is relayed as the upstream encoded it.
            Known::TransferEncoding => false,
            // Written once below, as one number.
            Known::ContentLength => true,
            _ => {
                names_others
                    && named_in_connection(
                        res.headers
                            .iter()
                            .filter(|h| classify(h.name) == Known::Connection)
                            .map(|h| h.value),
                        h.name,
                    )
            }
        };
        if !skip {
            write_header(out, h.name.as_bytes(), h.value);
        }
    }
    if let (Some(length), true) = (length, forwards_length(code, transfer_encoded)) {
        // Formatting into the Vec itself: no allocation, and writing to a Vec cannot fail.
        let _ = write!(out, "content-length: {length}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Parsed::Final(Response {
        head_len,
        status: code,
        framing,
        reusable,
        close,
    }))
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
#[path = "response_tests.rs"]
mod tests;
