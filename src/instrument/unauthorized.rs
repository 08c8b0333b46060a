//! The storage of `tokenwarden_unauthorized_refreshes_total`: what became of each upstream
//! 401 (or other `token_rejected_statuses` answer) to a request that carried a token, per
//! connection. The decision that records it is `proxy::unauthorized`; this module only
//! names the outcomes and keeps their counters (on `registry::Entry::counters`).

use crate::telemetry::Counter;

/// What became of one 401 that carried a token (the metric's `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A refresh ran for it and produced a new token.
    Refreshed,
    /// A newer token was there already, or came from a refresh another 401 asked for.
    Reused,
    /// A refresh was asked for less than `proxy.unauthorized_refresh_interval` ago.
    Limited,
    /// The refresh failed, or brought no new token within `proxy::unauthorized::REFRESH_WAIT`.
    Failed,
    /// The connection has no way to refresh (authorization code without a refresh token).
    NotRefreshable,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Refreshed,
        Outcome::Reused,
        Outcome::Limited,
        Outcome::Failed,
        Outcome::NotRefreshable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Refreshed => "refreshed",
            Outcome::Reused => "reused",
            Outcome::Limited => "limited",
            Outcome::Failed => "failed",
            Outcome::NotRefreshable => "not_refreshable",
        }
    }

    /// Whether the request may go again, with another token.
    pub(crate) fn new_token(self) -> bool {
        matches!(self, Outcome::Refreshed | Outcome::Reused)
    }
}

/// The 401s of one connection by outcome (`/metrics`).
#[derive(Debug, Default)]
pub struct Counters([Counter; Outcome::ALL.len()]);

impl Counters {
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome as usize].get()
    }

    pub(crate) fn inc(&self, outcome: Outcome) {
        self.0[outcome as usize].inc();
    }
}
