//! Passthrough `CONNECT` tunnels (`proxy.connect_passthrough`): the bytes of both sides
//! copied untouched. [`open`] leaves the tunnel in the connection's [`Slot`], so — like an
//! intercepted tunnel — it runs in the app connection's own task once hyper hands the
//! connection over, and keeps that connection's `proxy.max_connections` permit until it
//! closes. A tunnel that carries no byte either way (nothing read, nothing written) for
//! `proxy.tunnel_idle_timeout` is closed, and so is every tunnel when shutdown starts (a
//! tunnel cannot be drained gracefully: tokenwarden does not see its messages).

use crate::proxy::tunnel::{Slot, Tunnel};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Idleness is checked this many times per `tunnel_idle_timeout`: a tunnel closes after
/// that many checks in a row saw no byte, so never before the timeout and at most a
/// quarter of it later.
const CHECKS_PER_TIMEOUT: u32 = 4;

/// Leaves in `slot` the tunnel for the `CONNECT` request `req`, to the `upstream` already
/// connected: once hyper hands over the connection, the bytes are copied both ways until
/// either side closes, nothing moves for `idle_timeout`, or `shutdown`.
pub fn open(
    req: Request<Incoming>,
    upstream: TcpStream,
    idle_timeout: Duration,
    shutdown: CancellationToken,
    slot: &Slot,
) {
    *slot.borrow_mut() = Some(Tunnel::Blind(Box::pin(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
        };
        let moved = Rc::new(Cell::new(false));
        let mut client = Watched::new(TokioIo::new(upgraded), &moved);
        let mut upstream = Watched::new(upstream, &moved);
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::select! {
            _ = copy => {}
            _ = shutdown.cancelled() => {}
            () = idle(&moved, idle_timeout) => {
                tracing::debug!(?idle_timeout, "passthrough tunnel closed: idle for proxy.tunnel_idle_timeout");
            }
        }
    })));
}

/// Returns once `moved` stayed unset for [`CHECKS_PER_TIMEOUT`] checks in a row, one
/// every `timeout / CHECKS_PER_TIMEOUT` (so after at least `timeout` without a byte);
/// each check clears it.
async fn idle(moved: &Cell<bool>, timeout: Duration) {
    let every = timeout / CHECKS_PER_TIMEOUT;
    let mut checks = tokio::time::interval_at(Instant::now() + every, every);
    // A late check must not be followed by a burst of checks that saw nothing.
    checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut quiet = 0;
    while quiet < CHECKS_PER_TIMEOUT {
        checks.tick().await;
        quiet = if moved.replace(false) { 0 } else { quiet + 1 };
    }
}

pin_project! {
    /// A stream that sets a shared flag whenever a byte is read from or written to it.
    struct Watched<S> {
        #[pin]
        inner: S,
        moved: Rc<Cell<bool>>,
    }
}

impl<S> Watched<S> {
    fn new(inner: S, moved: &Rc<Cell<bool>>) -> Watched<S> {
        Watched {
            inner,
            moved: Rc::clone(moved),
        }
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.moved.set(true);
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.moved.set(true);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_returns_after_the_timeout_without_bytes_and_not_while_they_move() {
        let timeout = Duration::from_secs(8);
        let moved = Cell::new(false);
        let started = Instant::now();
        idle(&moved, timeout).await;
        let quiet = started.elapsed();
        assert!(
            quiet >= timeout && quiet <= timeout + timeout / 4,
            "{quiet:?}"
        );
        // A byte every 3 s keeps it waiting; then 8 s of nothing ends it.
        let moved = Rc::new(Cell::new(false));
        let mover = Rc::clone(&moved);
        let started = Instant::now();
        let waited = async {
            idle(&moved, timeout).await;
            started.elapsed()
        };
        let traffic = async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                mover.set(true);
            }
        };
        let (waited, ()) = tokio::join!(waited, traffic);
        assert!(waited >= Duration::from_secs(38), "{waited:?}");
        assert!(waited <= Duration::from_secs(30 + 8 + 2), "{waited:?}");
    }
}
