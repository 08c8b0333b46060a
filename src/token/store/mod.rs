//! Durable storage of OAuth token sets, and of the definitions of runtime connections (the
//! connection API's: `crate::runtime`).
//!
//! Every token set the proxy obtains is written through a [`TokenStore`] *before* it is used,
//! so a restart (or a crash at any instant) never loses a token that an upstream may already
//! consider current — which matters for providers that rotate refresh tokens on every use.
//!
//! Implementations:
//!
//! * [`SqliteStore`] — the default: an embedded SQLite database, one row per connection
//!   (and per connection and subject for per-user grants), one durable transaction per
//!   change; token sets, definitions and grants sealed (XChaCha20-Poly1305) row by row.
//!   Schema and durability in its module; on its first start it migrates the encrypted
//!   file of earlier versions (read by the `legacy` module, layout in `format`).
//! * [`MemoryStore`] — an in-memory map for tests; nothing survives the process.
//! * [`RedisStore`] — token sets, refresh leases, pending states and runtime-connection
//!   definitions in Redis, shared by replicas; async, with its own layout (see its module).
//!
//! [`Backend`] is the configured one of these, as the refresher and the callback use it.
//!
//! Module layout: `error` (the [`StoreError`] callers act on), `key` (store key parsing, key
//! ids, generated key files), `atomic` (durable file creation, modes), `lock` (one writing
//! process per local store), `binding` (what a sealed record is bound to), `record`
//! (encryption of one token set or definition), `sqlite` and `memory` (the stores), `schema`
//! (the database's tables and connections), `commit` (its writing thread, group commit),
//! `migrate` (the earlier file into the database), `legacy` and `format` (reading that file),
//! `layout` (the magic and format versions `format` and `binding` share).

mod atomic;
mod binding;
mod commit;
mod error;
mod format;
mod key;
mod layout;
mod legacy;
mod lock;
mod memory;
mod migrate;
mod record;
pub mod redis;
mod schema;
mod sqlite;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod legacy_tests;
#[cfg(test)]
mod migrate_tests;
#[cfg(test)]
mod sqlite_tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;

pub use self::redis::RedisStore;
pub use error::StoreError;
pub use key::KEY_LEN;
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// Which token set: a connection's own grant (`subject` empty) or the grant of one end user
/// of a per-user connection (`grants: per_user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantRef<'a> {
    pub connection: &'a str,
    pub subject: &'a str,
}

impl<'a> GrantRef<'a> {
    /// The connection's own grant.
    pub fn own(connection: &'a str) -> GrantRef<'a> {
        GrantRef {
            connection,
            subject: "",
        }
    }

    /// The grant of the end user `subject`.
    pub fn user(connection: &'a str, subject: &'a str) -> GrantRef<'a> {
        GrantRef {
            connection,
            subject,
        }
    }

    /// Whether it is the connection's own grant.
    pub fn is_own(&self) -> bool {
        self.subject.is_empty()
    }
}

/// Placeholder printed by `Debug` in place of secret material.
const REDACTED: &str = "****";

/// What is persisted for one connection.
#[derive(Clone)]
pub struct StoredToken {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    /// Unix milliseconds; None = long-lived.
    pub expires_at_ms: Option<u64>,
    pub scope: Option<String>,
    /// Unix milliseconds when the token was obtained: replicas that adopt a short-lived
    /// token must see its true age, or they refresh it again at once.
    pub obtained_at_ms: u64,
    /// The identity of the connection definition it was obtained under
    /// (`Connection::grant_identity`); None in a set an earlier version wrote.
    pub definition: Option<[u8; 32]>,
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_token", &REDACTED)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| REDACTED),
            )
            .field("expires_at_ms", &self.expires_at_ms)
            .field("scope", &self.scope)
            .field("obtained_at_ms", &self.obtained_at_ms)
            .field("definition", &self.definition.map(|_| REDACTED))
            .finish()
    }
}

/// Whether `text` is a usable store key (32 bytes, base64); the value is never echoed.
pub fn check_key(text: &SecretString) -> Result<(), StoreError> {
    key::StoreKey::parse(text, std::path::Path::new("store.key")).map(drop)
}

/// The store token sets are written to.
#[derive(Clone)]
pub enum Backend {
    /// This process's own store (the embedded database; memory in tests).
    Local(Arc<dyn TokenStore>),
    /// Redis, shared by every replica.
    Shared(Arc<RedisStore>),
}

impl Backend {
    /// The backend's name and, with Redis, whether it answers and its last error — for
    /// status, readiness and metrics.
    pub fn health(&self) -> (&'static str, bool, Option<Arc<String>>) {
        match self {
            Backend::Local(_) => ("sqlite", true, None),
            Backend::Shared(redis) => {
                let (up, error) = redis.health();
                ("redis", up, error)
            }
        }
    }
}

impl Backend {
    /// Every runtime connection's definition, opened, and (Redis) the change generation
    /// they were read at (0 for this process's own store).
    pub async fn load_definitions(
        &self,
    ) -> Result<(u64, Vec<(String, DefinitionBytes)>), StoreError> {
        match self {
            Backend::Local(store) => {
                let store = Arc::clone(store);
                Ok((0, blocking(move || store.load_definitions()).await?))
            }
            Backend::Shared(redis) => redis.load_definitions().await,
        }
    }

    /// One runtime connection's definition, opened; None when it has none.
    pub async fn read_definition(
        &self,
        connection: &str,
    ) -> Result<Option<DefinitionBytes>, StoreError> {
        match self {
            Backend::Local(store) => {
                let (store, connection) = (Arc::clone(store), connection.to_owned());
                blocking(move || store.read_definition(&connection)).await
            }
            Backend::Shared(redis) => redis.read_definition(connection).await,
        }
    }

    /// Durably writes a runtime connection's definition (sealed by the store).
    pub async fn put_definition(
        &self,
        connection: &str,
        definition: DefinitionBytes,
    ) -> Result<(), StoreError> {
        match self {
            Backend::Local(store) => {
                let (store, connection) = (Arc::clone(store), connection.to_owned());
                blocking(move || store.put_definition(&connection, &definition)).await
            }
            Backend::Shared(redis) => redis
                .put_definition(connection, &definition)
                .await
                .map(drop),
        }
    }

    /// Durably writes a new runtime connection's definition; false, nothing written, when
    /// the shared store holds one already (another replica created that key meanwhile).
    /// This process's own store has one writer, which checks for the key itself.
    pub async fn create_definition(
        &self,
        connection: &str,
        definition: DefinitionBytes,
    ) -> Result<bool, StoreError> {
        match self {
            Backend::Local(_) => self
                .put_definition(connection, definition)
                .await
                .map(|()| true),
            Backend::Shared(redis) => Ok(redis
                .create_definition(connection, &definition)
                .await?
                .is_some()),
        }
    }

    /// Durably removes a runtime connection's definition, its token set and its end
    /// users' grants.
    pub async fn remove_definition(&self, connection: &str) -> Result<(), StoreError> {
        match self {
            Backend::Local(store) => {
                let (store, connection) = (Arc::clone(store), connection.to_owned());
                blocking(move || store.remove_definition(&connection)).await
            }
            Backend::Shared(redis) => {
                redis.remove_definition(connection).await?;
                // Its end users' grants go with it (each leaves a tombstone, so that a
                // refresh in flight on another replica cannot write it back).
                redis.remove_grants(connection).await
            }
        }
    }
}

impl Backend {
    /// A per-user grant's stored set (generation 0 in this process's own store); a
    /// deleted one (Redis) is [`StoreError::Deleted`].
    pub async fn read_grant(
        &self,
        grant: GrantRef<'_>,
    ) -> Result<Option<redis::Versioned>, StoreError> {
        match self {
            Backend::Local(store) => {
                let store = Arc::clone(store);
                let (c, s) = (grant.connection.to_owned(), grant.subject.to_owned());
                let token = blocking(move || store.read_grant(&c, &s)).await?;
                Ok(token.map(|token| redis::Versioned {
                    generation: 0,
                    token,
                }))
            }
            Backend::Shared(redis) => redis.read(grant, 0).await,
        }
    }

    /// Deletes a per-user grant; whether there was one.
    pub async fn remove_grant(&self, grant: GrantRef<'_>) -> Result<bool, StoreError> {
        match self {
            Backend::Local(store) => {
                let store = Arc::clone(store);
                let (c, s) = (grant.connection.to_owned(), grant.subject.to_owned());
                blocking(move || store.remove_grant(&c, &s)).await
            }
            Backend::Shared(redis) => redis.remove_grant(grant).await,
        }
    }

    /// A page of a per-user connection's grants ([`TokenStore::grant_page`]).
    pub async fn grant_page(
        &self,
        connection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantListing>, StoreError> {
        match self {
            Backend::Local(store) => {
                let store = Arc::clone(store);
                let (c, a) = (connection.to_owned(), after.map(str::to_owned));
                blocking(move || store.grant_page(&c, a.as_deref(), limit)).await
            }
            Backend::Shared(redis) => redis.grant_page(connection, after, limit).await,
        }
    }

    /// A per-user connection's grants, counted ([`TokenStore::grant_counts`]).
    pub async fn grant_counts(
        &self,
        connection: &str,
        now_ms: u64,
    ) -> Result<GrantCounts, StoreError> {
        match self {
            Backend::Local(store) => {
                let store = Arc::clone(store);
                let c = connection.to_owned();
                blocking(move || store.grant_counts(&c, now_ms)).await
            }
            Backend::Shared(redis) => redis.grant_counts(connection, now_ms).await,
        }
    }
}

/// Runs a store call off the runtime; a panic in it is re-raised.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Durable storage of token sets and runtime-connection definitions, keyed by connection
/// key, for one process. Implementations
/// are called from blocking context (the caller uses spawn_blocking).
pub trait TokenStore: Send + Sync + 'static {
    /// Every stored token set, keyed by connection key. A store that was never written is empty.
    fn load_all(&self) -> Result<HashMap<String, StoredToken>, StoreError>;
    /// Durably replaces the token set of `connection` (returns only after the data is on disk).
    fn put(&self, connection: &str, token: &StoredToken) -> Result<(), StoreError>;
    /// Durably removes the token set of `connection`; removing an absent connection is not an error.
    fn remove(&self, connection: &str) -> Result<(), StoreError>;

    /// Every runtime connection's definition (created through the connection API), opened:
    /// the bytes given to [`TokenStore::put_definition`], by connection key.
    fn load_definitions(&self) -> Result<Vec<(String, DefinitionBytes)>, StoreError>;
    /// One runtime connection's definition, opened; None when it has none.
    fn read_definition(&self, connection: &str) -> Result<Option<DefinitionBytes>, StoreError>;
    /// Durably writes the definition of the runtime connection `connection` (returns only
    /// after it is on disk). It is sealed with the store key, the connection key as
    /// associated data: it holds the connection's secrets.
    fn put_definition(&self, connection: &str, definition: &[u8]) -> Result<(), StoreError>;
    /// Durably removes the definition, the token set and every per-user grant of
    /// `connection` in one step; removing an absent one is not an error.
    fn remove_definition(&self, connection: &str) -> Result<(), StoreError>;

    /// The token set of the end user `subject` of the per-user connection `connection`
    /// (`grants: per_user`), opened; None when the subject has none.
    fn read_grant(
        &self,
        connection: &str,
        subject: &str,
    ) -> Result<Option<StoredToken>, StoreError>;
    /// Durably replaces that token set (returns only after it is on disk). Sealed with the
    /// connection key *and* the subject as associated data ([`binding::Binding`]), so a
    /// user's set never opens as another's.
    fn put_grant(
        &self,
        connection: &str,
        subject: &str,
        token: &StoredToken,
    ) -> Result<(), StoreError>;
    /// Durably removes it; whether there was one.
    fn remove_grant(&self, connection: &str, subject: &str) -> Result<bool, StoreError>;
    /// At most `limit` of the connection's grants, by subject in ascending byte order,
    /// starting after `after` (exclusive; None: from the first) — without opening them.
    fn grant_page(
        &self,
        connection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantListing>, StoreError>;
    /// How many grants the connection has, and how many of them expired before `now_ms`
    /// (Unix milliseconds) — without opening them.
    fn grant_counts(&self, connection: &str, now_ms: u64) -> Result<GrantCounts, StoreError>;
}

/// One stored per-user grant as listings show it: never a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantListing {
    pub subject: String,
    /// Unix milliseconds the access token expires (None: long-lived).
    pub expires_at_ms: Option<u64>,
}

/// A per-user connection's stored grants, counted ([`TokenStore::grant_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantCounts {
    pub total: u64,
    /// Of them, those whose access token has expired (a request refreshes it).
    pub expired: u64,
}

/// An opened runtime-connection definition: JSON with the connection's secrets in it,
/// wiped from memory when dropped.
pub type DefinitionBytes = secrecy::zeroize::Zeroizing<Vec<u8>>;

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers shared by the store tests.

    use super::StoredToken;
    use secrecy::{ExposeSecret, SecretString};

    /// A token set whose every field is derived from `tag`, so two tags never compare equal.
    pub fn sample_token(tag: &str) -> StoredToken {
        StoredToken {
            access_token: SecretString::from(format!("access-{tag}")),
            refresh_token: Some(SecretString::from(format!("refresh-{tag}"))),
            expires_at_ms: Some(1_700_000_000_000 + tag.len() as u64),
            scope: Some(format!("scope:{tag}")),
            obtained_at_ms: 1_600_000_000_000,
            definition: Some([tag.len() as u8; 32]),
        }
    }

    /// Field-by-field equality, secrets included (`StoredToken` has no `PartialEq` on purpose).
    pub fn same_token(a: &StoredToken, b: &StoredToken) -> bool {
        a.access_token.expose_secret() == b.access_token.expose_secret()
            && a.refresh_token
                .as_ref()
                .map(|s| s.expose_secret().to_owned())
                == b.refresh_token
                    .as_ref()
                    .map(|s| s.expose_secret().to_owned())
            && a.expires_at_ms == b.expires_at_ms
            && a.scope == b.scope
            && a.obtained_at_ms == b.obtained_at_ms
            && a.definition == b.definition
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::sample_token;

    #[test]
    fn debug_redacts_secrets() {
        let printed = format!("{:?}", sample_token("dbg"));
        assert!(!printed.contains("access-dbg"), "{printed}");
        assert!(!printed.contains("refresh-dbg"), "{printed}");
        assert!(printed.contains("access_token: \"****\""), "{printed}");
        assert!(
            printed.contains("refresh_token: Some(\"****\")"),
            "{printed}"
        );
        assert!(printed.contains("scope:dbg"), "{printed}");
    }
}
