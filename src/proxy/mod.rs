//! The proxy listener's request path: route (reverse `/{key}/…` or forward absolute-form),
//! inject the connection's credential, forward over the worker's upstream pools, stream
//! both bodies. Nothing here takes a lock, parses config or allocates a header value for
//! the token: the token is one `ArcSwap` load. Requests run on the worker thread that
//! accepted them ([`worker`]).
//!
//! Layers, each importing only those below it (no arrow back up; see
//! docs/architecture.md):
//! - [`worker`]: the per-core threads, each accepting on its own handle of the listener;
//! - [`conn`]: one app connection (the driver): fast-path requests until one needs hyper,
//!   then hyper for the rest of the connection, then the `CONNECT` tunnel it opened. Its
//!   [`conn::Shared`] is what a worker's connections share: the current [`Proxy`] and
//!   each engine's own state;
//! - two transports, which import neither the driver nor each other:
//!   [`fast`], ordinary requests as bytes (request heads, raw pooled upstream links), and
//!   [`full`], hyper (`http::Request`) for everything else — `CONNECT`, `api_key`,
//!   streamed or chunked request bodies, HTTP/1.0, `Expect`, `Connection` naming other
//!   headers. [`tunnel`] terminates an intercepted `CONNECT`'s TLS and leaves the
//!   decrypted stream for the driver; [`h2`] serves a connection that starts with the
//!   HTTP/2 preface (h2c, or `h2` chosen by ALPN in a tunnel), each stream a request of
//!   [`full`], which also speaks HTTP/2 upstream (`upstream_http2`);
//! - [`lifecycle`]: a forwarded request's life, once for both transports — plan and token
//!   wait, send, 401 recovery and replay, `/metrics`, the access-log line;
//! - the shared policy: [`route`] (the one [`route::Plan`] of a request: routing,
//!   refusals, credential, counters, the headers set, and the retry rule), [`choice`]
//!   (`tokenwarden-connection`, among the connections on one host), [`headers`]
//!   (hop-by-hop hygiene), [`error`] (every error and upstream fault, rendered as a hyper
//!   response or as bytes), [`upstream`] (the SSRF-guarded dialer, and both pools' idle
//!   limits), [`idle`] (both pools' idle connections, by upstream origin), [`limits`],
//!   [`heads`] (the memory of partial heads, the largest head), [`placeholder`]
//!   (placeholder credentials: found, checked, swapped; echoed credentials scrubbed),
//!   [`response`] and [`chunked`] (response framing, for both paths), [`deadline`] (the
//!   worker's coarse clock), [`measure`], [`unauthorized`] (the 401 decision; it owns the
//!   replay bound) and [`access`];
//! - below `proxy`: `registry`, `token`, `instrument` and `config`, none of which imports
//!   `proxy`.
//!
//! Why two transports: measured with `benches/compare.sh` (sidecar layout, one core
//! each), the hyper-only path cost 1.05–1.28× nginx's CPU per request; the fast path
//! costs 0.37–0.58× (see docs/performance.md). `tests/it/paths.rs` runs a table of
//! request and response shapes down both paths and asserts they agree.

pub(crate) mod access;
pub(crate) mod choice;
pub(crate) mod chunked;
pub(crate) mod conn;
pub(crate) mod deadline;
pub(crate) mod error;
pub mod fast;
pub(crate) mod full;
pub(crate) mod h2;
pub(crate) mod headers;
pub(crate) mod heads;
pub(crate) mod idle;
pub(crate) mod lifecycle;
pub(crate) mod limits;
pub(crate) mod measure;
pub(crate) mod placeholder;
pub mod response;
pub(crate) mod route;
pub mod tunnel;
pub mod unauthorized;
pub(crate) mod upstream;
pub mod worker;

use crate::registry::Registry;
use http::header::HeaderValue;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use route::Plan;

/// The AUTHORIZE route of the admin listener, as error bodies name it.
pub fn authorize_route(key: &str) -> String {
    format!("/api/v1/connection/{key}/authorize")
}

/// The admin route that authorizes the end user `subject` of a per-user connection.
pub fn authorize_route_for(key: &str, subject: &str) -> String {
    let subject: String = form_urlencoded::byte_serialize(subject.as_bytes()).collect();
    format!("/api/v1/connection/{key}/authorize?subject={subject}")
}

pub struct Proxy {
    pub registry: Arc<Registry>,
    pub response_timeout: Duration,
    /// `proxy.upstream_read_timeout`: the longest silence between two reads of a
    /// response body, on both paths.
    pub upstream_read_timeout: Duration,
    pub pseudonym: String,
    /// The `Via` value this proxy appends (`1.1 <pseudonym>`).
    pub via: HeaderValue,
    /// The listeners' own addresses (a forward request to one of them is a loop).
    pub own_addrs: Vec<SocketAddr>,
    /// `host:port` pairs `CONNECT` may tunnel to.
    pub passthrough: HashSet<String>,
    pub connect_timeout: Duration,
    pub limits: crate::config::ProxyLimits,
    /// `proxy.access_log`.
    pub access_log: bool,
    /// `proxy.unauthorized_refresh_interval` (zero: no refresh on a 401; [`unauthorized`]).
    pub unauthorized_refresh_interval: Duration,
    /// TLS interception of `CONNECT` to a connection's host (`proxy.intercept`).
    pub intercept: Option<Arc<tunnel::Interceptor>>,
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
            upstream_read_timeout: settings.upstream_read_timeout,
            via: headers::via_value(&settings.via_pseudonym),
            pseudonym: settings.via_pseudonym.clone(),
            own_addrs,
            passthrough: settings.connect_passthrough.iter().cloned().collect(),
            connect_timeout: settings.connect_timeout,
            limits: settings.limits,
            access_log: settings.access_log,
            unauthorized_refresh_interval: settings.unauthorized_refresh_interval,
            intercept: None,
        }
    }

    /// Turns interception on with `interceptor` (built from `proxy.intercept`).
    pub fn with_intercept(mut self, interceptor: Arc<tunnel::Interceptor>) -> Proxy {
        self.intercept = Some(interceptor);
        self
    }
}
