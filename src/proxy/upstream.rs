//! Upstream connections: a pooled keep-alive HTTP/1.1 client over TCP or rustls, whose DNS
//! resolver is the SSRF guard — a connection's host *name* may only resolve to public
//! addresses unless the connection sets `allow_private_network`, and the client connects
//! to exactly the addresses that were checked. A host written as an IP literal is the
//! operator's explicit choice and is not resolved (so not checked).

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long an idle upstream connection stays in the pool.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host.
pub const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// The request body sent upstream: the app's body streamed, or a body tokenwarden built.
pub type UpstreamBody =
    http_body_util::Either<hyper::body::Incoming, http_body_util::Full<bytes::Bytes>>;
pub type UpstreamClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, UpstreamBody>;

/// Test hook: fixed answers for host names, instead of the system resolver.
pub type StaticHosts = HashMap<String, Vec<IpAddr>>;

/// Builds the pooled upstream client.
pub fn client(
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    resolver: GuardedResolver,
) -> UpstreamClient {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .build(https)
}

/// The SSRF-guarding resolver.
#[derive(Clone, Default)]
pub struct GuardedResolver {
    /// Host names whose connection set `allow_private_network`.
    allow_private: Arc<HashSet<String>>,
    overrides: Arc<StaticHosts>,
}

impl GuardedResolver {
    pub fn new(allow_private: HashSet<String>, overrides: StaticHosts) -> GuardedResolver {
        GuardedResolver {
            allow_private: Arc::new(allow_private),
            overrides: Arc::new(overrides),
        }
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
            let found: Vec<SocketAddr> = match this.overrides.get(&host) {
                Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            if this.allow_private.contains(&host) {
                return Ok(found.into_iter());
            }
            let public: Vec<SocketAddr> =
                found.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves only to private, loopback or link-local addresses; set allow_private_network on its connection to allow that"),
                ));
            }
            Ok(public.into_iter())
        })
    }
}

/// Loopback, private, link-local (incl. cloud metadata), shared, ULA, unspecified, multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (o[0] == 100 && (64..128).contains(&o[1])) // 100.64.0.0/10 shared
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // ULA fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn guard_refuses_names_that_resolve_privately_unless_allowed() {
        let overrides: StaticHosts = [
            (
                "internal.example".to_string(),
                vec!["127.0.0.1".parse().unwrap()],
            ),
            (
                "api.example".to_string(),
                vec![
                    "127.0.0.1".parse().unwrap(),
                    "93.184.216.34".parse().unwrap(),
                ],
            ),
        ]
        .into();
        let mut guard = GuardedResolver::new(HashSet::new(), overrides.clone());
        let err = guard
            .call("internal.example".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        // only the checked public address is handed to the connector
        let addrs: Vec<_> = guard
            .call("api.example".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec!["93.184.216.34:0".parse().unwrap()]);
        let mut allowed = GuardedResolver::new(["internal.example".to_string()].into(), overrides);
        assert_eq!(
            allowed
                .call("internal.example.".parse().unwrap())
                .await
                .unwrap()
                .count(),
            1
        );
    }
}
