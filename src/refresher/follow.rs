//! With the Redis store: one task per process that keeps every connection's cache on the
//! newest stored token set — pushed over pub/sub, with a poll every `store.poll_interval`
//! as the fallback for a missed message — and writes back what a Redis restart lost.
//!
//! On every (re)connection it catches up with every connection, puts back token sets that
//! Redis no longer holds (or holds older), and tells the refreshers the store is back (they
//! were backing off while it was away) — also at a poll after commands failed while the
//! subscription held (a Redis Cluster whose other nodes failed). On every poll it also
//! pings the subscription, so a half-open connection is noticed. It never calls a token
//! endpoint.
//!
//! It adopts only a set that opens as written at its stored generation (see
//! `token::store::redis`) and is newer than the one held; anything else Redis holds — a value
//! written back, copied or edited, out of bounds, or of an earlier version while a set is
//! held — is refused and reported once, and the next refresh writes above it.

use super::persist;
use crate::config::Auth;
use crate::registry::{Entry, Registry};
use crate::token::store::redis::{parse_update, Updates};
use crate::token::store::{GrantRef, RedisStore, StoreError};
use crate::token::Cache;
use arc_swap::ArcSwap;
use futures_util::StreamExt as _;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Follower {
    /// The current connections (a reload swaps them).
    pub registry: Arc<ArcSwap<Registry>>,
    pub redis: Arc<RedisStore>,
}

impl Follower {
    pub async fn run(self, shutdown: CancellationToken) {
        let grants = self.redis.grants_channel();
        loop {
            let Some((mut sink, mut messages)) =
                self.redis.subscribed(Updates::Tokens, &shutdown).await
            else {
                return;
            };
            self.sync_all(true).await;
            let mut poll = tokio::time::interval(self.redis.poll_interval);
            poll.reset();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    message = messages.next() => match message {
                        Some(message) if message.get_channel_name() == grants => {
                            self.on_grant_update(message.get_payload_bytes()).await;
                        }
                        Some(message) => self.on_update(message.get_payload_bytes()).await,
                        None => {
                            self.redis.note::<()>(&Err(StoreError::Unavailable {
                                endpoint: self.redis.endpoint().to_owned(),
                                action: "receiving token updates",
                                reason: "connection lost".into(),
                            }));
                            break;
                        }
                    },
                    _ = poll.tick() => {
                        // A half-open subscription would never end the stream: check it.
                        if self.redis.ping(&mut sink).await.is_err() {
                            break;
                        }
                        // Back after a failure the subscription outlived: the refreshers
                        // stop backing off, as after a resubscription.
                        self.sync_all(self.redis.take_recovered()).await;
                    }
                }
            }
        }
    }

    /// `<gen> <connection>` from another replica's write.
    async fn on_update(&self, payload: &[u8]) {
        let Some((generation, key)) = parse_update(payload) else {
            return;
        };
        if let Some(entry) = self.registry.load_full().get(key) {
            if generation > entry.tokens.generation() {
                self.sync(entry).await;
            }
        }
    }

    /// `<gen> <connection> <subject>` from another replica's write or deletion of a per-user
    /// grant: a grant this process holds takes the newer set, or drops its token when it
    /// was deleted. One it does not hold is read from the store on its next use anyway.
    /// (Pushed only: a missed message leaves the held set until its renewal reads Redis.)
    async fn on_grant_update(&self, payload: &[u8]) {
        let Some((generation, rest)) = parse_update(payload) else {
            return;
        };
        let Some((key, subject)) = rest.split_once(' ') else {
            return;
        };
        let Some(entry) = self.registry.load_full().get(key).cloned() else {
            return;
        };
        let Some(grants) = entry.grants.as_ref() else {
            return;
        };
        let Some(grant) = grants.cached(subject) else {
            return;
        };
        let cache = &grant.tokens;
        let ours = cache.generation();
        if generation <= ours {
            return;
        }
        // A writer holding the lock (renewal, import, callback, deletion) reads Redis itself.
        let Ok(_guard) = cache.write_lock.try_lock() else {
            return;
        };
        match self.redis.read(GrantRef::user(key, subject), ours).await {
            Ok(Some(stored)) if stored.generation > ours => {
                persist::adopt(cache, &entry.conn, stored);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(StoreError::Deleted { .. }) => {
                cache.withdraw();
                grants.forget(subject);
            }
            Err(e) => report(cache, key, &e),
        }
    }

    /// Every OAuth2 connection; `reconnected`: also tell the refreshers the store is back.
    async fn sync_all(&self, reconnected: bool) {
        for entry in self.registry.load_full().iter() {
            if matches!(entry.conn.auth, Auth::OAuth2(_)) {
                self.sync(entry).await;
                if reconnected {
                    entry.tokens.signals.store_back.notify_one();
                }
            }
        }
    }

    /// Brings one connection in line with Redis: adopt a newer stored set, or put ours
    /// back where Redis holds an older one or none. Reads only the generation unless the
    /// stored set is newer.
    async fn sync(&self, entry: &Entry) {
        let cache = &entry.tokens;
        let key = entry.conn.key.as_str();
        // A writer holding the lock (refresher or callback) reads Redis itself.
        let Ok(_guard) = cache.write_lock.try_lock() else {
            return;
        };
        let ours = cache.generation();
        let result = match self.redis.generation(GrantRef::own(key)).await {
            Ok(theirs) if theirs > ours => match self.redis.read(GrantRef::own(key), ours).await {
                Ok(Some(stored)) if stored.generation > ours => {
                    if persist::adopt(cache, &entry.conn, stored) {
                        cache.signals.wake.notify_one();
                    }
                    Ok(())
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            },
            Ok(theirs) if theirs < ours => match cache.token() {
                Some(set) => match self
                    .redis
                    .restore(GrantRef::own(key), ours, &set.to_stored())
                    .await
                {
                    Ok(true) => {
                        tracing::info!(connection = %key, generation = ours, "token set written back to the shared store");
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                None => Ok(()),
            },
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            report(cache, key, &e);
        }
    }
}

/// A value Redis holds but that cannot be used (wrong key, garbage, refused) is warned about
/// once per distinct error, naming the Redis key (never the value), and shown in the
/// connection's status. Redis not answering is the store's health, shown there.
fn report(cache: &Cache, key: &str, e: &StoreError) {
    if matches!(e, StoreError::Unavailable { .. }) {
        tracing::debug!(connection = %key, error = %e, "cannot reach the shared store");
        return;
    }
    let message = e.to_string();
    if cache.status().last_error.as_deref() != Some(message.as_str()) {
        tracing::warn!(connection = %key, error = %e, "the shared store holds a token set this replica cannot use; keeping the current token");
        cache.update(|s| s.last_error = Some(message.as_str().into()));
    }
}
