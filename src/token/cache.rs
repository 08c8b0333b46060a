//! [`Cache`]: one connection's current [`TokenSet`] and [`Status`], each in an `ArcSwap`.
//!
//! Locking budget: the proxy only calls [`Cache::header`] or [`Cache::current`] — one
//! `ArcSwap` load, no lock, no allocation. Writers (the refresher, the OAuth callback and,
//! with a shared store, the follower that adopts other replicas' tokens) serialise on
//! `write_lock`, an async mutex never touched on the request path, so at most one token
//! request per connection is in flight in this process and a refresh cannot overwrite a
//! newer grant. Persisting a token set is the writer's job, done before [`Cache::publish`].
//!
//! An upstream that rejects a token early (401) asks for its replacement with
//! [`Cache::replace_rejected`]: a lock-free claim that the refresher acts on, shared by
//! every request rejected with the same token and rate-limited per connection.

use super::set::TokenSet;
use crate::instrument::TokenInstruments;
use arc_swap::{ArcSwap, ArcSwapOption};
use http::HeaderValue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

/// A connection's token lifecycle state, as status and error bodies show it. In the
/// order of `instrument::STATE_NAMES` (`State as usize` indexes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No token yet; the first request is in flight or backing off.
    Pending,
    /// A token is held and kept fresh.
    Ready,
    /// Reported only, never stored: `Ready`, but the token held is no longer usable.
    Expired,
    /// A terminal error (e.g. `invalid_client`); nothing is retried until restart or reload.
    Failed,
    /// An authorization-code connection that has never been authorized.
    NeedsAuthorization,
    /// The grant is gone (`invalid_grant`, or expiry without a refresh_request).
    NeedsReauthorization,
    /// A static credential (`bearer`, `basic`, `api_key`).
    Static,
    /// A connection with a grant per end user (`grants: per_user`): it holds none of its
    /// own; its users' grants have the states above (`crate::grants`).
    PerUser,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Ready => "ready",
            State::Expired => "expired",
            State::Failed => "failed",
            State::NeedsAuthorization => "needs_authorization",
            State::NeedsReauthorization => "needs_reauthorization",
            State::Static => "static",
            State::PerUser => "per_user",
        }
    }
}

/// What status routes show. Never holds a token value.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    pub last_refresh: Option<SystemTime>,
    /// The last failure (connection + OAuth error code or HTTP status; no secrets).
    pub last_error: Option<Box<str>>,
    pub consecutive_failures: u32,
}

pub struct Cache {
    token: ArcSwapOption<TokenSet>,
    status: ArcSwap<Status>,
    /// The shared store's generation of the current token set (0: none, or a local store).
    generation: AtomicU64,
    /// What wakes its refresher.
    pub signals: Arc<Signals>,
    /// Held while a token request and its store write run.
    pub write_lock: Mutex<()>,
    /// A token request (or, with a shared store, another replica's) is under way: a
    /// request without a usable token may wait for it briefly instead of a 503.
    fetching: AtomicBool,
    /// Notified (all waiters) when a token is published or a fetch ends.
    settled: Notify,
    /// Its token requests and adoptions, for `/metrics` (the type is `instrument`'s; it
    /// lives here so it follows the tokens across a reload that keeps them). The grants of
    /// a per-user connection share their connection's.
    pub counters: Arc<TokenInstruments>,
    /// The serial of a token an upstream rejected that the refresher is asked to replace
    /// now, out of schedule (0: none) ([`Cache::replace_rejected`]).
    rejected: AtomicU64,
    /// When the last such replacement was asked for: milliseconds since [`EPOCH`], plus 1
    /// (0: never).
    last_forced: AtomicU64,
}

/// The instant `Cache::last_forced` counts from: one for the process rather than an
/// `Instant` in every cache (16 bytes each of 100,000 per-user grants).
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// What wakes a connection's refresher. The grants of a per-user connection have none
/// (requests renew them): they share one set that nothing waits on
/// ([`Cache::sharing`]), which keeps 100,000 grants ~9 MB smaller.
#[derive(Default)]
pub struct Signals {
    /// A new grant arrived, another replica's token was adopted, or an operator asks for a
    /// retry: it decides afresh, even after a terminal error.
    pub wake: Notify,
    /// The shared store answers again: it stops backing off, but a terminal error stays
    /// terminal.
    pub store_back: Notify,
    /// A replacement of a rejected token is asked for.
    pub forced: Notify,
}

/// What became of a request to replace a rejected token ([`Cache::replace_rejected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// This request asked for the refresh, and a new token arrived.
    Refreshed,
    /// Another token is current (already, or from a refresh another request asked for).
    Reused,
    /// A replacement was asked for less than the interval ago: none now.
    Limited,
    /// The refresh failed, or no new token arrived in time.
    Failed,
}

/// Marks a fetch under way while alive ([`Cache::fetch_started`]).
pub struct Fetching<'c>(&'c Cache);

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.0.fetch_ended();
    }
}

impl Cache {
    /// An empty cache in `state` (pending, needs authorization, or static).
    pub fn new(state: State) -> Cache {
        Cache::sharing(state, Arc::default(), Arc::default())
    }

    /// An empty cache in `state` whose token requests count into `counters` and whose
    /// refresher (if any) waits on `signals` (a user's grant: its connection's).
    pub fn sharing(state: State, counters: Arc<TokenInstruments>, signals: Arc<Signals>) -> Cache {
        Cache {
            token: ArcSwapOption::empty(),
            status: ArcSwap::from_pointee(Status {
                state,
                last_refresh: None,
                last_error: None,
                consecutive_failures: 0,
            }),
            generation: AtomicU64::new(0),
            signals,
            write_lock: Mutex::new(()),
            fetching: AtomicBool::new(false),
            settled: Notify::new(),
            counters,
            rejected: AtomicU64::new(0),
            last_forced: AtomicU64::new(0),
        }
    }

    /// The request path: the `Authorization` value to inject now, if the token is usable.
    /// Cloning a `HeaderValue` bumps a reference count; nothing is allocated.
    #[inline]
    pub fn header(&self) -> Option<HeaderValue> {
        self.current().as_ref()?.header_at(Instant::now()).cloned()
    }

    /// The current token set, borrowed (no reference count taken): the fast path copies
    /// the header's bytes straight from it.
    #[inline]
    pub fn current(&self) -> arc_swap::Guard<Option<Arc<TokenSet>>> {
        self.token.load()
    }

    pub fn token(&self) -> Option<Arc<TokenSet>> {
        self.token.load_full()
    }

    pub fn status(&self) -> Arc<Status> {
        self.status.load_full()
    }

    /// The shared store's generation of the current token set (0: none or local store).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The state to report: `Ready` with an unusable token reads as `Expired`.
    pub fn state(&self) -> State {
        let status = self.status.load();
        if status.state == State::Ready && self.header().is_none() {
            State::Expired
        } else {
            status.state
        }
    }

    /// The name of [`Cache::state`].
    pub fn state_name(&self) -> &'static str {
        self.state().as_str()
    }

    /// Puts a token loaded from the store in place at start-up (no refresh recorded).
    pub fn restore(&self, set: TokenSet, generation: u64) {
        self.token.store(Some(Arc::new(set)));
        self.generation.store(generation, Ordering::Release);
        self.update(|s| s.state = State::Ready);
    }

    /// Makes `set` the current token. Call with `write_lock` held, after the set was
    /// persisted (or persisting it failed and `store_error` says why: the token is used
    /// anyway, so a rotated refresh token is never dropped).
    pub fn publish(&self, set: TokenSet, generation: u64, store_error: Option<String>) {
        self.token.store(Some(Arc::new(set)));
        self.generation.store(generation, Ordering::Release);
        self.settled.notify_waiters();
        self.update(|s| {
            s.state = State::Ready;
            s.last_refresh = Some(SystemTime::now());
            s.last_error = store_error.as_deref().map(Box::from);
            s.consecutive_failures = 0;
        });
    }

    /// A stored set of `generation` this connection may not use (obtained under another
    /// definition) was seen: the cache keeps its token, and notes the generation so the set
    /// is not offered again and the next write goes above it.
    pub fn pass(&self, generation: u64) {
        self.generation.fetch_max(generation, Ordering::AcqRel);
    }

    /// The grant is known dead (`invalid_grant` on refresh): its token, even unexpired, is
    /// no longer injected, so the app gets the 503 with the authorize link at once instead of
    /// the provider's 401s. The generation stays, so a shared store's follower does not take
    /// the same set back. Call with `write_lock` held.
    pub fn withdraw(&self) {
        self.token.store(None);
        self.settled.notify_waiters();
    }

    /// The refresher is about to fetch a token; over when the guard drops.
    pub fn fetch_started(&self) -> Fetching<'_> {
        self.fetching.store(true, Ordering::Release);
        Fetching(self)
    }

    /// Marks a fetch under way until [`Cache::fetch_ended`]: for one that outlives a
    /// borrow (a per-user grant's renewal task, queued before it runs; a reloaded
    /// connection's refresher, started after the registry swap, whose first fetch ends it).
    pub fn fetch_marked(&self) {
        self.fetching.store(true, Ordering::Release);
    }

    /// The fetch marked by [`Cache::fetch_marked`] is over; waiters look again.
    pub fn fetch_ended(&self) {
        self.fetching.store(false, Ordering::Release);
        self.settled.notify_waiters();
    }

    /// Whether a token is being fetched now.
    pub fn fetching(&self) -> bool {
        self.fetching.load(Ordering::Acquire)
    }

    /// Waits, at most `wait`, for a usable token while one is being fetched. True when a
    /// usable token is held (at once, or once it arrived).
    pub async fn usable_within(&self, wait: std::time::Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Registered before checking, so a publish in between is not missed.
            settled.as_mut().enable();
            if self.header().is_some() {
                return true;
            }
            if !self.fetching() {
                return false;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return self.header().is_some();
            }
        }
    }

    /// Whether a usable token other than the one with `serial` is current.
    pub fn replaced(&self, serial: u64) -> bool {
        let current = self.current();
        current
            .as_deref()
            .is_some_and(|t| t.serial() != serial && t.header_at(Instant::now()).is_some())
    }

    /// An upstream rejected the token with `serial` (401): unless another token is already
    /// current, asks the refresher to replace it now and waits, at most `wait`, for the
    /// new one. Every request rejected with the same token shares one refresh; a new one
    /// is asked for at most once per `interval` (not zero) per connection. Lock-free.
    pub async fn replace_rejected(
        &self,
        serial: u64,
        interval: Duration,
        wait: Duration,
    ) -> Replacement {
        match self.ask_replacement(serial, interval) {
            Ok(asked) => self.replacement(serial, asked, wait).await,
            Err(now) => now,
        }
    }

    /// The first half of [`Cache::replace_rejected`]: asks for the replacement of the
    /// token with `serial` (the refresher is woken). `Ok(true)`: this call asked;
    /// `Ok(false)`: another request had; `Err`: the answer already (reused, limited).
    pub fn ask_replacement(&self, serial: u64, interval: Duration) -> Result<bool, Replacement> {
        if self.replaced(serial) {
            return Err(Replacement::Reused);
        }
        loop {
            let rejected = self.rejected.load(Ordering::Acquire);
            if rejected == serial {
                // Another request asked for this token's replacement: share it.
                return Ok(false);
            }
            // +1: 0 means "never".
            let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
            let last = self.last_forced.load(Ordering::Acquire);
            let interval = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
            if last != 0 && now.saturating_sub(last) < interval {
                return Err(Replacement::Limited);
            }
            if self
                .rejected
                .compare_exchange(rejected, serial, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.last_forced.store(now, Ordering::Release);
                self.signals.forced.notify_one();
                return Ok(true);
            }
        }
    }

    /// The second half of [`Cache::replace_rejected`]: waits, at most `wait`, for the
    /// replacement of the token with `serial` (`asked`: by this request).
    pub async fn replacement(&self, serial: u64, asked: bool, wait: Duration) -> Replacement {
        let deadline = Instant::now() + wait;
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Registered before checking, so a publish in between is not missed.
            settled.as_mut().enable();
            let ended = self.rejected.load(Ordering::Acquire) != serial;
            // Checked after `ended`: the refresher publishes before it ends the request.
            if self.replaced(serial) {
                return if asked {
                    Replacement::Refreshed
                } else {
                    Replacement::Reused
                };
            }
            if ended || tokio::time::timeout_at(deadline, settled).await.is_err() {
                return Replacement::Failed;
            }
        }
    }

    /// For the refresher: whether the replacement of `token` (the current one) is asked for.
    pub fn replacement_asked(&self, token: Option<&TokenSet>) -> bool {
        token.is_some_and(|t| self.rejected.load(Ordering::Acquire) == t.serial())
    }

    /// For the refresher: the replacement of the token with `serial` was attempted (a new
    /// token is published, or the attempt failed); the requests waiting for it stop.
    pub fn replacement_done(&self, serial: u64) {
        let _ = self
            .rejected
            .compare_exchange(serial, 0, Ordering::AcqRel, Ordering::Acquire);
        self.settled.notify_waiters();
    }

    /// Changes the status (readers see the old or the new one, never a mix).
    pub fn update(&self, f: impl Fn(&mut Status)) {
        self.status.rcu(|old| {
            let mut s = Status::clone(old);
            f(&mut s);
            s
        });
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
