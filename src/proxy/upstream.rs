//! The upstream dialer both pools use ([`Dialer::open`]: SSRF-guarded resolution, TCP,
//! TLS by rustls, into a [`Stream`]), and the SSRF guard — a connection's host *name* may
//! only resolve to public addresses unless that connection sets `allow_private_network`,
//! and the dialer connects to exactly the addresses that were checked. A host written as
//! an IP literal is the operator's explicit choice and is not resolved (so not checked).
//!
//! The flag travels with each dial, from the connection being served: it is not a property
//! of the host name, so another connection on the same name keeps the guard. Both pools
//! key their idle links by [`Origin`](crate::registry::Origin), which holds the flag, so a
//! link one connection was allowed to open is never handed to one without it. The limits
//! both pools keep on idle links ([`POOL_IDLE_TIMEOUT`], [`POOL_MAX_IDLE`]) live here with
//! the dialer, so neither engine imports the other's pool for them.

use crate::config::{Connection, Upstream};
use http::uri::Scheme;
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long an idle upstream connection may wait for reuse (both pools).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream, per worker (both pools).
pub const POOL_MAX_IDLE: usize = 1024;

/// Why an upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{0}")]
    Connect(String),
    #[error("connecting to {target} timed out after {after:?}")]
    ConnectTimeout { target: String, after: Duration },
    /// TCP connected; the TLS handshake failed.
    #[error("{0}")]
    Tls(String),
}

impl DialError {
    /// Its kind, for `tokenwarden_upstream_errors_total` (a TLS handshake that timed out
    /// counts as a connect timeout).
    pub fn kind(&self) -> crate::instrument::UpstreamError {
        use crate::instrument::UpstreamError;
        match self {
            DialError::Connect(_) | DialError::ConnectTimeout { .. } => UpstreamError::Connect,
            DialError::Tls(_) => UpstreamError::Tls,
        }
    }
}

/// What a dial asks the upstream to speak: by ALPN over https, by prior knowledge over
/// http (where only [`Offer::Http2`] speaks HTTP/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// ALPN `http/1.1` (the fast path's links, and `upstream_http2: never`).
    Http1,
    /// ALPN `h2, http/1.1`: the upstream chooses (`upstream_http2: auto`).
    Either,
    /// ALPN `h2` only, or h2c with prior knowledge (`upstream_http2: always`).
    Http2,
}

impl Offer {
    /// The ALPN protocols it offers.
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Offer::Http1 => vec![ALPN_HTTP1.to_vec()],
            Offer::Either => vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()],
            Offer::Http2 => vec![ALPN_H2.to_vec()],
        }
    }
}

/// The ALPN names of HTTP/1.1 and HTTP/2.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
pub const ALPN_H2: &[u8] = b"h2";

/// Opens upstream connections for one worker's pools.
#[derive(Clone)]
pub struct Dialer {
    /// A TLS connector per [`Offer`] (its index), each with that offer's ALPN.
    tls: [tokio_rustls::TlsConnector; 3],
    /// The configuration without ALPN, for the connections that present a client
    /// certificate.
    config: Arc<rustls::ClientConfig>,
    resolver: GuardedResolver,
    connect_timeout: Duration,
}

impl Dialer {
    /// A dialer over `tls`, offering by ALPN what each dial asks ([`Offer`]).
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        resolver: GuardedResolver,
        connect_timeout: Duration,
    ) -> Dialer {
        let with = |offer: Offer| {
            let mut config = (*tls).clone();
            config.alpn_protocols = offer.alpn();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        };
        Dialer {
            tls: [with(Offer::Http1), with(Offer::Either), with(Offer::Http2)],
            config: tls,
            resolver,
            connect_timeout,
        }
    }

    /// Opens a connection to `conn`'s upstream: resolve (through the SSRF guard, with
    /// `conn`'s own `allow_private_network`), TCP, TLS for https offering `offer` by ALPN
    /// (what was chosen: [`Stream::speaks_h2`]).
    pub async fn open(&self, conn: &Connection, offer: Offer) -> Result<Stream, DialError> {
        let upstream = &conn.upstream;
        let addrs = self.resolve(conn).await?;
        let timed_out = || DialError::ConnectTimeout {
            target: upstream.authority.to_string(),
            after: self.connect_timeout,
        };
        let tcp = tokio::time::timeout(self.connect_timeout, connect_any(upstream, &addrs))
            .await
            .map_err(|_| timed_out())??;
        let _ = tcp.set_nodelay(true);
        if upstream.scheme != Scheme::HTTPS {
            return Ok(Stream::Plain(tcp));
        }
        let name = ServerName::try_from(upstream.host.clone()).map_err(|_| {
            DialError::Connect(format!("{} is not a valid TLS server name", upstream.host))
        })?;
        let connector = match upstream_certificate(conn) {
            Some(identity) => {
                let mut config = crate::tls::presenting(&self.config, identity);
                config.alpn_protocols = offer.alpn();
                tokio_rustls::TlsConnector::from(Arc::new(config))
            }
            None => self.tls[offer as usize].clone(),
        };
        let tls = tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| {
                let why = crate::tls::in_words(&e).unwrap_or_else(|| e.to_string());
                let why = match offer {
                    Offer::Http2 if refused_alpn(&e) => format!("the upstream does not speak HTTP/2 (it refused ALPN h2), and upstream_http2 is always ({why})"),
                    _ => why,
                };
                DialError::Tls(format!(
                    "TLS handshake with {} failed: {why}",
                    upstream.authority
                ))
            })?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    async fn resolve(&self, conn: &Connection) -> Result<Vec<SocketAddr>, DialError> {
        let upstream = &conn.upstream;
        if let Ok(ip) = upstream.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, upstream.port)]);
        }
        let allow_private = conn.allow_private_network;
        let found = self.resolver.resolve(&upstream.host, allow_private);
        let found = found.await.map_err(|e| {
            DialError::Connect(match e.kind() {
                // The SSRF guard: its message names the host and the fix.
                std::io::ErrorKind::PermissionDenied => e.to_string(),
                _ => format!("cannot resolve {}: {e}", upstream.host),
            })
        })?;
        Ok(found
            .into_iter()
            .map(|a| SocketAddr::new(a.ip(), upstream.port))
            .collect())
    }
}

/// Whether a TLS handshake failed because the server accepts none of the ALPN protocols
/// offered.
fn refused_alpn(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| {
            matches!(
                tls,
                rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
            )
        })
}

/// The client certificate `conn` shows its upstream (`tls_client_auth` with `upstream: true`).
pub fn upstream_certificate(conn: &Connection) -> Option<Arc<rustls::sign::CertifiedKey>> {
    match &conn.client_auth {
        crate::config::ClientAuth::TlsClientAuth(t) if t.upstream => Some(Arc::clone(&t.identity)),
        _ => None,
    }
}

/// The first of `addrs` that accepts; the error names the upstream and every address tried.
async fn connect_any(upstream: &Upstream, addrs: &[SocketAddr]) -> Result<TcpStream, DialError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    let tried: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    Err(DialError::Connect(match last {
        None => format!("{} resolved to no address", upstream.authority),
        Some(e) => format!(
            "cannot connect to {} (tried {}): {e}",
            upstream.authority,
            tried.join(", ")
        ),
    }))
}

/// A connection to an upstream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the upstream chose HTTP/2 by ALPN (never, over plain http).
    pub fn speaks_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(ALPN_H2),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether a connection whose response was read to its end holds nothing more: for
    /// TLS, no decrypted bytes (or close) waiting inside the session, which the socket
    /// check of [`Stream::idle_and_open`] cannot see. No system call.
    pub fn is_clean(&mut self) -> bool {
        match self {
            Stream::Plain(_) => true,
            Stream::Tls(tls) => {
                let mut probe = [0u8; 1];
                let read = std::io::Read::read(&mut tls.get_mut().1.reader(), &mut probe);
                matches!(read, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Whether an idle connection can take a request: nothing arrived on it since its last
    /// response (no close, no stray bytes). Costs a system call only when the socket
    /// became readable while idle.
    pub fn idle_and_open(&self) -> bool {
        let tcp = self.tcp();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: a close or bytes nobody asked for — unless the readiness is stale.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Test hook: fixed answers for host names, instead of the system resolver.
pub type StaticHosts = HashMap<String, Vec<IpAddr>>;

/// The SSRF-guarding resolver. It holds no per-host policy: whether private addresses
/// are allowed comes with each call, from the connection being dialled.
#[derive(Clone, Default)]
pub struct GuardedResolver {
    overrides: Arc<StaticHosts>,
}

impl GuardedResolver {
    pub fn new(overrides: StaticHosts) -> GuardedResolver {
        GuardedResolver {
            overrides: Arc::new(overrides),
        }
    }

    /// Resolves a host *name* (IP literals are never passed here) and keeps only the
    /// addresses the SSRF guard allows: all of them when the connection being dialled set
    /// `allow_private_network` (`allow_private`), else the public ones; none left is a
    /// `PermissionDenied` error saying why. Ports in the answer are 0.
    pub async fn resolve(
        &self,
        name: &str,
        allow_private: bool,
    ) -> std::io::Result<Vec<SocketAddr>> {
        let host = name.trim_end_matches('.').to_ascii_lowercase();
        let found: Vec<SocketAddr> = match self.overrides.get(&host) {
            Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
            None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
        };
        if allow_private {
            return Ok(found);
        }
        let public: Vec<SocketAddr> = found.into_iter().filter(|a| !is_private(a.ip())).collect();
        if public.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{host} resolves only to private, loopback or link-local addresses; set allow_private_network on its connection to allow that"),
            ));
        }
        Ok(public)
    }
}

/// Loopback, private, link-local (incl. cloud metadata), shared, reserved, ULA, site-local,
/// unspecified, multicast — and IPv4-mapped or NAT64 addresses that translate to one.
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
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF protocol assignments
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
                || o[0] >= 240 // 240.0.0.0/4 reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96): the IPv4 address it translates to decides.
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return is_private(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still routed in places)
                || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // 64:ff9b:1::/48 local NAT64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "192.0.0.170",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "fec0::1",
            "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
            "64:ff9b::7f00:1",    // NAT64 of 127.0.0.1
            "64:ff9b:1::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700::1111",
            "172.32.0.1",
            "198.20.0.1",
            "192.0.1.1",
            "64:ff9b::808:808", // NAT64 of 8.8.8.8
        ] {
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
        let guard = GuardedResolver::new(overrides);
        let err = guard.resolve("internal.example", false).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        // only the checked public address is handed to the connector
        let addrs = guard.resolve("api.example", false).await.unwrap();
        assert_eq!(addrs, vec!["93.184.216.34:0".parse().unwrap()]);
        let allowed = guard.resolve("internal.example.", true).await.unwrap();
        assert_eq!(allowed.len(), 1);
    }
}
