//! The hyper path, the second transport of the shared lifecycle: a request hyper parsed
//! (`http::Request`) is planned by [`Proxy::plan`], its headers prepared into the
//! `HeaderMap` ([`Proxy::prepare`]), and sent on the worker's hyper [`Pool`]
//! ([`exchange`], driven by [`lifecycle::forward`]); the response streams back. It serves
//! the connections the driver ([`super::conn`]) moved to hyper: `CONNECT` ([`connect`],
//! not a forwarded request), `api_key` connections ([`apikey`]), streamed and chunked
//! request bodies, HTTP/1.0, `Expect`, `Connection` headers naming others.
//!
//! Request framing: a body in a transfer coding other than chunked is a 501 (hyper decodes
//! only chunked and would forward the rest undeclared); a chunked body goes upstream
//! chunked whatever the method (hyper's client would send a GET's or HEAD's as none).

pub(crate) mod apikey;
pub(crate) mod checked;
pub(crate) mod connect;
mod exchange;
pub(crate) mod idle;
pub(crate) mod passthrough;
mod placeholders;
pub(crate) mod pool;
pub(crate) mod stall;

use super::deadline::Timers;
use super::error::{ProxyError, UpstreamFault};
use super::lifecycle::{self, Prepared};
use super::route::{Ask, Credential};
use super::Proxy;
use super::{choice, headers};
use crate::proxy::tunnel::Inside;
use bytes::Bytes;
use exchange::Exchange;
use http::header::{self, HeaderMap};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use pool::{Pool, PoolError, PooledBody};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use tokio::time::Instant;

/// What the hyper path keeps per worker thread, shared by its connections.
pub(crate) struct Engine {
    pub pool: Rc<Pool>,
    /// The worker's coarse clock (response bodies' `proxy.upstream_read_timeout`).
    pub timers: Rc<Timers>,
    /// The bound on each step of an intercepted tunnel's TLS handshake.
    pub header_read_timeout: std::time::Duration,
    /// Ends passthrough tunnels.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// The body of a response to the app: the upstream's, streamed (bounded by
/// `proxy.upstream_read_timeout`; with echoed credentials masked when the connection says
/// `scrub_response_bodies`), or one tokenwarden wrote.
pub type ProxyBody = Either<idle::ReadBounded<AppBody>, Full<Bytes>>;

/// The upstream's response body as the app gets it.
pub type AppBody = Either<PooledBody, crate::proxy::placeholder::Scrubbed<PooledBody>>;

/// The request body sent upstream: the app's body streamed (bounded by
/// `proxy.body_read_timeout`), or a body tokenwarden built.
pub type UpstreamBody = Either<stall::Bounded<Incoming>, Full<Bytes>>;

impl Proxy {
    /// Handles one request from the app (from `peer`; inside the intercepted tunnel to
    /// `tunnel`, if any), with the accepting worker's hyper `engine`; a `CONNECT` it intercepts
    /// leaves the tunnel in `slot`.
    pub(crate) async fn handle(
        self: Arc<Self>,
        engine: Rc<Engine>,
        req: Request<Incoming>,
        peer: SocketAddr,
        tunnel: Option<Rc<Inside>>,
        slot: super::tunnel::Slot,
    ) -> Response<ProxyBody> {
        if req.method() != Method::CONNECT {
            let grpc = pool::is_grpc(&req);
            let forwarded = self.forward(&engine, req, tunnel.as_deref()).await;
            return forwarded.unwrap_or_else(|e| match grpc {
                true => e.into_grpc_response().map(Either::Right),
                false => e.into_response().map(Either::Right),
            });
        }
        // A CONNECT is no forwarded request (no lifecycle): its access-log line is here.
        let logged = self.access_log.then(|| {
            let headers = req.headers();
            let named = choice::Named::of(headers);
            let ask = ask(
                req.method(),
                req.uri(),
                headers,
                (named, choice::subject_of(headers)),
                &self,
                tunnel.as_deref(),
            );
            let connection = self.route(&ask);
            let connection = connection
                .map_or(super::access::NO_CONNECTION.to_owned(), |(e, _)| {
                    e.conn.key.clone()
                });
            (connection, req.uri().to_string(), Instant::now())
        });
        let opened = connect::handle(&self, &engine, req, peer, tunnel.is_some(), &slot).await;
        let response = opened.unwrap_or_else(|e| e.into_response().map(Either::Right));
        if let Some((connection, target, started)) = logged {
            let status = response.status().as_u16();
            super::access::log(&connection, "CONNECT", &target, status, started);
        }
        response
    }

    /// A request other than `CONNECT`: [`lifecycle::forward`] over this path's
    /// [`Exchange`], and the answer's body streamed back.
    async fn forward(
        &self,
        engine: &Engine,
        req: Request<Incoming>,
        tunnel: Option<&Inside>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let started = Instant::now();
        // An HTTP/2 stream's response may be quiet for long (gRPC): its own bound.
        let read_timeout = match req.version() {
            http::Version::HTTP_2 => self.limits.stream_idle_timeout,
            _ => self.upstream_read_timeout,
        };
        let codings = req.headers().get_all(header::TRANSFER_ENCODING);
        let codings_ok = codings.iter().all(|v| headers::only_chunked(v.as_bytes()));
        let mut exchange = Exchange::new(&engine.pool, req, tunnel, started);
        let first = match codings_ok {
            true => exchange.plan(self, started),
            false => Err(ProxyError::TransferCoding),
        };
        let (sent, response) = lifecycle::forward(self, &mut exchange, first, started).await?;
        let (mut parts, body) = response.into_parts();
        headers::strip_response(parts.status.as_u16(), &mut parts.headers);
        let body = placeholders::in_response(&sent, &mut parts.headers, body);
        let body = idle::ReadBounded::new(body, &engine.timers, read_timeout);
        Ok(Response::from_parts(parts, Either::Left(body)))
    }

    /// Prepares `req` (planned at `now`, so with the current token) and sends it on the
    /// worker's pool: its connection, the serial of the token it carried (0: none) and
    /// the response head.
    async fn send_upstream(
        &self,
        pool: &Rc<Pool>,
        req: Request<UpstreamBody>,
        tunnel: Option<&Inside>,
        now: Instant,
    ) -> Result<(Prepared<'_>, Response<PooledBody>), ProxyError> {
        let trailers = headers::asks_for_trailers(req.headers());
        let (req, Planned { prepared, api_key }) = self.prepare_request_in(req, now, tunnel)?;
        let entry = prepared.entry;
        let (mut parts, mut body) = req.into_parts();
        if trailers {
            parts.extensions.insert(pool::WantsTrailers);
        }
        let conn = &entry.conn;
        if let Some(key) = api_key {
            let target = parts.uri.path_and_query().cloned();
            let target = target.unwrap_or_else(|| PathAndQuery::from_static("/"));
            let (target, merged) = apikey::apply(key, &mut parts.headers, target, body).await?;
            (parts.uri, body) = (Uri::from(target), merged);
        }
        if self.registry.has_placeholders() {
            body = placeholders::in_body(self, &prepared, &mut parts.headers, body).await?;
        }
        if entry.conn.egress.scrub_response_bodies {
            // Bodies it can read: no content coding.
            let identity = http::HeaderValue::from_static("identity");
            parts.headers.insert(header::ACCEPT_ENCODING, identity);
        }
        if !http_body::Body::is_end_stream(&body)
            && http_body::Body::size_hint(&body).exact().is_none()
        {
            // The app's chunked body: framed as such, or hyper sends a GET's as none.
            let chunked = http::HeaderValue::from_static("chunked");
            parts.headers.insert(header::TRANSFER_ENCODING, chunked);
        }
        let request = Request::from_parts(parts, body);
        super::route::sent(entry);
        let sent = pool.send(entry, request, prepared.idempotent);
        match tokio::time::timeout(self.response_timeout, sent).await {
            Err(_) => Err(UpstreamFault::timeout().on(&conn.key)),
            Ok(Err(e)) => Err(failed(&conn.key, e)),
            Ok(Ok(response)) => Ok((prepared, response)),
        }
    }

    /// Everything the hyper path does between the parsed request and the request handed
    /// to the pool (for `api_key`, before [`apikey::apply`]): plan it at `now`, rewrite the
    /// target to origin form (the pool's connection is to the upstream authority), prepare
    /// the headers ([`Proxy::prepare`]), HTTP/1.1.
    pub fn prepare_request<'p, B>(
        &'p self,
        req: Request<B>,
        now: Instant,
    ) -> Result<(Request<B>, Planned<'p>), ProxyError> {
        self.prepare_request_in(req, now, None)
    }

    /// [`Proxy::prepare_request`] for a request that arrived inside the intercepted
    /// tunnel to `tunnel` (`host:port`), if any ([`Ask::tunnel`]).
    pub fn prepare_request_in<'p, B>(
        &'p self,
        req: Request<B>,
        now: Instant,
        tunnel: Option<&Inside>,
    ) -> Result<(Request<B>, Planned<'p>), ProxyError> {
        let (mut parts, body) = req.into_parts();
        let taken = choice::Taken::from(&mut parts.headers);
        let (prepared, target) = {
            let named = taken.named();
            let ask = ask(
                &parts.method,
                &parts.uri,
                &parts.headers,
                (named, (taken.said(), taken.proxy_authorization())),
                self,
                tunnel,
            );
            let mut plan = self.plan(&ask, now)?;
            let target = plan.target.to_path_and_query()?;
            let target = placeholders::in_head(self, &mut plan, &mut parts.headers, target)?;
            self.prepare(&plan, &mut parts.headers);
            let prepared = Planned {
                prepared: plan.prepared(),
                api_key: match plan.credential {
                    Credential::ApiKey(key) => Some(key),
                    _ => None,
                },
            };
            (prepared, target)
            // The plan borrows the token: it ends here, before anything awaits.
        };
        parts.uri = Uri::from(target);
        parts.version = http::Version::HTTP_11;
        Ok((Request::from_parts(parts, body), prepared))
    }

    /// The plan's headers in a `HeaderMap`: hop-by-hop headers out, then the plan's
    /// `Host` and `Authorization` set, then our `Via` appended.
    pub fn prepare(&self, plan: &super::Plan<'_, '_>, headers: &mut HeaderMap) {
        headers::strip_hop_by_hop(headers);
        for (name, value) in plan.set_headers() {
            headers.insert(name, value.clone());
        }
        headers.append(header::VIA, self.via.clone());
    }
}

/// The 400 for an app's request body that could not be read (malformed chunked framing,
/// or cut short).
pub(super) fn body_unreadable() -> ProxyError {
    ProxyError::BadRequest {
        reason: "the request body could not be read (malformed chunked framing or cut short)"
            .into(),
    }
}

/// The error for a failed upstream exchange, worded as the fast path words it.
fn failed(connection: &str, e: PoolError) -> ProxyError {
    let fault = match &e {
        PoolError::Http(h) if h.is_user() => {
            // The app's own streamed body broke (bad chunked framing, or cut short).
            tracing::debug!(error = %e, "the request body could not be read");
            return body_unreadable();
        }
        PoolError::Http(h) if h.is_parse() => UpstreamFault::malformed(),
        PoolError::TransferCoding => UpstreamFault::malformed(),
        // Closed or reset before a response head (the pool returns once a head is read):
        // what the fast path calls it.
        PoolError::Http(_) => UpstreamFault::closed(),
        PoolError::Dial(d) => UpstreamFault::dial(d.kind(), d),
        PoolError::NoHttp2 => UpstreamFault::dial(crate::instrument::UpstreamError::Tls, &e),
        PoolError::GrpcOverHttp1 => {
            return ProxyError::GrpcNeedsHttp2 {
                connection: connection.to_owned(),
            }
        }
    };
    tracing::debug!(error = %e, "upstream request failed");
    fault.on(connection)
}

/// What the hyper path keeps of a plan once the request is prepared: what the lifecycle
/// keeps, and the `api_key` to apply to it ([`apikey::apply`]).
pub struct Planned<'p> {
    pub(crate) prepared: Prepared<'p>,
    pub api_key: Option<&'p crate::config::ApiKey>,
}

/// The [`Ask`] of a request hyper parsed (inside the intercepted tunnel to `tunnel`, if
/// any: [`Ask::tunnel`]) that names a connection and a subject as `(connection, (subject,
/// proxy_authorization))` say ([`choice::Named::of`] and [`choice::subject_of`] its
/// headers, or what [`choice::Taken`] took out of them).
pub fn ask<'r>(
    method: &'r Method,
    uri: &'r Uri,
    headers: &HeaderMap,
    (connection, (subject, proxy_authorization)): (
        choice::Named<'r>,
        (crate::grants::subject::Said<'r>, Option<&'r [u8]>),
    ),
    proxy: &Proxy,
    tunnel: Option<&'r Inside>,
) -> Ask<'r> {
    Ask {
        method: method.as_str(),
        origin: uri
            .authority()
            .map(|a| (uri.scheme_str().unwrap_or(""), a.as_str())),
        path_and_query: uri.path_and_query().map_or("", PathAndQuery::as_str),
        looped: headers::has_our_via(headers, &proxy.pseudonym),
        tunnel: tunnel.map(|t| &*t.authority),
        connection,
        subject,
        // Inside a tunnel, its CONNECT's.
        proxy_authorization: proxy_authorization
            .or_else(|| tunnel.and_then(|t| t.proxy_authorization.as_deref())),
    }
}
