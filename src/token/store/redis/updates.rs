//! Token-write notifications: the follower's own subscription to the channel every write
//! publishes `<gen> <connection>` on, and a ping that tells a half-open subscription from
//! a quiet one.

use super::{timed_out, RedisStore, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::token::store::StoreError;
use redis::aio::{PubSubSink, PubSubStream};

impl RedisStore {
    /// A dedicated connection subscribed to [`RedisStore::channel`]: its sink (for
    /// [`RedisStore::ping`]) and its stream of messages. Connecting and subscribing
    /// together time out after [`CONNECT_TIMEOUT`] + [`RESPONSE_TIMEOUT`].
    pub async fn subscribe(&self) -> Result<(PubSubSink, PubSubStream), StoreError> {
        let channel = self.channel();
        let subscribe = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok(pubsub.split())
        };
        let bounded = async {
            tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, subscribe)
                .await
                .unwrap_or_else(|_| Err(timed_out()))
        };
        self.run("subscribing to token updates", bounded).await
    }

    /// Checks that the subscription's connection still answers (a half-open socket would
    /// otherwise never end the stream).
    pub async fn ping(&self, sink: &mut PubSubSink) -> Result<(), StoreError> {
        let ping = async {
            tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<String>())
                .await
                .unwrap_or_else(|_| Err(timed_out()))
                .map(drop)
        };
        self.run("checking the token-update subscription", ping)
            .await
    }
}

/// A token-write notification `<gen> <connection>` → its parts.
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
}
