//! The echo upstream: `GET /bytes/N` streams N bytes; `POST /count` reads the body and
//! answers its length; anything else answers JSON with the method, the raw request target
//! and the headers it received. Every request is counted.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Chunk size of `/bytes/N` downloads.
const CHUNK: usize = 64 * 1024;

type EchoBody = Either<Full<Bytes>, Chunks>;

#[derive(Clone)]
pub struct Echo {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let h = Arc::clone(&hits);
        tokio::spawn(tokenwarden::server::serve(
            listener,
            Duration::from_secs(5),
            shutdown.clone(),
            move |req, _| {
                h.fetch_add(1, Ordering::SeqCst);
                handle(req)
            },
        ));
        Echo {
            addr,
            hits,
            shutdown,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
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
    let method = req.method().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    json(serde_json::json!({
        "method": method,
        "target": target,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

fn json(v: serde_json::Value) -> Response<EchoBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(v.to_string()))));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
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
