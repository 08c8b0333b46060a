//! Config hot reload (`POST /api/v1/reload`, and SIGHUP on the real binary): connections
//! added, removed and changed while kept ones keep their tokens, an invalid file changing
//! nothing, settings that need a restart reported, and requests in flight across reloads.
//! What a reload does to a grant: reload_grants.rs.

use crate::support::process::SidecarProcess;
use crate::support::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const STORE_KEY: &str = "CgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo=";
const STORE: &str =
    "store: { path: tokens.db, key: \"CgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo=\" }\n";
/// Reloads during the load test.
const RELOADS: usize = 20;

/// Rewrites the sidecar's config file and asks it to reload → (status, outcome).
async fn reload_with(sc: &Sidecar, yaml: &str) -> (u16, serde_json::Value) {
    sc.reload(yaml).await
}

/// The token the echo upstream received through `sc` for `GET /{key}/x`.
async fn injected(sc: &Sidecar, key: &str) -> (u16, Option<String>) {
    let (status, body) = sc.get(&format!("/{key}/x")).await;
    (status, echoed_authorization(&body))
}

#[tokio::test]
async fn added_removed_and_changed_connections_apply_and_kept_ones_keep_their_tokens() {
    let (echo, other_echo) = (Echo::start().await, Echo::start().await);
    let tokens: Vec<TokenServer> = futures_util::future::join_all(
        (0..5).map(|_| TokenServer::start(Reply::token(3600, false))),
    )
    .await;
    // The removed and the flipped connections refresh every second: a refresher left
    // running after the reload would show at their token servers.
    tokens[1].set_default(Reply::token(2, false));
    tokens[4].set_default(Reply::token(2, false));
    let [kept, removed, changed, added, flipped] = [0, 1, 2, 3, 4].map(|i| tokens[i].addr);
    let before = format!(
        "{STORE}{}",
        connections(&[
            cc_conn("kept", echo.addr, kept),
            cc_conn("removed", echo.addr, removed),
            cc_conn("changed", echo.addr, changed),
            cc_conn("flipped", echo.addr, flipped),
        ])
    );
    let sc = Sidecar::start(&before).await;
    for key in ["kept", "removed", "changed", "flipped"] {
        sc.wait_state(key, "ready").await;
    }
    assert_eq!(
        injected(&sc, "kept").await.1.as_deref(),
        Some("Bearer tok-1")
    );

    // `changed` now goes to another upstream; `removed` is gone; `added` is new;
    // `flipped` becomes a static bearer credential.
    let static_bearer = Conn::new("flipped", echo.addr, "bearer")
        .secrets("api_token: flipped-static")
        .configure("          token: <api_token>\n");
    let after = format!(
        "{STORE}{}",
        connections(&[
            cc_conn("kept", echo.addr, kept),
            cc_conn("changed", other_echo.addr, changed),
            cc_conn("added", echo.addr, added),
            static_bearer,
        ])
    );
    let (status, outcome) = reload_with(&sc, &after).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["result"], "applied");
    assert_eq!(outcome["added"], serde_json::json!(["added"]));
    assert_eq!(
        outcome["changed"],
        serde_json::json!(["changed", "flipped"])
    );
    assert_eq!(outcome["removed"], serde_json::json!(["removed"]));
    // Both changed what their tokens were obtained under (upstream, strategy).
    assert_eq!(
        outcome["tokens_dropped"],
        serde_json::json!(["changed", "flipped"])
    );
    assert_eq!(outcome["restart_required"], serde_json::json!([]));

    // Kept: same token, no new token request.
    assert_eq!(
        injected(&sc, "kept").await.1.as_deref(),
        Some("Bearer tok-1")
    );
    assert_eq!(tokens[0].count(), 1);
    // Changed: starts afresh — the token of the old definition never reaches the new
    // upstream; a new one is fetched.
    sc.wait_state("changed", "ready").await;
    let hits = other_echo.hits();
    assert_eq!(
        injected(&sc, "changed").await.1.as_deref(),
        Some("Bearer tok-2")
    );
    assert_eq!(other_echo.hits(), hits + 1, "the new upstream");
    // Flipped to a static credential: injected, and its refresher is gone.
    assert_eq!(
        injected(&sc, "flipped").await.1.as_deref(),
        Some("Bearer flipped-static")
    );
    // Removed: unknown now. Added: fetches its token and serves.
    assert_eq!(injected(&sc, "removed").await.0, 404);
    sc.wait_state("added", "ready").await;
    assert_eq!(
        injected(&sc, "added").await.1.as_deref(),
        Some("Bearer tok-1")
    );
    let (_, last) = get_json(&sc.admin_url("/api/v1/reload")).await;
    assert_eq!(last, outcome, "GET shows the last reload");
    let (status, list) = get_json(&sc.admin_url("/api/v1/connections")).await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["kept", "changed", "added", "flipped"]);

    // No refresher of the old definitions is left: their token servers stay quiet over
    // more than two of their refresh intervals.
    let (removed_before, flipped_before) = (tokens[1].count(), tokens[4].count());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        tokens[1].count(),
        removed_before,
        "removed connection still refreshed"
    );
    assert_eq!(
        tokens[4].count(),
        flipped_before,
        "flipped connection still refreshed"
    );
    // The removed connection's token stays in the store for the grace period (a restored
    // file gets it back: reload_grants.rs).
    let dir = sc.stop().await;
    let store = tokenwarden::token::store::SqliteStore::open(
        &dir.path().join("tokens.db"),
        Some(&secrecy::SecretString::from(STORE_KEY)),
    )
    .unwrap();
    use tokenwarden::token::store::TokenStore as _;
    let stored = store.load_all().unwrap();
    assert!(stored.contains_key("removed"), "{:?}", stored.keys());
    assert!(stored.contains_key("kept") && stored.contains_key("changed"));
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_says_where() {
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let good = format!(
        "{STORE}{}",
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let sc = Sidecar::start(&good).await;
    sc.wait_state("api", "ready").await;
    let broken = good.replace("  - key: api\n", "  - key: api\n    mystery: 1\n");
    let (status, outcome) = reload_with(&sc, &broken).await;
    assert_eq!(status, 422, "{outcome}");
    assert_eq!(outcome["result"], "invalid");
    let problems = outcome["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| {
            let p = p.as_str().unwrap();
            p.contains("config.yaml:4:5") && p.contains("mystery")
        }),
        "{outcome}"
    );
    assert_eq!(
        injected(&sc, "api").await.1.as_deref(),
        Some("Bearer tok-1")
    );
    assert_eq!(get_json(&sc.admin_url("/api/v1/reload")).await.1, outcome);
}

#[tokio::test]
async fn settings_that_need_a_restart_are_reported_not_applied() {
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let conns = connections(&[cc_conn("api", echo.addr, tokens.addr)]);
    let sc = Sidecar::start(&format!("{STORE}{conns}")).await;
    sc.wait_state("api", "ready").await;
    let next = format!(
        "proxy:\n  listen: 127.0.0.1:1\n  worker_threads: 1\n  max_buffered_head_bytes: 2097152\nadmin:\n  listen: 127.0.0.1:2\n\
         log: {{ level: debug }}\n{STORE}{conns}"
    );
    let (status, outcome) = reload_with(&sc, &next).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(
        outcome["restart_required"],
        serde_json::json!([
            "proxy.listen",
            "proxy.worker_threads",
            "proxy.max_buffered_head_bytes",
            "admin.listen",
            "log"
        ])
    );
    // Still on its listener.
    assert_eq!(injected(&sc, "api").await.0, 200);
}

#[tokio::test]
async fn requests_in_flight_never_fail_across_reloads() {
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let extra = TokenServer::start(Reply::token(3600, false)).await;
    let base = cc_conn("api", echo.addr, tokens.addr);
    let with = format!(
        "{STORE}{}",
        connections(&[base.clone(), cc_conn("extra", echo.addr, extra.addr)])
    );
    let without = format!("{STORE}{}", connections(&[base]));
    let sc = Arc::new(Sidecar::start(&without).await);
    sc.wait_state("api", "ready").await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    // Two clients: one keeps its connection alive across reloads, one opens new ones.
    for keep_alive in [true, false] {
        let (sc, stop, served) = (Arc::clone(&sc), Arc::clone(&stop), Arc::clone(&served));
        load.push(tokio::spawn(async move {
            let http = if keep_alive {
                client()
            } else {
                reqwest::Client::builder()
                    .no_proxy()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap()
            };
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .get(sc.url("/api/x"))
                    .send()
                    .await
                    .expect("proxy answers");
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..RELOADS {
        let yaml = if i % 2 == 0 { &with } else { &without };
        let (status, outcome) = reload_with(&sc, yaml).await;
        assert_eq!(status, 200, "{outcome}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("no request failed");
    }
    assert!(served.load(Ordering::Relaxed) > RELOADS as u64, "load ran");
    assert_eq!(tokens.count(), 1, "the kept connection never fetched again");
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let later = TokenServer::start(Reply::token(3600, false)).await;
    let dir = tempfile::tempdir().unwrap();
    let one = format!(
        "{STORE}{}",
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let p = SidecarProcess::spawn(dir.path(), "hup", "", &one).await;
    wait_state_at(p.admin, "api", "ready").await;
    let two = format!(
        "{STORE}{}",
        connections(&[
            cc_conn("api", echo.addr, tokens.addr),
            cc_conn("later", echo.addr, later.addr),
        ])
    );
    // The process's config file: proxy and admin lines first, then the body.
    let file = dir.path().join("hup.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace(&one, &two)).unwrap();
    let hup = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(p.pid().unwrap().to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    wait_state_at(p.admin, "later", "ready").await;
    let (status, _) = get_json(&p.url("/later/x")).await;
    assert_eq!(status, 200, "{}", p.logs());
    assert!(p.logs().contains("configuration reloaded"), "{}", p.logs());
    let (status, _) = get_json(&format!("http://{}/healthz", p.admin)).await;
    assert_eq!(status, 200, "still serving after SIGHUP");
}

/// `admin.watch_config`: an edited config file applies without a signal (as a Kubernetes
/// ConfigMap update must), once two reads agree; a broken save changes nothing and is tried
/// once, not at every read; the file fixed applies again.
#[tokio::test]
async fn an_edited_config_file_is_reloaded_without_a_signal() {
    let (logs, _capture) = crate::support::logs::Logs::capture();
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let config = |conns: &[Conn]| {
        format!(
            "admin:\n  watch_config: 100ms\n{STORE}{}",
            connections(conns)
        )
    };
    let first = cc_conn("first", echo.addr, tokens.addr);
    let sc = Sidecar::start(&config(std::slice::from_ref(&first))).await;
    sc.wait_state("first", "ready").await;

    let second = cc_conn("second", echo.addr, tokens.addr);
    std::fs::write(sc.config_path(), config(&[first.clone(), second])).unwrap();
    sc.wait_state("second", "ready").await;
    let (_, outcome) = get_json(&sc.admin_url("/api/v1/reload")).await;
    assert_eq!(outcome["result"], "applied", "{outcome}");
    assert_eq!(outcome["added"], serde_json::json!(["second"]));

    std::fs::write(sc.config_path(), "connections: [ half").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, outcome) = get_json(&sc.admin_url("/api/v1/reload")).await;
        if outcome["result"] == "invalid" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{outcome}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ten more reads of the same broken text: no second attempt, and nothing changed.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let changed = "the config file changed: reloading";
    assert_eq!(logs.text().matches(changed).count(), 2, "{}", logs.text());
    assert_eq!(injected(&sc, "second").await.0, 200);

    std::fs::write(sc.config_path(), config(&[first])).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while injected(&sc, "second").await.0 != 404 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "second never removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(logs.text().matches(changed).count(), 3);
}
