//! The fast path's response framing rules on the hyper path's upstream connections.
//! hyper's own decoder accepts what the fast path refuses (a control byte in a chunk
//! extension, which it skips unread), so [`Checked`] watches the bytes hyper reads: each
//! response head is framed by the fast path's [`translate_response`], and a chunked body is
//! run through the same [`ChunkedScanner`]. Framing the scanner refuses fails hyper's next
//! read, so the body ends in an error: the app's connection is cut and the upstream
//! connection closed, as on the fast path. Bytes are only looked at, never changed.
//!
//! Which responses have no body depends on the request (HEAD): the watcher reads it from
//! the start of the request hyper writes next, as hyper sends one request at a time.

use crate::proxy::chunked::{ChunkedError, ChunkedScanner};
use crate::proxy::heads::MAX_HEAD;
use crate::proxy::response::{translate_response, Framing, Parsed};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An upstream connection whose responses are checked as the fast path would frame them.
pub struct Checked<T> {
    io: T,
    watch: Watch,
    /// The next write starts a request (whose method tells whether its response has a body).
    request_next: bool,
    /// The request being answered is a HEAD.
    is_head: bool,
    /// A refusal found in bytes not yet handed to hyper: its next read gets it.
    refused: Option<ChunkedError>,
    /// Where [`translate_response`] writes the head it translates (unused here).
    scratch: Vec<u8>,
}

/// Where the response bytes stand.
enum Watch {
    /// In a response head: its bytes so far.
    Head(Vec<u8>),
    Length(u64),
    Chunked(ChunkedScanner),
    /// Nothing more to check on this connection: a body until close, or a head the fast
    /// path would not take (hyper's own rules apply).
    Blind,
}

impl<T> Checked<T> {
    pub fn new(io: T) -> Checked<T> {
        Checked {
            io,
            watch: Watch::Head(Vec::new()),
            request_next: true,
            is_head: false,
            refused: None,
            scratch: Vec::new(),
        }
    }

    /// Follows `read`, the next bytes hyper reads. When a chunked body's framing is refused:
    /// the error, and how many bytes of `read` come before the chunk data or framing in
    /// question (they are fine).
    fn follow(&mut self, read: &[u8]) -> Result<(), (usize, ChunkedError)> {
        let mut owned;
        // What is left of `read`: always its end (a head's remainder is too).
        let mut input = read;
        while !input.is_empty() {
            match &mut self.watch {
                Watch::Blind => return Ok(()),
                Watch::Length(left) => {
                    let take = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    input = &input[take..];
                }
                Watch::Chunked(scanner) => match scanner.scan(input) {
                    Ok(n) => input = &input[n..],
                    Err(e) => return Err((read.len() - input.len(), e)),
                },
                Watch::Head(head) => {
                    head.extend_from_slice(input);
                    let (next, rest) = self.head();
                    self.watch = next;
                    owned = rest;
                    input = &owned;
                }
            }
            self.end_of_body();
        }
        self.end_of_body();
        Ok(())
    }

    /// What follows the head bytes gathered so far, and the bytes read past them.
    fn head(&mut self) -> (Watch, Vec<u8>) {
        let Watch::Head(head) = &mut self.watch else {
            return (Watch::Blind, Vec::new());
        };
        let mut head = std::mem::take(head);
        loop {
            match translate_response(&head, &mut self.scratch, self.is_head, false) {
                Ok(Parsed::Partial) if head.len() < MAX_HEAD => return (Watch::Head(head), vec![]),
                Ok(Parsed::Interim(len)) => drop(head.drain(..len)),
                Ok(Parsed::Final(response)) => {
                    let rest = head.split_off(response.head_len);
                    let next = match response.framing {
                        Framing::Empty => Watch::Length(0),
                        Framing::Length(n) => Watch::Length(n),
                        Framing::Chunked => Watch::Chunked(ChunkedScanner::new()),
                        Framing::UntilClose => Watch::Blind,
                    };
                    return (next, rest);
                }
                // Above the fast path's head limit, or refused by it: hyper answers for it
                // (or the pool refuses it), and the connection is not checked any more.
                Ok(Parsed::Partial) | Err(_) => return (Watch::Blind, vec![]),
            }
        }
    }

    /// After a whole body, the next bytes are the next response's head, to the next request.
    fn end_of_body(&mut self) {
        let done = match &self.watch {
            Watch::Length(left) => *left == 0,
            Watch::Chunked(scanner) => scanner.is_done(),
            Watch::Head(_) | Watch::Blind => false,
        };
        if done {
            self.watch = Watch::Head(Vec::new());
            self.request_next = true;
        }
    }

    /// Notes the method of a request that starts with `bytes` (the first ones written).
    fn starts_request(&mut self, bytes: &[u8], written: &Poll<io::Result<usize>>) {
        if self.request_next && !bytes.is_empty() {
            self.is_head = bytes.starts_with(b"HEAD ");
            self.request_next = !matches!(written, Poll::Ready(Ok(n)) if *n > 0);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Checked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(refused) = this.refused.take() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, refused)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        match this.follow(&buf.filled()[before..]) {
            Ok(()) => Poll::Ready(Ok(())),
            Err((0, refused)) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, refused)))
            }
            // What came before the bytes in question goes to hyper first (a head it
            // answers with, as the fast path does); the refusal comes with its next read.
            Err((fine, refused)) => {
                buf.set_filled(before + fine);
                this.refused = Some(refused);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Checked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.starts_request(buf, &written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        this.starts_request(first, &written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follows `parts` of a response to a request that starts with `request`: where it is
    /// refused (the fine bytes of that part), if it is.
    fn follow(request: &[u8], parts: &[&[u8]]) -> Option<usize> {
        let mut checked = Checked::new(());
        checked.starts_request(request, &Poll::Ready(Ok(request.len())));
        parts
            .iter()
            .find_map(|p| checked.follow(p).err().map(|(fine, _)| fine))
    }

    #[test]
    fn a_control_byte_in_a_chunk_extension_is_refused_after_the_head() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let whole = [&head[..], b"5;a\x01b\r\nhello\r\n0\r\n\r\n"].concat();
        assert_eq!(follow(b"GET / HTTP/1.1\r\n", &[&whole]), Some(head.len()));
        // In pieces: the refusal is in the second, from its start.
        let (one, two) = whole.split_at(head.len() + 3);
        assert_eq!(follow(b"GET / HTTP/1.1\r\n", &[one, two]), Some(0));
    }

    #[test]
    fn responses_follow_one_another_with_their_own_framing() {
        let get = b"GET / HTTP/1.1\r\n";
        let fine: [&[u8]; 4] = [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ok\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n5;\x01\r\n",
        ];
        for response in fine {
            assert_eq!(follow(get, &[response]), None);
        }
        // A HEAD's response has no body, whatever it says: the next bytes are a head.
        let mut checked = Checked::new(());
        for (request, response) in [
            (
                &b"HEAD / HTTP/1.1\r\n"[..],
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            ),
            (
                get,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;\x01\r\n",
            ),
        ] {
            checked.starts_request(request, &Poll::Ready(Ok(request.len())));
            let refused = checked.follow(response).err().map(|(fine, _)| fine);
            let expected = request.starts_with(b"GET").then(|| response.len() - 5);
            assert_eq!(refused, expected, "{}", String::from_utf8_lossy(request));
        }
    }
}
