//! The fast path of the proxy listener: a transport ([`lifecycle::Transport`]) that
//! reads the request head into a reused buffer, writes the upstream request head as bytes
//! ([`request::translate_request`], from the shared plan), sends it with its body in one
//! system call on a pooled upstream [`Link`](link::Link) ([`exchange`]), and relays the
//! response head ([`super::response::translate_response`]) and body back
//! ([`relay()`](relay::relay)), the same way nginx does. No hyper dispatch task, no
//! channel, no `HeaderMap`, no tokio timer per request (deadlines are the worker's coarse
//! [`Timers`]). The request's life — token wait, send, 401 recovery, metrics, access log —
//! is the shared [`lifecycle::forward`]; the request stays whole in the buffer until it is
//! answered, so a replay translates it again with the new token.
//!
//! A request this path does not frame itself (see [`request`]) ends its loop with
//! [`Next::Hyper`]: the connection driver ([`super::conn`]) moves the connection, with the
//! bytes read so far, to hyper for the rest of its life. This module imports the shared
//! files and nothing of the hyper path or the driver.

mod exchange;
pub(crate) mod io;
pub(crate) mod link;
mod relay;
pub mod request;

use super::deadline::Timers;
use super::error::{write_error, ProxyError};
use super::heads::{HeadBudget, HeadCharge};
use super::lifecycle::{self, Prepared};
use super::limits::Budget;
use super::placeholder;
use super::Proxy;
use crate::proxy::tunnel::Inside;
use crate::registry::Version;
use exchange::Exchange;
use io::{write_all2, AppIo, Buf};
use link::Links;
use relay::{relay, Relay};
use request::Outcome;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A body up to this size is copied behind its head and sent with one `send`
/// ([`Exchange::coalesced`]).
const COALESCE: usize = 4096;

/// Initial read buffer of an app connection (grows to a head of [`super::heads::MAX_HEAD`]).
const CLIENT_BUFFER: usize = 4096;
/// A connection's buffers that grew beyond this are given back between requests: above
/// what the largest request this path takes (a 64 KiB head and a 64 KiB body) grows them to.
const SHRINK_ABOVE: usize = 256 * 1024;

/// What the fast path keeps per worker thread, shared by its connections.
pub(crate) struct Engine {
    pub links: Links,
    pub timers: Rc<Timers>,
    pub header_read_timeout: Duration,
    /// The partial heads of all workers' connections (`proxy.max_buffered_head_bytes`).
    pub heads: Arc<HeadBudget>,
}

/// One app connection.
pub(crate) struct Client<S> {
    io: S,
    /// The `host:port` of the intercepted tunnel it is inside, if any ([`super::tunnel`]).
    tunnel: Option<Rc<Inside>>,
    /// What it may still do (moves with it to hyper).
    budget: Rc<Budget>,
    buf: Buf,
    /// The upstream request head being sent.
    out: Vec<u8>,
}

impl<S> Client<S> {
    /// A connection (the decrypted stream of the intercepted tunnel to `tunnel`, if any)
    /// that may still do what `budget` allows.
    pub(crate) fn new(io: S, tunnel: Option<Rc<Inside>>, budget: Budget) -> Client<S> {
        Client {
            io,
            tunnel,
            budget: Rc::new(budget),
            buf: Buf::with_capacity(CLIENT_BUFFER),
            out: Vec::new(),
        }
    }

    /// What moves to hyper: the bytes read and not yet taken, the stream, the budget and
    /// the tunnel.
    pub(crate) fn into_parts(self) -> (bytes::Bytes, S, Rc<Budget>, Option<Rc<Inside>>) {
        (self.buf.into_pending(), self.io, self.budget, self.tunnel)
    }

    /// Reads until the bytes read start with `prefix` (true) or cannot (false: other
    /// bytes, the app closed, or a read failed). Nothing is taken from the buffer.
    pub(crate) async fn starts_with(&mut self, prefix: &[u8]) -> bool
    where
        S: AppIo,
    {
        loop {
            let pending = self.buf.pending();
            let n = pending.len().min(prefix.len());
            if pending[..n] != prefix[..n] {
                return false;
            }
            if n == prefix.len() {
                return true;
            }
            if !matches!(self.buf.fill(&mut self.io).await, Ok(read) if read > 0) {
                return false;
            }
        }
    }

    /// Gives back what a large request grew the buffers to, between requests.
    fn shrink(&mut self) {
        self.buf.shrink(SHRINK_ABOVE, CLIENT_BUFFER);
        if self.out.capacity() > SHRINK_ABOVE {
            self.out = Vec::new();
        }
    }
}

/// What reading a request produced.
enum Read<'s> {
    Ready(request::Request<'s>, Instant),
    /// The plan refused the request (read at the instant), which is whole in the buffer.
    Refused(request::Refusal, Instant),
    /// The head is whole; its body is still arriving.
    Body,
}

/// How a request ended, for the app connection.
pub(crate) enum Next {
    KeepAlive,
    Close,
    /// Move the connection to the hyper path.
    Hyper,
}

impl Engine {
    /// Reads, forwards and answers one request of `client` with `proxy` (loaded for it):
    /// [`lifecycle::forward`] over this path's [`Exchange`], then the answer relayed or
    /// the error written. (Reading is not a function of its own: each nested `async fn`
    /// costs every request its state machine.)
    pub(crate) async fn request<S: AppIo>(&self, proxy: &Proxy, client: &mut Client<S>) -> Next {
        client.shrink();
        // The head must arrive within header_read_timeout, counted from when the wait
        // starts; that wait ends at shutdown, before anything was taken. A small body then
        // gets body_read_timeout, and shutdown does not end it: the request is under way.
        let timeout = self.header_read_timeout;
        let read = match self
            .timers
            .idle(timeout, self.read_request(proxy, client, true))
            .await
        {
            Ok(Ok(Read::Body)) => {
                let bound = client.budget.body_read_timeout();
                let body = self.read_request(proxy, client, false);
                self.timers.timeout(bound, body).await
            }
            read => read,
        };
        let (first, framed, started) = match read {
            Ok(Ok(Read::Ready(req, now))) => (Ok(req.prepared), req.framed, now),
            Ok(Ok(Read::Refused(refused, now))) => (Err(refused.error), refused.framed, now),
            Ok(Err(next)) => return next,
            // Idle too long, too slow, or shutting down (a second `Body` cannot happen).
            Err(_) | Ok(Ok(Read::Body)) => return Next::Close,
        };
        // An upstream not yet known to speak HTTP/1.1 is asked first (one known to speak
        // HTTP/2 went to the hyper path from `translate_request`); one that speaks HTTP/2
        // is the hyper path's (before the request is taken from the buffer, which hyper
        // then reads as it arrived).
        if let Ok(req) = &first {
            if req.entry.version.get() != Version::Http1
                && !Box::pin(self.upstream_speaks_http1(req, started)).await
            {
                return Next::Hyper;
            }
        }
        let consumed = framed.head_len + framed.body_len;
        let mut exchange = Exchange::new(self, client, framed, started);
        let first = first.map(|req| exchange.coalesced(req));
        let forwarded = lifecycle::forward(proxy, &mut exchange, first, started).await;
        let (close, link, now) = (exchange.close, exchange.link.take(), exchange.now);
        let (sent, response) = match forwarded {
            Ok(answered) => answered,
            Err(error) => {
                return self
                    .fail(client, consumed, error, framed.is_head, close)
                    .await
            }
        };
        // (An answer always comes with its link.)
        let Some(mut link) = link else {
            return Next::Close;
        };
        client.buf.consume(consumed);
        let egress = &sent.entry.conn.egress;
        if egress.scrub_response_headers {
            let held = placeholder::held(sent.entry, sent.grant.as_deref());
            let secret = held.secret();
            if let Some(scrubbed) =
                placeholder::scrub(&link.head, secret, placeholder::mask(egress))
            {
                link.head = scrubbed;
            }
        }
        let relayed = relay(
            &mut link,
            &mut client.io,
            response.framing,
            &self.timers,
            proxy.upstream_read_timeout,
        )
        .await;
        match relayed {
            Ok(()) if response.reusable && link.buf.is_empty() => {
                self.links.checkin(&sent.entry.origin, link, now)
            }
            Ok(()) => {}
            // The app may have part of the response; only closing can tell it so. (A body
            // whose framing breaks is this too, however early: the hyper path has sent
            // the head by then, and both paths end the same way.)
            Err(Relay::Broken) => return Next::Close,
        }
        if response.close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Reads until `client.buf` starts with a whole request the fast path forwards (its
    /// upstream head then in `client.out`), or one it does not (`Err(Next::Hyper)`), or the
    /// app closes — or, with `until_head`, until a forwardable head is whole but its body
    /// is not (`Read::Body`). A head is parsed again only when a read may have completed it.
    /// A head that spans several reads is charged to the worker's [`HeadBudget`]: one that
    /// would pass it is answered 431 and the connection closed.
    async fn read_request<'s, S: AppIo>(
        &self,
        proxy: &'s Proxy,
        client: &mut Client<S>,
        until_head: bool,
    ) -> Result<Read<'s>, Next> {
        // Between requests the buffer is usually empty: nothing to parse before a read.
        let mut parse = !client.buf.is_empty();
        let mut whole = None;
        // Charged only once a head spans more than one read; given back on return.
        let mut charge = HeadCharge::new(&self.heads);
        loop {
            if parse {
                let now = Instant::now();
                match request::translate_request(
                    proxy,
                    client.buf.pending(),
                    &mut client.out,
                    now,
                    client.tunnel.as_deref(),
                ) {
                    Outcome::Ready(req) => return Ok(Read::Ready(req, now)),
                    Outcome::Refused(refused) => return Ok(Read::Refused(refused, now)),
                    Outcome::Fallback => return Err(Next::Hyper),
                    Outcome::Partial(Some(_)) if until_head => return Ok(Read::Body),
                    Outcome::Partial(length) => whole = length,
                }
            }
            let before = client.buf.pending().len();
            match client.buf.fill(&mut client.io).await {
                Ok(n) if n > 0 => {}
                _ => return Err(Next::Close),
            }
            let pending = client.buf.pending();
            if before > 0 && whole.is_none() && !charge.grow_to(pending.len()) {
                tracing::debug!("{}: connection closed", super::heads::HEADS_FULL_REASON);
                let _ = write_all2(&mut client.io, super::heads::HEADS_FULL, &[]).await;
                return Err(Next::Close);
            }
            parse = match whole {
                Some(length) => pending.len() >= length,
                // (Or the head is too large for this path, which parsing then says.)
                None => {
                    pending.len() >= super::heads::MAX_HEAD || pending[before..].contains(&b'\n')
                }
            };
        }
    }

    /// Whether `req`'s upstream is known to speak HTTP/1.1, learning it first if it is not
    /// known yet ([`Links::learn`]); false when it speaks HTTP/2, or the dial failed.
    async fn upstream_speaks_http1(&self, req: &Prepared<'_>, now: Instant) -> bool {
        let entry = req.entry;
        entry.version.get() == Version::Unknown
            && self.links.learn(entry, now).await
            && entry.version.get() == Version::Http1
    }

    /// Answers with the proxy's own error response.
    async fn fail<S: AppIo>(
        &self,
        client: &mut Client<S>,
        consumed: usize,
        error: ProxyError,
        is_head: bool,
        close: bool,
    ) -> Next {
        match &error {
            // Its subject (a user's grant) is for the answer, not the log.
            ProxyError::NoToken {
                connection, state, ..
            } => tracing::debug!(%connection, state = state.as_str(), "no usable token"),
            _ => tracing::debug!(error = ?error, "upstream request failed"),
        }
        let close = close || self.timers.shutting_down() || error.closes();
        client.buf.consume(consumed);
        write_error(&mut client.out, &error, is_head, close);
        let written = write_all2(&mut client.io, &client.out, &[]).await;
        if written.is_err() || close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }
}
