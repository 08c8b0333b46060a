//! The `proxy` section: the proxy listener, its timeouts and limits, with their defaults.

use super::fields::Fields;
use super::raw::RawFile;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default proxy listener.
pub const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:8080";
/// Default time to establish an upstream TCP (+TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time for an upstream to start answering (response headers).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time an upstream may send nothing between two reads of a response body (nginx's
/// `proxy_read_timeout`).
pub const DEFAULT_UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a client has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on open app connections to the proxy listener (all workers together).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default bound on the bytes of partial request heads held by all app connections together.
pub const DEFAULT_MAX_BUFFERED_HEAD_BYTES: usize = 64 * 1024 * 1024;
/// The smallest `proxy.max_buffered_head_bytes`: one head of the largest size the fast path
/// reads (`proxy::heads::MAX_HEAD`).
pub const MIN_BUFFERED_HEAD_BYTES: usize = 64 * 1024;
/// Default number of requests one app connection may make before it is closed.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u64 = 10_000;
/// Default age after which an app connection is closed (after its current response).
pub const DEFAULT_MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(3600);
/// Default time a request body may stall: a body of a known length up to 64 KiB must arrive
/// whole, a streamed one must send its next bytes, within it (and keep a minimum rate after
/// it: `proxy::full::stall`).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a passthrough `CONNECT` tunnel may carry no byte either way before it is
/// closed.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `proxy.stream_idle_timeout` (HTTP/2 streams: gRPC's may be quiet for long).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default shortest time between two refreshes an upstream's 401 causes, per connection.
pub const DEFAULT_UNAUTHORIZED_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Default `Via` pseudonym (also the loop-detection marker).
pub const DEFAULT_VIA_PSEUDONYM: &str = "tokenwarden";

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// A response body that sends nothing for this long is cut off: the app's connection
    /// is closed (the response has begun) and the upstream connection dropped.
    pub upstream_read_timeout: Duration,
    pub header_read_timeout: Duration,
    pub via_pseudonym: String,
    /// `host:port` pairs that `CONNECT` may tunnel to (no injection).
    pub connect_passthrough: Vec<String>,
    /// Proxy worker threads; default: the number of CPUs.
    pub worker_threads: Option<usize>,
    pub limits: ProxyLimits,
    /// Log every proxied request (connection, method, path without query, status, time).
    pub access_log: bool,
    /// At most one refresh per connection in this time is caused by upstream 401s
    /// (zero: none; [`crate::proxy::unauthorized`]).
    pub unauthorized_refresh_interval: Duration,
    /// TLS interception of `CONNECT` to a connection's host (`proxy.intercept`).
    pub intercept: Option<InterceptSettings>,
}

/// `proxy.intercept`: the persisted root CA (paths resolved against the config file's
/// directory) that signs the per-host intermediates minted at start ([`crate::ca`]).
#[derive(Debug, Clone)]
pub struct InterceptSettings {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

/// Resource limits of the proxy listener (see docs/proxy.md, Limits).
#[derive(Debug, Clone, Copy)]
pub struct ProxyLimits {
    /// Open app connections beyond this are refused (closed at once, with a log line).
    pub max_connections: usize,
    /// Partial request heads of all connections together hold at most this many bytes; a
    /// connection whose head would pass it is closed (`proxy::heads`).
    pub max_buffered_head_bytes: usize,
    pub max_requests_per_connection: u64,
    pub max_connection_lifetime: Duration,
    pub body_read_timeout: Duration,
    /// A passthrough `CONNECT` tunnel that carries no byte either way for this long is
    /// closed (`proxy::full::passthrough`).
    pub tunnel_idle_timeout: Duration,
    /// An HTTP/2 request's body, or its response's, that sends nothing for this long is
    /// cut off (instead of `body_read_timeout` with its minimum rate, and of
    /// `upstream_read_timeout`): streams such as gRPC's are long-lived and may be quiet.
    pub stream_idle_timeout: Duration,
}

/// The `proxy` section, checked (problems go to `fields`; relative paths are resolved
/// against `base`, the config file's directory).
pub(super) fn validate(raw: &RawFile, base: &Path, fields: &mut Fields<'_>) -> ProxySettings {
    let proxy = &raw.proxy;
    let mut duration = |path: &str, value: &Option<String>, default: Duration| {
        fields.duration(path, value, default)
    };
    let connect_timeout = duration(
        "proxy.connect_timeout",
        &proxy.connect_timeout,
        DEFAULT_CONNECT_TIMEOUT,
    );
    let response_timeout = duration(
        "proxy.response_timeout",
        &proxy.response_timeout,
        DEFAULT_RESPONSE_TIMEOUT,
    );
    let upstream_read_timeout = duration(
        "proxy.upstream_read_timeout",
        &proxy.upstream_read_timeout,
        DEFAULT_UPSTREAM_READ_TIMEOUT,
    );
    let header_read_timeout = duration(
        "proxy.header_read_timeout",
        &proxy.header_read_timeout,
        DEFAULT_HEADER_READ_TIMEOUT,
    );
    let unauthorized_refresh_interval = duration(
        "proxy.unauthorized_refresh_interval",
        &proxy.unauthorized_refresh_interval,
        DEFAULT_UNAUTHORIZED_REFRESH_INTERVAL,
    );
    let limits = limits(raw, fields);
    let listen = fields.listen("proxy.listen", &proxy.listen, DEFAULT_PROXY_LISTEN);
    if upstream_read_timeout.is_zero() {
        let (src, problems) = (fields.src, &mut *fields.problems);
        problems.push(src.problem("proxy.upstream_read_timeout", "must be more than 0s"));
    }
    ProxySettings {
        listen,
        connect_timeout,
        response_timeout,
        upstream_read_timeout,
        header_read_timeout,
        via_pseudonym: via_pseudonym(raw, fields),
        connect_passthrough: connect_passthrough(raw, fields),
        access_log: proxy.access_log,
        unauthorized_refresh_interval,
        worker_threads: proxy.worker_threads,
        intercept: proxy.intercept.as_ref().map(|i| InterceptSettings {
            ca_cert: base.join(&i.ca_cert),
            ca_key: base.join(&i.ca_key),
        }),
        limits,
    }
}

/// The connection limits of the `proxy` section; a count of zero is refused.
fn limits(raw: &RawFile, fields: &mut Fields<'_>) -> ProxyLimits {
    let proxy = &raw.proxy;
    let max_connection_lifetime = fields.duration(
        "proxy.max_connection_lifetime",
        &proxy.max_connection_lifetime,
        DEFAULT_MAX_CONNECTION_LIFETIME,
    );
    let body_read_timeout = fields.duration(
        "proxy.body_read_timeout",
        &proxy.body_read_timeout,
        DEFAULT_BODY_READ_TIMEOUT,
    );
    let tunnel_idle_timeout = fields.duration(
        "proxy.tunnel_idle_timeout",
        &proxy.tunnel_idle_timeout,
        DEFAULT_TUNNEL_IDLE_TIMEOUT,
    );
    let stream_idle_timeout = fields.duration(
        "proxy.stream_idle_timeout",
        &proxy.stream_idle_timeout,
        DEFAULT_STREAM_IDLE_TIMEOUT,
    );
    let (src, problems) = (fields.src, &mut *fields.problems);
    for (path, zero) in [
        ("proxy.max_connections", proxy.max_connections == Some(0)),
        (
            "proxy.max_requests_per_connection",
            proxy.max_requests_per_connection == Some(0),
        ),
        ("proxy.worker_threads", proxy.worker_threads == Some(0)),
    ] {
        if zero {
            problems.push(src.problem(path, "must be at least 1"));
        }
    }
    for (path, timeout) in [
        ("proxy.tunnel_idle_timeout", tunnel_idle_timeout),
        ("proxy.stream_idle_timeout", stream_idle_timeout),
    ] {
        if timeout.is_zero() {
            problems.push(src.problem(path, "must be more than 0s"));
        }
    }
    if proxy
        .max_buffered_head_bytes
        .is_some_and(|n| n < MIN_BUFFERED_HEAD_BYTES)
    {
        problems.push(src.problem(
            "proxy.max_buffered_head_bytes",
            format!(
                "must be at least {MIN_BUFFERED_HEAD_BYTES} (one request head of the largest size)"
            ),
        ));
    }
    ProxyLimits {
        max_connections: proxy.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        max_buffered_head_bytes: proxy
            .max_buffered_head_bytes
            .unwrap_or(DEFAULT_MAX_BUFFERED_HEAD_BYTES),
        max_requests_per_connection: proxy
            .max_requests_per_connection
            .unwrap_or(DEFAULT_MAX_REQUESTS_PER_CONNECTION),
        max_connection_lifetime,
        body_read_timeout,
        tunnel_idle_timeout,
        stream_idle_timeout,
    }
}

/// `proxy.via_pseudonym`: a token without spaces (it is also the loop marker).
fn via_pseudonym(raw: &RawFile, fields: &mut Fields<'_>) -> String {
    let pseudonym = raw
        .proxy
        .via_pseudonym
        .clone()
        .unwrap_or_else(|| DEFAULT_VIA_PSEUDONYM.into());
    if pseudonym.is_empty() || !pseudonym.bytes().all(|b| b.is_ascii_graphic()) {
        fields.problems.push(fields.src.problem(
            "proxy.via_pseudonym",
            "must be a non-empty token without spaces",
        ));
    }
    pseudonym
}

/// `proxy.connect_passthrough`: `HOST:PORT` entries, in lower case.
fn connect_passthrough(raw: &RawFile, fields: &mut Fields<'_>) -> Vec<String> {
    let (src, problems) = (fields.src, &mut *fields.problems);
    for (i, target) in raw.proxy.connect_passthrough.iter().enumerate() {
        if target
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            let path = format!("proxy.connect_passthrough[{i}]");
            let target = src.quote(&path, target);
            problems.push(src.problem(&path, format!("{target} is not HOST:PORT")));
        }
    }
    raw.proxy
        .connect_passthrough
        .iter()
        .map(|t| t.to_ascii_lowercase())
        .collect()
}
