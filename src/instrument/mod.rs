//! The instruments `/metrics` reads, and the fixed label values they are kept by. Those
//! written on the request path cost a few relaxed atomic adds on the recording worker's own
//! cache lines: no lock, no allocation, no system call ([`histogram`], [`gauge`], sharded
//! by [`shard`]). The admin listener's collector (`admin::collector`) sums and encodes them
//! at scrape time.
//!
//! Per connection ([`ConnectionInstruments`], on `registry::Entry::counters`): request
//! durations by status class, upstream connect durations, upstream errors by
//! [`UpstreamError`], `no_token` refusals by state; and ([`unauthorized`]) the upstream
//! 401s to a token by what came of them. Per connection, off the request path
//! ([`TokenInstruments`], on its `token::Cache`): token requests by outcome and duration,
//! adoptions. Per process ([`Instruments`]): the open app and upstream connections.
//!
//! This module imports only `telemetry`, never the code that holds or records into its
//! instruments (`proxy`, `registry`, `token`, the refresher, the admin routes).

pub mod gauge;
pub mod histogram;
pub mod unauthorized;

pub use gauge::{Gauge, Open};
pub use histogram::Histogram;

use crate::telemetry::Counter;
use std::sync::Arc;
use std::time::Duration;

/// The `status_class` label of a request duration, by the status's first digit.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every name `token::Cache::state_name` reports (the `state` label in `/metrics`). The
/// last two, `static` and `per_user`, never answer a `no_token` 503 (a per-user
/// connection's 503 reports its user's grant's state); the others can. Kept
/// here, with the instruments labelled by it, so that `instrument` imports nothing of
/// `token` (the token cache's tests check it against `token::State`).
pub const STATE_NAMES: [&str; 8] = [
    "pending",
    "ready",
    "expired",
    "failed",
    "needs_authorization",
    "needs_reauthorization",
    "static",
    "per_user",
];

/// The states a `no_token` 503 reports (`token::Cache::state_name`), each a series of
/// `tokenwarden_no_token_total`.
pub const NO_TOKEN_STATES: &[&str] = STATE_NAMES.split_at(STATE_NAMES.len() - 2).0;

/// Why a request to a connection's upstream failed (the `kind` label of
/// `tokenwarden_upstream_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No connection: DNS, refused, unreachable, the SSRF guard, the connect timeout.
    Connect,
    /// The TCP connection opened but the TLS handshake failed.
    Tls,
    /// No response head within `proxy.response_timeout`.
    Timeout,
    /// The upstream closed or reset the connection before answering.
    Closed,
    /// The response head was malformed or ambiguous.
    Malformed,
}

impl UpstreamError {
    pub const ALL: [UpstreamError; 5] = [
        UpstreamError::Connect,
        UpstreamError::Tls,
        UpstreamError::Timeout,
        UpstreamError::Closed,
        UpstreamError::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Tls => "tls",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Closed => "closed",
            UpstreamError::Malformed => "malformed",
        }
    }
}

/// One connection's request-path instruments.
#[derive(Default)]
pub struct ConnectionInstruments {
    /// Proxied request durations, by [`STATUS_CLASSES`].
    durations: [Histogram; STATUS_CLASSES.len()],
    /// Upstream connections opened (TCP, and TLS for https), successful ones only.
    pub connect: Histogram,
    /// By [`UpstreamError::ALL`].
    errors: [Counter; UpstreamError::ALL.len()],
    /// `no_token` refusals by [`NO_TOKEN_STATES`].
    no_token: [Counter; NO_TOKEN_STATES.len()],
}

impl ConnectionInstruments {
    /// A request answered with `status` (the upstream's, or the proxy's own 5xx) after
    /// `took`. A status outside 100–599 counts with the nearest class.
    #[inline]
    pub fn answered(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, STATUS_CLASSES.len()) - 1;
        self.durations[class].record(took);
    }

    /// The duration histogram of status class `STATUS_CLASSES[class]`.
    pub fn durations(&self, class: usize) -> &Histogram {
        &self.durations[class]
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.errors[kind as usize].inc();
    }

    pub fn upstream_errors(&self, kind: UpstreamError) -> u64 {
        self.errors[kind as usize].get()
    }

    /// A `no_token` 503 that reported the state `NO_TOKEN_STATES[state]` (`token::State
    /// as usize`; one out of range counts as `pending`, the first).
    pub fn no_token(&self, state: usize) {
        let i = if state < NO_TOKEN_STATES.len() {
            state
        } else {
            0
        };
        self.no_token[i].inc();
    }

    /// `no_token` refusals that reported `NO_TOKEN_STATES[i]`.
    pub fn no_tokens(&self, i: usize) -> u64 {
        self.no_token[i].get()
    }
}

impl std::fmt::Debug for ConnectionInstruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionInstruments")
            .finish_non_exhaustive()
    }
}

/// One connection's token requests for `/metrics`: written by the refresher, the OAuth
/// callback and the follower that adopts other replicas' tokens (never on the request
/// path), kept on the connection's `token::Cache`.
#[derive(Default)]
pub struct TokenInstruments {
    /// Token requests (any grant) that produced a token.
    pub ok: Counter,
    /// Token requests that failed.
    pub failed: Counter,
    /// Token sets adopted from the shared store (written by another replica).
    pub adopted: Counter,
    /// How long the token requests that produced a token took.
    pub ok_durations: Histogram,
    /// How long the failed token requests took.
    pub failed_durations: Histogram,
}

impl TokenInstruments {
    /// One token request that took `took`: counted, and its duration recorded, by outcome.
    pub fn requested(&self, ok: bool, took: Duration) {
        let (count, durations) = if ok {
            (&self.ok, &self.ok_durations)
        } else {
            (&self.failed, &self.failed_durations)
        };
        count.inc();
        durations.record(took);
    }
}

/// One running sidecar's process-wide instruments (made by `app::start`, shared by the
/// proxy workers and the admin listener).
#[derive(Default)]
pub struct Instruments {
    /// App connections being served (each intercepted tunnel's decrypted connection counts
    /// too, besides its `CONNECT` connection).
    pub open_client: Arc<Gauge>,
    /// Upstream connections open (fast-path links and hyper pool connections, idle or not).
    pub open_upstream: Arc<Gauge>,
}

pub mod shard {
    //! Which shard of a sharded instrument ([`super::Histogram`], [`super::Gauge`]) the
    //! current thread records into: proxy worker `i` enters shard `i` when it starts
    //! ([`enter`]); every other thread (the admin and refresher runtime, tests) records into
    //! shard 0. A thread-local `Cell` read: no lock, no allocation, no system call.

    use std::cell::Cell;

    /// Most shards an instrument has: beyond this many workers, workers share shards (still
    /// correct — the adds are atomic — only no longer alone on their cache lines).
    pub const MAX_SHARDS: usize = 64;

    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(0) };
    }

    /// Makes the current thread record into shard `index` (modulo an instrument's shards).
    pub fn enter(index: usize) {
        SHARD.with(|s| s.set(index));
    }

    /// The current thread's shard index.
    #[inline]
    pub fn current() -> usize {
        SHARD.with(Cell::get)
    }

    /// Shards of a request-path instrument: one per core (the proxy runs one worker per core
    /// by default), at most [`MAX_SHARDS`].
    pub fn count() -> usize {
        static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *COUNT.get_or_init(|| {
            std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_SHARDS)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_counts_in_its_class_and_an_odd_one_in_the_nearest() {
        let c = ConnectionInstruments::default();
        let ms = Duration::from_millis(1);
        for status in [101, 200, 204, 302, 404, 502, 599, 99, 600] {
            c.answered(status, ms);
        }
        let counts: Vec<u64> = (0..STATUS_CLASSES.len())
            .map(|i| c.durations(i).snapshot().count())
            .collect();
        // 99 joins 1xx, 600 joins 5xx.
        assert_eq!(counts, [2, 2, 1, 1, 3]);
    }

    #[test]
    fn no_token_refusals_are_kept_by_state() {
        let c = ConnectionInstruments::default();
        let index = |name| NO_TOKEN_STATES.iter().position(|s| *s == name).unwrap();
        c.no_token(index("failed"));
        c.no_token(index("failed"));
        c.no_token(index("needs_authorization"));
        let counts: Vec<u64> = (0..NO_TOKEN_STATES.len()).map(|i| c.no_tokens(i)).collect();
        assert_eq!(counts, [0, 0, 0, 2, 1, 0]);
        c.upstream_error(UpstreamError::Tls);
        assert_eq!(c.upstream_errors(UpstreamError::Tls), 1);
        assert_eq!(c.upstream_errors(UpstreamError::Connect), 0);
    }
}
