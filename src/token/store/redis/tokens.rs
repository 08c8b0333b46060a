//! Token sets in Redis: the bounded, authenticated read (with the rule for values of an
//! earlier version) and the writes that seal the generation they write at.
//!
//! A value opens only under the [`Binding`] of its connection, this deployment's key prefix
//! and the generation its `gen` field holds, so a value written back under a higher `gen`,
//! or copied from another prefix, is refused ([`StoreError::Refused`]). A `gen` beyond
//! [`MAX_GENERATION`] and a `sealed` field longer than [`MAX_SEALED_LEN`] are refused too, the
//! latter without being fetched.

use super::{bad_value, scripts, Commit, Lease, RedisStore, Versioned};
use super::{MAX_GENERATION, MAX_SEALED_LEN};
use crate::token::store::binding::Binding;
use crate::token::store::record::{self, SealedRecord};
use crate::token::store::{GrantRef, StoreError, StoredToken};
use redis::Value;
use std::collections::HashMap;

/// Rounds of "read the generation, propose the next one" a superseding write tries before
/// giving up (each lost round means another writer wrote in between).
const COMMIT_ATTEMPTS: usize = 3;
/// Longest `WAIT` for replicas to acknowledge a rotated refresh token (a healthy replica
/// takes a round trip; this bounds what a refresh costs while replicas are missing).
pub const WAIT_TIMEOUT_MS: u64 = 500;
/// Reads of a value of an earlier version: a lost compare-and-set means another replica
/// re-sealed it first, and the second read sees that.
const READ_ATTEMPTS: usize = 2;

/// A token hash as read: its `gen` (text and value) and its sealed bytes.
struct Raw {
    text: String,
    generation: u64,
    sealed: Vec<u8>,
}

/// What a usable value held.
enum Unsealed {
    /// Sealed by this version, at its stored generation.
    Current(Versioned),
    /// Sealed by an earlier version, adoptable (the reader holds nothing): to be re-sealed.
    Legacy(StoredToken),
}

impl RedisStore {
    /// The stored token set of `grant`, if any. `held`: the generation this replica
    /// holds (0: none). A value of an earlier version (bound to its connection only) is
    /// adopted only when `held` is 0, and is re-sealed at once at the next generation; with
    /// a set held it is refused, as it may be an old grant written back. A deleted per-user
    /// grant is [`StoreError::Deleted`].
    pub async fn read(
        &self,
        grant: GrantRef<'_>,
        held: u64,
    ) -> Result<Option<Versioned>, StoreError> {
        for _ in 0..READ_ATTEMPTS {
            let Some(raw) = self.fetch(grant).await? else {
                return Ok(None);
            };
            match self.unseal(grant, held, &raw)? {
                Unsealed::Current(stored) => return Ok(Some(stored)),
                Unsealed::Legacy(token) => {
                    if let Some(stored) = self.upgrade(grant.connection, &raw, token).await? {
                        return Ok(Some(stored));
                    }
                }
            }
        }
        Err(StoreError::Unavailable {
            endpoint: self.endpoint(),
            action: "re-sealing a token set of an earlier version",
            reason: "the value kept changing".into(),
        })
    }

    /// The stored generation of `grant` (0: none) — one small read, for polling.
    pub async fn generation(&self, grant: GrantRef<'_>) -> Result<u64, StoreError> {
        let key = self.token_key(grant);
        let mut con = self.con().await?;
        let generation: Option<Vec<u8>> = self
            .run(
                "reading a generation",
                redis::cmd("HGET")
                    .arg(&key)
                    .arg("gen")
                    .query_async(&mut con),
            )
            .await?;
        generation.map_or(Ok(0), |g| parse_generation(&key, &g).map(|(_, n)| n))
    }

    /// Every stored token set among `connections` (for a replica that holds none yet).
    pub async fn load(
        &self,
        connections: &[&str],
    ) -> Result<HashMap<String, Versioned>, StoreError> {
        let mut out = HashMap::new();
        for connection in connections {
            if let Some(v) = self.read(GrantRef::own(connection), 0).await? {
                out.insert((*connection).to_owned(), v);
            }
        }
        Ok(out)
    }

    /// The token hash of `grant` through `scripts::READ`, its `gen` checked.
    async fn fetch(&self, grant: GrantRef<'_>) -> Result<Option<Raw>, StoreError> {
        let key = self.token_key(grant);
        let mut con = self.con().await?;
        let mut call = scripts::Call::new(&scripts::READ);
        call.key(&key).arg(MAX_SEALED_LEN);
        let (generation, sealed, deleted): (Option<Vec<u8>>, Value, i64) = self
            .run("reading a token set", call.invoke(&mut con))
            .await?;
        let generation = match (generation, &sealed) {
            (None, Value::Nil) => return Ok(None),
            (None, _) => return Err(bad_value(&key, "the hash lacks its gen field")),
            (Some(g), _) => g,
        };
        let (text, generation) = parse_generation(&key, &generation)?;
        if deleted == 1 {
            return Err(StoreError::Deleted { key, generation });
        }
        let refused = |reason: String| StoreError::Refused {
            key: key.clone(),
            reason,
            generation: Some(generation),
        };
        match sealed {
            Value::BulkString(sealed) => Ok(Some(Raw {
                text,
                generation,
                sealed,
            })),
            Value::Int(_) => Err(refused(format!(
                "the sealed field is longer than the {MAX_SEALED_LEN} bytes a token set may \
                 take; not read"
            ))),
            _ => Err(refused("the hash lacks its sealed field".into())),
        }
    }

    /// Opens `raw` as this version's value at its generation, or as an earlier version's
    /// (a connection's own grant only: per-user grants are newer than that format).
    fn unseal(&self, grant: GrantRef<'_>, held: u64, raw: &Raw) -> Result<Unsealed, StoreError> {
        let key = self.token_key(grant);
        let record = SealedRecord::from_bytes(&raw.sealed).ok_or_else(|| StoreError::Refused {
            key: key.clone(),
            reason: "the sealed field is too short to be a record".into(),
            generation: Some(raw.generation),
        })?;
        self.check_key_id(&key, &record)?;
        let binding = self.binding(grant, raw.generation);
        if let Ok(token) = record::open(&self.key, &binding, &record) {
            return Ok(Unsealed::Current(Versioned {
                generation: raw.generation,
                token,
            }));
        }
        let legacy = match grant.is_own() {
            true => record::open_legacy(&self.key, grant.connection, &record).map_err(drop),
            false => Err(()),
        };
        let reason = match legacy {
            Ok(token) if held == 0 && self.migrate_legacy => return Ok(Unsealed::Legacy(token)),
            Ok(_) if self.migrate_legacy => {
                "sealed by an earlier version (without its generation and key prefix), \
                 which is adopted only by a replica holding no token set: it may be an \
                 old grant written back"
            }
            Ok(_) => {
                "sealed by an earlier version (without its generation and key prefix): \
                 refused, since it may be an old grant written back; for the first start \
                 after an upgrade, store.migrate_legacy: true adopts and re-seals it"
            }
            Err(_) => {
                "failed authentication (modified, written back under another generation, \
                 or copied from another connection or key prefix)"
            }
        };
        Err(StoreError::Refused {
            key,
            reason: reason.into(),
            generation: Some(raw.generation),
        })
    }

    /// Re-seals an earlier version's value at the next generation, if it is still there.
    async fn upgrade(
        &self,
        connection: &str,
        raw: &Raw,
        token: StoredToken,
    ) -> Result<Option<Versioned>, StoreError> {
        let grant = GrantRef::own(connection);
        let key = self.token_key(grant);
        let generation = next_generation(&key, raw.generation)?;
        let sealed = self.seal(grant, generation, &token)?;
        let mut con = self.con().await?;
        let mut call = scripts::Call::new(&scripts::UPGRADE);
        call.key(&key)
            .arg(&raw.text)
            .arg(generation)
            .arg(sealed)
            .arg(self.channel())
            .arg(connection);
        let wrote: i64 = self
            .run("re-sealing a token set", call.invoke(&mut con))
            .await?;
        if wrote != 1 {
            return Ok(None);
        }
        tracing::info!(redis_key = %key, generation, "token set of an earlier version re-sealed with its generation and key prefix");
        Ok(Some(Versioned { generation, token }))
    }

    pub(super) fn check_key_id(&self, key: &str, record: &SealedRecord) -> Result<(), StoreError> {
        if record.key_id == self.key.id {
            return Ok(());
        }
        Err(StoreError::WrongKeyAt {
            key: key.to_owned(),
            stored_key_id: record.key_id.to_string(),
            configured_key_id: self.key.id.to_string(),
        })
    }

    /// Writes `token` as the next generation (see `scripts::COMMIT`). `lease`: the
    /// writer's lease, if it took one. `fenced`: refuse when Redis holds a set newer than
    /// `floor`, the generation the writer's set was refreshed from (false: a new grant
    /// from the callback, which supersedes whatever is stored). `replicate`: the set holds
    /// a refresh token no earlier set held (rotated, or a new grant), which a failover must
    /// not lose: with `store.min_replicas_acked`, it counts as written once that many
    /// replicas hold it ([`RedisStore::replicated`]).
    pub async fn commit(
        &self,
        grant: GrantRef<'_>,
        lease: Option<&Lease>,
        fenced: bool,
        floor: u64,
        token: &StoredToken,
        replicate: bool,
    ) -> Result<Commit, StoreError> {
        let key = self.token_key(grant);
        let (channel, message) = self.announce(grant);
        let replicas = if replicate {
            self.min_replicas_acked
        } else {
            0
        };
        for _ in 0..COMMIT_ATTEMPTS {
            let base = if fenced {
                floor
            } else {
                floor.max(self.usable_generation(grant).await?)
            };
            let generation = next_generation(&key, base)?;
            let sealed = self.seal(grant, generation, token)?;
            let mut con = self.con().await?;
            let mut call = scripts::Call::new(&scripts::COMMIT);
            call.key(&key)
                .key(self.lease_key(grant))
                .arg(lease.map_or("", |l| l.holder.as_str()))
                .arg(if fenced { "fenced" } else { "supersede" })
                .arg(floor)
                .arg(generation)
                .arg(sealed)
                // No channel: written, but neither announced nor the lease given back yet.
                .arg(if replicas > 0 { "" } else { channel.as_str() })
                .arg(&message);
            self.indexed(&mut call, grant, token);
            let outcome = if replicas == 0 {
                self.run("writing a token set", call.invoke(&mut con))
                    .await?
            } else {
                let (outcome, acked) = self
                    .run(
                        "writing a token set",
                        call.invoke_then_wait(&mut con, replicas, WAIT_TIMEOUT_MS),
                    )
                    .await?;
                if outcome == 1 {
                    return Ok(self.replicated(grant, lease, generation, acked).await);
                }
                outcome
            };
            match outcome {
                1 => return Ok(Commit::Written(generation)),
                -3 => continue,
                _ => return Ok(Commit::Fenced),
            }
        }
        Err(StoreError::Unavailable {
            endpoint: self.endpoint(),
            action: "writing a token set",
            reason: "other writers kept writing first".into(),
        })
    }

    /// After `commit` wrote `generation` without announcing it, and `acked` replicas
    /// acknowledged it within the `WAIT`: gives the lease back and announces the set. With
    /// fewer than `min_replicas_acked`, the write counts as failed (`Unreplicated`), as a
    /// Redis error does: the set is used and announced all the same, so that every replica
    /// holds it — should a failover lose it, their followers write it back, and none
    /// refreshes from the refresh token it replaced.
    async fn replicated(
        &self,
        grant: GrantRef<'_>,
        lease: Option<&Lease>,
        generation: u64,
        acked: u32,
    ) -> Commit {
        let (channel, message) = self.announce(grant);
        let mut call = scripts::Call::new(&scripts::ANNOUNCE);
        call.key(self.lease_key(grant))
            .arg(lease.map_or("", |l| l.holder.as_str()))
            .arg(channel)
            .arg(generation)
            .arg(message);
        let announced = async {
            let mut con = self.con().await?;
            self.run::<i64>("announcing a token set", call.invoke(&mut con))
                .await
        };
        // Written: a lost announcement only delays the other replicas until they poll,
        // and a lease not given back expires.
        if let Err(e) = announced.await {
            tracing::debug!(error = %e, "could not announce a token set");
        }
        if acked >= self.min_replicas_acked {
            Commit::Written(generation)
        } else {
            Commit::Unreplicated { generation, acked }
        }
    }

    /// The stored generation, with a refused or unreadable one as 0 (as the scripts count it).
    async fn usable_generation(&self, grant: GrantRef<'_>) -> Result<u64, StoreError> {
        match self.generation(grant).await {
            Err(StoreError::Refused { .. } | StoreError::BadValue { .. }) => Ok(0),
            other => other,
        }
    }

    /// Puts `token` back at `generation` if Redis holds an older one or none (see
    /// `scripts::RESTORE`). Returns whether it wrote.
    pub async fn restore(
        &self,
        grant: GrantRef<'_>,
        generation: u64,
        token: &StoredToken,
    ) -> Result<bool, StoreError> {
        let sealed = self.seal(grant, generation, token)?;
        let (channel, message) = self.announce(grant);
        let mut con = self.con().await?;
        let mut call = scripts::Call::new(&scripts::RESTORE);
        call.key(self.token_key(grant))
            .key(self.lease_key(grant))
            .arg(generation)
            .arg(sealed)
            .arg(channel)
            .arg(message);
        self.indexed(&mut call, grant, token);
        let wrote: i64 = self
            .run("restoring a token set", call.invoke(&mut con))
            .await?;
        Ok(wrote == 1)
    }

    /// What a value of `grant` at `generation` is sealed to.
    fn binding<'a>(&'a self, grant: GrantRef<'a>, generation: u64) -> Binding<'a> {
        Binding {
            connection: grant.connection,
            subject: grant.subject,
            namespace: &self.prefix,
            generation,
        }
    }

    /// `token` sealed for `grant` at `generation`, as a `sealed` field; refused when
    /// longer than readers take.
    pub(super) fn seal(
        &self,
        grant: GrantRef<'_>,
        generation: u64,
        token: &StoredToken,
    ) -> Result<Vec<u8>, StoreError> {
        let key = self.token_key(grant);
        let binding = self.binding(grant, generation);
        let sealed = record::seal(&self.key, &binding, token)
            .map(|r| r.to_bytes())
            .map_err(|reason| bad_value(&key, reason))?;
        if sealed.len() > MAX_SEALED_LEN {
            return Err(bad_value(
                &key,
                format!("the token set seals to more than the {MAX_SEALED_LEN} bytes readers take"),
            ));
        }
        Ok(sealed)
    }
}

/// A `gen` field → its text and value; beyond [`MAX_GENERATION`] it is refused. Digits
/// only, and no leading zero (which tokenwarden never writes): the scripts (`stored_gen`)
/// count a field of more than 16 characters as 0, so `00000000000000001` must not be 1 here.
pub(super) fn parse_generation(key: &str, field: &[u8]) -> Result<(String, u64), StoreError> {
    let text = std::str::from_utf8(field)
        .ok()
        .filter(|t| {
            !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit())
                && (t.len() == 1 || !t.starts_with('0'))
        })
        .ok_or_else(|| bad_value(key, "the gen field is not a number"))?;
    match text.parse::<u64>() {
        Ok(n) if n <= MAX_GENERATION => Ok((text.to_owned(), n)),
        _ => Err(StoreError::Refused {
            key: key.to_owned(),
            reason: format!(
                "the gen field is beyond {MAX_GENERATION} (2^53 - 1), which tokenwarden \
                 never writes"
            ),
            generation: None,
        }),
    }
}

/// The generation after `base`, if within the bound.
fn next_generation(key: &str, base: u64) -> Result<u64, StoreError> {
    base.checked_add(1)
        .filter(|&n| n <= MAX_GENERATION)
        .ok_or_else(|| bad_value(key, format!("no generation left after {base}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_parse_within_the_bound() {
        let ok = |t: &str| parse_generation("k", t.as_bytes()).map(|(_, n)| n).ok();
        assert_eq!(ok("0"), Some(0));
        assert_eq!(ok("42"), Some(42));
        assert_eq!(ok("9007199254740991"), Some(MAX_GENERATION));
        assert_eq!(ok("00000000000000001"), None, "the scripts read it as 0");
        assert_eq!(ok("07"), None);
        for beyond in [
            "9007199254740992",
            "18446744073709551615",
            "99999999999999999999",
        ] {
            let err = parse_generation("k", beyond.as_bytes()).err().unwrap();
            assert!(
                matches!(
                    err,
                    StoreError::Refused {
                        generation: None,
                        ..
                    }
                ),
                "{err}"
            );
        }
        for junk in ["", "x", "-1", "1.8446744073709552e+19", " 1"] {
            let err = parse_generation("k", junk.as_bytes()).err().unwrap();
            assert!(
                matches!(err, StoreError::BadValue { .. }),
                "{junk:?}: {err}"
            );
        }
        assert!(next_generation("k", MAX_GENERATION - 1).is_ok());
        assert!(next_generation("k", MAX_GENERATION).is_err());
    }
}
