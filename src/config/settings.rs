//! The admin, store, TLS and log sections, with their defaults, and [`validate`], which
//! checks every section but `connections` (the `proxy` section: `super::proxy`).

use super::fields::Fields;
use super::proxy::ProxySettings;
use super::raw::RawFile;
use super::redis::redis_settings;
pub use super::redis::{
    ClientIdentity, ClusterSettings, RedisSettings, RedisTarget, RedisTls, SentinelSettings,
};
use super::source::{Problems, Source};
pub use super::store::{StoreSettings, Unreadable};
use super::store::{DEFAULT_LEASE_TTL, DEFAULT_POLL_INTERVAL, DEFAULT_STORE_PATH};
use ipnet::IpNet;
use secrecy::SecretString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default lifetime of an authorization `state`.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(600);
/// Default interval of the config file watch (`admin.watch_config`): a change applies
/// within two of these (two reads must agree).
pub const DEFAULT_WATCH_CONFIG: Duration = Duration::from_secs(5);
/// Default bound on authorization states waiting for their callback.
pub const DEFAULT_MAX_PENDING_STATES: usize = 1024;
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
    /// `/metrics` labels each runtime connection (`connection`) rather than their connector
    /// type (`connector_type`): 10,000 connections would be 10,000 label sets.
    pub metrics_per_connection: bool,
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

/// Every section but `connections`, checked: each problem goes to `problems` (with its
/// place), and a default stands in for a value that is wrong.
pub fn validate(raw: &RawFile, src: &Source, base: &Path, problems: &mut Problems) -> Settings {
    let proxy = super::proxy::validate(raw, base, &mut Fields { src, problems });
    let admin = admin(raw, &mut Fields { src, problems });
    if proxy.listen == admin.listen && proxy.listen.port() != 0 {
        problems.push(src.problem(
            "admin.listen",
            "the admin listener must not share the proxy's address",
        ));
    }
    let ca_file = raw.tls.ca_file.as_ref().map(|f| base.join(f));
    if let Some(ca) = &ca_file {
        if !ca.is_file() {
            let shown = src.quote("tls.ca_file", &ca.display().to_string());
            problems.push(src.problem("tls.ca_file", format!("{shown} is not a readable file")));
        }
    }
    let store = store(raw, base, ca_file.as_deref(), &mut Fields { src, problems });
    Settings {
        proxy,
        admin,
        store,
        ca_file,
        log: log(raw, src, problems),
    }
}

/// The `admin` section.
fn admin(raw: &RawFile, fields: &mut Fields<'_>) -> AdminSettings {
    let admin = &raw.admin;
    let listen = fields.listen("admin.listen", &admin.listen, DEFAULT_ADMIN_LISTEN);
    let state_ttl = fields.duration("admin.state_ttl", &admin.state_ttl, DEFAULT_STATE_TTL);
    let watch_config = fields.duration(
        "admin.watch_config",
        &admin.watch_config,
        DEFAULT_WATCH_CONFIG,
    );
    let Fields { src, problems } = fields;
    for (path, url) in [
        ("admin.public_url", &admin.public_url),
        ("admin.success_url", &admin.success_url),
    ] {
        if let Some(url) = url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                let url = src.quote(path, url);
                problems
                    .push(src.problem(path, format!("{url} is not an http:// or https:// URL")));
            }
        }
    }
    AdminSettings {
        listen,
        public_url: admin
            .public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_owned()),
        token: admin
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .map(SecretString::from),
        state_ttl,
        max_pending_states: admin
            .max_pending_states
            .unwrap_or(DEFAULT_MAX_PENDING_STATES),
        instance: admin.instance.clone().filter(|i| !i.is_empty()),
        success_url: admin.success_url.clone(),
        trusted_proxies: trusted_proxies(&admin.trusted_proxies, src, problems),
        watch_config: Some(watch_config).filter(|d| !d.is_zero()),
        metrics_per_connection: admin.metrics_per_connection,
    }
}

/// The `store` section (the Redis part: [`redis_settings`]).
fn store(
    raw: &RawFile,
    base: &Path,
    ca_file: Option<&Path>,
    fields: &mut Fields<'_>,
) -> StoreSettings {
    let store = &raw.store;
    let lease_ttl = fields.duration("store.lease_ttl", &store.lease_ttl, DEFAULT_LEASE_TTL);
    let poll_interval = fields.duration(
        "store.poll_interval",
        &store.poll_interval,
        DEFAULT_POLL_INTERVAL,
    );
    let Fields { src, problems } = fields;
    let on_unreadable = match store.on_unreadable.as_deref() {
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
    StoreSettings {
        path: base.join(store.path.as_deref().unwrap_or(DEFAULT_STORE_PATH)),
        key: store
            .key
            .clone()
            .filter(|k| !k.is_empty())
            .map(SecretString::from),
        on_unreadable,
        redis: redis_settings(
            raw,
            (src, problems),
            base,
            (lease_ttl, poll_interval),
            ca_file,
        ),
    }
}

/// The `log` section.
fn log(raw: &RawFile, src: &Source, problems: &mut Problems) -> LogSettings {
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
    LogSettings {
        level: raw.log.level.clone().unwrap_or_else(|| "info".into()),
        format,
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
