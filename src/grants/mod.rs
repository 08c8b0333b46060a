//! Per-user grants (`grants: per_user`): one authorization-code connection, one grant per
//! end user, chosen per request by its subject ([`subject`]).
//!
//! Each grant is a [`Grant`]: its subject and a [`Cache`] of its own (the same lock-free
//! token, status, write lock and 401 bookkeeping a connection's own grant has), sharing the
//! connection's token counters, so `/metrics` sums them per connection and never names a
//! subject. A process keeps about `grant_cache_size` of them ([`Grants`]: 16 shards, each a
//! hash table and a second-chance eviction line: [`shard`]), reads a missing one from the
//! store on its first request ([`Grants::load`], single-flight), and evicts one not used
//! lately — never one being renewed or written.
//!
//! There is no timer per grant. A request that finds its grant's token past its refresh
//! time starts a renewal in the background and goes on with the token; one that finds it
//! expired starts one and waits for it (at most `proxy::route::TOKEN_WAIT`). A renewal
//! ([`renew`]) is single-flight per grant, waits its turn among the connection's
//! `max_concurrent_token_requests` (a fair queue), and runs the connection's own sequence
//! (`refresher::persist`): with Redis under the grant's lease, adopting a newer set another
//! replica stored instead of refreshing with a rotated-away refresh token.

mod shard;
pub mod subject;

use crate::config::{Auth, Connection, PerUser};
use crate::instrument::TokenInstruments;
use crate::oauth::flow::Exchange;
use crate::oauth::TokenClient;
use crate::refresher::persist::{self, Begin, Holder};
use crate::registry::Entry;
use crate::token::store::{Backend, GrantRef, StoreError};
use crate::token::{schedule, Cache, Signals, State, TokenSet};
use arc_swap::ArcSwapOption;
use hashbrown::DefaultHashBuilder;
use shard::Shard;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::LazyLock;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Shards of the in-memory grant map (each its own lock and eviction order).
const SHARDS: usize = 16;
/// Rounds a renewal waits for another replica's lease before giving up until the next
/// request.
const LEASE_ROUNDS: usize = 4;

/// The instant grant back-offs are counted from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds from [`EPOCH`] to `at` (at least 1, so 0 can mean "none").
fn since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_millis()).unwrap_or(u64::MAX) + 1
}

/// The audit log target: every grant created, imported, refreshed, failed or deleted.
pub const AUDIT: &str = "tokenwarden::audit";

/// One end user's grant, as this process holds it.
pub struct Grant {
    pub subject: Arc<str>,
    pub tokens: Cache,
    /// Read from the store (once, under the write lock; a failed read is tried again by
    /// the next request).
    loaded: AtomicBool,
    /// A renewal is queued or running.
    renewing: AtomicBool,
    /// Used since eviction last looked at it: its second chance ([`Grants::get`]).
    used: AtomicBool,
    /// No renewal before this many milliseconds after [`epoch`] (backing off after a
    /// failed one; 0: none).
    not_before: AtomicU64,
}

impl Grant {
    fn new(subject: &str, counters: &Arc<TokenInstruments>, signals: &Arc<Signals>) -> Grant {
        let (counters, signals) = (Arc::clone(counters), Arc::clone(signals));
        Grant {
            subject: subject.into(),
            tokens: Cache::sharing(State::NeedsAuthorization, counters, signals),
            loaded: AtomicBool::new(false),
            renewing: AtomicBool::new(false),
            used: AtomicBool::new(false),
            not_before: AtomicU64::new(0),
        }
    }

    /// Whether a renewal may start now (not backing off).
    fn may_renew(&self) -> bool {
        self.not_before.load(Ordering::Acquire) <= since_epoch(Instant::now())
    }

    /// Backs off after failed renewal number `failures` in a row (0: clears it).
    fn back_off(&self, failures: u32, retry_after: Option<std::time::Duration>) {
        let at = match failures {
            0 => 0,
            n => {
                let wait = schedule::backoff(n, retry_after, rand::random(), schedule::BACKOFF_MAX);
                since_epoch(Instant::now() + wait)
            }
        };
        self.not_before.store(at, Ordering::Release);
    }

    /// Whether its stored set was read.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }
}

/// What renewals and loads use: set when the connection's tasks start
/// (`Reloader::start_refresher`), and again at each reload.
pub struct Links {
    pub client: TokenClient,
    pub backend: Backend,
    /// The runtime renewals run on (requests are planned on the workers' runtimes).
    pub runtime: tokio::runtime::Handle,
}

/// The grants of one per-user connection in this process.
pub struct Grants {
    /// Shards have no bound of their own: `held` counts every grant against
    /// `grant_cache_size`, so that many subjects fit however they spread over the shards.
    /// (A bound of a sixteenth each made the fuller shards evict while the cache was not
    /// full — with 10,000 subjects and the default size, about 150 grants — and requests
    /// cycling over the subjects then missed in every overflowing shard:
    /// `benches/ab_subject.sh` with `SUBJECTS=10000`.)
    shards: Box<[Mutex<Shard>]>,
    /// How many grants the shards hold together.
    held: AtomicUsize,
    /// Hashes subjects, for their shard and within it: foldhash, randomly seeded, about a
    /// tenth of SipHash's cost on the request path (`benches/ab_subject.sh`).
    hasher: DefaultHashBuilder,
    /// The connection's token requests in flight: `max_concurrent_token_requests` permits.
    permits: Semaphore,
    settings: PerUser,
    counters: Arc<TokenInstruments>,
    /// What its grants' caches would wake a refresher with: nothing waits on it.
    signals: Arc<Signals>,
    links: ArcSwapOption<Links>,
}

impl Grants {
    /// No grant yet; token requests count into `counters` (the connection's).
    pub fn new(settings: PerUser, counters: Arc<TokenInstruments>) -> Grants {
        Grants {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            held: AtomicUsize::new(0),
            hasher: DefaultHashBuilder::default(),
            permits: Semaphore::new(settings.max_concurrent_token_requests),
            settings,
            counters,
            signals: Arc::default(),
            links: ArcSwapOption::empty(),
        }
    }

    /// The settings it was made with (a reload with others makes a new one).
    pub fn settings(&self) -> PerUser {
        self.settings
    }

    /// Sets what renewals and loads use.
    pub fn attach(&self, links: Links) {
        self.links.store(Some(Arc::new(links)));
    }

    /// The shard of `subject`, locked, and the subject's hash.
    fn shard(&self, subject: &str) -> (MutexGuard<'_, Shard>, u64) {
        let hash = self.hasher.hash_one(subject);
        // Bits the shard's table does not use (the low ones place, the top ones tag).
        let i = ((hash >> 32) as usize) % SHARDS;
        // A panic while holding it leaves the shard consistent (one table operation).
        let shard = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
        (shard, hash)
    }

    /// The grant of `subject`, marked used; a new, unread one if this process holds none.
    /// When that makes more than `grant_cache_size`, its shard evicts one not used lately
    /// ([`Shard::evict_one`]); an empty shard evicts nothing: the count may exceed the size
    /// by fewer than [`SHARDS`].
    pub fn get(&self, subject: &str) -> Arc<Grant> {
        let (mut shard, hash) = self.shard(subject);
        if let Some(grant) = shard.find(hash, subject) {
            if !grant.used.load(Ordering::Relaxed) {
                grant.used.store(true, Ordering::Relaxed);
            }
            return Arc::clone(grant);
        }
        let full = self.held.fetch_add(1, Ordering::AcqRel) >= self.settings.cache_size;
        if full && shard.evict_one(&self.hasher) {
            self.held.fetch_sub(1, Ordering::AcqRel);
        }
        // Unmarked: one that is not requested again goes before those that are.
        let grant = Arc::new(Grant::new(subject, &self.counters, &self.signals));
        shard.insert(hash, Arc::clone(&grant), &self.hasher);
        grant
    }

    /// The grant of `subject` if this process holds it (its order unchanged).
    pub fn cached(&self, subject: &str) -> Option<Arc<Grant>> {
        let (shard, hash) = self.shard(subject);
        shard.find(hash, subject).cloned()
    }

    /// Drops the grant of `subject` from memory (deleted, or found to be absent).
    pub fn forget(&self, subject: &str) {
        let (mut shard, hash) = self.shard(subject);
        if shard.remove(hash, subject, &self.hasher) {
            self.held.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// How many grants this process holds, by state.
    pub fn in_memory(&self) -> Vec<(State, usize)> {
        let mut counts: Vec<(State, usize)> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for grant in shard.iter() {
                let state = grant.tokens.state();
                match counts.iter_mut().find(|(s, _)| *s == state) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((state, 1)),
                }
            }
        }
        counts
    }

    /// Reads `grant`'s set from the store, once (concurrent callers share the read). A
    /// subject without a stored grant is forgotten again, so that one that is authorized
    /// later — on any replica — is read afresh by its next request.
    pub async fn load(&self, conn: &Connection, grant: &Grant) -> Result<(), StoreError> {
        let links = self.links.load_full();
        let Some(links) = links else {
            return Ok(()); // not started yet: nothing to read with
        };
        if !grant.loaded() {
            let _guard = grant.tokens.write_lock.lock().await;
            if !grant.loaded() {
                read(&links.backend, conn, grant).await?;
                grant.loaded.store(true, Ordering::Release);
            }
        }
        if grant.tokens.token().is_none() {
            self.forget(&grant.subject);
        }
        Ok(())
    }

    /// Starts a renewal of `grant` in the background, unless one is queued or running.
    /// True when one is (a request may wait for it).
    pub fn renew(&self, entry: &Arc<Entry>, grant: &Arc<Grant>) -> bool {
        let Some(links) = self.links.load_full() else {
            return false;
        };
        if !grant.may_renew() {
            return false;
        }
        if grant.renewing.swap(true, Ordering::AcqRel) {
            return true;
        }
        // Marked before the task runs, so a request refused now may wait for it.
        grant.tokens.fetch_marked();
        let (entry, grant) = (Arc::clone(entry), Arc::clone(grant));
        let runtime = links.runtime.clone();
        runtime.spawn(async move {
            let _marks = Renewing(Arc::clone(&grant));
            renew(&entry, &grant, &links).await;
        });
        true
    }
}

/// Clears a grant's renewal marks when its renewal task ends — by a panic too, which
/// would otherwise leave every request for it waiting for a renewal that never comes.
struct Renewing(Arc<Grant>);

impl Drop for Renewing {
    fn drop(&mut self) {
        self.0.renewing.store(false, Ordering::Release);
        self.0.tokens.fetch_ended();
    }
}

/// The store's set of `grant`, put in its cache if the connection may use it.
async fn read(backend: &Backend, conn: &Connection, grant: &Grant) -> Result<(), StoreError> {
    let key = GrantRef::user(&conn.key, &grant.subject);
    let stored = match backend.read_grant(key).await {
        Ok(stored) => stored,
        Err(StoreError::Deleted { generation, .. }) => {
            grant.tokens.pass(generation);
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(stored) = stored {
        persist::restore(&grant.tokens, conn, stored);
    }
    Ok(())
}

/// Whether a request should start a renewal of a grant holding `token` at `now`: it is
/// past its refresh time (or unusable) and can be refreshed.
pub fn due(conn: &Connection, token: Option<&TokenSet>, now: Instant) -> bool {
    let Auth::OAuth2(oauth) = &conn.auth else {
        return false;
    };
    let Some(token) = token else {
        return false;
    };
    let late = token.refresh_at.is_some_and(|at| at <= now) || token.header_at(now).is_none();
    late && oauth.refresh_request.is_some() && token.refresh_token.is_some()
}

/// One renewal of `grant`: its turn among the connection's token requests, then — if the
/// token it was asked for is still current — the refresh under its write lock (and with
/// Redis its lease), or the adoption of a newer set another replica stored — itself
/// refreshed when it is due too.
async fn renew(entry: &Entry, grant: &Grant, links: &Links) {
    let Some(grants) = entry.grants.as_ref() else {
        return;
    };
    let Ok(_permit) = grants.permits.acquire().await else {
        return;
    };
    let cache = &grant.tokens;
    let holder = Holder {
        conn: &entry.conn,
        grant: GrantRef::user(&entry.conn.key, &grant.subject),
        cache,
    };
    for _ in 0..LEASE_ROUNDS {
        let seen = cache.token();
        let forced = cache.replacement_asked(seen.as_deref());
        if !forced && !due(&entry.conn, seen.as_deref(), Instant::now()) {
            return;
        }
        let serial = seen.as_deref().map_or(0, TokenSet::serial);
        let guard = cache.write_lock.lock().await;
        let current = cache.token();
        if !same(current.as_ref(), seen.as_ref()) {
            return; // renewed meanwhile (a callback, an import, or a read)
        }
        let wait = match persist::begin(&links.backend, holder, false).await {
            Begin::Go(turn) => {
                refresh(grant, holder, seen.as_deref(), turn, links).await;
                cache.replacement_done(serial);
                return;
            }
            Begin::Adopted => {
                // The stored set may be due (or expired) too: decide again with it.
                cache.replacement_done(serial);
                continue;
            }
            Begin::Deleted => {
                cache.replacement_done(serial);
                grants.forget(&grant.subject);
                return;
            }
            Begin::Unavailable(e) => {
                cache.replacement_done(serial);
                let failures = cache.status().consecutive_failures + 1;
                grant.back_off(failures, None);
                let message = e.to_string();
                tracing::warn!(connection = %entry.conn.key, error = %message, "no refresh of a user's grant without the shared store; keeping its token");
                cache.update(|s| {
                    s.last_error = Some(message.as_str().into());
                    s.consecutive_failures = failures;
                });
                return;
            }
            Begin::Wait(wait) => wait,
        };
        drop(guard);
        tokio::time::sleep(wait).await;
    }
    cache.replacement_done(cache.token().as_deref().map_or(0, TokenSet::serial));
}

/// The refresh itself, its outcome in the grant's status and the audit log. Call with the
/// grant's write lock held.
async fn refresh(
    grant: &Grant,
    holder: Holder<'_>,
    seen: Option<&TokenSet>,
    turn: persist::Turn,
    links: &Links,
) {
    let (conn, cache) = (holder.conn, holder.cache);
    let refresh_token = seen.and_then(|t| t.refresh_token.clone());
    let access_token = seen.map(TokenSet::access_token);
    let exchange = Exchange::Refresh {
        refresh_token: refresh_token.as_ref(),
        access_token: access_token.as_ref(),
    };
    let writer = (&links.client, &links.backend);
    let result = persist::obtain(writer, holder, exchange, refresh_token.clone(), turn).await;
    let subject = holder.grant.subject;
    match result {
        Ok(_) if cache.token().is_none() => {
            // Deleted (on another replica) while it was refreshed: the new set was dropped.
            tracing::info!(target: AUDIT, action = "grant_dropped", connection = %conn.key, subject = %subject, generation = cache.generation(), "grant deleted while it was refreshed; its new token dropped");
        }
        Ok(_) => {
            grant.back_off(0, None);
            let generation = cache.generation();
            tracing::info!(target: AUDIT, action = "grant_refreshed", connection = %conn.key, subject = %subject, generation, "grant refreshed");
        }
        Err(e) if e.oauth_code() == Some("invalid_grant") => {
            // The grant is dead: its token leaves, the user must authorize again.
            cache.withdraw();
            cache.update(|s| {
                s.state = State::NeedsReauthorization;
                s.last_error = Some(e.to_string().into());
                s.consecutive_failures += 1;
            });
            tracing::info!(target: AUDIT, action = "grant_failed", connection = %conn.key, subject = %subject, generation = cache.generation(), error = %e, "grant refresh refused; the user must authorize again");
        }
        Err(e) => {
            grant.back_off(cache.status().consecutive_failures + 1, e.retry_after());
            let state = if e.is_terminal() {
                State::Failed
            } else {
                cache.status().state
            };
            cache.update(|s| {
                s.state = state;
                s.last_error = Some(e.to_string().into());
                s.consecutive_failures += 1;
            });
            tracing::warn!(target: AUDIT, action = "grant_refresh_failed", connection = %conn.key, subject = %subject, generation = cache.generation(), error = %e, "grant refresh failed; the next request tries again");
        }
    }
}

/// Whether two snapshots are the same token set (or both empty).
fn same(a: Option<&Arc<TokenSet>>, b: Option<&Arc<TokenSet>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(grants: &Grants) -> usize {
        grants.in_memory().iter().map(|(_, n)| n).sum()
    }

    #[test]
    fn the_cache_holds_as_many_grants_as_its_size_however_they_shard() {
        let settings = PerUser {
            max_concurrent_token_requests: 8,
            cache_size: 1000,
        };
        let grants = Grants::new(settings, Arc::default());
        let subject = |i: usize| format!("user-{i}");
        for round in 0..2 {
            for i in 0..1000 {
                grants.get(&subject(i));
            }
            assert_eq!(held(&grants), 1000, "round {round}");
            assert!((0..1000).all(|i| grants.cached(&subject(i)).is_some()));
        }
        for i in 1000..1100 {
            grants.get(&subject(i));
        }
        let n = held(&grants);
        assert!((1000..1000 + SHARDS).contains(&n), "{n}");
        assert!((1000..1100).all(|i| grants.cached(&subject(i)).is_some()));
        grants.forget(&subject(1099));
        grants.forget(&subject(1099));
        assert_eq!(held(&grants), n - 1);
    }

    #[test]
    fn grants_in_use_outlive_those_that_are_not() {
        let settings = PerUser {
            max_concurrent_token_requests: 8,
            cache_size: 1000,
        };
        let grants = Grants::new(settings, Arc::default());
        let subject = |i: usize| format!("user-{i}");
        for i in 0..1000 {
            grants.get(&subject(i));
        }
        // The first hundred are requested again; then 200 newcomers, each once. Each shard
        // evicts for its own newcomers (about 12 of 200 / 16, against about 56 unused
        // grants): a used grant would go only if a shard's newcomers outnumbered its unused
        // grants, which the random hash makes about as likely as 5 standard deviations.
        // (With 500 newcomers, about 31 a shard, it happened in 8 runs of 300; now in none.)
        for i in 0..100 {
            grants.get(&subject(i));
        }
        for i in 1000..1200 {
            grants.get(&subject(i));
        }
        assert!((0..100).all(|i| grants.cached(&subject(i)).is_some()));
        let kept = (100..1000).filter(|i| grants.cached(&subject(*i)).is_some());
        assert!(kept.count() < 900 - 150, "the unused ones made room");
    }
}
