//! Crash safety of the token store under refresh-token rotation (soak tier, ignored by plain
//! `cargo test`: about five minutes; `cargo test -- --include-ignored` runs it with the rest,
//! as CI does; for the figure in docs/token-store.md, run it alone with
//! `cargo test --test it crash -- --ignored --nocapture`). A real `tokenwarden run` process refreshes a 2 s token
//! (about once a second) at a strict rotating token endpoint while requests flow through
//! it, and is SIGKILLed at a random moment, [`KILLS`] times, and restarted on the same
//! store each time. Asserted, every time: the store loads (the process comes up and
//! serves with a token, never needing re-authorization), and no rotated refresh token is
//! lost — the refresh token the restarted process presents is never older than the
//! newest access token the upstream saw (a new access token is used only once its refresh
//! token is on disk). Kills that land after the endpoint rotated but before the store had
//! the new refresh token are counted: the endpoint then sees the previous refresh token
//! again, which it accepts once (as providers' reuse grace does); that grant is never
//! older than what was used.

use crate::support::authz::{authorize_at, callback_at, query};
use crate::support::config::{connections, fixture_authcode};
use crate::support::echo::{echoed_authorization, Echo};
use crate::support::process::SidecarProcess;
use crate::support::serve::{self, json_response};
use crate::support::{client, WAIT};
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// SIGKILLs in the run (`CRASH_KILLS` in the environment overrides it).
const KILLS: usize = 200;
/// Access-token lifetime at the endpoint (refreshed at about half of it).
const EXPIRES_IN: u64 = 2;
/// Longest random wait between a start and its SIGKILL.
const MAX_LIFE: Duration = Duration::from_millis(1500);
/// How often a request goes through the proxy.
const REQUEST_EVERY: Duration = Duration::from_millis(10);
/// The endpoint's pause before answering, so a kill lands mid-refresh now and then.
const ENDPOINT_DELAY: Duration = Duration::from_millis(20);
const STORE_KEY: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
const KEY: &str = "crm";

/// The strict endpoint's grant: `ref-N` and `acc-N` were issued last.
#[derive(Default)]
struct Grant {
    issued: u64,
    /// Refresh requests that presented `ref-(issued - 1)` (rotated, not stored at a kill).
    replayed_previous: u64,
    /// Every refresh token presented, with what was current then.
    presented: Vec<(u64, u64)>,
}

/// `ref-N` / `acc-N` → N.
fn number(token: &str, prefix: &str) -> Option<u64> {
    token.strip_prefix(prefix)?.parse().ok()
}

#[tokio::test]
#[ignore = "soak: about five minutes of SIGKILLs; run with --include-ignored, or alone for the figure in docs/token-store.md"]
async fn sigkilled_mid_refresh_the_store_always_loads_and_no_rotated_refresh_token_is_lost() {
    let grant = Arc::new(Mutex::new(Grant::default()));
    let g = Arc::clone(&grant);
    let (token_addr, _stop) = serve::spawn(move |req| {
        let g = Arc::clone(&g);
        async move {
            let r = serve::receive(req).await;
            tokio::time::sleep(ENDPOINT_DELAY).await;
            let params: Vec<(String, String)> =
                form_urlencoded::parse(r.target.split_once('?').map_or("", |(_, q)| q).as_bytes())
                    .into_owned()
                    .collect();
            let param = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let mut g = g.lock().unwrap();
            let accepted = match param("grant_type").as_deref() {
                Some("authorization_code") => true,
                Some("refresh_token") => {
                    let k = param("refresh_token").and_then(|t| number(&t, "ref-"));
                    let current = g.issued;
                    g.presented.push((k.unwrap_or(0), current));
                    match k {
                        Some(k) if k == current => true,
                        Some(k) if k + 1 == current => {
                            g.replayed_previous += 1;
                            true
                        }
                        _ => false,
                    }
                }
                _ => false,
            };
            if !accepted {
                return json_response(400, r#"{"error":"invalid_grant"}"#);
            }
            g.issued += 1;
            let n = g.issued;
            json_response(
                200,
                format!(
                    r#"{{"access_token":"acc-{n}","refresh_token":"ref-{n}","token_type":"Bearer","expires_in":{EXPIRES_IN}}}"#
                ),
            )
        }
    })
    .await;
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "store: {{ path: tokens.db, key: \"{STORE_KEY}\" }}\n{}",
        connections(&[fixture_authcode(KEY, echo.addr, Some(token_addr), true)])
    );
    let mut sidecar = SidecarProcess::spawn(dir.path(), "crash", "", &body).await;
    let auth = authorize_at(sidecar.admin, KEY).await;
    let page = callback_at(
        sidecar.admin,
        &query(&[("code", "c0de"), ("state", &auth.state)]),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);

    let kills = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(KILLS);
    let mut rng = rand::thread_rng();
    let mut max_used = 0;
    let started = std::time::Instant::now();
    for kill in 0..kills {
        // Serve with a token (proves the store loaded), then run and SIGKILL at random.
        let used = Arc::new(AtomicU64::new(0));
        let proxy = sidecar.url(&format!("/{KEY}/x"));
        wait_served(&proxy, kill, &sidecar).await;
        let load = tokio::spawn(serve_load(proxy, Arc::clone(&used)));
        tokio::time::sleep(rng.gen_range(Duration::ZERO..MAX_LIFE)).await;
        sidecar.kill();
        load.abort();
        max_used = max_used.max(used.load(Ordering::SeqCst));
        // The first refresh after the restart presents what the store had.
        let before = grant.lock().unwrap().presented.len();
        sidecar.start().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        let presented = loop {
            if let Some(&(k, _)) = grant.lock().unwrap().presented.get(before) {
                break k;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "kill {kill}: no refresh after the restart"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(
            presented >= max_used,
            "kill {kill}: the store had ref-{presented}, but acc-{max_used} had been used: a rotated refresh token was lost"
        );
    }
    wait_served(&sidecar.url(&format!("/{KEY}/x")), kills, &sidecar).await;
    let g = grant.lock().unwrap();
    let rejected = g
        .presented
        .iter()
        .filter(|(k, cur)| *k + 1 < *cur || k > cur)
        .count();
    eprintln!(
        "crash safety: {kills} SIGKILLs in {:.0?}; the store loaded after every one; {} refreshes, {} of them replaying the previous refresh token (a kill between the endpoint's rotation and the store write; that token's access token had never been used); {rejected} refresh tokens refused; newest access token used acc-{max_used}, never newer than the stored refresh token",
        started.elapsed(),
        g.presented.len(),
        g.replayed_previous,
    );
    assert_eq!(rejected, 0);
}

/// Requests through the proxy until aborted, recording the newest `acc-N` the upstream saw.
async fn serve_load(url: String, used: Arc<AtomicU64>) {
    let client = client();
    loop {
        if let Ok(r) = client.get(&url).send().await {
            let body = r.bytes().await.unwrap_or_default();
            if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) {
                if let Some(n) = echoed_authorization(&body)
                    .and_then(|a| number(a.strip_prefix("Bearer ").unwrap_or(&a), "acc-"))
                {
                    used.fetch_max(n, Ordering::SeqCst);
                }
            }
        }
        tokio::time::sleep(REQUEST_EVERY).await;
    }
}

/// Waits until a request through `url` is answered 200 with a token.
async fn wait_served(url: &str, kill: usize, sidecar: &SidecarProcess) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = client().get(url).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after kill {kill} the sidecar never served again: {}\n{}",
            sidecar.status(KEY).await,
            sidecar.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
