//! Byte plumbing for the fast path: a reusable read buffer ([`Buf`]), a vectored
//! `write_all` for a head and a body in one system call, and [`Rewind`], which replays
//! bytes already read when a connection moves to hyper.

use bytes::{Buf as _, Bytes};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// What an app connection is: the accepted TCP stream, or the TLS stream inside an
/// intercepted tunnel ([`crate::proxy::tunnel`]).
pub trait AppIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AppIo for T {}

/// Read at least this much per read call (the buffer is compacted or grown to allow it).
const MIN_READ: usize = 2048;

/// A read buffer reused across messages: the bytes read and not yet consumed. Reads go
/// into spare capacity, so memory the kernel never wrote to is never touched.
pub struct Buf {
    data: Vec<u8>,
    start: usize,
}

impl Buf {
    pub fn with_capacity(capacity: usize) -> Buf {
        Buf {
            data: Vec::with_capacity(capacity),
            start: 0,
        }
    }

    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Replaces an empty buffer whose capacity grew beyond `above` with one of `capacity`.
    pub fn shrink(&mut self, above: usize, capacity: usize) {
        if self.is_empty() && self.data.capacity() > above {
            *self = Buf::with_capacity(capacity);
        }
    }

    /// Drops the first `n` pending bytes.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.data.len());
        if self.start >= self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    /// Reads once from `io` (after making room for at least `MIN_READ` bytes); 0 is EOF.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> io::Result<usize> {
        if self.data.capacity() - self.data.len() < MIN_READ {
            if self.start > 0 {
                self.data.drain(..self.start);
                self.start = 0;
            }
            self.data.reserve(MIN_READ);
        }
        io.read_buf(&mut self.data).await
    }

    /// The pending bytes, for [`Rewind`].
    pub fn into_pending(mut self) -> Bytes {
        self.data.drain(..self.start);
        Bytes::from(self.data)
    }
}

/// Writes `head` then `body` with as few system calls as the kernel allows (one, usually).
pub async fn write_all2<W: AsyncWrite + Unpin>(
    io: &mut W,
    mut head: &[u8],
    mut body: &[u8],
) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let n = if head.is_empty() {
            io.write(body).await?
        } else if body.is_empty() {
            io.write(head).await?
        } else {
            io.write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    io.flush().await
}

/// An I/O object that first yields `prefix`, then reads from `inner`.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Rewind<T> {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rewind_replays_the_prefix_then_reads_on() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), b);
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn buf_reads_consumes_and_hands_over_what_is_left() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"GET / HTTP/1.1\r\n\r\nrest").await.unwrap();
        let mut buf = Buf::with_capacity(8);
        let n = buf.fill(&mut b).await.unwrap();
        assert_eq!(&buf.pending()[..n], b"GET / HTTP/1.1\r\n\r\nrest");
        buf.consume(18);
        assert_eq!(buf.pending(), b"rest");
        assert_eq!(buf.into_pending(), Bytes::from_static(b"rest"));
    }

    #[tokio::test]
    async fn write_all2_writes_both_parts_in_order() {
        let (mut a, mut b) = tokio::io::duplex(4); // forces partial writes
        let writer = tokio::spawn(async move {
            write_all2(&mut a, b"head:", b"body").await.unwrap();
        });
        let mut got = vec![0; 9];
        b.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, b"head:body");
    }
}
