//! Three `tokenwarden run` processes on one Redis, one rotating grant at panva's
//! oidc-provider (refresh-token rotation with reuse detection, 2 s access tokens), each
//! replica serving requests to the provider's userinfo endpoint all along:
//! 60 s of refreshes with exactly one token request per cycle between them, then the lease
//! holder SIGKILLed while its refresh is in flight, Redis stopped for 10 s and restarted
//! empty, and a replica restarted — each ending with every replica on the one valid grant.
//!
//! Soak tier (about 90 s, most of it the 60 s run and the 10 s outage): ignored by plain
//! `cargo test`, run by `cargo test -- --include-ignored` (README, `.ci/run`) or alone with
//! `cargo test --test it replicas -- --ignored`.

use crate::oidc::{replicas_on_one_grant, KEY, REDIRECT_URI};
use crate::support::oidc::{stat, Provider};
use crate::support::process::SidecarProcess;
use crate::support::redis::{redis_store, RedisServer};
use crate::support::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Access-token lifetime at the provider: a refresh every second or so.
const ACCESS_TTL: u64 = 2;
/// How long the replicas serve and refresh side by side.
const SERVE_FOR: Duration = Duration::from_secs(60);
/// Each replica is asked this often.
const REQUEST_EVERY: Duration = Duration::from_millis(50);
/// How long Redis stays down.
const REDIS_DOWN: Duration = Duration::from_secs(10);
/// Longest wait for every replica to serve again after a fault.
const RECOVERY: Duration = Duration::from_secs(30);
const LEASE: &str = "5s";
/// The same, as the tests' bound on how long a killed holder can delay the next refresh.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// Slack on top of a lease for the survivors' retry interval and the refresh itself.
const LEASE_SLACK: Duration = Duration::from_secs(3);
/// At most this share of requests may meet a 503 `no_token` (a refresh that, on a loaded
/// machine, lands after the 200 ms safety margin of a 2 s token); anything else fails.
const MAX_NO_TOKEN_SHARE: f64 = 0.005;
const POLL: &str = "1s";
const STORE_KEY: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";

/// `GET /idp/me` through `replica`: Some(sub) on 200.
async fn me(replica: &SidecarProcess) -> Result<String, String> {
    let r = client()
        .get(replica.url(&format!("/{KEY}/me")))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(v["sub"].as_str().unwrap_or_default().to_owned())
}

/// Waits until every replica answers `/me` as alice.
async fn all_serve(replicas: &[&SidecarProcess], what: &str) {
    let deadline = tokio::time::Instant::now() + RECOVERY;
    for r in replicas {
        loop {
            match me(r).await {
                Ok(sub) if sub == "alice" => break,
                other => assert!(
                    tokio::time::Instant::now() < deadline,
                    "{what}: {} never served again ({other:?}); status {}\n{}",
                    r.name,
                    r.status(KEY).await,
                    r.logs()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Token requests the provider processed, against the generations Redis stored: equal
/// when no replica duplicated a refresh (read twice in a row to let one in flight land).
async fn requests_and_generations(provider: &Provider, redis: &RedisServer) -> (u64, u64) {
    let mut seen = (0, 0);
    for _ in 0..20 {
        seen = (
            provider.stats().await["token_requests"].as_u64().unwrap(),
            redis.generation(KEY).await,
        );
        if seen.0 == seen.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

#[tokio::test]
#[ignore = "soak: about 90 s (60 s of refreshes, Redis down 10 s); run with --include-ignored"]
async fn three_replicas_share_one_rotating_grant_through_every_fault() {
    let mut redis = RedisServer::start().await;
    let provider = Provider::start(REDIRECT_URI, ACCESS_TTL).await;
    let dir = tempfile::tempdir().unwrap();
    // Authorized once: the state minted on A, the provider's redirect delivered to B.
    let store = redis_store(&redis, STORE_KEY, LEASE, POLL);
    let mut replicas = replicas_on_one_grant(dir.path(), &["a", "b", "c"], &store, &provider).await;

    // 1. Every replica serves for a minute while the token is refreshed about every second.
    let refreshes_at_start = stat(&provider.stats().await, "grants", "refresh_token");
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let no_token = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for r in &replicas {
        let (url, name) = (r.url(&format!("/{KEY}/me")), r.name.clone());
        let (stop, served, no_token) = (
            Arc::clone(&stop),
            Arc::clone(&served),
            Arc::clone(&no_token),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client().get(&url).send().await.expect("proxy answers");
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if status == 503 && body.contains("\"no_token\"") {
                    no_token.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Every proxied request carried a token the provider accepted.
                    assert_eq!(status, 200, "replica {name}: {body}");
                    served.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(REQUEST_EVERY).await;
            }
        }));
    }
    tokio::time::sleep(SERVE_FOR).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await
            .expect("every proxied request carried an accepted token");
    }
    let stats = provider.stats().await;
    assert_eq!(
        stats["errors"],
        serde_json::json!({}),
        "no invalid_grant: {stats}"
    );
    assert_eq!(stat(&stats, "grants", "authorization_code"), 1, "{stats}");
    let refreshes = stat(&stats, "grants", "refresh_token") - refreshes_at_start;
    assert!(
        refreshes >= 40,
        "forced refreshes in {SERVE_FOR:?}: {stats}"
    );
    // No replica refreshes a token another one just refreshed: refreshes are at least the
    // schedule's shortest cycle apart (half the lifetime, less 10 % jitter).
    let shortest_cycle = Duration::from_secs(ACCESS_TTL).mul_f64(0.5 * 0.9);
    let most = (SERVE_FOR.as_secs_f64() / shortest_cycle.as_secs_f64()).ceil() as u64 + 1;
    assert!(
        refreshes <= most,
        "{refreshes} refreshes in {SERVE_FOR:?} (at most {most}): {stats}"
    );
    let (requests, generations) = requests_and_generations(&provider, &redis).await;
    assert_eq!(
        requests, generations,
        "one token request per cycle: {stats}"
    );
    let (served, no_token) = (
        served.load(Ordering::Relaxed),
        no_token.load(Ordering::Relaxed),
    );
    assert!(served > 1000, "{served}");
    assert!(
        (no_token as f64) <= MAX_NO_TOKEN_SHARE * (served + no_token) as f64,
        "{no_token} of {} requests found no usable token",
        served + no_token
    );

    // 2. The lease holder is killed while its refresh is held at the provider: the request
    // is never processed, and another replica refreshes once the lease runs out.
    // Held 1.5 s: well inside the holder's own cut-off (the lease less 2.5 s kept for the
    // write), so only the kill can end that request.
    provider.hold_next(1500).await;
    let deadline = tokio::time::Instant::now() + RECOVERY;
    let holder_pid = loop {
        let held = provider.stats().await["held"].as_u64().unwrap_or(0);
        if let (1, Some(holder)) = (held, redis.lease_holder(KEY).await) {
            break holder.split('-').next().unwrap().parse::<u32>().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh was held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed = replicas
        .iter()
        .position(|r| r.pid() == Some(holder_pid))
        .expect("the lease holder is one of the replicas");
    let refreshes_before = stat(&provider.stats().await, "grants", "refresh_token");
    replicas[killed].kill();
    let killed_at = tokio::time::Instant::now();
    loop {
        let stats = provider.stats().await;
        if stats["abandoned"] == 1 && stat(&stats, "grants", "refresh_token") > refreshes_before {
            break;
        }
        assert!(
            killed_at.elapsed() < LEASE_TTL + LEASE_SLACK,
            "no survivor refreshed within a lease of the holder's death: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivors: Vec<&SidecarProcess> = replicas
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != killed)
        .map(|(_, r)| r)
        .collect();
    all_serve(&survivors, "after the lease holder was killed").await;
    replicas[killed].start().await;
    all_serve(
        &replicas.iter().collect::<Vec<_>>(),
        "killed replica restarted",
    )
    .await;

    // 3. Redis away for 10 s, back empty: the replicas put the grant back and go on.
    redis.stop();
    tokio::time::sleep(REDIS_DOWN).await;
    redis.restart().await;
    all_serve(
        &replicas.iter().collect::<Vec<_>>(),
        "after Redis came back",
    )
    .await;

    // 4. A replica restarted: it takes the grant from Redis, no new login.
    replicas[2].stop();
    replicas[2].start().await;
    all_serve(&replicas.iter().collect::<Vec<_>>(), "replica restarted").await;

    let stats = provider.stats().await;
    assert_eq!(
        stats["errors"],
        serde_json::json!({}),
        "the grant survived: {stats}"
    );
    assert_eq!(stat(&stats, "grants", "authorization_code"), 1, "{stats}");
    for r in &replicas {
        let st = r.status(KEY).await;
        assert_eq!(st["store"]["state"], "ok", "{}: {st}", r.name);
    }
}
