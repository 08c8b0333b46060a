//! HTTP/2 from the app, the third transport under the request lifecycle: an intercepted
//! tunnel whose client chose `h2` by ALPN ([`super::tunnel`] offers `h2, http/1.1`), or a
//! client of the proxy listener that speaks h2c with prior knowledge. The connection
//! driver ([`super::conn`]) recognises either by the connection preface ([`PREFACE`]) and
//! serves it here with hyper's HTTP/2 server; each stream is a request of the hyper path
//! ([`Proxy::handle`]), so routing, injection, 401 recovery, limits, `/metrics` and the
//! access log are the lifecycle's, as on HTTP/1.1. The fast path stays HTTP/1.1.
//!
//! What bounds a connection (besides `proxy.max_connections`):
//! - h2's own limits, set here: [`MAX_CONCURRENT_STREAMS`], a header list of at most
//!   [`MAX_HEAD`] bytes (which also bounds a CONTINUATION flood), rapid reset
//!   ([`MAX_PENDING_RESETS`] streams reset before they were answered; more is a GOAWAY),
//!   and the flow-control windows (what an app may send before the proxy reads it);
//! - `proxy.max_requests_per_connection` and `proxy.max_connection_lifetime`, each stream
//!   a request: the one that spends the budget is answered, then the connection ends
//!   gracefully (GOAWAY; the streams already open finish);
//! - `proxy.header_read_timeout`: the preface must arrive within it, and a connection
//!   without an open stream for that long is closed gracefully (GOAWAY) — and dropped if
//!   it still has none that long after the GOAWAY (a client that never answers it);
//! - a stream's own bodies: `proxy.stream_idle_timeout` bounds each pause in the app's
//!   body and in the upstream's (in place of HTTP/1.1's `body_read_timeout` and
//!   `upstream_read_timeout`). It bounds pauses, not a stream's length: a gRPC stream
//!   lives as long as messages keep coming.
//!
//! Requests arrive with an absolute target (`:scheme`, `:authority`, `:path`): inside a
//! tunnel it is made origin-form (the tunnel's `CONNECT` names the upstream, as it does
//! for HTTP/1.1); on the listener, an `:authority` that is the proxy itself is reverse
//! mode (`/{key}/…`), any other forward mode (`http://` only, as HTTP/1.1's absolute-form
//! targets). RFC 9113 §8.2's malformed requests (connection-specific headers, `TE` other
//! than `trailers`, upper-case names, unknown or repeated pseudo-headers, CR, LF or NUL in
//! a value, a `content-length` that disagrees with the data) are refused by the h2 crate
//! with a stream reset before the service sees them; `CONNECT` is refused here (tunnels
//! are HTTP/1.1's).

use super::conn::Shared;
use super::error::ProxyError;
use super::full::pool::LocalExec;
use super::full::ProxyBody;
use super::heads::MAX_HEAD;
use super::limits::Budget;
use super::tunnel::{Inside, Slot};
use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Streams open at once on one app connection (RFC 9113 recommends at least 100).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams the app may reset before the proxy answered them, at once (rapid reset,
/// CVE-2023-44487): beyond it the connection ends with a GOAWAY.
pub const MAX_PENDING_RESETS: usize = 20;

/// Serves the app connection `io` (its preface first) with HTTP/2 until it closes: from
/// `peer`, inside the intercepted tunnel to `tunnel` if any, each stream counted against
/// the connection's `budget`.
pub(super) async fn serve<S>(
    worker: &Rc<Shared>,
    io: S,
    peer: SocketAddr,
    tunnel: Option<Rc<Inside>>,
    budget: Rc<Budget>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let streams = Rc::new(Streams::default());
    let spent = Rc::new(Notify::new());
    let service = {
        let (worker, streams, spent) = (Rc::clone(worker), Rc::clone(&streams), Rc::clone(&spent));
        service_fn(move |req: Request<Incoming>| {
            let open = Open::new(&streams);
            if budget.last(Instant::now()) {
                spent.notify_one();
            }
            let proxy = worker.proxy.load_full();
            let engine = Rc::clone(&worker.full);
            let tunnel = tunnel.clone();
            async move {
                let response = match in_target_form(&proxy, req, tunnel.is_some()) {
                    Ok(req) => {
                        let slot = Slot::default();
                        proxy.handle(engine, req, peer, tunnel, slot).await
                    }
                    Err(e) => e.into_response().map(Either::Right),
                };
                Ok::<_, Infallible>(response.map(|body| Counted { body, _open: open }))
            }
        })
    };
    let timeout = worker.fast.header_read_timeout;
    let conn = http2::Builder::new(LocalExec)
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(MAX_HEAD).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let shutdown = worker.full.shutdown.clone();
    tokio::select! {
        biased;
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "HTTP/2 connection ended with an error");
            }
            return;
        }
        () = shutdown.cancelled() => {}
        () = spent.notified() => {}
        () = streams.idle_for(timeout) => {}
    }
    conn.as_mut().graceful_shutdown();
    // The GOAWAY ends with a PING a silent client never answers: once no stream has been
    // open for `header_read_timeout` after it, the connection is dropped.
    streams.idle_since.set(Instant::now());
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "HTTP/2 connection ended with an error");
            }
        }
        () = streams.idle_for(timeout) => {
            tracing::debug!(%peer, "HTTP/2 connection dropped: its client did not close it after the GOAWAY");
        }
    }
}

/// The request with the target the routing reads: origin-form inside a tunnel and for
/// the proxy's own `:authority` (reverse mode), absolute otherwise (forward mode).
fn in_target_form(
    proxy: &super::Proxy,
    mut req: Request<Incoming>,
    in_tunnel: bool,
) -> Result<Request<Incoming>, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest {
            reason: "CONNECT over HTTP/2 is not supported: open tunnels with an HTTP/1.1 CONNECT"
                .into(),
        });
    }
    let own = req
        .uri()
        .authority()
        .is_some_and(|a| proxy.is_own_authority(a.as_str()));
    if in_tunnel || own {
        let target = req.uri().path_and_query().cloned();
        *req.uri_mut() = target.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    Ok(req)
}

/// The streams of one connection with a response under way, and since when none has
/// been.
struct Streams {
    open: Cell<usize>,
    idle_since: Cell<Instant>,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            open: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
        }
    }
}

impl Streams {
    /// Returns once no stream has been open for `timeout`.
    async fn idle_for(&self, timeout: std::time::Duration) {
        loop {
            let due = self.idle_since.get() + timeout;
            tokio::time::sleep_until(due).await;
            if self.open.get() == 0 && self.idle_since.get() + timeout <= Instant::now() {
                return;
            }
            if self.open.get() > 0 {
                // Checked again a whole timeout after the last stream ends, at the latest.
                self.idle_since.set(Instant::now());
            }
        }
    }
}

/// One stream from its request to the end of its response body.
struct Open(Rc<Streams>);

impl Open {
    fn new(streams: &Rc<Streams>) -> Open {
        streams.open.set(streams.open.get() + 1);
        Open(Rc::clone(streams))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let streams = &self.0;
        streams.open.set(streams.open.get() - 1);
        streams.idle_since.set(Instant::now());
    }
}

pin_project! {
    /// A response body whose stream counts as open until the body is done with.
    struct Counted {
        #[pin]
        body: ProxyBody,
        _open: Open,
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
