//! Unit tests of the refresher's decisions ([`decide`]) and snapshots ([`same`]).

use super::*;
use std::time::{Duration, SystemTime};

fn token(lifetime: u64, refresh: bool) -> TokenSet {
    TokenSet::new(
        "at".to_owned().into(),
        refresh.then(|| "rt".to_owned().into()),
        None,
        SystemTime::now(),
        Some(Duration::from_secs(lifetime)),
        0.0,
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn decisions() {
    let (cc, ac) = (Grant::ClientCredentials, Grant::AuthorizationCode);
    assert_eq!(decide(None, cc, true, None), Next::Fetch);
    assert_eq!(
        decide(None, ac, true, None),
        Next::Idle,
        "waits for a human"
    );
    let t = token(100, true);
    assert_eq!(
        decide(Some(&t), ac, true, None),
        Next::Sleep(t.refresh_at.unwrap())
    );
    let later = Instant::now() + Duration::from_secs(7);
    let retry = Retry {
        at: later,
        without_token: later,
    };
    assert_eq!(decide(Some(&t), ac, true, Some(retry)), Next::Sleep(later));
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(decide(Some(&t), ac, true, None), Next::Fetch);
    // Due, but no way to refresh: keep it until it is unusable, then say so.
    assert_eq!(
        decide(Some(&t), ac, false, None),
        Next::Sleep(t.usable_until().unwrap())
    );
    let no_rt = token(100, false);
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(
        decide(Some(&no_rt), ac, true, None),
        Next::Sleep(no_rt.usable_until().unwrap())
    );
    tokio::time::advance(Duration::from_secs(50)).await;
    assert_eq!(decide(Some(&no_rt), ac, true, None), Next::Expired);
    // Client credentials refresh with token_request, refresh token or not.
    assert_eq!(decide(Some(&no_rt), cc, true, None), Next::Fetch);
    let long_lived = TokenSet::new(
        "at".to_owned().into(),
        None,
        None,
        SystemTime::now(),
        None,
        0.0,
    )
    .unwrap();
    assert_eq!(decide(Some(&long_lived), ac, true, None), Next::Idle);
}

#[tokio::test(start_paused = true)]
async fn a_retry_comes_sooner_once_the_token_is_no_longer_usable() {
    let cc = Grant::ClientCredentials;
    let t = token(100, false); // usable until 95 s
    let retry = Retry::after(30, None); // 150–300 s with a token, 15–30 s without
    assert!(retry.at - Instant::now() >= Duration::from_secs(150));
    assert!(retry.without_token - Instant::now() <= Duration::from_secs(30));
    // While usable: sleep until it stops being so, not for the long backoff.
    assert_eq!(
        decide(Some(&t), cc, true, Some(retry)),
        Next::Sleep(t.usable_until().unwrap())
    );
    tokio::time::advance(Duration::from_secs(96)).await;
    // Unusable, and the short backoff has passed: fetch now.
    assert_eq!(decide(Some(&t), cc, true, Some(retry)), Next::Fetch);
    // With no token at all the short backoff applies from the start.
    let fresh = Retry::after(30, None);
    assert_eq!(
        decide(None, cc, true, Some(fresh)),
        Next::Sleep(fresh.without_token)
    );
}

#[test]
fn snapshots_compare_by_identity() {
    let a = Arc::new(token(100, true));
    let b = Arc::new(token(100, true));
    assert!(same(Some(&a), Some(&Arc::clone(&a))));
    assert!(!same(Some(&a), Some(&b)));
    assert!(same(None, None));
    assert!(!same(Some(&a), None));
}

/// A parked refresher is small (10,000 connections park 10,000): the token request's
/// state is boxed while it runs.
#[test]
fn a_parked_refresher_is_small() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, "connections:\n  - key: a\n    secrets: { client_id: x }\n    client_config:\n      protocol: https\n      host: api.example.com\n      authentication:\n        strategy: oauth2_client_credentials\n        configuration:\n          token_request: { method: POST, path: /t }\n").unwrap();
    let config = crate::config::load(&file).unwrap();
    let refresher = Refresher {
        entry: Arc::new(crate::registry::Entry::new(Arc::clone(
            &config.connections[0],
        ))),
        client: crate::oauth::TokenClient::new(crate::tls::client_config(None).unwrap()).unwrap(),
        backend: crate::token::store::Backend::Local(Arc::new(
            crate::token::store::MemoryStore::new(),
        )),
    };
    let parked = refresher.run(tokio_util::sync::CancellationToken::new());
    let size = std::mem::size_of_val(&parked);
    assert!(size <= 1024, "the refresher's future is {size} bytes");
}
