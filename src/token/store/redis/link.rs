//! The way to the Redis data node that takes writes: one server (`store.url`), or the master
//! the sentinels name (`store.sentinel`), looked up again when a command finds it gone (a
//! connection lost or refused, `READONLY` from a demoted master, `MASTERDOWN`) — so the
//! lease, the fenced writes and the subscriptions follow a failover. TLS (the store's CA or
//! the web PKI roots, an optional client certificate) and the ACL user apply to every node.
//!
//! Every command goes through a [`Con`], which tells the link when its node failed.

use super::{timed_out, KindText, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::config::{RedisSettings, RedisTarget, RedisTls, SentinelSettings};
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    ClientTlsConfig, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, RedisFuture,
    ServerErrorKind, TlsCertificates, TlsMode, Value,
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

/// The data node in use, and how to find the next one.
pub(super) struct Link {
    current: ArcSwapOption<Node>,
    sentinel: Option<Sentinels>,
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
    Sentinels(SentinelClient),
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
            RedisTarget::Sentinel(sentinel) => Ok(Clients::Sentinels(sentinel_client(
                sentinel,
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
            },
            Clients::Sentinels(client) => Link {
                current: ArcSwapOption::empty(),
                sentinel: Some(Sentinels {
                    client: Mutex::new(client),
                    failed_at: Mutex::new(None),
                    master_name: match &settings.target {
                        RedisTarget::Sentinel(s) => s.master_name.clone(),
                        RedisTarget::Url(_) => String::new(),
                    },
                }),
            },
        })
    }

    /// The node that takes writes now: the current one, or, with sentinels and none known,
    /// the master they name.
    pub async fn node(&self) -> Result<Arc<Node>, RedisError> {
        if let Some(node) = self.current.load_full() {
            return Ok(node);
        }
        let Some(sentinels) = &self.sentinel else {
            unreachable!("a link to one server always has its node");
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

    /// Connects to the current node directly, with its credentials, and says `PING`:
    /// the error a connection manager keeps to itself (TLS, authentication).
    pub async fn probe(&self) -> Result<(), RedisError> {
        let node = self.node().await?;
        let probe = async {
            let mut con = node.client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<()>(&mut con).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, probe)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// A connection to the current node, for one or more commands.
    pub async fn connection(self: &Arc<Self>) -> Result<Con, RedisError> {
        let node = self.node().await?;
        Ok(Con {
            manager: node.manager.clone(),
            node,
            link: Arc::clone(self),
        })
    }

    /// The endpoint of the node in use, or the sentinels' master name before one is known.
    pub fn endpoint(&self) -> Option<String> {
        self.current.load().as_ref().map(|n| n.endpoint.clone())
    }

    /// Notes that a command on `node` failed with `error`: with sentinels, a node that is
    /// gone or no longer master is dropped, and the next command looks the master up again.
    pub fn failed(&self, node: &Arc<Node>, error: &RedisError) {
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

/// A connection to one node that reports its failures to the link (see [`Link::failed`]).
pub(super) struct Con {
    manager: ConnectionManager,
    pub node: Arc<Node>,
    link: Arc<Link>,
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let answer = self.manager.req_packed_command(cmd).await;
            if let Err(e) = &answer {
                self.link.failed(&self.node, e);
            }
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let answer = self
                .manager
                .req_packed_commands(pipeline, offset, count)
                .await;
            if let Err(e) = &answer {
                self.link.failed(&self.node, e);
            }
            answer
        })
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
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
fn with_credentials(
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
fn address(addr: &ConnectionAddr) -> String {
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
