//! The accept loop shared by every listener: HTTP/1.1 with keep-alive, a header read
//! timeout, upgrades (for `CONNECT` tunnels), and a graceful drain when the process's
//! cancellation token fires. [`serve`] spawns connections on a multi-thread runtime; the
//! proxy workers use `accept_loop` with their own connection handler
//! ([`crate::proxy::fast`]), which hands connections to `connection` when it must.

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long open connections may finish their requests after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `listener` until `shutdown`, calling `handle(request, peer)` for each request;
/// connections run as `Send` tasks.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
    handle: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    accept_loop(listener, &shutdown, |tracker, stream, peer| {
        tracker.spawn(connection(
            stream,
            peer,
            handle.clone(),
            header_read_timeout,
            shutdown.clone(),
        ));
    })
    .await
}

/// Accepts connections until `shutdown`, handing each to `spawn`; then waits (up to
/// [`SHUTDOWN_GRACE`]) for the tasks it spawned to finish.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shutdown: &CancellationToken,
    mut spawn: impl FnMut(&TaskTracker, TcpStream, SocketAddr),
) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        spawn(&tracker, stream, peer);
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

/// One client connection: serve requests until it closes, or drain it on shutdown.
pub(crate) async fn connection<I, H, F, B>(
    stream: I,
    peer: SocketAddr,
    handle: H,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + 'static,
    F: Future<Output = Response<B>> + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |req| {
        let response = handle(req, peer);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    // The connection first: one handed over by the fast path may already hold a request,
    // which hyper must read before a graceful shutdown can see it in flight.
    tokio::select! {
        biased;
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
