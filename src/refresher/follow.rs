//! With the Redis store: one task per process that keeps every connection's cache on the
//! newest stored token set — pushed over pub/sub, with a poll every `store.poll_interval`
//! as the fallback for a missed message — and writes back what a Redis restart lost.
//!
//! On every (re)connection it catches up with every connection, puts back token sets that
//! Redis no longer holds (or holds older), and wakes the refreshers, which were backing off
//! while Redis was away. It never calls a token endpoint.

use super::persist;
use crate::config::Auth;
use crate::registry::{Entry, Registry};
use crate::token::schedule;
use crate::token::store::redis::parse_update;
use crate::token::store::{RedisStore, StoreError};
use futures_util::StreamExt as _;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Follower {
    pub registry: Arc<Registry>,
    pub redis: Arc<RedisStore>,
}

impl Follower {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let subscribed = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = self.redis.subscribe() => s,
            };
            let mut pubsub = match subscribed {
                Ok(pubsub) => pubsub,
                Err(e) => {
                    failures += 1;
                    let wait =
                        schedule::backoff(failures, None, rand::random(), schedule::BACKOFF_MAX)
                            .min(self.redis.poll_interval);
                    tracing::debug!(error = %e, retry_in_ms = wait.as_millis() as u64, "token updates: cannot subscribe");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            failures = 0;
            self.sync_all(true).await;
            let mut poll = tokio::time::interval(self.redis.poll_interval);
            poll.reset();
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    message = messages.next() => match message {
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
                    _ = poll.tick() => self.sync_all(false).await,
                }
            }
        }
    }

    /// `<gen> <connection>` from another replica's write.
    async fn on_update(&self, payload: &[u8]) {
        let Some((generation, key)) = parse_update(payload) else {
            return;
        };
        if let Some(entry) = self.registry.get(key) {
            if generation > entry.tokens.generation() {
                self.sync(entry).await;
            }
        }
    }

    /// Every OAuth2 connection; `wake`: let the refreshers try again now.
    async fn sync_all(&self, wake: bool) {
        for entry in &self.registry.connections {
            if matches!(entry.conn.auth, Auth::OAuth2(_)) {
                self.sync(entry).await;
                if wake {
                    entry.tokens.wake.notify_one();
                }
            }
        }
    }

    /// Brings one connection in line with Redis: adopt a newer stored set, or put ours
    /// back where Redis holds an older one or none.
    async fn sync(&self, entry: &Entry) {
        let cache = &entry.tokens;
        let key = entry.conn.key.as_str();
        // A writer holding the lock (refresher or callback) reads Redis itself.
        let Ok(_guard) = cache.write_lock.try_lock() else {
            return;
        };
        match self.redis.read(key).await {
            Ok(Some(stored)) if stored.generation > cache.generation() => {
                persist::adopt(cache, key, stored);
                cache.wake.notify_one();
            }
            Ok(stored) => {
                let ours = cache.generation();
                let theirs = stored.map_or(0, |s| s.generation);
                if let (true, Some(set)) = (ours > theirs, cache.token()) {
                    match self.redis.restore(key, ours, &set.to_stored()).await {
                        Ok(true) => {
                            tracing::info!(connection = %key, generation = ours, "token set written back to the shared store")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::debug!(connection = %key, error = %e, "cannot write the token set back yet")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(connection = %key, error = %e, "cannot read the shared store")
            }
        }
    }
}
