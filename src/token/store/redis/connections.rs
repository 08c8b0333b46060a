//! Runtime-connection definitions in Redis, shared by every replica.
//!
//! A definition (JSON holding the connection's secrets) is kept sealed in `P{k}:connection`
//! (in a cluster `P{runtime:connections}:connection:k`, see below),
//! bound to a label made of a purpose (`\0definition:`, which no connection key or state
//! label starts with), the key prefix `P` and the connection key `k` (see [`label`]): a
//! token set never opens as a definition nor a definition as a token set (they use other
//! associated-data layouts), and a value copied from another connection or prefix, or
//! edited, fails authentication and is refused ([`StoreError::Refused`], naming the key,
//! never the content). It is not bound to a generation: a definition written back over a
//! newer one by someone with write access to Redis opens.
//!
//! Every change (create, change, delete) goes through one Lua script (`scripts`) that
//! writes or deletes the value, bumps the change generation `Pconnections:gen`, records the
//! connection at that generation in the sorted set `Pconnections:changes` and publishes
//! `<gen> <k>` on the channel `Pconnections`, so a reader never sees a change recorded
//! without its value. A replica follows the channel ([`RedisStore::subscribe_connections`])
//! and polls [`RedisStore::definitions_changed_since`] as the fallback for a missed message.
//! A deleted connection stays in the change set (that is how a poll learns of the delete).
//!
//! The scripts touch a definition and the global keys together, and the reads touch several
//! connections' definitions, which Redis Cluster refuses across slots (`CROSSSLOT`). So with
//! `store.cluster` (only: a single Redis keeps the layout above, so no deployment loses its
//! runtime connections) the definitions and the global keys share the hash tag
//! [`RUNTIME_TAG`]: `P{runtime:connections}:connection:k`, `P{runtime:connections}:gen` and
//! `P{runtime:connections}:changes` — one slot, on one node. A delete there removes the
//! definition and records the change in one step, then deletes the token set and lease
//! (slot `{k}`) in a second; a failure in between leaves them for the retried delete (a
//! deleted connection is in the change set, and deleting an absent one succeeds). A `:`
//! never appears in a connection key, so no connection's own `{k}` tag can be this one.

use super::{bad_value, scripts, RedisStore, MAX_GENERATION, MAX_SEALED_LEN};
use crate::token::store::record::{self, SealedRecord};
use crate::token::store::{DefinitionBytes, GrantRef, StoreError};
use redis::Value;

/// Definitions read per script call while loading them all (bounds one reply).
const READ_BATCH: usize = 256;
/// The purpose that starts every definition's label (a NUL never starts a connection key
/// nor the `\0state:` label of a pending authorization).
const DEFINITION_PURPOSE: &str = "\0definition:";
/// The hash tag of the definitions and the global keys in a cluster (one slot).
pub const RUNTIME_TAG: &str = "{runtime:connections}";

impl RedisStore {
    /// `P{k}:connection`; in a cluster `P{runtime:connections}:connection:k`.
    fn definition_key(&self, connection: &str) -> String {
        if self.cluster {
            format!("{}{RUNTIME_TAG}:connection:{connection}", self.prefix)
        } else {
            format!("{}{{{connection}}}:connection", self.prefix)
        }
    }

    /// `Pconnections:gen`; in a cluster `P{runtime:connections}:gen`.
    fn change_generation_key(&self) -> String {
        if self.cluster {
            format!("{}{RUNTIME_TAG}:gen", self.prefix)
        } else {
            format!("{}connections:gen", self.prefix)
        }
    }

    /// `Pconnections:changes`; in a cluster `P{runtime:connections}:changes`.
    fn changes_key(&self) -> String {
        if self.cluster {
            format!("{}{RUNTIME_TAG}:changes", self.prefix)
        } else {
            format!("{}connections:changes", self.prefix)
        }
    }

    /// The pub/sub channel of runtime-connection changes: `<gen> <connection>` after each
    /// (parse it with [`super::parse_update`]).
    pub fn connections_channel(&self) -> String {
        format!("{}connections", self.prefix)
    }

    /// Every stored definition, opened, and the change generation they were read at: a
    /// change after it is in [`RedisStore::definitions_changed_since`] of that generation.
    pub async fn load_definitions(
        &self,
    ) -> Result<(u64, Vec<(String, DefinitionBytes)>), StoreError> {
        let (generation, connections) = self.definitions_changed_since(0).await?;
        let mut out = Vec::with_capacity(connections.len());
        for batch in connections.chunks(READ_BATCH) {
            let values = self.fetch_definitions(batch).await?;
            for (connection, value) in batch.iter().zip(values) {
                if let Some(definition) = value {
                    out.push((connection.clone(), definition));
                }
            }
        }
        Ok((generation, out))
    }

    /// One connection's definition, opened; None when it has none (deleted or never created).
    pub async fn read_definition(
        &self,
        connection: &str,
    ) -> Result<Option<DefinitionBytes>, StoreError> {
        let mut values = self.fetch_definitions(&[connection.to_owned()]).await?;
        Ok(values.pop().flatten())
    }

    /// Writes `connection`'s definition, sealed, and publishes the change; returns its
    /// change generation.
    pub async fn put_definition(
        &self,
        connection: &str,
        definition: &[u8],
    ) -> Result<u64, StoreError> {
        self.write_definition(&scripts::PUT_DEFINITION, connection, definition)
            .await?
            .ok_or_else(|| unreachable_taken(connection))
    }

    /// [`RedisStore::put_definition`] for a new connection: None, nothing written, when
    /// `connection` has a definition already (another replica created it meanwhile).
    pub async fn create_definition(
        &self,
        connection: &str,
        definition: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        self.write_definition(&scripts::CREATE_DEFINITION, connection, definition)
            .await
    }

    /// Runs `script` (a put or a create) for `connection`'s sealed definition; None when
    /// the create found one.
    async fn write_definition(
        &self,
        script: &'static redis::Script,
        connection: &str,
        definition: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        let key = self.definition_key(connection);
        let sealed = self.seal_definition(&key, connection, definition)?;
        let mut call = scripts::Call::new(script);
        call.key(&key)
            .key(self.change_generation_key())
            .key(self.changes_key())
            .arg(sealed)
            .arg(self.connections_channel())
            .arg(connection)
            .arg(MAX_GENERATION);
        let mut con = self.con().await?;
        let outcome: Value = self
            .run("writing a connection definition", call.invoke(&mut con))
            .await?;
        if outcome == Value::Int(TAKEN) {
            return Ok(None);
        }
        self.change_generation(outcome).map(Some)
    }

    /// Deletes `connection`'s definition, token set and refresh lease, and publishes the
    /// change; returns its change generation. Deleting an absent one is not an error (and
    /// is published all the same). In a cluster the token set and lease go in a second
    /// step (another slot).
    pub async fn remove_definition(&self, connection: &str) -> Result<u64, StoreError> {
        let own = [
            self.token_key(GrantRef::own(connection)),
            self.lease_key(GrantRef::own(connection)),
        ];
        let mut call = scripts::Call::new(&scripts::REMOVE_DEFINITION);
        call.key(self.definition_key(connection))
            .key(self.change_generation_key())
            .key(self.changes_key())
            .arg(self.connections_channel())
            .arg(connection)
            .arg(MAX_GENERATION);
        if !self.cluster {
            call.key(&own);
        }
        let mut con = self.con().await?;
        let outcome: Value = self
            .run("deleting a connection", call.invoke(&mut con))
            .await?;
        let generation = self.change_generation(outcome)?;
        if self.cluster {
            self.run::<()>(
                "deleting a connection's token set",
                redis::cmd("DEL").arg(&own).query_async(&mut con),
            )
            .await?;
        }
        Ok(generation)
    }

    /// The connections changed (created, changed or deleted) after generation `since`, and
    /// the current generation: the poll that catches a missed notification.
    pub async fn definitions_changed_since(
        &self,
        since: u64,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let counter = self.change_generation_key();
        let mut call = scripts::Call::new(&scripts::CHANGES);
        call.key(&counter).key(self.changes_key()).arg(since);
        let mut con = self.con().await?;
        let (generation, connections): (Option<Vec<u8>>, Vec<String>) = self
            .run("reading connection changes", call.invoke(&mut con))
            .await?;
        let generation = match generation {
            None => 0,
            Some(text) => super::tokens::parse_generation(&counter, &text)?.1,
        };
        Ok((generation, connections))
    }

    /// The definitions of `connections`, opened (None: absent), in one bounded read.
    async fn fetch_definitions(
        &self,
        connections: &[String],
    ) -> Result<Vec<Option<DefinitionBytes>>, StoreError> {
        let keys: Vec<String> = connections.iter().map(|c| self.definition_key(c)).collect();
        let mut call = scripts::Call::new(&scripts::READ_DEFINITIONS);
        call.key(&keys).arg(MAX_SEALED_LEN);
        let mut con = self.con().await?;
        let values: Vec<Value> = self
            .run("reading connection definitions", call.invoke(&mut con))
            .await?;
        if values.len() != keys.len() {
            return Err(bad_value(
                &self.changes_key(),
                "Redis answered a different number of definitions than asked for",
            ));
        }
        connections
            .iter()
            .zip(&keys)
            .zip(values)
            .map(|((connection, key), value)| match value {
                Value::Nil => Ok(None),
                Value::BulkString(sealed) => {
                    self.open_definition(key, connection, &sealed).map(Some)
                }
                Value::Int(n) if n < 0 => Err(bad_value(key, "the value is not a string")),
                Value::Int(_) => Err(refused(
                    key,
                    format!(
                        "the definition is longer than the {MAX_SEALED_LEN} bytes one may \
                         take; not read"
                    ),
                )),
                _ => Err(bad_value(key, "the value is not a string")),
            })
            .collect()
    }

    /// `definition` sealed for `connection` (stored at `key`); refused when longer than
    /// readers take.
    fn seal_definition(
        &self,
        key: &str,
        connection: &str,
        definition: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let label = self.label(key, connection)?;
        let sealed = record::seal_bytes(&self.key, &label, definition)
            .map(|r| r.to_bytes())
            .map_err(|reason| bad_value(key, reason))?;
        if sealed.len() > MAX_SEALED_LEN {
            return Err(bad_value(
                key,
                format!(
                    "the definition seals to more than the {MAX_SEALED_LEN} bytes readers take"
                ),
            ));
        }
        Ok(sealed)
    }

    /// Opens the value stored at `key` as `connection`'s definition.
    fn open_definition(
        &self,
        key: &str,
        connection: &str,
        sealed: &[u8],
    ) -> Result<DefinitionBytes, StoreError> {
        let record = SealedRecord::from_bytes(sealed)
            .ok_or_else(|| refused(key, "the value is too short to be a sealed definition"))?;
        self.check_key_id(key, &record)?;
        let label = self.label(key, connection)?;
        record::open_bytes(&self.key, &label, &record).map_err(|_| {
            refused(
                key,
                "the definition failed authentication (modified, or copied from another \
                 connection, key prefix or a token set)",
            )
        })
    }

    /// What a definition of `connection` is bound to: the purpose, the prefix's length and
    /// the prefix, then the connection key (the length keeps the two apart).
    fn label(&self, key: &str, connection: &str) -> Result<String, StoreError> {
        let label = format!(
            "{DEFINITION_PURPOSE}{}:{}{connection}",
            self.prefix.len(),
            self.prefix
        );
        if u16::try_from(label.len()).is_err() {
            return Err(bad_value(
                key,
                "the connection key is too long to be sealed",
            ));
        }
        Ok(label)
    }

    /// A change script's answer → the change generation it wrote.
    fn change_generation(&self, outcome: Value) -> Result<u64, StoreError> {
        let counter = self.change_generation_key();
        match outcome {
            Value::BulkString(text) => Ok(super::tokens::parse_generation(&counter, &text)?.1),
            _ => Err(bad_value(
                &counter,
                format!(
                    "the change generation is not a number below {MAX_GENERATION}; nothing \
                     was written"
                ),
            )),
        }
    }
}

/// What [`scripts::CREATE_DEFINITION`] answers when the connection has a definition.
const TAKEN: i64 = -2;

/// A put (not a create) is never refused as taken.
fn unreachable_taken(connection: &str) -> StoreError {
    bad_value(connection, "a put was answered as a create")
}

fn refused(key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Refused {
        key: key.to_owned(),
        reason: reason.into(),
        generation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::DEFINITION_PURPOSE;

    #[test]
    fn the_purpose_starts_no_other_label() {
        // Pending states are sealed under `\0state:…`; connection keys never start with NUL.
        assert!(DEFINITION_PURPOSE.starts_with('\0'));
        assert!(!"\0state:".starts_with(DEFINITION_PURPOSE));
    }
}
