//! How tokenwarden reaches one Redis node itself — the server of `store.url`, a sentinel,
//! or the master the sentinels name: TCP, then, for TLS, rustls with tokenwarden's ring provider,
//! verifying the server's certificate against `store.tls.server_name` when given (else the
//! node's host), which is also the name sent as SNI; then the redis client's protocol over
//! that stream — the multiplexed connection commands share, or a subscription.
//!
//! [`Node`] keeps the shared connection: made on first use, dropped when a command finds
//! it broken, and made again by the next command; while a try has failed less than
//! [`REDIAL_DELAY`] ago, commands fail at once with its cause rather than each waiting on
//! a node that does not answer.
//!
//! (A Redis Cluster's nodes are reached by the redis client itself, at the addresses the
//! cluster announces: see `cluster`.)

use super::{KindText, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::config::RedisTls;
use arc_swap::ArcSwapOption;
use redis::aio::{MultiplexedConnection, PubSub};
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisConnectionInfo, RedisError};
use rustls::pki_types::ServerName;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Shortest time between two tries to connect to a node: meanwhile commands fail at once
/// with the last try's cause.
pub(super) const REDIAL_DELAY: Duration = Duration::from_millis(250);

/// How to open a connection to one node.
pub(super) struct Dialer {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// User, password and database.
    redis: RedisConnectionInfo,
}

/// A byte stream to a node, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin> Stream for S {}

impl Dialer {
    /// The dialer of the node at `addr`, signing in with `redis`; TLS with `tls` when
    /// `addr` says TLS (whatever TLS parameters `addr` carries are the redis client's, and
    /// not used).
    pub fn new(
        addr: &ConnectionAddr,
        redis: RedisConnectionInfo,
        tls: Option<&ClientTls>,
    ) -> Result<Dialer, RedisError> {
        let (host, port) = match addr {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                (host.clone(), *port)
            }
            other => {
                return Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "not a TCP address",
                    other.to_string(),
                )))
            }
        };
        let tls = match (addr, tls) {
            (ConnectionAddr::TcpTls { .. }, Some(tls)) => Some(tls.for_host(&host)?),
            (ConnectionAddr::TcpTls { .. }, None) => {
                return Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "TLS without `store.tls`",
                )))
            }
            _ => None,
        };
        Ok(Dialer {
            host,
            port,
            tls,
            redis,
        })
    }

    /// A new TCP (and TLS) stream to the node.
    async fn stream(&self) -> Result<Box<dyn Stream>, RedisError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
            None => Box::new(tcp),
        })
    }

    /// A new multiplexed connection, signed in (its driver spawned on the runtime).
    pub async fn multiplexed(&self) -> Result<MultiplexedConnection, RedisError> {
        let made = async {
            let stream = self.stream().await?;
            let config = AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
            MultiplexedConnection::new_with_config(&self.redis, stream, config).await
        };
        let (con, driver) = within(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, made).await?;
        tokio::spawn(driver);
        Ok(con)
    }

    /// A new connection for a subscription, signed in.
    pub async fn pubsub(&self) -> Result<PubSub, RedisError> {
        let made = async { PubSub::new(&self.redis, self.stream().await?).await };
        within(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, made).await
    }
}

/// `future`, or a timeout error after `limit`.
async fn within<T>(
    limit: Duration,
    future: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| Err(super::timed_out()))
}

/// The TLS client side of the store: the roots (`store.tls.ca_file`, else the top-level
/// `tls.ca_file`, else the web PKI roots), the client certificate, and the name every
/// node's certificate is verified against when it is not the node's host.
pub(super) struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// Reads `tls` (already checked by the config; an error here names what is wrong).
    pub fn new(tls: &RedisTls) -> Result<ClientTls, RedisError> {
        let invalid = |what: &'static str, detail: String| {
            RedisError::from((redis::ErrorKind::InvalidClientConfig, what, detail))
        };
        let mut roots = rustls::RootCertStore::empty();
        match tls.ca_pem.as_deref() {
            Some(mut pem) => {
                for cert in rustls_pemfile::certs(&mut pem) {
                    let cert = cert.map_err(|e| invalid("store CA", e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| invalid("store CA", e.to_string()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS versions", e.to_string()))?
            .with_root_certificates(roots);
        let config = match &tls.client {
            Some(client) => {
                let chain: Vec<_> = rustls_pemfile::certs(&mut client.cert_pem.as_slice())
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid("store client certificate", e.to_string()))?;
                let key =
                    rustls_pemfile::private_key(&mut client.key_pem.expose_secret().as_bytes())
                        .ok()
                        .flatten()
                        .ok_or_else(|| {
                            invalid("store client key", "no usable private key".into())
                        })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid("store client certificate", e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        let server_name = match tls.server_name.as_deref() {
            Some(name) => Some(
                ServerName::try_from(name.to_owned())
                    .map_err(|e| invalid("store.tls.server_name", e.to_string()))?,
            ),
            None => None,
        };
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The connector and the name to verify for a node at `host`.
    fn for_host(
        &self,
        host: &str,
    ) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), RedisError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_owned()).map_err(|e| {
                RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "not a host name TLS can verify",
                    e.to_string(),
                ))
            })?,
        };
        Ok((self.connector.clone(), name))
    }
}

/// One data node: how to reach it, and the multiplexed connection commands share.
pub(super) struct Node {
    dialer: Dialer,
    /// `host:port`, for logs and errors.
    pub endpoint: String,
    shared: ArcSwapOption<Shared>,
    /// One try to connect at a time; when the last one failed, and its cause in words.
    dialing: Mutex<Option<(Instant, String)>>,
}

/// The connection commands share now (compared by address: see [`Node::lost`]).
pub(super) struct Shared {
    pub con: MultiplexedConnection,
}

impl Node {
    pub fn new(dialer: Dialer, endpoint: String) -> Node {
        Node {
            dialer,
            endpoint,
            shared: ArcSwapOption::empty(),
            dialing: Mutex::new(None),
        }
    }

    /// As [`Node::new`], with `con` (made by `dialer`) as the shared connection.
    pub fn connected(dialer: Dialer, endpoint: String, con: MultiplexedConnection) -> Node {
        let node = Node::new(dialer, endpoint);
        node.shared.store(Some(Arc::new(Shared { con })));
        node
    }

    /// The shared connection, made now if there is none (unless the last try failed less
    /// than [`REDIAL_DELAY`] ago: then its cause).
    pub async fn connection(&self) -> Result<Arc<Shared>, RedisError> {
        if let Some(shared) = self.shared.load_full() {
            return Ok(shared);
        }
        let mut failed = self.dialing.lock().await;
        if let Some(shared) = self.shared.load_full() {
            return Ok(shared);
        }
        if let Some((at, why)) = failed.as_ref() {
            if at.elapsed() < REDIAL_DELAY {
                return Err(failed_recently(why));
            }
        }
        match self.dialer.multiplexed().await {
            Ok(con) => {
                *failed = None;
                let shared = Arc::new(Shared { con });
                self.shared.store(Some(Arc::clone(&shared)));
                Ok(shared)
            }
            Err(e) => {
                *failed = Some((Instant::now(), e.kind_text()));
                Err(e)
            }
        }
    }

    /// Drops `shared` after a command on it met `error`, if that says the connection is
    /// broken (the next command makes a new one).
    pub fn lost(&self, shared: &Arc<Shared>, error: &RedisError) {
        let broken = error.is_connection_dropped()
            || error.is_io_error()
            || error.is_timeout()
            || error.is_unrecoverable_error();
        if broken {
            self.shared
                .compare_and_swap(&Some(Arc::clone(shared)), None::<Arc<Shared>>);
        }
    }

    /// A new connection of its own: to learn why connecting fails (see `RedisStore::reason`).
    pub async fn dial(&self) -> Result<MultiplexedConnection, RedisError> {
        self.dialer.multiplexed().await
    }

    /// A new connection for a subscription.
    pub async fn pubsub(&self) -> Result<PubSub, RedisError> {
        self.dialer.pubsub().await
    }
}

/// The error of a command while the last try to connect, less than [`REDIAL_DELAY`] ago,
/// failed for `why`.
pub(super) fn failed_recently(why: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        FailedRecently(why.to_owned()),
    ))
}

/// The cause of the last failed try to connect, in words.
#[derive(Debug)]
pub(super) struct FailedRecently(pub String);

impl std::fmt::Display for FailedRecently {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FailedRecently {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_that_failed_is_dialed_again_only_after_the_delay() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = ConnectionAddr::Tcp("127.0.0.1".into(), port);
        let dialer = Dialer::new(&addr, RedisConnectionInfo::default(), None).unwrap();
        let node = Node::new(dialer, format!("127.0.0.1:{port}"));

        let first = node.connection().await.err().unwrap();
        assert!(first.is_connection_refusal(), "{first}");
        tokio::time::pause();
        let second = node.connection().await.err().unwrap();
        assert!(!second.is_connection_refusal(), "not dialed: {second}");
        assert_eq!(
            second.kind_text(),
            "connection refused",
            "the first try's cause"
        );
        assert!(
            second.is_connection_dropped(),
            "a broken connection, for the sentinels"
        );
        tokio::time::advance(REDIAL_DELAY).await;
        tokio::time::resume();
        let third = node.connection().await.err().unwrap();
        assert!(third.is_connection_refusal(), "dialed again: {third}");
    }
}
