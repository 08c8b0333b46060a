//! Connections no longer in the config whose stored grant is kept for a grace period
//! ([`REMOVED_GRANT_GRACE`]), so that a file restored meanwhile (an edit undone, a file
//! read half-saved) gets its grant back instead of a new authorization. The record stays in
//! the store until the period has passed, so a restart within it keeps it too (the period
//! then starts again: tokenwarden retires, at start, every stored grant the config does
//! not name).
//!
//! [`Retired`] is only the bookkeeping — which keys, until when, under which grant
//! identity; the reloader deletes what [`Retired::wait_due`] hands back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long the stored grant of a connection removed from the config is kept.
pub const REMOVED_GRANT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The retired connections, by key. Locking: one short mutex, taken by reloads and by the
/// task that deletes expired grants; never on the request path.
pub struct Retired {
    grace: Duration,
    by_key: Mutex<HashMap<String, Retiree>>,
    /// Wakes [`Retired::wait_due`] when a key is retired (its deadline may be the next).
    retired: Notify,
}

struct Retiree {
    /// The grant identity of the definition it was removed from; None when it was not
    /// configured at start (its stored grant is then taken back as start-up would).
    identity: Option<[u8; 32]>,
    until: Instant,
}

/// What a connection added by a reload finds of a grant it may have held before.
#[derive(Debug, PartialEq, Eq)]
pub enum Revived {
    /// Not retired (new, or its grace has passed): whatever the store holds is its own.
    Unknown,
    /// Removed earlier under the same grant identity (or unknown): the stored grant is
    /// valid for it.
    Same,
    /// Removed earlier under another grant identity: the stored grant is not its own.
    Other,
}

impl Retired {
    pub fn new(grace: Duration) -> Retired {
        Retired {
            grace,
            by_key: Mutex::new(HashMap::new()),
            retired: Notify::new(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Retiree>> {
        self.by_key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps the stored grant of `key` for the grace period from now.
    pub fn retire(&self, key: &str, identity: Option<[u8; 32]>) {
        let until = Instant::now() + self.grace;
        self.map()
            .insert(key.to_owned(), Retiree { identity, until });
        self.retired.notify_one();
    }

    /// `key` is configured again, with `identity`: it is no longer retired.
    pub fn revive(&self, key: &str, identity: [u8; 32]) -> Revived {
        match self.map().remove(key) {
            None => Revived::Unknown,
            Some(Retiree {
                identity: Some(before),
                ..
            }) if before != identity => Revived::Other,
            Some(_) => Revived::Same,
        }
    }

    /// The keys whose grace has passed at `now`, taken out.
    fn due(&self, now: Instant) -> Vec<String> {
        let mut map = self.map();
        let due: Vec<String> = map
            .iter()
            .filter(|(_, r)| r.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            map.remove(key);
        }
        due
    }

    /// Waits until some key's grace has passed; returns those keys, taken out.
    pub async fn wait_due(&self) -> Vec<String> {
        loop {
            let next = self.map().values().map(|r| r.until).min();
            match next {
                Some(at) if at <= Instant::now() => {
                    let due = self.due(Instant::now());
                    if !due.is_empty() {
                        return due;
                    }
                }
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.retired.notified() => {}
                    }
                }
                None => self.retired.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn keys_come_due_after_the_grace_unless_revived() {
        let retired = Retired::new(GRACE);
        retired.retire("a", Some([1; 32]));
        tokio::time::advance(Duration::from_secs(10)).await;
        retired.retire("b", None);
        retired.retire("c", Some([3; 32]));
        assert_eq!(retired.revive("c", [3; 32]), Revived::Same);
        assert_eq!(retired.revive("c", [3; 32]), Revived::Unknown);
        let started = Instant::now();
        assert_eq!(retired.wait_due().await, ["a"]);
        assert_eq!(Instant::now() - started, GRACE - Duration::from_secs(10));
        assert_eq!(retired.wait_due().await, ["b"]);
        assert_eq!(Instant::now() - started, GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_revived_under_another_identity_is_not_its_own() {
        let retired = Retired::new(GRACE);
        retired.retire("a", Some([1; 32]));
        retired.retire("b", None);
        assert_eq!(retired.revive("a", [2; 32]), Revived::Other);
        assert_eq!(retired.revive("b", [2; 32]), Revived::Same);
        assert_eq!(retired.revive("z", [2; 32]), Revived::Unknown);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_sees_a_key_retired_after_it_began() {
        let retired = std::sync::Arc::new(Retired::new(GRACE));
        let waiter = tokio::spawn({
            let retired = std::sync::Arc::clone(&retired);
            async move { retired.wait_due().await }
        });
        tokio::task::yield_now().await;
        retired.retire("late", None);
        assert_eq!(waiter.await.unwrap(), ["late"]);
    }
}
