//! Crash test: SIGKILL a process in the middle of writing the database, many times, and check
//! it always opens, holding the old or the new token set and every acknowledged one.
//!
//! The parent test re-executes the current test binary to run only [`writer_child`], which is
//! `#[ignore]`d and does nothing unless [`CHILD_ENV`] names a directory. The child writes
//! generation N, N+1, … of one connection forever, printing an acknowledgement after each
//! `put` returns. The parent kills it after a random few milliseconds and asserts that the
//! stored generation is consistent, never goes backwards, and includes every acknowledged write.

// The parent and child are plain processes and threads, no runtime: std's clock and sleep.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};

use super::{SqliteStore, StoredToken, TokenStore, KEY_LEN};

/// Environment variable that turns [`writer_child`] on; its value is the store directory.
const CHILD_ENV: &str = "TOKENWARDEN_CRASH_CHILD";
/// Number of kill-and-check rounds of the quick test.
const ITERATIONS: usize = 50;
/// Number of rounds of the soak test.
const SOAK_ITERATIONS: usize = 200;
/// Upper bound of the random time the child may write before it is killed.
const MAX_RUN: Duration = Duration::from_millis(8);
/// How long the child may take to start and report readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// The quick test must finish well within this (the soak test: four times it).
const TIME_BUDGET: Duration = Duration::from_secs(20);
/// Signal number of SIGKILL, which `Child::kill` sends on Unix.
const SIGKILL: i32 = 9;
/// File name of the database inside the child's directory.
const STORE_FILE: &str = "tokens.db";
/// Files a killed writer may leave: the database, its lock, its write-ahead log and index.
const STORE_FILES: [&str; 4] = [
    "tokens.db",
    "tokens.db.lock",
    "tokens.db-wal",
    "tokens.db-shm",
];
/// The definition written once, beside the static token set; it must survive too.
const STATIC_DEFINITION: &[u8] = b"{\"static\":true}";
/// Connection rewritten with a new generation on every put.
const LIVE: &str = "live";
/// Connection written once; it must survive every rewrite.
const STATIC: &str = "static";
/// Line the child prints once the store is open and the static connection exists.
const READY_LINE: &str = "crash-child: ready";
/// Prefix of the line the child prints after each `put` returns.
const ACK_PREFIX: &str = "crash-child: acked ";
/// Byte the test key consists of.
const KEY_BYTE: u8 = 0x5a;

fn test_key() -> SecretString {
    SecretString::from(base64::engine::general_purpose::STANDARD.encode([KEY_BYTE; KEY_LEN]))
}

/// The token set of generation `n`: every field encodes `n`, so a mixed record is detectable.
fn generation(n: u64) -> StoredToken {
    StoredToken {
        access_token: SecretString::from(format!("gen-{n}")),
        refresh_token: Some(SecretString::from(format!("refresh-{n}"))),
        expires_at_ms: Some(n),
        scope: Some(format!("scope-{n}")),
        obtained_at_ms: n,
        definition: None,
    }
}

/// The generation of the live connection (0 if absent), checking the record is consistent.
fn generation_of(tokens: &HashMap<String, StoredToken>) -> u64 {
    let Some(token) = tokens.get(LIVE) else {
        return 0;
    };
    let n = token.obtained_at_ms;
    let expected = generation(n);
    assert_eq!(
        token.access_token.expose_secret(),
        expected.access_token.expose_secret()
    );
    assert_eq!(
        token
            .refresh_token
            .as_ref()
            .map(|s| s.expose_secret().to_owned()),
        Some(format!("refresh-{n}"))
    );
    assert_eq!(token.expires_at_ms, expected.expires_at_ms);
    assert_eq!(token.scope, expected.scope);
    n
}

/// Child half: loops forever writing generations. Runs only when [`CHILD_ENV`] is set.
#[test]
#[ignore = "child process of sigkill_during_writes_never_corrupts; inert without its env var"]
fn writer_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(&Path::new(&dir).join(STORE_FILE), Some(&test_key())).unwrap();
    let tokens = store.load_all().unwrap();
    let mut n = generation_of(&tokens);
    if !tokens.contains_key(STATIC) {
        store.put(STATIC, &generation(0)).unwrap();
        store.put_definition(STATIC, STATIC_DEFINITION).unwrap();
    }
    println!("{READY_LINE}");
    loop {
        n += 1;
        store.put(LIVE, &generation(n)).unwrap();
        println!("{ACK_PREFIX}{n}");
    }
}

/// The libtest name of [`writer_child`] (module path without the crate name).
fn child_test_name() -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{module}::writer_child")
}

/// Runs the child once: waits until it is ready, lets it write for a random moment, kills it.
/// Returns the highest generation it acknowledged.
fn run_and_kill_child(dir: &Path, rng: &mut impl Rng) -> Option<u64> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", &child_test_name(), "--nocapture", "--ignored"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(wait) {
            Ok(line) if line == READY_LINE => break,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("crash child did not become ready: {e}");
            }
        }
    }
    std::thread::sleep(rng.gen_range(Duration::ZERO..=MAX_RUN));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "child ended on its own: {status}"
    );
    lines
        .iter()
        .filter_map(|line| line.strip_prefix(ACK_PREFIX)?.parse().ok())
        .max()
}

#[test]
fn sigkill_during_writes_never_corrupts() {
    kill_and_check(ITERATIONS, TIME_BUDGET);
}

#[test]
#[ignore = "soak: 200 SIGKILLs, about 5 s in a debug build on 2 cores; run with --include-ignored"]
fn sigkill_200_times_during_writes_never_corrupts() {
    kill_and_check(SOAK_ITERATIONS, 4 * TIME_BUDGET);
}

/// `rounds` times: run the child, kill it, and check the database (see the module doc).
fn kill_and_check(rounds: usize, budget: Duration) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut seen = 0;
    for round in 0..rounds {
        let acked = run_and_kill_child(dir.path(), &mut rng);
        let store = SqliteStore::open(&dir.path().join(STORE_FILE), Some(&test_key())).unwrap();
        let tokens = store
            .load_all()
            .unwrap_or_else(|e| panic!("round {round}: store unreadable after SIGKILL: {e}"));
        assert!(
            tokens.contains_key(STATIC),
            "round {round}: static connection lost"
        );
        let stored = generation_of(&tokens);
        // The child started from `seen`; every acknowledged put must be on disk, and at most
        // one more (written, then killed before acknowledging) may be.
        let floor = acked.unwrap_or(0).max(seen);
        assert!(
            stored == floor || stored == floor + 1,
            "round {round}: stored generation {stored}, previously seen {seen}, acked {acked:?}"
        );
        let definitions = store.load_definitions().unwrap();
        assert!(
            matches!(&definitions[..], [(k, d)] if k == STATIC && d.as_slice() == STATIC_DEFINITION),
            "round {round}: static definition lost"
        );
        seen = stored;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                STORE_FILES.iter().any(|f| name == *f),
                "round {round}: stray file {name:?}"
            );
        }
    }
    assert!(seen > 0, "no write completed in {rounds} rounds");
    assert!(started.elapsed() < budget, "took {:?}", started.elapsed());
}
