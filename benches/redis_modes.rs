//! What each Redis mode costs the store, side by side in one run on loopback:
//!
//! - **TLS**: a token write's propagation — from the start of one `RedisStore`'s commit to
//!   the notification arriving at another's subscription — over plain TCP and over TLS
//!   (rustls, a CA minted for the run), interleaved write by write.
//! - **`WAIT`**: the latency of a commit holding a rotated refresh token, on a master alone
//!   (`min_replicas_acked: 0`) and on a master with one replica (`min_replicas_acked: 1`:
//!   the commit waits for the replica), interleaved; the difference is what `WAIT` adds to
//!   a refresh.
//!
//! `cargo bench --bench redis_modes` (about 30 s after the build). Needs Debian's
//! `redis-server` (built with TLS). It prints p50/p90/p99/max of each.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    dead_code,
    reason = "clippy.toml's rules are for src: a benchmark measures wall time; the test topology module it borrows has more than it uses"
)]

use futures_util::StreamExt as _;
use secrecy::SecretString;
use std::time::{Duration, Instant};
use tokenwarden::config::{RedisSettings, RedisTarget, RedisTls};
use tokenwarden::token::store::redis::Commit;
use tokenwarden::token::store::{GrantRef, RedisStore, StoredToken};

/// The tests' Redis topology (`tests/it/support/redis_topology.rs`), with the two items it
/// takes from its parent.
mod support {
    pub mod redis {
        pub const INSTALL_HINT: &str = "install Redis: apt-get install redis-server";
        pub fn free_port() -> u16 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port()
        }
    }
    pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
    #[path = "../../tests/it/support/redis_topology.rs"]
    pub mod redis_topology;
}
use support::redis_topology::{NodeOptions, Pki, RedisNode};

/// Measured writes per mode, after [`WARM_UP`] unmeasured ones.
const WRITES: usize = 1000;
const WARM_UP: usize = 50;
/// Longest wait for one notification.
const NOTIFY_WAIT: Duration = Duration::from_secs(2);
const STORE_KEY: &str = "KysrKysrKysrKysrKysrKysrKysrKysrKysrKysrKys=";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let pki = Pki::mint();
    let plain = RedisNode::start(NodeOptions::default()).await;
    let tls = RedisNode::start(NodeOptions::default().tls(&pki, false)).await;
    let ca = std::fs::read(pki.ca_pem()).unwrap();
    let tls_settings = RedisSettings {
        target: RedisTarget::Url(SecretString::from(tls.url())),
        tls: Some(RedisTls {
            ca_pem: Some(ca),
            client: None,
            server_name: None,
        }),
        ..RedisSettings::for_url(&tls.url())
    };

    // Propagation, plain and TLS, interleaved.
    let mut modes = Vec::new();
    for settings in [RedisSettings::for_url(&plain.url()), tls_settings] {
        let writer = open(&settings);
        let reader = open(&settings);
        let (_sink, stream) = reader.subscribe().await.expect("subscribe");
        modes.push((writer, stream, Vec::with_capacity(WRITES)));
    }
    for i in 0..WARM_UP + WRITES {
        for (writer, stream, samples) in &mut modes {
            let started = Instant::now();
            commit(writer, "api", i, false).await;
            let message = tokio::time::timeout(NOTIFY_WAIT, stream.next())
                .await
                .expect("notified in time")
                .expect("subscription open");
            assert!(message.get_payload_bytes().ends_with(b" api"));
            if i >= WARM_UP {
                samples.push(started.elapsed());
            }
        }
    }
    println!(
        "token write → another store notified, {WRITES} writes per mode, interleaved, loopback"
    );
    let plain_p99 = report("plain TCP", &mut modes[0].2);
    let tls_p99 = report("TLS (rustls)", &mut modes[1].2);
    println!("TLS adds {:?} at p99", tls_p99.saturating_sub(plain_p99));

    // WAIT: a master alone, and a master with one replica that must hold the write.
    let alone = RedisNode::start(NodeOptions::default()).await;
    let master = RedisNode::start(NodeOptions::default()).await;
    let _replica = RedisNode::start(NodeOptions::default().replica_of(&master)).await;
    let unwaited = open(&RedisSettings::for_url(&alone.url()));
    let waited = open(&RedisSettings {
        min_replicas_acked: 1,
        ..RedisSettings::for_url(&master.url())
    });
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for i in 0..WARM_UP + WRITES {
        for (store, samples) in [(&unwaited, &mut without), (&waited, &mut with)] {
            let started = Instant::now();
            let written = commit(store, "crm", i, true).await;
            if i >= WARM_UP {
                samples.push(started.elapsed());
                // (A warm-up commit may find the new replica not acknowledging yet.)
                assert!(
                    matches!(written, Commit::Written(_)),
                    "written (and held by the replica when waited): {written:?}"
                );
            }
        }
    }
    println!("\ncommit of a rotated refresh token, {WRITES} per mode, interleaved, loopback");
    let p50_without = percentile(&mut without, 0.5);
    let p50_with = percentile(&mut with, 0.5);
    let p99_without = report("min_replicas_acked 0 (no WAIT)", &mut without);
    let p99_with = report("min_replicas_acked 1 (WAIT 1)", &mut with);
    println!(
        "WAIT adds {:?} at p50, {:?} at p99",
        p50_with.saturating_sub(p50_without),
        p99_with.saturating_sub(p99_without)
    );
}

fn open(settings: &RedisSettings) -> RedisStore {
    RedisStore::open(settings, &SecretString::from(STORE_KEY)).expect("open the store")
}

/// Commits the `i`-th token set of connection `key` (a new refresh token each time when
/// `rotated`), as a new grant would.
async fn commit(store: &RedisStore, key: &str, i: usize, rotated: bool) -> Commit {
    let token = StoredToken {
        access_token: SecretString::from(format!("access-{i}")),
        refresh_token: rotated.then(|| SecretString::from(format!("refresh-{i}"))),
        expires_at_ms: None,
        scope: None,
        obtained_at_ms: 0,
        definition: None,
    };
    store
        .commit(GrantRef::own(key), None, false, 0, &token, rotated)
        .await
        .expect("commit")
}

/// The `q` quantile of `samples` (sorted in place).
fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i]
}

/// Prints p50, p90, p99 and the maximum of `samples`; returns p99.
fn report(what: &str, samples: &mut [Duration]) -> Duration {
    let p99 = percentile(samples, 0.99);
    println!(
        "{what:<34} p50 {:>9.3?}  p90 {:>9.3?}  p99 {:>9.3?}  max {:>9.3?}",
        percentile(samples, 0.50),
        percentile(samples, 0.90),
        p99,
        samples[samples.len() - 1]
    );
    p99
}
