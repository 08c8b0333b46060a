//! Authorization `state`s waiting for their callback: minted by the authorize route from a
//! CSPRNG (256 bits, URL-safe, optionally prefixed with the instance name), bound
//! server-side to one connection and its PKCE verifier, single use, expiring, and bounded
//! in number. Unlike Fides, a state can be redeemed once only and not after its lifetime.
//!
//! With the Redis store the states live there instead (sealed, with the state's lifetime
//! as their TTL, redeemed with an atomic `GETDEL`), so a state minted on one replica is
//! redeemed on whichever the provider's redirect reaches, and only once. Their number is
//! then bounded by the TTL alone (minting is for trusted callers only).

use crate::token::store::{RedisStore, StoreError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Random bytes in a state (256 bits).
pub const STATE_BYTES: usize = 32;

/// A state that was minted and not yet redeemed.
pub struct Pending {
    pub connection: String,
    /// The end user a per-user connection's authorization is for (None: the connection's
    /// own grant).
    pub subject: Option<String>,
    pub verifier: Option<SecretString>,
    created: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("too many authorizations are pending; try again once some complete or expire")]
    Full,
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A pending state as sealed into Redis.
#[derive(Serialize, Deserialize)]
struct SharedPending {
    connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    verifier: Option<String>,
}

/// The pending states. The mutex is held for a map operation only, on the admin path.
pub struct PendingStates {
    states: Mutex<HashMap<String, Pending>>,
    /// Where states live when replicas share them.
    shared: Option<Arc<RedisStore>>,
    ttl: Duration,
    max: usize,
    prefix: Option<String>,
}

impl PendingStates {
    pub fn new(ttl: Duration, max: usize, instance: Option<String>) -> PendingStates {
        PendingStates {
            states: Mutex::new(HashMap::new()),
            shared: None,
            ttl,
            max,
            prefix: instance,
        }
    }

    /// States kept in Redis, for every replica.
    pub fn shared(mut self, redis: Arc<RedisStore>) -> PendingStates {
        self.shared = Some(redis);
        self
    }

    /// Mints a state for `connection` (and, on a per-user connection, `subject`),
    /// remembering its PKCE verifier.
    pub async fn mint(
        &self,
        connection: &str,
        subject: Option<&str>,
        verifier: Option<SecretString>,
    ) -> Result<String, MintError> {
        let mut bytes = [0u8; STATE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let random = URL_SAFE_NO_PAD.encode(bytes);
        let state = match &self.prefix {
            Some(p) => format!("{p}-{random}"),
            None => random,
        };
        if let Some(redis) = &self.shared {
            let doc = SharedPending {
                connection: connection.to_owned(),
                subject: subject.map(str::to_owned),
                verifier: verifier.as_ref().map(|v| v.expose_secret().to_owned()),
            };
            let payload = secrecy::zeroize::Zeroizing::new(
                serde_json::to_vec(&doc).expect("a pending state serializes"),
            );
            if let Some(v) = doc.verifier {
                drop(secrecy::zeroize::Zeroizing::new(v));
            }
            redis.put_state(&state, &payload, self.ttl).await?;
            return Ok(state);
        }
        let now = Instant::now();
        let mut states = self.states.lock().expect("pending states lock");
        if states.len() >= self.max {
            states.retain(|_, p| now.duration_since(p.created) < self.ttl);
            if states.len() >= self.max {
                return Err(MintError::Full);
            }
        }
        states.insert(
            state.clone(),
            Pending {
                connection: connection.to_owned(),
                subject: subject.map(str::to_owned),
                verifier,
                created: now,
            },
        );
        Ok(state)
    }

    /// Redeems `state`: removes it and returns it if it exists and has not expired.
    /// A second redemption of the same state (on any replica) finds nothing.
    pub async fn take(&self, state: &str) -> Result<Option<Pending>, StoreError> {
        if let Some(redis) = &self.shared {
            let Some(payload) = redis.take_state(state).await? else {
                return Ok(None);
            };
            let doc: SharedPending =
                serde_json::from_slice(&payload).map_err(|_| StoreError::BadValue {
                    key: "a pending state".into(),
                    reason: "not a pending-state document".into(),
                })?;
            return Ok(Some(Pending {
                connection: doc.connection,
                subject: doc.subject,
                verifier: doc.verifier.map(SecretString::from),
                created: Instant::now(),
            }));
        }
        let Some(pending) = self
            .states
            .lock()
            .expect("pending states lock")
            .remove(state)
        else {
            return Ok(None);
        };
        Ok((Instant::now().duration_since(pending.created) < self.ttl).then_some(pending))
    }

    /// States pending in this process (with Redis, 0: they live there, bounded by their TTL).
    pub fn len(&self) -> usize {
        self.states.lock().expect("pending states lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn single_use_expiring_bounded() {
        let p = PendingStates::new(Duration::from_secs(600), 2, Some("east".into()));
        let s1 = p.mint("a", None, None).await.unwrap();
        assert!(s1.starts_with("east-") && s1.len() == 5 + 43, "{s1}");
        assert!(s1[5..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(p.take(&s1).await.unwrap().unwrap().connection, "a");
        assert!(p.take(&s1).await.unwrap().is_none(), "second use");
        let s2 = p.mint("a", None, None).await.unwrap();
        let _s3 = p.mint("b", None, None).await.unwrap();
        assert!(matches!(
            p.mint("c", None, None).await,
            Err(MintError::Full)
        ));
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(p.take(&s2).await.unwrap().is_none(), "expired");
        // expired entries make room
        assert!(p.mint("c", None, None).await.is_ok());
        assert_ne!(
            p.mint("d", None, None).await.unwrap(),
            p.mint("d", None, None).await.unwrap_or_default()
        );
    }

    #[tokio::test]
    async fn a_state_keeps_its_subject() {
        let p = PendingStates::new(Duration::from_secs(600), 2, None);
        let state = p.mint("a", Some("alice"), None).await.unwrap();
        let pending = p.take(&state).await.unwrap().unwrap();
        assert_eq!(pending.subject.as_deref(), Some("alice"));
        let state = p.mint("a", None, None).await.unwrap();
        assert_eq!(p.take(&state).await.unwrap().unwrap().subject, None);
    }
}
