//! The fast path of the proxy listener: each app connection is served by one task that
//! reads the request head into a reused buffer, writes the upstream request head as bytes
//! ([`request::translate_request`], from the shared plan), sends it with its body in one
//! system call on a pooled upstream [`Link`](link::Link) ([`exchange`]), and relays the
//! response head ([`response::translate_response`]) and body back
//! ([`relay()`](relay::relay)), the same way nginx does. No hyper dispatch task, no
//! channel, no `HeaderMap`, no tokio timer per request (deadlines are the worker's coarse
//! [`Timers`]). A request the plan refuses is
//! answered here with the shared error rendering; an upstream's 401 to a current token
//! gets the shared recovery ([`crate::proxy::unauthorized`]): the request is still whole
//! in the buffer, so it is translated again with the new token and sent once more.
//!
//! A request this path does not frame itself (see [`request`]) moves the connection, with
//! the bytes read so far, to hyper and [`Proxy::handle`] for the rest of its life
//! ([`handover`]).

pub(crate) mod chunked;
pub(crate) mod deadline;
mod exchange;
mod handover;
pub(crate) mod io;
pub(crate) mod link;
mod relay;
pub mod request;
pub mod response;
pub(crate) mod worker;

use super::access;
use super::error::{write_error, ProxyError, UpstreamFault};
use super::full::pool::Pool;
use super::heads::{HeadBudget, HeadCharge};
use super::lifecycle::{self, Prepared, Transport};
use super::limits::Budget;
use super::Proxy;
use crate::registry::Entry;
use arc_swap::ArcSwap;
use deadline::Timers;
use io::{write_all2, AppIo, Buf};
use link::{Link, Links};
use relay::{relay, Relay};
use request::{Framed, Outcome};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A body up to this size is copied behind its head and sent with one `send`
/// ([`Exchange::coalesced`]).
const COALESCE: usize = 4096;

/// Initial read buffer of an app connection (grows to a head of [`request::MAX_HEAD`]).
const CLIENT_BUFFER: usize = 4096;
/// A connection's buffers that grew beyond this are given back between requests: above
/// what the largest request this path takes (a 64 KiB head and a 64 KiB body) grows them to.
const SHRINK_ABOVE: usize = 256 * 1024;

/// What a proxy worker thread shares between its connections.
pub struct Worker {
    /// The current proxy (a reload swaps in another registry and settings): loaded once per
    /// request, which then keeps what it loaded to its end.
    pub proxy: Arc<ArcSwap<Proxy>>,
    /// The hyper path's pool.
    pub pool: Rc<Pool>,
    pub links: Links,
    /// Off only in tests of the hyper path ([`crate::app::Options::hyper_only`]).
    pub fast_path: bool,
    pub timers: Rc<Timers>,
    pub header_read_timeout: Duration,
    pub shutdown: CancellationToken,
    /// `tokenwarden_open_connections{side="client"}`.
    pub open_clients: Arc<crate::instrument::Gauge>,
    /// The partial heads of all workers' connections (`proxy.max_buffered_head_bytes`).
    pub heads: Arc<HeadBudget>,
}

/// One app connection.
struct Client<S> {
    io: S,
    /// The `host:port` of the intercepted tunnel it is inside, if any ([`super::tunnel`]).
    tunnel: Option<Rc<str>>,
    /// What it may still do (moves with it to hyper).
    budget: Rc<Budget>,
    buf: Buf,
    /// The upstream request head being sent.
    out: Vec<u8>,
}

impl<S> Client<S> {
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
enum Next {
    KeepAlive,
    Close,
    /// Move the connection to the hyper path.
    Hyper,
}

/// Serves one app connection until it closes: a TCP connection the listener accepted
/// (`tunnel: None`), or the decrypted stream of an intercepted tunnel to `tunnel`.
pub async fn serve<S: AppIo>(worker: Rc<Worker>, io: S, peer: SocketAddr, tunnel: Option<Rc<str>>) {
    let _open = worker.open_clients.open();
    let mut client = Client {
        io,
        tunnel,
        budget: Rc::new(Budget::new(worker.proxy.load().limits, Instant::now())),
        buf: Buf::with_capacity(CLIENT_BUFFER),
        out: Vec::new(),
    };
    // Without the fast path (tests of the hyper path), hyper takes every connection.
    loop {
        if !worker.fast_path {
            break;
        }
        match worker.request(&mut client).await {
            Next::KeepAlive => {}
            Next::Close => return,
            Next::Hyper => break,
        }
    }
    handover::serve_with_hyper(worker, client, peer).await;
}

impl Worker {
    /// Reads, forwards and answers one request of `client`: [`lifecycle::forward`] over
    /// this path's [`Exchange`], then the answer relayed or the error written.
    async fn request<S: AppIo>(&self, client: &mut Client<S>) -> Next {
        client.shrink();
        let proxy = self.proxy.load_full();
        let (first, framed, started) = match self.read(&proxy, client).await {
            Ok(read) => read,
            Err(next) => return next,
        };
        let Framed {
            head_len,
            body_len,
            is_head,
            close,
        } = framed;
        let close = close || client.budget.last(started);
        let consumed = head_len + body_len;
        let mut exchange = Exchange {
            worker: self,
            client,
            framed,
            close,
            now: started,
        };
        let first = first.map(|req| exchange.coalesced(req));
        let forwarded = lifecycle::forward(&proxy, &mut exchange, first, started).await;
        let (entry, (mut link, response)) = match forwarded {
            Ok(answered) => answered,
            Err(error) => return self.fail(client, consumed, error, is_head, close).await,
        };
        client.buf.consume(consumed);
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
                self.links.checkin(entry.index, link, started)
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

    /// Reads the next request of `client`: planned (its upstream head in `client.out`) or
    /// refused, with where it sits in the buffer and when it was read. The head must
    /// arrive within `header_read_timeout`, counted from when the wait starts; that wait
    /// ends at shutdown, before anything was taken. A small body then gets
    /// `body_read_timeout`, and shutdown does not end it: the request is under way.
    async fn read<'p, S: AppIo>(
        &self,
        proxy: &'p Proxy,
        client: &mut Client<S>,
    ) -> Result<(Result<Prepared<'p>, ProxyError>, Framed, Instant), Next> {
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
        match read {
            Ok(Ok(Read::Ready(req, now))) => Ok((Ok(req.prepared()), req.framed, now)),
            Ok(Ok(Read::Refused(refused, now))) => Ok((Err(refused.error), refused.framed, now)),
            Ok(Err(next)) => Err(next),
            // Idle too long, too slow, or shutting down (a second `Body` cannot happen).
            Err(_) | Ok(Ok(Read::Body)) => Err(Next::Close),
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
                None => pending.len() >= request::MAX_HEAD || pending[before..].contains(&b'\n'),
            };
        }
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
        tracing::debug!(error = ?error, "upstream request failed");
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

/// One request of an app connection, as the lifecycle drives it: planned from the bytes
/// at the start of the connection's buffer (which stay there until it is answered, so a
/// replay translates them again), sent on the worker's links.
struct Exchange<'c, S> {
    worker: &'c Worker,
    client: &'c mut Client<S>,
    framed: Framed,
    /// Tell the upstream the connection closes (the app asked, or its budget is spent).
    close: bool,
    /// When the request was read (a pooled link idle since before it is not reused).
    now: Instant,
}

impl<S> Exchange<'_, S> {
    /// `req`, with a body of up to [`COALESCE`] bytes copied behind its head in
    /// `client.out`, to go with it in one `send` (which costs the kernel less than a
    /// two-part `writev`).
    fn coalesced<'p>(&mut self, req: Prepared<'p>) -> Prepared<'p> {
        if self.framed.body_len <= COALESCE {
            let Framed {
                head_len, body_len, ..
            } = self.framed;
            let body = &self.client.buf.pending()[head_len..head_len + body_len];
            self.client.out.extend_from_slice(body);
        }
        req
    }
}

impl<S: AppIo> Transport for Exchange<'_, S> {
    type Answer = (Link, response::Response);

    fn access_line(&self) -> (String, String) {
        let (method, target) = access::request_line(self.client.buf.pending()).unwrap_or_default();
        (method.to_owned(), target.to_owned())
    }

    fn prepare<'p>(
        &mut self,
        proxy: &'p Proxy,
        now: Instant,
    ) -> Option<Result<Prepared<'p>, ProxyError>> {
        let client = &mut *self.client;
        let translated = request::translate_request(
            proxy,
            client.buf.pending(),
            &mut client.out,
            now,
            client.tunnel.as_deref(),
        );
        match translated {
            Outcome::Ready(req) => Some(Ok(self.coalesced(req.prepared()))),
            Outcome::Refused(refused) => Some(Err(refused.error)),
            // (The same bytes under the same proxy: translated as they were the first time.)
            Outcome::Partial(_) | Outcome::Fallback => None,
        }
    }

    async fn send<'p>(
        &mut self,
        proxy: &'p Proxy,
        req: &mut Prepared<'p>,
    ) -> Result<Self::Answer, ProxyError> {
        let Framed {
            head_len,
            body_len,
            is_head,
            ..
        } = self.framed;
        let body = &self.client.buf.pending()[head_len..head_len + body_len];
        // A small body went behind the head ([`Exchange::coalesced`]).
        let rest = if body_len <= COALESCE { &[][..] } else { body };
        let head = &self.client.out;
        let sent = self
            .worker
            .send(req, is_head, head, rest, self.close, self.now);
        match self
            .worker
            .timers
            .timeout(proxy.response_timeout, sent)
            .await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(fault)) => Err(fault.on(&req.entry.conn.key)),
            Err(_) => Err(UpstreamFault::timeout().on(&req.entry.conn.key)),
        }
    }

    fn status(answer: &Self::Answer) -> u16 {
        answer.1.status
    }

    fn replayable(&self) -> bool {
        // Head and body are whole at the start of the buffer until the request is answered.
        true
    }

    async fn discard(&mut self, (link, response): Self::Answer, entry: &Entry) {
        self.worker.discard(link, &response, entry.index).await;
    }
}
