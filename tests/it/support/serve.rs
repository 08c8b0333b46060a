//! What the kit's loopback HTTP servers share: starting on `127.0.0.1:0`, reading a request
//! whole, and answering JSON.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A request read whole: method, raw request target, headers in order, body bytes.
pub struct Received {
    pub method: String,
    /// The raw request target (`/path?query`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Reads `req` whole (a body that fails to read counts as empty).
pub async fn receive(req: Request<Incoming>) -> Received {
    let (parts, body) = req.into_parts();
    Received {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default(),
    }
}

/// A `Content-Type: application/json` response with `status` and `body`.
pub fn json_response(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// Serves `handle` on a fresh loopback port (tokenwarden's own server loop) → its address
/// and the token that stops it.
pub async fn spawn<H, F, B>(handle: H) -> (SocketAddr, CancellationToken)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(tokenwarden::server::serve(
        listener,
        Duration::from_secs(5),
        shutdown.clone(),
        move |req, _| handle(req),
    ));
    (addr, shutdown)
}
