//! Intercepted `CONNECT` tunnels (`proxy.intercept`, issue 12). [`open`] is called by the
//! `CONNECT` handler ([`super::full::connect`]) once it has decided that `host:port` is a
//! configured connection's: after the 200, the client's TLS is terminated here with the
//! leaf minted for `host` at start ([`crate::ca::mint`]) — only when the ClientHello's SNI
//! is that same host — offering `h2, http/1.1` by ALPN (the driver recognises HTTP/2 by
//! its preface: [`super::h2`]). What [`open`] leaves in the connection's [`Slot`] is that handshake,
//! which yields the decrypted stream: the connection driver ([`super::conn`]) serves it as it serves an accepted socket, with the
//! tunnel's `host:port` as the forward-mode authority ([`super::route::Ask::tunnel`]). Routing, header hygiene,
//! injection and the worker's upstream pools are therefore the forward mode's own.
//!
//! A handshake the client aborts because it does not trust the CA is logged once per
//! client address, as a warning with the fix; later ones at debug level.

use crate::ca::mint::{mint, Minted};
use crate::ca::{CaError, Root};
use arc_swap::ArcSwap;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::AlertDescription;
use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;

/// Client addresses remembered as already warned about; the set starts over beyond it.
const MAX_WARNED_CLIENTS: usize = 4096;

/// The certificates interception serves, and what it remembers of failed handshakes.
/// Locking budget: the request path does one `ArcSwap` load per tunnel; `changing` is taken
/// by what mints (start, a reload, a runtime connection's new host, the renewal), and
/// `warned` only when a handshake fails.
pub struct Interceptor {
    root: Root,
    /// Each configured host's certificates (a change swaps them whole).
    minted: ArcSwap<Minted>,
    /// One minting at a time, so two never undo each other.
    changing: Mutex<()>,
    warned: Mutex<HashSet<IpAddr>>,
}

impl Interceptor {
    /// Mints each of `hosts`' intermediate and leaf (the configured hosts).
    pub fn new(root: Root, hosts: Vec<String>) -> Result<Interceptor, CaError> {
        let minted = mint(&root, &hosts)?;
        Ok(Interceptor {
            root,
            minted: ArcSwap::from_pointee(minted),
            changing: Mutex::new(()),
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// Mints every host's certificates again, and serves them from the next tunnel on.
    pub fn renew(&self) -> Result<(), CaError> {
        let _one = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let hosts: Vec<String> = self.minted.load().by_host.keys().cloned().collect();
        self.minted.store(Arc::new(mint(&self.root, &hosts)?));
        Ok(())
    }

    /// After a reload, or a runtime connection's change: the certificates of exactly
    /// `hosts` — a host new to them minted, one no longer among them dropped, the others
    /// kept as they are. On failure the old ones stay.
    pub fn renew_for(&self, hosts: &[String]) -> Result<(), CaError> {
        let _one = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let running = self.minted.load_full();
        let mut next = Minted::clone(&running);
        for host in hosts {
            if !next.by_host.contains_key(&host.to_ascii_lowercase()) {
                next = next.with(&self.root, host)?;
            }
        }
        let wanted: HashSet<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        for host in running.by_host.keys() {
            if !wanted.contains(host) {
                next = next.without(host);
            }
        }
        self.minted.store(Arc::new(next));
        Ok(())
    }

    /// One host comes (`present`) or goes: its certificates alone are minted or dropped.
    pub fn host(&self, host: &str, present: bool) -> Result<(), CaError> {
        let _one = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let running = self.minted.load_full();
        let next = match (
            present,
            running.by_host.contains_key(&host.to_ascii_lowercase()),
        ) {
            (true, false) => running.with(&self.root, host)?,
            (false, true) => running.without(host),
            _ => return Ok(()),
        };
        self.minted.store(Arc::new(next));
        Ok(())
    }

    /// Renews every `every` until `shutdown` (the leaves' validity is short).
    pub async fn renew_every(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.renew() {
                Ok(()) => tracing::info!("interception certificates renewed"),
                Err(e) => tracing::error!(error = %e, "interception certificates not renewed"),
            }
        }
    }

    fn config(&self, host: &str) -> Option<Arc<rustls::ServerConfig>> {
        self.minted.load().by_host.get(host).cloned()
    }

    /// Whether this is the first failure from `client` (then it is warned about).
    fn first_failure(&self, client: IpAddr) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.len() >= MAX_WARNED_CLIENTS {
            warned.clear();
        }
        warned.insert(client)
    }
}

/// Where the `CONNECT` handler leaves an app connection's tunnel: the connection's own
/// task runs it once hyper is done with the connection ([`super::conn`]), so the tunnel
/// keeps the connection's `proxy.max_connections` permit and ends at shutdown like any
/// connection.
pub type Slot = Rc<RefCell<Option<Tunnel>>>;

/// A tunnel left in a [`Slot`].
pub enum Tunnel {
    /// A passthrough tunnel ([`super::full::passthrough`]): runs to its end.
    Blind(Pin<Box<dyn Future<Output = ()>>>),
    /// An intercepted tunnel: its TLS handshake, which yields the decrypted stream and the
    /// tunnel's `host:port` (None: no handshake, or the wrong host; logged).
    Intercepted(Pin<Box<dyn Future<Output = Option<Terminated>>>>),
}

/// An intercepted tunnel once its TLS is terminated: the decrypted stream, and what the
/// `CONNECT` said.
pub type Terminated = (Decrypted, Rc<Inside>);

/// What the requests inside an intercepted tunnel keep of its `CONNECT`.
#[derive(Debug)]
pub struct Inside {
    /// The tunnel's `host:port`: their forward-mode authority ([`super::route::Ask::tunnel`]).
    pub authority: Box<str>,
    /// The `CONNECT`'s `Proxy-Authorization`, whose Basic user name is the subject of their
    /// requests to a per-user connection ([`crate::grants::subject`]).
    pub proxy_authorization: Option<Box<[u8]>>,
}

/// The decrypted stream of an intercepted tunnel.
pub type Decrypted = tokio_rustls::server::TlsStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Takes over the `CONNECT` request `req` from `peer` to `authority` (`host:port`, host
/// lower case without brackets in `host`): once hyper hands over the connection, the TLS
/// handshake (each of its steps within `timeout`), left in `slot`.
pub fn open(
    interceptor: Arc<Interceptor>,
    req: Request<Incoming>,
    peer: SocketAddr,
    host: String,
    authority: String,
    timeout: Duration,
    slot: &Slot,
) {
    let proxy_authorization =
        (req.headers().get(http::header::PROXY_AUTHORIZATION)).map(|v| Box::from(v.as_bytes()));
    *slot.borrow_mut() = Some(Tunnel::Intercepted(Box::pin(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT upgrade failed");
                return None;
            }
        };
        let acceptor =
            LazyConfigAcceptor::new(rustls::server::Acceptor::default(), TokioIo::new(upgraded));
        let start = match tokio::time::timeout(timeout, acceptor).await {
            Ok(Ok(start)) => start,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "no TLS ClientHello in the tunnel");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "no TLS ClientHello in the tunnel in time");
                return None;
            }
        };
        let sni = start
            .client_hello()
            .server_name()
            .map(|name| name.trim_end_matches('.').to_ascii_lowercase());
        let matches = match &sni {
            Some(name) => *name == host,
            // A client sends no SNI for an IP address.
            None => host.parse::<IpAddr>().is_ok(),
        };
        if !matches {
            tracing::warn!(client = %peer.ip(), connect = %authority, sni = sni.as_deref().unwrap_or("(none)"),
                "intercepted tunnel refused: the TLS ClientHello names another host than the CONNECT");
            return None;
        }
        let Some(config) = interceptor.config(&host) else {
            tracing::error!(%host, "no interception certificate for a configured host");
            return None;
        };
        match tokio::time::timeout(timeout, start.into_stream(config)).await {
            Ok(Ok(tls)) => {
                let inside = Inside {
                    authority: authority.into(),
                    proxy_authorization,
                };
                return Some((tls, Rc::new(inside)));
            }
            Ok(Err(e)) => handshake_failed(&interceptor, peer, &host, &e),
            Err(_) => tracing::debug!(%peer, %host, "TLS handshake in the tunnel timed out"),
        }
        None
    })));
}

/// Logs a failed handshake: a client refusing the certificate once per client address,
/// with the fix; anything else, and repeats, at debug level.
fn handshake_failed(interceptor: &Interceptor, peer: SocketAddr, host: &str, e: &std::io::Error) {
    let alert = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::AlertReceived(alert) => Some(*alert),
            _ => None,
        });
    let distrust = matches!(
        alert,
        Some(
            AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
        )
    );
    if distrust && interceptor.first_failure(peer.ip()) {
        tracing::warn!(client = %peer.ip(), %host, alert = ?alert.unwrap_or(AlertDescription::UnknownCA),
            "a client refused tokenwarden's certificate for {host}: it does not trust the interception CA (proxy.intercept.ca_cert). Trust it: curl --cacert / CURL_CA_BUNDLE, REQUESTS_CA_BUNDLE or SSL_CERT_FILE (a bundle from `tokenwarden ca bundle`), NODE_EXTRA_CA_CERTS (read at start); see docs/local-proxy.md. Further failures from this client are logged at debug level");
    } else {
        tracing::debug!(client = %peer.ip(), %host, error = %e, "TLS handshake in the tunnel failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host comes and goes alone (a runtime connection's): the others' certificates are
    /// the same ones, and a reload's `renew_for` mints only what is new.
    #[test]
    fn one_host_is_minted_or_dropped_without_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let files = crate::ca::init(dir.path()).unwrap();
        let root = Root::load(&files.cert, &files.key).unwrap();
        let interceptor = Interceptor::new(root, vec!["a.example".to_owned()]).unwrap();
        let a = interceptor.config("a.example").unwrap();
        assert!(interceptor.config("b.example").is_none());
        interceptor.host("B.example", true).unwrap();
        assert!(interceptor.config("b.example").is_some());
        assert!(Arc::ptr_eq(&a, &interceptor.config("a.example").unwrap()));
        interceptor.host("b.example", false).unwrap();
        assert!(interceptor.config("b.example").is_none());
        let hosts = ["a.example".to_owned(), "c.example".to_owned()];
        interceptor.renew_for(&hosts).unwrap();
        assert!(Arc::ptr_eq(&a, &interceptor.config("a.example").unwrap()));
        assert!(interceptor.config("c.example").is_some());
        interceptor.renew_for(&hosts[1..]).unwrap();
        assert!(interceptor.config("a.example").is_none());
        interceptor.renew().unwrap();
        assert!(
            interceptor.config("c.example").is_some(),
            "renewed, still there"
        );
    }
}
