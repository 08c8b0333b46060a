//! The Redis store against a hostile or odd Redis: the subscription's health check on a
//! RESP2 connection, superseded grants written back (issue 20.1), and out-of-bound
//! generations and oversized values (issue 20.16). Real `redis-server`s, in-process
//! sidecars (helpers shared with `shared_store`).

use crate::shared_store::{injected, wait_injected, wait_subscribers, yaml, STORE_KEY};
use crate::support::logs::Logs;
use crate::support::redis::RedisServer;
use crate::support::*;

/// Polls of the follower that must pass without a hitch.
const QUIET_POLLS: u64 = 5;

#[tokio::test]
async fn a_subscribed_follower_stays_healthy_over_many_polls() {
    let (logs, _capture) = Logs::capture();
    let redis = RedisServer::start().await;
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let config = format!(
        "{}{}",
        crate::support::redis::redis_store(&redis, STORE_KEY, crate::shared_store::LEASE, "100ms"),
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let a = Sidecar::start(&config).await;
    a.wait_state("api", "ready").await;
    wait_subscribers(&redis, 1).await;
    // Each poll pings the subscription (redis-server 7 answers a RESP2 subscriber
    // ["pong", ""]); wait for several of them.
    let pings = redis.calls("ping").await;
    wait_until("several polls", || async {
        redis.calls("ping").await >= pings + QUIET_POLLS
    })
    .await;
    assert_eq!(redis.calls("subscribe").await, 1, "re-subscribed");
    let text = logs.text();
    assert!(!text.contains("token store degraded"), "{text}");
    let st = a.status("api").await;
    assert_eq!(st["store"]["state"], "ok", "{st}");
    assert!(injected(&a, "api").await.is_some());
}
