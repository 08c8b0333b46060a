//! One background task per OAuth2 connection: gets the first client-credentials token,
//! refreshes ahead of expiry, backs off on transient failures while the old token stays
//! in use, and stops on terminal errors until a new grant arrives (the callback wakes it).

use super::cache::{ConnectionState, Counters, State};
use super::schedule;
use super::store::TokenStore;
use crate::config::{Auth, Grant};
use crate::oauth::flow::{self, Exchange};
use crate::oauth::{TokenClient, TokenError};
use std::sync::Arc;
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
    pub state: Arc<ConnectionState>,
    pub client: TokenClient,
    pub store: Arc<dyn TokenStore>,
}

impl Refresher {
    pub async fn run(self, shutdown: CancellationToken) {
        let Auth::OAuth2(oauth) = &self.state.conn.auth else {
            return;
        };
        let grant = oauth.grant;
        let can_refresh = grant == Grant::ClientCredentials || oauth.refresh_request.is_some();
        let mut attempt = 0u32;
        let mut retry_at: Option<Instant> = None;
        let mut halted = false;
        loop {
            let next = if halted {
                Next::Idle
            } else {
                decide(&self.state, grant, can_refresh, retry_at)
            };
            let until = match next {
                Next::Fetch => {
                    let result = self.refresh(grant).await;
                    let counter = if result.is_ok() {
                        &self.state.counters.token_ok
                    } else {
                        &self.state.counters.token_failed
                    };
                    Counters::add(counter);
                    match result {
                        Ok(()) => {
                            attempt = 0;
                            retry_at = None;
                        }
                        Err(e) if e.is_terminal() => {
                            let state = if grant == Grant::AuthorizationCode
                                && e.oauth_code() == Some("invalid_grant")
                            {
                                State::NeedsReauthorization
                            } else {
                                State::Failed
                            };
                            tracing::error!(connection = %self.state.conn.key, error = %e, state = state.as_str(), "token request failed for good; not retrying");
                            self.state.update(|s| {
                                s.state = state;
                                s.last_error = Some(e.to_string());
                                s.consecutive_failures += 1;
                            });
                            halted = true;
                        }
                        Err(e) => {
                            attempt += 1;
                            let wait = schedule::backoff(attempt, e.retry_after(), rand::random());
                            tracing::warn!(connection = %self.state.conn.key, error = %e, retry_in_ms = wait.as_millis() as u64, "token request failed; will retry");
                            retry_at = Some(Instant::now() + wait);
                            self.state.update(|s| {
                                s.last_error = Some(e.to_string());
                                s.consecutive_failures = attempt;
                            });
                        }
                    }
                    continue;
                }
                Next::Expired => {
                    self.state.update(|s| s.state = State::NeedsReauthorization);
                    halted = true;
                    continue;
                }
                Next::Sleep(at) => Some(at),
                Next::Idle => None,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.state.wake.notified() => {
                    // A new grant (callback) or an operator action: start afresh.
                    halted = false;
                    attempt = 0;
                    retry_at = None;
                }
                _ = sleep_or_forever(until) => {}
            }
        }
    }

    /// One exchange under the write lock, then persist and publish.
    async fn refresh(&self, grant: Grant) -> Result<(), TokenError> {
        let _guard = self.state.write_lock.lock().await;
        let current = self.state.token();
        let refresh_token = current.as_ref().and_then(|t| t.refresh_token.clone());
        let exchange = match (grant, &current) {
            (Grant::ClientCredentials, None) => Exchange::ClientCredentials,
            _ => Exchange::Refresh {
                refresh_token: refresh_token.as_ref(),
            },
        };
        let set = flow::run(
            &self.client,
            &self.state.conn,
            exchange,
            refresh_token.clone(),
        )
        .await?;
        tracing::info!(connection = %self.state.conn.key, expires_at = ?set.expires_at, "new token");
        self.state.install(set, &self.store).await;
        Ok(())
    }
}

fn decide(
    state: &ConnectionState,
    grant: Grant,
    can_refresh: bool,
    retry_at: Option<Instant>,
) -> Next {
    let now = Instant::now();
    if let Some(at) = retry_at.filter(|at| *at > now) {
        return Next::Sleep(at);
    }
    match state.token() {
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
