//! Streaming uploads: a request body generated chunk by chunk (never held whole), sent
//! with hyper's HTTP/1.1 client (chunked transfer encoding).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Chunk size of generated bodies.
const CHUNK: usize = 64 * 1024;

/// A body of `left` bytes, produced a chunk at a time.
pub struct Generated {
    left: usize,
    chunk: Bytes,
}

impl Generated {
    pub fn new(len: usize) -> Generated {
        Generated {
            left: len,
            chunk: Bytes::from(vec![b'u'; CHUNK]),
        }
    }
}

impl hyper::body::Body for Generated {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK);
        self.left -= n;
        // A slice of the shared chunk: a reference count, not a copy.
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

/// POSTs a generated body of `len` bytes to `http://{addr}{path}` → (status, response body).
pub async fn post_generated(addr: SocketAddr, path: &str, len: usize) -> (u16, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/octet-stream")
        .body(Generated::new(len))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}
