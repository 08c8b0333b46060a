//! Every way the proxy refuses or fails a request, and the one function that maps each
//! to an HTTP status and a JSON body with a stable `error` code, rendered by both paths:
//! as a hyper response ([`ProxyError::into_response`]) or as bytes ([`write_error`]).
//! Bodies never hold a token, a secret or the app's request data. It imports neither
//! path: the response's body is a plain [`Full`], which the hyper path wraps into its own
//! body type. Upstream faults are typed ([`UpstreamFault`]): `/metrics` counts their kind.

use super::choice::Misdirection;
use crate::instrument::UpstreamError;
use crate::token::State;
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

#[derive(Debug, Clone, PartialEq)]
pub enum ProxyError {
    /// Reverse mode: no connection has this key.
    UnknownConnection { key: String },
    /// The connection holds no usable token.
    NoToken {
        connection: String,
        /// As the status page reports it (never `Static` or `PerUser`: a static credential
        /// has no token to lack, a per-user connection reports its user's grant's state;
        /// `Ready` only in the instant its token expired).
        state: State,
        /// The route that (re)authorizes it, for authorization-code connections.
        authorize: Option<String>,
        /// A token was being fetched when the request was refused (it may wait for it).
        fetching: bool,
        /// The end user of a per-user connection the request named.
        subject: Option<String>,
    },
    /// Forward mode: not a configured host, or a `CONNECT` that is not allowed.
    Forbidden { reason: String },
    /// The request already passed through this proxy, or targets the proxy itself.
    Loop,
    /// Its connection could not be chosen by `tokenwarden-connection` ([`Misdirection`]).
    Misdirected(Misdirection),
    /// A malformed request target (e.g. userinfo in the authority).
    BadRequest { reason: String },
    /// The request's body has a transfer coding other than chunked, which the proxy does
    /// not implement (RFC 9112 §6.1): its body cannot be forwarded as the app meant it.
    TransferCoding,
    /// The exchange with the connection's upstream failed: 504 when it did not answer in
    /// time, 502 otherwise (DNS, refused, TLS, the SSRF guard, closed unanswered, a
    /// malformed response head). For a `CONNECT` tunnel, `connection` is its `host:port`.
    Upstream {
        connection: String,
        fault: UpstreamFault,
    },
    /// A gRPC request, and the connection's upstream speaks HTTP/1.1 only: gRPC is never
    /// downgraded.
    GrpcNeedsHttp2 { connection: String },
    /// Not an error: the app's own token request to a connection's token endpoint,
    /// answered by tokenwarden (`stub_token_endpoint`, [`super::placeholder`]) with `body`.
    StubToken {
        connection: String,
        body: serde_json::Value,
    },
}

/// Why an exchange with an upstream failed, as both paths produce it (pingora's typed
/// error is the model): `/metrics` counts its [`kind`](UpstreamFault::kind), the app's
/// 502 or 504 shows its [`message`](UpstreamFault::message). Details beyond that (the
/// malformed byte, the OS error of a reset) are logged at debug where they happen.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamFault {
    pub kind: UpstreamError,
    /// For `Connect` and `Tls`: the innermost message of the dial error (a host, a port,
    /// an OS or TLS error; never a secret). Empty for the kinds with a fixed message.
    cause: String,
}

impl UpstreamFault {
    /// No response head within `proxy.response_timeout` (or a `CONNECT`'s connect timeout).
    pub fn timeout() -> UpstreamFault {
        UpstreamFault::fixed(UpstreamError::Timeout)
    }

    /// Closed or reset before any byte of a response.
    pub fn closed() -> UpstreamFault {
        UpstreamFault::fixed(UpstreamError::Closed)
    }

    /// A response head that is malformed or ambiguous.
    pub fn malformed() -> UpstreamFault {
        UpstreamFault::fixed(UpstreamError::Malformed)
    }

    /// A connection that could not be opened: its kind (`connect` or `tls`) and cause.
    pub fn dial(kind: UpstreamError, error: &(dyn std::error::Error + 'static)) -> UpstreamFault {
        let mut cause = error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        UpstreamFault {
            kind,
            cause: cause.to_string(),
        }
    }

    fn fixed(kind: UpstreamError) -> UpstreamFault {
        UpstreamFault {
            kind,
            cause: String::new(),
        }
    }

    /// The `message` of the 502 (the same on both paths).
    pub fn message(&self) -> &str {
        match self.kind {
            UpstreamError::Closed => CLOSED_UNANSWERED,
            UpstreamError::Malformed => MALFORMED_RESPONSE,
            UpstreamError::Timeout => "the upstream did not answer in time",
            UpstreamError::Connect | UpstreamError::Tls => &self.cause,
        }
    }

    /// The failed request's error.
    pub fn on(self, connection: &str) -> ProxyError {
        ProxyError::Upstream {
            connection: connection.to_owned(),
            fault: self,
        }
    }
}

impl ProxyError {
    /// The connection a routed request failed on (no token, upstream unreachable or timed
    /// out); None for a refusal before any connection was chosen.
    pub fn connection(&self) -> Option<&str> {
        match self {
            ProxyError::NoToken { connection, .. }
            | ProxyError::Upstream { connection, .. }
            | ProxyError::GrpcNeedsHttp2 { connection } => Some(connection),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UnknownConnection { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoToken { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::Loop => StatusCode::LOOP_DETECTED,
            ProxyError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Upstream { fault, .. } => match fault.kind {
                UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
            ProxyError::GrpcNeedsHttp2 { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::StubToken { .. } => StatusCode::OK,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            ProxyError::UnknownConnection { key } => {
                json!({"error": "unknown_connection", "connection": key,
                "message": "no connection has this key; the path must start with /{key}/"})
            }
            ProxyError::NoToken {
                connection,
                state,
                authorize,
                subject,
                ..
            } => {
                let mut body = json!({"error": "no_token", "connection": connection,
                "state": state.as_str()});
                if let Some(subject) = subject {
                    body["subject"] = json!(subject);
                }
                if let Some(route) = authorize {
                    body["authorize"] = json!(route);
                    body["message"] = json!(format!(
                        "authorize the connection: GET {route} on the admin listener"
                    ));
                }
                body
            }
            ProxyError::Forbidden { reason } => json!({"error": "forbidden", "message": reason}),
            ProxyError::Loop => json!({"error": "loop_detected",
                "message": "the request already passed through this proxy or targets it"}),
            ProxyError::Misdirected(m) => m.body(),
            ProxyError::BadRequest { reason } => json!({"error": "bad_request", "message": reason}),
            ProxyError::TransferCoding => json!({"error": "not_implemented",
                "message": "a transfer coding other than chunked; tokenwarden implements only chunked"}),
            ProxyError::Upstream { connection, fault } => match fault.kind {
                UpstreamError::Timeout => {
                    json!({"error": "upstream_timeout", "connection": connection})
                }
                _ => json!({"error": "upstream_unreachable",
                "connection": connection, "message": fault.message()}),
            },
            ProxyError::GrpcNeedsHttp2 { connection } => json!({"error": "upstream_http1_only",
                "connection": connection,
                "message": "a gRPC request, and the upstream speaks HTTP/1.1 only (gRPC needs HTTP/2; set upstream_http2: auto or always on an upstream that offers it)"}),
            ProxyError::StubToken { body, .. } => body.clone(),
        }
    }

    /// Its gRPC status code: the one gRPC's "HTTP to gRPC status code mapping" gives its
    /// HTTP status, except a gRPC request refused for an
    /// HTTP/1.1 upstream, which is `UNIMPLEMENTED` (retrying cannot help).
    pub fn grpc_code(&self) -> u8 {
        const UNKNOWN: u8 = 2;
        const PERMISSION_DENIED: u8 = 7;
        const INTERNAL: u8 = 13;
        const UNIMPLEMENTED: u8 = 12;
        const UNAVAILABLE: u8 = 14;
        match self {
            ProxyError::GrpcNeedsHttp2 { .. } => UNIMPLEMENTED,
            _ => match self.status().as_u16() {
                400 => INTERNAL,
                403 => PERMISSION_DENIED,
                404 => UNIMPLEMENTED,
                429 | 502..=504 => UNAVAILABLE,
                _ => UNKNOWN,
            },
        }
    }

    /// The answer to a gRPC request: "trailers-only" (HTTP 200, `content-type:
    /// application/grpc`, `grpc-status` and `grpc-message` in the head, no body), which a
    /// gRPC client reads as that status; the `error` code and message of
    /// [`ProxyError::body`] in `grpc-message`.
    pub fn into_grpc_response(self) -> Response<Full<Bytes>> {
        let body = self.body();
        let code = body["error"].as_str().unwrap_or("error");
        let message = match body["message"].as_str() {
            Some(message) => format!("tokenwarden: {code}: {message}"),
            None => format!("tokenwarden: {code}"),
        };
        let mut r = Response::new(Full::new(Bytes::new()));
        let headers = r.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            header::HeaderValue::from(u16::from(self.grpc_code())),
        );
        if let Ok(value) = header::HeaderValue::from_str(&grpc_percent_encode(&message)) {
            headers.insert("grpc-message", value);
        }
        r
    }

    /// `Retry-After` seconds: on every `no_token` 503 — soon while a token is on its way,
    /// later when a person must act first.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::NoToken { state, .. } => Some(match state {
                State::Pending | State::Expired | State::Ready => RETRY_AFTER_REFRESHING,
                State::Failed
                | State::NeedsAuthorization
                | State::NeedsReauthorization
                | State::Static
                | State::PerUser => RETRY_AFTER_NEEDS_ACTION,
            }),
            _ => None,
        }
    }

    /// The app's connection ends after this answer: the request's body was not read, and
    /// its framing is not one the proxy can follow to the next request.
    pub fn closes(&self) -> bool {
        matches!(self, ProxyError::TransferCoding)
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = json_response(self.status(), &self.body());
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        if self.closes() {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// `Retry-After` of a `no_token` 503 while the connection is getting a token (seconds).
pub const RETRY_AFTER_REFRESHING: u64 = 2;
/// `Retry-After` of a `no_token` 503 when a person must act first (authorize, fix the
/// credentials, then `…/retry`); also the refresher's longest backoff without a token.
pub const RETRY_AFTER_NEEDS_ACTION: u64 = 30;

/// The `message` of the 502 for an upstream that closed (or reset) the connection before
/// any byte of a response — the same on both paths (details are logged at debug).
pub const CLOSED_UNANSWERED: &str = "the upstream closed the connection without answering";
/// The `message` of the 502 for a response head that is malformed or ambiguous (e.g.
/// conflicting `Content-Length` values) — the same on both paths.
pub const MALFORMED_RESPONSE: &str = "the upstream sent a malformed or ambiguous response head";

/// The headers of every response the proxy writes itself (besides its length).
pub const OWN_HEADERS: [(header::HeaderName, &str); 2] = [
    (header::CONTENT_TYPE, "application/json"),
    (header::CACHE_CONTROL, "no-store"),
];

/// A small JSON response from the proxy itself.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    for (name, value) in OWN_HEADERS {
        r.headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    r
}

/// The same response as bytes, for the fast path: [`ProxyError::into_response`]'s
/// status, headers and JSON, with its length (and `connection: close` when `close`, or
/// when the error [closes](ProxyError::closes) it).
pub fn write_error(out: &mut Vec<u8>, error: &ProxyError, is_head: bool, close: bool) {
    let close = close || error.closes();
    let status = error.status();
    let body = error.body().to_string();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &OWN_HEADERS {
        write_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    write_header(out, b"content-length", body.len().to_string().as_bytes());
    if let Some(seconds) = error.retry_after() {
        write_header(out, b"retry-after", seconds.to_string().as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !is_head {
        out.extend_from_slice(body.as_bytes());
    }
}

/// `grpc-message`'s encoding: bytes outside printable ASCII, and `%`, percent-encoded.
fn grpc_percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: ProxyError, status: u16, code: &str) {
        assert_eq!(e.status().as_u16(), status);
        assert_eq!(e.body()["error"], code);
        let r = e.into_response();
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.headers()["content-type"], "application/json");
    }

    #[test]
    fn unknown_connection_is_404() {
        check(
            ProxyError::UnknownConnection { key: "x".into() },
            404,
            "unknown_connection",
        );
    }

    #[test]
    fn no_token_is_503_and_names_the_authorize_route() {
        let e = ProxyError::NoToken {
            connection: "c".into(),
            state: State::NeedsReauthorization,
            authorize: Some("/api/v1/connection/c/authorize".into()),
            fetching: false,
            subject: None,
        };
        assert_eq!(e.body()["authorize"], "/api/v1/connection/c/authorize");
        assert_eq!(e.body().get("subject"), None);
        assert_eq!(e.body()["state"], "needs_reauthorization");
        assert_eq!(e.retry_after(), Some(RETRY_AFTER_NEEDS_ACTION));
        let r = e.clone().into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "30");
        let mut bytes = Vec::new();
        write_error(&mut bytes, &e, false, false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\r\nretry-after: 30\r\n"), "{text}");
        check(e, 503, "no_token");
    }

    #[test]
    fn no_token_while_one_is_on_its_way_says_retry_soon() {
        let e = ProxyError::NoToken {
            connection: "c".into(),
            state: State::Pending,
            authorize: None,
            fetching: true,
            subject: Some("alice".into()),
        };
        assert_eq!(e.body()["subject"], "alice");
        assert_eq!(e.retry_after(), Some(RETRY_AFTER_REFRESHING));
        assert_eq!(e.body().get("fetching"), None, "internal, not in the body");
    }

    #[test]
    fn forbidden_is_403() {
        check(
            ProxyError::Forbidden { reason: "r".into() },
            403,
            "forbidden",
        );
    }

    #[test]
    fn misdirected_is_421() {
        let m = Misdirection::Unnamed { host: "h".into() };
        check(ProxyError::Misdirected(m), 421, "connection_not_named");
    }

    #[test]
    fn loop_is_508() {
        check(ProxyError::Loop, 508, "loop_detected");
    }

    #[test]
    fn bad_request_is_400() {
        check(
            ProxyError::BadRequest { reason: "r".into() },
            400,
            "bad_request",
        );
    }

    #[test]
    fn transfer_coding_is_501_and_closes() {
        let e = ProxyError::TransferCoding;
        assert!(e.closes());
        assert_eq!(
            e.clone().into_response().headers()[header::CONNECTION],
            "close"
        );
        let mut bytes = Vec::new();
        write_error(&mut bytes, &e, false, false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
        check(e, 501, "not_implemented");
    }

    #[test]
    fn unreachable_is_502() {
        check(UpstreamFault::closed().on("c"), 502, "upstream_unreachable");
    }

    #[test]
    fn timeout_is_504() {
        check(UpstreamFault::timeout().on("c"), 504, "upstream_timeout");
    }

    #[test]
    fn proxy_errors_match_the_hyper_path() {
        let mut out = Vec::new();
        let error = UpstreamFault::timeout().on("api");
        let body = error.body().to_string();
        write_error(&mut out, &error, false, true);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            format!(
                "HTTP/1.1 504 Gateway Timeout\r\ncontent-type: application/json\r\n\
                 cache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        );
    }
}
