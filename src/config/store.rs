//! The `store:` section: the embedded database (default) or Redis, with their defaults and the
//! checks that each field fits the chosen backend.

use super::raw::RawFile;
use super::source::{Problems, Source};
use secrecy::SecretString;
use std::path::PathBuf;
use std::time::Duration;

/// Default database file, relative to the config file's directory (earlier versions'
/// `state/tokens.bin` beside it is migrated on the first start).
pub const DEFAULT_STORE_PATH: &str = "state/tokens.db";
/// Default prefix of every Redis key and channel tokenwarden uses.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "tokenwarden:";
/// Default lifetime of a refresh lease in Redis: how long a replica killed mid-refresh can
/// hold the others back. Token requests under a lease are cut off before it ends.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// Shortest lease: a token request and the write of its result (which may wait out one
/// Redis timeout, 2 s) must both fit in it.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(5);
/// Default interval at which replicas re-read Redis in case a pushed update was missed.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// What to do when the store cannot be read (damaged, another key, a newer schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Refuse to start (default).
    Refuse,
    /// Move the database aside and start with every connection unauthorised.
    StartUnauthorized,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The database's path (unused with Redis).
    pub path: PathBuf,
    pub key: Option<SecretString>,
    pub on_unreadable: Unreadable,
    /// None: the embedded database (default).
    pub redis: Option<RedisSettings>,
}

/// `store: { backend: redis, … }`: token sets, leases and pending states shared by replicas.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL; may carry a password, so it is a secret.
    pub url: SecretString,
    /// `host:port` of the URL, for logs and errors.
    pub endpoint: String,
    pub key_prefix: String,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    /// `store.migrate_legacy`: a replica holding no token set for a connection adopts (and
    /// re-seals) a value an earlier version wrote, bound to its connection only. Off, such a
    /// value is refused: it may be an old grant written back to roll the grant back.
    pub migrate_legacy: bool,
}

/// The Redis backend's settings, when `store.backend` is `redis`; the problems of a store
/// section whose fields do not fit its backend.
pub(super) fn redis_settings(
    raw: &RawFile,
    src: &Source,
    problems: &mut Problems,
    lease_ttl: Duration,
    poll_interval: Duration,
) -> Option<RedisSettings> {
    let store = &raw.store;
    let redis_only = [
        ("store.url", store.url.is_some()),
        ("store.key_prefix", store.key_prefix.is_some()),
        ("store.lease_ttl", store.lease_ttl.is_some()),
        ("store.poll_interval", store.poll_interval.is_some()),
        ("store.migrate_legacy", store.migrate_legacy.is_some()),
    ];
    match store.backend.as_deref() {
        // `file`: the name of the default backend before it became a database.
        None | Some("sqlite" | "file") => {
            for (path, given) in redis_only {
                if given {
                    problems.push(src.problem(path, "only applies with `backend: redis`"));
                }
            }
            return None;
        }
        Some("redis") => {}
        Some(other) => {
            let other = src.quote("store.backend", other);
            problems.push(src.problem(
                "store.backend",
                format!("unknown value {other}: expected sqlite or redis"),
            ));
            return None;
        }
    }
    if store.path.is_some() {
        problems.push(src.problem(
            "store.path",
            "only applies with `backend: sqlite`; Redis holds the tokens",
        ));
    }
    if store.key.as_deref().is_none_or(str::is_empty) {
        problems.push(src.problem(
            "store.key",
            "is required with `backend: redis` (every replica needs the same key)",
        ));
    }
    if lease_ttl < MIN_LEASE_TTL {
        problems.push(src.problem(
            "store.lease_ttl",
            format!(
                "must be at least {}s (a token request and the write of its result must fit in it)",
                MIN_LEASE_TTL.as_secs()
            ),
        ));
    }
    if poll_interval.is_zero() {
        problems.push(src.problem("store.poll_interval", "must be more than 0"));
    }
    let (url, endpoint) = redis_url(store.url.as_deref(), src, problems)?;
    Some(RedisSettings {
        url: SecretString::from(url.to_owned()),
        endpoint,
        key_prefix: store
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.into()),
        lease_ttl,
        poll_interval,
        migrate_legacy: store.migrate_legacy.unwrap_or(false),
    })
}

/// `store.url` and its `host:port`, or None with the problem (the URL is never quoted: it
/// may carry a password).
fn redis_url<'a>(
    url: Option<&'a str>,
    src: &Source,
    problems: &mut Problems,
) -> Option<(&'a str, String)> {
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        problems.push(src.problem(
            "store.url",
            "is required with `backend: redis`, such as redis://127.0.0.1:6379/0",
        ));
        return None;
    };
    if url.starts_with("rediss://") {
        problems.push(src.problem(
            "store.url",
            "TLS to Redis (rediss://) is not built into this version: reach Redis over loopback or a private network, or through a local TLS tunnel",
        ));
        return None;
    }
    let Some(endpoint) = redis_endpoint(url) else {
        problems.push(src.problem("store.url", "is not a redis://HOST[:PORT][/DB] URL"));
        return None;
    };
    Some((url, endpoint))
}

/// `host:port` of a `redis://[user:password@]host[:port][/db]` URL (or `rediss://`).
fn redis_endpoint(url: &str) -> Option<String> {
    const DEFAULT_REDIS_PORT: u16 = 6379;
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))?;
    // A password may hold `/` or `?` (base64 does): the host starts after the last `@`.
    let after_userinfo = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = after_userinfo.split(['/', '?']).next()?;
    if host_port.is_empty() {
        return None;
    }
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'));
    Some(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:{DEFAULT_REDIS_PORT}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_endpoints_never_show_the_password() {
        assert_eq!(
            redis_endpoint("redis://127.0.0.1:6380/0").as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(
            redis_endpoint("rediss://:pw@cache.internal").as_deref(),
            Some("cache.internal:6379")
        );
        assert_eq!(
            redis_endpoint("redis://user:p@ss:w@[::1]:7000").as_deref(),
            Some("[::1]:7000")
        );
        assert_eq!(
            redis_endpoint("redis://:ab/cd?e@redis:6380/1").as_deref(),
            Some("redis:6380"),
            "a password with / and ? never shows"
        );
        assert_eq!(redis_endpoint("http://127.0.0.1"), None);
        assert_eq!(redis_endpoint("redis://"), None);
    }
}
