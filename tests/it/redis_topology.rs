//! The Redis topologies of `support::redis_topology` are what they claim to be: TLS nodes
//! (trusting only their CA, with and without client certificates), ACL users, replication
//! over TLS, persistence across a SIGKILL, sentinels whose failover keeps an acknowledged
//! write, and a cluster that comes back whole after a node's SIGKILL and restart. Checked
//! with `redis-cli` and the tests' admin client.

use crate::support::redis_topology::{
    Acl, Cluster, NodeOptions, Pki, RedisNode, SentinelOptions, Sentinels, Tls, ADMIN_USER,
};
use crate::support::WAIT;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

/// How long a failover may take in these tests.
const FAILOVER_WAIT: Duration = Duration::from_secs(15);
/// How long a restarted old master may take to be made a replica (sentinels wait 8 s).
const DEMOTION_WAIT: Duration = Duration::from_secs(20);

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

/// `--user admin --pass <password> --no-auth-warning`.
fn as_admin(password: &str) -> Vec<String> {
    [
        "--user",
        ADMIN_USER,
        "--pass",
        password,
        "--no-auth-warning",
    ]
    .map(str::to_owned)
    .to_vec()
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

/// Writes `key` on the master of `set`, waits for the replica to acknowledge it, kills the
/// master and waits for the failover; checks the key on the new master and returns its port.
async fn fail_over_keeping(set: &mut Sentinels, key: &[u8]) -> u16 {
    let old = set.current_master_port().await;
    let master = set.node(old);
    let _: () = master.cmd(&[b"SET", key, b"before the failover"]).await;
    let acked: i64 = master.cmd(&[b"WAIT", b"1", b"1000"]).await;
    assert_eq!(acked, 1, "the replica acknowledged the write");

    let started = Instant::now();
    assert_eq!(set.kill_master().await, old);
    let new = set.wait_for_failover(old, FAILOVER_WAIT).await;
    eprintln!("failover took {:?}", started.elapsed());
    let value: Option<String> = set.node(new).cmd(&[b"GET", key]).await;
    assert_eq!(value.as_deref(), Some("before the failover"));
    new
}

#[tokio::test]
async fn sentinels_fail_over_to_the_replica_keeping_acknowledged_writes() {
    let mut set = Sentinels::start(SentinelOptions::default()).await;
    let (master, replica) = (set.nodes()[0].port(), set.nodes()[1].port());
    assert_eq!(set.master_name(), "mymaster");
    assert_eq!(set.sentinel_ports().len(), 3);
    assert!(set.sentinel_tls_ports().is_empty());
    assert_eq!(set.current_master_port().await, master);
    assert_eq!(set.node(master).role().await.unwrap(), "master");
    assert_eq!(set.node(replica).role().await.unwrap(), "slave");

    let new = fail_over_keeping(&mut set, b"tokenwarden:{x}:token").await;
    assert_eq!(new, replica);
    assert!(set.node(master).pid().is_none(), "the old master is dead");

    // Back, the old master starts as a master (its config never learnt of the failover)
    // until a sentinel turns it into a replica of the new one: sentinels let an instance
    // claim the wrong role for 8 s (4 hello periods) before they reconfigure it. All along,
    // they name the new master.
    let started = Instant::now();
    set.node_mut(master).restart().await;
    assert_eq!(set.node(master).role().await.unwrap(), "master");
    // (A sentinel reconfiguring it kills its clients' connections, `CLIENT KILL`: a reset
    // connection means not yet.)
    while set.node(master).role().await.ok().as_deref() != Some("slave") {
        assert_eq!(set.current_master_port().await, new);
        assert!(
            started.elapsed() < DEMOTION_WAIT,
            "the old master was not made a replica within {DEMOTION_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "old master demoted {:?} after its restart",
        started.elapsed()
    );
    assert_eq!(set.current_master_port().await, new);
    let info: String = set.node(master).cmd(&[b"INFO", b"replication"]).await;
    assert!(info.contains(&format!("master_port:{new}\r\n")), "{info}");
}

#[tokio::test]
async fn sentinels_with_tls_acl_and_a_password_fail_over() {
    let pki = Pki::mint();
    let acl = Acl::new();
    let mut set = Sentinels::start(SentinelOptions {
        master_name: "tw-master".to_owned(),
        tls: Some(Tls {
            pki: pki.clone(),
            auth_clients: true,
        }),
        acl: Some(acl.clone()),
        sentinel_password: Some("sentinel-secret".to_owned()),
    })
    .await;
    let (master, replica) = (set.nodes()[0].tls_port(), set.nodes()[1].tls_port());
    // The sentinels report the data nodes' TLS ports: what the master sees the replica
    // announce, and what they were told to monitor.
    assert_eq!(set.current_master_port().await, master);
    let name = set.master_name().as_bytes();
    let peers: Vec<Vec<String>> = set
        .sentinel_cmd(0, &[b"SENTINEL", b"SENTINELS", name])
        .await;
    let replicas: Vec<Vec<String>> = set.sentinel_cmd(0, &[b"SENTINEL", b"REPLICAS", name]).await;
    // Sentinels announce (and reach) each other and the replica on TLS ports too.
    let port_of =
        |flat: &Vec<String>| flat[flat.iter().position(|f| f == "port").unwrap() + 1].clone();
    let tls_ports: Vec<String> = set
        .sentinel_tls_ports()
        .iter()
        .map(u16::to_string)
        .collect();
    assert_eq!(peers.len(), 2);
    assert!(
        peers.iter().all(|p| tls_ports.contains(&port_of(p))),
        "{peers:?}"
    );
    assert_eq!(replicas.len(), 1);
    assert_eq!(port_of(&replicas[0]), replica.to_string());

    // The sentinels want their password, on the plain port and on the TLS one.
    let port = set.sentinel_ports()[0];
    let anonymous = ping(&format!("redis://127.0.0.1:{port}")).await;
    assert!(
        matches!(&anonymous, Err(e) if e.code() == Some("NOAUTH")),
        "{anonymous:?}"
    );
    let tls_port = set.sentinel_tls_ports()[0];
    let ask = ["SENTINEL", "get-master-addr-by-name", "tw-master"];
    let mut args = vec!["-a".to_owned(), set.sentinel_password().unwrap().to_owned()];
    args.push("--no-auth-warning".to_owned());
    args.extend(tls_cli(&pki, &pki.ca_pem(), true, tls_port, &ask));
    let over_tls = redis_cli(&args).await;
    assert_eq!(
        over_tls.out.split_whitespace().collect::<Vec<_>>(),
        ["127.0.0.1", &master.to_string()],
        "{}",
        over_tls.out
    );

    let new = fail_over_keeping(&mut set, b"tokenwarden:{y}:token").await;
    assert_eq!(new, replica);

    // The product's way in: TLS with a client certificate, as an ACL user.
    let mut args = as_admin(acl.admin_password());
    let get = ["GET", "tokenwarden:{y}:token"];
    args.extend(tls_cli(&pki, &pki.ca_pem(), true, new, &get));
    let got = redis_cli(&args).await;
    assert_eq!(got.out.trim(), "before the failover");
}

#[tokio::test]
async fn cluster_is_ok_routes_keys_and_keeps_them_across_a_restart() {
    let mut cluster = Cluster::start(NodeOptions::default()).await;
    let ports: Vec<u16> = (0..3).map(|i| cluster.node(i).plain_port()).collect();
    assert_eq!(
        cluster.nodes(),
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
    );

    let key = "tokenwarden:{x}:token";
    let i = cluster.node_for_key(key).await;
    let slot: i64 = cluster
        .cmd(0, &[b"CLUSTER", b"KEYSLOT", key.as_bytes()])
        .await;
    let tag: i64 = cluster.cmd(0, &[b"CLUSTER", b"KEYSLOT", b"x"]).await;
    assert_eq!(slot, tag, "the hash tag decides the slot");
    // The node picked serves the key; another answers MOVED to it.
    let _: () = cluster.cmd(i, &[b"SET", key.as_bytes(), b"kept"]).await;
    let other = (i + 1) % 3;
    let moved: redis::RedisResult<()> = cluster
        .node(other)
        .try_cmd(&[b"SET", key.as_bytes(), b"v"])
        .await;
    let expected = format!("{slot} 127.0.0.1:{}", ports[i]);
    assert!(
        matches!(&moved, Err(e) if e.to_string().contains(&expected)),
        "MOVED {expected}: {moved:?}"
    );
    // Every slot has exactly one node: keys spread over all three.
    let mut seen = [false; 3];
    for k in 0..64 {
        seen[cluster.node_for_key(&format!("k{k}")).await] = true;
    }
    assert_eq!(seen, [true; 3]);

    // Acknowledged (appendfsync always; no replica to WAIT for), then SIGKILL and back.
    let replicas: i64 = cluster.cmd(i, &[b"WAIT", b"0", b"0"]).await;
    assert_eq!(replicas, 0);
    let pid = cluster.node(i).pid();
    let started = Instant::now();
    cluster.restart(i).await;
    eprintln!("cluster restart took {:?}", started.elapsed());
    assert_ne!(cluster.node(i).pid(), pid);
    assert!(cluster.node(i).dir().join("nodes.conf").exists());
    assert_eq!(cluster.node(i).plain_port(), ports[i]);
    assert_eq!(cluster.node_for_key(key).await, i);
    let value: Option<String> = cluster.cmd(i, &[b"GET", key.as_bytes()]).await;
    assert_eq!(value.as_deref(), Some("kept"));
}

#[tokio::test]
async fn tls_acl_cluster_redirects_tls_clients_to_tls_ports() {
    let pki = Pki::mint();
    let acl = Acl::new();
    let cluster = Cluster::start(NodeOptions::default().tls(&pki, false).acl(acl.clone())).await;
    let tls: Vec<u16> = (0..3).map(|i| cluster.node(i).tls_port()).collect();
    assert_eq!(
        cluster.nodes(),
        tls.iter()
            .map(|p| format!("rediss://localhost:{p}"))
            .collect::<Vec<_>>()
    );

    let key = "tokenwarden:{z}:token";
    let i = cluster.node_for_key(key).await;
    let slot: i64 = cluster
        .cmd(0, &[b"CLUSTER", b"KEYSLOT", key.as_bytes()])
        .await;
    let other = (i + 1) % 3;
    // Over TLS, MOVED names the TLS port (over the plain port, the plain one).
    let mut args = as_admin(acl.admin_password());
    args.extend(tls_cli(
        &pki,
        &pki.ca_pem(),
        false,
        tls[other],
        &["SET", key, "v"],
    ));
    let moved = redis_cli(&args).await;
    assert_eq!(
        moved.out.trim(),
        format!("MOVED {slot} 127.0.0.1:{}", tls[i]),
        "{}",
        moved.out
    );
    // Following it (-c) lands the write on the node that serves the key.
    let mut args = as_admin(acl.admin_password());
    args.push("-c".to_owned());
    args.extend(tls_cli(
        &pki,
        &pki.ca_pem(),
        false,
        tls[other],
        &["SET", key, "v"],
    ));
    let set = redis_cli(&args).await;
    assert_eq!(set.out.trim(), "OK", "{}", set.out);
    let value: Option<String> = cluster.cmd(i, &[b"GET", key.as_bytes()]).await;
    assert_eq!(value.as_deref(), Some("v"));

    // The default user is off here too.
    let anonymous = ping(&format!(
        "redis://127.0.0.1:{}",
        cluster.node(i).plain_port()
    ))
    .await;
    assert!(anonymous.is_err(), "{anonymous:?}");
}
