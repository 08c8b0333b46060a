//! Runtime connections at scale, on the embedded store: 10,000 created through the API on
//! one process come back after a restart with their tokens (soak tier); a SIGKILL in the
//! middle of a burst of creates loses no create the API acknowledged.

use crate::support::process::SidecarProcess;
use crate::support::*;
use rand::Rng;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::STORE;
/// Clients creating side by side.
const CONCURRENCY: usize = 8;

/// The unchanged Fides files as templates (`salesforce`, `auth0`, …).
fn templates() -> String {
    let fides = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fides");
    format!(
        "templates:\n  - {{ path: \"{}\", allow_private_network: true }}\n",
        fides.display()
    )
}

/// Every connection key `GET /api/v1/connection` lists, page by page.
async fn all_keys(admin: std::net::SocketAddr) -> Vec<String> {
    let mut keys = Vec::new();
    for page in 1.. {
        let url = format!("http://{admin}/api/v1/connection?page={page}&size=1000");
        let (status, body) = get_json(&url).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap();
        keys.extend(items.iter().map(|c| c["key"].as_str().unwrap().to_owned()));
        if items.len() < 1000 {
            return keys;
        }
    }
    unreachable!()
}

/// How many of `sc`'s connections hold a usable token.
async fn ready(sc: &Sidecar) -> usize {
    let (_, all) = get_json(&sc.admin_url("/api/v1/connections")).await;
    let all = all.as_array().unwrap();
    all.iter().filter(|c| c["state"] == "ready").count()
}

/// POSTs `body` to instantiate `kind` on the admin listener at `admin` → the status.
async fn create(
    client: &reqwest::Client,
    admin: std::net::SocketAddr,
    kind: &str,
    body: &Value,
) -> Option<u16> {
    let url = format!("http://{admin}/api/v1/connection/instantiate/{kind}");
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    Some(r.status().as_u16())
}

#[tokio::test]
#[ignore = "soak: 10,000 connections created, each fetching a token, and a restart (about a minute)"]
async fn ten_thousand_connections_come_back_after_a_restart_with_their_tokens() {
    const N: usize = 10_000;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = crate::runtime::config(dir.path(), echo.addr, STORE);
    let sc = Sidecar::start_in(dir, &yaml, Default::default()).await;
    let next = Arc::new(Mutex::new(0..N));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, admin) = (Arc::clone(&next), sc.admin);
            let secrets = crate::runtime::secrets(echo.addr, tokens.addr, "id");
            tokio::spawn(async move {
                let client = client();
                loop {
                    let Some(i) = next.lock().unwrap().next() else {
                        return;
                    };
                    let body = json!({"instance_key": format!("c{i}"), "secrets": secrets});
                    assert_eq!(create(&client, admin, "test_api", &body).await, Some(200));
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    tokens.wait_count(N).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ready = ready(&sc).await;
        if ready == N {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ready} of {N} ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fetched = tokens.count();

    let sc = sc.restart(&yaml).await;
    assert_eq!(
        all_keys(sc.admin).await.len(),
        N + 1,
        "with the file's connection"
    );
    assert_eq!(
        ready(&sc).await,
        N,
        "every runtime connection has its stored token at once"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tokens.count(),
        fetched,
        "no token requested again after the restart"
    );
}

#[tokio::test]
async fn a_sigkill_during_a_burst_of_creates_loses_no_acknowledged_create() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!("{STORE}{}", templates());
    let mut sidecar = SidecarProcess::spawn(dir.path(), "burst", "", &body).await;
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3 {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|w| {
                let (acked, stop, admin) = (Arc::clone(&acked), stop.clone(), sidecar.admin);
                tokio::spawn(async move {
                    let client = client();
                    for i in 0.. {
                        let key = format!("r{round}-w{w}-{i}");
                        let body = json!({"instance_key": key, "secrets": {
                            "domain": format!("{key}.my.salesforce.com"),
                            "client_id": "id", "client_secret": "s", "redirect_uri": "https://tw.example/cb"}});
                        tokio::select! {
                            () = stop.cancelled() => return,
                            status = create(&client, admin, "salesforce", &body) => {
                                if status == Some(200) {
                                    acked.lock().unwrap().push(key);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let life = Duration::from_millis(rand::thread_rng().gen_range(300..900));
        tokio::time::sleep(life).await;
        sidecar.kill();
        stop.cancel();
        for w in workers {
            w.await.unwrap();
        }
        acknowledged.extend(acked.lock().unwrap().drain(..));
        sidecar.start().await;
        let listed = all_keys(sidecar.admin).await;
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|k| !listed.contains(k))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged creates lost after SIGKILL: {lost:?}",
            lost.len()
        );
        assert!(
            !acknowledged.is_empty(),
            "round {round}: nothing was created"
        );
    }
}
