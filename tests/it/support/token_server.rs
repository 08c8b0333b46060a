//! A scriptable OAuth2 token endpoint on loopback. Each request is recorded; the reply is
//! taken from a queue of scripted replies, or the default reply when the queue is empty.
//! Tokens are `tok-1`, `tok-2`, … and refresh tokens `ref-1`, `ref-2`, … (rotating).

use super::serve::{self, json_response};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the endpoint answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A token with this `expires_in` (None: field absent), and a rotated refresh token if set.
    Token {
        expires_in: Option<u64>,
        refresh: bool,
    },
    /// `{"error": code}` with this status.
    OAuthError { status: u16, code: &'static str },
    /// A bare status with a non-JSON body (and optional Retry-After seconds).
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Any body, verbatim, with status 200.
    Raw(&'static str),
    /// Wait this long, then answer with a token (to test single-flight and timeouts).
    Slow(Duration),
    /// Wait `delay`, then answer like [`Reply::Token`] (to keep requests in flight).
    SlowToken {
        delay: Duration,
        expires_in: u64,
        refresh: bool,
    },
}

impl Reply {
    /// A token living `expires_in` seconds, with a rotated refresh token if `refresh`.
    pub fn token(expires_in: u64, refresh: bool) -> Reply {
        Reply::Token {
            expires_in: Some(expires_in),
            refresh,
        }
    }

    /// A token without `expires_in` (long-lived) and without a refresh token.
    pub fn token_without_expiry() -> Reply {
        Reply::Token {
            expires_in: None,
            refresh: false,
        }
    }
}

/// One request as the endpoint received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Form fields of the body (or of the query when the body is empty).
    pub fn form(&self) -> Vec<(String, String)> {
        let source: &[u8] = if self.body.is_empty() {
            self.path_and_query
                .split_once('?')
                .map(|(_, q)| q.as_bytes())
                .unwrap_or_default()
        } else {
            &self.body
        };
        form_urlencoded::parse(source).into_owned().collect()
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    requests: Vec<Recorded>,
    issued: u64,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Clone)]
pub struct TokenServer {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    shutdown: CancellationToken,
}

impl TokenServer {
    /// Starts an endpoint whose default reply is a token living `expires_in` seconds.
    pub async fn start(default: Reply) -> TokenServer {
        let inner = Arc::new(Mutex::new(Inner {
            default: Some(default),
            ..Inner::default()
        }));
        let state = Arc::clone(&inner);
        let (addr, shutdown) = serve::spawn(move |req| handle(Arc::clone(&state), req)).await;
        TokenServer {
            addr,
            inner,
            shutdown,
        }
    }

    /// Queues replies used before the default one.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        self.inner.lock().unwrap().default = Some(reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The most requests the endpoint was answering at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.inner.lock().unwrap().max_in_flight
    }

    /// Requests being answered now (received, their reply not yet written).
    pub fn in_flight(&self) -> usize {
        self.inner.lock().unwrap().in_flight
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_count(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + super::WAIT;
        while self.count() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "token endpoint saw {} requests, expected {n}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until at least `n` requests have arrived, and returns request `n - 1`.
    pub async fn nth(&self, n: usize) -> Recorded {
        self.wait_count(n).await;
        self.requests()[n - 1].clone()
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

async fn handle(inner: Arc<Mutex<Inner>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let r = serve::receive(req).await;
    let _counted = InFlight::count(&inner);
    answer(&inner, r).await
}

/// Counts a request in flight until dropped (answered, or its client gone).
struct InFlight<'a>(&'a Mutex<Inner>);

impl<'a> InFlight<'a> {
    fn count(inner: &'a Mutex<Inner>) -> InFlight<'a> {
        let mut i = inner.lock().unwrap();
        i.in_flight += 1;
        i.max_in_flight = i.max_in_flight.max(i.in_flight);
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

/// The reply to request `r`, recorded first.
async fn answer(inner: &Arc<Mutex<Inner>>, r: serve::Received) -> Response<Full<Bytes>> {
    let reply = {
        let mut i = inner.lock().unwrap();
        i.requests.push(Recorded {
            method: r.method,
            path_and_query: r.target,
            headers: r.headers,
            body: r.body,
        });
        i.script
            .pop_front()
            .or_else(|| i.default.clone())
            .expect("a reply")
    };
    let token = |inner: &Arc<Mutex<Inner>>, expires_in: Option<u64>, refresh: bool| {
        let mut i = inner.lock().unwrap();
        i.issued += 1;
        let mut body = serde_json::json!({"access_token": format!("tok-{}", i.issued), "token_type": "bearer"});
        if let Some(e) = expires_in {
            body["expires_in"] = e.into();
        }
        if refresh {
            body["refresh_token"] = format!("ref-{}", i.issued).into();
        }
        respond(200, body.to_string(), None)
    };
    match reply {
        Reply::Token {
            expires_in,
            refresh,
        } => token(inner, expires_in, refresh),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            token(inner, Some(3600), false)
        }
        Reply::SlowToken {
            delay,
            expires_in,
            refresh,
        } => {
            tokio::time::sleep(delay).await;
            token(inner, Some(expires_in), refresh)
        }
        Reply::OAuthError { status, code } => {
            respond(status, serde_json::json!({"error": code}).to_string(), None)
        }
        Reply::Status {
            status,
            retry_after,
        } => respond(status, "<html>unavailable</html>".into(), retry_after),
        Reply::Raw(body) => respond(200, body.into(), None),
    }
}

fn respond(status: u16, body: String, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut r = json_response(status, body);
    if let Some(s) = retry_after {
        r.headers_mut()
            .insert("retry-after", s.to_string().parse().unwrap());
    }
    r
}
