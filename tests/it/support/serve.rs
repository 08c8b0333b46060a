//! What the kit's loopback HTTP servers share: starting on `127.0.0.1:0`, reading a request
//! whole, answering JSON, and the one "request as received" type ([`Received`]) of every
//! test server (echo, token, TLS capture, the scripted raw upstream).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
        ..Received::default()
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

/// One request as a test server received it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    /// The raw request target (`/path?query`, or absolute-form as sent).
    pub target: String,
    /// `HTTP/1.1`, as sent (empty when a server library parsed the request).
    pub version: String,
    /// Header names as sent (a server library lower-cases them), values, in order.
    pub headers: Vec<(String, String)>,
    /// The body: decoded by a server library, or as framed on the wire by the raw one.
    pub body: Vec<u8>,
    /// Which accepted connection (0, 1, …) it came on (raw upstream only).
    pub connection: usize,
    /// The TLS server name the client sent (TLS capture only; None for an IP address).
    pub sni: Option<String>,
}

impl Received {
    /// Parses a raw head (request line and header lines, no final empty line).
    pub fn from_head(head: &str, body: Vec<u8>, connection: usize) -> Received {
        let mut lines = head.lines();
        let mut line = lines.next().unwrap_or("").splitn(3, ' ');
        let (method, target, version) = (
            line.next().unwrap_or("").to_owned(),
            line.next().unwrap_or("").to_owned(),
            line.next().unwrap_or("").to_owned(),
        );
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Received {
            method,
            target,
            version,
            headers,
            body,
            connection,
            sni: None,
        }
    }

    /// The request line (`GET /a HTTP/1.1`).
    pub fn line(&self) -> String {
        format!("{} {} {}", self.method, self.target, self.version)
    }

    /// The values of header `name` (case-insensitive), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of header `name`; panics when it is repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "header {name} sent {} times", all.len());
        all.first().copied()
    }

    /// The request as text: line, headers as sent, empty line, body.
    pub fn text(&self) -> String {
        let mut text = self.line();
        for (n, v) in &self.headers {
            text.push_str(&format!("\r\n{n}: {v}"));
        }
        text.push_str("\r\n\r\n");
        text.push_str(&String::from_utf8_lossy(&self.body));
        text
    }
}
