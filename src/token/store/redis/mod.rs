//! [`RedisStore`]: token sets, refresh leases, pending authorization states and
//! runtime-connection definitions in Redis, shared by every replica that serves the same
//! connections.
//!
//! Layout, with the key prefix `P` (default `tokenwarden:`) and a connection key `k`; the
//! `{k}` hash tag keeps one connection's keys in one Cluster slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P{k}:token` | hash | `gen`: the generation, +1 on every write, at most [`MAX_GENERATION`]; `sealed`: key id ‖ nonce ‖ ciphertext, at most [`MAX_SEALED_LEN`] bytes |
//! | `P{k}:lease` | string, `PX` lease TTL | the holder of the refresh lease: `<pid>-<random>` |
//! | `Pstate:<sha256 of the state>` | string, `PX` state TTL | a sealed pending authorization |
//! | channel `Ptokens` | pub/sub | `<gen> <k>` after every write |
//! | `P{k}:connection` | string | a runtime connection's definition, sealed: key id ‖ nonce ‖ ciphertext, at most [`MAX_SEALED_LEN`] bytes (`connections`) |
//! | `Pconnections:gen` | string (counter) | the change generation: +1 on every create, change or delete of a runtime connection, at most [`MAX_GENERATION`] |
//! | `Pconnections:changes` | sorted set | member `k`, score the change generation of its latest change (deletes included) |
//! | channel `Pconnections` | pub/sub | `<gen> <k>` after every change of a runtime connection |
//! | `P{k}:grant:<subject>`, `P{k}:grant-lease:<subject>`, `P{k}:grants`, `P{k}:grant-expiry` | hash, string, sorted sets | a per-user grant, its lease, and the connection's two grant indexes (`grants`) |
//! | channel `Pgrants` | pub/sub | `<gen> <k> <subject>` after every grant write or deletion |
//!
//! With `store.cluster` (a Redis Cluster), every key above keeps its name except the three
//! runtime-connection keys, which the scripts touch together (and a read touches many
//! definitions at once): they share the hash tag `{runtime:connections}` ([`RUNTIME_TAG`]),
//! so Cluster puts them in one slot:
//!
//! | key (cluster) | holds |
//! |---|---|
//! | `P{runtime:connections}:connection:k` | as `P{k}:connection` |
//! | `P{runtime:connections}:gen` | as `Pconnections:gen` |
//! | `P{runtime:connections}:changes` | as `Pconnections:changes` |
//!
//! Every other script and pipeline touches one connection's keys (one `{k}` slot); a state
//! is one key. Pub/sub channels are not keys (classic `PUBLISH` reaches every node). See
//! `cluster` for how commands are routed.
//!
//! Token sets are sealed as the file store seals them (XChaCha20-Poly1305), with the
//! connection key, the subject (empty: per-user grants will fill it), the key prefix `P` and
//! the generation as associated data (see the `binding` module), so Redis never holds a token
//! in clear and a value only opens as what it was written: not under another `gen`, prefix or
//! connection. A value that does not is refused and logged, never adopted (`tokens`).
//!
//! Values of an earlier version were bound to their connection only: nothing tells a value
//! never upgraded from an old grant written back to roll the grant back, and a replica that
//! adopted one would re-seal it and spread it to every other. So they are refused, unless
//! `store.migrate_legacy: true` is set for the first start after the upgrade: then a replica
//! that holds no token set for the connection adopts such a value and re-seals it at once at
//! the next generation (a replica that holds a set still refuses it). Remove the setting once
//! every connection has been read (the log says "re-sealed" for each).
//!
//! Every write goes through a Lua script (`scripts`): a refresh's write is fenced — refused
//! unless the writer still holds the lease and Redis holds nothing newer than the set the
//! refresh started from — and publishes the new generation in the same step. A set with a
//! new refresh token, with `store.min_replicas_acked`, is announced only after `WAIT`
//! (`tokens`). Commands go to the node `link` keeps — one server, or the master the
//! sentinels name, looked up again when it is gone — over TLS and as an ACL user when so
//! configured; they time out after [`RESPONSE_TIMEOUT`], and a lost connection is made
//! again by the next command, at most every [`dial::REDIAL_DELAY`] (`dial`). An error is
//! told in words that never quote a value ([`KindText`]); a lost connection is probed
//! once to learn why (TLS, authentication).
//! [`RedisStore::health`] is what status, readiness and metrics show.

mod cluster;
mod connections;
mod dial;
mod grants;
mod link;
mod scripts;
mod states;
mod tokens;
mod updates;

pub use connections::RUNTIME_TAG;
pub use tokens::WAIT_TIMEOUT_MS;
pub use updates::{parse_update, Updates};

use super::key::StoreKey;
use super::{GrantRef, StoreError, StoredToken};
use crate::config::{RedisSettings, RedisTarget};
use arc_swap::ArcSwapOption;
use base64::Engine as _;
use rand::RngCore;
use secrecy::SecretString;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest wait for one Redis command; beyond it Redis counts as down.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait to open a connection to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest time between two direct connections made to learn why a connection was lost.
const DIAGNOSIS_INTERVAL: Duration = Duration::from_secs(5);
/// Random bytes in a lease holder id.
const HOLDER_BYTES: usize = 16;
/// The highest generation written or adopted: 2^53 - 1, the largest integer a Lua number
/// (a double) holds exactly, so the scripts never compute with a rounded one.
pub const MAX_GENERATION: u64 = (1 << 53) - 1;
/// The longest `sealed` field or sealed definition read or written (256 KiB; a token set or
/// a definition is a few KiB): a longer one is refused without being fetched.
pub const MAX_SEALED_LEN: usize = 256 * 1024;

/// The right to run one token request for a connection, until `deadline`.
pub struct Lease {
    key: String,
    holder: String,
    /// When the lease ends in Redis (measured from before it was taken).
    pub deadline: Instant,
}

/// The outcome of a fenced write.
#[derive(Debug, PartialEq, Eq)]
pub enum Commit {
    /// Written as this generation (with `min_replicas_acked`, held by that many replicas),
    /// and published.
    Written(u64),
    /// Written as this generation and published, but fewer than `min_replicas_acked`
    /// replicas acknowledged it in time.
    Unreplicated { generation: u64, acked: u32 },
    /// Refused: the lease was lost or a newer token set is stored.
    Fenced,
}

/// A token set as stored, with its generation.
pub struct Versioned {
    pub generation: u64,
    pub token: StoredToken,
}

pub struct RedisStore {
    link: Arc<link::Link>,
    key: StoreKey,
    prefix: String,
    /// Where Redis is, as configured (`host:port`, or the sentinels' master name).
    configured: String,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    /// `store.migrate_legacy`: values of an earlier version may be adopted (`tokens`).
    migrate_legacy: bool,
    /// `store.cluster`: the runtime-connection keys share one hash tag (`connections`).
    cluster: bool,
    /// Replicas that must hold a token set with a refresh token before it counts as
    /// written (`tokens`).
    min_replicas_acked: u32,
    up: AtomicBool,
    /// Set when a command succeeds after a failure; taken by the follower's poll
    /// ([`RedisStore::take_recovered`]).
    recovered: AtomicBool,
    last_error: ArcSwapOption<String>,
    /// The cause a direct connection found for the last lost connection, and when.
    diagnosis: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl RedisStore {
    /// Parses the URL and the key; connects lazily (a Redis that is down at start-up is
    /// retried, not fatal).
    pub fn open(settings: &RedisSettings, key: &SecretString) -> Result<RedisStore, StoreError> {
        let key = StoreKey::parse(key, Path::new("store.key"))?;
        let link = link::Link::open(settings).map_err(|e| StoreError::Unavailable {
            endpoint: settings.endpoint.clone(),
            action: "setting up the connection",
            reason: e.kind_text(),
        })?;
        Ok(RedisStore {
            link: Arc::new(link),
            key,
            prefix: settings.key_prefix.clone(),
            configured: settings.endpoint.clone(),
            lease_ttl: settings.lease_ttl,
            poll_interval: settings.poll_interval,
            migrate_legacy: settings.migrate_legacy,
            cluster: matches!(settings.target, RedisTarget::Cluster(_)),
            min_replicas_acked: settings.min_replicas_acked,
            up: AtomicBool::new(true),
            recovered: AtomicBool::new(false),
            last_error: ArcSwapOption::empty(),
            diagnosis: tokio::sync::Mutex::new(None),
        })
    }

    /// `host:port` of the server in use, for logs: with sentinels, the master found last
    /// (the master name before one is found); a cluster's seed nodes.
    pub fn endpoint(&self) -> String {
        self.link
            .endpoint()
            .unwrap_or_else(|| self.configured.clone())
    }

    /// A connection to the node that takes writes (with sentinels, the master, looked up
    /// when unknown; in a cluster, each key's slot's master).
    async fn con(&self) -> Result<link::Con, StoreError> {
        self.run("connecting", self.link.connection()).await
    }

    /// `store.min_replicas_acked`.
    pub fn min_replicas_acked(&self) -> u32 {
        self.min_replicas_acked
    }

    /// Whether the last command succeeded, and the last failure.
    pub fn health(&self) -> (bool, Option<Arc<String>>) {
        (self.up.load(Ordering::Relaxed), self.last_error.load_full())
    }

    /// Records the outcome of a command (also used by the follower's own connection).
    pub fn note<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    self.recovered.store(true, Ordering::Relaxed);
                    self.last_error.store(None);
                    tracing::info!(redis = %self.endpoint(), "token store reachable again");
                }
            }
            Err(e) => {
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "token store degraded: tokens held stay in use");
                }
                self.last_error.store(Some(Arc::new(e.to_string())));
            }
        }
    }

    /// Whether a command succeeded after a failure since the last call: the store is back
    /// although the follower's subscription never broke (a cluster node that restarted
    /// while the subscription was on another, or a cluster that was down as a whole).
    pub fn take_recovered(&self) -> bool {
        self.recovered.swap(false, Ordering::Relaxed)
    }

    /// Runs one command, mapping its error (never quoting a value) and noting the outcome.
    pub(super) async fn run<T>(
        &self,
        action: &'static str,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let result = match command.await {
            Ok(value) => Ok(value),
            Err(e) => Err(StoreError::Unavailable {
                endpoint: self.endpoint(),
                action,
                reason: self.reason(&e).await,
            }),
        };
        self.note(&result);
        result
    }

    /// Why `error` happened, in words. A connection the manager lost or could not make
    /// says no more than that, so one direct connection (at most every
    /// [`DIAGNOSIS_INTERVAL`]) learns the cause: a TLS failure, `WRONGPASS`, a refused or
    /// unreachable node.
    async fn reason(&self, error: &redis::RedisError) -> String {
        let words = error.kind_text();
        if !(error.is_connection_dropped() || error.is_io_error()) || error.is_timeout() {
            return words;
        }
        let mut last = self.diagnosis.lock().await;
        if let Some((at, cause)) = last.as_ref() {
            if at.elapsed() < DIAGNOSIS_INTERVAL {
                return cause.clone();
            }
        }
        // A failed lookup of the master already says why.
        if !self.link.probeable() {
            return words;
        }
        let cause = match self.link.probe().await {
            Err(cause) => cause,
            Ok(()) => words,
        };
        *last = Some((Instant::now(), cause.clone()));
        cause
    }

    /// The hash of a token set: `P{k}:token`, or `P{k}:grant:<subject>`.
    fn token_key(&self, grant: GrantRef<'_>) -> String {
        let (prefix, connection) = (&self.prefix, grant.connection);
        if grant.is_own() {
            format!("{prefix}{{{connection}}}:token")
        } else {
            format!("{prefix}{{{connection}}}:grant:{}", grant.subject)
        }
    }

    /// The refresh lease of a token set: `P{k}:lease`, or `P{k}:grant-lease:<subject>`.
    fn lease_key(&self, grant: GrantRef<'_>) -> String {
        let (prefix, connection) = (&self.prefix, grant.connection);
        if grant.is_own() {
            format!("{prefix}{{{connection}}}:lease")
        } else {
            format!("{prefix}{{{connection}}}:grant-lease:{}", grant.subject)
        }
    }

    /// The pub/sub channel of token writes.
    pub fn channel(&self) -> String {
        format!("{}tokens", self.prefix)
    }

    /// The pub/sub channel of per-user grant writes and deletions.
    pub fn grants_channel(&self) -> String {
        format!("{}grants", self.prefix)
    }

    /// Where a write of `grant` is published, and what follows the generation in the
    /// message: `Ptokens` `<k>`, or `Pgrants` `<k> <subject>` (subjects hold no space).
    fn announce(&self, grant: GrantRef<'_>) -> (String, String) {
        if grant.is_own() {
            (self.channel(), grant.connection.to_owned())
        } else {
            (
                self.grants_channel(),
                format!("{} {}", grant.connection, grant.subject),
            )
        }
    }

    /// Takes the refresh lease of `grant` (`SET NX PX`); None while another holds it.
    pub async fn lease(&self, grant: GrantRef<'_>) -> Result<Option<Lease>, StoreError> {
        let key = self.lease_key(grant);
        let mut bytes = [0u8; HOLDER_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        // The pid tells an operator (and the tests) which process holds it.
        let holder = format!(
            "{}-{}",
            std::process::id(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let deadline = Instant::now() + self.lease_ttl;
        let mut con = self.con().await?;
        let ttl_ms = u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let taken: Option<String> = self
            .run(
                "taking the refresh lease",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut con),
            )
            .await?;
        Ok(taken.map(|_| Lease {
            key,
            holder,
            deadline,
        }))
    }

    /// Gives the lease back (only if still ours). A failure leaves it to expire.
    pub async fn release(&self, lease: Lease) {
        let Ok(mut con) = self.con().await else {
            return;
        };
        let mut call = scripts::Call::new(&scripts::RELEASE);
        call.key(&lease.key).arg(&lease.holder);
        let _ = self
            .run::<i64>("releasing the refresh lease", call.invoke(&mut con))
            .await;
    }
}

pub(super) fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

/// Checks the Redis settings the way [`RedisStore::open`] reads them — the URL, the
/// sentinels, the TLS certificates and key — without contacting Redis (for `check`); the URL
/// and password are never quoted.
pub fn check(settings: &RedisSettings) -> Result<(), StoreError> {
    link::Link::open(settings)
        .map(drop)
        .map_err(|e| StoreError::Unavailable {
            endpoint: settings.endpoint.clone(),
            action: "reading the settings",
            reason: e.kind_text(),
        })
}

pub(super) fn bad_value(key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::BadValue {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// The I/O error inside `error`, which the redis client keeps behind an `Arc`.
fn io_cause(error: &redis::RedisError) -> Option<&std::io::Error> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let cause = std::error::Error::source(error)?;
    cause.downcast_ref::<std::io::Error>().or_else(|| {
        cause
            .downcast_ref::<Shared>()
            .and_then(|shared| shared.downcast_ref::<std::io::Error>())
    })
}

/// A Redis error as words without any value it may carry.
pub(super) trait KindText {
    fn kind_text(&self) -> String;
}

impl KindText for redis::RedisError {
    fn kind_text(&self) -> String {
        let recent = io_cause(self)
            .and_then(|io| io.get_ref())
            .and_then(|e| e.downcast_ref::<dial::FailedRecently>());
        if let Some(recent) = recent {
            recent.0.clone()
        } else if let Some(tls) = crate::tls::in_words(self) {
            tls
        } else if self.is_timeout() {
            "timed out".into()
        } else if self.is_connection_refusal() {
            "connection refused".into()
        } else if self.is_connection_dropped() {
            "connection lost".into()
        } else if let Some(io) = io_cause(self) {
            // Such as a name that does not resolve: no value of a command in it.
            format!("connection failed: {io}")
        } else if self.is_io_error() {
            "connection lost".into()
        } else {
            // The server's error code and message (e.g. WRONGPASS, NOAUTH, READONLY);
            // redis-rs puts no command arguments in them.
            self.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_words_with_their_cause() {
        let io = std::io::Error::other("failed to lookup address");
        assert_eq!(
            redis::RedisError::from(io).kind_text(),
            "connection failed: failed to lookup address"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            redis::RedisError::from(refused).kind_text(),
            "connection refused"
        );
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        );
        assert_eq!(
            redis::RedisError::from(tls).kind_text(),
            "TLS: the server's certificate has expired"
        );
        // While a node is not tried again, commands fail with the last try's words as they
        // were, not wrapped as a new I/O failure.
        let recent = dial::failed_recently("TLS: the server's certificate has expired");
        assert_eq!(
            recent.kind_text(),
            "TLS: the server's certificate has expired"
        );
    }
}
