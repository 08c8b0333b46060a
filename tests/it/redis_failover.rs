//! A Sentinel failover under load: two `tokenwarden run` processes find the master through
//! three sentinels (one master, one replica) and share one rotating grant at panva's
//! oidc-provider (refresh-token rotation with reuse detection, 3 s access tokens), each
//! serving requests all along for 60 s. Mid-run the master is SIGKILLed and the sentinels
//! promote the replica; the old master comes back empty and is made a replica of the new
//! one. Every request is answered 200 but while there is no master to take the lease from:
//! a 3 s token can run out during the failover (about 4 s with the test sentinels'
//! `down-after-milliseconds` of 3 s), and those requests get a 503 `no_token`, never a
//! stale token. The provider sees no `invalid_grant`, there is one grant throughout, and
//! the token requests are still one per cycle: as many as the generations the master
//! holds.
//!
//! Soak tier (about 75 s): ignored by plain `cargo test`, run by `cargo test --
//! --include-ignored` (README, `.ci/run`) or alone with `cargo test --test it
//! redis_failover -- --ignored`.

use crate::oidc::{replicas_on_one_grant, KEY, REDIRECT_URI};
use crate::support::oidc::{stat, Provider};
use crate::support::process::SidecarProcess;
use crate::support::redis_topology::{SentinelOptions, Sentinels};
use crate::support::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Access-token lifetime at the provider: a refresh about every 1.5 s.
const ACCESS_TTL: u64 = 3;
/// How long the replicas serve side by side, and when the master dies.
const SERVE_FOR: Duration = Duration::from_secs(60);
const KILL_AT: Duration = Duration::from_secs(20);
/// Each replica is asked this often.
const REQUEST_EVERY: Duration = Duration::from_millis(50);
/// After the failover: the new master found, the refresh, its `WAIT` (500 ms: the new
/// master has no replica yet) and the token in every replica.
const RECOVERY: Duration = Duration::from_millis(2500);
/// How long before a later change of master (a second failover on a loaded machine) there
/// was none: `down-after-milliseconds`, the election, and slack.
const LATER_FAILOVER: Duration =
    Duration::from_millis(crate::support::redis_topology::DOWN_AFTER_MS + 3000);
/// Longest wait for the sentinels to promote the replica.
const FAILOVER_WAIT: Duration = Duration::from_secs(15);
const STORE_KEY: &str = "CgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo=";

/// The token hash's generation on the node the sentinels name master now.
async fn stored_generation(sentinels: &Sentinels) -> u64 {
    let master = sentinels.node(sentinels.current_master_port().await);
    let field = format!("tokenwarden:{{{KEY}}}:token");
    let gen: Option<String> = master.cmd(&[b"HGET", field.as_bytes(), b"gen"]).await;
    gen.map_or(0, |g| g.parse().unwrap())
}

#[tokio::test]
#[ignore = "soak: about 75 s (60 s of refreshes across a Sentinel failover); run with --include-ignored"]
async fn a_sentinel_failover_loses_no_rotated_token_and_no_request() {
    let mut sentinels = Sentinels::start(SentinelOptions::default()).await;
    let provider = Provider::start(REDIRECT_URI, ACCESS_TTL).await;
    let dir = tempfile::tempdir().unwrap();
    // min_replicas_acked: the default with sentinels, 1.
    let store = format!(
        "store:\n  backend: redis\n  key: \"{STORE_KEY}\"\n  lease_ttl: 5s\n  poll_interval: 1s\n  sentinel:\n    master_name: {}\n    nodes: [{}]\n",
        sentinels.master_name(),
        crate::redis_modes::sentinel_nodes(&sentinels.sentinel_ports()),
    );
    let replicas = replicas_on_one_grant(dir.path(), &["a", "b"], &store, &provider).await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let mut load = Vec::new();
    for r in &replicas {
        let (url, name) = (r.url(&format!("/{KEY}/me")), r.name.clone());
        let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
        load.push(tokio::spawn(async move {
            // (when, what) of every request not answered 200.
            let mut refused = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = client().get(&url).send().await.expect("proxy answers");
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if status == 200 {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused.push((
                        started.elapsed(),
                        format!("replica {name}: {status} {body}"),
                    ));
                }
                tokio::time::sleep(REQUEST_EVERY).await;
            }
            refused
        }));
    }
    // Every later change of master the sentinels report (on a loaded machine they may fail
    // over once more), with when it was seen.
    let sentinel = ::redis::Client::open(format!(
        "redis://127.0.0.1:{}",
        sentinels.sentinel_ports()[0]
    ))
    .unwrap();
    let master_name = sentinels.master_name().to_owned();
    let watch = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut changes = Vec::new();
            let mut last: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut con) = sentinel.get_multiplexed_async_connection().await {
                    let named: ::redis::RedisResult<Vec<String>> = ::redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(&master_name)
                        .query_async(&mut con)
                        .await;
                    if let Ok(named) = named {
                        let port = named.get(1).cloned();
                        if last.is_some() && port != last {
                            changes.push(started.elapsed());
                        }
                        last = port;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            changes
        })
    };
    tokio::time::sleep(KILL_AT).await;
    // 20 s of normal running (a refresh every 1.5 s through the sentinels' master, each
    // waiting for the replica): nothing to warn about.
    for r in &replicas {
        let logs = r.logs();
        assert!(
            !logs.contains(" WARN ") && !logs.contains(" ERROR "),
            "{} warned in normal running:\n{logs}",
            r.name
        );
    }
    let old = sentinels.kill_master().await;
    let killed_at = tokio::time::Instant::now();
    let new = sentinels.wait_for_failover(old, FAILOVER_WAIT).await;
    let failover = killed_at.elapsed();
    // The old master returns (empty: no persistence) and the sentinels make it a replica.
    sentinels.node_mut(old).restart().await;
    tokio::time::sleep(SERVE_FOR.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let mut refused = Vec::new();
    for task in load {
        refused.extend(task.await.unwrap());
    }
    let changes = watch.await.unwrap();

    let stats = provider.stats().await;
    let logs: String = replicas.iter().map(SidecarProcess::logs).collect();
    assert_eq!(
        stats["errors"],
        serde_json::json!({}),
        "no invalid_grant: {stats}\n{logs}"
    );
    // While there is no master (the failover) no replica can take the lease, so none can
    // refresh: a 3 s token that runs out meanwhile is not replaced until the new master
    // answers. Outside that window every request is answered 200, and inside it only a 503
    // `no_token` (never an upstream 401: no expired or revoked token is ever sent).
    let window = KILL_AT..KILL_AT + failover + RECOVERY;
    // A later failover (seen at `t`) had no master from about `DOWN_AFTER` plus the
    // election before it.
    let later: Vec<_> = changes
        .iter()
        .filter(|t| !window.contains(*t))
        .map(|t| t.saturating_sub(LATER_FAILOVER)..*t + RECOVERY)
        .collect();
    let outside: Vec<_> = refused
        .iter()
        .filter(|(at, _)| !window.contains(at) && !later.iter().any(|w| w.contains(at)))
        .collect();
    assert!(
        outside.is_empty(),
        "refused outside the failover window {window:?}: {outside:?}\n{logs}"
    );
    assert!(
        refused
            .iter()
            .all(|(_, what)| what.contains("503") && what.contains("no_token")),
        "{refused:?}"
    );
    assert_eq!(stat(&stats, "grants", "authorization_code"), 1, "{stats}");
    let refreshes = stat(&stats, "grants", "refresh_token");
    assert!(refreshes >= 25, "refreshes in {SERVE_FOR:?}: {stats}");
    // One token request per cycle: every one the provider processed is a generation on the
    // new master (read twice in a row to let one in flight land).
    let mut seen = (0, 0);
    for _ in 0..20 {
        seen = (
            provider.stats().await["token_requests"].as_u64().unwrap(),
            stored_generation(&sentinels).await,
        );
        if seen.0 == seen.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.0, seen.1, "token requests vs generations: {stats}");
    // On a loaded machine the sentinels may fail over once more (the new master missing
    // `down-after-milliseconds`), back to the old one, by then its replica: the checks above
    // read whichever is master at the end.
    let master_now = sentinels.current_master_port().await;
    for r in &replicas {
        let status = r.status(KEY).await;
        assert_eq!(status["store"]["state"], "ok", "{}: {status}", r.name);
        assert_eq!(status["state"], "ready", "{}: {status}", r.name);
    }
    println!(
        "failover in {failover:?} (master {old} → {new}, at the end {master_now}; changes seen at {changes:?}); {} requests served, {} refused (all within {window:?} or a later failover), {refreshes} refreshes",
        served.load(Ordering::Relaxed),
        refused.len()
    );
}
