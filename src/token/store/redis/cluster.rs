//! The way to a Redis Cluster (`store.cluster`): one `redis::cluster_async` connection that
//! sends each command to the master of its first key's slot (learnt from `CLUSTER SLOTS` of
//! the seed nodes, and again after `MOVED`), and the seed nodes themselves, reached directly
//! for subscriptions and to learn why a connection failed.
//!
//! What the cluster client does with tokenwarden's commands (redis 1.8's routing):
//! `EVALSHA` goes by its first key, so every script names a key of the slot it works in
//! first; a pipeline goes to the node of its first keyed command, so `EVALSHA` + `WAIT`
//! share one node and one connection (`WAIT` counts that node's replicas holding the
//! script's writes); a script's `SCRIPT LOAD` is routed here to the node of the key it was
//! refused on ([`load_script`]; left to the client it would go to every node and fail with
//! any one down). `CLUSTERDOWN`, `TRYAGAIN` and a lost node connection are retried within
//! [`RESPONSE_TIMEOUT`] ([`RETRIES`] times at most); `MOVED` and `ASK` are followed.
//!
//! Classic pub/sub reaches every node of a cluster: a subscription is one plain connection
//! to one seed node, the next seed for each new subscription (so a follower whose node died
//! moves on), with the cluster's credentials and TLS.

use super::{timed_out, KindText, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::config::RedisSettings;
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, PubSubSink, PubSubStream};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    Cmd, ConnectionAddr, IntoConnectionInfo, RedisError, RedisFuture, RedisResult, Script,
    TlsCertificates, Value,
};
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Retries of one command after `CLUSTERDOWN`, `TRYAGAIN`, a redirect or a lost node
/// connection (all within [`RESPONSE_TIMEOUT`]).
const RETRIES: u32 = 6;
/// Shortest and longest wait before such a retry (ms): a restarted master answers
/// `CLUSTERDOWN` for about 2 s.
const RETRY_MIN_WAIT_MS: u64 = 50;
const RETRY_MAX_WAIT_MS: u64 = 500;
/// Wait before retry n: `RETRY_FACTOR_MS` × 2^n, within the bounds above.
const RETRY_FACTOR_MS: u64 = 50;

/// A seed node, reached directly.
struct Seed {
    client: redis::Client,
    /// `host:port`, for errors.
    endpoint: String,
}

/// The cluster client, its connection once made, and the seed nodes.
pub(super) struct Cluster {
    client: ClusterClient,
    connection: ArcSwapOption<ClusterConnection>,
    /// Held while the connection is being made (one attempt at a time).
    connecting: Mutex<()>,
    seeds: Vec<Seed>,
    /// The seed the next subscription starts at (first a random one, so that replicas
    /// spread their subscriptions over the seeds).
    next_seed: AtomicUsize,
}

impl Cluster {
    /// The clients of `nodes`, with the credentials and TLS of `settings`. Contacts nothing
    /// and spawns nothing.
    pub fn new(
        nodes: &[(String, u16)],
        settings: &RedisSettings,
        certificates: Option<TlsCertificates>,
    ) -> Result<Cluster, RedisError> {
        let mut infos = Vec::with_capacity(nodes.len());
        let mut seeds = Vec::with_capacity(nodes.len());
        for (host, port) in nodes {
            let info = address(host, *port, certificates.is_some()).into_connection_info()?;
            let redis = super::link::with_credentials(info.redis_settings().clone(), settings);
            let info = info.set_redis_settings(redis);
            let client = match &certificates {
                Some(certs) => redis::Client::build_with_tls(info.clone(), certs.clone())?,
                None => redis::Client::open(info.clone())?,
            };
            seeds.push(Seed {
                client,
                endpoint: super::link::address(info.addr()),
            });
            infos.push(info);
        }
        let mut builder = ClusterClientBuilder::new(infos)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(RETRIES)
            .min_retry_wait(RETRY_MIN_WAIT_MS)
            .max_retry_wait(RETRY_MAX_WAIT_MS)
            .retry_wait_formula(RETRY_FACTOR_MS, 2);
        if let Some(user) = &settings.username {
            builder = builder.username(user);
        }
        if let Some(password) = &settings.password {
            builder = builder.password(password.expose_secret());
        }
        if let Some(certs) = certificates {
            builder = builder.certs(certs);
        }
        Ok(Cluster {
            client: builder.build()?,
            connection: ArcSwapOption::empty(),
            connecting: Mutex::new(()),
            seeds,
            next_seed: AtomicUsize::new(rand::random::<usize>() % nodes.len().max(1)),
        })
    }

    /// The cluster connection, made on first use (from the first seed node that answers;
    /// it then follows the cluster's nodes and slots by itself).
    pub async fn connection(&self) -> Result<ClusterConnection, RedisError> {
        if let Some(connection) = self.connection.load_full() {
            return Ok((*connection).clone());
        }
        let _one = self.connecting.lock().await;
        if let Some(connection) = self.connection.load_full() {
            return Ok((*connection).clone());
        }
        let made = tokio::time::timeout(
            CONNECT_TIMEOUT + RESPONSE_TIMEOUT,
            self.client.get_async_connection(),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out()))?;
        tracing::info!(nodes = %self.endpoints(), "connected to the Redis cluster");
        self.connection.store(Some(Arc::new(made.clone())));
        Ok(made)
    }

    /// A dedicated connection subscribed to `channels`, on one seed node: the one after
    /// the previous subscription's, then the others in turn while they fail. Each try is
    /// bounded by [`CONNECT_TIMEOUT`] + [`RESPONSE_TIMEOUT`].
    pub async fn subscribe(
        &self,
        channels: &[String],
    ) -> Result<(PubSubSink, PubSubStream), RedisError> {
        let start = self.next_seed.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.seeds.len() {
            let seed = &self.seeds[(start + i) % self.seeds.len()];
            let subscribed = async {
                let mut pubsub = seed.client.get_async_pubsub().await?;
                pubsub.subscribe(channels).await?;
                Ok(pubsub.split())
            };
            match bounded(subscribed).await {
                Ok(pubsub) => {
                    tracing::debug!(redis = %seed.endpoint, "subscribed on a cluster node");
                    return Ok(pubsub);
                }
                Err(e) => {
                    tracing::debug!(redis = %seed.endpoint, error = %e.kind_text(), "cannot subscribe on this cluster node; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(timed_out))
    }

    /// Connects to each seed node directly and says `PING`: the first failure, naming its
    /// node (the cause a cluster connection keeps to itself: TLS, authentication).
    pub async fn probe(&self) -> Result<(), String> {
        for seed in &self.seeds {
            let ping = async {
                let mut con = seed.client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<()>(&mut con).await
            };
            if let Err(e) = bounded(ping).await {
                return Err(format!("{}: {}", seed.endpoint, e.kind_text()));
            }
        }
        Ok(())
    }

    /// The seed nodes, for logs.
    fn endpoints(&self) -> String {
        let all: Vec<&str> = self.seeds.iter().map(|s| s.endpoint.as_str()).collect();
        all.join(", ")
    }
}

/// Loads `script` on the master serving `key`'s slot (every node without a key).
pub(super) async fn load_script(
    connection: &mut ClusterConnection,
    script: &Script,
    key: Option<&[u8]>,
) -> RedisResult<()> {
    match key {
        Some(key) => {
            let mut routed = Routed {
                connection,
                routing: RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                )),
            };
            script.load_async(&mut routed).await.map(drop)
        }
        None => script.load_async(connection).await.map(drop),
    }
}

/// A cluster connection that sends every command to one route (the script's `SCRIPT
/// LOAD`, which the `redis` crate builds and sends through `ConnectionLike`).
struct Routed<'a> {
    connection: &'a mut ClusterConnection,
    routing: RoutingInfo,
}

impl ConnectionLike for Routed<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(
            self.connection
                .route_command(cmd.clone(), self.routing.clone()),
        )
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.connection.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// A seed node's address: TLS when `tls`.
fn address(host: &str, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    }
}

/// `work`, bounded by [`CONNECT_TIMEOUT`] + [`RESPONSE_TIMEOUT`].
async fn bounded<T>(work: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
    let limit: Duration = CONNECT_TIMEOUT + RESPONSE_TIMEOUT;
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}
