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
use crate::instrument::{Gauge, Open};
use crate::proxy::headers::ResponseFraming;
use crate::proxy::idle::{Idle, IdleLists};
use crate::proxy::measure;
use crate::proxy::route::{may_retry, Unanswered};
use crate::proxy::upstream::{DialError, Dialer};
use crate::registry::{Entry, Origin};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
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
}

/// An idle hyper client connection.
struct Sender(SendRequest<UpstreamBody>);

impl Idle for Sender {
    fn open(&self) -> bool {
        !self.0.is_closed()
    }
}

pub struct Pool {
    idle: IdleLists<Sender>,
    dialer: Dialer,
    /// The open upstream connections of the process.
    open: Arc<Gauge>,
}

impl Pool {
    pub fn new(dialer: Dialer, open: Arc<Gauge>) -> Pool {
        Pool {
            idle: IdleLists::default(),
            dialer,
            open,
        }
    }

    /// Closes idle connections the upstream closed or that waited too long, while any are
    /// pooled ([`IdleLists::reap`]).
    pub async fn reap(&self) {
        self.idle.reap().await;
    }

    /// Sends `req` (origin-form URI, `Host` set) to connection `entry`'s upstream, on an
    /// idle connection when there is one, retrying by [`may_retry`]: a request hyper gave
    /// back unsent, or an `idempotent` one without a body that a reused connection lost
    /// before answering, goes once more on a new connection.
    pub async fn send(
        self: &Rc<Self>,
        entry: &Entry,
        req: Request<UpstreamBody>,
        idempotent: bool,
    ) -> Result<Response<PooledBody>, PoolError> {
        let origin = &entry.origin;
        let mut req = req;
        loop {
            let (mut sender, reused) = match self.checkout(origin).await {
                Some(s) => (s, true),
                // Boxed: the cold path would otherwise bloat every request's future.
                None => (Box::pin(self.connect(entry)).await?, false),
            };
            // A bodiless request can be sent again after it left: keep its head.
            let again =
                (reused && idempotent && req.body().is_end_stream()).then(|| resend_copy(&req));
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

    async fn checkout(&self, origin: &Origin) -> Option<SendRequest<UpstreamBody>> {
        loop {
            let Sender(mut sender) = self.idle.take(origin, Instant::now())?;
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, origin: &Origin, sender: SendRequest<UpstreamBody>) {
        if !sender.is_closed() {
            self.idle.put(origin, Sender(sender), Instant::now());
        }
    }

    /// Opens a hyper client connection (timed, or its failure counted: [`measure::dial`]),
    /// counted as open while its connection task runs.
    async fn connect(&self, entry: &Entry) -> Result<SendRequest<UpstreamBody>, PoolError> {
        let stream = measure::dial(&self.dialer, entry).await?;
        handshake(Checked::new(stream), self.open.open()).await
    }
}

/// A copy of a bodiless request, to send again.
fn resend_copy(req: &Request<UpstreamBody>) -> Request<UpstreamBody> {
    let mut copy = Request::new(http_body_util::Either::Right(Default::default()));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

async fn handshake<T>(io: T, open: Open) -> Result<SendRequest<UpstreamBody>, PoolError>
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
    Ok(sender)
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
