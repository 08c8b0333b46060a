//! The memory partial request heads may hold, all workers together
//! (`proxy.max_buffered_head_bytes`; this file imports neither path): a [`HeadBudget`]
//! shared by the workers, charged by the fast path through a [`HeadCharge`] only for a
//! head that spans more than one read (one relaxed atomic add per further read), and by
//! hyper through [`ChargedIo`] for the bytes it reads while no request is in flight. A
//! connection whose head would pass the budget is closed — the fast path answers 431
//! first ([`HEADS_FULL`]) — so older partial heads keep their place and many slow heads
//! cannot hold more than the budget until `proxy.header_read_timeout`.

use std::io::{self, IoSlice};

/// Most headers in a head the fast path parses (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Largest head the fast path reads; a larger request head goes to the hyper path (which
/// takes heads up to about 400 KiB), a larger response head is a 502 on both paths.
pub const MAX_HEAD: usize = 64 * 1024;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bytes of partial request heads buffered by all workers together, bounded by
/// `proxy.max_buffered_head_bytes`. A head read in one go costs nothing; one that spans
/// several reads is charged (one relaxed atomic add per read) through a [`HeadCharge`].
pub struct HeadBudget {
    held: AtomicUsize,
    max: usize,
}

impl HeadBudget {
    pub fn new(max: usize) -> HeadBudget {
        HeadBudget {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// The bytes currently charged (for tests).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `n` more bytes, or none (false) when that would pass the budget.
    fn take(&self, n: usize) -> bool {
        let before = self.held.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.max {
            self.held.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            self.held.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// What one connection's partial head holds of the [`HeadBudget`]; given back when the
/// head is whole ([`HeadCharge::clear`]) or the charge is dropped (the connection closed).
pub struct HeadCharge<'b> {
    budget: &'b HeadBudget,
    held: usize,
}

impl<'b> HeadCharge<'b> {
    pub fn new(budget: &'b HeadBudget) -> HeadCharge<'b> {
        HeadCharge { budget, held: 0 }
    }

    /// Charges `n` more bytes; false (nothing charged) when the budget is spent: the
    /// caller closes the connection.
    pub fn grow(&mut self, n: usize) -> bool {
        if !self.budget.take(n) {
            return false;
        }
        self.held += n;
        true
    }

    /// Charges up to a head of `len` bytes in all (a head that spans several reads).
    pub fn grow_to(&mut self, len: usize) -> bool {
        self.grow(len.saturating_sub(self.held))
    }

    pub fn clear(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.held));
    }
}

impl Drop for HeadCharge<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// An app connection served by hyper, whose partial heads are charged to the
/// [`HeadBudget`]: every byte read while no request is in flight (hyper is reading a head)
/// is charged, and given back once hyper has parsed the head ([`HeadGate::begin`]) or the
/// connection closes. A read that would pass the budget fails, so hyper closes the
/// connection.
pub struct ChargedIo<T> {
    inner: T,
    gate: HeadGate,
}

/// The hyper service's side of a [`ChargedIo`]: marks a request in flight.
#[derive(Clone)]
pub struct HeadGate {
    budget: Arc<HeadBudget>,
    state: Arc<GateState>,
}

#[derive(Default)]
struct GateState {
    in_flight: AtomicBool,
    held: AtomicUsize,
}

impl<T> ChargedIo<T> {
    pub fn new(inner: T, budget: &Arc<HeadBudget>) -> (ChargedIo<T>, HeadGate) {
        let gate = HeadGate {
            budget: Arc::clone(budget),
            state: Arc::default(),
        };
        let io = ChargedIo {
            inner,
            gate: gate.clone(),
        };
        (io, gate)
    }
}

impl HeadGate {
    /// A head was parsed: what it held is given back, and reads are not charged until
    /// [`HeadGate::end`].
    pub fn begin(&self) {
        self.state.in_flight.store(true, Ordering::Relaxed);
        self.budget
            .give_back(self.state.held.swap(0, Ordering::Relaxed));
    }

    /// The response is under way: what is read next is the next head.
    pub fn end(&self) {
        self.state.in_flight.store(false, Ordering::Relaxed);
    }

    /// Charges `n` bytes read, unless a request is in flight; false past the budget.
    fn charge(&self, n: usize) -> bool {
        if n == 0 || self.state.in_flight.load(Ordering::Relaxed) {
            return true;
        }
        if !self.budget.take(n) {
            return false;
        }
        self.state.held.fetch_add(n, Ordering::Relaxed);
        true
    }
}

impl<T> Drop for ChargedIo<T> {
    fn drop(&mut self) {
        let held = self.gate.state.held.swap(0, Ordering::Relaxed);
        self.gate.budget.give_back(held);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ChargedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.gate.charge(buf.filled().len() - before) {
            tracing::debug!(
                "a partial request head passed proxy.max_buffered_head_bytes: connection closed"
            );
            return Poll::Ready(Err(io::Error::other(HEADS_FULL_REASON)));
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ChargedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Why a connection was closed for the [`HeadBudget`].
pub const HEADS_FULL_REASON: &str =
    "the partial request heads of all connections passed proxy.max_buffered_head_bytes";

/// What the fast path answers before closing a connection whose head would pass the
/// [`HeadBudget`] (as hyper answers a head too large for it).
pub const HEADS_FULL: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hyper_reads_are_charged_between_requests_and_given_back() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let budget = Arc::new(HeadBudget::new(100));
        let (mut app, proxy_side) = tokio::io::duplex(1024);
        let (mut io, gate) = ChargedIo::new(proxy_side, &budget);
        let mut buf = [0u8; 256];
        app.write_all(&[b'h'; 60]).await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 60);
        assert_eq!(budget.held(), 60, "a head being read is charged");
        gate.begin();
        assert_eq!(budget.held(), 0, "given back once parsed");
        app.write_all(&[b'b'; 200]).await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 200);
        assert_eq!(budget.held(), 0, "a body in flight is not");
        gate.end();
        app.write_all(&[b'h'; 90]).await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 90);
        app.write_all(&[b'h'; 20]).await.unwrap();
        assert!(io.read(&mut buf).await.is_err(), "past the budget");
        assert_eq!(budget.held(), 90);
        drop(io);
        assert_eq!(budget.held(), 0, "given back when the connection closes");
    }

    #[test]
    fn head_charges_stay_within_the_budget_and_are_given_back() {
        let budget = HeadBudget::new(100);
        let mut a = HeadCharge::new(&budget);
        let mut b = HeadCharge::new(&budget);
        assert!(a.grow_to(60));
        assert!(a.grow_to(70), "only the 10 new bytes are charged");
        assert!(!b.grow(31), "beyond the budget");
        assert_eq!(budget.held(), 70);
        assert!(b.grow(30));
        a.clear();
        assert_eq!(budget.held(), 30);
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
