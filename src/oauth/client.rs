//! Sends token and refresh requests (reqwest over rustls: no proxy from the environment,
//! no redirects, bounded time and size) and turns the answer into a token or a [`TokenError`].

use super::request::BuiltRequest;
use super::response::{self, ResponseError, TokenResponse, TERMINAL_ERRORS};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Time to connect to a token endpoint (Fides uses 3.05 s).
pub const TOKEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole token request, response body included.
pub const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle connection to a token endpoint is dropped after this, before the servers that
/// close theirs soonest do (Node.js and Apache httpd: 5 s). A request written on a
/// connection the server is closing that moment is reset, and a token request is never
/// sent again.
pub const TOKEN_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Largest token response read; a larger one is an error.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// `User-Agent` of token requests.
pub const USER_AGENT: &str = concat!("tokenwarden/", env!("CARGO_PKG_VERSION"));

/// Why a token request failed. Messages name the connection and the OAuth error code,
/// never a secret, token, code or URL (a URL may carry a client secret in its query).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("connection `{connection}`: {message}")]
    Build { connection: String, message: String },
    #[error("connection `{connection}`: token endpoint unreachable ({reason})")]
    Network { connection: String, reason: String },
    #[error("connection `{connection}`: token endpoint answered HTTP {status}")]
    Status {
        connection: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("connection `{connection}`: token endpoint returned OAuth error `{code}`{}", .description.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    OAuth {
        connection: String,
        code: String,
        description: Option<String>,
    },
    #[error("connection `{connection}`: unusable token response: {reason}")]
    Invalid { connection: String, reason: String },
}

impl TokenError {
    /// Retrying cannot help: the connection needs an operator or a new authorization.
    pub fn is_terminal(&self) -> bool {
        match self {
            TokenError::OAuth { code, .. } => TERMINAL_ERRORS.contains(&code.as_str()),
            TokenError::Build { .. } => true,
            _ => false,
        }
    }

    /// The OAuth error code, if the endpoint sent one.
    pub fn oauth_code(&self) -> Option<&str> {
        match self {
            TokenError::OAuth { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The server's `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The HTTP client for token endpoints. Cheap to clone.
#[derive(Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    /// What it was built with, for the clients that present a certificate.
    tls: Arc<rustls::ClientConfig>,
    overrides: Arc<HashMap<String, SocketAddr>>,
}

impl TokenClient {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Result<TokenClient, reqwest::Error> {
        TokenClient::with_resolve(tls, &HashMap::new())
    }

    /// [`TokenClient::new`] with fixed DNS answers for host names (tests, the demo). The
    /// address's port is used when the URL names none.
    pub fn with_resolve(
        tls: Arc<rustls::ClientConfig>,
        overrides: &HashMap<String, SocketAddr>,
    ) -> Result<TokenClient, reqwest::Error> {
        Ok(TokenClient {
            http: http_client((*tls).clone(), overrides)?,
            tls,
            overrides: Arc::new(overrides.clone()),
        })
    }

    /// The client for a request: this one, or — for a request that presents a client
    /// certificate (`tls_client_auth`) — one built for it. Token requests are few, so the
    /// certificate's client is not kept.
    fn for_request(&self, request: &BuiltRequest) -> Result<reqwest::Client, reqwest::Error> {
        let Some(certificate) = &request.identity else {
            return Ok(self.http.clone());
        };
        let tls = crate::tls::presenting(&self.tls, Arc::clone(&certificate.0));
        http_client(tls, &self.overrides)
    }

    /// Sends `request` for `connection` and reads the token response.
    pub async fn send(
        &self,
        connection: &str,
        request: BuiltRequest,
    ) -> Result<TokenResponse, TokenError> {
        let network = |e: reqwest::Error| TokenError::Network {
            connection: connection.to_owned(),
            reason: describe(&e),
        };
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            TokenError::Build {
                connection: connection.to_owned(),
                message: format!("bad method {}", request.method),
            }
        })?;
        let mut builder = self
            .for_request(&request)
            .map_err(network)?
            .request(method.clone(), &request.url)
            .header("Accept", "application/json");
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        builder = match request.body {
            Some(body) => builder.body(body),
            // Python requests sends Content-Length: 0 on a body-less POST; so do we.
            None if method != reqwest::Method::GET && method != reqwest::Method::HEAD => {
                builder.header("Content-Length", "0")
            }
            None => builder,
        };
        let mut response = builder.send().await.map_err(network)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(network)? {
            if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
                return Err(TokenError::Invalid {
                    connection: connection.to_owned(),
                    reason: format!("response larger than {MAX_TOKEN_RESPONSE_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        response::parse(status, &body).map_err(|e| match e {
            ResponseError::OAuth { code, description } => TokenError::OAuth {
                connection: connection.to_owned(),
                code,
                description,
            },
            ResponseError::Status(status) => TokenError::Status {
                connection: connection.to_owned(),
                status,
                retry_after,
            },
            ResponseError::Invalid(reason) => TokenError::Invalid {
                connection: connection.to_owned(),
                reason: reason.to_owned(),
            },
        })
    }
}

/// A reqwest client for token endpoints over `tls`.
fn http_client(
    tls: rustls::ClientConfig,
    overrides: &HashMap<String, SocketAddr>,
) -> Result<reqwest::Client, reqwest::Error> {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place token clients are built"
    )]
    let mut builder = reqwest::Client::builder();
    for (host, addr) in overrides {
        builder = builder.resolve(host, *addr);
    }
    builder
        .use_preconfigured_tls(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(TOKEN_CONNECT_TIMEOUT)
        .timeout(TOKEN_REQUEST_TIMEOUT)
        .pool_idle_timeout(TOKEN_POOL_IDLE_TIMEOUT)
        .user_agent(USER_AGENT)
        .build()
}

/// A reqwest error without its URL (which may hold secrets in the query); a TLS failure
/// in words.
fn describe(e: &reqwest::Error) -> String {
    if let Some(tls) = crate::tls::in_words(e) {
        return tls;
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "error reading the response"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() || detail.contains("://") {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}
