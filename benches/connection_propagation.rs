//! Propagation of runtime-connection changes through the Redis store: how long after one
//! replica's `put_definition` (or `remove_definition`) returns does another replica hold
//! the change — notified over pub/sub and, for a create or change, the definition read and
//! opened? (Target, issue 23: p99 < 100 ms.)
//!
//! `cargo bench --bench connection_propagation` (a few seconds after the build; loopback
//! only). Needs Debian's `redis-server` on `PATH` (`apt-get install redis-server`); without
//! it the bench fails.
//!
//! It starts a throwaway `redis-server` on a free loopback port and two `RedisStore`s on it
//! in this process, playing replicas A and B. B subscribes to the connections channel and,
//! on each notification, reads the definition it names (a delete reads as none), as a
//! replica does before serving it. A makes [`CHANGES`] changes one after another — creates,
//! changes and deletes over [`CONNECTIONS`] keys — and for each waits until B has it. A
//! sample starts just before A's call and ends when B's read returns, so it includes A's
//! write, the push, B's read and two task wake-ups on a 2-thread runtime: it over-, never
//! under-states the propagation time. It exits non-zero when p99 misses the target.
//!
//! Measured on a 2-core VM (4 runs, release): "B holds the change" p50 47–55 µs, p99
//! 104–117 µs (one run 1.95 ms), max 2.0–5.6 ms, none missed; the dev profile
//! (`--profile dev`) gave p99 5.9 ms.
#![allow(
    clippy::disallowed_types,
    reason = "clippy.toml's rules are for src: a benchmark measures wall time"
)]

#[path = "support/redis_server.rs"]
mod redis_server;

use futures_util::StreamExt as _;
use redis_server::RedisServer;
use secrecy::SecretString;
use std::time::{Duration, Instant};
use tokenwarden::config::RedisSettings;
use tokenwarden::token::store::redis::parse_update;
use tokenwarden::token::store::RedisStore;
use tokio::sync::mpsc;

/// Changes measured, after [`WARM_UP`] unmeasured ones.
const CHANGES: usize = 5000;
const WARM_UP: usize = 200;
/// Keys the changes cycle through.
const CONNECTIONS: usize = 100;
/// Every how many changes one is a delete.
const DELETE_EVERY: usize = 5;
/// Longest wait for B to see one change; a change not seen by then counts as missed.
const CHANGE_WAIT: Duration = Duration::from_secs(2);
/// The target for the 99th percentile.
const TARGET_P99: Duration = Duration::from_millis(100);
/// The store key both replicas share (32 bytes, base64).
const STORE_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

/// What B saw: the change generation, when it was notified, when its read returned.
struct Seen {
    generation: u64,
    notified: Instant,
    held: Instant,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let redis = RedisServer::start().await;
    let a = store(&redis);
    let b = store(&redis);
    let (_sink, mut messages) = b.subscribe_connections().await.expect("subscribe");
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let notified = Instant::now();
            let Some((generation, key)) = parse_update(message.get_payload_bytes()) else {
                continue;
            };
            b.read_definition(key)
                .await
                .expect("B reads the definition");
            let held = Instant::now();
            if seen_tx
                .send(Seen {
                    generation,
                    notified,
                    held,
                })
                .is_err()
            {
                return;
            }
        }
    });

    let definition = definition_json();
    let (mut notified, mut held, mut written) = (Vec::new(), Vec::new(), Vec::new());
    let mut missed = 0usize;
    for i in 0..WARM_UP + CHANGES {
        let key = format!("conn-{}", i % CONNECTIONS);
        let start = Instant::now();
        let generation = if i % DELETE_EVERY == DELETE_EVERY - 1 {
            a.remove_definition(&key).await
        } else {
            a.put_definition(&key, definition.as_bytes()).await
        }
        .expect("A writes");
        let acknowledged = Instant::now();
        let got = tokio::time::timeout(CHANGE_WAIT, async {
            while let Some(s) = seen.recv().await {
                if s.generation == generation {
                    return Some(s);
                }
            }
            None
        })
        .await;
        let Ok(Some(s)) = got else {
            missed += 1;
            continue;
        };
        if i >= WARM_UP {
            written.push(acknowledged - start);
            notified.push(s.notified - start);
            held.push(s.held - start);
        }
    }
    println!(
        "connection propagation, {CHANGES} changes (1 in {DELETE_EVERY} a delete) over \
         {CONNECTIONS} connections, {}-byte definitions, 2 RedisStores on one loopback Redis",
        definition.len()
    );
    report("A's write acknowledged", &mut written);
    report("B notified", &mut notified);
    let p99 = report("B holds the change (notified + read)", &mut held);
    println!("missed (not seen within {CHANGE_WAIT:?}): {missed}");
    if missed > 0 || p99 >= TARGET_P99 {
        eprintln!("FAIL: p99 {p99:?} (target < {TARGET_P99:?}), {missed} missed");
        std::process::exit(1);
    }
    println!("ok: p99 {p99:?} < {TARGET_P99:?}");
}

fn store(redis: &RedisServer) -> RedisStore {
    let settings = RedisSettings {
        key_prefix: "tokenwarden:".to_owned(),
        lease_ttl: Duration::from_secs(5),
        poll_interval: Duration::from_secs(1),
        ..RedisSettings::for_url(&redis.url())
    };
    RedisStore::open(&settings, &SecretString::from(STORE_KEY)).expect("open the store")
}

/// A definition of a realistic size: a Fides instance with a few secrets.
fn definition_json() -> String {
    let secrets: Vec<String> = (0..8)
        .map(|i| format!("\"secret_{i}\":\"{}\"", "x".repeat(64)))
        .collect();
    format!(
        "{{\"type\":\"salesforce\",\"instance_key\":\"acme\",\"name\":\"Acme CRM\",\
         \"secrets\":{{{}}}}}",
        secrets.join(",")
    )
}

/// Prints p50, p90, p99 and the maximum of `samples`; returns p99.
fn report(what: &str, samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    let p99 = at(0.99);
    println!(
        "{what:<40} p50 {:>9.3?}  p90 {:>9.3?}  p99 {:>9.3?}  max {:>9.3?}",
        at(0.50),
        at(0.90),
        p99,
        samples[samples.len() - 1]
    );
    p99
}
