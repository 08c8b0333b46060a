//! Connections at runtime: connections created, changed and deleted through the connection
//! API (Fides' shapes, `admin::connections`) instead of the config file. Each is a
//! [`Definition`] — a connector type (a template: an unchanged Fides file named under
//! `templates:`), the instance's names and its secrets — kept in the store, sealed with the
//! store key ([`crate::token::store`]), and built into a running connection as a file
//! connection is ([`build`]).
//!
//! Every change is written to the store before it is acknowledged, then applied to the
//! running registry as one insert or remove ([`crate::reload`]'s `put_runtime` and
//! `remove_runtime`): nothing is rebuilt, and the request path sees the new registry on
//! its next lookup. With Redis, every other replica applies it too when the change is
//! published (`follow`). At start-up every stored definition is built again
//! ([`Runtime::load`]).
//!
//! Changes to one key are serialized (a second one while the first is under way is
//! refused with 409); changes to different keys run side by side.

pub mod build;
pub mod follow;

pub use build::FieldError;

use crate::config::{Auth, Connection, Definition, Grant, OAuth2, Template};
use crate::oauth::TokenClient;
use crate::registry::Entry;
use crate::reload::Reloader;
use crate::token::store::{Backend, StoreError};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a connection API request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("connector type `{0}` is not among the templates")]
    UnknownType(String),
    #[error("the request has {} problem(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("connection `{0}` already exists")]
    Exists(String),
    #[error("connection `{key}` is defined in {}: change it there", .file.display())]
    FromFile { key: String, file: PathBuf },
    #[error("no connection `{0}`")]
    NotFound(String),
    #[error("connection `{0}` is being changed by another request; try again")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The connection API's side of the running sidecar.
pub struct Runtime {
    pub reloader: Arc<Reloader>,
    pub backend: Backend,
    /// Keys with a change under way.
    changing: Mutex<HashSet<String>>,
    /// Per connector type, the OAuth2 requests its connections share ([`Runtime::build`]).
    shared: Mutex<HashMap<String, Arc<OAuth2>>>,
}

/// How long a change waits for one under way on the same key before answering `Busy`,
/// and how often it looks.
const CLAIM_WAIT: Duration = Duration::from_secs(2);
const CLAIM_POLL: Duration = Duration::from_millis(5);

/// A key's change under way; dropping it lets the next one in.
struct Changing<'a> {
    runtime: &'a Runtime,
    key: String,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.runtime.changing().remove(&self.key);
    }
}

impl Runtime {
    pub fn new(reloader: Arc<Reloader>, backend: Backend) -> Runtime {
        Runtime {
            reloader,
            backend,
            changing: Mutex::default(),
            shared: Mutex::default(),
        }
    }

    fn changing(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `key` for one change, waiting up to [`CLAIM_WAIT`] for a change under way
    /// (another request's, or this replica following another's — its own writes come back
    /// to it as announcements too, so a client's next call would otherwise race them).
    async fn claim(&self, key: &str) -> Result<Changing<'_>, RuntimeError> {
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        while !self.changing().insert(key.to_owned()) {
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Busy(key.to_owned()));
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
        Ok(Changing {
            runtime: self,
            key: key.to_owned(),
        })
    }

    /// The template of connector type `kind`.
    pub fn template(&self, kind: &str) -> Result<Arc<Template>, RuntimeError> {
        (self.reloader.templates().iter())
            .find(|t| t.kind == kind)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownType(kind.to_owned()))
    }

    /// The running connection `definition` makes, or why not. Its OAuth2 requests are the
    /// ones the connections of its type share when they are the same (they hold only
    /// placeholders, filled from each connection's params at run time): a few KiB less per
    /// connection.
    fn build(&self, definition: &Definition) -> Result<Arc<Connection>, RuntimeError> {
        let template = self.template(&definition.connector_type)?;
        let mut conn = build::build(definition, &template, &self.reloader.admin_settings())
            .map_err(RuntimeError::Invalid)?;
        if let Some(Connection {
            auth: Auth::OAuth2(mine),
            ..
        }) = Arc::get_mut(&mut conn)
        {
            let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            match shared.get(&template.kind) {
                Some(theirs) if theirs == mine => *mine = Arc::clone(theirs),
                _ => {
                    shared.insert(template.kind.clone(), Arc::clone(mine));
                }
            }
        }
        Ok(conn)
    }

    /// Creates the connection `definition` describes: validated, written to the store,
    /// then served.
    pub async fn create(&self, definition: Definition) -> Result<Arc<Entry>, RuntimeError> {
        let _claim = self.claim(&definition.key).await?;
        if let Some(existing) = self.reloader.registry.load().get(&definition.key) {
            return Err(match &existing.runtime {
                Some(_) => RuntimeError::Exists(definition.key.clone()),
                None => self.owned_by_file(&definition.key),
            });
        }
        let conn = self.build(&definition)?;
        let created = (self.backend)
            .create_definition(&definition.key, definition.encode())
            .await?;
        if !created {
            return Err(RuntimeError::Exists(definition.key.clone()));
        }
        Ok(self.reloader.put_runtime(conn, &definition, None).await)
    }

    /// Replaces a runtime connection's definition with what `change` makes of it (new
    /// secrets): validated; with `verify`, tested with one token request ([`test`]) and the
    /// result kept in it; written; then served. A changed grant identity restarts its
    /// token, as a reload of a changed connection does. Returns the new entry and the
    /// test's result.
    pub async fn change(
        &self,
        key: &str,
        change: impl FnOnce(&mut Definition),
        verify: Option<&TokenClient>,
    ) -> Result<(Arc<Entry>, Option<Result<(), String>>), RuntimeError> {
        let _claim = self.claim(key).await?;
        self.runtime_entry(key)?;
        let mut definition = self.stored(key).await?;
        change(&mut definition);
        definition.updated_at = Some(now_ms());
        let conn = self.build(&definition)?;
        let tested = match verify {
            Some(client) => {
                let result = test(client, &conn).await;
                definition.last_test = Some((now_ms(), result.is_ok()));
                Some(result)
            }
            None => None,
        };
        self.backend
            .put_definition(key, definition.encode())
            .await?;
        let entry = self.reloader.put_runtime(conn, &definition, None).await;
        Ok((entry, tested))
    }

    /// The definition the store holds for `key` (the entry keeps none of its secrets).
    async fn stored(&self, key: &str) -> Result<Definition, RuntimeError> {
        let bytes = (self.backend.read_definition(key).await?)
            .ok_or_else(|| RuntimeError::NotFound(key.to_owned()))?;
        Definition::decode(&bytes).map_err(|reason| {
            RuntimeError::Store(StoreError::BadValue {
                key: key.to_owned(),
                reason,
            })
        })
    }

    /// Deletes a runtime connection: no longer served, its refresher stopped, then its
    /// definition and tokens deleted from the store.
    /// One the store defines but that is not served (its template gone, say) is deleted
    /// from the store all the same.
    pub async fn delete(&self, key: &str) -> Result<(), RuntimeError> {
        let _claim = self.claim(key).await?;
        match self.runtime_entry(key) {
            Ok(_) => {
                self.reloader.remove_runtime(key).await;
            }
            Err(RuntimeError::NotFound(_))
                if self.backend.read_definition(key).await?.is_some() =>
            {
                tracing::info!(connection = %key, "deleting a runtime connection that was not served");
            }
            Err(e) => return Err(e),
        }
        self.backend.remove_definition(key).await?;
        Ok(())
    }

    /// The running runtime connection `key`; a file connection or none is an error.
    pub fn runtime_entry(&self, key: &str) -> Result<Arc<Entry>, RuntimeError> {
        match self.reloader.registry.load().get(key) {
            Some(entry) if entry.runtime.is_some() => Ok(Arc::clone(entry)),
            Some(_) => Err(self.owned_by_file(key)),
            None => Err(RuntimeError::NotFound(key.to_owned())),
        }
    }

    fn owned_by_file(&self, key: &str) -> RuntimeError {
        RuntimeError::FromFile {
            key: key.to_owned(),
            file: self.reloader.config_file().to_path_buf(),
        }
    }

    /// Start-up: every stored definition built and served, with the token set `stored`
    /// holds for it (taken out of `stored`). One that no longer builds (its template gone
    /// or changed) is logged and left in the store, not served. Returns how many are
    /// served and (Redis) the change generation read at.
    pub async fn load(
        &self,
        stored: &mut std::collections::HashMap<String, crate::token::store::redis::Versioned>,
    ) -> Result<(usize, u64), StoreError> {
        let (generation, definitions) = self.backend.load_definitions().await?;
        let mut built = Vec::with_capacity(definitions.len());
        for (key, bytes) in definitions {
            if self.reloader.registry.load().get(&key).is_some() {
                tracing::error!(connection = %key, "a stored runtime connection is not served: the config file defines a connection of that key; rename one, or delete the runtime one through the API");
                continue;
            }
            built.extend(self.rebuild(&key, &bytes));
        }
        // Listed in creation order, as before the restart.
        built.sort_by(|(_, a), (_, b)| (a.created_at, &a.key).cmp(&(b.created_at, &b.key)));
        let served = built.len();
        for (conn, definition) in built {
            let token = match stored.remove(&conn.key) {
                Some(token) => Some(token),
                None => self.shared_token(&conn.key).await,
            };
            self.reloader.put_runtime(conn, &definition, token).await;
        }
        Ok((served, generation))
    }

    /// Applies what the shared store holds for `key` now (another replica's change): its
    /// definition served, unless it is the one served already; none, it stops being served
    /// (a file connection is never touched).
    pub async fn follow(&self, key: &str) -> Result<(), RuntimeError> {
        let Backend::Shared(redis) = &self.backend else {
            return Ok(());
        };
        let _claim = self.claim(key).await?;
        let running = self.reloader.registry.load().get(key).cloned();
        if running.as_ref().is_some_and(|e| e.runtime.is_none()) {
            return Ok(());
        }
        match redis.read_definition(key).await? {
            Some(bytes) => {
                let Some((conn, definition)) = self.rebuild(key, &bytes) else {
                    return Ok(());
                };
                if running.is_some_and(|e| e.conn.fingerprint == conn.fingerprint) {
                    return Ok(());
                }
                let token = self.shared_token(key).await;
                self.reloader.put_runtime(conn, &definition, token).await;
            }
            None if running.is_some() => {
                self.reloader.remove_runtime(key).await;
            }
            None => {}
        }
        Ok(())
    }

    /// With Redis, the token set it holds for `key` (start-up reads only the file
    /// connections' at once); a value it refuses is logged and the refresher starts afresh.
    async fn shared_token(&self, key: &str) -> Option<crate::token::store::redis::Versioned> {
        let Backend::Shared(redis) = &self.backend else {
            return None;
        };
        match redis.read(crate::token::store::GrantRef::own(key), 0).await {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(connection = %key, error = %e, "the shared store's token set for a runtime connection cannot be used");
                None
            }
        }
    }

    /// The connection a stored definition makes again; None (logged) when it does not.
    fn rebuild(&self, key: &str, bytes: &[u8]) -> Option<(Arc<Connection>, Definition)> {
        let definition = match Definition::decode(bytes) {
            Ok(d) if d.key == key => d,
            Ok(_) => {
                tracing::error!(connection = %key, "the stored definition names another key: not served");
                return None;
            }
            Err(e) => {
                tracing::error!(connection = %key, error = %e, "not served");
                return None;
            }
        };
        match self.build(&definition) {
            Ok(conn) => Some((conn, definition)),
            Err(RuntimeError::Invalid(problems)) => {
                for p in problems {
                    tracing::error!(connection = %key, field = %p.loc.join("."), problem = %p.msg, "the stored runtime connection no longer validates: not served");
                }
                None
            }
            Err(e) => {
                tracing::error!(connection = %key, error = %e, "the stored runtime connection is not served");
                None
            }
        }
    }
}

/// One token request for a client-credentials connection (its token is not kept: the
/// refresher gets its own); the error names the OAuth error or the status, never a secret.
/// Other connections cannot be tested without a person.
pub async fn test(client: &TokenClient, conn: &Connection) -> Result<(), String> {
    match &conn.auth {
        Auth::OAuth2(o) if o.grant == Grant::ClientCredentials => {
            let exchange = crate::oauth::flow::Exchange::ClientCredentials;
            crate::oauth::flow::run(client, conn, exchange, None)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        _ => Err("only a client-credentials connection can be tested without a person: authorize it instead".into()),
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
