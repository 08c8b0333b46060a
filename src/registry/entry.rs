//! [`Entry`]: one connection as the request path and the admin routes read it.

use crate::config::{Auth, Connection, Definition, Grant, Http2, Upstream};
use crate::grants::Grants;
use crate::instrument::ConnectionInstruments;
use crate::telemetry::Counter;
use crate::token::{self, State};
use http::HeaderValue;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use super::Origin;

/// The port of an `http://` URL that names none.
const HTTP_DEFAULT_PORT: u16 = 80;
/// The port of an `https://` URL that names none.
const HTTPS_DEFAULT_PORT: u16 = 443;

/// The default port of the upstream's protocol.
fn default_port(upstream: &Upstream) -> u16 {
    if upstream.scheme == http::uri::Scheme::HTTPS {
        HTTPS_DEFAULT_PORT
    } else {
        HTTP_DEFAULT_PORT
    }
}

/// One connection as the proxy and admin routes see it.
pub struct Entry {
    pub conn: Arc<Connection>,
    /// What the per-worker upstream pools key its connections by.
    pub origin: Origin,
    /// The upstream authority as a ready `Host` value.
    pub host_header: HeaderValue,
    pub counters: ProxyCounters,
    /// The current token and its status (a static credential leaves it empty).
    pub tokens: Arc<token::Cache>,
    /// A runtime connection's definition, without its secrets (None: a connection of the
    /// config file).
    pub runtime: Option<Arc<Definition>>,
    /// `grants: per_user`: the end users' grants this process holds (`tokens` then holds
    /// none, only the counters they share).
    pub grants: Option<Arc<crate::grants::Grants>>,
    /// The HTTP version its requests go upstream in, as far as this process knows.
    pub version: UpstreamVersion,
}

/// The HTTP version a connection's requests go upstream in ([`Http2`]): fixed by `never`
/// and `always` (and by `auto` over plain http, which is HTTP/1.1), learned from the
/// upstream's ALPN choice by `auto` over https. One relaxed load per request: the fast
/// path sends only what is known to go as HTTP/1.1.
#[derive(Debug)]
pub struct UpstreamVersion(AtomicU8);

/// What [`UpstreamVersion`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    /// `auto` over https, before the first connection chose.
    Unknown,
    Http2,
}

impl UpstreamVersion {
    fn of(conn: &Connection) -> UpstreamVersion {
        let https = conn.upstream.scheme == http::uri::Scheme::HTTPS;
        let known = match conn.upstream_http2 {
            Http2::Never => Version::Http1,
            Http2::Always => Version::Http2,
            Http2::Auto if https => Version::Unknown,
            Http2::Auto => Version::Http1,
        };
        UpstreamVersion(AtomicU8::new(known as u8))
    }

    pub fn get(&self) -> Version {
        match self.0.load(Ordering::Relaxed) {
            0 => Version::Http1,
            1 => Version::Unknown,
            _ => Version::Http2,
        }
    }

    /// What a new connection to the upstream chose (by ALPN): kept for the next requests.
    pub fn learned(&self, h2: bool) {
        let version = if h2 { Version::Http2 } else { Version::Http1 };
        self.0.store(version as u8, Ordering::Relaxed);
    }
}

/// Per-connection request counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Requests forwarded upstream with a credential.
    pub proxied: Counter,
    /// Request and connect durations, upstream errors, and the requests refused because
    /// no usable token was held (by the state the 503 reported).
    pub requests: ConnectionInstruments,
    /// Upstream 401s to requests that carried a token, by what came of them.
    pub unauthorized: crate::instrument::unauthorized::Counters,
}

impl Entry {
    /// The entry of a connection without a token yet.
    pub fn new(conn: Arc<Connection>) -> Entry {
        let state = match &conn.auth {
            _ if conn.per_user.is_some() => State::PerUser,
            Auth::OAuth2(o) if o.grant == Grant::AuthorizationCode => State::NeedsAuthorization,
            Auth::OAuth2(_) => State::Pending,
            _ => State::Static,
        };
        Entry::with_tokens(conn, Arc::new(token::Cache::new(state)), None)
    }

    /// The entry of a connection that takes over `tokens` and, if it has per-user grants
    /// with the same settings, `grants` (a changed definition under which they stay valid).
    pub fn with_tokens(
        conn: Arc<Connection>,
        tokens: Arc<token::Cache>,
        grants: Option<&Arc<Grants>>,
    ) -> Entry {
        let host_header = HeaderValue::from_str(conn.upstream.authority.as_str())
            .expect("an Authority is a valid header value");
        let grants = conn.per_user.map(|settings| match grants {
            Some(g) if g.settings() == settings => Arc::clone(g),
            _ => Arc::new(Grants::new(settings, Arc::clone(&tokens.counters))),
        });
        Entry {
            origin: Origin::of(&conn),
            version: UpstreamVersion::of(&conn),
            conn,
            host_header,
            counters: ProxyCounters::default(),
            tokens,
            runtime: None,
            grants,
        }
    }

    /// Whether forward mode reaches it at `port` (as [`Registry::by_authority`] says).
    pub(super) fn forwards_at(&self, port: Option<u16>) -> bool {
        let upstream = &self.conn.upstream;
        let implicit = matches!(port, None | Some(HTTP_DEFAULT_PORT));
        !self.conn.reverse_only
            && (port == Some(upstream.port)
                || (implicit && upstream.port == default_port(upstream)))
    }
}
