//! Authorization `state`s waiting for their callback: minted by the authorize route from a
//! CSPRNG (256 bits, URL-safe, optionally prefixed with the instance name), bound
//! server-side to one connection and its PKCE verifier, single use, expiring, and bounded
//! in number. Unlike Fides, a state can be redeemed once only and not after its lifetime.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Random bytes in a state (256 bits).
pub const STATE_BYTES: usize = 32;

/// A state that was minted and not yet redeemed.
pub struct Pending {
    pub connection: String,
    pub verifier: Option<SecretString>,
    created: Instant,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("too many authorizations are pending; try again once some complete or expire")]
    Full,
}

/// The pending states. The mutex is held for a map operation only, on the admin path.
pub struct PendingStates {
    states: Mutex<HashMap<String, Pending>>,
    ttl: Duration,
    max: usize,
    prefix: Option<String>,
}

impl PendingStates {
    pub fn new(ttl: Duration, max: usize, instance: Option<String>) -> PendingStates {
        PendingStates {
            states: Mutex::new(HashMap::new()),
            ttl,
            max,
            prefix: instance,
        }
    }

    /// Mints a state for `connection`, remembering its PKCE verifier.
    pub fn mint(
        &self,
        connection: &str,
        verifier: Option<SecretString>,
    ) -> Result<String, MintError> {
        let mut bytes = [0u8; STATE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let random = URL_SAFE_NO_PAD.encode(bytes);
        let state = match &self.prefix {
            Some(p) => format!("{p}-{random}"),
            None => random,
        };
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
                verifier,
                created: now,
            },
        );
        Ok(state)
    }

    /// Redeems `state`: removes it and returns it if it exists and has not expired.
    /// A second redemption of the same state finds nothing.
    pub fn take(&self, state: &str) -> Option<Pending> {
        let pending = self
            .states
            .lock()
            .expect("pending states lock")
            .remove(state)?;
        (Instant::now().duration_since(pending.created) < self.ttl).then_some(pending)
    }

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
        let s1 = p.mint("a", None).unwrap();
        assert!(s1.starts_with("east-") && s1.len() == 5 + 43, "{s1}");
        assert!(s1[5..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(p.take(&s1).unwrap().connection, "a");
        assert!(p.take(&s1).is_none(), "second use");
        let s2 = p.mint("a", None).unwrap();
        let _s3 = p.mint("b", None).unwrap();
        assert_eq!(p.mint("c", None), Err(MintError::Full));
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(p.take(&s2).is_none(), "expired");
        // expired entries make room
        assert!(p.mint("c", None).is_ok());
        assert_ne!(
            p.mint("d", None).unwrap(),
            p.mint("d", None).unwrap_or_default()
        );
    }
}
