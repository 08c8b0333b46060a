//! The fast path's upstream connections of one proxy worker thread: raw [`Link`]s (a
//! stream, its read buffer, the buffer the app's response head is written into), idle
//! per upstream in a `RefCell` (no lock, no atomics), checked out for one request and
//! returned once its response was read to the end with nothing left over. Nothing reads
//! an idle link, so [`Links::reap`] closes those the upstream closed. Opened by the
//! shared [`Dialer`], with both pools' limits ([`POOL_IDLE_TIMEOUT`], [`POOL_MAX_IDLE`]).

use super::io::Buf;
use crate::instrument::{Gauge, Open};
use crate::proxy::measure;
use crate::proxy::upstream::{DialError, Dialer, Stream, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE};
use crate::registry::Entry;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often idle links are checked ([`Links::reap_idle`]).
pub const POOL_REAP_INTERVAL: Duration = Duration::from_secs(5);

/// Read buffer of a link (a response head must fit; bodies are relayed through it in
/// pieces of up to this size).
pub const LINK_BUFFER: usize = 16 * 1024;

/// A fast-path upstream connection: the stream, its read buffer, and the buffer the
/// response head for the app is written into.
pub struct Link {
    pub stream: Stream,
    pub buf: Buf,
    pub head: Vec<u8>,
    since: Instant,
    /// Counts it in `tokenwarden_open_connections{side="upstream"}` while it exists.
    _open: Open,
}

impl Link {
    /// Whether an idle connection may take a request at `now`: not idle too long, and
    /// nothing (a close, stray bytes) arrived on it.
    fn usable(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) <= POOL_IDLE_TIMEOUT
            && self.stream.idle_and_open()
    }
}

/// The idle links of one worker.
pub struct Links {
    /// Indexed by the connection's position in the registry.
    idle: RefCell<Vec<Vec<Link>>>,
    /// Wakes the reaper when it sleeps for want of pooled links.
    pooled: tokio::sync::Notify,
    reaper_parked: Cell<bool>,
    dialer: Dialer,
    /// The open upstream connections of the process.
    open: Arc<Gauge>,
}

impl Links {
    pub fn new(connections: usize, dialer: Dialer, open: Arc<Gauge>) -> Links {
        Links {
            idle: RefCell::new((0..connections).map(|_| Vec::new()).collect()),
            pooled: tokio::sync::Notify::new(),
            reaper_parked: Cell::new(false),
            dialer,
            open,
        }
    }

    /// An idle link to connection `index`'s upstream that is still open.
    pub fn checkout(&self, index: usize, now: Instant) -> Option<Link> {
        let mut links = self.idle.borrow_mut();
        let links = links.get_mut(index)?;
        while let Some(link) = links.pop() {
            if link.usable(now) {
                return Some(link);
            }
        }
        None
    }

    /// Returns a link whose last response was read to its end; idle since `since` (the
    /// start of that request will do: it errs on the old side).
    pub fn checkin(&self, index: usize, mut link: Link, since: Instant) {
        if !link.stream.is_clean() {
            return;
        }
        let mut links = self.idle.borrow_mut();
        let links = crate::proxy::pool_slot(&mut links, index);
        if links.len() < POOL_MAX_IDLE {
            link.since = since;
            links.push(link);
            if self.reaper_parked.replace(false) {
                self.pooled.notify_one();
            }
        }
    }

    /// Every [`POOL_REAP_INTERVAL`] while links are pooled, closes those the upstream
    /// closed or that waited too long. With none pooled it sleeps without a timer.
    pub async fn reap(&self) {
        loop {
            if self.idle.borrow().iter().all(Vec::is_empty) {
                self.reaper_parked.set(true);
                self.pooled.notified().await;
            }
            tokio::time::sleep(POOL_REAP_INTERVAL).await;
            self.reap_idle(Instant::now());
        }
    }

    /// Closes idle links that the upstream closed or that waited too long.
    pub fn reap_idle(&self, now: Instant) {
        for links in self.idle.borrow_mut().iter_mut() {
            links.retain(|link| link.usable(now));
        }
    }

    /// A new link to `entry`'s upstream (timed, or its failure counted: [`measure::dial`]).
    pub async fn connect(&self, entry: &Entry) -> Result<Link, DialError> {
        Ok(Link {
            stream: measure::dial(&self.dialer, entry).await?,
            buf: Buf::with_capacity(LINK_BUFFER),
            head: Vec::new(),
            since: Instant::now(),
            _open: self.open.open(),
        })
    }
}
