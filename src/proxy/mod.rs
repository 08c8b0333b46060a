//! The proxy listener's request path: route (reverse `/{key}/…` or forward absolute-form),
//! inject the connection's credential, forward over the worker's upstream pool, stream
//! both bodies. Nothing here takes a lock, parses config or allocates a header value for
//! the token: the token is one `ArcSwap` load and a reference-counted `HeaderValue` clone.
//! Requests run on the worker thread that accepted them ([`worker`]).
//!
//! Two paths share the routing ([`Proxy::route`]) and the error mapping ([`error`]):
//! - [`fast`] serves ordinary requests as bytes ([`head`], [`io`], [`chunked`], with the
//!   worker's coarse [`deadline`]s) on raw pooled upstream connections;
//! - [`Proxy::handle`] (hyper, `http::Request`) serves everything else — errors, `CONNECT`
//!   (`connect`), `api_key` (`apikey`), streamed request bodies — once the fast path
//!   has handed it the connection.

mod apikey;
pub mod chunked;
mod connect;
pub mod deadline;
pub mod error;
pub mod fast;
pub mod head;
pub mod headers;
pub mod io;
pub mod pool;
pub mod upstream;
pub mod worker;

use crate::config::Auth;
use crate::registry::Entry;
use crate::registry::Registry;
use bytes::Bytes;
use error::ProxyError;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use pool::{Pool, PooledBody};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use upstream::UpstreamBody;

/// The body of a response to the app: the upstream's, streamed, or one tokenwarden wrote.
pub type ProxyBody = Either<PooledBody, Full<Bytes>>;

/// The AUTHORIZE route of the admin listener, as error bodies name it.
pub fn authorize_route(key: &str) -> String {
    format!("/api/v1/connection/{key}/authorize")
}

pub struct Proxy {
    pub registry: Arc<Registry>,
    pub response_timeout: Duration,
    pub pseudonym: String,
    via: HeaderValue,
    /// The listeners' own addresses (a forward request to one of them is a loop).
    pub own_addrs: Vec<SocketAddr>,
    /// `host:port` pairs `CONNECT` may tunnel to.
    pub passthrough: HashSet<String>,
    pub connect_timeout: Duration,
}

impl Proxy {
    pub fn new(
        registry: Arc<Registry>,
        settings: &crate::config::ProxySettings,
        own_addrs: Vec<SocketAddr>,
    ) -> Proxy {
        Proxy {
            registry,
            response_timeout: settings.response_timeout,
            via: headers::via_value(&settings.via_pseudonym),
            pseudonym: settings.via_pseudonym.clone(),
            own_addrs,
            passthrough: settings.connect_passthrough.iter().cloned().collect(),
            connect_timeout: settings.connect_timeout,
        }
    }

    /// Handles one request from the app, using the accepting worker's `pool`.
    pub async fn handle(
        self: Arc<Self>,
        pool: Rc<Pool>,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let result = if req.method() == Method::CONNECT {
            connect::handle(&self, req).await
        } else {
            self.forward(&pool, req).await
        };
        result.unwrap_or_else(ProxyError::into_response)
    }

    async fn forward(
        &self,
        pool: &Rc<Pool>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if headers::has_our_via(req.headers(), &self.pseudonym) {
            return Err(ProxyError::Loop);
        }
        // In any case: an upstream may not care about a method's case.
        if req.method().as_str().eq_ignore_ascii_case("TRACE") {
            return Err(ProxyError::Forbidden {
                reason: "TRACE is refused: the upstream would echo the injected credential back"
                    .into(),
            });
        }
        let (state, target) = self.route_uri(req.uri())?;
        let mut path_and_query = target.to_path_and_query()?;
        let conn = &state.conn;
        let (mut parts, body) = req.into_parts();
        self.prepare_headers(state, &mut parts.headers);
        let mut body: UpstreamBody = Either::Left(body);
        match &conn.auth {
            Auth::OAuth2(_) => match state.tokens.header() {
                Some(value) => {
                    parts.headers.insert(header::AUTHORIZATION, value);
                }
                None => {
                    state.counters.no_token.inc();
                    return Err(no_token(state));
                }
            },
            Auth::Header(value) => {
                parts.headers.insert(header::AUTHORIZATION, value.clone());
            }
            Auth::ApiKey(key) => {
                (path_and_query, body) =
                    apikey::apply(key, &mut parts.headers, path_and_query, body).await?;
            }
        }
        // Origin-form target; the pool's connection is already to the upstream authority.
        parts.uri = Uri::from(path_and_query);
        parts.version = http::Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        state.counters.proxied.inc();
        let sent = pool.send(state.index, &conn.upstream, request);
        let response = match tokio::time::timeout(self.response_timeout, sent).await {
            Err(_) => {
                return Err(ProxyError::UpstreamTimeout {
                    connection: conn.key.clone(),
                })
            }
            Ok(Err(e)) => {
                return Err(ProxyError::UpstreamUnreachable {
                    connection: conn.key.clone(),
                    reason: root_cause(&e),
                })
            }
            Ok(Ok(r)) => r,
        };
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Either::Left(body)))
    }

    /// Header hygiene for the upstream request: hop-by-hop headers out, `Host` set to the
    /// upstream authority, our `Via` appended. The credential is added after this, so no
    /// `Connection`-named header can remove it.
    pub fn prepare_headers(&self, state: &Entry, headers: &mut http::HeaderMap) {
        headers::strip_hop_by_hop(headers);
        headers.insert(header::HOST, state.host_header.clone());
        headers.append(header::VIA, self.via.clone());
    }

    /// [`Proxy::route`] for a request target hyper parsed.
    pub fn route_uri<'t>(&self, uri: &'t Uri) -> Result<(&Arc<Entry>, Target<'t>), ProxyError> {
        let origin = uri
            .authority()
            .map(|a| (uri.scheme_str().unwrap_or(""), a.as_str()));
        let path_and_query = uri.path_and_query().map_or("", |pq| pq.as_str());
        self.route(origin, path_and_query)
    }

    /// Reverse mode (`/{key}/rest?query`) or forward mode (`http://host/rest?query`, given
    /// as `origin = Some((scheme, authority))`): the connection and the origin-form target
    /// to send upstream. Works on the raw target, so both request paths share it.
    pub fn route<'t>(
        &self,
        origin: Option<(&str, &str)>,
        path_and_query: &'t str,
    ) -> Result<(&Arc<Entry>, Target<'t>), ProxyError> {
        if let Some((scheme, authority)) = origin {
            if !scheme.eq_ignore_ascii_case("http") {
                return Err(ProxyError::Forbidden {
                    reason: "only http:// requests can go through this proxy (tokenwarden talks https upstream)".into(),
                });
            }
            if authority.contains('@') {
                return Err(ProxyError::BadRequest {
                    reason: "userinfo is not allowed in the request target".into(),
                });
            }
            let (host, port) = split_authority(authority)?;
            if self.targets_self(host, port.unwrap_or(80)) {
                return Err(ProxyError::Loop);
            }
            let state = self.registry.by_authority(host, port).ok_or_else(|| ProxyError::Forbidden {
                reason: format!("{host} is not the host of a configured connection; tokenwarden is not an open proxy"),
            })?;
            return Ok((state, Target::after(path_and_query)));
        }
        let rest = path_and_query.strip_prefix('/').unwrap_or(path_and_query);
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (key, tail) = rest.split_at(end);
        let state = self
            .registry
            .get(key)
            .ok_or_else(|| ProxyError::UnknownConnection {
                key: key.to_owned(),
            })?;
        Ok((state, Target::after(tail)))
    }

    /// Whether `host:port` is one of this process's listeners.
    fn targets_self(&self, host: &str, port: u16) -> bool {
        let Ok(ip) = host.parse::<std::net::IpAddr>() else {
            return host.eq_ignore_ascii_case("localhost")
                && self.own_addrs.iter().any(|a| a.port() == port);
        };
        self.own_addrs.iter().any(|a| {
            a.port() == port
                && (a.ip() == ip
                    || (a.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        })
    }
}

/// The origin-form target sent upstream: `/` (when `slash`) followed by `rest`, so that
/// routing can cut it out of the app's target without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'t> {
    pub slash: bool,
    pub rest: &'t str,
}

impl<'t> Target<'t> {
    /// The target for what follows the routing part: a path (`/v1?x`), a bare query
    /// (`?x` → `/?x`) or nothing (`/`).
    fn after(tail: &'t str) -> Target<'t> {
        Target {
            slash: !tail.starts_with('/'),
            rest: tail,
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.slash) + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        if self.slash {
            out.push(b'/');
        }
        out.extend_from_slice(self.rest.as_bytes());
    }

    /// As a `PathAndQuery` (one allocation of exactly its length).
    pub fn to_path_and_query(&self) -> Result<PathAndQuery, ProxyError> {
        let mut target = Vec::with_capacity(self.len());
        self.write_to(&mut target);
        PathAndQuery::from_maybe_shared(Bytes::from(target)).map_err(|_| ProxyError::BadRequest {
            reason: "the request path cannot be forwarded".into(),
        })
    }
}

/// `host[:port]` or `[v6][:port]` → the host (without brackets) and the port, if written.
fn split_authority(authority: &str) -> Result<(&str, Option<u16>), ProxyError> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let end = v6.find(']').ok_or_else(|| bad_authority(authority))?;
            (&v6[..end], v6[end + 1..].strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse().map_err(|_| bad_authority(authority))?),
    };
    Ok((host, port))
}

fn bad_authority(authority: &str) -> ProxyError {
    ProxyError::BadRequest {
        reason: format!("{authority} is not a valid host[:port]"),
    }
}

/// The 503 for a connection without a usable token.
pub fn no_token(state: &Entry) -> ProxyError {
    let authorize = match &state.conn.auth {
        Auth::OAuth2(o) if o.grant == crate::config::Grant::AuthorizationCode => {
            Some(authorize_route(&state.conn.key))
        }
        _ => None,
    };
    ProxyError::NoToken {
        connection: state.conn.key.clone(),
        state: state.tokens.state_name(),
        authorize,
    }
}

/// The innermost message of an error chain (the useful part of a connect error).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
