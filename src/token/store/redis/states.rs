//! Pending authorization states in Redis: sealed, with the state's lifetime as their TTL,
//! and redeemed with `GETDEL`, so a state minted on one replica is redeemed on any, once.
//! The key is a hash of the state: the state itself (a bearer secret for the callback) is
//! never a Redis key.

use super::{bad_value, RedisStore};
use crate::token::store::record::{self, SealedRecord};
use crate::token::store::StoreError;
use secrecy::zeroize::Zeroizing;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Label (associated data) of a sealed pending state: a NUL cannot start a connection key
/// read from YAML, so it never collides with one.
const STATE_LABEL_PREFIX: &str = "\0state:";

impl RedisStore {
    fn state_key(&self, state: &str) -> String {
        format!("{}state:{}", self.prefix, state_digest(state))
    }

    /// Stores a pending authorization for `ttl`, sealed and bound to its state.
    pub async fn put_state(
        &self,
        state: &str,
        payload: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.state_key(state);
        let label = format!("{STATE_LABEL_PREFIX}{}", state_digest(state));
        let sealed = record::seal_bytes(&self.key, &label, payload)
            .map_err(|reason| bad_value(&key, reason))?;
        let mut con = self.con().await?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.run::<()>(
            "storing a pending authorization",
            redis::cmd("SET")
                .arg(&key)
                .arg(sealed.to_bytes())
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut con),
        )
        .await
    }

    /// Redeems a pending authorization: `GETDEL`, so a state is redeemed once across
    /// every replica. None when unknown, expired or already redeemed.
    pub async fn take_state(&self, state: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let key = self.state_key(state);
        let mut con = self.con().await?;
        let value: Option<Vec<u8>> = self
            .run(
                "redeeming a pending authorization",
                redis::cmd("GETDEL").arg(&key).query_async(&mut con),
            )
            .await?;
        let Some(value) = value else { return Ok(None) };
        let record = SealedRecord::from_bytes(&value)
            .ok_or_else(|| bad_value(&key, "the value is too short to be a record"))?;
        self.check_key_id(&key, &record)?;
        let label = format!("{STATE_LABEL_PREFIX}{}", state_digest(state));
        record::open_bytes(&self.key, &label, &record)
            .map(Some)
            .map_err(|reason| bad_value(&key, reason))
    }
}

/// SHA-256 of a state, hex: the state itself (a bearer secret for the callback) is never
/// a Redis key.
fn state_digest(state: &str) -> String {
    Sha256::digest(state.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_hashed() {
        let d = state_digest("abc");
        assert_eq!(d.len(), 64);
        assert_ne!(d, state_digest("abd"));
        assert!(!d.contains("abc"));
    }
}
