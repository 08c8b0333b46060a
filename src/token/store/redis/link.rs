//! The way to the Redis data node that takes writes: one server (`store.url`), or the master
//! the sentinels name (`store.sentinel`), looked up again when a command finds it gone (a
//! connection lost or refused, `READONLY` from a demoted master, `MASTERDOWN`) — so the
//! lease, the fenced writes and the subscriptions follow a failover; or, with
//! `store.cluster`, the master of each command's key slot (`cluster`). TLS (the store's CA
//! or the web PKI roots, an optional client certificate) and the ACL user apply to every
//! node. One server, the sentinels and the master they name are connected by `dial`
//! (which verifies `store.tls.server_name` when given); a cluster's nodes by the redis
//! client.
//!
//! Every command goes through a [`Con`], which tells the link when its node failed.

use super::cluster::Cluster;
use super::dial::{ClientTls, Dialer, Node, Shared};
use super::{timed_out, KindText, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::config::{RedisSettings, RedisTarget, RedisTls, SentinelSettings};
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{
    ClientTlsConfig, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo,
    RedisError, RedisFuture, RedisResult, Script, ServerErrorKind, TlsCertificates, Value,
};
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Shortest time between two lookups of the master while the sentinels name none that
/// answers (during a failover).
const LOOKUP_INTERVAL: Duration = Duration::from_millis(250);

/// The data node in use, and how to find the next one; or the cluster.
pub(super) struct Link {
    current: ArcSwapOption<Node>,
    sentinel: Option<Sentinels>,
    cluster: Option<Cluster>,
}

/// The sentinels, asked one lookup at a time.
struct Sentinels {
    /// Each sentinel, in the configured order.
    sentinels: Vec<Dialer>,
    /// The one that named the master last: asked first.
    answered: AtomicUsize,
    master_name: String,
    /// TLS to the masters they name (None: plain TCP).
    tls: Option<Arc<ClientTls>>,
    /// The data nodes' user, password and database.
    redis: RedisConnectionInfo,
    /// When the last lookup that found no master ended, and why it found none.
    failed_at: Mutex<Option<(Instant, String)>>,
}

impl Link {
    /// The link `settings` describe: reads the URL or the sentinels, the credentials and
    /// the certificates. Contacts nothing and spawns nothing (so `check` can call it
    /// outside a runtime): a node is connected on first use.
    pub fn open(settings: &RedisSettings) -> Result<Link, RedisError> {
        let tls = match (&settings.target, &settings.tls) {
            (RedisTarget::Cluster(_), _) | (_, None) => None,
            (_, Some(tls)) => Some(Arc::new(ClientTls::new(tls)?)),
        };
        let (current, sentinel, cluster) = match &settings.target {
            RedisTarget::Url(url) => {
                let info = url.expose_secret().into_connection_info()?;
                let redis = with_credentials(info.redis_settings().clone(), settings);
                let dialer = Dialer::new(info.addr(), redis, tls.as_deref())?;
                let node = Node::new(dialer, settings.endpoint.clone());
                (Some(Arc::new(node)), None, None)
            }
            RedisTarget::Sentinel(sentinel) => {
                (None, Some(Sentinels::new(sentinel, settings, tls)?), None)
            }
            RedisTarget::Cluster(cluster) => {
                let certificates = settings.tls.as_ref().map(certificates);
                let cluster = Cluster::new(&cluster.nodes, settings, certificates)?;
                (None, None, Some(cluster))
            }
        };
        Ok(Link {
            current: ArcSwapOption::new(current),
            sentinel,
            cluster,
        })
    }

    /// The node that takes writes now: the current one, or, with sentinels and none known,
    /// the master they name. (Not for a cluster.)
    async fn node(&self) -> Result<Arc<Node>, RedisError> {
        if let Some(node) = self.current.load_full() {
            return Ok(node);
        }
        let Some(sentinels) = &self.sentinel else {
            unreachable!("a link to one server always has its node; a cluster has none");
        };
        let mut failed_at = sentinels.failed_at.lock().await;
        // Another task may have found it while this one waited.
        if let Some(node) = self.current.load_full() {
            return Ok(node);
        }
        if let Some((at, why)) = failed_at.as_ref() {
            if at.elapsed() < LOOKUP_INTERVAL {
                return Err(no_master(why));
            }
        }
        let node = match sentinels.lookup().await {
            Ok(node) => Arc::new(node),
            Err(e) => {
                let why = e.kind_text();
                tracing::debug!(master = %sentinels.master_name, error = %why, "the sentinels name no master that answers");
                *failed_at = Some((Instant::now(), why));
                return Err(e);
            }
        };
        *failed_at = None;
        tracing::info!(master = %sentinels.master_name, redis = %node.endpoint, "Redis master found through the sentinels");
        self.current.store(Some(Arc::clone(&node)));
        Ok(node)
    }

    /// Whether there is a node (or a cluster) to [`Link::probe`]: with sentinels, none
    /// while no master is known.
    pub fn probeable(&self) -> bool {
        self.cluster.is_some() || self.current.load().is_some()
    }

    /// Connects to the current node directly, with its credentials, and says `PING`: why
    /// a connection was lost (TLS, authentication), in words (a cluster's names the node).
    pub async fn probe(&self) -> Result<(), String> {
        if let Some(cluster) = &self.cluster {
            return cluster.probe().await;
        }
        let probe = async {
            let node = self.node().await?;
            let mut con = node.dial().await?;
            redis::cmd("PING").query_async::<()>(&mut con).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, probe)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
            .map_err(|e| e.kind_text())
    }

    /// A connection to the current node (or the cluster), for one or more commands.
    pub async fn connection(self: &Arc<Self>) -> Result<Con, RedisError> {
        let way = match &self.cluster {
            Some(cluster) => Way::Cluster(cluster.connection().await?),
            None => {
                let node = self.node().await?;
                let shared = match node.connection().await {
                    Ok(shared) => shared,
                    Err(e) => {
                        self.failed(&node, &e);
                        return Err(e);
                    }
                };
                Way::Node {
                    con: shared.con.clone(),
                    shared,
                    node,
                }
            }
        };
        Ok(Con {
            way,
            link: Arc::clone(self),
        })
    }

    /// A dedicated connection subscribed to `channels`: on the current node, or on one of a
    /// cluster's seed nodes. Connecting and subscribing together time out after
    /// [`CONNECT_TIMEOUT`] + [`RESPONSE_TIMEOUT`] (per seed node tried).
    pub async fn subscribe(
        &self,
        channels: &[String],
    ) -> Result<(PubSubSink, PubSubStream), RedisError> {
        if let Some(cluster) = &self.cluster {
            return cluster.subscribe(channels).await;
        }
        let subscribe = async {
            let node = self.node().await?;
            let subscribed = async {
                let mut pubsub = node.pubsub().await?;
                // One SUBSCRIBE for all of them.
                pubsub.subscribe(channels).await?;
                Ok(pubsub.split())
            };
            let subscribed = subscribed.await;
            if let Err(e) = &subscribed {
                self.failed(&node, e);
            }
            subscribed
        };
        tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, subscribe)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// The endpoint of the node in use, or the sentinels' master name before one is known.
    pub fn endpoint(&self) -> Option<String> {
        self.current.load().as_ref().map(|n| n.endpoint.clone())
    }

    /// Notes that a command on `node` failed with `error`: with sentinels, a node that is
    /// gone or no longer master is dropped, and the next command looks the master up again.
    fn failed(&self, node: &Arc<Node>, error: &RedisError) {
        if self.sentinel.is_none() || !moved(error) {
            return;
        }
        let previous = self
            .current
            .compare_and_swap(&Some(Arc::clone(node)), None::<Arc<Node>>);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, node)) {
            tracing::info!(redis = %node.endpoint, error = %error.kind_text(), "the Redis master is gone or no longer master; asking the sentinels");
        }
    }
}

/// A connection to one node that reports its failures to the link (see [`Link::failed`]),
/// or to a cluster (which follows its nodes itself).
pub(super) struct Con {
    way: Way,
    link: Arc<Link>,
}

enum Way {
    Node {
        con: MultiplexedConnection,
        shared: Arc<Shared>,
        node: Arc<Node>,
    },
    Cluster(ClusterConnection),
}

impl Con {
    /// Loads `script` where a call whose first key is `key` runs: on the node, or on the
    /// master of `key`'s slot in a cluster.
    pub async fn load_script(&mut self, script: &Script, key: Option<&[u8]>) -> RedisResult<()> {
        if let Way::Cluster(cluster) = &mut self.way {
            return super::cluster::load_script(cluster, script, key).await;
        }
        script.load_async(self).await.map(drop)
    }
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match &mut self.way {
                Way::Node { con, shared, node } => {
                    let answer = con.req_packed_command(cmd).await;
                    if let Err(e) = &answer {
                        node.lost(shared, e);
                        self.link.failed(node, e);
                    }
                    answer
                }
                Way::Cluster(cluster) => cluster.req_packed_command(cmd).await,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match &mut self.way {
                Way::Node { con, shared, node } => {
                    let answer = con.req_packed_commands(pipeline, offset, count).await;
                    if let Err(e) = &answer {
                        node.lost(shared, e);
                        self.link.failed(node, e);
                    }
                    answer
                }
                Way::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count).await,
            }
        })
    }

    fn get_db(&self) -> i64 {
        match &self.way {
            Way::Node { con, .. } => con.get_db(),
            Way::Cluster(_) => 0,
        }
    }
}

/// Whether `error` says the node is gone or is no longer the master.
fn moved(error: &RedisError) -> bool {
    error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_io_error()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// The answer while the last lookup, less than [`LOOKUP_INTERVAL`] ago, found no master
/// (`why`: what it met).
fn no_master(why: &str) -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "the sentinels named no master that answers",
        why.to_owned(),
    ))
}

/// The ACL user and password of `settings`, over the URL's.
pub(super) fn with_credentials(
    mut redis: redis::RedisConnectionInfo,
    settings: &RedisSettings,
) -> redis::RedisConnectionInfo {
    if let Some(user) = &settings.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose_secret());
    }
    redis
}

/// The redis client's form of `tls`: its CA (None: the web PKI roots) and client identity.
fn certificates(tls: &RedisTls) -> TlsCertificates {
    TlsCertificates {
        client_tls: tls.client.as_ref().map(|c| ClientTlsConfig {
            client_cert: c.cert_pem.clone(),
            client_key: c.key_pem.expose_secret().as_bytes().to_vec(),
        }),
        root_cert: tls.ca_pem.clone(),
    }
}

impl Sentinels {
    /// The sentinels of `sentinel` (over TLS with `tls` when `sentinel.tls`), naming
    /// masters that are reached with `tls` and the data nodes' credentials of `settings`.
    fn new(
        sentinel: &SentinelSettings,
        settings: &RedisSettings,
        tls: Option<Arc<ClientTls>>,
    ) -> Result<Sentinels, RedisError> {
        let mut own = RedisConnectionInfo::default();
        if let Some(user) = &sentinel.username {
            own = own.set_username(user);
        }
        if let Some(password) = &sentinel.password {
            own = own.set_password(password.expose_secret());
        }
        let sentinels = sentinel
            .nodes
            .iter()
            .map(|(host, port)| {
                let (host, port) = (host.clone(), *port);
                if sentinel.tls {
                    let addr = tcp_tls(host, port);
                    Dialer::new(&addr, own.clone(), tls.as_deref())
                } else {
                    Dialer::new(&ConnectionAddr::Tcp(host, port), own.clone(), None)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Sentinels {
            sentinels,
            answered: AtomicUsize::new(0),
            master_name: sentinel.master_name.clone(),
            tls,
            redis: with_credentials(RedisConnectionInfo::default(), settings),
            failed_at: Mutex::new(None),
        })
    }

    /// The master: the node the first sentinel that answers names, connected and checked
    /// to say `master` to `ROLE` (not a replica still being promoted, or a node the
    /// sentinels have not yet seen demoted). The sentinels are asked in turn from the one
    /// that answered last, each for at most [`CONNECT_TIMEOUT`] + [`RESPONSE_TIMEOUT`] (so
    /// one that does not answer at all costs that once, not every lookup). The last
    /// sentinel's error when none does.
    async fn lookup(&self) -> Result<Node, RedisError> {
        let first = self.answered.load(Ordering::Relaxed);
        let count = self.sentinels.len();
        let mut last = None;
        for i in (0..count).map(|k| (first + k) % count) {
            let asked = tokio::time::timeout(
                CONNECT_TIMEOUT + RESPONSE_TIMEOUT,
                self.ask(&self.sentinels[i]),
            );
            match asked.await.unwrap_or_else(|_| Err(timed_out())) {
                Ok(node) => {
                    self.answered.store(i, Ordering::Relaxed);
                    return Ok(node);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from((ErrorKind::InvalidClientConfig, "no sentinel configured"))
        }))
    }

    /// The master `sentinel` names, connected and checked.
    async fn ask(&self, sentinel: &Dialer) -> Result<Node, RedisError> {
        let mut con = sentinel.multiplexed().await?;
        let named: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master_name)
            .query_async(&mut con)
            .await?;
        let Some((host, port)) = named else {
            return Err(RedisError::from((
                ErrorKind::Client,
                "master name not found by the sentinels",
                self.master_name.clone(),
            )));
        };
        let addr = match self.tls {
            Some(_) => tcp_tls(host, port),
            None => ConnectionAddr::Tcp(host, port),
        };
        let dialer = Dialer::new(&addr, self.redis.clone(), self.tls.as_deref())?;
        let mut master = dialer.multiplexed().await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut master).await?;
        if !matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "the node the sentinels name is not master (yet)",
            )));
        }
        Ok(Node::connected(dialer, address(&addr), master))
    }
}

/// A TLS address (its TLS parameters are `dial`'s, not these).
fn tcp_tls(host: String, port: u16) -> ConnectionAddr {
    ConnectionAddr::TcpTls {
        host,
        port,
        insecure: false,
        tls_params: None,
    }
}

/// `host:port` of a node's address.
pub(super) fn address(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
        other => format!("{other}"),
    }
}
