//! Connections at runtime at scale (issue 23), on the release binary run as its own process
//! (`CARGO_BIN_EXE_tokenwarden`), all on `127.0.0.1`:
//!
//! 1. **Embedded store**: [`CONNECTIONS`] Salesforce connections (the unchanged Fides file,
//!    a distinct `domain` each) instantiated through the API by [`CONCURRENCY`] clients —
//!    creates per second (target ≥ 2,000/s); the process's RSS before and after (target
//!    ≤ 64 MB with them all); then a restart: how long until every one is served again,
//!    and the RSS then.
//! 2. **Redis**: two replicas on one throwaway `redis-server`; creates per second through
//!    replica A; then [`SAMPLES`] times, one connection created on A and the time until
//!    replica B serves it (`GET /api/v1/connection/{key}` answers 200; polled every
//!    [`POLL_EVERY`]), and one deleted on A until B refuses it (404) — the p50, p99 and
//!    max of each (target p99 < 100 ms). A sample includes up to one poll interval and one
//!    admin request: it over-, never under-states the propagation time.
//!
//! Figures on this 2-core machine: docs/performance.md.
//!
//! `cargo bench --bench connections` (about two minutes after the release build). Needs
//! Debian's `redis-server` on `PATH`. Authorization-code connections are used so that no
//! token request leaves the machine (they wait for an authorization).
#![allow(
    clippy::too_many_lines,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "clippy.toml's rules are for src: a benchmark is a scenario read top to bottom, measures wall time and builds its own HTTP clients"
)]

#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections created on the embedded store.
const CONNECTIONS: usize = 10_000;
/// Connections created through replica A on Redis.
const REDIS_CONNECTIONS: usize = 2_000;
/// Clients creating side by side.
const CONCURRENCY: usize = 16;
/// Propagation samples (each a create and a delete).
const SAMPLES: usize = 200;
/// Pause between two polls of replica B.
const POLL_EVERY: Duration = Duration::from_millis(1);
/// Longest wait for a process to answer, or for a change to reach the other replica.
const WAIT: Duration = Duration::from_secs(60);
/// The store key every process shares (32 bytes, base64).
const STORE_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

/// A `tokenwarden run` process, killed when dropped.
struct Sidecar {
    child: Child,
    admin: SocketAddr,
}

impl Sidecar {
    /// Starts the binary on `config` and waits until its admin listener answers.
    async fn start(config: &Path, admin: SocketAddr) -> Sidecar {
        let child = Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the tokenwarden binary runs");
        let sidecar = Sidecar { child, admin };
        let deadline = Instant::now() + WAIT;
        while client().get(sidecar.url("/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "tokenwarden did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sidecar
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The process's resident set, in MiB (`VmRSS`).
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the process's status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib / 1024.0
    }

    /// How many connections `GET /api/v1/connection` counts.
    async fn total(&self) -> u64 {
        let r = client()
            .get(self.url("/api/v1/connection?size=1"))
            .send()
            .await;
        match r {
            Ok(r) => {
                let page: Value = serde_json::from_slice(&r.bytes().await.unwrap_or_default())
                    .unwrap_or_default();
                page["total"].as_u64().unwrap_or(0)
            }
            Err(_) => 0,
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap()
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A config in `dir` with the Fides files as templates and `store`; returns its path and
/// its admin address.
fn config(dir: &Path, store: &str) -> (std::path::PathBuf, SocketAddr) {
    let admin = free_addr();
    let fides = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fides");
    let yaml = format!(
        "proxy: {{ listen: \"{}\" }}\nadmin: {{ listen: \"{admin}\", public_url: \"https://tw.example\", watch_config: 0 }}\n{store}\ntemplates:\n  - path: {}\n",
        free_addr(),
        fides.display()
    );
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    (file, admin)
}

/// The instantiate body of Salesforce connection `key`.
fn salesforce(key: &str) -> Value {
    json!({"instance_key": key, "name": format!("Customer {key}"),
           "secrets": {"domain": format!("{key}.my.salesforce.com"),
                       "client_id": format!("client-{key}"), "client_secret": "s3cret"}})
}

/// Creates `count` connections `{prefix}{i}` through `sidecar` with [`CONCURRENCY`] clients;
/// returns creates per second.
async fn create_all(sidecar: &Sidecar, prefix: &str, count: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let url = sidecar.url("/api/v1/connection/instantiate/salesforce");
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, url, client) = (Arc::clone(&next), url.clone(), client());
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(salesforce(&format!("{prefix}{i}")).to_string())
                        .send()
                        .await
                        .expect("create");
                    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// Waits until `sidecar` answers `status` for connection `key`; returns how long that took.
async fn until(sidecar: &Sidecar, key: &str, status: u16) -> Duration {
    let started = Instant::now();
    let client = client();
    loop {
        let r = client
            .get(sidecar.url(&format!("/api/v1/connection/{key}")))
            .send()
            .await
            .unwrap();
        if r.status() == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < WAIT, "{key} never answered {status}");
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<28} p50 {:6.2} ms   p99 {:6.2} ms   max {:6.2} ms   ({} samples; target p99 < 100 ms)",
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.99)),
        ms(*samples.last().unwrap()),
        samples.len()
    );
}

async fn embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("store: {{ path: state/tokens.db, key: \"{STORE_KEY}\" }}");
    let (file, admin) = config(dir.path(), &store);
    let sidecar = Sidecar::start(&file, admin).await;
    let before = sidecar.rss_mib();
    let rate = create_all(&sidecar, "c", CONNECTIONS).await;
    let after = sidecar.rss_mib();
    println!("embedded store: {CONNECTIONS} creates through the API at {rate:.0}/s ({CONCURRENCY} clients; target ≥ 2000/s)");
    println!("RSS: {before:.1} MiB with none, {after:.1} MiB with {CONNECTIONS} (target ≤ 64 MB)");
    sidecar.stop();
    let started = Instant::now();
    let sidecar = Sidecar::start(&file, admin).await;
    while sidecar.total().await < CONNECTIONS as u64 {
        assert!(started.elapsed() < WAIT, "not every connection came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "restart: all {CONNECTIONS} served again after {:.2} s; RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        sidecar.rss_mib()
    );
    sidecar.stop();
}

async fn shared() {
    let redis = RedisServer::start().await;
    let store = format!(
        "store: {{ backend: redis, url: \"{}\", key: \"{STORE_KEY}\" }}",
        redis.url()
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (file_a, admin_a) = config(dir_a.path(), &store);
    let (file_b, admin_b) = config(dir_b.path(), &store);
    let a = Sidecar::start(&file_a, admin_a).await;
    let b = Sidecar::start(&file_b, admin_b).await;
    let rate = create_all(&a, "r", REDIS_CONNECTIONS).await;
    println!("redis: {REDIS_CONNECTIONS} creates through replica A at {rate:.0}/s ({CONCURRENCY} clients)");
    let (mut created, mut deleted) = (Vec::new(), Vec::new());
    let client = client();
    for i in 0..SAMPLES {
        let key = format!("p{i}");
        let r = client
            .post(a.url("/api/v1/connection/instantiate/salesforce"))
            .header("content-type", "application/json")
            .body(salesforce(&key).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        created.push(until(&b, &key, 200).await);
        let r = client
            .delete(a.url(&format!("/api/v1/connection/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        deleted.push(until(&b, &key, 404).await);
    }
    report("created on A, served by B", &mut created);
    report("deleted on A, refused by B", &mut deleted);
    a.stop();
    b.stop();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    embedded().await;
    shared().await;
}
