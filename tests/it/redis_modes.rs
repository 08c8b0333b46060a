//! Redis as operators run it, against real `redis-server`s started by the tests (see
//! `support::redis_topology`): TLS with server verification, with and without a client
//! certificate; an ACL user holding exactly the minimal ACL `docs/scale-out.md` gives; what
//! tokenwarden says when the CA, the client certificate or a permission is wrong (the node
//! and the reason, never the password); the master the sentinels name, over TLS with ACL
//! users and a sentinel password; and `store.min_replicas_acked`: a rotated refresh token is
//! on the replica before it is used, and too few replicas are said (the set used all the same).
//!
//! The sentinel failover under load is in `redis_failover` (soak tier).

use crate::shared_store::{injected, wait_injected, STORE_KEY};
use crate::support::authz::{authorize, redeem};
use crate::support::logs::Logs;
use crate::support::redis_topology::{
    Acl, NodeOptions, Pki, RedisNode, SentinelOptions, Sentinels, Tls,
};
use crate::support::*;
use std::path::Path;
use std::time::Duration;

/// The password of the ACL user `tokenwarden` in these tests.
pub(crate) const ACL_PASSWORD: &str = "acl-pass-6f1d0c2b";
/// The sentinels' own password.
const SENTINEL_PASSWORD: &str = "sentinel-pass-41aa";

/// The minimal ACL of `docs/scale-out.md` (its `user tokenwarden …` line), with
/// [`ACL_PASSWORD`] as the password, and without `drop` (a command name) when given.
pub(crate) fn minimal_acl(drop: Option<&str>) -> String {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scale-out.md"))
            .unwrap();
    let line = docs
        .lines()
        .find(|l| l.starts_with("user tokenwarden "))
        .expect("docs/scale-out.md gives the minimal ACL as a `user tokenwarden …` line");
    let mut rules: Vec<&str> = line
        .strip_prefix("user ")
        .unwrap()
        .split_whitespace()
        .collect();
    if let Some(drop) = drop {
        let before = rules.len();
        let plus = format!("+{drop}");
        rules.retain(|r| *r != plus);
        assert_eq!(rules.len() + 1, before, "the minimal ACL has no {plus}");
    }
    let password = format!(">{ACL_PASSWORD}");
    rules
        .iter()
        .map(|r| {
            if r.starts_with('>') {
                password.as_str()
            } else {
                r
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `store:` section on Redis at `url` (short lease and poll) followed by `extra` (more
/// `store` fields, indented by two spaces).
fn store(url: &str, extra: &str) -> String {
    format!(
        "store:\n  backend: redis\n  url: \"{url}\"\n  key: \"{STORE_KEY}\"\n  lease_ttl: 5s\n  poll_interval: 500ms\n{extra}"
    )
}

/// `store.tls` with the CA at `ca` and, if `client`, the test PKI's client certificate.
fn tls(pki: &Pki, ca: &Path, client: bool) -> String {
    let mut text = format!("  tls:\n    ca_file: {}\n", ca.display());
    if client {
        text += &format!(
            "    cert_file: {}\n    key_file: {}\n",
            pki.client_cert().display(),
            pki.client_key().display()
        );
    }
    text
}

/// The token hash's `gen` of connection `key`, read on `node` (0: none).
async fn generation(node: &RedisNode, key: &str) -> u64 {
    let field = format!("tokenwarden:{{{key}}}:token");
    let gen: Option<String> = node.cmd(&[b"HGET", field.as_bytes(), b"gen"]).await;
    gen.map_or(0, |g| g.parse().unwrap())
}

/// Waits until `sidecar`'s store reports `state`, and returns its status.
async fn store_state(sidecar: &Sidecar, key: &str, state: &str) -> serde_json::Value {
    sidecar
        .wait_status(key, &format!("a store {state}"), |s| {
            s["store"]["state"] == state
        })
        .await
}

/// Starts a sidecar on the `store:` section `section` with one client-credentials
/// connection, waits until its store is degraded, and checks that the store's `last_error`
/// names `endpoint` and `reason`, and that neither the logs nor the status hold `password`.
pub(crate) async fn refused_with(section: &str, endpoint: &str, reason: &str, password: &str) {
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let config = format!(
        "{section}{}",
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let (logs, _capture) = Logs::capture();
    let sidecar = Sidecar::start(&config).await;
    let status = store_state(&sidecar, "api", "degraded").await;
    let error = status["store"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(endpoint) && error.contains(reason),
        "names {endpoint} and `{reason}`: {error}"
    );
    logs.assert_free_of(&[("Redis password", password)]);
    assert!(!status.to_string().contains(password), "{status}");
}

/// `nodes:` entries for sentinels on `ports` of 127.0.0.1.
pub(crate) fn sentinel_nodes(ports: &[u16]) -> String {
    let nodes: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    nodes.join(", ")
}

#[tokio::test]
async fn tls_verifies_the_server_and_presents_a_client_certificate() {
    let pki = Pki::mint();
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    for auth_clients in [false, true] {
        let node = RedisNode::start(NodeOptions::default().tls(&pki, auth_clients)).await;
        let config = format!(
            "{}{}",
            store(&node.url(), &tls(&pki, &pki.ca_pem(), auth_clients)),
            connections(&[cc_conn("api", echo.addr, tokens.addr)])
        );
        let sidecar = Sidecar::start(&config).await;
        sidecar.wait_state("api", "ready").await;
        assert!(
            generation(&node, "api").await >= 1,
            "the token set is in the TLS Redis (client certificate: {auth_clients})"
        );
        assert!(injected(&sidecar, "api").await.is_some());
        let status = sidecar.status("api").await;
        assert_eq!(status["store"]["state"], "ok", "{status}");
    }
}

#[tokio::test]
async fn a_wrong_ca_or_a_missing_client_certificate_is_named_with_the_node() {
    let pki = Pki::mint();
    let node = RedisNode::start(NodeOptions::default().tls(&pki, true)).await;
    let endpoint = format!("localhost:{}", node.tls_port());
    let cases = [
        (
            tls(&pki, &pki.wrong_ca_pem(), true),
            "TLS: the server's certificate is not signed by an authority tokenwarden trusts",
        ),
        // The server ends the handshake when it shows no certificate.
        (
            tls(&pki, &pki.ca_pem(), false),
            "TLS: the server ended the TLS handshake (CertificateRequired alert)",
        ),
    ];
    for (tls, reason) in cases {
        let extra = format!("{tls}  username: tokenwarden\n  password: {ACL_PASSWORD}\n");
        refused_with(&store(&node.url(), &extra), &endpoint, reason, ACL_PASSWORD).await;
    }
}

#[tokio::test]
async fn the_minimal_acl_of_the_docs_is_enough_for_everything() {
    let acl = Acl::new().user(&minimal_acl(None));
    let node = RedisNode::start(NodeOptions::default().acl(acl)).await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, format!("{ACL_PASSWORD}\n")).unwrap();
    let section = store(
        &node.url(),
        &format!(
            "  username: tokenwarden\n  password_file: {}\n",
            password_file.display()
        ),
    );
    let (logs, _capture) = Logs::capture();

    // Runtime connections, per-user grants imported, listed, deleted with the connection.
    crate::runtime_grants::per_user_instances(&section).await;

    // A client-credentials grant under the lease, an authorization through a state,
    // rotated refresh tokens, and a second replica following both.
    let echo = Echo::start().await;
    let cc_tokens = TokenServer::start(Reply::token(3, false)).await;
    let code_tokens = TokenServer::start(Reply::token(3600, true)).await;
    let config = format!(
        "{section}{}",
        connections(&[
            cc_conn("api", echo.addr, cc_tokens.addr),
            fixture_authcode("crm", echo.addr, Some(code_tokens.addr), true),
        ])
    );
    let a = Sidecar::start(&config).await;
    let b = Sidecar::start(&config).await;
    let auth = authorize(&a, "crm").await;
    assert_eq!(redeem(&b, "the-code", &auth.state).await.status, 200);
    wait_injected(&a, "crm", "Bearer tok-1").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while generation(&node, "api").await < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client-credentials refreshes under the minimal ACL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for sidecar in [&a, &b] {
        let status = sidecar.status("api").await;
        assert_eq!(status["store"]["state"], "ok", "{status}");
        assert!(injected(sidecar, "api").await.is_some());
    }
    let text = logs.text();
    for refusal in ["NOPERM", "NoPerm", "NOAUTH", "WRONGPASS", "degraded"] {
        assert!(!text.contains(refusal), "{refusal} in the logs:\n{text}");
    }
    logs.assert_free_of(&[("Redis password", ACL_PASSWORD)]);
}

#[tokio::test]
async fn an_acl_user_missing_one_command_is_told_which() {
    let acl = Acl::new().user(&minimal_acl(Some("evalsha")));
    let node = RedisNode::start(NodeOptions::default().acl(acl)).await;
    let section = store(
        &node.url(),
        &format!("  username: tokenwarden\n  password: \"{ACL_PASSWORD}\"\n"),
    );
    let endpoint = format!("127.0.0.1:{}", node.port());
    refused_with(&section, &endpoint, "'evalsha' command", ACL_PASSWORD).await;
}

#[tokio::test]
async fn the_master_is_found_through_tls_sentinels_with_acl_users_and_a_sentinel_password() {
    let pki = Pki::mint();
    let acl = Acl::new().user(&minimal_acl(None));
    let sentinels = Sentinels::start(SentinelOptions {
        tls: Some(Tls {
            pki: pki.clone(),
            auth_clients: true,
        }),
        acl: Some(acl),
        sentinel_password: Some(SENTINEL_PASSWORD.to_owned()),
        ..SentinelOptions::default()
    })
    .await;
    let nodes: Vec<String> = sentinels
        .sentinel_tls_ports()
        .iter()
        .map(|p| format!("\"localhost:{p}\""))
        .collect();
    let extra = format!(
        "{}  username: tokenwarden\n  password: \"{ACL_PASSWORD}\"\n  sentinel:\n    master_name: {}\n    nodes: [{}]\n    password: \"{SENTINEL_PASSWORD}\"\n",
        tls(&pki, &pki.ca_pem(), true),
        sentinels.master_name(),
        nodes.join(", ")
    );
    let section = format!(
        "store:\n  backend: redis\n  key: \"{STORE_KEY}\"\n  lease_ttl: 5s\n  poll_interval: 500ms\n{extra}"
    );
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let config = format!(
        "{section}{}",
        connections(&[fixture_authcode("crm", echo.addr, Some(tokens.addr), true)])
    );
    let (logs, _capture) = Logs::capture();
    let sidecar = Sidecar::start(&config).await;
    let auth = authorize(&sidecar, "crm").await;
    assert_eq!(redeem(&sidecar, "the-code", &auth.state).await.status, 200);
    wait_injected(&sidecar, "crm", "Bearer tok-1").await;

    let master = sentinels.node(sentinels.current_master_port().await);
    assert_eq!(generation(master, "crm").await, 1, "written on the master");
    let status = sidecar.status("crm").await;
    assert_eq!(status["store"]["state"], "ok", "{status}");
    let replica = sentinels
        .nodes()
        .iter()
        .find(|n| n.port() != master.port())
        .unwrap();
    // min_replicas_acked defaults to 1 with sentinels: the grant was on the replica before
    // the callback answered.
    assert_eq!(generation(replica, "crm").await, 1, "held by the replica");
    logs.assert_free_of(&[
        ("Redis password", ACL_PASSWORD),
        ("sentinel password", SENTINEL_PASSWORD),
    ]);
}

/// The only name on the certificate of a [`Pki::mint_named`] node: none of its addresses.
const NAMED: &str = "redis.tokenwarden.test";

/// `tls` with `server_name` under it.
fn named(tls: &str, server_name: &str) -> String {
    format!("{tls}    server_name: {server_name}\n")
}

#[tokio::test]
async fn a_server_name_verifies_a_node_reached_at_an_address_not_on_its_certificate() {
    let pki = Pki::mint_named(NAMED);
    let acl = Acl::new().user(&minimal_acl(None));
    let node = RedisNode::start(NodeOptions::default().tls(&pki, true).acl(acl)).await;
    let url = format!("rediss://127.0.0.1:{}/0", node.tls_port());
    let endpoint = format!("127.0.0.1:{}", node.tls_port());
    let user = format!("  username: tokenwarden\n  password: {ACL_PASSWORD}\n");
    let client_tls = tls(&pki, &pki.ca_pem(), true);
    // Verified against the URL's host, or against another name: refused, naming the node.
    for tls in [
        client_tls.clone(),
        named(&client_tls, "other.tokenwarden.test"),
    ] {
        let section = store(&url, &format!("{tls}{user}"));
        let reason = "TLS: the server's certificate is not valid for this host name";
        refused_with(&section, &endpoint, reason, ACL_PASSWORD).await;
    }

    // Against the name on its certificate: served.
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let section = store(&url, &format!("{}{user}", named(&client_tls, NAMED)));
    let config = format!(
        "{section}{}",
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let sidecar = Sidecar::start(&config).await;
    sidecar.wait_state("api", "ready").await;
    assert!(
        generation(&node, "api").await >= 1,
        "the token set is in Redis"
    );
    assert!(injected(&sidecar, "api").await.is_some());
    let status = sidecar.status("api").await;
    assert_eq!(status["store"]["state"], "ok", "{status}");

    // `check` says which name is verified.
    let dir = tempfile::tempdir().unwrap();
    let file = crate::cli::write(dir.path(), "config.yaml", &config);
    let out = crate::cli::binary()
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let said =
        format!("TLS with CA file, client certificate, server name {NAMED}, user tokenwarden");
    assert!(stdout.contains(&said), "{stdout}");

    // The name is the one sent as SNI (a listener reading the ClientHello only).
    let hello = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "rediss://127.0.0.1:{}/0",
        hello.local_addr().unwrap().port()
    );
    let sni = tokio::spawn(async move {
        let (socket, _) = hello.accept().await.unwrap();
        let acceptor = rustls::server::Acceptor::default();
        let start = tokio_rustls::LazyConfigAcceptor::new(acceptor, socket)
            .await
            .unwrap();
        start.client_hello().server_name().map(str::to_owned)
    });
    let section = store(&url, &format!("{}{user}", named(&client_tls, NAMED)));
    let config = format!(
        "{section}{}",
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let _sidecar = Sidecar::start(&config).await;
    let sent = tokio::time::timeout(WAIT, sni).await.unwrap().unwrap();
    assert_eq!(sent.as_deref(), Some(NAMED));
}

#[tokio::test]
async fn a_server_name_verifies_the_master_the_sentinels_name_by_address() {
    let pki = Pki::mint_named(NAMED);
    let sentinels = Sentinels::start(SentinelOptions {
        tls: Some(Tls {
            pki: pki.clone(),
            auth_clients: true,
        }),
        ..SentinelOptions::default()
    })
    .await;
    // Reached at 127.0.0.1 over TLS, the sentinels name the master by its address too.
    let sentinel = |server_name: &str| {
        format!(
            "{}  sentinel:\n    master_name: {}\n    nodes: [{}]\n",
            named(&tls(&pki, &pki.ca_pem(), true), server_name),
            sentinels.master_name(),
            sentinel_nodes(&sentinels.sentinel_tls_ports())
        )
    };
    let section = |extra: String| {
        format!(
            "store:\n  backend: redis\n  key: \"{STORE_KEY}\"\n  lease_ttl: 5s\n  poll_interval: 500ms\n{extra}"
        )
    };
    let master = sentinels.current_master_port().await;
    refused_with(
        &section(sentinel("other.tokenwarden.test")),
        "master mymaster (sentinels)",
        "TLS: the server's certificate is not valid for this host name",
        "no password here",
    )
    .await;

    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let config = format!(
        "{}{}",
        section(sentinel(NAMED)),
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let sidecar = Sidecar::start(&config).await;
    sidecar.wait_state("api", "ready").await;
    let master = sentinels.node(master);
    assert!(
        generation(master, "api").await >= 1,
        "written on the master"
    );
    let status = sidecar.status("api").await;
    assert_eq!(status["store"]["state"], "ok", "{status}");
}

#[tokio::test]
async fn sentinels_that_never_answer_are_passed_over_for_one_that_does() {
    let sentinels = Sentinels::start(SentinelOptions::default()).await;
    // Listed first, a "sentinel" that takes connections and never answers: it costs the
    // first lookup the per-sentinel bound (4 s), and no later one (a bound on the whole
    // lookup would end every lookup there).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ports = vec![silent.local_addr().unwrap().port()];
    ports.extend(sentinels.sentinel_ports());
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let config = format!(
        "store:\n  backend: redis\n  key: \"{STORE_KEY}\"\n  lease_ttl: 5s\n  poll_interval: 500ms\n  sentinel:\n    master_name: {}\n    nodes: [{}]\n{}",
        sentinels.master_name(),
        sentinel_nodes(&ports),
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let sidecar = Sidecar::start(&config).await;
    sidecar.wait_state("api", "ready").await;
    let status = store_state(&sidecar, "api", "ok").await;
    let master = sentinels.node(sentinels.current_master_port().await);
    assert!(
        generation(master, "api").await >= 1,
        "written on the master: {status}"
    );
    drop(silent);
}

#[tokio::test]
async fn a_rotated_refresh_token_is_on_the_replica_before_it_is_used() {
    let master = RedisNode::start(NodeOptions::default()).await;
    let replica = RedisNode::start(NodeOptions::default().replica_of(&master)).await;
    let echo = Echo::start().await;
    // 2 s tokens, rotating: a refresh every second or so.
    let tokens = TokenServer::start(Reply::token(2, true)).await;
    let config = format!(
        "{}{}",
        store(&master.url(), "  min_replicas_acked: 1\n"),
        connections(&[fixture_authcode("crm", echo.addr, Some(tokens.addr), true)])
    );
    let sidecar = Sidecar::start(&config).await;
    let auth = authorize(&sidecar, "crm").await;
    assert_eq!(redeem(&sidecar, "the-code", &auth.state).await.status, 200);
    // Each token the sidecar injects was on the replica before it was used.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut checked = 0;
    let mut last = None;
    while checked < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "too few refreshes: {}",
            sidecar.status("crm").await
        );
        // The fake's n-th token `tok-n` is the grant's generation n.
        let used = injected(&sidecar, "crm")
            .await
            .and_then(|t| t.strip_prefix("Bearer tok-")?.parse::<u64>().ok());
        if let Some(used) = used.filter(|u| Some(*u) != last) {
            let on_replica = generation(&replica, "crm").await;
            assert!(
                on_replica >= used,
                "generation {used} is in use, the replica holds {on_replica}"
            );
            last = Some(used);
            checked += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn too_few_replicas_are_said_and_the_set_used_all_the_same() {
    let master = RedisNode::start(NodeOptions::default()).await;
    let _replica = RedisNode::start(NodeOptions::default().replica_of(&master)).await;
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let config = format!(
        "{}{}",
        store(&master.url(), "  min_replicas_acked: 2\n"),
        connections(&[fixture_authcode("crm", echo.addr, Some(tokens.addr), true)])
    );
    let (logs, _capture) = Logs::capture();
    let sidecar = Sidecar::start(&config).await;
    let auth = authorize(&sidecar, "crm").await;
    let started = tokio::time::Instant::now();
    assert_eq!(redeem(&sidecar, "the-code", &auth.state).await.status, 200);
    // Used here (and announced) all the same, after one bounded wait.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    wait_injected(&sidecar, "crm", "Bearer tok-1").await;
    let status = sidecar.status("crm").await;
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("1 of 2 replicas")),
        "{status}"
    );
    assert!(
        logs.text()
            .contains("fewer Redis replicas than store.min_replicas_acked"),
        "{}",
        logs.text()
    );
    assert_eq!(generation(&master, "crm").await, 1);
}

#[tokio::test]
async fn a_wrong_password_or_master_name_is_named_never_the_password() {
    let wrong = "not-the-password-93e1";
    let acl = Acl::new().user(&minimal_acl(None));
    let node = RedisNode::start(NodeOptions::default().acl(acl)).await;
    let section = store(
        &node.url(),
        &format!("  username: tokenwarden\n  password: \"{wrong}\"\n"),
    );
    let endpoint = format!("127.0.0.1:{}", node.port());
    refused_with(&section, &endpoint, "Password authentication failed", wrong).await;

    let sentinels = Sentinels::start(SentinelOptions::default()).await;
    let section = format!(
        "store:\n  backend: redis\n  key: \"{STORE_KEY}\"\n  lease_ttl: 5s\n  poll_interval: 500ms\n  password: \"{wrong}\"\n  sentinel:\n    master_name: no-such-master\n    nodes: [{}]\n",
        sentinel_nodes(&sentinels.sentinel_ports())
    );
    refused_with(
        &section,
        "master no-such-master (sentinels)",
        "not found",
        wrong,
    )
    .await;
}
