//! When to refresh a token and how long to back off after a failure: pure functions of
//! the token's lifetime and a jitter value in `[0, 1)`, so they are unit-tested exactly.

use std::time::Duration;

/// Refresh once this fraction of the lifetime has passed…
pub const REFRESH_FRACTION: f64 = 0.8;
/// …but at least this long before expiry, when the lifetime allows…
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// …and never before half the lifetime (short-lived tokens).
pub const MIN_FRACTION: f64 = 0.5;
/// Up to this fraction of the target is taken off at random, so replicas spread out.
pub const JITTER_FRACTION: f64 = 0.1;
/// Shortest wait before a refresh (guards against hammering on tiny lifetimes).
pub const MIN_REFRESH_DELAY: Duration = Duration::from_millis(500);
/// First backoff after a transient failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest backoff while a usable token is still held (it keeps being injected meanwhile).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Longest backoff while no usable token is held: every request gets a 503 meanwhile, so
/// a recovered endpoint must be noticed soon.
pub const BACKOFF_MAX_WITHOUT_TOKEN: Duration = Duration::from_secs(30);
/// A token is no longer injected this long before it expires (or a tenth of its lifetime,
/// if that is less), so no request leaves with a token that expires in flight.
pub const EXPIRY_SAFETY_MARGIN: Duration = Duration::from_secs(5);

/// Time from when a token was obtained until it should be refreshed.
///
/// `min(80% of lifetime, lifetime − 60 s)`, at least half the lifetime, minus up to 10 %
/// jitter, at least [`MIN_REFRESH_DELAY`].
pub fn refresh_after(lifetime: Duration, jitter: f64) -> Duration {
    let by_fraction = lifetime.mul_f64(REFRESH_FRACTION);
    let by_margin = lifetime.saturating_sub(REFRESH_MARGIN);
    let target = by_fraction
        .min(by_margin)
        .max(lifetime.mul_f64(MIN_FRACTION));
    let jittered = target.saturating_sub(target.mul_f64(JITTER_FRACTION * jitter.clamp(0.0, 1.0)));
    jittered.max(MIN_REFRESH_DELAY)
}

/// How long before expiry a token stops being injected.
pub fn safety_margin(lifetime: Duration) -> Duration {
    EXPIRY_SAFETY_MARGIN.min(lifetime / 10)
}

/// The backoff cap: [`BACKOFF_MAX`] while a usable token is held, else
/// [`BACKOFF_MAX_WITHOUT_TOKEN`].
pub fn backoff_cap(token_usable: bool) -> Duration {
    if token_usable {
        BACKOFF_MAX
    } else {
        BACKOFF_MAX_WITHOUT_TOKEN
    }
}

/// Wait before retry number `attempt` (1-based): exponential from [`BACKOFF_BASE`], capped
/// at `cap` ([`backoff_cap`]), with "equal jitter" (between half and all of it), and never
/// shorter than the server's `Retry-After`.
pub fn backoff(
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
    cap: Duration,
) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(cap);
    let jittered = capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn long_lifetimes_refresh_at_80_percent() {
        assert_eq!(refresh_after(S(3600), 0.0), S(2880));
        assert_eq!(refresh_after(S(7200), 0.0), S(5760));
        // full jitter takes 10 % off
        assert_eq!(refresh_after(S(3600), 1.0), S(2592));
    }

    #[test]
    fn medium_lifetimes_keep_a_margin_before_expiry() {
        // 80 % of 240 s is 192 s, but 60 s before expiry is 180 s
        assert_eq!(refresh_after(S(240), 0.0), S(180));
        // 90 s: 60 s margin would be 30 s, but never before half the lifetime
        assert_eq!(refresh_after(S(90), 0.0), S(45));
    }

    #[test]
    fn short_lifetimes_have_a_floor() {
        assert_eq!(refresh_after(S(3), 0.0), Duration::from_millis(1500));
        assert_eq!(refresh_after(S(0), 0.5), MIN_REFRESH_DELAY);
    }

    #[test]
    fn the_refresh_is_always_before_expiry_minus_the_safety_margin() {
        for secs in [2u64, 3, 10, 59, 60, 61, 300, 3599, 86400] {
            for j in [0.0, 0.5, 0.999] {
                let l = S(secs);
                assert!(
                    refresh_after(l, j) < l - safety_margin(l),
                    "lifetime {secs}s jitter {j}"
                );
            }
        }
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        assert_eq!(backoff(1, None, 1.0, BACKOFF_MAX), S(1));
        assert_eq!(backoff(2, None, 1.0, BACKOFF_MAX), S(2));
        assert_eq!(backoff(3, None, 0.0, BACKOFF_MAX), S(2));
        assert_eq!(backoff(30, None, 1.0, BACKOFF_MAX), BACKOFF_MAX);
        assert_eq!(backoff(1, Some(S(30)), 1.0, BACKOFF_MAX), S(30));
        assert_eq!(backoff(12, Some(S(30)), 0.0, BACKOFF_MAX), BACKOFF_MAX / 2);
    }

    #[test]
    fn without_a_usable_token_the_backoff_stops_at_30_s() {
        let cap = backoff_cap(false);
        assert_eq!(cap, S(30));
        assert_eq!(backoff(30, None, 1.0, cap), S(30));
        assert!(backoff(6, None, 1.0, cap) <= S(30), "2^5 s is capped");
        assert_eq!(backoff(30, None, 1.0, backoff_cap(true)), BACKOFF_MAX);
        // The server's Retry-After still wins.
        assert_eq!(backoff(30, Some(S(120)), 1.0, cap), S(120));
    }
}
