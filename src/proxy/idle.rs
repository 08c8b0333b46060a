//! The idle lists of a worker's upstream pools, both transports' ([`super::fast::link`],
//! [`super::full::pool`]): idle connections by upstream [`Origin`] in a `RefCell` (each
//! worker is one thread: no lock, no atomics), so every connection to one API host shares
//! them, whatever the number of connections configured or created on it. At most
//! [`POOL_MAX_IDLE`] per origin; [`IdleLists::reap`] closes the ones the upstream closed
//! or that idled longer than [`POOL_IDLE_TIMEOUT`], and drops an origin's list with its
//! last idle connection, so origins that come and go leave nothing behind.

use super::upstream::{POOL_IDLE_TIMEOUT, POOL_MAX_IDLE};
use crate::registry::{Origin, OriginHash};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How often idle connections are checked ([`IdleLists::reap`]).
pub const POOL_REAP_INTERVAL: Duration = Duration::from_secs(5);

/// An idle upstream connection of some transport.
pub(crate) trait Idle {
    /// Whether it may still take a request: nothing (a close, stray bytes) arrived on it.
    fn open(&self) -> bool;
}

struct Parked<T> {
    conn: T,
    since: Instant,
}

impl<T: Idle> Parked<T> {
    /// Not idle too long at `now`, and still open.
    fn usable(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) <= POOL_IDLE_TIMEOUT && self.conn.open()
    }
}

/// The idle connections of one worker's pool, by origin.
pub(crate) struct IdleLists<T> {
    lists: RefCell<HashMap<Origin, Vec<Parked<T>>, OriginHash>>,
    /// Wakes the reaper when it sleeps for want of idle connections.
    pooled: tokio::sync::Notify,
    reaper_parked: Cell<bool>,
}

impl<T: Idle> Default for IdleLists<T> {
    fn default() -> Self {
        IdleLists {
            lists: RefCell::new(HashMap::default()),
            pooled: tokio::sync::Notify::new(),
            reaper_parked: Cell::new(false),
        }
    }
}

impl<T: Idle> IdleLists<T> {
    /// The most recently parked idle connection to `origin` still usable at `now`.
    pub fn take(&self, origin: &Origin, now: Instant) -> Option<T> {
        let mut lists = self.lists.borrow_mut();
        let list = lists.get_mut(origin)?;
        while let Some(parked) = list.pop() {
            if parked.usable(now) {
                return Some(parked.conn);
            }
        }
        None
    }

    /// Parks `conn`, idle since `since`, unless `origin` has [`POOL_MAX_IDLE`] already.
    /// (An origin's list stays while its connections are out, so a busy origin does not
    /// allocate one per request; the reaper drops it once it is empty.)
    pub fn put(&self, origin: &Origin, conn: T, since: Instant) {
        let parked = Parked { conn, since };
        let mut lists = self.lists.borrow_mut();
        match lists.get_mut(origin) {
            Some(list) if list.len() >= POOL_MAX_IDLE => return,
            Some(list) => list.push(parked),
            None => {
                lists.insert(origin.clone(), vec![parked]);
            }
        }
        if self.reaper_parked.replace(false) {
            self.pooled.notify_one();
        }
    }

    /// Every [`POOL_REAP_INTERVAL`] while connections are parked, closes those the
    /// upstream closed or that waited too long, and drops the emptied origins. With none
    /// parked it sleeps without a timer.
    pub async fn reap(&self) {
        loop {
            if self.lists.borrow().is_empty() {
                self.reaper_parked.set(true);
                self.pooled.notified().await;
            }
            tokio::time::sleep(POOL_REAP_INTERVAL).await;
            self.reap_idle(Instant::now());
        }
    }

    /// Closes idle connections the upstream closed or that waited too long, and drops the
    /// origins left without any.
    pub fn reap_idle(&self, now: Instant) {
        self.lists.borrow_mut().retain(|_, list| {
            list.retain(|parked| parked.usable(now));
            !list.is_empty()
        });
    }

    /// How many origins have a list (for tests: it must not grow with origins gone).
    #[cfg(test)]
    pub fn origins(&self) -> usize {
        self.lists.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Fake(bool);

    impl Idle for Fake {
        fn open(&self) -> bool {
            self.0
        }
    }

    fn origin(host: &str) -> Origin {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            format!("store: {{ path: t.bin }}\nconnections:\n  - key: k\n    secrets: {{ token: t }}\n    client_config:\n      protocol: https\n      host: {host}\n      authentication:\n        strategy: bearer\n        configuration: {{ token: \"<token>\" }}\n"),
        )
        .unwrap();
        let config = crate::config::load(&file).unwrap_or_else(|p| panic!("{p}"));
        Origin::of(&Arc::clone(&config.connections[0]))
    }

    #[test]
    fn connections_are_shared_by_origin_and_emptied_origins_go() {
        let lists = IdleLists::<Fake>::default();
        let (a, a_again, b) = (
            origin("a.example"),
            origin("A.example."),
            origin("b.example"),
        );
        assert_eq!(a, a_again, "one origin, however the host is written");
        assert_ne!(a, b);
        let now = Instant::now();
        lists.put(&a, Fake(true), now);
        assert!(
            lists.take(&a_again, now).is_some(),
            "another entry's origin finds it"
        );
        assert!(lists.take(&a, now).is_none());
        lists.put(&b, Fake(false), now);
        assert!(lists.take(&b, now).is_none(), "closed by the upstream");
        lists.put(&a, Fake(true), now);
        assert_eq!(lists.origins(), 2);
        lists.reap_idle(now);
        assert_eq!(lists.origins(), 1, "b had no idle connection left");
        lists.reap_idle(now + POOL_IDLE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(lists.origins(), 0, "a's last one idled too long");
    }
}
