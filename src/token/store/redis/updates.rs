//! Notifications: a dedicated subscription to the channel every token write (or, for
//! runtime connections, every change) publishes `<gen> <connection>` on, and a ping that
//! tells a half-open subscription from a quiet one (answered in RESP2 or RESP3 shape).

#[cfg(doc)]
use super::CONNECT_TIMEOUT;
use super::{timed_out, RedisStore, RESPONSE_TIMEOUT};
use crate::token::store::StoreError;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{ErrorKind, RedisError, Value};
use std::time::Duration;

/// Longest pause between two attempts to subscribe: a subscription made again is what tells
/// the refreshers that the store is back (after a Sentinel failover, on the new master), so
/// it is retried often while Redis is away.
const RESUBSCRIBE_MAX: Duration = Duration::from_millis(500);

/// What a follower subscribes to.
#[derive(Clone, Copy, Debug)]
pub enum Updates {
    /// Token writes ([`RedisStore::subscribe`]).
    Tokens,
    /// Runtime-connection changes ([`RedisStore::subscribe_connections`]).
    Connections,
}

impl RedisStore {
    /// A subscription to `updates`, retried with backoff (never longer apart than the poll
    /// interval or [`RESUBSCRIBE_MAX`]) until it is made; None once `shutdown` fires. Failures are logged at debug
    /// level: the store's health shows Redis down.
    pub async fn subscribed(
        &self,
        updates: Updates,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<(PubSubSink, PubSubStream)> {
        let mut failures = 0u32;
        loop {
            let attempt = async {
                match updates {
                    Updates::Tokens => self.subscribe().await,
                    Updates::Connections => self.subscribe_connections().await,
                }
            };
            let error = tokio::select! {
                () = shutdown.cancelled() => return None,
                s = attempt => match s {
                    Ok(pubsub) => return Some(pubsub),
                    Err(e) => e,
                },
            };
            failures += 1;
            let wait = crate::token::schedule::backoff(
                failures,
                None,
                rand::random(),
                crate::token::schedule::BACKOFF_MAX,
            )
            .min(self.poll_interval)
            .min(RESUBSCRIBE_MAX);
            tracing::debug!(error = %error, ?updates, retry_in_ms = wait.as_millis() as u64, "cannot subscribe");
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A dedicated connection subscribed to [`RedisStore::channel`] (token writes): its
    /// sink (for [`RedisStore::ping`]) and its stream of messages.
    /// Per-user grant writes ([`RedisStore::grants_channel`]) come on the same connection.
    pub async fn subscribe(&self) -> Result<(PubSubSink, PubSubStream), StoreError> {
        let channels = [self.channel(), self.grants_channel()];
        self.subscribe_to(&channels, "subscribing to token updates")
            .await
    }

    /// A dedicated connection subscribed to [`RedisStore::connections_channel`]
    /// (runtime-connection changes), as [`RedisStore::subscribe`].
    pub async fn subscribe_connections(&self) -> Result<(PubSubSink, PubSubStream), StoreError> {
        self.subscribe_to(
            &[self.connections_channel()],
            "subscribing to connection changes",
        )
        .await
    }

    /// A dedicated connection subscribed to `channels` (on one of a cluster's nodes: see
    /// `cluster`). Connecting and subscribing together time out after [`CONNECT_TIMEOUT`] +
    /// [`RESPONSE_TIMEOUT`] (per cluster node tried). `action`: what a failure says was
    /// being done.
    async fn subscribe_to(
        &self,
        channels: &[String],
        action: &'static str,
    ) -> Result<(PubSubSink, PubSubStream), StoreError> {
        self.run(action, self.link.subscribe(channels)).await
    }

    /// Checks that the subscription's connection still answers (a half-open socket would
    /// otherwise never end the stream). A subscribed connection answers PING in either
    /// protocol's shape (see [`is_pong`]).
    pub async fn ping(&self, sink: &mut PubSubSink) -> Result<(), StoreError> {
        let ping = async {
            let answer = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<Value>())
                .await
                .unwrap_or_else(|_| Err(timed_out()))?;
            if is_pong(&answer) {
                Ok(())
            } else {
                Err(RedisError::from((
                    ErrorKind::UnexpectedReturnType,
                    "PING on the subscription did not answer PONG",
                )))
            }
        };
        self.run("checking a store subscription", ping).await
    }
}

/// Whether `answer` is a PING's answer: `PONG` (RESP3, or a connection not subscribed),
/// or, on a subscribed RESP2 connection, the array `["pong", ""]`.
fn is_pong(answer: &Value) -> bool {
    let pong = |v: &Value| match v {
        Value::SimpleString(s) => s.eq_ignore_ascii_case("pong"),
        Value::BulkString(b) => b.eq_ignore_ascii_case(b"pong"),
        _ => false,
    };
    match answer {
        Value::Array(items) => items.first().is_some_and(pong),
        other => pong(other),
    }
}

/// A notification `<gen> <connection>` (a token write or a connection change) → its parts.
pub fn parse_update(payload: &[u8]) -> Option<(u64, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (generation, connection) = text.split_once(' ')?;
    Some((generation.parse().ok()?, connection))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_parse() {
        assert_eq!(parse_update(b"7 outreach"), Some((7, "outreach")));
        assert_eq!(parse_update(b"x outreach"), None);
        assert_eq!(parse_update(b"7"), None);
    }

    #[test]
    fn both_protocols_pong() {
        assert!(is_pong(&Value::SimpleString("PONG".into())));
        let resp2 = Value::Array(vec![
            Value::BulkString(b"pong".to_vec()),
            Value::BulkString(Vec::new()),
        ]);
        assert!(is_pong(&resp2));
        assert!(!is_pong(&Value::Array(Vec::new())));
        assert!(!is_pong(&Value::BulkString(b"nope".to_vec())));
        assert!(!is_pong(&Value::Nil));
    }
}
