//! One background task per OAuth2 connection: gets the first client-credentials token,
//! refreshes ahead of expiry, backs off on transient failures while the old token stays
//! in use, and stops on terminal errors until a new grant arrives (the callback wakes it).
//! Each decision is taken on a snapshot of the token and acted on under the connection's
//! write lock only if that snapshot is still current, so a grant the callback installs
//! meanwhile is never refreshed, failed or expired by a stale decision.
//!
//! With a shared store every token request is made under the connection's lease in Redis
//! (`persist`), and `follow` adopts the token sets other replicas write. [`Refresher::run`]
//! reads as the algorithm: decide on the current token, act (fetch under the lock, or mark
//! it expired), wait for the time or a wake-up.

pub mod follow;
pub mod persist;

use crate::config::{Auth, Grant};
use crate::oauth::flow::Exchange;
use crate::oauth::{TokenClient, TokenError};
use crate::registry::Entry;
use crate::token::set::{unix_seconds, TokenSet};
use crate::token::store::Backend;
use crate::token::{schedule, State};
use persist::{Begin, Turn};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// What the refresher does next.
#[derive(Debug, PartialEq)]
enum Next {
    /// Run the exchange now.
    Fetch,
    /// Sleep until the instant (or a wake-up), then decide again.
    Sleep(Instant),
    /// Nothing to do until woken (new grant, reload) — e.g. long-lived token, or halted.
    Idle,
    /// The token has expired without a way to refresh it.
    Expired,
}

pub struct Refresher {
    pub entry: Arc<Entry>,
    pub client: TokenClient,
    pub backend: Backend,
}

/// The refresher's memory between decisions: the transient failures in a row, when to try
/// again after them, and whether a terminal error stopped it.
#[derive(Default)]
struct Backoff {
    attempt: u32,
    retry: Option<Retry>,
    halted: bool,
}

impl Backoff {
    /// A token arrived, or someone asked to start afresh.
    fn clear(&mut self) {
        self.attempt = 0;
        self.retry = None;
    }

    /// One more transient failure; the next try waits by [`Retry::after`].
    fn failed(&mut self, retry_after: Option<Duration>) -> Retry {
        self.attempt += 1;
        let next = Retry::after(self.attempt, retry_after);
        self.retry = Some(next);
        next
    }
}

/// What [`Refresher::fetch_under_lock`] leaves the loop to do.
enum Then {
    /// Decide again at once.
    Decide,
    /// Another replica is refreshing: wait this long (or for a wake-up), then decide.
    Wait(Duration),
}

impl Refresher {
    /// Until `shutdown`: decide on the current token, act on the decision, wait.
    pub async fn run(self, shutdown: CancellationToken) {
        let Auth::OAuth2(oauth) = &self.entry.conn.auth else {
            return;
        };
        let cache = &self.entry.tokens;
        let grant = oauth.grant;
        let can_refresh = grant == Grant::ClientCredentials || oauth.refresh_request.is_some();
        let mut backoff = Backoff::default();
        loop {
            // The decision is made on this token; a writer may replace it before the fetch.
            let seen = cache.token();
            // An upstream rejected the token (401): replace it now, backoff or not.
            let forced = cache.replacement_asked(seen.as_deref());
            let next = if backoff.halted {
                if forced {
                    cache.replacement_done(seen.as_deref().map_or(0, TokenSet::serial));
                }
                Next::Idle
            } else if forced {
                Next::Fetch
            } else {
                decide(seen.as_deref(), grant, can_refresh, backoff.retry)
            };
            let until = match next {
                // Boxed: a token request's state is large and lives only while it runs,
                // while the loop waits most of the time (10,000 connections park 10,000
                // of these futures).
                Next::Fetch => {
                    match Box::pin(self.fetch_under_lock(grant, seen, &mut backoff)).await {
                        Then::Decide => continue,
                        Then::Wait(wait) => Some(Instant::now() + wait),
                    }
                }
                Next::Expired => {
                    let _guard = cache.write_lock.lock().await;
                    if same(cache.token().as_ref(), seen.as_ref()) {
                        cache.update(|s| s.state = State::NeedsReauthorization);
                        backoff.halted = true;
                    }
                    continue;
                }
                Next::Sleep(at) => Some(at),
                Next::Idle => None,
            };
            if !self.wait(until, &mut backoff, &shutdown).await {
                return;
            }
        }
    }

    /// Until `until` (None: until woken) or a wake-up; false once `shutdown` fires.
    async fn wait(
        &self,
        until: Option<Instant>,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> bool {
        let cache = &self.entry.tokens;
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = cache.signals.wake.notified() => {
                // A new grant (callback) or an operator action: start afresh.
                backoff.clear();
                backoff.halted = false;
            }
            // An upstream rejected the token: decide again (the loop's top acts on it).
            _ = cache.signals.forced.notified() => {}
            // The shared store answers again: stop backing off (a terminal error stays
            // terminal).
            _ = cache.signals.store_back.notified() => backoff.clear(),
            _ = sleep_or_forever(until) => {}
        }
        true
    }

    /// A token request for the token `seen`, under the write lock and (with Redis) the
    /// lease — if `seen` is still current: every write, the status included, happens only
    /// then. Its outcome goes to `backoff` and the connection's status.
    async fn fetch_under_lock(
        &self,
        grant: Grant,
        seen: Option<Arc<TokenSet>>,
        backoff: &mut Backoff,
    ) -> Then {
        let cache = &self.entry.tokens;
        let key = self.entry.conn.key.as_str();
        let serial = seen.as_deref().map_or(0, TokenSet::serial);
        let _guard = cache.write_lock.lock().await;
        if !same(cache.token().as_ref(), seen.as_ref()) {
            // A new grant arrived meanwhile (callback): decide afresh.
            backoff.clear();
            return Then::Decide;
        }
        // Requests without a usable token may wait for this one briefly.
        let _fetching = cache.fetch_started();
        let alone_ok = grant == Grant::ClientCredentials;
        let holder = persist::Holder::own(&self.entry);
        let result = match persist::begin(&self.backend, holder, alone_ok).await {
            Begin::Go(turn) => self.fetch(grant, seen, turn).await,
            Begin::Adopted | Begin::Deleted => {
                backoff.clear();
                return Then::Decide;
            }
            // Another replica is refreshing: its token arrives through the follower (which
            // needs the write lock, released on return), or its lease expires.
            Begin::Wait(wait) => return Then::Wait(wait),
            Begin::Unavailable(e) => {
                cache.replacement_done(serial);
                let next = backoff.failed(None);
                tracing::warn!(connection = %key, error = %e, retry_in_ms = next.wait(cache).as_millis() as u64, "no refresh without the lease; keeping the current token");
                let attempt = backoff.attempt;
                cache.update(|s| {
                    s.last_error = Some(e.to_string().into());
                    s.consecutive_failures = attempt;
                });
                return Then::Decide;
            }
        };
        cache.replacement_done(serial);
        match result {
            Ok(()) => backoff.clear(),
            Err(e) if e.is_terminal() => self.stopped(grant, &e, backoff),
            Err(e) => {
                let next = backoff.failed(e.retry_after());
                tracing::warn!(connection = %key, error = %e, retry_in_ms = next.wait(cache).as_millis() as u64, "token request failed; will retry");
                let attempt = backoff.attempt;
                cache.update(|s| {
                    s.last_error = Some(e.to_string().into());
                    s.consecutive_failures = attempt;
                });
            }
        }
        Then::Decide
    }

    /// A terminal error: the refresher stops until woken; `invalid_grant` on an
    /// authorization-code refresh means the grant is dead, and its token leaves the cache.
    /// Call with the write lock held.
    fn stopped(&self, grant: Grant, e: &TokenError, backoff: &mut Backoff) {
        let cache = &self.entry.tokens;
        let state = if grant == Grant::AuthorizationCode && e.oauth_code() == Some("invalid_grant")
        {
            State::NeedsReauthorization
        } else {
            State::Failed
        };
        tracing::error!(connection = %self.entry.conn.key, error = %e, state = state.as_str(), "token request failed for good; not retrying");
        if state == State::NeedsReauthorization {
            cache.withdraw();
        }
        cache.update(|s| {
            s.state = state;
            s.last_error = Some(e.to_string().into());
            s.consecutive_failures += 1;
        });
        backoff.halted = true;
    }

    /// The exchange that renews `current` (or, for client credentials without one, gets the
    /// first token), through [`persist::obtain`]. Call with the write lock held.
    async fn fetch(
        &self,
        grant: Grant,
        current: Option<Arc<TokenSet>>,
        turn: Turn,
    ) -> Result<(), TokenError> {
        let conn = &self.entry.conn;
        let refresh_token = current.as_ref().and_then(|t| t.refresh_token.clone());
        let access_token = current.as_ref().map(|t| t.access_token());
        let exchange = match (grant, &current) {
            (Grant::ClientCredentials, None) => Exchange::ClientCredentials,
            _ => Exchange::Refresh {
                refresh_token: refresh_token.as_ref(),
                access_token: access_token.as_ref(),
            },
        };
        let writer = (&self.client, &self.backend);
        let expires_at = persist::obtain(
            writer,
            persist::Holder::own(&self.entry),
            exchange,
            refresh_token.clone(),
            turn,
        )
        .await?;
        tracing::info!(connection = %conn.key, expires_at = unix_seconds(expires_at), "new token");
        Ok(())
    }
}

/// When to try again after transient failure number `attempt`: with exponential backoff
/// capped at [`schedule::BACKOFF_MAX`] while the token is still usable, and at
/// [`schedule::BACKOFF_MAX_WITHOUT_TOKEN`] once it is not (every request is a 503 then).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Retry {
    /// While a usable token is held.
    at: Instant,
    /// Once none is.
    without_token: Instant,
}

impl Retry {
    fn after(attempt: u32, retry_after: Option<Duration>) -> Retry {
        let (now, jitter) = (Instant::now(), rand::random());
        let wait = |cap| schedule::backoff(attempt, retry_after, jitter, cap);
        Retry {
            at: now + wait(schedule::BACKOFF_MAX),
            without_token: now + wait(schedule::BACKOFF_MAX_WITHOUT_TOKEN),
        }
    }

    /// The wait that applies now (for logs).
    fn wait(&self, cache: &crate::token::Cache) -> Duration {
        let at = if cache.header().is_some() {
            self.at
        } else {
            self.without_token
        };
        at.saturating_duration_since(Instant::now())
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

fn decide(token: Option<&TokenSet>, grant: Grant, can_refresh: bool, retry: Option<Retry>) -> Next {
    let now = Instant::now();
    if let Some(retry) = retry {
        let usable = token.is_some_and(|t| t.header_at(now).is_some());
        let at = if usable {
            retry.at
        } else {
            retry.without_token
        };
        if at > now {
            // While the token is usable, wake when it stops being so: the shorter
            // backoff applies from then.
            return match token.and_then(TokenSet::usable_until) {
                Some(until) if usable => Next::Sleep(at.min(until)),
                _ => Next::Sleep(at),
            };
        }
    }
    match token {
        None if grant == Grant::ClientCredentials => Next::Fetch,
        None => Next::Idle,
        Some(t) => {
            let usable = t.usable_until();
            match t.refresh_at {
                None => Next::Idle,
                Some(at) if at > now => Next::Sleep(at),
                Some(_)
                    if can_refresh
                        && (grant == Grant::ClientCredentials || t.refresh_token.is_some()) =>
                {
                    Next::Fetch
                }
                // No way to refresh: keep the token until it expires, then say so.
                Some(_) => match usable {
                    Some(u) if u > now => Next::Sleep(u),
                    _ => Next::Expired,
                },
            }
        }
    }
}

async fn sleep_or_forever(until: Option<Instant>) {
    match until {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
