//! The hyper path's upstream connection pool of one proxy worker thread. Each worker runs
//! a current-thread runtime, so the pool needs no lock and no atomics: idle hyper HTTP/1.1
//! client connections by upstream origin in the worker's [`IdleLists`], checked out for
//! one request and returned when the response body has been read to its end. A connection whose response
//! body is dropped early is closed (HTTP/1.1 cannot abandon a response and reuse the
//! connection), and so is one whose response was framed ambiguously or refused
//! ([`ResponseFraming`]) or whose body breaks the fast path's chunked rules ([`Checked`]).
//! Connections are opened by the shared [`Dialer`]; failures are retried by the shared
//! rule ([`may_retry`]).

use super::checked::Checked;
use super::UpstreamBody;
use crate::config::Http2;
use crate::instrument::{Gauge, Open};
use crate::proxy::headers::ResponseFraming;
use crate::proxy::idle::{Idle, IdleLists};
use crate::proxy::measure;
use crate::proxy::route::{may_retry, Unanswered};
use crate::proxy::upstream::{DialError, Dialer, Offer, Stream};
use crate::registry::{Entry, Origin, OriginHash, Version};
use http::Uri;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::time::Instant;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The response has a transfer coding other than chunked.
    #[error("the upstream sent a transfer coding other than chunked")]
    TransferCoding,
    /// `upstream_http2: always`, and the upstream chose HTTP/1.1 by ALPN.
    #[error("the upstream does not speak HTTP/2 (it chose HTTP/1.1 by ALPN), and upstream_http2 is always")]
    NoHttp2,
    /// A gRPC request, and the upstream speaks HTTP/1.1 only: never downgraded.
    #[error("the upstream does not speak HTTP/2, which gRPC needs")]
    GrpcOverHttp1,
}

/// An idle hyper client connection.
struct Sender(SendRequest<UpstreamBody>);

impl Idle for Sender {
    fn open(&self) -> bool {
        !self.0.is_closed()
    }
}

/// How many times one request refused unprocessed by HTTP/2 upstreams is sent again.
const MAX_H2_RESENDS: u32 = 32;

/// The worker's HTTP/2 connection to one origin: shared by every request to it.
enum Shared {
    /// Being opened: requests to the origin wait for it rather than open their own.
    Opening(Rc<tokio::sync::Notify>),
    /// Open; the `Notify` of its opening tells it from a later connection to the origin.
    Open(Rc<tokio::sync::Notify>, http2::SendRequest<UpstreamBody>),
}

/// A connection a request can go on: an HTTP/2 one with the identity of its entry in
/// [`Pool::shared`] (None: not shared).
enum Upstream {
    Http1(SendRequest<UpstreamBody>),
    Http2(
        http2::SendRequest<UpstreamBody>,
        Option<Rc<tokio::sync::Notify>>,
    ),
}

pub struct Pool {
    idle: IdleLists<Sender>,
    /// At most one HTTP/2 connection per origin (the upstream's `max_concurrent_streams`
    /// then queues requests on it).
    shared: RefCell<HashMap<Origin, Shared, OriginHash>>,
    dialer: Dialer,
    /// The open upstream connections of the process.
    open: Arc<Gauge>,
}

impl Pool {
    pub fn new(dialer: Dialer, open: Arc<Gauge>) -> Pool {
        Pool {
            idle: IdleLists::default(),
            shared: RefCell::default(),
            dialer,
            open,
        }
    }

    /// Closes idle connections the upstream closed or that waited too long, while any are
    /// pooled ([`IdleLists::reap`]).
    pub async fn reap(&self) {
        self.idle.reap().await;
    }

    /// Sends `req` (origin-form URI, `Host` set) to connection `entry`'s upstream: on its
    /// HTTP/2 connection, or an idle HTTP/1.1 one, or a new one, retrying by
    /// [`may_retry`]: a request hyper gave back unsent, or an `idempotent` one without a
    /// body that a reused connection lost before answering, goes once more on a new
    /// connection.
    pub async fn send(
        self: &Rc<Self>,
        entry: &Entry,
        req: Request<UpstreamBody>,
        idempotent: bool,
    ) -> Result<Response<PooledBody>, PoolError> {
        let origin = &entry.origin;
        let mut req = req;
        // How often an HTTP/2 request the upstream refused unprocessed may be sent again:
        // many (connections ending by GOAWAY one after another under load can each refuse
        // it: at 8, one request of 400 behind nginx's `keepalive_requests 10` was refused
        // every time), not without end (an upstream refusing every stream must not make a
        // request dial until it times out).
        let mut resends = MAX_H2_RESENDS;
        loop {
            let (upstream, reused) = match self.checkout(entry).await {
                Some(s) => (s, true),
                // Boxed: the cold path would otherwise bloat every request's future.
                None => (Box::pin(self.connect(entry)).await?, false),
            };
            let mut sender = match upstream {
                Upstream::Http2(sender, id) => {
                    // A copy to send again if the upstream refuses the stream unprocessed.
                    let again = (resends > 0).then(|| copy_of(&req)).flatten();
                    match send_h2(sender, entry, req).await {
                        Ok(response) => return Ok(response),
                        // Refused before it left (a connection closing): once more, anew.
                        Err((Some(unsent), _)) if reused && resends > 0 => req = unsent,
                        // Sent, and refused unprocessed (beyond the last stream of a
                        // GOAWAY, or REFUSED_STREAM: RFC 9113 §8.7): safe to send again.
                        Err((None, e)) if unprocessed(&e) && again.is_some() => {
                            req = again.expect("checked");
                        }
                        Err((_, e)) => return Err(PoolError::Http(e)),
                    }
                    resends -= 1;
                    // Sent again on a new connection (not on one another request has
                    // opened meanwhile, which stays).
                    let mut shared = self.shared.borrow_mut();
                    let same = |held: &Rc<_>| id.as_ref().is_some_and(|id| Rc::ptr_eq(held, id));
                    if matches!(shared.get(origin), Some(Shared::Open(held, _)) if same(held)) {
                        shared.remove(origin);
                    }
                    continue;
                }
                Upstream::Http1(_) if is_grpc(&req) => return Err(PoolError::GrpcOverHttp1),
                Upstream::Http1(sender) => sender,
            };
            // A bodiless request can be sent again after it left: keep its head.
            let again = (reused && idempotent && req.body().is_end_stream())
                .then(|| copy_of(&req))
                .flatten();
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    // Without its sender, hyper closes the connection once this response
                    // is read (a refused one is dropped unread: closed at once).
                    let slot = match ResponseFraming::of(&parts.headers) {
                        ResponseFraming::Clean => Some((sender, Rc::clone(self), origin.clone())),
                        ResponseFraming::Ambiguous => None,
                        ResponseFraming::Refused => return Err(PoolError::TransferCoding),
                    };
                    let body = PooledBody { inner: body, slot };
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match (e.take_message(), again) {
                    (Some(unsent), _) if may_retry(reused, idempotent, Unanswered::Unsent) => {
                        req = unsent
                    }
                    (None, Some(copy))
                        if e.error().is_incomplete_message()
                            && may_retry(reused, idempotent, Unanswered::Sent) =>
                    {
                        req = copy
                    }
                    _ => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
    }

    /// The origin's HTTP/2 connection (waiting while one is being opened), or an idle
    /// HTTP/1.1 one.
    async fn checkout(&self, entry: &Entry) -> Option<Upstream> {
        let origin = &entry.origin;
        if entry.conn.upstream_http2 != Http2::Never {
            loop {
                let opening = match self.shared.borrow().get(origin) {
                    Some(Shared::Open(id, sender)) if !sender.is_closed() => {
                        return Some(Upstream::Http2(sender.clone(), Some(Rc::clone(id))))
                    }
                    Some(Shared::Opening(opened)) => Rc::clone(opened),
                    _ => break,
                };
                opening.notified().await;
            }
        }
        loop {
            let Sender(mut sender) = self.idle.take(origin, Instant::now())?;
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(Upstream::Http1(sender));
            }
        }
    }

    fn checkin(&self, origin: &Origin, sender: SendRequest<UpstreamBody>) {
        if !sender.is_closed() {
            self.idle.put(origin, Sender(sender), Instant::now());
        }
    }

    /// Opens a hyper client connection (timed, or its failure counted: [`measure::dial`]),
    /// counted as open while its connection task runs: HTTP/2 when the upstream chose it
    /// (or `always` over http, by prior knowledge), which becomes the origin's shared one
    /// (the requests to the origin meanwhile wait for it, unless the upstream is known to
    /// speak HTTP/1.1), else HTTP/1.1.
    async fn connect(&self, entry: &Entry) -> Result<Upstream, PoolError> {
        let mode = entry.conn.upstream_http2;
        let offer = match mode {
            Http2::Never => Offer::Http1,
            Http2::Auto => Offer::Either,
            Http2::Always => Offer::Http2,
        };
        let shares = mode != Http2::Never && entry.version.get() != Version::Http1;
        let opening = shares.then(|| Opening::start(&self.shared, &entry.origin));
        let stream = measure::dial(&self.dialer, entry, offer).await?;
        let h2 = stream.speaks_h2()
            || (mode == Http2::Always && entry.conn.upstream.scheme != http::uri::Scheme::HTTPS);
        if mode == Http2::Auto {
            entry.version.learned(h2);
        }
        if !h2 {
            if mode == Http2::Always {
                return Err(PoolError::NoHttp2);
            }
            return handshake(Checked::new(stream), self.open.open()).await;
        }
        let sender = handshake_h2(stream, self.open.open()).await?;
        let id = opening.map(|opening| opening.done(sender.clone()));
        Ok(Upstream::Http2(sender, id))
    }
}

/// The origin's [`Shared::Opening`] while a connection is being opened: replaced by the
/// connection, or removed if it failed or is HTTP/1.1; the waiting requests woken.
struct Opening<'p> {
    shared: &'p RefCell<HashMap<Origin, Shared, OriginHash>>,
    origin: Origin,
    opened: Rc<tokio::sync::Notify>,
}

impl<'p> Opening<'p> {
    fn start(shared: &'p RefCell<HashMap<Origin, Shared, OriginHash>>, origin: &Origin) -> Self {
        let opened = Rc::new(tokio::sync::Notify::new());
        let slot = Shared::Opening(Rc::clone(&opened));
        shared.borrow_mut().insert(origin.clone(), slot);
        Opening {
            shared,
            origin: origin.clone(),
            opened,
        }
    }

    /// The connection is open: the origin's from now on (its identity returned).
    fn done(self, sender: http2::SendRequest<UpstreamBody>) -> Rc<tokio::sync::Notify> {
        let open = Shared::Open(Rc::clone(&self.opened), sender);
        self.shared.borrow_mut().insert(self.origin.clone(), open);
        // (Drop wakes the waiting requests.)
        Rc::clone(&self.opened)
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut shared = self.shared.borrow_mut();
        if matches!(shared.get(&self.origin), Some(Shared::Opening(o)) if Rc::ptr_eq(o, &self.opened))
        {
            shared.remove(&self.origin);
        }
        self.opened.notify_waiters();
    }
}

/// Sends `req` on an HTTP/2 connection: its target absolute (`:scheme`, `:authority`),
/// without `Host`, with `te: trailers` when the app asked for trailers ([`WantsTrailers`]).
/// A failure gives the request back if it provably never left.
async fn send_h2(
    mut sender: http2::SendRequest<UpstreamBody>,
    entry: &Entry,
    mut req: Request<UpstreamBody>,
) -> Result<Response<PooledBody>, (Option<Request<UpstreamBody>>, hyper::Error)> {
    let upstream = &entry.conn.upstream;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(upstream.scheme.clone());
    parts.authority = Some(upstream.authority.clone());
    parts.path_and_query = req.uri().path_and_query().cloned();
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_2;
    req.headers_mut().remove(http::header::HOST);
    if req.extensions().get::<WantsTrailers>().is_some() {
        let trailers = http::HeaderValue::from_static("trailers");
        req.headers_mut().insert(http::header::TE, trailers);
    }
    if let Err(e) = sender.ready().await {
        return Err((Some(req), e));
    }
    match sender.try_send_request(req).await {
        Ok(response) => Ok(response.map(|inner| PooledBody { inner, slot: None })),
        Err(mut e) => Err((e.take_message(), e.into_error())),
    }
}

/// Marks a request whose app sent `TE: trailers` (removed with the other hop-by-hop
/// headers): an HTTP/2 upstream gets it again (gRPC servers require it).
#[derive(Clone, Copy, Debug)]
pub struct WantsTrailers;

/// Whether `req` is gRPC (`content-type: application/grpc`, `+proto` and the like; not
/// gRPC-Web, which is HTTP/1.1's).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(v.get(16), None | Some(b'+' | b';'))
        })
}

/// Whether an HTTP/2 request failed without the upstream processing it: its stream was
/// beyond the last one a graceful GOAWAY let finish, or refused (RFC 9113 §8.7).
fn unprocessed(e: &hyper::Error) -> bool {
    let h2 = std::error::Error::source(e).and_then(|s| s.downcast_ref::<h2::Error>());
    h2.is_some_and(|e| {
        e.reason() == Some(h2::Reason::REFUSED_STREAM)
            || (e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR))
    })
}

/// A copy of a request whose body is at hand (none, or one tokenwarden holds), to send
/// again; None for a streamed body.
fn copy_of(req: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    let body = match req.body() {
        http_body_util::Either::Right(full) => full.clone(),
        streamed if streamed.is_end_stream() => Default::default(),
        _ => return None,
    };
    let mut copy = Request::new(http_body_util::Either::Right(body));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy.extensions_mut().extend(req.extensions().clone());
    Some(copy)
}

async fn handshake<T>(io: T, open: Open) -> Result<Upstream, PoolError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(io)).await?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
        drop(open);
    });
    Ok(Upstream::Http1(sender))
}

/// An HTTP/2 client connection over `stream`, its task on the worker's thread; a response
/// header list larger than [`crate::proxy::heads::MAX_HEAD`] fails its request (a 502).
async fn handshake_h2(
    stream: Stream,
    open: Open,
) -> Result<http2::SendRequest<UpstreamBody>, PoolError> {
    let (sender, conn) = http2::Builder::new(LocalExec)
        .timer(hyper_util::rt::TokioTimer::new())
        // A response head as large as an HTTP/1.1 one may be (hyper's default is 16 KiB).
        .max_header_list_size(u32::try_from(crate::proxy::heads::MAX_HEAD).unwrap_or(u32::MAX))
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP/2 upstream connection ended with an error");
        }
        drop(open);
    });
    Ok(sender)
}

/// Runs hyper's HTTP/2 tasks on the worker's thread (its connections' futures are not
/// `Send`).
#[derive(Clone, Copy, Debug)]
pub struct LocalExec;

impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// A response body that gives its connection back to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    slot: Option<(SendRequest<UpstreamBody>, Rc<Pool>, Origin)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((sender, pool, origin)) = self.slot.take() {
            pool.checkin(&origin, sender);
        }
    }
}

impl Drop for PooledBody {
    /// An empty body may never be polled; its connection is still reusable.
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.release(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.release(),
            Some(Err(_)) => self.slot = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
