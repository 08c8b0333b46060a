//! The upstream connection pool of one proxy worker thread. Each worker runs a
//! current-thread runtime, so its pool needs no lock and no atomics: idle HTTP/1.1
//! connections per upstream in a `RefCell`, checked out for one request and returned when
//! the response body has been read to its end. A connection whose response body is dropped
//! early is closed (HTTP/1.1 cannot abandon a response and reuse the connection).
//!
//! It keeps two kinds of idle connection: raw [`Link`]s for the fast path
//! ([`super::fast`]) and hyper client connections for the hyper path. Both are opened by
//! `Pool::open` (SSRF-guarded resolution, TCP, TLS).

use super::io::{Buf, Stream};
use super::upstream::{GuardedResolver, UpstreamBody};
use crate::config::Upstream;
use http::uri::Scheme;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long an idle upstream connection may wait for reuse.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often idle fast-path connections are checked ([`Pool::reap_links`]).
pub const POOL_REAP_INTERVAL: Duration = Duration::from_secs(5);
/// Idle connections kept per upstream, per worker.
pub const POOL_MAX_IDLE: usize = 1024;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{0}")]
    Connect(String),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

/// Read buffer of a fast-path upstream connection (a response head must fit; bodies are
/// relayed through it in pieces of up to this size).
pub const LINK_BUFFER: usize = 16 * 1024;

/// A fast-path upstream connection: the stream, its read buffer, and the buffer the
/// response head for the app is written into.
pub struct Link {
    pub stream: Stream,
    pub buf: Buf,
    pub head: Vec<u8>,
    since: Instant,
}

impl Link {
    /// Whether an idle connection may take a request at `now`: not idle too long, and
    /// nothing (a close, stray bytes) arrived on it.
    fn usable(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) <= POOL_IDLE_TIMEOUT
            && self.stream.idle_and_open()
    }
}

pub struct Pool {
    /// Idle hyper connections, indexed by the connection's position in the registry.
    idle: RefCell<Vec<Vec<Idle>>>,
    /// Idle fast-path connections, indexed the same way.
    links: RefCell<Vec<Vec<Link>>>,
    /// Wakes the reaper when it sleeps for want of pooled fast-path connections.
    link_pooled: tokio::sync::Notify,
    reaper_parked: std::cell::Cell<bool>,
    tls: tokio_rustls::TlsConnector,
    resolver: GuardedResolver,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new(
        connections: usize,
        tls: Arc<rustls::ClientConfig>,
        resolver: GuardedResolver,
        connect_timeout: Duration,
    ) -> Pool {
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Pool {
            idle: RefCell::new((0..connections).map(|_| Vec::new()).collect()),
            links: RefCell::new((0..connections).map(|_| Vec::new()).collect()),
            link_pooled: tokio::sync::Notify::new(),
            reaper_parked: std::cell::Cell::new(false),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            resolver,
            connect_timeout,
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to connection `index`'s upstream, on an
    /// idle connection when there is one. A request that a reused connection could not
    /// take (it closed meanwhile) is retried once on a new connection.
    pub async fn send(
        self: &Rc<Self>,
        index: usize,
        upstream: &Upstream,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let mut req = req;
        loop {
            let (mut sender, reused) = match self.checkout(index).await {
                Some(s) => (s, true),
                // Boxed: the cold path would otherwise bloat every request's future.
                None => (Box::pin(self.connect(upstream)).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = PooledBody {
                        inner: body,
                        slot: Some((sender, Rc::clone(self), index)),
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
    }

    async fn checkout(&self, index: usize) -> Option<SendRequest<UpstreamBody>> {
        loop {
            let idle = self.idle.borrow_mut()[index].pop()?;
            if idle.sender.is_closed() || idle.since.elapsed() > POOL_IDLE_TIMEOUT {
                continue;
            }
            let mut sender = idle.sender;
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, index: usize, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if idle[index].len() < POOL_MAX_IDLE {
            idle[index].push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// An idle fast-path connection to connection `index`'s upstream that is still open.
    pub fn checkout_link(&self, index: usize, now: Instant) -> Option<Link> {
        let mut links = self.links.borrow_mut();
        while let Some(link) = links[index].pop() {
            if link.usable(now) {
                return Some(link);
            }
        }
        None
    }

    /// Returns a fast-path connection whose last response was read to its end; idle since
    /// `since` (the start of that request will do: it errs on the old side).
    pub fn checkin_link(&self, index: usize, mut link: Link, since: Instant) {
        if !link.stream.is_clean() {
            return;
        }
        let mut links = self.links.borrow_mut();
        if links[index].len() < POOL_MAX_IDLE {
            link.since = since;
            links[index].push(link);
            if self.reaper_parked.replace(false) {
                self.link_pooled.notify_one();
            }
        }
    }

    /// Every [`POOL_REAP_INTERVAL`] while fast-path connections are pooled, closes those
    /// the upstream closed or that waited too long (nothing reads an idle connection, so
    /// this is what frees their sockets). With none pooled it sleeps without a timer.
    pub async fn reap(&self) {
        loop {
            if self.links.borrow().iter().all(Vec::is_empty) {
                self.reaper_parked.set(true);
                self.link_pooled.notified().await;
            }
            tokio::time::sleep(POOL_REAP_INTERVAL).await;
            self.reap_links(Instant::now());
        }
    }

    /// Closes idle fast-path connections that the upstream closed or that waited too long.
    pub fn reap_links(&self, now: Instant) {
        for links in self.links.borrow_mut().iter_mut() {
            links.retain(|link| link.usable(now));
        }
    }

    /// A new fast-path connection to `upstream`.
    pub async fn connect_link(&self, upstream: &Upstream) -> Result<Link, PoolError> {
        Ok(Link {
            stream: self.open(upstream).await?,
            buf: Buf::with_capacity(LINK_BUFFER),
            head: Vec::new(),
            since: Instant::now(),
        })
    }

    /// Opens a hyper client connection.
    async fn connect(&self, upstream: &Upstream) -> Result<SendRequest<UpstreamBody>, PoolError> {
        handshake(self.open(upstream).await?).await
    }

    /// Opens a connection: resolve (through the SSRF guard), TCP, TLS for https.
    async fn open(&self, upstream: &Upstream) -> Result<Stream, PoolError> {
        let addrs = self.resolve(upstream).await?;
        let tcp = tokio::time::timeout(self.connect_timeout, connect_any(&addrs))
            .await
            .map_err(|_| PoolError::ConnectTimeout)??;
        let _ = tcp.set_nodelay(true);
        if upstream.scheme == Scheme::HTTPS {
            let name = ServerName::try_from(upstream.host.clone()).map_err(|_| {
                PoolError::Connect(format!("{} is not a valid TLS server name", upstream.host))
            })?;
            let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| PoolError::ConnectTimeout)?
                .map_err(|e| {
                    PoolError::Connect(format!("TLS handshake with {} failed: {e}", upstream.host))
                })?;
            Ok(Stream::Tls(Box::new(tls)))
        } else {
            Ok(Stream::Plain(tcp))
        }
    }

    async fn resolve(&self, upstream: &Upstream) -> Result<Vec<SocketAddr>, PoolError> {
        if let Ok(ip) = upstream.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, upstream.port)]);
        }
        let found = self
            .resolver
            .resolve(&upstream.host)
            .await
            .map_err(|e| PoolError::Connect(e.to_string()))?;
        Ok(found
            .into_iter()
            .map(|a| SocketAddr::new(a.ip(), upstream.port))
            .collect())
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, PoolError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(PoolError::Connect(last.map_or_else(
        || "no address to connect to".into(),
        |e| e.to_string(),
    )))
}

async fn handshake<T>(io: T) -> Result<SendRequest<UpstreamBody>, PoolError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(io)).await?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A response body that gives its connection back to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    slot: Option<(SendRequest<UpstreamBody>, Rc<Pool>, usize)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((sender, pool, index)) = self.slot.take() {
            pool.checkin(index, sender);
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
