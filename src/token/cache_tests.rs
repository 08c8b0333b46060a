//! Unit tests of [`Cache::replace_rejected`] (the claim, its sharing, its rate limit and
//! its failures) and of [`STATE_NAMES`] (the names [`Cache::state_name`] reports, kept in
//! `instrument`).

use super::*;
use crate::instrument::STATE_NAMES;
use std::time::Duration;

fn token() -> TokenSet {
    let lifetime = Some(Duration::from_secs(3600));
    TokenSet::new(
        "at".to_owned().into(),
        None,
        None,
        SystemTime::now(),
        lifetime,
        0.0,
    )
    .unwrap()
}

/// A cache holding a token, and its serial.
fn ready() -> (Arc<Cache>, u64) {
    let cache = Arc::new(Cache::new(State::Pending));
    let set = token();
    let serial = set.serial();
    cache.publish(set, 0, None);
    (cache, serial)
}

/// Plays the refresher once: waits for a replacement request, then publishes a new
/// token (or, with `fail`, gives up) after `takes`.
fn refresher(cache: &Arc<Cache>, takes: Duration, fail: bool) -> tokio::task::JoinHandle<()> {
    let cache = Arc::clone(cache);
    tokio::spawn(async move {
        cache.signals.forced.notified().await;
        let seen = cache.token();
        assert!(cache.replacement_asked(seen.as_deref()));
        tokio::time::sleep(takes).await;
        if !fail {
            cache.publish(token(), 0, None);
        }
        cache.replacement_done(seen.map_or(0, |t| t.serial()));
    })
}

const INTERVAL: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn rejected_requests_share_one_refresh_and_the_next_one_waits_an_interval() {
    let (cache, first) = ready();
    let refreshing = refresher(&cache, Duration::from_secs(1), false);
    let (a, b, c) = tokio::join!(
        cache.replace_rejected(first, INTERVAL, WAIT),
        cache.replace_rejected(first, INTERVAL, WAIT),
        cache.replace_rejected(first, INTERVAL, WAIT),
    );
    refreshing.await.unwrap();
    assert_eq!(
        [a, b, c],
        [
            Replacement::Refreshed,
            Replacement::Reused,
            Replacement::Reused
        ]
    );
    let second = cache.current().as_deref().unwrap().serial();
    assert_ne!(second, first);
    // A late 401 to the first token: the second is current, nothing to ask.
    assert_eq!(
        cache.replace_rejected(first, INTERVAL, WAIT).await,
        Replacement::Reused
    );
    // The second token rejected within the interval: limited.
    assert_eq!(
        cache.replace_rejected(second, INTERVAL, WAIT).await,
        Replacement::Limited
    );
    tokio::time::advance(INTERVAL).await;
    let refreshing = refresher(&cache, Duration::ZERO, false);
    assert_eq!(
        cache.replace_rejected(second, INTERVAL, WAIT).await,
        Replacement::Refreshed
    );
    refreshing.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_slow_refresh_ends_the_wait_as_failed() {
    let (cache, first) = ready();
    let refreshing = refresher(&cache, Duration::from_secs(1), true);
    assert_eq!(
        cache.replace_rejected(first, INTERVAL, WAIT).await,
        Replacement::Failed
    );
    refreshing.await.unwrap();
    assert_eq!(cache.current().as_deref().unwrap().serial(), first);

    let (cache, first) = ready();
    let refreshing = refresher(&cache, WAIT * 2, false);
    let started = Instant::now();
    assert_eq!(
        cache.replace_rejected(first, INTERVAL, WAIT).await,
        Replacement::Failed
    );
    assert_eq!(started.elapsed(), WAIT, "no longer than the wait");
    refreshing.abort();
}

#[test]
fn every_state_name_is_listed_and_the_ones_without_a_token_come_last() {
    use State::*;
    let states = [
        Pending,
        Ready,
        Expired,
        Failed,
        NeedsAuthorization,
        NeedsReauthorization,
        Static,
        PerUser,
    ];
    for state in states {
        assert_eq!(STATE_NAMES[state as usize], state.as_str(), "{state:?}");
    }
    assert_eq!(STATE_NAMES.len(), states.len(), "the names and no others");
    assert_eq!(STATE_NAMES[STATE_NAMES.len() - 2..], ["static", "per_user"]);
}
