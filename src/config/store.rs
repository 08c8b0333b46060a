//! The `store:` section: the embedded database (default) or Redis, with their defaults and the
//! checks that each field fits the chosen backend.

use secrecy::SecretString;
use std::path::PathBuf;
use std::time::Duration;

/// Default database file, relative to the config file's directory (earlier versions'
/// `state/tokens.bin` beside it is migrated on the first start).
pub const DEFAULT_STORE_PATH: &str = "state/tokens.db";
/// Default lifetime of a refresh lease in Redis: how long a replica killed mid-refresh can
/// hold the others back. Token requests under a lease are cut off before it ends.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
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
    pub redis: Option<super::redis::RedisSettings>,
}
