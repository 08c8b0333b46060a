//! Per-user grants in Redis: each a token hash of its own (`P{k}:grant:<subject>`, written
//! and read as a connection's own set is, sealed with its subject), plus two sorted sets
//! per connection that list and count them without opening any: `P{k}:grants` (every
//! score 0, paged by subject with `ZRANGE … BYLEX`) and `P{k}:grant-expiry` (score: the
//! access token's expiry in Unix milliseconds, [`LONG_LIVED`] for none). The write scripts
//! keep both in step with the hash (`scripts::INDEX`).
//!
//! A deleted grant leaves a tombstone for [`TOMBSTONE_LIFETIME`]: its hash keeps `gen`
//! (raised) and `deleted`, so a replica that still holds the grant drops it
//! ([`StoreError::Deleted`]) instead of writing it back as it would a set Redis lost.

use super::{scripts, RedisStore, MAX_GENERATION};
use crate::token::store::{GrantCounts, GrantListing, GrantRef, StoreError, StoredToken};
use std::time::Duration;

/// The expiry score of a long-lived access token: the largest integer a Lua number holds
/// exactly, after every real expiry.
pub const LONG_LIVED: u64 = MAX_GENERATION;
/// How long a deleted grant's tombstone stays.
pub const TOMBSTONE_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Subjects removed per command when a connection's grants are all deleted.
const REMOVE_BATCH: usize = 500;
/// Rounds of "read the generation, delete at the next" before giving up.
const REMOVE_ATTEMPTS: usize = 3;

impl RedisStore {
    /// The subject index of `connection`: `P{k}:grants`.
    fn subjects_key(&self, connection: &str) -> String {
        format!("{}{{{connection}}}:grants", self.prefix)
    }

    /// The expiry index of `connection`: `P{k}:grant-expiry`.
    fn expiry_key(&self, connection: &str) -> String {
        format!("{}{{{connection}}}:grant-expiry", self.prefix)
    }

    /// Adds a per-user grant's index keys and arguments to a write script's invocation
    /// (`scripts::COMMIT`, `scripts::RESTORE`); nothing for a connection's own grant.
    pub(super) fn indexed(
        &self,
        call: &mut scripts::Call,
        grant: GrantRef<'_>,
        token: &StoredToken,
    ) {
        if grant.is_own() {
            return;
        }
        call.key(self.subjects_key(grant.connection))
            .key(self.expiry_key(grant.connection))
            .arg(grant.subject)
            .arg(token.expires_at_ms.unwrap_or(LONG_LIVED).min(LONG_LIVED));
    }

    /// Deletes a per-user grant (leaving its tombstone) and publishes it; whether there
    /// was one.
    pub async fn remove_grant(&self, grant: GrantRef<'_>) -> Result<bool, StoreError> {
        let key = self.token_key(grant);
        let (channel, message) = self.announce(grant);
        let ttl = u64::try_from(TOMBSTONE_LIFETIME.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..REMOVE_ATTEMPTS {
            let current = match self.generation(grant).await {
                Ok(0) => String::new(),
                Ok(n) => n.to_string(),
                // Unreadable: delete above whatever it is.
                Err(_) => self.raw_generation(&key).await?,
            };
            let next = current.parse::<u64>().unwrap_or(0).saturating_add(1);
            let mut call = scripts::Call::new(&scripts::REMOVE_GRANT);
            call.key(&key)
                .key(self.subjects_key(grant.connection))
                .key(self.expiry_key(grant.connection))
                .arg(&current)
                .arg(next.min(MAX_GENERATION))
                .arg(&channel)
                .arg(&message)
                .arg(grant.subject)
                .arg(ttl);
            let mut con = self.con().await?;
            let outcome: i64 = self.run("deleting a grant", call.invoke(&mut con)).await?;
            match outcome {
                -3 => continue,
                n => return Ok(n == 1),
            }
        }
        Err(StoreError::Unavailable {
            endpoint: self.endpoint(),
            action: "deleting a grant",
            reason: "other writers kept writing first".into(),
        })
    }

    /// The `gen` field as stored, whatever it holds ("" when absent).
    async fn raw_generation(&self, key: &str) -> Result<String, StoreError> {
        let mut con = self.con().await?;
        let raw: Option<Vec<u8>> = self
            .run(
                "reading a generation",
                redis::cmd("HGET").arg(key).arg("gen").query_async(&mut con),
            )
            .await?;
        Ok(raw
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .unwrap_or_default())
    }

    /// At most `limit` of `connection`'s grants by subject, after `after` (exclusive).
    pub async fn grant_page(
        &self,
        connection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantListing>, StoreError> {
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let mut con = self.con().await?;
        let subjects: Vec<String> = self
            .run(
                "listing grants",
                redis::cmd("ZRANGE")
                    .arg(self.subjects_key(connection))
                    .arg(start)
                    .arg("+")
                    .arg("BYLEX")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut con),
            )
            .await?;
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let scores: Vec<Option<f64>> = self
            .run(
                "listing grants",
                redis::cmd("ZMSCORE")
                    .arg(self.expiry_key(connection))
                    .arg(&subjects)
                    .query_async(&mut con),
            )
            .await?;
        Ok(subjects
            .into_iter()
            .zip(scores)
            .map(|(subject, score)| GrantListing {
                subject,
                expires_at_ms: score.map(|s| s as u64).filter(|&s| s < LONG_LIVED),
            })
            .collect())
    }

    /// How many grants `connection` has, and how many expired before `now_ms`.
    pub async fn grant_counts(
        &self,
        connection: &str,
        now_ms: u64,
    ) -> Result<GrantCounts, StoreError> {
        let mut con = self.con().await?;
        let (total, expired): (u64, u64) = self
            .run(
                "counting grants",
                redis::pipe()
                    .cmd("ZCARD")
                    .arg(self.subjects_key(connection))
                    .cmd("ZCOUNT")
                    .arg(self.expiry_key(connection))
                    .arg("-inf")
                    .arg(format!("({now_ms}"))
                    .query_async(&mut con),
            )
            .await?;
        Ok(GrantCounts { total, expired })
    }

    /// Deletes every grant of `connection` (a runtime connection deleted), in batches.
    pub async fn remove_grants(&self, connection: &str) -> Result<(), StoreError> {
        loop {
            let page = self.grant_page(connection, None, REMOVE_BATCH).await?;
            if page.is_empty() {
                return Ok(());
            }
            for listed in &page {
                self.remove_grant(GrantRef::user(connection, &listed.subject))
                    .await?;
            }
        }
    }
}
