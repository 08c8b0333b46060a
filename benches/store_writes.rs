//! Durable writes to the embedded database: how many runtime-connection definitions per
//! second can `put_definition` store, each its own transaction, synced before it returns?
//! (Target: ≥ 2,000/s — a burst of connections created through the API.)
//!
//! `cargo bench --bench store_writes` (a few seconds after the build). The database lives in
//! a fresh directory under `TOKENWARDEN_BENCH_DIR` (default: the target directory), so the
//! figure is the disk's: put it on the filesystem a deployment would use — a tmpfs has no
//! fsync to wait for and flatters the result.
//!
//! Three runs, each [`DEFINITIONS`] writes of a [`DEFINITION_LEN`]-byte definition (about a
//! Fides connection with its secrets) under distinct keys into a database already holding
//! [`PREFILL`] connections:
//! - one writer, one call after another (the API handling one request at a time);
//! - [`WRITERS`] threads sharing the store (concurrent API requests: they queue on its mutex);
//! - one writer replacing the same [`PREFILL`] definitions again (updates, not inserts).
//!
//! It prints definitions per second and the p50/p99 latency of one call.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "clippy.toml's rules are for src: a benchmark measures wall time with std's clock"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokenwarden::token::store::{SqliteStore, TokenStore};

/// Writes per run.
const DEFINITIONS: usize = 4_000;
/// Connections in the database before the runs.
const PREFILL: usize = 10_000;
/// Size of one definition.
const DEFINITION_LEN: usize = 1_500;
/// Threads of the concurrent run.
const WRITERS: usize = 8;
/// The target of issue 23.
const TARGET_PER_S: f64 = 2_000.0;
/// A fixed test key (32 bytes of 0x11, base64).
const KEY: &str = "ERERERERERERERERERERERERERERERERERERERERERE=";

fn main() {
    let base = std::env::var_os("TOKENWARDEN_BENCH_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let path = dir.path().join("tokens.db");
    let store = Arc::new(SqliteStore::open(&path, Some(&SecretString::from(KEY))).unwrap());
    let definition = vec![b'x'; DEFINITION_LEN];
    println!("store_writes: database {}", path.display());

    let prefill = Instant::now();
    for i in 0..PREFILL {
        store
            .put_definition(&format!("prefill-{i}"), &definition)
            .unwrap();
    }
    report(
        "prefill (one writer, inserts)",
        PREFILL,
        prefill.elapsed(),
        None,
    );

    let latencies = sequential(&store, "single", &definition);
    report(
        "one writer, inserts",
        DEFINITIONS,
        latencies.iter().sum(),
        Some(latencies),
    );

    let started = Instant::now();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, definition) = (Arc::clone(&store), definition.clone());
            std::thread::spawn(move || {
                sequential_n(
                    &store,
                    &format!("writer{w}"),
                    &definition,
                    DEFINITIONS / WRITERS,
                )
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    latencies.sort();
    report(
        &format!("{WRITERS} writers, inserts"),
        DEFINITIONS,
        started.elapsed(),
        Some(latencies),
    );

    let latencies = sequential_n(&store, "prefill", &definition, DEFINITIONS);
    report(
        "one writer, updates",
        DEFINITIONS,
        latencies.iter().sum(),
        Some(latencies),
    );
    assert_eq!(
        store.load_definitions().unwrap().len(),
        PREFILL + 2 * DEFINITIONS
    );
}

/// [`DEFINITIONS`] writes under `prefix-<n>`, one after another; the latency of each.
fn sequential(store: &SqliteStore, prefix: &str, definition: &[u8]) -> Vec<Duration> {
    sequential_n(store, prefix, definition, DEFINITIONS)
}

/// `n` writes under `prefix-<n>`, one after another; the latency of each.
fn sequential_n(store: &SqliteStore, prefix: &str, definition: &[u8], n: usize) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let one = Instant::now();
            store
                .put_definition(&format!("{prefix}-{i}"), definition)
                .unwrap();
            one.elapsed()
        })
        .collect()
}

/// Prints one run's rate (and latency percentiles) against the target.
fn report(what: &str, writes: usize, elapsed: Duration, latencies: Option<Vec<Duration>>) {
    let rate = writes as f64 / elapsed.as_secs_f64();
    let verdict = if rate >= TARGET_PER_S {
        "meets"
    } else {
        "BELOW"
    };
    let mut line = format!(
        "store_writes: {what}: {writes} in {:.2} s = {rate:.0}/s ({verdict} the {TARGET_PER_S:.0}/s target)",
        elapsed.as_secs_f64()
    );
    if let Some(mut latencies) = latencies {
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        line.push_str(&format!(
            "; one call p50 {:.2} ms, p99 {:.2} ms",
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3
        ));
    }
    println!("{line}");
}
