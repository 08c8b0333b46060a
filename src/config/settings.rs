//! The listener, admin, store, TLS and log sections, with their defaults.

use super::raw::RawFile;
use super::source::{Problems, Source};
use super::store::{redis_settings, DEFAULT_LEASE_TTL, DEFAULT_POLL_INTERVAL, DEFAULT_STORE_PATH};
pub use super::store::{RedisSettings, StoreSettings, Unreadable};
use ipnet::IpNet;
use secrecy::SecretString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default proxy listener.
pub const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:8080";
/// Default admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
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
/// reads (`proxy::fast::request::MAX_HEAD`).
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
/// Default shortest time between two refreshes an upstream's 401 causes, per connection.
pub const DEFAULT_UNAUTHORIZED_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Default `Via` pseudonym (also the loop-detection marker).
pub const DEFAULT_VIA_PSEUDONYM: &str = "tokenwarden";
/// Default lifetime of an authorization `state`.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(600);
/// Default interval of the config file watch (`admin.watch_config`): a change applies
/// within two of these (two reads must agree).
pub const DEFAULT_WATCH_CONFIG: Duration = Duration::from_secs(5);
/// Default bound on authorization states waiting for their callback.
pub const DEFAULT_MAX_PENDING_STATES: usize = 1024;
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
/// directory) that signs the intermediate minted at start ([`crate::ca`]).
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
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Base URL the browser reaches the admin listener at (for the default `redirect_uri`).
    pub public_url: Option<String>,
    /// Bearer token that lets non-loopback callers use the authorize route.
    pub token: Option<SecretString>,
    pub state_ttl: Duration,
    pub max_pending_states: usize,
    /// Prefix of every `state` (`<instance>-…`) so a router can find this instance.
    pub instance: Option<String>,
    /// Where the callback redirects (307) after a successful authorization.
    pub success_url: Option<String>,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` / `X-Real-IP` name the
    /// client (see `admin::forwarded`); empty: a forwarded request is never a loopback caller.
    pub trusted_proxies: Vec<IpNet>,
    /// How often the config file and its Fides files are read for a change to reload
    /// (`crate::watch`); None: never (`0`).
    pub watch_config: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A tracing filter (`info`, `tokenwarden=debug`); `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

pub struct Settings {
    pub proxy: ProxySettings,
    pub admin: AdminSettings,
    pub store: StoreSettings,
    pub ca_file: Option<PathBuf>,
    pub log: LogSettings,
}

pub fn validate(raw: &RawFile, src: &Source, base: &Path, problems: &mut Problems) -> Settings {
    let mut listen = |path: &str, value: &Option<String>, default: &str| -> SocketAddr {
        let text = value.as_deref().unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            problems.push(src.problem(
                path,
                format!(
                    "bad listen address {}: expected IP:PORT, such as {default}",
                    src.quote(path, text)
                ),
            ));
            default.parse().expect("default listen address")
        })
    };
    let proxy_listen = listen("proxy.listen", &raw.proxy.listen, DEFAULT_PROXY_LISTEN);
    let admin_listen = listen("admin.listen", &raw.admin.listen, DEFAULT_ADMIN_LISTEN);
    let mut duration = |path: &str, value: &Option<String>, default: Duration| match value {
        None => default,
        Some(text) => parse_duration(text).unwrap_or_else(|| {
            problems.push(src.problem(
                path,
                format!(
                    "bad duration {}: use a number with ms, s, m or h, such as 10s",
                    src.quote(path, text)
                ),
            ));
            default
        }),
    };
    let connect_timeout = duration(
        "proxy.connect_timeout",
        &raw.proxy.connect_timeout,
        DEFAULT_CONNECT_TIMEOUT,
    );
    let response_timeout = duration(
        "proxy.response_timeout",
        &raw.proxy.response_timeout,
        DEFAULT_RESPONSE_TIMEOUT,
    );
    let upstream_read_timeout = duration(
        "proxy.upstream_read_timeout",
        &raw.proxy.upstream_read_timeout,
        DEFAULT_UPSTREAM_READ_TIMEOUT,
    );
    let header_read_timeout = duration(
        "proxy.header_read_timeout",
        &raw.proxy.header_read_timeout,
        DEFAULT_HEADER_READ_TIMEOUT,
    );
    let max_connection_lifetime = duration(
        "proxy.max_connection_lifetime",
        &raw.proxy.max_connection_lifetime,
        DEFAULT_MAX_CONNECTION_LIFETIME,
    );
    let body_read_timeout = duration(
        "proxy.body_read_timeout",
        &raw.proxy.body_read_timeout,
        DEFAULT_BODY_READ_TIMEOUT,
    );
    let tunnel_idle_timeout = duration(
        "proxy.tunnel_idle_timeout",
        &raw.proxy.tunnel_idle_timeout,
        DEFAULT_TUNNEL_IDLE_TIMEOUT,
    );
    let unauthorized_refresh_interval = duration(
        "proxy.unauthorized_refresh_interval",
        &raw.proxy.unauthorized_refresh_interval,
        DEFAULT_UNAUTHORIZED_REFRESH_INTERVAL,
    );
    let state_ttl = duration("admin.state_ttl", &raw.admin.state_ttl, DEFAULT_STATE_TTL);
    let watch_config = duration(
        "admin.watch_config",
        &raw.admin.watch_config,
        DEFAULT_WATCH_CONFIG,
    );
    let lease_ttl = duration("store.lease_ttl", &raw.store.lease_ttl, DEFAULT_LEASE_TTL);
    let poll_interval = duration(
        "store.poll_interval",
        &raw.store.poll_interval,
        DEFAULT_POLL_INTERVAL,
    );

    for (path, url) in [
        ("admin.public_url", &raw.admin.public_url),
        ("admin.success_url", &raw.admin.success_url),
    ] {
        if let Some(url) = url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                let url = src.quote(path, url);
                problems
                    .push(src.problem(path, format!("{url} is not an http:// or https:// URL")));
            }
        }
    }
    let trusted_proxies = trusted_proxies(&raw.admin.trusted_proxies, src, problems);
    if proxy_listen == admin_listen && proxy_listen.port() != 0 {
        problems.push(src.problem(
            "admin.listen",
            "the admin listener must not share the proxy's address",
        ));
    }
    let pseudonym = raw
        .proxy
        .via_pseudonym
        .clone()
        .unwrap_or_else(|| DEFAULT_VIA_PSEUDONYM.into());
    if pseudonym.is_empty() || !pseudonym.bytes().all(|b| b.is_ascii_graphic()) {
        problems.push(src.problem(
            "proxy.via_pseudonym",
            "must be a non-empty token without spaces",
        ));
    }
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
    if raw.proxy.max_connections == Some(0) {
        problems.push(src.problem("proxy.max_connections", "must be at least 1"));
    }
    if raw
        .proxy
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
    if raw.proxy.max_requests_per_connection == Some(0) {
        problems.push(src.problem("proxy.max_requests_per_connection", "must be at least 1"));
    }
    for (path, value) in [
        ("proxy.tunnel_idle_timeout", tunnel_idle_timeout),
        ("proxy.upstream_read_timeout", upstream_read_timeout),
    ] {
        if value.is_zero() {
            problems.push(src.problem(path, "must be more than 0s"));
        }
    }
    if raw.proxy.worker_threads == Some(0) {
        problems.push(src.problem("proxy.worker_threads", "must be at least 1"));
    }
    let on_unreadable = match raw.store.on_unreadable.as_deref() {
        None | Some("refuse") => Unreadable::Refuse,
        Some("start_unauthorized") => Unreadable::StartUnauthorized,
        Some(other) => {
            let other = src.quote("store.on_unreadable", other);
            problems.push(src.problem(
                "store.on_unreadable",
                format!("unknown value {other}: expected refuse or start_unauthorized"),
            ));
            Unreadable::Refuse
        }
    };
    let redis = redis_settings(raw, src, problems, lease_ttl, poll_interval);
    let format = match raw.log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            let other = src.quote("log.format", other);
            problems.push(src.problem(
                "log.format",
                format!("unknown value {other}: expected text or json"),
            ));
            LogFormat::Text
        }
    };
    let ca_file = raw.tls.ca_file.as_ref().map(|f| base.join(f));
    if let Some(ca) = &ca_file {
        if !ca.is_file() {
            let shown = src.quote("tls.ca_file", &ca.display().to_string());
            problems.push(src.problem("tls.ca_file", format!("{shown} is not a readable file")));
        }
    }
    Settings {
        proxy: ProxySettings {
            listen: proxy_listen,
            connect_timeout,
            response_timeout,
            upstream_read_timeout,
            header_read_timeout,
            via_pseudonym: pseudonym,
            connect_passthrough: raw
                .proxy
                .connect_passthrough
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            access_log: raw.proxy.access_log,
            unauthorized_refresh_interval,
            worker_threads: raw.proxy.worker_threads,
            intercept: raw.proxy.intercept.as_ref().map(|i| InterceptSettings {
                ca_cert: base.join(&i.ca_cert),
                ca_key: base.join(&i.ca_key),
            }),
            limits: ProxyLimits {
                max_connections: raw.proxy.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
                max_buffered_head_bytes: raw
                    .proxy
                    .max_buffered_head_bytes
                    .unwrap_or(DEFAULT_MAX_BUFFERED_HEAD_BYTES),
                max_requests_per_connection: raw
                    .proxy
                    .max_requests_per_connection
                    .unwrap_or(DEFAULT_MAX_REQUESTS_PER_CONNECTION),
                max_connection_lifetime,
                body_read_timeout,
                tunnel_idle_timeout,
            },
        },
        admin: AdminSettings {
            listen: admin_listen,
            public_url: raw
                .admin
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            token: raw
                .admin
                .token
                .clone()
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
            state_ttl,
            max_pending_states: raw
                .admin
                .max_pending_states
                .unwrap_or(DEFAULT_MAX_PENDING_STATES),
            instance: raw.admin.instance.clone().filter(|i| !i.is_empty()),
            success_url: raw.admin.success_url.clone(),
            trusted_proxies,
            watch_config: Some(watch_config).filter(|d| !d.is_zero()),
        },
        store: StoreSettings {
            path: base.join(raw.store.path.as_deref().unwrap_or(DEFAULT_STORE_PATH)),
            key: raw
                .store
                .key
                .clone()
                .filter(|k| !k.is_empty())
                .map(SecretString::from),
            on_unreadable,
            redis,
        },
        ca_file,
        log: LogSettings {
            level: raw.log.level.clone().unwrap_or_else(|| "info".into()),
            format,
        },
    }
}

/// `admin.trusted_proxies`: each entry an IP address or a CIDR range.
fn trusted_proxies(entries: &[String], src: &Source, problems: &mut Problems) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, text) in entries.iter().enumerate() {
        match text.parse::<IpNet>() {
            Ok(net) => nets.push(net),
            Err(_) => match text.parse::<IpAddr>() {
                Ok(ip) => nets.push(IpNet::from(ip)),
                Err(_) => problems.push(src.problem(
                    &format!("admin.trusted_proxies[{i}]"),
                    // The value may come from `${…}`: never quoted.
                    "not an IP address or a CIDR range such as 10.0.0.0/8",
                )),
            },
        }
    }
    nets
}

/// `250ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
