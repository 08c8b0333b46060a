//! Durable writes to the embedded database: how many runtime-connection definitions per
//! second can `put_definition` store, each its own transaction, synced before it returns?
//! (Target: ≥ 2,000/s — a burst of connections created through the API.)
//!
//! `cargo bench --bench store_writes` (a few seconds after the build). The database lives in
//! a fresh directory under `TOKENWARDEN_BENCH_DIR` (default: the target directory), so the
//! figure is the disk's: put it on the filesystem a deployment would use — a tmpfs has no
//! fsync to wait for and flatters the result.
//!
//! Runs of [`DEFINITIONS`] writes of a [`DEFINITION_LEN`]-byte definition (about a Fides
//! connection with its secrets) under distinct keys, into a database already holding
//! [`PREFILL`] connections, by 1, 8, 32 and 128 threads sharing the store (the connection API
//! runs each request's write on a blocking thread of its own, so concurrent requests are
//! concurrent callers), then updates of existing definitions by 32 threads. Every call is
//! acknowledged only after the commit holding it is synced; callers that arrive together
//! share a commit (group commit, see `src/token/store/commit.rs`), so one writer is bound by
//! the disk's fsync latency and many writers are not.
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
/// Writes of the one-writer run (bound by the fsync latency: a smaller sample is enough).
const SINGLE_WRITER_DEFINITIONS: usize = 1_000;
/// Connections in the database before the runs.
const PREFILL: usize = 10_000;
/// Size of one definition.
const DEFINITION_LEN: usize = 1_500;
/// Threads of the concurrent runs.
const WRITERS: [usize; 3] = [8, 32, 128];
/// Threads of the prefill and of the updates run.
const UPDATE_WRITERS: usize = 32;
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
    println!("store_writes: database {}", path.display());

    let mut stored = run(&store, "prefill", UPDATE_WRITERS, PREFILL, "inserts");
    stored += run(&store, "one", 1, SINGLE_WRITER_DEFINITIONS, "inserts");
    for writers in WRITERS {
        stored += run(
            &store,
            &format!("w{writers}"),
            writers,
            DEFINITIONS,
            "inserts",
        );
    }
    run(&store, "prefill", UPDATE_WRITERS, DEFINITIONS, "updates");
    assert_eq!(store.load_definitions().unwrap().len(), stored);
}

/// `n` writes (rounded down to a multiple of `writers`) under `prefix-<w>-<i>` by `writers`
/// threads sharing the store; prints the rate and the latency of one call, returns the
/// number of writes.
fn run(store: &Arc<SqliteStore>, prefix: &str, writers: usize, n: usize, what: &str) -> usize {
    let per_writer = n / writers;
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(store);
            let prefix = format!("{prefix}-{w}");
            std::thread::spawn(move || {
                let definition = vec![b'x'; DEFINITION_LEN];
                (0..per_writer)
                    .map(|i| {
                        let one = Instant::now();
                        store
                            .put_definition(&format!("{prefix}-{i}"), &definition)
                            .unwrap();
                        one.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    latencies.sort();
    let writes = latencies.len();
    let rate = writes as f64 / elapsed.as_secs_f64();
    let verdict = if rate >= TARGET_PER_S {
        "meets"
    } else {
        "below"
    };
    let at = |q: f64| latencies[((writes - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "store_writes: {prefix:>7}: {writers:>3} writer(s), {writes} {what} in {:.2} s = \
         {rate:.0}/s ({verdict} the {TARGET_PER_S:.0}/s target); one call p50 {:.2} ms, p99 {:.2} ms",
        elapsed.as_secs_f64(),
        at(0.5),
        at(0.99)
    );
    writes
}
