//! Placeholder credentials (issue 28), the shared policy of both paths: the app holds a
//! connection's placeholder (`placeholder:`, `twph_…`), never the credential; the proxy
//! swaps the credential in where the placeholder is — `Authorization` gets exactly what the
//! connection writes there (`Bearer <token>`, `Basic …`), any other header value and query
//! parameter value the credential itself, a form or JSON body (up to 64 KiB) too — and
//! only on the way to the connection the placeholder belongs to: a placeholder of another
//! connection is refused, never forwarded, and logged as an audit event
//! (`tokenwarden::audit`). `inject:` and `require_placeholder:` decide what happens when the
//! request carries none ([`Egress`]). On the way back, a response header (and, with
//! `scrub_response_bodies`, a text body) that echoes the credential has it replaced
//! ([`scrub`], [`Scrubbed`]).
//!
//! Every placeholder starts with [`PREFIX`]: one substring search finds any connection's
//! in a request, and a request without it costs nothing more. The registry knows every
//! placeholder ([`crate::registry::Registry::placeholder_owner`]).

use super::error::ProxyError;
use crate::config::egress::is_placeholder_byte;
use crate::config::{Egress, Inject};
use crate::registry::Entry;
use http::HeaderValue;
use memchr::memmem;

/// What every placeholder starts with.
pub const PREFIX: &[u8] = crate::config::egress::PLACEHOLDER_PREFIX.as_bytes();

/// The searcher for [`PREFIX`], built once (a one-off `memmem::find` builds one per call).
static FINDER: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(PREFIX));

/// Whether `bytes` may hold a placeholder.
#[inline]
pub fn may_hold(bytes: &[u8]) -> bool {
    FINDER.find(bytes).is_some()
}

/// The placeholders in `bytes`: each [`PREFIX`] with the placeholder bytes after it.
pub fn found(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    FINDER.find_iter(bytes).map(move |at| {
        let len = bytes[at + PREFIX.len()..]
            .iter()
            .take_while(|&&b| is_placeholder_byte(b))
            .count();
        &bytes[at..at + PREFIX.len() + len]
    })
}

/// What the placeholders a request carries say, checked against the connection `entry`
/// it was routed to: none of a connection (a `twph_` string no connection has is no
/// placeholder), or `entry`'s own; another connection's is the refusal, logged as an audit
/// event.
pub fn check<'b>(
    registry: &crate::registry::Registry,
    entry: &Entry,
    carried: impl IntoIterator<Item = &'b [u8]>,
) -> Result<bool, ProxyError> {
    let own = entry.conn.egress.placeholder.as_deref().map(str::as_bytes);
    let mut has_own = false;
    for placeholder in carried.into_iter().flat_map(found) {
        if Some(placeholder) == own {
            has_own = true;
            continue;
        }
        let Ok(text) = std::str::from_utf8(placeholder) else {
            continue;
        };
        if let Some(owner) = registry.placeholder_owner(text) {
            tracing::warn!(target: "tokenwarden::audit", event = "placeholder_misdirected",
                placeholder_of = owner, sent_to = %entry.conn.key,
                "a placeholder credential was sent to another connection's host: refused, not forwarded");
            return Err(ProxyError::Forbidden {
                reason: format!("the request carries the placeholder of connection `{owner}`, which is not this host's connection (`{}`): refused, never forwarded", entry.conn.key),
            });
        }
    }
    Ok(has_own)
}

/// The refusal of a request to a `require_placeholder` connection without its placeholder.
pub fn required(entry: &Entry) -> ProxyError {
    ProxyError::Forbidden {
        reason: format!(
            "connection `{}` requires its placeholder in the request (require_placeholder): none was sent",
            entry.conn.key
        ),
    }
}

/// Whether the connection's `Authorization` goes in, given the app's (`app`: its value,
/// if it sent one) and whether that carries the connection's placeholder.
pub fn sets_authorization(egress: &Egress, app: Option<&[u8]>) -> bool {
    match (egress.inject, app) {
        (Inject::Always, _) => true,
        (_, Some(value)) if own_in(egress, value) => true,
        (Inject::IfAbsent, None) => true,
        _ => false,
    }
}

/// Whether `value` holds the connection's own placeholder.
pub fn own_in(egress: &Egress, value: &[u8]) -> bool {
    egress
        .placeholder
        .as_deref()
        .is_some_and(|p| memmem::find(value, p.as_bytes()).is_some())
}

/// The credential an `Authorization` value carries: what follows its scheme (`Bearer
/// <token>` → the token), or the whole value if it has none.
pub fn secret(authorization: &HeaderValue) -> &[u8] {
    let value = authorization.as_bytes();
    match value.iter().position(|&b| b == b' ') {
        Some(at) => &value[at + 1..],
        None => value,
    }
}

/// `secret` as it goes in a URL's target or a form body: every byte but RFC 3986's
/// unreserved ones percent-encoded, so a token's `+`, `/` or `=` arrives as itself (a
/// form's `+` would read as a space); borrowed when there is none.
pub fn url_encoded(secret: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if secret.iter().all(|&b| unreserved(b)) {
        return std::borrow::Cow::Borrowed(secret);
    }
    let mut out = Vec::with_capacity(secret.len() * 3);
    for &b in secret {
        if unreserved(b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `value` with every `placeholder` in it replaced by `with`, appended to `out`.
pub fn swap_into(value: &[u8], placeholder: &[u8], with: &[u8], out: &mut Vec<u8>) {
    let mut rest = value;
    while let Some(at) = memmem::find(rest, placeholder) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + placeholder.len()..];
    }
    out.extend_from_slice(rest);
}

/// `value` with every `placeholder` replaced by `with` (None: it holds none).
pub fn swapped(value: &[u8], placeholder: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    memmem::find(value, placeholder)?;
    let mut out = Vec::with_capacity(value.len() + with.len());
    swap_into(value, placeholder, with, &mut out);
    Some(out)
}

/// What replaces the credential in a response header: the placeholder, or `****`.
pub fn mask(egress: &Egress) -> &[u8] {
    egress.placeholder.as_deref().map_or(b"****", str::as_bytes)
}

/// The credential `entry` injects now (for a per-user connection, `grant`'s), to recognise
/// it in a response: an owned handle its bytes are read from ([`Held::secret`]).
pub fn held(entry: &Entry, grant: Option<&crate::grants::Grant>) -> Held {
    match &entry.conn.auth {
        crate::config::Auth::OAuth2(_) => {
            let tokens = grant.map_or(&*entry.tokens, |g| &g.tokens);
            Held::Token(tokens.current())
        }
        crate::config::Auth::Header(value) => Held::Static(value.clone()),
        crate::config::Auth::ApiKey(_) => Held::None,
    }
}

/// A credential as [`held`] returns it.
pub enum Held {
    Token(arc_swap::Guard<Option<std::sync::Arc<crate::token::TokenSet>>>),
    Static(HeaderValue),
    None,
}

impl Held {
    /// Its bytes (empty: none).
    pub fn secret(&self) -> &[u8] {
        match self {
            Held::Token(t) => t.as_deref().map_or(&[][..], |t| secret(t.header())),
            Held::Static(v) => secret(v),
            Held::None => &[],
        }
    }
}

/// `bytes` with every `secret` replaced by `with`, in place when they have the same length
/// (None: it holds none, or `secret` is empty).
pub fn scrub(bytes: &[u8], secret: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    if secret.is_empty() {
        return None;
    }
    swapped(bytes, secret, with)
}

pin_project_lite::pin_project! {
    /// A text response body with every occurrence of a credential replaced by as many `*`
    /// (so its length, and its framing, stay as they are): it holds back the last
    /// `secret.len() - 1` bytes of each frame until the next, where an occurrence may
    /// continue.
    pub struct Scrubbed<B> {
        #[pin]
        inner: B,
        secret: Vec<u8>,
        held: Vec<u8>,
        // Trailers that came while bytes were held back: sent after them.
        trailers: Option<http_body::Frame<bytes::Bytes>>,
        done: bool,
    }
}

impl<B> Scrubbed<B> {
    pub fn new(inner: B, secret: Vec<u8>) -> Scrubbed<B> {
        Scrubbed {
            inner,
            secret,
            held: Vec::new(),
            trailers: None,
            done: false,
        }
    }
}

/// Replaces every `secret` in `bytes` by as many `*`.
fn mask_in_place(bytes: &mut [u8], secret: &[u8]) {
    let mut from = 0;
    while let Some(at) = memmem::find(&bytes[from..], secret) {
        let start = from + at;
        bytes[start..start + secret.len()].fill(b'*');
        from = start + secret.len();
    }
}

impl<B> http_body::Body for Scrubbed<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        use std::task::Poll;
        let mut this = self.project();
        if let Some(trailers) = this.trailers.take() {
            *this.done = true;
            return Poll::Ready(Some(Ok(trailers)));
        }
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            match frame {
                Some(Ok(frame)) => {
                    let frame = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers: what is held back (already masked, and shorter than
                        // the secret) goes first, then them next time.
                        Err(trailers) => {
                            let rest = std::mem::take(this.held);
                            if rest.is_empty() {
                                *this.done = true;
                                return Poll::Ready(Some(Ok(trailers)));
                            }
                            *this.trailers = Some(trailers);
                            return Poll::Ready(Some(Ok(http_body::Frame::data(rest.into()))));
                        }
                    };
                    this.held.extend_from_slice(&frame);
                    mask_in_place(this.held, this.secret);
                    let keep = this.secret.len().saturating_sub(1).min(this.held.len());
                    let ready = this.held.len() - keep;
                    if ready == 0 {
                        continue;
                    }
                    let out: Vec<u8> = this.held.drain(..ready).collect();
                    return Poll::Ready(Some(Ok(http_body::Frame::data(out.into()))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    *this.done = true;
                    let rest = std::mem::take(this.held);
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(http_body::Frame::data(rest.into()))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        (self.done && self.trailers.is_none())
            || (self.held.is_empty() && self.trailers.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a response with these headers has a body [`Scrubbed`] reads: text (`text/*`,
/// JSON, XML, form, JavaScript) without a content coding.
pub fn scrubbable(headers: &http::HeaderMap) -> bool {
    if headers.contains_key(http::header::CONTENT_ENCODING) {
        return false;
    }
    let Some(kind) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let kind = kind.as_bytes().to_ascii_lowercase();
    kind.starts_with(b"text/")
        || [
            &b"json"[..],
            b"xml",
            b"x-www-form-urlencoded",
            b"javascript",
        ]
        .iter()
        .any(|k| memmem::find(&kind, k).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn placeholders_are_found_and_swapped() {
        let value = b"Bearer twph_a_0123456789012345678901234567, twph_b_xyz!";
        let all: Vec<&[u8]> = found(value).collect();
        assert_eq!(
            all,
            [&b"twph_a_0123456789012345678901234567"[..], b"twph_b_xyz"]
        );
        let out = swapped(b"k=twph_x&j=twph_x", b"twph_x", b"SECRET").unwrap();
        assert_eq!(out, b"k=SECRET&j=SECRET");
        assert!(swapped(b"nothing", b"twph_x", b"S").is_none());
        assert_eq!(&url_encoded(b"tok-1.a_b~")[..], b"tok-1.a_b~");
        assert_eq!(&url_encoded(b"a+b/c=%&")[..], b"a%2Bb%2Fc%3D%25%26");
    }

    #[tokio::test]
    async fn a_scrubbed_body_masks_a_secret_split_across_frames() {
        let frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>> =
            ["echo: tok-", "secret-1 and tok-secret-1", "!"]
                .into_iter()
                .map(|s| Ok(http_body::Frame::data(bytes::Bytes::from(s))))
                .collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let scrubbed = Scrubbed::new(body, b"tok-secret-1".to_vec());
        let all = scrubbed.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"echo: ************ and ************!");
    }

    #[tokio::test]
    async fn trailers_after_held_back_bytes_are_kept() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
            Ok(http_body::Frame::data(bytes::Bytes::from(
                "echo: tok-secret-1 tail",
            ))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let collected = Scrubbed::new(body, b"tok-secret-1".to_vec())
            .collect()
            .await
            .unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(&collected.to_bytes()[..], b"echo: ************ tail");
    }
}
