//! `store.backend: redis` with in-process replicas: one token request per cycle across
//! replicas, a state minted on one replica redeemed once on another, Redis down and back
//! (restarted empty), and values Redis cannot give back (wrong key, garbage). The test
//! Redis is a real `redis-server` on a free loopback port (see `support::redis`).

use crate::support::authz::{authorize, redeem};
use crate::support::redis::{redis_store, RedisServer};
use crate::support::*;
use std::time::Duration;

pub(crate) const STORE_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const OTHER_KEY: &str = "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=";
/// Lease and poll settings for tests: short (the lease at its minimum), so a lost replica
/// or message costs little.
pub(crate) const LEASE: &str = "5s";
const POLL: &str = "500ms";

pub(crate) fn yaml(redis: &RedisServer, key: &str, conns: &[Conn]) -> String {
    format!(
        "{}{}",
        redis_store(redis, key, LEASE, POLL),
        connections(conns)
    )
}

/// The token the echo upstream received through `sidecar` for `GET /{key}/`.
pub(crate) async fn injected(sidecar: &Sidecar, key: &str) -> Option<String> {
    let (status, body) = sidecar.get(&format!("/{key}/who")).await;
    (status == 200)
        .then(|| echoed_authorization(&body))
        .flatten()
}

/// Waits until `sidecar` injects `token` for `key`.
pub(crate) async fn wait_injected(sidecar: &Sidecar, key: &str, token: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = injected(sidecar, key).await;
        if seen.as_deref() == Some(token) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never injected {token}; last {seen:?}, status {}",
            sidecar.status(key).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `n` followers are subscribed to the token-update channel.
pub(crate) async fn wait_subscribers(redis: &RedisServer, n: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while redis.subscribers().await != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} subscribers, not {n}",
            redis.subscribers().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn replicas_make_one_token_request_per_cycle_between_them() {
    let redis = RedisServer::start().await;
    let echo = Echo::start().await;
    // 3 s tokens: a refresh every ~1.5 s.
    let tokens = TokenServer::start(Reply::token(3, false)).await;
    let config = yaml(&redis, STORE_KEY, &[cc_conn("api", echo.addr, tokens.addr)]);
    let a = Sidecar::start(&config).await;
    let b = Sidecar::start(&config).await;
    a.wait_state("api", "ready").await;
    b.wait_state("api", "ready").await;
    wait_subscribers(&redis, 2).await;

    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(20);
    while redis.generation("api").await < 5 {
        assert!(tokio::time::Instant::now() < deadline, "too few refreshes");
        for s in [&a, &b] {
            assert!(
                injected(s, "api").await.is_some(),
                "{}",
                s.status("api").await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every token request the endpoint saw is one stored generation: none was duplicated.
    // (A request counts on arrival and its generation on commit: allow for one in flight.)
    let mut seen = (0, 0);
    for _ in 0..20 {
        seen = (tokens.count() as u64, redis.generation("api").await);
        if seen.0 == seen.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.0, seen.1, "token requests vs stored generations");
    // And no replica refreshed what another had just refreshed: the requests are at least
    // the schedule's shortest cycle apart (half of 3 s, less 10 % jitter).
    let shortest_cycle = Duration::from_secs(3).mul_f64(0.5 * 0.9);
    let most = (started.elapsed().as_secs_f64() / shortest_cycle.as_secs_f64()).ceil() as u64 + 1;
    assert!(
        seen.0 <= most,
        "{} token requests in {:?}",
        seen.0,
        started.elapsed()
    );
    let latest = format!("Bearer tok-{}", seen.1);
    wait_injected(&a, "api", &latest).await;
    wait_injected(&b, "api", &latest).await;
    for s in [&a, &b] {
        let st = s.status("api").await;
        assert_eq!(st["store"]["state"], "ok", "{st}");
    }
}

#[tokio::test]
async fn a_state_minted_on_one_replica_is_redeemed_once_on_another() {
    let redis = RedisServer::start().await;
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let conn = fixture_authcode("crm", echo.addr, Some(tokens.addr), true);
    let config = yaml(&redis, STORE_KEY, &[conn]);
    let a = Sidecar::start(&config).await;
    let b = Sidecar::start(&config).await;

    let minted_on_a = authorize(&a, "crm").await;
    let page = redeem(&b, "the-code", &minted_on_a.state).await;
    // The callback answers once the grant is stored in Redis: from here, A must follow.
    let started = tokio::time::Instant::now();
    assert_eq!(page.status, 200, "{}", page.body);
    a.wait_state("crm", "ready").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "replica A adopted the grant after {:?}",
        started.elapsed()
    );
    wait_injected(&a, "crm", "Bearer tok-1").await;
    wait_injected(&b, "crm", "Bearer tok-1").await;

    // Redeemed: neither replica accepts it again, and no second code exchange happens.
    for s in [&a, &b] {
        let again = redeem(s, "the-code", &minted_on_a.state).await;
        assert_eq!(again.status, 400, "{}", again.body);
    }
    assert_eq!(tokens.count(), 1);
    // The state is never a Redis key; the verifier and tokens are sealed.
    let keys: Vec<String> = redis.cmd(&[b"KEYS", b"*"]).await;
    assert!(
        keys.iter().all(|k| !k.contains(&minted_on_a.state)),
        "{keys:?}"
    );
    let sealed: Vec<u8> = redis
        .cmd(&[b"HGET", b"tokenwarden:{crm}:token", b"sealed"])
        .await;
    let text = String::from_utf8_lossy(&sealed);
    assert!(!text.contains("tok-1") && !text.contains("ref-1"), "sealed");
}

#[tokio::test]
async fn redis_down_keeps_tokens_then_restarted_empty_gets_them_back() {
    let mut redis = RedisServer::start().await;
    let echo = Echo::start().await;
    // The authorization-code grant rotates its refresh token; 4 s tokens refresh at ~2 s.
    let code_tokens = TokenServer::start(Reply::token(4, true)).await;
    let cc_tokens = TokenServer::start(Reply::token(2, false)).await;
    let config = yaml(
        &redis,
        STORE_KEY,
        &[
            fixture_authcode("crm", echo.addr, Some(code_tokens.addr), true),
            cc_conn("api", echo.addr, cc_tokens.addr),
        ],
    );
    let a = Sidecar::start(&config).await;
    let auth = authorize(&a, "crm").await;
    assert_eq!(redeem(&a, "c", &auth.state).await.status, 200);
    a.wait_state("crm", "ready").await;
    a.wait_state("api", "ready").await;

    redis.stop();
    let down_at = tokio::time::Instant::now();
    // Still injected while its lifetime lasts; the store shows as degraded everywhere.
    assert_eq!(injected(&a, "crm").await.as_deref(), Some("Bearer tok-1"));
    let st = a
        .wait_status("crm", "a degraded store", |s| {
            s["store"]["state"] == "degraded"
        })
        .await;
    assert_eq!(st["store"]["backend"], "redis", "{st}");
    let (status, ready) = get_json(&a.admin_url("/readyz")).await;
    assert_eq!(
        (status, &ready["store"]["state"]),
        (200, &"degraded".into())
    );
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("tokenwarden_store_up{backend=\"redis\"} 0"),
        "{metrics}"
    );
    // No refresh of the rotating grant without the lease; client credentials go alone.
    let cc_before = cc_tokens.count();
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down_at.elapsed())).await;
    assert_eq!(code_tokens.count(), 1, "refreshed without the lease");
    assert!(
        cc_tokens.count() > cc_before,
        "client credentials refetched"
    );
    assert!(injected(&a, "api").await.is_some());

    // Back, empty: the sidecar writes its grant back, then refreshes it under the lease,
    // and its follower subscribes again (updates are pushed, not only polled).
    redis.restart().await;
    a.wait_status("crm", "the store back", |s| s["store"]["state"] == "ok")
        .await;
    wait_subscribers(&redis, 1).await;
    wait_injected(&a, "crm", "Bearer tok-2").await;
    assert_eq!(code_tokens.count(), 2);
    assert!(redis.generation("crm").await >= 2);
    let refresh = code_tokens.nth(2).await;
    assert!(
        refresh.path_and_query.contains("refresh_token=ref-1"),
        "the refresh used the grant's refresh token: {}",
        refresh.path_and_query
    );
}

#[tokio::test]
async fn values_redis_cannot_give_back_are_named() {
    let redis = RedisServer::start().await;
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let conns = [cc_conn("api", echo.addr, tokens.addr)];
    let a = Sidecar::start(&yaml(&redis, STORE_KEY, &conns)).await;
    a.wait_state("api", "ready").await;

    // Another key: start-up refuses, naming the Redis key and both key ids.
    let dir = tempfile::tempdir().unwrap();
    let err = try_start(dir.path(), &yaml(&redis, OTHER_KEY, &conns))
        .await
        .err()
        .expect("a wrong key must not start")
        .to_string();
    assert!(err.contains("tokenwarden:{api}:token"), "{err}");
    assert!(err.contains("key id"), "{err}");
    assert!(
        !err.contains(OTHER_KEY) && !err.contains(STORE_KEY),
        "{err}"
    );

    // Garbage: the same, with what is wrong; the running replica keeps its token.
    let _: () = redis
        .cmd(&[b"HSET", b"tokenwarden:{api}:token", b"sealed", b"garbage"])
        .await;
    let err = try_start(dir.path(), &yaml(&redis, STORE_KEY, &conns))
        .await
        .err()
        .expect("garbage must not start")
        .to_string();
    assert!(err.contains("tokenwarden:{api}:token"), "{err}");
    assert!(err.contains("too short"), "{err}");
    let _: () = redis
        .cmd(&[b"HSET", b"tokenwarden:{api}:token", b"gen", b"x"])
        .await;
    // The running replica says so in its status (at its next poll) and keeps its token.
    let st = a
        .wait_status("api", "the bad value reported", |s| {
            s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("tokenwarden:{api}:token"))
        })
        .await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("gen field is not a number"),
        "{st}"
    );
    assert_eq!(injected(&a, "api").await.as_deref(), Some("Bearer tok-1"));
}
