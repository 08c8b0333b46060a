//! With the Redis store: one task per process that keeps the runtime connections in line
//! with the definitions Redis holds — a change another replica made is pushed over pub/sub
//! (`<gen> <key>` on the connections channel) and applied at once; a poll every
//! `store.poll_interval` asks Redis which connections changed since the last generation
//! seen, in case a message was missed (and, after Redis was unreachable at start-up,
//! loads them all).
//!
//! Applying a change reads the key's definition: present, it is built and served (nothing
//! happens when it is the one already served: this replica's own writes come back too);
//! absent, a served runtime connection stops being served. The store is never written here.

use super::{Runtime, RuntimeError};
use crate::token::store::redis::{parse_update, Updates};
use crate::token::store::{RedisStore, StoreError};
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a change is retried while a change of this replica's to the same key is under
/// way (it is applied once that one is done).
const BUSY_RETRY: Duration = Duration::from_millis(20);
const BUSY_RETRIES: u32 = 250;

pub struct Follower {
    pub runtime: Arc<Runtime>,
    pub redis: Arc<RedisStore>,
    /// The change generation seen last (what the poll asks from).
    pub seen: u64,
}

impl Follower {
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let Some((mut sink, mut messages)) =
                self.redis.subscribed(Updates::Connections, &shutdown).await
            else {
                return;
            };
            // What changed while this replica was not subscribed.
            self.catch_up().await;
            let mut poll = tokio::time::interval(self.redis.poll_interval);
            poll.reset();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = messages.next() => match message {
                        Some(message) => self.on_update(message.get_payload_bytes()).await,
                        None => break,
                    },
                    _ = poll.tick() => {
                        if self.redis.ping(&mut sink).await.is_err() {
                            break;
                        }
                        self.catch_up().await;
                    }
                }
            }
        }
    }

    /// `<gen> <key>` from a replica's change.
    async fn on_update(&mut self, payload: &[u8]) {
        let Some((generation, key)) = parse_update(payload) else {
            return;
        };
        let key = key.to_owned();
        self.apply(&key).await;
        // Only a contiguous generation moves the poll's mark: a message that overtook
        // another is still found by the next poll.
        if generation == self.seen + 1 {
            self.seen = generation;
        }
    }

    /// Applies every change after the last generation seen.
    async fn catch_up(&mut self) {
        match self.redis.definitions_changed_since(self.seen).await {
            Ok((generation, keys)) => {
                for key in keys {
                    self.apply(&key).await;
                }
                self.seen = generation;
            }
            Err(e) => tracing::debug!(error = %e, "connection updates: cannot poll"),
        }
    }

    /// Serves what Redis holds for `key` now, or stops serving it.
    async fn apply(&self, key: &str) {
        for _ in 0..BUSY_RETRIES {
            match self.runtime.follow(key).await {
                Err(RuntimeError::Busy(_)) => tokio::time::sleep(BUSY_RETRY).await,
                Err(RuntimeError::Store(e @ StoreError::Unavailable { .. })) => {
                    tracing::debug!(connection = %key, error = %e, "connection update not read; the poll retries");
                    return;
                }
                Err(e) => {
                    tracing::error!(connection = %key, error = %e, "a runtime connection another replica changed is not served");
                    return;
                }
                Ok(()) => return,
            }
        }
    }
}
