//! The echo upstream: `GET /bytes/N` streams N bytes; `POST /count` reads the body and
//! answers its length; anything else answers JSON with the method, the raw request target
//! and the headers it received. Every request is counted.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Chunk size of `/bytes/N` downloads.
const CHUNK: usize = 64 * 1024;

type EchoBody = Either<Full<Bytes>, Chunks>;

#[derive(Clone)]
pub struct Echo {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Echo {
    pub async fn start() -> Echo {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        // (Serves until the test ends: nothing stops it earlier.)
        let (addr, _) = super::serve::spawn(move |req| {
            h.fetch_add(1, Ordering::SeqCst);
            handle(req)
        })
        .await;
        Echo { addr, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn handle(req: Request<Incoming>) -> Response<EchoBody> {
    let path = req.uri().path().to_owned();
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let mut r = Response::new(Either::Right(Chunks { left: n }));
        r.headers_mut()
            .insert("content-type", "application/octet-stream".parse().unwrap());
        return r;
    }
    if path == "/count" {
        let mut body = req.into_body();
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map(|f| f.into_data().unwrap_or_default()) {
                total += data.len();
            } else {
                break;
            }
        }
        return json(serde_json::json!({"received": total}));
    }
    let r = super::serve::receive(req).await;
    json(serde_json::json!({
        "method": r.method,
        "target": r.target,
        "headers": r.headers,
        "body": String::from_utf8_lossy(&r.body),
    }))
}

fn json(v: serde_json::Value) -> Response<EchoBody> {
    super::serve::json_response(200, v.to_string()).map(Either::Left)
}

/// The values of header `name` (case-insensitive) in an echo answer, in order; panics when
/// `body` is not an echo answer.
pub fn echoed<'a>(body: &'a Value, name: &str) -> Vec<&'a str> {
    body["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("not an echo answer: {body}"))
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or_default())
        .collect()
}

/// The first Authorization header a body received, if it is an echo answer that has one.
pub fn echoed_authorization(body: &Value) -> Option<String> {
    body["headers"].as_array().and_then(|hs| {
        hs.iter()
            .find(|h| h[0] == "authorization")
            .map(|h| h[1].as_str().unwrap_or_default().to_owned())
    })
}

/// A body of `left` bytes of `x`, produced chunk by chunk (never held whole).
pub struct Chunks {
    left: usize,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(CHUNK);
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))))
    }
}
