//! Getting the right to make a token request, and writing its result, for either store.
//!
//! With the embedded database the process is alone: [`begin`] always says go, and
//! [`finish`] writes the row, then publishes. With Redis, replicas coordinate per connection:
//!
//! ```text
//! begin:  SET lease NX PX ttl ──taken──► read the stored set ──newer than ours──► adopt it, release
//!            │                                 ├─ newer, but obtained under another definition ─► Go, written above it
//!            │                                 ├─ not newer ─► Go (token request, cut off in time to commit)
//!            │                                 └─ refused (forged, written back, out of bounds) ─► Go, written above it
//!            └─ held by another ─► Wait (for its token to arrive, or for the lease to expire)
//! finish: fenced write (lease still ours, nothing newer than our base) + publish + release, one script
//!            ├─ fenced, a newer set ─► adopt it;  fenced, nothing newer ─► write ours back (restore)
//!            └─ Redis errors ─► retried until the lease ends, then ours is used here and the follower writes it back
//! ```
//!
//! Only a client-credentials connection may go without the lease when Redis does not
//! answer (nothing rotates); an authorization-code connection waits, keeping its token.
//! When Redis answers but has lost this connection's set (restarted without persistence),
//! this replica writes its own back and waits a whole lease before refreshing: a lease
//! taken before the restart may still have a request in flight, and a replica holding a
//! newer set (one it could not share while Redis was away) must get to put it back first —
//! refreshing with an already rotated refresh token would end the grant.

use crate::config::Connection;
use crate::oauth::flow::{self, Exchange, Granted};
use crate::oauth::TokenClient;
use crate::oauth::TokenError;
use crate::registry::Entry;
use crate::token::store::redis::{Commit, Lease, Versioned};
use crate::token::store::{Backend, GrantRef, StoreError, StoredToken};
use crate::token::{Cache, TokenSet};
use secrecy::SecretString;
use std::time::Duration;
use tokio::time::Instant;

/// Of the lease, at least this share is kept for writing the result…
const LEASE_COMMIT_SHARE: f64 = 0.25;
/// …and at least this long: more than one Redis command may take before it times out.
const LEASE_COMMIT_TIME: Duration = Duration::from_millis(2500);
/// Pause between attempts to write a result while Redis does not answer.
const COMMIT_RETRY: Duration = Duration::from_millis(100);
/// Longest wait before trying again for a lease another replica holds (its token usually
/// arrives sooner, through the follower, which wakes the refresher).
const LEASE_RETRY_MAX: Duration = Duration::from_millis(250);

/// The grant a token request is for: a connection's own (its entry's cache) or one end
/// user's (`crate::grants`), and the cache that holds its current set.
#[derive(Clone, Copy)]
pub struct Holder<'a> {
    pub conn: &'a Connection,
    pub grant: GrantRef<'a>,
    pub cache: &'a Cache,
}

impl<'a> Holder<'a> {
    /// The connection's own grant.
    pub fn own(entry: &'a Entry) -> Holder<'a> {
        Holder {
            conn: &entry.conn,
            grant: GrantRef::own(&entry.conn.key),
            cache: &entry.tokens,
        }
    }
}

/// The answer of [`begin`].
pub enum Begin {
    /// Make the token request.
    Go(Turn),
    /// The store held a newer token set, which is now current: decide again.
    Adopted,
    /// Try again after this long (another replica holds the lease, or Redis was emptied).
    Wait(Duration),
    /// The shared store does not answer and this connection may not go alone.
    Unavailable(StoreError),
    /// The per-user grant was deleted (by another replica): its token is withdrawn here.
    Deleted,
}

/// What the writer of a token request holds.
pub struct Turn {
    lease: Option<Lease>,
    /// Refuse to overwrite a set newer than the writer's base (false: a new grant from the
    /// callback, which supersedes whatever is stored).
    fenced: bool,
    /// The generation of a stored value this replica refused, which the write goes above
    /// (0: none).
    over: u64,
}

impl Turn {
    /// A new grant from the callback: it supersedes whatever is stored.
    pub fn new_grant() -> Turn {
        Turn {
            lease: None,
            fenced: false,
            over: 0,
        }
    }

    /// A refresh, under `lease` if one was taken, written above generation `over`.
    fn refresh(lease: Option<Lease>, over: u64) -> Turn {
        Turn {
            lease,
            fenced: true,
            over,
        }
    }

    /// When the token request must have been answered, so that its result can still be
    /// written under the lease (None: no lease to outlive).
    pub fn request_deadline(&self, backend: &Backend) -> Option<Instant> {
        match (backend, &self.lease) {
            (Backend::Shared(redis), Some(lease)) => {
                let keep = redis
                    .lease_ttl
                    .mul_f64(LEASE_COMMIT_SHARE)
                    .max(LEASE_COMMIT_TIME);
                Some(
                    lease
                        .deadline
                        .checked_sub(keep)
                        .unwrap_or_else(Instant::now),
                )
            }
            _ => None,
        }
    }
}

/// Before a token request for `holder`. `alone_ok`: the connection may refetch without the
/// lease when Redis does not answer (client credentials).
pub async fn begin(backend: &Backend, holder: Holder<'_>, alone_ok: bool) -> Begin {
    let Holder { conn, grant, cache } = holder;
    let key = conn.key.as_str();
    let Backend::Shared(redis) = backend else {
        return Begin::Go(Turn::new_grant());
    };
    let lease = match redis.lease(grant).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return Begin::Wait((redis.lease_ttl / 4).min(LEASE_RETRY_MAX)),
        Err(e) if alone_ok => {
            tracing::warn!(connection = %key, error = %e, "token store unavailable; fetching a client-credentials token without the lease");
            return Begin::Go(Turn::refresh(None, 0));
        }
        Err(e) => return Begin::Unavailable(e),
    };
    match redis.read(grant, cache.generation()).await {
        Ok(Some(stored)) if stored.generation > cache.generation() => {
            let over = stored.generation;
            if adopt(cache, conn, stored) {
                redis.release(lease).await;
                Begin::Adopted
            } else {
                // Obtained under another definition: this request's set goes above it.
                Begin::Go(Turn::refresh(Some(lease), over))
            }
        }
        Ok(None) if cache.generation() > 0 => {
            // Redis lost what it held: put ours back, give the others time to do the same.
            if let Some(set) = cache.token() {
                let _ = redis
                    .restore(grant, cache.generation(), &set.to_stored())
                    .await;
            }
            redis.release(lease).await;
            tracing::warn!(connection = %key, "the shared store lost this connection's token set; wrote ours back, waiting for the other replicas before refreshing");
            Begin::Wait(redis.lease_ttl.max(redis.poll_interval) + LEASE_RETRY_MAX)
        }
        Ok(_) => Begin::Go(Turn::refresh(Some(lease), 0)),
        Err(StoreError::Deleted { generation, .. }) => {
            redis.release(lease).await;
            deleted(cache, generation).await;
            Begin::Deleted
        }
        Err(e @ (StoreError::Refused { .. } | StoreError::BadValue { .. })) => {
            // Not a set this replica may use (forged, written back, out of bounds): the
            // refresh of the set it holds replaces it.
            tracing::warn!(connection = %key, error = %e, "the shared store holds a token set this replica refuses; this refresh replaces it");
            let over = match e {
                StoreError::Refused { generation, .. } => generation.unwrap_or(0),
                _ => 0,
            };
            Begin::Go(Turn::refresh(Some(lease), over))
        }
        Err(e) => {
            redis.release(lease).await;
            Begin::Unavailable(e)
        }
    }
}

/// The token request failed: give the lease back so another replica may try.
pub async fn abandon(backend: &Backend, turn: Turn) {
    if let (Backend::Shared(redis), Some(lease)) = (backend, turn.lease) {
        redis.release(lease).await;
    }
}

/// A per-user grant another replica deleted: its token leaves the cache (call with the
/// write lock held, as [`begin`]'s caller holds it).
async fn deleted(cache: &Cache, generation: u64) {
    cache.pass(generation);
    cache.withdraw();
    cache.update(|s| s.state = crate::token::State::NeedsAuthorization);
}

/// Persists `set`, then makes it current. Call with the cache's write lock held.
pub async fn finish(backend: &Backend, holder: Holder<'_>, set: TokenSet, turn: Turn) {
    let Holder { conn, grant, cache } = holder;
    let key = conn.key.as_str();
    let redis = match backend {
        Backend::Local(store) => return finish_local(store, holder, set).await,
        Backend::Shared(redis) => redis,
    };
    let floor = cache.generation().max(turn.over);
    let stored = set.to_stored();
    let replicate = new_refresh_token(cache, &set);
    let mut lease = turn.lease;
    loop {
        let committed = redis
            .commit(
                grant,
                lease.as_ref(),
                turn.fenced,
                floor,
                &stored,
                replicate,
            )
            .await;
        match committed {
            Ok(Commit::Written(generation)) => {
                cache.publish(set, generation, None);
                return;
            }
            Ok(Commit::Unreplicated { generation, acked }) => {
                // Stored on the master, not yet on enough replicas: a failover now could
                // lose it there. The replicas hold it (their followers write it back if
                // Redis comes to hold an older set).
                let wanted = redis.min_replicas_acked();
                tracing::warn!(connection = %key, acked, wanted, wait_ms = crate::token::store::redis::WAIT_TIMEOUT_MS, "fewer Redis replicas than store.min_replicas_acked acknowledged the new token set in time; using it");
                let error = format!("{acked} of {wanted} replicas acknowledged the new token set");
                cache.publish(set, generation, Some(error));
                return;
            }
            Ok(Commit::Fenced) => {
                if let Some(lease) = lease.take() {
                    redis.release(lease).await;
                }
                let mut floor = floor;
                match redis.read(grant, cache.generation()).await {
                    Ok(Some(newer)) if newer.generation > floor => {
                        floor = newer.generation;
                        if adopt(cache, conn, newer) {
                            tracing::warn!(connection = %key, "another replica stored a newer token set while this request ran; using that one");
                            return;
                        }
                    }
                    // A user's grant deleted while this request ran (the deletion does not
                    // wait for the lease): the new set is neither stored nor used.
                    Err(StoreError::Deleted { generation, .. }) => {
                        tracing::info!(connection = %key, "a user's grant was deleted while it was refreshed; the new token is dropped");
                        deleted(cache, generation).await;
                        return;
                    }
                    _ => {}
                }
                // The lease was lost (Redis restarted, or it ran out) and nothing newer is
                // stored — or only a set obtained under another definition of the
                // connection: ours holds the current refresh token, and goes above it.
                let restored = redis.restore(grant, floor + 1, &stored).await;
                let error = restored.err().map(|e| e.to_string());
                cache.publish(set, floor + 1, error);
                return;
            }
            Err(e) => {
                let retry = lease
                    .as_ref()
                    .is_some_and(|l| Instant::now() + COMMIT_RETRY < l.deadline);
                if retry {
                    tokio::time::sleep(COMMIT_RETRY).await;
                    continue;
                }
                // The token endpoint already answered: keep what it gave (a rotated
                // refresh token exists nowhere else); the follower writes it back when
                // Redis answers again.
                tracing::error!(connection = %key, error = %e, "could not share the new token; using it here until the store is back");
                cache.publish(set, floor + 1, Some(e.to_string()));
                return;
            }
        }
    }
}

/// [`finish`] with the embedded database: the row written, then the set published.
async fn finish_local(
    store: &std::sync::Arc<dyn crate::token::store::TokenStore>,
    holder: Holder<'_>,
    set: TokenSet,
) {
    let Holder { conn, grant, cache } = holder;
    let key = conn.key.as_str();
    let stored = set.to_stored();
    let store = std::sync::Arc::clone(store);
    let (owned_key, subject) = (key.to_owned(), grant.subject.to_owned());
    let written = tokio::task::spawn_blocking(move || match subject.as_str() {
        "" => store.put(&owned_key, &stored),
        subject => store.put_grant(&owned_key, subject, &stored),
    })
    .await;
    let error = match written {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(format!("store task failed: {e}")),
    };
    if let Some(e) = &error {
        tracing::error!(connection = %key, error = %e, "could not persist the new token; using it anyway");
    }
    cache.publish(set, 0, error);
}

/// Whether `set` holds a refresh token the grant's current set does not: rotated by a
/// refresh, or new with the grant — the writes `store.min_replicas_acked` applies to.
fn new_refresh_token(cache: &Cache, set: &TokenSet) -> bool {
    use secrecy::ExposeSecret;
    let Some(new) = &set.refresh_token else {
        return false;
    };
    let current = cache.current();
    let old = current.as_ref().and_then(|c| c.refresh_token.as_ref());
    old.is_none_or(|old| old.expose_secret() != new.expose_secret())
}

/// Makes a token set another replica stored the current one here, if `conn` may use it
/// (see [`usable`]); whether it did. Either way the cache has seen that generation.
pub fn adopt(cache: &Cache, conn: &Connection, stored: Versioned) -> bool {
    let generation = stored.generation;
    match usable(conn, stored.token) {
        Some(set) => {
            tracing::info!(connection = %conn.key, generation, expires_at = crate::token::set::unix_seconds(set.expires_at), "token from the shared store");
            cache.publish(set, generation, None);
            cache.counters.adopted.inc();
            true
        }
        None => {
            cache.pass(generation);
            false
        }
    }
}

/// The one token-writing sequence, of the refresher, the per-user grants and the OAuth
/// callback: one exchange of `holder`'s connection (counted and timed by outcome; with a
/// lease, cut off in time to commit), then the set persisted and published ([`finish`]) —
/// or, when it failed, the lease given back. The new set's expiry. Call with the grant's
/// write lock held.
pub async fn obtain(
    (client, backend): (&TokenClient, &Backend),
    holder: Holder<'_>,
    exchange: Exchange<'_>,
    refresh_token: Option<SecretString>,
    turn: Turn,
) -> Result<Option<std::time::SystemTime>, TokenError> {
    let conn = holder.conn;
    let started = Instant::now();
    let request = flow::run(client, conn, exchange, refresh_token);
    let granted = match turn.request_deadline(backend) {
        Some(deadline) => tokio::time::timeout_at(deadline, request)
            .await
            .unwrap_or_else(|_| {
                Err(TokenError::Network {
                    connection: conn.key.clone(),
                    reason: "no answer before the refresh lease ran out".into(),
                })
            }),
        None => request.await,
    };
    let set = granted.and_then(|g| token_set(conn, g));
    holder
        .cache
        .counters
        .requested(set.is_ok(), started.elapsed());
    match set {
        Ok(set) => {
            let expires_at = set.expires_at;
            finish(backend, holder, set, turn).await;
            Ok(expires_at)
        }
        Err(e) => {
            abandon(backend, turn).await;
            Err(e)
        }
    }
}

/// A grant of `conn` → the token set to inject, marked with the definition it was obtained
/// under (refused when the token cannot be a header value).
pub fn token_set(conn: &Connection, granted: Granted) -> Result<TokenSet, TokenError> {
    let set = TokenSet::new(
        granted.access_token,
        granted.refresh_token,
        granted.scope,
        granted.obtained_at,
        granted.lifetime,
        rand::random::<f64>(),
    )
    .map_err(|e| TokenError::Invalid {
        connection: conn.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(set.obtained_under(conn.grant_identity))
}

/// A stored set → the token set `conn` may use: None when it is unusable, or was obtained
/// under another definition of the connection (another token endpoint, client, upstream or
/// scope: its token must not be sent under this one). Either is logged.
pub fn usable(conn: &Connection, stored: StoredToken) -> Option<TokenSet> {
    match TokenSet::from_stored(stored, rand::random()) {
        Ok(set) if set.fits(conn.grant_identity) => Some(set),
        Ok(_) => {
            tracing::warn!(connection = %conn.key, "the stored token set was obtained under another definition of this connection (token endpoint, client, upstream or scope); not used");
            None
        }
        Err(e) => {
            tracing::warn!(connection = %conn.key, error = %e, "stored token ignored");
            None
        }
    }
}

/// Puts a stored set in `cache` at start or when a connection is (re-)added: only one
/// `conn` may use; otherwise the cache only notes its generation, so the follower does
/// not offer it again and the next write goes above it.
pub fn restore(cache: &Cache, conn: &Connection, stored: Versioned) {
    match usable(conn, stored.token) {
        Some(set) => {
            tracing::info!(connection = %conn.key, expires_at = crate::token::set::unix_seconds(set.expires_at), "token loaded from the store");
            cache.restore(set, stored.generation);
        }
        None => cache.pass(stored.generation),
    }
}
