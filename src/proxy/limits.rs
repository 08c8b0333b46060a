//! Resource limits of the proxy listener, enforced the same way by both paths (this file
//! imports neither): [`Admission`] bounds the open app connections of all workers
//! together (`proxy.max_connections`; beyond it a new connection is closed at once, with
//! a rate-limited warning), and each connection's [`Budget`] ends it after
//! `proxy.max_requests_per_connection` requests or `proxy.max_connection_lifetime`
//! (the last response says `connection: close`). The budget moves with a connection the
//! fast path hands to hyper; a `CONNECT` tunnel keeps its connection's admission permit
//! until it closes. Slow heads are bounded by `proxy.header_read_timeout`, slow bodies by
//! `proxy.body_read_timeout` and a minimum rate ([`super::full::stall`]). Partial request
//! heads are bounded in all by [`super::heads`].

use crate::config::ProxyLimits;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// At most one "connections refused" warning per this interval.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The bound on open app connections, shared by every worker thread.
pub struct Admission {
    permits: Arc<Semaphore>,
    max: usize,
    origin: Instant,
    /// Seconds after `origin` of the last warning, plus one (0: never warned).
    warned: AtomicU64,
    /// Connections refused since the last warning.
    refused: AtomicU64,
}

impl Admission {
    pub fn new(max: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(max)),
            max,
            origin: Instant::now(),
            warned: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// A permit for one new connection (held until it closes), or `None` when
    /// `max_connections` are open: the caller closes the connection.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(permit);
        }
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.origin.elapsed().as_secs() + 1;
        let last = self.warned.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= REFUSAL_LOG_EVERY.as_secs();
        if due
            && self
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refused.store(0, Ordering::Relaxed);
            tracing::warn!(
                max_connections = self.max,
                refused,
                "proxy.max_connections reached: new app connections are closed at once until some close"
            );
        }
        None
    }
}

/// What one app connection may still do.
pub struct Budget {
    started: Instant,
    served: Cell<u64>,
    limits: ProxyLimits,
}

impl Budget {
    pub fn new(limits: ProxyLimits, started: Instant) -> Budget {
        Budget {
            started,
            served: Cell::new(0),
            limits,
        }
    }

    /// Counts one request at `now`; true when its response must be the connection's last.
    pub fn last(&self, now: Instant) -> bool {
        let served = self.served.get() + 1;
        self.served.set(served);
        served >= self.limits.max_requests_per_connection
            || now.saturating_duration_since(self.started) >= self.limits.max_connection_lifetime
    }

    pub fn body_read_timeout(&self) -> Duration {
        self.limits.body_read_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: u64, lifetime: Duration) -> ProxyLimits {
        ProxyLimits {
            max_connections: 2,
            max_buffered_head_bytes: 1 << 20,
            max_requests_per_connection: requests,
            max_connection_lifetime: lifetime,
            body_read_timeout: Duration::from_secs(1),
            tunnel_idle_timeout: Duration::from_secs(1),
            stream_idle_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn admission_refuses_beyond_the_bound_and_admits_again_after_a_close() {
        let admission = Admission::new(2);
        let a = admission.admit().expect("first");
        let _b = admission.admit().expect("second");
        assert!(admission.admit().is_none());
        assert!(admission.admit().is_none());
        drop(a);
        assert!(admission.admit().is_some());
    }

    #[test]
    fn a_budget_ends_after_its_requests_or_its_lifetime() {
        let start = Instant::now();
        let budget = Budget::new(limits(3, Duration::from_secs(60)), start);
        assert!(!budget.last(start));
        assert!(!budget.last(start));
        assert!(budget.last(start), "the third of three");
        let budget = Budget::new(limits(100, Duration::from_secs(60)), start);
        assert!(!budget.last(start + Duration::from_secs(59)));
        assert!(budget.last(start + Duration::from_secs(60)));
    }
}
