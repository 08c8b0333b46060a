//! Runtime-connection definitions in Redis, shared by every replica.
//!
//! NOTE: stubs: the layout, sealing and change channel land in the next commit.

use super::RedisStore;
use crate::token::store::{Definition, StoreError};

impl RedisStore {
    /// Every stored definition, opened, and the change generation they were read at.
    pub async fn load_definitions(&self) -> Result<(u64, Vec<(String, Definition)>), StoreError> {
        Err(self.not_yet())
    }

    /// One connection's definition, opened; None when it has none (deleted or never created).
    pub async fn read_definition(
        &self,
        _connection: &str,
    ) -> Result<Option<Definition>, StoreError> {
        Err(self.not_yet())
    }

    /// Writes `connection`'s definition, sealed, and publishes the change; returns its
    /// change generation.
    pub async fn put_definition(
        &self,
        _connection: &str,
        _definition: &[u8],
    ) -> Result<u64, StoreError> {
        Err(self.not_yet())
    }

    /// Deletes `connection`'s definition and token set, and publishes the change; returns
    /// its change generation.
    pub async fn remove_definition(&self, _connection: &str) -> Result<u64, StoreError> {
        Err(self.not_yet())
    }

    /// The connections changed (created, changed or deleted) after generation `since`, and
    /// the current generation: the poll that catches a missed notification.
    pub async fn definitions_changed_since(
        &self,
        _since: u64,
    ) -> Result<(u64, Vec<String>), StoreError> {
        Err(self.not_yet())
    }

    /// A dedicated connection subscribed to the connections channel.
    pub async fn subscribe_connections(
        &self,
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), StoreError> {
        Err(self.not_yet())
    }

    fn not_yet(&self) -> StoreError {
        StoreError::Unavailable {
            endpoint: self.endpoint.clone(),
            action: "runtime connections",
            reason: "not implemented yet".into(),
        }
    }
}
