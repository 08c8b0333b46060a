//! Redis topologies for the tests of TLS, ACL users, Sentinel failover and Cluster, all on
//! loopback, each process stopped by its pid (on `Drop` too), with certificates minted at
//! test time:
//!
//! - [`Pki`]: a CA, a server certificate (DNS `localhost`, IP `127.0.0.1`; or one other
//!   name only, [`Pki::mint_named`]), a client certificate and an unrelated second CA, as
//!   PEM files in a temp dir;
//! - [`RedisNode`]: one `redis-server` configured by [`NodeOptions`] (TLS, ACL users,
//!   `replicaof`, append-only persistence, cluster mode);
//! - [`Sentinels`]: a master, its replica and three sentinels watching them;
//! - [`Cluster`]: three masters sharing the 16,384 slots.
//!
//! The tests' own client (the `redis` crate, built without TLS) always talks to a node's
//! plain port, bound to 127.0.0.1 and authenticated as [`ADMIN_USER`] when ACL is on; a
//! TLS node also listens on a TLS port, the one the product connects to ([`RedisNode::url`]).
//!
//! Needs Debian's `redis-server` and `redis-cli` (7.0, built with TLS; `tests/deps.sh`
//! installs them): without them the tests fail, never skip.

use super::redis::{free_port, INSTALL_HINT};
use super::WAIT;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use redis::{AsyncConnectionConfig, FromRedisValue, RedisResult};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The ACL user of the tests' admin client: every key, channel and command.
pub const ADMIN_USER: &str = "admin";
/// Longest wait for a cluster to report `cluster_state:ok` (after a restart, a master the
/// others had marked failing is cleared only 2 × [`CLUSTER_NODE_TIMEOUT_MS`] later).
pub const CLUSTER_WAIT: Duration = Duration::from_secs(20);
/// `cluster-node-timeout` of cluster nodes: short, so a node down is noticed (and cleared
/// when back) quickly, long enough not to flap on a loaded 2-core machine.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 3000;
/// Sentinels' `down-after-milliseconds`: long enough not to flap on a loaded 2-core machine
/// (at 1 s, the sentinels failed over a second time, unasked, in two CI runs of three).
pub const DOWN_AFTER_MS: u64 = 3000;
/// Sentinels' `failover-timeout`.
pub const FAILOVER_TIMEOUT_MS: u64 = 5000;
/// How long a response may take on the admin connection (`WAIT 1 1000` takes a second).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take on the admin connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two polls of a bounded wait.
const POLL: Duration = Duration::from_millis(50);
/// How many lines of a server's log a failure message quotes.
const LOG_TAIL: usize = 15;

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// Certificates minted with rcgen into a temp dir (PEM; keys in PKCS#8): a CA, a server
/// certificate it signed for DNS `localhost` and IP `127.0.0.1` (`serverAuth` and
/// `clientAuth`: Redis presents it as a client too, to its master and to other sentinels),
/// a client certificate it signed, and an unrelated CA for "wrong CA" tests. Valid from an
/// hour ago for a day.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Mints everything into a new temp dir.
    pub fn mint() -> Arc<Pki> {
        Pki::mint_for(
            "localhost",
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ],
        )
    }

    /// As [`Pki::mint`], but the server certificate is valid for the DNS name `name` only
    /// (not for `localhost` or `127.0.0.1`, where the nodes are).
    pub fn mint_named(name: &str) -> Arc<Pki> {
        Pki::mint_for(name, vec![SanType::DnsName(name.try_into().unwrap())])
    }

    /// Everything, the server certificate named `common_name` and valid for
    /// `server_names`.
    fn mint_for(common_name: &str, server_names: Vec<SanType>) -> Arc<Pki> {
        let dir = tempfile::tempdir().expect("tempdir for the test PKI");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem)
                .unwrap_or_else(|e| panic!("write {name}: {e}"));
        };
        let (ca_pem, ca) = mint_ca("tokenwarden test CA");
        write("ca.pem", ca_pem);
        let (wrong_pem, _) = mint_ca("tokenwarden unrelated test CA");
        write("wrong-ca.pem", wrong_pem);

        let mut server = leaf_params(common_name);
        server.subject_alt_names = server_names;
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        write("server.pem", server.signed_by(&key, &ca).unwrap().pem());
        write("server.key", key.serialize_pem());

        let mut client = leaf_params("tokenwarden test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        write("client.pem", client.signed_by(&key, &ca).unwrap().pem());
        write("client.key", key.serialize_pem());
        Arc::new(Pki { dir })
    }

    /// The CA certificate that signed the server and client certificates.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (DNS `localhost`, IP `127.0.0.1`).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server certificate's key (PKCS#8 PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The client certificate (`clientAuth`), signed by [`Pki::ca_pem`].
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client certificate's key (PKCS#8 PEM).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// A CA certificate that signed nothing here: trusting it, no handshake succeeds.
    pub fn wrong_ca_pem(&self) -> PathBuf {
        self.dir.path().join("wrong-ca.pem")
    }
}

/// A self-signed CA named `name`: its certificate PEM and its issuer.
fn mint_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = leaf_params(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, Issuer::new(params, key))
}

/// Parameters of a certificate named `name`, valid from an hour ago for a day.
fn leaf_params(name: &str) -> CertificateParams {
    let now = time::OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    params
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

/// TLS on a node: a TLS port beside the plain one, certificates from `pki`.
#[derive(Clone)]
pub struct Tls {
    /// Where the CA, server certificate and key come from.
    pub pki: Arc<Pki>,
    /// `tls-auth-clients yes`: a client must present a certificate signed by the CA.
    pub auth_clients: bool,
}

/// ACL users on a node, loaded from an aclfile before the port opens: [`ADMIN_USER`] (all
/// permissions, a random password), the `default` user (disabled unless given a password)
/// and the extra users.
#[derive(Clone)]
pub struct Acl {
    admin_password: String,
    default_password: Option<String>,
    users: Vec<String>,
}

impl Acl {
    /// An admin with a random password, `default` disabled, no other user.
    pub fn new() -> Acl {
        let bytes: [u8; 16] = rand::random();
        Acl {
            admin_password: bytes.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            }),
            default_password: None,
            users: Vec::new(),
        }
    }

    /// Adds a user from `ACL SETUSER`-style rules, name first (e.g. `"tokenwarden on
    /// >secret ~tokenwarden:* &tokenwarden:* +@all"`), applied to a fresh (reset) user.
    pub fn user(mut self, rules: &str) -> Acl {
        let name = rules.split_whitespace().next().unwrap_or_default();
        assert!(
            !name.is_empty() && name != "default" && name != ADMIN_USER,
            "Acl::user({rules:?}): name a user other than `default` and `{ADMIN_USER}`"
        );
        self.users.push(rules.to_owned());
        self
    }

    /// Leaves the `default` user on, with `password` and all permissions.
    pub fn default_password(mut self, password: &str) -> Acl {
        self.default_password = Some(password.to_owned());
        self
    }

    /// The password of [`ADMIN_USER`].
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// The aclfile's text.
    fn file(&self) -> String {
        let mut text = match &self.default_password {
            Some(p) => format!("user default on >{p} ~* &* +@all\n"),
            None => "user default off\n".to_owned(),
        };
        let _ = writeln!(
            text,
            "user {ADMIN_USER} on >{} ~* &* +@all",
            self.admin_password
        );
        for rules in &self.users {
            let _ = writeln!(text, "user {rules}");
        }
        text
    }
}

impl Default for Acl {
    fn default() -> Acl {
        Acl::new()
    }
}

/// The master a replica follows: its port (the TLS port when it has TLS: replication then
/// runs over TLS) and the credentials to replicate as (`masteruser`/`masterauth`).
#[derive(Clone)]
pub struct ReplicaOf {
    /// The master's port the replica connects to.
    pub port: u16,
    /// The master's [`ADMIN_USER`] password, when the master has ACL.
    pub admin_password: Option<String>,
}

impl ReplicaOf {
    /// Following `master`, over TLS when it has TLS, as its admin when it has ACL.
    pub fn node(master: &RedisNode) -> ReplicaOf {
        ReplicaOf {
            port: master.port(),
            admin_password: master.admin_password().map(str::to_owned),
        }
    }
}

/// How a [`RedisNode`] runs. The default: plain port only, no ACL, no persistence, not a
/// replica, not in a cluster.
#[derive(Clone, Default)]
pub struct NodeOptions {
    /// A TLS port beside the plain one (`tls-replication yes`, `tls-cluster yes`).
    pub tls: Option<Tls>,
    /// ACL users; the `default` user is disabled or password-protected.
    pub acl: Option<Acl>,
    /// `replicaof 127.0.0.1 <port>`; [`RedisNode::start`] then waits for the link to be up.
    pub replica_of: Option<ReplicaOf>,
    /// `appendonly yes`, `appendfsync always`: what was written survives a SIGKILL.
    pub persistent: bool,
    /// `cluster-enabled yes`, with its `nodes.conf` and a bus port of its own.
    pub cluster: bool,
}

impl NodeOptions {
    /// With TLS from `pki`, requiring client certificates when `auth_clients`.
    pub fn tls(mut self, pki: &Arc<Pki>, auth_clients: bool) -> NodeOptions {
        self.tls = Some(Tls {
            pki: Arc::clone(pki),
            auth_clients,
        });
        self
    }

    /// With ACL users.
    pub fn acl(mut self, acl: Acl) -> NodeOptions {
        self.acl = Some(acl);
        self
    }

    /// As a replica of `master`.
    pub fn replica_of(mut self, master: &RedisNode) -> NodeOptions {
        self.replica_of = Some(ReplicaOf::node(master));
        self
    }

    /// With append-only persistence (fsync at every write).
    pub fn persistent(mut self) -> NodeOptions {
        self.persistent = true;
        self
    }

    /// In cluster mode.
    pub fn cluster(mut self) -> NodeOptions {
        self.cluster = true;
        self
    }
}

// ---------------------------------------------------------------------------------------
// A node
// ---------------------------------------------------------------------------------------

/// One `redis-server` on loopback, configured by [`NodeOptions`] from a `redis.conf` in its
/// own temp dir (which also holds its log, aclfile, append-only files and `nodes.conf`).
/// The config file is written once: what Redis rewrites there (`CONFIG REWRITE`, as a
/// sentinel does after a failover) survives [`RedisNode::restart`]. Killed on drop.
pub struct RedisNode {
    options: NodeOptions,
    port: u16,
    tls_port: Option<u16>,
    bus_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisNode {
    /// Starts a node on free ports and waits (at most [`WAIT`]) until it answers; a replica
    /// also until its link to the master is up.
    pub async fn start(options: NodeOptions) -> RedisNode {
        let port = free_port();
        let tls_port = options.tls.as_ref().map(|_| other_free_port(&[port]));
        let bus_port = options
            .cluster
            .then(|| other_free_port(&[port, tls_port.unwrap_or(port)]));
        let dir = tempfile::tempdir().expect("tempdir for a redis node");
        let mut node = RedisNode {
            options,
            port,
            tls_port,
            bus_port,
            dir,
            child: None,
        };
        std::fs::write(node.dir.path().join("redis.conf"), node.config()).unwrap();
        if let Some(acl) = &node.options.acl {
            std::fs::write(node.dir.path().join("users.acl"), acl.file()).unwrap();
        }
        node.launch().await;
        if node.options.replica_of.is_some() {
            node.wait_replica_link().await;
        }
        node
    }

    /// The `redis.conf` of this node.
    fn config(&self) -> String {
        let dir = self.dir.path().display();
        let mut c = format!(
            "port {}\nbind 127.0.0.1\nprotected-mode yes\ndir {dir}\nlogfile {dir}/redis.log\n\
             save \"\"\nrepl-diskless-sync-delay 0\n",
            self.port
        );
        if self.options.persistent {
            c.push_str("appendonly yes\nappendfsync always\n");
        } else {
            c.push_str("appendonly no\n");
        }
        if let (Some(tls), Some(tls_port)) = (&self.options.tls, self.tls_port) {
            let pki = &tls.pki;
            let _ = write!(
                c,
                "tls-port {tls_port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients {}\ntls-replication yes\ntls-cluster yes\n",
                pki.server_cert().display(),
                pki.server_key().display(),
                pki.ca_pem().display(),
                if tls.auth_clients { "yes" } else { "no" },
            );
        }
        if self.options.acl.is_some() {
            let _ = writeln!(c, "aclfile {dir}/users.acl");
        }
        if let Some(master) = &self.options.replica_of {
            let _ = writeln!(c, "replicaof 127.0.0.1 {}", master.port);
            if let Some(password) = &master.admin_password {
                let _ = write!(c, "masteruser {ADMIN_USER}\nmasterauth {password}\n");
            }
        }
        if let Some(bus) = self.bus_port {
            let _ = write!(
                c,
                "cluster-enabled yes\ncluster-config-file {dir}/nodes.conf\ncluster-port {bus}\n\
                 cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}\n"
            );
        }
        c
    }

    /// Runs `redis-server` on the config file; waits until the process just started answers.
    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .arg(self.dir.path().join("redis.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}): {INSTALL_HINT}"));
        let pid = child.id();
        self.child = Some(child);
        let what = format!("redis-server on port {} (pid {pid})", self.port);
        let log = self.dir.path().join("redis.log");
        let url = self.admin_url();
        wait_for_process(&what, self.child.as_mut().unwrap(), &log, &url).await;
    }

    /// Waits (at most [`WAIT`]) until `INFO replication` says `master_link_status:up`.
    async fn wait_replica_link(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let info: String = self.cmd(&[b"INFO", b"replication"]).await;
            if info.contains("master_link_status:up") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica on port {}: no link to its master within {WAIT:?}:\n{info}\n{}",
                self.port,
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The plain port, bound to 127.0.0.1: the tests' admin client's (authenticated as
    /// [`ADMIN_USER`] when ACL is on).
    pub fn plain_port(&self) -> u16 {
        self.port
    }

    /// The TLS port (panics when the node has no TLS).
    pub fn tls_port(&self) -> u16 {
        self.tls_port
            .unwrap_or_else(|| panic!("redis node on port {} has no TLS", self.port))
    }

    /// The port the product connects to: the TLS port when TLS is on, else the plain port.
    /// It is also what the node announces as a replica and, to clients on that port, in
    /// `CLUSTER SLOTS`, `CLUSTER NODES` and `MOVED`.
    pub fn port(&self) -> u16 {
        self.tls_port.unwrap_or(self.port)
    }

    /// The product's URL: `rediss://localhost:<tls_port>` when TLS is on, else
    /// `redis://127.0.0.1:<port>` (no credentials).
    pub fn url(&self) -> String {
        match self.tls_port {
            Some(port) => format!("rediss://localhost:{port}"),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The admin client's URL: the plain port, with [`ADMIN_USER`]'s credentials when ACL
    /// is on.
    pub fn admin_url(&self) -> String {
        match self.admin_password() {
            Some(p) => format!("redis://{ADMIN_USER}:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// [`ADMIN_USER`]'s password when ACL is on.
    pub fn admin_password(&self) -> Option<&str> {
        self.options.acl.as_ref().map(Acl::admin_password)
    }

    /// The node's directory (config, log, aclfile, append-only files, `nodes.conf`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of the running server (None once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL by pid) and waits for it to exit; nothing is flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it (if running) and starts it again on the same ports, config, data dir and
    /// cluster config; waits (at most [`WAIT`]) until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    /// Runs one admin command on the plain port (panics on an error reply).
    pub async fn cmd<T: FromRedisValue>(&self, args: &[&[u8]]) -> T {
        self.try_cmd(args).await.unwrap_or_else(|e| {
            panic!(
                "redis {:?} on port {}: {e}",
                String::from_utf8_lossy(args[0]),
                self.port
            )
        })
    }

    /// Runs one admin command on the plain port; errors (a dead node, an error reply)
    /// are handed back.
    pub async fn try_cmd<T: FromRedisValue>(&self, args: &[&[u8]]) -> RedisResult<T> {
        query(&self.admin_url(), args).await
    }

    /// The first element of `ROLE`: `master`, `slave` (a replica) or `sentinel`.
    pub async fn role(&self) -> RedisResult<String> {
        let role: Vec<redis::Value> = self.try_cmd(&[b"ROLE"]).await?;
        Ok(match role.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            other => format!("{other:?}"),
        })
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("redis.log"))
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Sentinels
// ---------------------------------------------------------------------------------------

/// How [`Sentinels`] run.
#[derive(Clone)]
pub struct SentinelOptions {
    /// The monitored master's name (`mymaster` by default).
    pub master_name: String,
    /// TLS on the data nodes; the sentinels then reach them (and each other) over TLS,
    /// presenting the server certificate, and listen on a TLS port too (requiring a client
    /// certificate there as well when `auth_clients`).
    pub tls: Option<Tls>,
    /// ACL users on the data nodes (the sentinels use `auth-user admin`).
    pub acl: Option<Acl>,
    /// `requirepass` of the sentinels themselves (they also use it with each other).
    pub sentinel_password: Option<String>,
}

impl Default for SentinelOptions {
    fn default() -> SentinelOptions {
        SentinelOptions {
            master_name: "mymaster".to_owned(),
            tls: None,
            acl: None,
            sentinel_password: None,
        }
    }
}

/// One sentinel process.
struct Sentinel {
    port: u16,
    tls_port: Option<u16>,
    child: Option<Child>,
}

/// A master, one replica of it, and three sentinels monitoring the master (quorum 2,
/// [`DOWN_AFTER_MS`], [`FAILOVER_TIMEOUT_MS`], `parallel-syncs 1`, `resolve-hostnames
/// no`). [`Sentinels::start`] returns once every sentinel knows the replica and the two
/// other sentinels, so a failover can start at once. Everything is killed on drop.
pub struct Sentinels {
    options: SentinelOptions,
    nodes: Vec<RedisNode>,
    sentinels: Vec<Sentinel>,
    dir: tempfile::TempDir,
}

impl Sentinels {
    /// Starts the master, the replica (waiting for its link) and the sentinels.
    pub async fn start(options: SentinelOptions) -> Sentinels {
        let data = NodeOptions {
            tls: options.tls.clone(),
            acl: options.acl.clone(),
            ..NodeOptions::default()
        };
        let master = RedisNode::start(data.clone()).await;
        let replica = RedisNode::start(data.replica_of(&master)).await;
        let mut set = Sentinels {
            options,
            sentinels: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir for sentinels"),
            nodes: vec![master, replica],
        };
        for i in 0..3 {
            set.launch_sentinel(i).await;
        }
        set.wait_discovery().await;
        set
    }

    /// Writes sentinel `i`'s config (sentinel rewrites it) and starts it; waits until the
    /// process just started answers.
    async fn launch_sentinel(&mut self, i: usize) {
        let port = free_port();
        let tls_port = self.options.tls.as_ref().map(|_| other_free_port(&[port]));
        let dir = self.dir.path().display();
        let name = &self.options.master_name;
        let mut c = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel-{i}.log\n\
             sentinel resolve-hostnames no\nsentinel announce-hostnames no\n"
        );
        if let Some(p) = &self.options.sentinel_password {
            let _ = writeln!(c, "requirepass {p}");
        }
        if let (Some(tls), Some(tls_port)) = (&self.options.tls, tls_port) {
            let pki = &tls.pki;
            let _ = write!(
                c,
                "tls-port {tls_port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients {}\ntls-replication yes\n",
                pki.server_cert().display(),
                pki.server_key().display(),
                pki.ca_pem().display(),
                if tls.auth_clients { "yes" } else { "no" },
            );
        }
        let _ = write!(
            c,
            "sentinel monitor {name} 127.0.0.1 {} 2\n\
             sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}\n\
             sentinel parallel-syncs {name} 1\n",
            self.nodes[0].port()
        );
        if let Some(acl) = &self.options.acl {
            let _ = write!(
                c,
                "sentinel auth-user {name} {ADMIN_USER}\nsentinel auth-pass {name} {}\n",
                acl.admin_password()
            );
        }
        let config = self.dir.path().join(format!("sentinel-{i}.conf"));
        std::fs::write(&config, c).unwrap();
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server --sentinel ({e}): {INSTALL_HINT}"));
        let what = format!("sentinel {i} on port {port} (pid {})", child.id());
        let log = self.dir.path().join(format!("sentinel-{i}.log"));
        let url = self.sentinel_url(port);
        // Held before the wait, so that a panic there still kills it (on drop).
        self.sentinels.push(Sentinel {
            port,
            tls_port,
            child: Some(child),
        });
        let child = self.sentinels[i].child.as_mut().unwrap();
        wait_for_process(&what, child, &log, &url).await;
    }

    /// Waits (at most [`WAIT`]) until every sentinel is connected to the two others (flags
    /// `sentinel`) and sees the replica as a healthy replica (flags `slave`, link ok).
    async fn wait_discovery(&self) {
        let deadline = Instant::now() + WAIT;
        let name = self.master_name().as_bytes();
        for i in 0..self.sentinels.len() {
            loop {
                let peers: Vec<Vec<String>> = self
                    .sentinel_cmd(i, &[b"SENTINEL", b"SENTINELS", name])
                    .await;
                let replicas: Vec<Vec<String>> = self
                    .sentinel_cmd(i, &[b"SENTINEL", b"REPLICAS", name])
                    .await;
                let connected =
                    peers.len() == 2 && peers.iter().all(|p| field(p, "flags") == "sentinel");
                let healthy = replicas.iter().any(|r| {
                    field(r, "flags") == "slave" && field(r, "master-link-status") == "ok"
                });
                if connected && healthy {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "sentinel {i} (port {}) did not discover the other sentinels and the \
                     replica within {WAIT:?}: sentinels {peers:?}, replicas {replicas:?}\n{}",
                    self.sentinels[i].port,
                    self.sentinel_log(i)
                );
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// The sentinels' plain ports (what the tests' client uses; the product too when the
    /// sentinels have no TLS).
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The sentinels' TLS ports (empty without TLS): the ports they announce to each other.
    pub fn sentinel_tls_ports(&self) -> Vec<u16> {
        self.sentinels.iter().filter_map(|s| s.tls_port).collect()
    }

    /// The monitored master's name.
    pub fn master_name(&self) -> &str {
        &self.options.master_name
    }

    /// The sentinels' `requirepass`, if any.
    pub fn sentinel_password(&self) -> Option<&str> {
        self.options.sentinel_password.as_deref()
    }

    /// The master's port according to the first sentinel that answers
    /// (`SENTINEL get-master-addr-by-name`): the TLS port when the data nodes have TLS.
    pub async fn current_master_port(&self) -> u16 {
        let mut errors = Vec::new();
        for i in 0..self.sentinels.len() {
            match self.master_addr(i).await {
                Ok(port) => return port,
                Err(e) => errors.push(format!("sentinel {i}: {e}")),
            }
        }
        panic!("no sentinel reported the master: {errors:?}");
    }

    /// Sentinel `i`'s answer to `SENTINEL get-master-addr-by-name`: the port (the address
    /// is always 127.0.0.1 here).
    async fn master_addr(&self, i: usize) -> RedisResult<u16> {
        let name = self.master_name().as_bytes();
        let url = self.sentinel_url(self.sentinels[i].port);
        let (ip, port): (String, u16) =
            query(&url, &[b"SENTINEL", b"get-master-addr-by-name", name]).await?;
        assert_eq!(
            ip, "127.0.0.1",
            "sentinel {i} reports the master at {ip}:{port}"
        );
        Ok(port)
    }

    /// SIGKILLs the node the sentinels report as master; returns the port they reported.
    pub async fn kill_master(&mut self) -> u16 {
        let port = self.current_master_port().await;
        self.node_mut(port).kill();
        port
    }

    /// Waits (at most `timeout`) until every sentinel reports a master other than
    /// `old_port` and that node answers `ROLE` as `master`; returns its port (as the
    /// sentinels report it).
    pub async fn wait_for_failover(&self, old_port: u16, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut reports = Vec::new();
            for i in 0..self.sentinels.len() {
                reports.push(self.master_addr(i).await.map_err(|e| e.to_string()));
            }
            let mut role = None;
            if let Ok(port) = &reports[0] {
                if *port != old_port && reports.iter().all(|r| r.as_ref() == Ok(port)) {
                    let now = self.node(*port).role().await;
                    if matches!(&now, Ok(r) if r == "master") {
                        return *port;
                    }
                    role = Some(now);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no failover away from port {old_port} within {timeout:?}: the sentinels \
                 report {reports:?} (role of the new one: {role:?})\n{}",
                (0..self.sentinels.len())
                    .map(|i| self.sentinel_log(i))
                    .collect::<String>()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The data node with plain or TLS port `port`.
    pub fn node(&self, port: u16) -> &RedisNode {
        self.nodes
            .iter()
            .find(|n| n.plain_port() == port || n.tls_port == Some(port))
            .unwrap_or_else(|| panic!("no data node has port {port}"))
    }

    /// The data node with plain or TLS port `port`, mutable (to kill or restart it).
    pub fn node_mut(&mut self, port: u16) -> &mut RedisNode {
        self.nodes
            .iter_mut()
            .find(|n| n.plain_port() == port || n.tls_port == Some(port))
            .unwrap_or_else(|| panic!("no data node has port {port}"))
    }

    /// The data nodes: the initial master, then the initial replica.
    pub fn nodes(&self) -> &[RedisNode] {
        &self.nodes
    }

    /// Runs one command on sentinel `i` (plain port, with the sentinel password if any).
    pub async fn sentinel_cmd<T: FromRedisValue>(&self, i: usize, args: &[&[u8]]) -> T {
        let port = self.sentinels[i].port;
        query(&self.sentinel_url(port), args)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "sentinel {i} (port {port}) {:?}: {e}",
                    String::from_utf8_lossy(args[0])
                )
            })
    }

    /// `redis://127.0.0.1:<port>`, with the sentinel password if any.
    fn sentinel_url(&self, port: u16) -> String {
        match &self.options.sentinel_password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{port}"),
            None => format!("redis://127.0.0.1:{port}"),
        }
    }

    /// The last lines of sentinel `i`'s log, headed by its name.
    fn sentinel_log(&self, i: usize) -> String {
        let tail = log_tail(&self.dir.path().join(format!("sentinel-{i}.log")));
        format!("--- sentinel {i}:\n{tail}\n")
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for s in &mut self.sentinels {
            if let Some(mut child) = s.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The value after `name` in a flat `[name, value, …]` reply.
fn field<'a>(flat: &'a [String], name: &str) -> &'a str {
    flat.chunks(2)
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair.get(1))
        .map_or("", String::as_str)
}

// ---------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------

/// Three cluster masters (no replicas) sharing the 16,384 slots, persistent (append-only,
/// fsync always) so that a node killed and restarted keeps its keys and its `nodes.conf`.
/// Killed on drop.
pub struct Cluster {
    nodes: Vec<RedisNode>,
}

impl Cluster {
    /// Starts three nodes with `options` (cluster mode and persistence forced on), joins them
    /// with `redis-cli --cluster create`, and waits until every node reports
    /// `cluster_state:ok`.
    pub async fn start(options: NodeOptions) -> Cluster {
        let options = options.cluster().persistent();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisNode::start(options.clone()).await);
        }
        let cluster = Cluster { nodes };
        let mut args = vec!["--no-auth-warning".to_owned()];
        if let Some(p) = cluster.nodes[0].admin_password() {
            args.extend(["--user".to_owned(), ADMIN_USER.to_owned()]);
            args.extend(["--pass".to_owned(), p.to_owned()]);
        }
        args.extend(["--cluster".to_owned(), "create".to_owned()]);
        args.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.plain_port())),
        );
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
        let run = tokio::process::Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(WAIT, run)
            .await
            .unwrap_or_else(|_| panic!("redis-cli --cluster create: no end within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): {INSTALL_HINT}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok().await;
        cluster
    }

    /// The seed addresses, one per node: each node's [`RedisNode::url`].
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::url).collect()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &RedisNode {
        &self.nodes[i]
    }

    /// Runs one admin command on node `i`.
    pub async fn cmd<T: FromRedisValue>(&self, i: usize, args: &[&[u8]]) -> T {
        self.nodes[i].cmd(args).await
    }

    /// The index of the node serving `key`'s slot (`CLUSTER KEYSLOT`, then the slot ranges
    /// of `CLUSTER NODES`, both asked of node 0).
    pub async fn node_for_key(&self, key: &str) -> usize {
        let slot: u16 = self.cmd(0, &[b"CLUSTER", b"KEYSLOT", key.as_bytes()]).await;
        self.node_for_slot(slot).await
    }

    /// The index of the node serving `slot`, from node 0's `CLUSTER NODES`.
    pub async fn node_for_slot(&self, slot: u16) -> usize {
        let nodes: String = self.cmd(0, &[b"CLUSTER", b"NODES"]).await;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
            let Some(port) = fields
                .get(1)
                .and_then(|a| a.split('@').next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            let serves = fields.iter().skip(8).any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
            });
            if serves {
                return self
                    .nodes
                    .iter()
                    .position(|n| n.plain_port() == port)
                    .unwrap_or_else(|| panic!("slot {slot} is served by unknown port {port}"));
            }
        }
        panic!("no node serves slot {slot}:\n{nodes}");
    }

    /// SIGKILLs node `i` (if running), starts it again on the same ports with its data
    /// dir and `nodes.conf`, and waits (at most [`CLUSTER_WAIT`]) until every node reports
    /// `cluster_state:ok` again.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].restart().await;
        self.wait_ok().await;
    }

    /// Waits (at most [`CLUSTER_WAIT`]) until every node reports `cluster_state:ok`, knows
    /// the three nodes and sees all slots served.
    pub async fn wait_ok(&self) {
        let deadline = Instant::now() + CLUSTER_WAIT;
        for (i, node) in self.nodes.iter().enumerate() {
            loop {
                let info: String = node.cmd(&[b"CLUSTER", b"INFO"]).await;
                if info.contains("cluster_state:ok\r\n")
                    && info.contains("cluster_known_nodes:3\r\n")
                    && info.contains("cluster_slots_ok:16384\r\n")
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {i} (port {}) not ok within {CLUSTER_WAIT:?}:\n{info}\n{}",
                    node.plain_port(),
                    node.log_tail()
                );
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared
// ---------------------------------------------------------------------------------------

/// A free loopback port other than `taken`.
fn other_free_port(taken: &[u16]) -> u16 {
    loop {
        let port = free_port();
        if !taken.contains(&port) {
            return port;
        }
    }
}

/// Runs one command on a fresh connection to `url`.
async fn query<T: FromRedisValue>(url: &str, args: &[&[u8]]) -> RedisResult<T> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let mut con = redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut con).await
}

/// Waits (at most [`WAIT`]) until the server at `url` answers `PING` and its `INFO server`
/// names `child`'s pid; panics (quoting `log`) if `child` exits first or another process
/// answers.
async fn wait_for_process(what: &str, child: &mut Child, log: &Path, url: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before answering:\n{}",
                log_tail(log)
            );
        }
        if query::<String>(url, &[b"PING"]).await.is_ok() {
            // The port was free when picked; make sure the server answering is ours.
            let info: String = query(url, &[b"INFO", b"server"]).await.unwrap();
            assert!(
                info.contains(&format!("process_id:{}\r\n", child.id())),
                "{what}: the port answers, but not from the process just started"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not answer PING within {WAIT:?}:\n{}",
            log_tail(log)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The last [`LOG_TAIL`] lines of `log`.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("({log:?}: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}
