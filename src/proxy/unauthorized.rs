//! An upstream's 401 (or another status the connection names in `token_rejected_statuses`)
//! to a request that carried a token tokenwarden still considered valid
//! (revoked early, the provider's clock ahead of ours): the one decision both request
//! paths take ([`Proxy::unauthorized`]), so they behave the same.
//!
//! - The token the request carried is still the cache's current one: one refresh of the
//!   connection, out of schedule, through its refresher
//!   ([`crate::token::Cache::replace_rejected`]: every request rejected with that token
//!   shares it, the shared store's lease is respected, and a refresh is asked for at most
//!   once per `proxy.unauthorized_refresh_interval`, so an API that rejects every token
//!   cannot cause a refresh storm). A connection that cannot refresh (authorization code without
//!   a `refresh_request` or a refresh token) gets none.
//! - A newer token is already current: no refresh.
//! - Then the request is sent once more with the new token when it is *replayable* — an
//!   idempotent method whose body is still at hand (at most [`MAX_REPLAY_BODY`] bytes,
//!   buffered) — and nothing of the 401 has reached the app (both paths decide before
//!   they relay a byte of it). Otherwise the 401 goes back to the app unchanged; a
//!   request that is not replayable still waits for the refresh, so the app's next
//!   request carries the new token. A replay is never replayed again.
//!
//! Only a status in the connection's `token_rejected_statuses` does this — 401 unless the
//! connection names others (403, for APIs that answer a revoked token with it); every other
//! status passes through. Each such answer to a token is counted once, by [`Outcome`], in
//! `tokenwarden_unauthorized_refreshes_total` (its storage is
//! [`crate::instrument::unauthorized`], on the connection's entry).

use super::Proxy;
use crate::config::{Auth, Grant};
use crate::instrument::unauthorized::Outcome;
use crate::registry::Entry;
use crate::token::Replacement;
use std::sync::Arc;
use std::time::Duration;

/// The largest request body kept for a replay (64 KiB). The fast path buffers bodies up to
/// this (its `MAX_BUFFERED_BODY` is defined as this), so each of its buffered bodies can be
/// replayed; the hyper path buffers an idempotent request's body of a known length up to
/// this before sending it.
pub const MAX_REPLAY_BODY: usize = 64 * 1024;

/// How long a rejected request waits for the refreshed token before its 401 goes back.
pub const REFRESH_WAIT: Duration = Duration::from_secs(5);

impl From<Replacement> for Outcome {
    fn from(r: Replacement) -> Outcome {
        match r {
            Replacement::Refreshed => Outcome::Refreshed,
            Replacement::Reused => Outcome::Reused,
            Replacement::Limited => Outcome::Limited,
            Replacement::Failed => Outcome::Failed,
        }
    }
}

impl Proxy {
    /// The upstream of `entry` answered 401 to a request that carried the token with
    /// `serial` (0: none — a static credential, which is left alone). Refreshes the token
    /// if it is still current (module doc) and says whether to send the request again:
    /// only when `replayable` (idempotent, body at hand, nothing relayed to the app yet)
    /// and the token changed. Counts the outcome.
    pub async fn unauthorized(
        &self,
        entry: &Arc<Entry>,
        grant: Option<&Arc<crate::grants::Grant>>,
        status: u16,
        serial: u64,
        replayable: bool,
    ) -> bool {
        let interval = self.unauthorized_refresh_interval;
        let Auth::OAuth2(oauth) = &entry.conn.auth else {
            return false;
        };
        if serial == 0 || interval.is_zero() {
            return false;
        }
        let cache = grant.map_or(&*entry.tokens, |g| &g.tokens);
        let refreshable = oauth.grant == Grant::ClientCredentials
            || (oauth.refresh_request.is_some()
                && cache
                    .current()
                    .as_deref()
                    .is_some_and(|t| t.refresh_token.is_some()));
        let outcome = if refreshable {
            let replaced = match cache.ask_replacement(serial, interval) {
                Ok(asked) => {
                    // A user's grant has no refresher to wake: its renewal starts here.
                    if let (true, Some(grants), Some(grant)) = (asked, &entry.grants, grant) {
                        grants.renew(entry, grant);
                    }
                    cache.replacement(serial, asked, REFRESH_WAIT).await
                }
                Err(now) => now,
            };
            Outcome::from(replaced)
        } else if cache.replaced(serial) {
            // A newer token (say, from a new authorization) is there: use it.
            Outcome::Reused
        } else {
            Outcome::NotRefreshable
        };
        entry.counters.unauthorized.inc(outcome);
        let replay = replayable && outcome.new_token();
        let key = &entry.conn.key;
        // Refreshes happen at most once per interval: those are logged; the other
        // outcomes (as many as there are rejected requests) only at debug level.
        match outcome {
            Outcome::Refreshed => {
                tracing::info!(connection = %key, status, replay, "the upstream rejected a current token: refreshed it")
            }
            Outcome::Failed => {
                tracing::warn!(connection = %key, status, "the upstream rejected a current token, and no new token came; its answer goes back")
            }
            _ => {
                tracing::debug!(connection = %key, status, outcome = outcome.as_str(), replay, "the upstream rejected a token")
            }
        }
        replay
    }
}
