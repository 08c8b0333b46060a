//! The way to the Redis data node that takes writes: one server (`store.url`), or the master
//! the sentinels name (`store.sentinel`), looked up again when a command finds it gone (a
//! connection lost or refused, `READONLY` from a demoted master, `MASTERDOWN`) — so the
//! lease, the fenced writes and the subscriptions follow a failover; or, with
//! `store.cluster`, the master of each command's key slot (`cluster`). TLS (the store's CA
//! or the web PKI roots, an optional client certificate) and the ACL user apply to every
//! node.
//!
//! Every command goes through a [`Con`], which tells the link when its node failed.

use super::cluster::Cluster;
use super::{timed_out, KindText, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::config::{RedisSettings, RedisTarget, RedisTls, SentinelSettings};
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    ClientTlsConfig, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, RedisFuture,
    RedisResult, Script, ServerErrorKind, TlsCertificates, TlsMode, Value,
};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Reconnection backoff of the connection manager: first and longest delay.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);
/// Reconnection attempts per failed command before it reports the error.
const RECONNECT_RETRIES: usize = 2;
/// Shortest time between two lookups of the master while the sentinels name none that
/// answers (during a failover).
const LOOKUP_INTERVAL: Duration = Duration::from_millis(250);

/// One data node: a client (for subscriptions) and the multiplexed connection commands
/// share.
pub(super) struct Node {
    pub client: redis::Client,
    manager: ConnectionManager,
    /// `host:port`, for logs and errors.
    pub endpoint: String,
}

/// The data node in use, and how to find the next one; or the cluster.
pub(super) struct Link {
    current: ArcSwapOption<Node>,
    sentinel: Option<Sentinels>,
    cluster: Option<Cluster>,
}

/// The sentinels, asked one lookup at a time.
struct Sentinels {
    client: Mutex<SentinelClient>,
    /// When the last lookup that found no master ended, and why it found none.
    failed_at: Mutex<Option<(Instant, String)>>,
    master_name: String,
}

/// The clients `settings` describe, before any connection exists.
pub(super) enum Clients {
    Server(redis::Client),
    Sentinels(SentinelClient, String),
    Cluster(Cluster),
}

impl Clients {
    /// Reads the URL or the sentinels, the credentials and the certificates; contacts
    /// nothing and spawns nothing (so `check` can call it outside a runtime).
    pub fn new(settings: &RedisSettings) -> Result<Clients, RedisError> {
        let certificates = settings.tls.as_ref().map(certificates);
        match &settings.target {
            RedisTarget::Url(url) => {
                let info = url.expose_secret().into_connection_info()?;
                let redis = with_credentials(info.redis_settings().clone(), settings);
                let info = info.set_redis_settings(redis);
                Ok(Clients::Server(match certificates {
                    Some(certs) => redis::Client::build_with_tls(info, certs)?,
                    None => redis::Client::open(info)?,
                }))
            }
            RedisTarget::Sentinel(sentinel) => Ok(Clients::Sentinels(
                sentinel_client(sentinel, settings, certificates)?,
                sentinel.master_name.clone(),
            )),
            RedisTarget::Cluster(cluster) => Ok(Clients::Cluster(Cluster::new(
                &cluster.nodes,
                settings,
                certificates,
            )?)),
        }
    }
}

impl Link {
    /// The link `settings` describe. Contacts nothing: a node is connected on first use.
    pub fn open(settings: &RedisSettings) -> Result<Link, RedisError> {
        Ok(match Clients::new(settings)? {
            Clients::Server(client) => Link {
                current: ArcSwapOption::from_pointee(Node::new(client, settings.endpoint.clone())?),
                sentinel: None,
                cluster: None,
            },
            Clients::Sentinels(client, master_name) => Link {
                current: ArcSwapOption::empty(),
                sentinel: Some(Sentinels {
                    client: Mutex::new(client),
                    failed_at: Mutex::new(None),
                    master_name,
                }),
                cluster: None,
            },
            Clients::Cluster(cluster) => Link {
                current: ArcSwapOption::empty(),
                sentinel: None,
                cluster: Some(cluster),
            },
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
        let lookup = async { sentinels.client.lock().await.async_get_client().await };
        let found = tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, lookup)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        let client = match found {
            Ok(client) => client,
            Err(e) => {
                let why = e.kind_text();
                tracing::debug!(master = %sentinels.master_name, error = %why, "the sentinels name no master that answers");
                *failed_at = Some((Instant::now(), why));
                return Err(e);
            }
        };
        *failed_at = None;
        let endpoint = address(client.get_connection_info().addr());
        let node = Arc::new(Node::new(client, endpoint)?);
        tracing::info!(master = %sentinels.master_name, redis = %node.endpoint, "Redis master found through the sentinels");
        self.current.store(Some(Arc::clone(&node)));
        Ok(node)
    }

    /// Whether there is a node (or a cluster) to [`Link::probe`]: with sentinels, none
    /// while no master is known.
    pub fn probeable(&self) -> bool {
        self.cluster.is_some() || self.current.load().is_some()
    }

    /// Connects to the current node directly, with its credentials, and says `PING`:
    /// the error a connection manager keeps to itself (TLS, authentication), in words (a
    /// cluster's names the node).
    pub async fn probe(&self) -> Result<(), String> {
        if let Some(cluster) = &self.cluster {
            return cluster.probe().await;
        }
        let probe = async {
            let node = self.node().await?;
            let mut con = node.client.get_multiplexed_async_connection().await?;
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
                Way::Node {
                    manager: node.manager.clone(),
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
                let mut pubsub = node.client.get_async_pubsub().await?;
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

impl Node {
    fn new(client: redis::Client, endpoint: String) -> Result<Node, RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Node {
            client,
            manager,
            endpoint,
        })
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
        manager: ConnectionManager,
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
                Way::Node { manager, node } => {
                    let answer = manager.req_packed_command(cmd).await;
                    if let Err(e) = &answer {
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
                Way::Node { manager, node } => {
                    let answer = manager.req_packed_commands(pipeline, offset, count).await;
                    if let Err(e) = &answer {
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
            Way::Node { manager, .. } => manager.get_db(),
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

/// The sentinels of `sentinel`, with the data nodes' user, password, database 0 and TLS.
fn sentinel_client(
    sentinel: &SentinelSettings,
    settings: &RedisSettings,
    certificates: Option<TlsCertificates>,
) -> Result<SentinelClient, RedisError> {
    let addresses = sentinel.nodes.iter().map(|(host, port)| {
        if sentinel.tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let mut builder =
        SentinelClientBuilder::new(addresses, &sentinel.master_name, SentinelServerType::Master)?;
    if let Some(user) = &settings.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &settings.password {
        builder = builder.set_client_to_redis_password(password.expose_secret());
    }
    if let Some(user) = &sentinel.username {
        builder = builder.set_client_to_sentinel_username(user);
    }
    if let Some(password) = &sentinel.password {
        builder = builder.set_client_to_sentinel_password(password.expose_secret());
    }
    if let Some(certs) = certificates {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_redis_certificates(certs.clone());
        if sentinel.tls {
            builder = builder
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_certificates(certs);
        }
    }
    builder.build()
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
