//! The Redis topologies of `support::redis_topology` are what they claim to be: TLS nodes
//! (trusting only their CA, with and without client certificates), ACL users, replication
//! over TLS, persistence across a SIGKILL. Checked with `redis-cli` and the tests' admin
//! client.

use crate::support::redis_topology::{Acl, NodeOptions, Pki, RedisNode, ADMIN_USER};
use crate::support::WAIT;
use std::path::Path;
use std::process::Stdio;

/// What `redis-cli <args>` printed, and whether it succeeded.
struct Cli {
    ok: bool,
    out: String,
}

/// Runs `redis-cli <args>` (at most [`WAIT`]).
async fn redis_cli(args: &[String]) -> Cli {
    let run = tokio::process::Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("redis-cli {args:?}: no end within {WAIT:?}"))
        .expect("run redis-cli");
    Cli {
        ok: out.status.success(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `redis-cli` arguments for a TLS connection to `port` trusting `ca`, presenting the client
/// certificate of `pki` when `cert`, then `command`.
fn tls_cli(pki: &Pki, ca: &Path, cert: bool, port: u16, command: &[&str]) -> Vec<String> {
    let mut args = vec!["--tls".to_owned(), "--cacert".to_owned()];
    args.push(ca.display().to_string());
    if cert {
        args.push("--cert".to_owned());
        args.push(pki.client_cert().display().to_string());
        args.push("--key".to_owned());
        args.push(pki.client_key().display().to_string());
    }
    args.extend(["-h", "127.0.0.1", "-p"].map(str::to_owned));
    args.push(port.to_string());
    args.extend(command.iter().map(|s| (*s).to_owned()));
    args
}

/// `PING` on a fresh connection to `url`, as the `redis` crate sends it.
async fn ping(url: &str) -> redis::RedisResult<String> {
    let mut con = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("PING").query_async(&mut con).await
}

#[tokio::test]
async fn tls_node_answers_over_tls_and_refuses_a_wrong_ca() {
    let pki = Pki::mint();
    let node = RedisNode::start(NodeOptions::default().tls(&pki, false)).await;
    let port = node.tls_port();
    assert_eq!(node.url(), format!("rediss://localhost:{port}"));
    assert_ne!(port, node.plain_port());

    let good = redis_cli(&tls_cli(&pki, &pki.ca_pem(), false, port, &["PING"])).await;
    assert!(good.ok && good.out.trim() == "PONG", "{}", good.out);

    let wrong = redis_cli(&tls_cli(&pki, &pki.wrong_ca_pem(), false, port, &["PING"])).await;
    assert!(!wrong.out.contains("PONG"), "{}", wrong.out);
    assert!(
        wrong.out.contains("certificate verify failed"),
        "the handshake fails on the server's certificate: {}",
        wrong.out
    );

    // The plain port stays plain (the tests' client); the TLS port speaks only TLS.
    assert_eq!(node.cmd::<String>(&[b"PING"]).await, "PONG");
    assert!(ping(&format!("redis://127.0.0.1:{port}")).await.is_err());
}

#[tokio::test]
async fn tls_auth_clients_requires_a_client_certificate() {
    let pki = Pki::mint();
    let node = RedisNode::start(NodeOptions::default().tls(&pki, true)).await;
    let port = node.tls_port();

    let anonymous = redis_cli(&tls_cli(&pki, &pki.ca_pem(), false, port, &["PING"])).await;
    assert!(
        !anonymous.ok && !anonymous.out.contains("PONG"),
        "{}",
        anonymous.out
    );

    let with_cert = redis_cli(&tls_cli(&pki, &pki.ca_pem(), true, port, &["PING"])).await;
    assert!(
        with_cert.ok && with_cert.out.trim() == "PONG",
        "{}",
        with_cert.out
    );

    let wrong = redis_cli(&tls_cli(&pki, &pki.wrong_ca_pem(), true, port, &["PING"])).await;
    assert!(!wrong.out.contains("PONG"), "{}", wrong.out);
}

#[tokio::test]
async fn acl_node_refuses_the_default_user_and_accepts_admin_and_its_users() {
    let acl = Acl::new().user("tokenwarden on >tw-secret ~tokenwarden:* &tokenwarden:* +@all");
    let node = RedisNode::start(NodeOptions::default().acl(acl.clone())).await;
    let port = node.plain_port();
    assert_eq!(node.admin_password(), Some(acl.admin_password()));

    let anonymous = ping(&format!("redis://127.0.0.1:{port}")).await;
    assert!(
        matches!(&anonymous, Err(e) if e.code() == Some("NOAUTH")),
        "the default user is off: {anonymous:?}"
    );
    let default = ping(&format!("redis://default:anything@127.0.0.1:{port}")).await;
    assert!(default.is_err(), "{default:?}");
    let wrong = ping(&format!("redis://{ADMIN_USER}:wrong@127.0.0.1:{port}")).await;
    assert!(wrong.is_err(), "{wrong:?}");

    assert_eq!(node.cmd::<String>(&[b"PING"]).await, "PONG");
    let users: Vec<String> = node.cmd(&[b"ACL", b"USERS"]).await;
    assert_eq!(users, ["admin", "default", "tokenwarden"]);

    // The extra user has exactly its rules: its keys, nothing else.
    let url = format!("redis://tokenwarden:tw-secret@127.0.0.1:{port}");
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("tokenwarden:{a}:token")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    let other: redis::RedisResult<()> = redis::cmd("SET")
        .arg("other")
        .arg("v")
        .query_async(&mut con)
        .await;
    assert!(
        matches!(&other, Err(e) if e.code() == Some("NOPERM")),
        "{other:?}"
    );

    // With a default password instead: the default user needs it.
    let node =
        RedisNode::start(NodeOptions::default().acl(Acl::new().default_password("dflt"))).await;
    let port = node.plain_port();
    assert!(ping(&format!("redis://127.0.0.1:{port}")).await.is_err());
    assert_eq!(
        ping(&format!("redis://:dflt@127.0.0.1:{port}"))
            .await
            .unwrap(),
        "PONG"
    );
}

#[tokio::test]
async fn replica_follows_its_master_over_tls_as_an_acl_user() {
    let pki = Pki::mint();
    let options = NodeOptions::default().tls(&pki, true).acl(Acl::new());
    let master = RedisNode::start(options.clone()).await;
    let replica = RedisNode::start(options.replica_of(&master)).await;
    assert_eq!(replica.role().await.unwrap(), "slave");
    let info: String = replica.cmd(&[b"INFO", b"replication"]).await;
    assert!(
        info.contains(&format!("master_port:{}\r\n", master.tls_port())),
        "replication runs over TLS: {info}"
    );

    let _: () = master.cmd(&[b"SET", b"k", b"v"]).await;
    let acked: i64 = master.cmd(&[b"WAIT", b"1", b"1000"]).await;
    assert_eq!(acked, 1);
    let value: Option<String> = replica.cmd(&[b"GET", b"k"]).await;
    assert_eq!(value.as_deref(), Some("v"));
    // The master lists the replica at the port it announced: its TLS port.
    let (role, _offset, replicas): (String, i64, Vec<(String, u16, String)>) =
        master.cmd(&[b"ROLE"]).await;
    assert_eq!(role, "master");
    assert_eq!(replicas.len(), 1);
    assert_eq!(
        (replicas[0].0.as_str(), replicas[0].1),
        ("127.0.0.1", replica.tls_port())
    );
}

#[tokio::test]
async fn persistent_node_keeps_fsynced_writes_across_sigkill_and_restart() {
    let mut node = RedisNode::start(NodeOptions::default().persistent()).await;
    let _: () = node.cmd(&[b"SET", b"k", b"v"]).await;
    let pid = node.pid();
    node.restart().await;
    assert_ne!(node.pid(), pid, "a new process");
    assert!(node.dir().join("appendonlydir").is_dir());
    let value: Option<String> = node.cmd(&[b"GET", b"k"]).await;
    assert_eq!(value.as_deref(), Some("v"));

    // Without persistence, the same restart comes back empty.
    let mut node = RedisNode::start(NodeOptions::default()).await;
    let _: () = node.cmd(&[b"SET", b"k", b"v"]).await;
    node.kill();
    assert_eq!(node.pid(), None);
    node.restart().await;
    let value: Option<String> = node.cmd(&[b"GET", b"k"]).await;
    assert_eq!(value, None);
}
