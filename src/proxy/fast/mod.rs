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
use super::limits::Budget;
use super::Proxy;
use arc_swap::ArcSwap;
use deadline::Timers;
use io::{write_all2, AppIo, Buf};
use link::Links;
use relay::{relay, Relay};
use request::{Framed, Outcome};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A body up to this size is copied behind its head and sent with one `send`, which costs
/// the kernel less than a two-part `writev`.
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
    /// Reads, forwards and answers one request of `client`.
    async fn request<S: AppIo>(&self, client: &mut Client<S>) -> Next {
        client.shrink();
        let proxy = self.proxy.load_full();
        // The head must arrive within header_read_timeout, counted from when the wait
        // starts; that wait ends at shutdown, before anything was taken. A small body then
        // gets body_read_timeout, and shutdown does not end it: the request is under way.
        let timeout = self.header_read_timeout;
        let read = match self
            .timers
            .idle(timeout, self.read_request(&proxy, client, true))
            .await
        {
            Ok(Ok(Read::Body)) => {
                let bound = client.budget.body_read_timeout();
                let body = self.read_request(&proxy, client, false);
                self.timers.timeout(bound, body).await
            }
            read => read,
        };
        let (mut req, now) = match read {
            Ok(Ok(Read::Ready(req, now))) => (req, now),
            Ok(Ok(Read::Refused(refused, started))) => {
                // A token on its way: wait for it, then read the same request again (it is
                // still in the buffer).
                if proxy.token_arrives(&refused.error).await {
                    return Next::KeepAlive;
                }
                let Framed {
                    head_len,
                    body_len,
                    is_head,
                    close,
                } = refused.framed;
                let close = close || client.budget.last(Instant::now());
                super::measure::failed(&proxy, &refused.error, started);
                if proxy.access_log {
                    log_access(
                        client,
                        refused.error.connection().unwrap_or(access::NO_CONNECTION),
                        refused.error.status().as_u16(),
                        Instant::now(),
                    );
                }
                return self
                    .fail(client, head_len + body_len, refused.error, is_head, close)
                    .await;
            }
            Ok(Err(next)) => return next,
            // Idle too long, too slow, or shutting down (a second `Body` cannot happen).
            Err(_) | Ok(Ok(Read::Body)) => return Next::Close,
        };
        let state = req.entry;
        let conn = &state.conn;
        let Framed {
            head_len,
            body_len,
            is_head,
            close,
        } = req.framed;
        let close = close || client.budget.last(now);
        let whole_body = &client.buf.pending()[head_len..head_len + body_len];
        let mut body = coalesce(&mut client.out, whole_body);
        let consumed = head_len + body_len;
        // The access log's request line, copied (only when it is on) before the buffer moves.
        let logged = proxy.access_log.then(|| {
            access::request_line(&client.buf.pending()[..head_len])
                .map(|(m, t)| (m.to_owned(), t.to_owned()))
                .unwrap_or_default()
        });

        let mut replayed = false;
        let (mut link, response) = loop {
            let sent = self
                .timers
                .timeout(
                    proxy.response_timeout,
                    self.send(&req, &client.out, body, close, now),
                )
                .await;
            let (link, response) = match sent {
                Ok(Ok(sent)) => sent,
                failed => {
                    let error = match failed {
                        Ok(Err(fault)) => fault,
                        _ => UpstreamFault::timeout(),
                    }
                    .on(&conn.key);
                    super::measure::failed(&proxy, &error, now);
                    if let Some((method, target)) = &logged {
                        access::log(&conn.key, method, target, error.status().as_u16(), now);
                    }
                    return self.fail(client, consumed, error, is_head, close).await;
                }
            };
            // A 401 to a token still considered valid: one refresh, and one replay of the
            // request (still whole at the start of the buffer) with the new token. (Boxed:
            // the cold path would otherwise bloat every request's future.)
            if replayed
                || !conn.token_rejected.contains(response.status)
                || !Box::pin(proxy.unauthorized(state, response.status, req.token, req.idempotent))
                    .await
            {
                break (link, response);
            }
            let again = request::translate_request(
                &proxy,
                client.buf.pending(),
                &mut client.out,
                Instant::now(),
                client.tunnel.as_deref(),
            );
            let Outcome::Ready(again) = again else {
                // (Not forwardable any more, e.g. the new token is unusable: the 401 stands.)
                break (link, response);
            };
            Box::pin(self.discard(link, &response, state.index)).await;
            req = again;
            body = coalesce(&mut client.out, whole_body);
            replayed = true;
        };
        client.buf.consume(consumed);
        super::measure::answered(state, response.status, now);

        let relayed = relay(
            &mut link,
            &mut client.io,
            response.framing,
            &self.timers,
            proxy.upstream_read_timeout,
        )
        .await;
        if let Some((method, target)) = &logged {
            access::log(&conn.key, method, target, response.status, now);
        }
        match relayed {
            Ok(()) if response.reusable && link.buf.is_empty() => {
                self.links.checkin(state.index, link, now)
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

/// Copies a body of up to [`COALESCE`] bytes behind the request head in `out` (sent with
/// one `send`); returns what is left to send after the head.
fn coalesce<'b>(out: &mut Vec<u8>, body: &'b [u8]) -> &'b [u8] {
    if body.len() <= COALESCE {
        out.extend_from_slice(body);
        return &[];
    }
    body
}

/// The access-log event of a request answered before it was forwarded (its head is at the
/// start of the client's buffer).
fn log_access<S>(client: &Client<S>, connection: &str, status: u16, started: Instant) {
    let head = client.buf.pending();
    let (method, target) = access::request_line(head).unwrap_or_default();
    access::log(connection, method, target, status, started);
}
