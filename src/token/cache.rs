//! [`ConnectionState`]: per connection, the current [`TokenSet`] and [`Status`] in
//! `ArcSwap`s.
//!
//! Locking budget: the proxy only calls [`ConnectionState::header`] — one `ArcSwap` load,
//! no lock, no allocation. Writers (the refresher and the OAuth callback) serialise on
//! `write_lock`, an async mutex never touched on the request path, so at most one token
//! request per connection is in flight and a refresh cannot overwrite a newer grant.

use super::set::TokenSet;
use super::store::TokenStore;
use crate::config::{Auth, Connection, Grant};
use arc_swap::{ArcSwap, ArcSwapOption};
use http::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

/// A connection's token lifecycle state, as status and error bodies show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No token yet; the first request is in flight or backing off.
    Pending,
    /// A token is held and kept fresh.
    Ready,
    /// A terminal error (e.g. `invalid_client`); nothing is retried until restart or reload.
    Failed,
    /// An authorization-code connection that has never been authorized.
    NeedsAuthorization,
    /// The grant is gone (`invalid_grant`, or expiry without a refresh_request).
    NeedsReauthorization,
    /// A static credential (`bearer`, `basic`, `api_key`).
    Static,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Ready => "ready",
            State::Failed => "failed",
            State::NeedsAuthorization => "needs_authorization",
            State::NeedsReauthorization => "needs_reauthorization",
            State::Static => "static",
        }
    }
}

/// What status routes show. Never holds a token value.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    pub last_refresh: Option<SystemTime>,
    /// The last failure (connection + OAuth error code or HTTP status; no secrets).
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

pub struct ConnectionState {
    pub conn: Arc<Connection>,
    /// Position in the registry (indexes per-worker upstream pools).
    pub index: usize,
    /// The upstream authority as a ready `Host` value.
    pub host_header: HeaderValue,
    token: ArcSwapOption<TokenSet>,
    status: ArcSwap<Status>,
    /// Wakes the refresher when a new grant arrives or on reload.
    pub wake: Notify,
    /// Held while a token request and its store write run.
    pub write_lock: Mutex<()>,
    pub counters: Counters,
}

/// Per-connection counters for `/metrics` (relaxed atomics; one add per event).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests forwarded upstream with a credential.
    pub proxied: AtomicU64,
    /// Requests refused because no usable token was held.
    pub no_token: AtomicU64,
    /// Token requests (any grant) that produced a token.
    pub token_ok: AtomicU64,
    /// Token requests that failed.
    pub token_failed: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl ConnectionState {
    pub fn new(conn: Arc<Connection>, index: usize) -> ConnectionState {
        let state = match &conn.auth {
            Auth::OAuth2(o) if o.grant == Grant::AuthorizationCode => State::NeedsAuthorization,
            Auth::OAuth2(_) => State::Pending,
            _ => State::Static,
        };
        let host_header = HeaderValue::from_str(conn.upstream.authority.as_str())
            .expect("an Authority is a valid header value");
        ConnectionState {
            conn,
            index,
            host_header,
            token: ArcSwapOption::empty(),
            status: ArcSwap::from_pointee(Status {
                state,
                last_refresh: None,
                last_error: None,
                consecutive_failures: 0,
            }),
            wake: Notify::new(),
            write_lock: Mutex::new(()),
            counters: Counters::default(),
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

    /// The state to report: `Ready` with an unusable token reads as `expired`.
    pub fn state_name(&self) -> &'static str {
        let status = self.status.load();
        if status.state == State::Ready && self.header().is_none() {
            "expired"
        } else {
            status.state.as_str()
        }
    }

    /// Puts a token loaded from the store in place at start-up.
    pub fn restore(&self, set: TokenSet) {
        self.token.store(Some(Arc::new(set)));
        self.update(|s| s.state = State::Ready);
    }

    /// Writes `set` durably, then makes it the current token. Call with `write_lock` held.
    /// A store failure is reported in status and the token is used anyway, so a rotated
    /// refresh token is never dropped; the next successful write persists it.
    pub async fn install(&self, set: TokenSet, store: &Arc<dyn TokenStore>) {
        let stored = set.to_stored();
        let key = self.conn.key.clone();
        let store = Arc::clone(store);
        let written = tokio::task::spawn_blocking(move || store.put(&key, &stored)).await;
        let store_error = match written {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("store task failed: {e}")),
        };
        if let Some(e) = &store_error {
            tracing::error!(connection = %self.conn.key, error = %e, "could not persist the new token; using it anyway");
        }
        self.token.store(Some(Arc::new(set)));
        self.update(|s| {
            s.state = State::Ready;
            s.last_refresh = Some(SystemTime::now());
            s.last_error = store_error.clone();
            s.consecutive_failures = 0;
        });
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
