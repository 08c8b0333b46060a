//! Per-user grants at scale (issue 24), on the release binary run as its own process
//! (`CARGO_BIN_EXE_tokenwarden`), all on `127.0.0.1`. One connection `users` with
//! `grants: per_user` (authorization code) in front of a fake provider run by the bench:
//! `POST /token` answers a refresh (`at2-<subject>`, `rt2-<subject>`) after
//! `TOKEN_DELAY_MS` and records how many token requests are in flight; every other path
//! is the upstream, which answers with the `Authorization` header it received, so each
//! response shows which token the sidecar injected.
//!
//! `cargo bench --bench grants [-- memory|first_use|expiry ...]` (all three by default).
//!
//! 1. **memory** (embedded store): `GRANTS` (100,000) grants imported with
//!    `PUT /api/v1/connection/users/grants/{subject}` by 16 clients, each a 1 KB access
//!    token and a `REFRESH_BYTES` (128) refresh token, `grant_cache_size` = `GRANTS` so all
//!    stay in memory. Prints the sidecar's `VmRSS` before, with half of them and with all,
//!    the difference per grant (overall, and for the second half alone: without what the
//!    process allocates once, such as SQLite's page caches), and checks a sample of
//!    subjects through the proxy (target ≤ 200 MB).
//! 2. **first_use** (Redis): replicas A and B on one throwaway `redis-server`; `FIRST_USE`
//!    (2,000) grants imported through A; then through B's proxy, one keep-alive client:
//!    for each subject its first request (B holds no grant: one read from Redis) and a
//!    request for a subject B already holds, alternately. Prints p50/p99/max of both and
//!    the differences (target: added p99 ≤ 1 ms), and the Redis commands per first use.
//! 3. **expiry** (embedded store, or `EXPIRY_STORE=redis`): `EXPIRING` (10,000) grants
//!    with `max_concurrent_token_requests: 8`, twice: `window` — imported with
//!    `expires_in: 80` and requested once they are all past their refresh time (each
//!    request answered at once with the old token, its renewal queued) — and `expired` —
//!    imported with `expires_in: 1` and requested once expired (each request waits for its
//!    renewal, at most 2 s). 256 clients request every subject once. Prints the most token
//!    requests in flight (must be ≤ 8), the token requests counted (must equal `EXPIRING`,
//!    one per subject), how the requests were answered, the time from the first request
//!    until the last renewal answered (the drain; its floor is `EXPIRING / 8 ×
//!    TOKEN_DELAY_MS`), and checks that a second pass gets every subject's new token.
//!
//! Knobs (environment): GRANTS, REFRESH_BYTES, FIRST_USE, EXPIRING, TOKEN_DELAY_MS (10),
//! EXPIRY_MODES (`window,expired`), EXPIRY_STORE (`sqlite`). Small values for a quick
//! check on a debug build: `GRANTS=2000 FIRST_USE=200 EXPIRING=500 cargo bench --profile
//! dev --bench grants`. Needs Debian's `redis-server` on `PATH` for `first_use` (and
//! `EXPIRY_STORE=redis`). Figures on this 2-core machine: docs/performance.md.
#![allow(
    clippy::too_many_lines,
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "clippy.toml's rules are for src: a benchmark is a scenario read top to bottom, measures wall time and builds its own HTTP clients"
)]

#[path = "support/redis_server.rs"]
mod redis_server;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use redis_server::RedisServer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The connection every scenario uses.
const KEY: &str = "users";
/// Clients importing side by side.
const IMPORTERS: usize = 16;
/// Clients requesting side by side in the expiry scenario.
const REQUESTERS: usize = 256;
/// The cap on token requests in flight the expiry scenario configures.
const CAP: usize = 8;
/// Length of every access token.
const ACCESS_BYTES: usize = 1024;
/// Longest wait for a process to answer, or for the renewals to drain.
const WAIT: Duration = Duration::from_secs(300);
/// The store key every process shares (32 bytes, base64).
const STORE_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

fn subject(i: usize) -> String {
    format!("user-{i:06}")
}

/// `prefix-<subject>-` padded with `x` to `len` bytes.
fn token(prefix: &str, subject: &str, len: usize) -> String {
    let mut t = format!("{prefix}-{subject}-");
    let pad = len.saturating_sub(t.len());
    t.extend(std::iter::repeat_n('x', pad));
    t
}

// ---------------------------------------------------------------------------------------
// The fake provider: token endpoint and upstream on one port (a Fides connection's token
// requests go to its host).

#[derive(Default)]
struct Provider {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Token requests per subject.
    refreshed: Mutex<HashMap<String, usize>>,
    /// When the last token request was answered.
    last_answer: Mutex<Option<Instant>>,
    delay: Duration,
}

impl Provider {
    fn count(&self) -> usize {
        self.refreshed.lock().unwrap().values().sum()
    }

    async fn answer(&self, req: Request<Incoming>) -> Bytes {
        if req.uri().path() != "/token" {
            let auth = req.headers().get("authorization");
            return Bytes::copy_from_slice(auth.map_or(b"none".as_slice(), |v| v.as_bytes()));
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let refresh = form_urlencoded::parse(&body)
            .find(|(k, _)| k == "refresh_token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        // rt-<subject>-xxx or rt2-<subject>-xxx
        let subject = refresh.split('-').nth(1).unwrap_or("?");
        let subject = format!("{subject}-{}", refresh.split('-').nth(2).unwrap_or("?"));
        tokio::time::sleep(self.delay).await;
        *self
            .refreshed
            .lock()
            .unwrap()
            .entry(subject.clone())
            .or_default() += 1;
        *self.last_answer.lock().unwrap() = Some(Instant::now());
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Bytes::from(
            serde_json::json!({
                "access_token": token("at2", &subject, 64),
                "refresh_token": token("rt2", &subject, 64),
                "token_type": "Bearer",
                "expires_in": 3600,
            })
            .to_string(),
        )
    }
}

async fn start_provider(delay: Duration) -> (SocketAddr, Arc<Provider>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let provider = Arc::new(Provider {
        delay,
        ..Provider::default()
    });
    let shared = Arc::clone(&provider);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let provider = Arc::clone(&shared);
            let service = hyper::service::service_fn(move |req| {
                let provider = Arc::clone(&provider);
                async move {
                    let body = provider.answer(req).await;
                    let mut resp = Response::new(Full::new(body));
                    resp.headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, provider)
}

// ---------------------------------------------------------------------------------------
// The sidecar process.

/// A `tokenwarden run` process, killed when dropped.
struct Sidecar {
    child: Child,
    admin: SocketAddr,
    proxy: SocketAddr,
}

impl Sidecar {
    async fn start(dir: &Path, store: &str, provider: SocketAddr, cache: usize) -> Sidecar {
        let (admin, proxy) = (free_addr(), free_addr());
        let file = write_config(dir, store, provider, cache, admin, proxy);
        let child = Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
            .args(["run", "--config"])
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the tokenwarden binary runs");
        let sidecar = Sidecar {
            child,
            admin,
            proxy,
        };
        let deadline = Instant::now() + WAIT;
        while client()
            .get(sidecar.admin("/healthz"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "tokenwarden did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sidecar
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    fn proxied(&self) -> String {
        format!("http://{}/{KEY}/data", self.proxy)
    }

    /// The process's resident set, in KiB (`VmRSS`).
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the process's status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// A request for `subject` through the proxy: its status and body (the token the
    /// upstream received).
    async fn request(&self, client: &reqwest::Client, subject: &str) -> (u16, Bytes) {
        let r = client
            .get(self.proxied())
            .header("tokenwarden-subject", subject)
            .send()
            .await
            .expect("a request through the proxy");
        (r.status().as_u16(), r.bytes().await.unwrap_or_default())
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
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .unwrap()
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A config in `dir`: one proxy worker, connection [`KEY`] per user on `provider`.
fn write_config(
    dir: &Path,
    store: &str,
    provider: SocketAddr,
    cache: usize,
    admin: SocketAddr,
    proxy: SocketAddr,
) -> PathBuf {
    let yaml = format!(
        r#"proxy: {{ listen: "{proxy}", worker_threads: 1 }}
admin: {{ listen: "{admin}", public_url: "https://tw.example", watch_config: 0 }}
log: {{ level: warn }}
{store}
connections:
  - key: {KEY}
    grants: per_user
    max_concurrent_token_requests: {CAP}
    grant_cache_size: {cache}
    secrets: {{ client_id: bench, client_secret: bench }}
    client_config:
      protocol: http
      host: "{provider}"
      authentication:
        strategy: oauth2_authorization_code
        configuration:
          authorization_request:
            method: GET
            path: /auth
            query_params:
              - {{ name: client_id, value: <client_id> }}
              - {{ name: redirect_uri, value: <redirect_uri> }}
              - {{ name: response_type, value: code }}
              - {{ name: state, value: <state> }}
          token_request:
            method: POST
            path: /token
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "authorization_code", "code": "<code>", "redirect_uri": "<redirect_uri>", "client_id": "<client_id>", "client_secret": "<client_secret>"}}'
          refresh_request:
            method: POST
            path: /token
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "refresh_token", "refresh_token": "<refresh_token>", "client_id": "<client_id>", "client_secret": "<client_secret>"}}'
"#
    );
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

fn sqlite_store() -> String {
    format!("store: {{ path: state/tokens.db, key: \"{STORE_KEY}\" }}")
}

fn redis_store(redis: &RedisServer) -> String {
    format!(
        "store: {{ backend: redis, url: \"{}\", key: \"{STORE_KEY}\" }}",
        redis.url()
    )
}

/// Imports the grants of subjects `range` through `sidecar` with [`IMPORTERS`] clients:
/// 1 KB access tokens `at-<subject>-…`, refresh tokens `rt-<subject>-…` of `refresh_len`.
/// Returns imports per second.
async fn import(
    sidecar: &Sidecar,
    range: std::ops::Range<usize>,
    refresh_len: usize,
    expires_in: u64,
) -> f64 {
    let next = Arc::new(AtomicUsize::new(range.start));
    let started = Instant::now();
    let workers: Vec<_> = (0..IMPORTERS)
        .map(|_| {
            let (next, client, end) = (Arc::clone(&next), client(), range.end);
            let base = sidecar.admin(&format!("/api/v1/connection/{KEY}/grants/"));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return;
                    }
                    let s = subject(i);
                    let body = serde_json::json!({
                        "access_token": token("at", &s, ACCESS_BYTES),
                        "refresh_token": token("rt", &s, refresh_len),
                        "expires_in": expires_in,
                    });
                    let r = client
                        .put(format!("{base}{s}"))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .expect("import");
                    let status = r.status();
                    assert!(
                        status == 201 || status == 200,
                        "import {s}: {status} {}",
                        r.text().await.unwrap_or_default()
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    range.len() as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------
// 1. Memory with every grant held.

async fn memory() {
    let grants = knob("GRANTS", 100_000);
    let refresh_len = knob("REFRESH_BYTES", 128);
    let (provider, _) = start_provider(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(dir.path(), &sqlite_store(), provider, grants).await;
    // One import and one request first, so what every grant shares is there before.
    import(&sidecar, grants..grants + 1, refresh_len, 3600).await;
    let client = client();
    let (status, _) = sidecar.request(&client, &subject(grants)).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sidecar.rss_kib();
    let started = Instant::now();
    import(&sidecar, 0..grants / 2, refresh_len, 3600).await;
    let half = sidecar.rss_kib();
    import(&sidecar, grants / 2..grants, refresh_len, 3600).await;
    let rate = grants as f64 / started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = sidecar.rss_kib();
    // Every grant is held: a sample is served without the store.
    let step = (grants / 1000).max(1);
    for i in (0..grants).step_by(step) {
        let s = subject(i);
        let (status, body) = sidecar.request(&client, &s).await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(
            body,
            format!("Bearer {}", token("at", &s, ACCESS_BYTES)),
            "{s}"
        );
    }
    let served = sidecar.rss_kib();
    let per_grant = (after.saturating_sub(before)) as f64 * 1024.0 / grants as f64;
    let marginal = (after.saturating_sub(half)) as f64 * 1024.0 / (grants - grants / 2) as f64;
    println!("memory: {grants} grants imported at {rate:.0}/s ({IMPORTERS} clients; {ACCESS_BYTES} B access + {refresh_len} B refresh tokens, subjects of 11 B), grant_cache_size {grants}");
    println!(
        "memory: RSS {:.1} MiB before, {:.1} MiB with half, {:.1} MiB after ({:.1} MiB after {} requests); {per_grant:.0} B per grant, {marginal:.0} B per grant of the second half (target ≤ 200 MB in all)",
        before as f64 / 1024.0,
        half as f64 / 1024.0,
        after as f64 / 1024.0,
        served as f64 / 1024.0,
        grants.div_ceil(step),
    );
}

// ---------------------------------------------------------------------------------------
// 2. The first request for a grant this process does not hold (Redis).

/// How many times Redis ran each command since it started (`INFO commandstats`).
async fn redis_calls(redis: &RedisServer) -> HashMap<String, u64> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(":calls=")?;
            Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
        })
        .collect()
}

async fn first_use() {
    let n = knob("FIRST_USE", 2_000);
    let redis = RedisServer::start().await;
    let (provider, _) = start_provider(Duration::ZERO).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Sidecar::start(dir_a.path(), &redis_store(&redis), provider, 100_000).await;
    let b = Sidecar::start(dir_b.path(), &redis_store(&redis), provider, 100_000).await;
    let rate = import(&a, 0..n, 128, 3600).await;
    println!("first_use: {n} grants imported through replica A at {rate:.0}/s");
    let client = client();
    // Warm up B's path (and hold subject 0, so there is a held grant to ask for).
    for _ in 0..50 {
        let (status, _) = b.request(&client, &subject(0)).await;
        assert_eq!(status, 200);
    }
    let calls_before = redis_calls(&redis).await;
    let (mut cold, mut warm) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut held = 1usize;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in 1..n {
        let s = subject(i);
        let started = Instant::now();
        let (status, body) = b.request(&client, &s).await;
        cold.push(started.elapsed());
        assert_eq!(status, 200, "{s}: first use");
        assert_eq!(body, format!("Bearer {}", token("at", &s, ACCESS_BYTES)));
        held += 1;
        // A held subject at random (xorshift).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let h = subject((seed % held as u64) as usize);
        let started = Instant::now();
        let (status, _) = b.request(&client, &h).await;
        warm.push(started.elapsed());
        assert_eq!(status, 200, "{h}: held");
    }
    let calls_after = redis_calls(&redis).await;
    let mut commands: Vec<String> = calls_after
        .iter()
        .filter_map(|(name, after)| {
            let d = after - calls_before.get(name).copied().unwrap_or(0);
            (d > 0).then(|| format!("{name} {:.2}", d as f64 / (n - 1) as f64))
        })
        .collect();
    commands.sort();
    cold.sort();
    warm.sort();
    let line = |what: &str, s: &[Duration]| {
        println!(
            "first_use: {what:<18} p50 {:6.3} ms   p99 {:6.3} ms   max {:6.3} ms   ({} requests)",
            ms(percentile(s, 0.5)),
            ms(percentile(s, 0.99)),
            ms(*s.last().unwrap()),
            s.len()
        );
    };
    line("held by B", &warm);
    line("first use on B", &cold);
    println!(
        "first_use: added by the first use: p50 {:.3} ms, p99 {:.3} ms (target p99 ≤ 1 ms); Redis commands per first use (one EVALSHA is one round trip; the commands its script runs are counted too): {}",
        ms(percentile(&cold, 0.5)) - ms(percentile(&warm, 0.5)),
        ms(percentile(&cold, 0.99)) - ms(percentile(&warm, 0.99)),
        commands.join(", ")
    );
}

// ---------------------------------------------------------------------------------------
// 3. Many grants due at once.

async fn expiry(mode: &str) {
    let n = knob("EXPIRING", 10_000);
    let delay = Duration::from_millis(knob("TOKEN_DELAY_MS", 10) as u64);
    let redis_wanted = std::env::var("EXPIRY_STORE").is_ok_and(|s| s == "redis");
    let redis = if redis_wanted {
        Some(RedisServer::start().await)
    } else {
        None
    };
    let store = redis.as_ref().map_or_else(sqlite_store, redis_store);
    let (provider_addr, provider) = start_provider(delay).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(dir.path(), &store, provider_addr, n.max(10_000)).await;
    let lifetime: u64 = match mode {
        "window" => 80,
        "expired" => 1,
        other => panic!("EXPIRY_MODES: unknown mode {other} (window, expired)"),
    };
    let rate = import(&sidecar, 0..n, 64, lifetime).await;
    // window: refresh time at 45–50 % of the lifetime, usable until 95 % of it;
    // expired: usable until 0.9 s.
    let wait = match mode {
        "window" => Duration::from_secs(lifetime / 2) + Duration::from_secs(1),
        _ => Duration::from_secs(lifetime) + Duration::from_millis(200),
    };
    tokio::time::sleep(wait).await;
    assert_eq!(provider.count(), 0, "no renewal before the requests");
    let next = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let sidecar = Arc::new(sidecar);
    let started = Instant::now();
    let workers: Vec<_> = (0..REQUESTERS)
        .map(|_| {
            let (next, answers, sidecar, client) = (
                Arc::clone(&next),
                Arc::clone(&answers),
                Arc::clone(&sidecar),
                client(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let s = subject(i);
                    let (status, body) = sidecar.request(&client, &s).await;
                    let what = match status {
                        200 if body.starts_with(b"Bearer at2-") => "200 with the new token",
                        200 => "200 with the old token",
                        503 => "503 (no token within 2 s)",
                        _ => "other",
                    };
                    *answers.lock().unwrap().entry(what.into()).or_default() += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let requested = started.elapsed();
    while provider.count() < n {
        assert!(
            started.elapsed() < WAIT,
            "{} of {n} renewed after {WAIT:?}",
            provider.count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = provider.last_answer.lock().unwrap().unwrap() - started;
    // Anything more (a second renewal of one grant) would show in the count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = client();
    let mut stale = 0;
    for i in 0..n {
        let s = subject(i);
        let (status, body) = sidecar.request(&client, &s).await;
        if status != 200 || body != format!("Bearer {}", token("at2", &s, 64)) {
            stale += 1;
        }
    }
    let refreshed = provider.refreshed.lock().unwrap();
    let count: usize = refreshed.values().sum();
    let max = provider.max_in_flight.load(Ordering::SeqCst);
    let floor = delay.mul_f64(n as f64 / CAP as f64);
    let mut answers: Vec<_> = answers
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    answers.sort();
    let store = if redis_wanted { "redis" } else { "sqlite" };
    println!(
        "expiry {mode} ({store}): {n} grants (expires_in {lifetime} s, imported at {rate:.0}/s), {REQUESTERS} clients, token endpoint {} ms per request",
        delay.as_millis()
    );
    println!(
        "expiry {mode}: first pass ({:.2} s): {}",
        requested.as_secs_f64(),
        answers.join(", ")
    );
    println!(
        "expiry {mode}: most token requests in flight {max} (cap {CAP}) [{}]; token requests {count} for {} subjects (expected {n}) [{}]; drained {:.2} s after the first request (floor {:.2} s)",
        if max <= CAP { "ok" } else { "OVER THE CAP" },
        refreshed.len(),
        if count == n && refreshed.len() == n { "ok" } else { "MISMATCH" },
        drained.as_secs_f64(),
        floor.as_secs_f64()
    );
    println!(
        "expiry {mode}: second pass: {} of {n} subjects got their new token [{}]",
        n - stale,
        if stale == 0 { "ok" } else { "STALE" }
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; anything else names scenarios.
    let asked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |s: &str| asked.is_empty() || asked.iter().any(|a| a == s);
    if wants("memory") {
        memory().await;
    }
    if wants("first_use") {
        first_use().await;
    }
    if wants("expiry") {
        let modes = std::env::var("EXPIRY_MODES").unwrap_or_else(|_| "window,expired".into());
        for mode in modes.split(',') {
            expiry(mode).await;
        }
    }
}
