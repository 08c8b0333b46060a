//! The set of connections the proxy routes to, with their lookup tables: by key (reverse
//! mode) and by upstream host (forward mode). Built once from the config; read-only.
//!
//! An [`Entry`] is what the request path needs of one connection: the validated
//! [`Connection`], its position (which indexes the per-worker upstream pools), the ready
//! `Host` value, the proxy's counters, and the connection's [`token::Cache`].

use crate::config::{Auth, Connection, Grant, Upstream};
use crate::telemetry::Counter;
use crate::token::{self, State};
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::Arc;

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
    /// Position in the registry (indexes per-worker upstream pools).
    pub index: usize,
    /// The upstream authority as a ready `Host` value.
    pub host_header: HeaderValue,
    pub counters: ProxyCounters,
    /// The current token and its status (a static credential leaves it empty).
    pub tokens: Arc<token::Cache>,
}

/// Per-connection request counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Requests forwarded upstream with a credential.
    pub proxied: Counter,
    /// Requests refused because no usable token was held.
    pub no_token: Counter,
}

impl Entry {
    pub fn new(conn: Arc<Connection>, index: usize) -> Entry {
        let state = match &conn.auth {
            Auth::OAuth2(o) if o.grant == Grant::AuthorizationCode => State::NeedsAuthorization,
            Auth::OAuth2(_) => State::Pending,
            _ => State::Static,
        };
        let host_header = HeaderValue::from_str(conn.upstream.authority.as_str())
            .expect("an Authority is a valid header value");
        Entry {
            conn,
            index,
            host_header,
            counters: ProxyCounters::default(),
            tokens: Arc::new(token::Cache::new(state)),
        }
    }
}

#[derive(Default)]
pub struct Registry {
    pub connections: Vec<Arc<Entry>>,
    by_key: HashMap<String, usize>,
    /// Lower-case host → connections on that host (several may differ by port).
    by_host: HashMap<String, Vec<usize>>,
}

impl Registry {
    pub fn new(connections: &[Arc<Connection>]) -> Registry {
        let mut r = Registry::default();
        for (i, c) in connections.iter().enumerate() {
            r.connections.push(Arc::new(Entry::new(Arc::clone(c), i)));
            r.by_key.insert(c.key.clone(), i);
            r.by_host
                .entry(c.upstream.host.clone())
                .or_default()
                .push(i);
        }
        r
    }

    pub fn get(&self, key: &str) -> Option<&Arc<Entry>> {
        self.by_key.get(key).map(|&i| &self.connections[i])
    }

    /// Forward mode: the connection whose upstream is `host` (case-insensitive, trailing
    /// dot ignored) on `port`, the port of an `http://` request target (`None`: not
    /// written, so 80). A connection matches the port it is configured on, and a request
    /// without a port (or with the `http://` default, 80) also matches a connection on its
    /// protocol's default port: `http://api.example.com/` reaches `https://api.example.com`.
    pub fn by_authority(&self, host: &str, port: Option<u16>) -> Option<&Arc<Entry>> {
        let host = host.trim_end_matches('.');
        let found = match self.by_host.get(host) {
            Some(found) => found,
            None => self.by_host.get(&host.to_ascii_lowercase())?,
        };
        let implicit = matches!(port, None | Some(HTTP_DEFAULT_PORT));
        found.iter().map(|&i| &self.connections[i]).find(|c| {
            let upstream = &c.conn.upstream;
            port == Some(upstream.port) || (implicit && upstream.port == default_port(upstream))
        })
    }

    /// `CONNECT host:port`: the connection whose upstream is `host` on exactly `port`
    /// (case-insensitive, trailing dot ignored).
    pub fn by_tunnel(&self, host: &str, port: u16) -> Option<&Arc<Entry>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let found = self.by_host.get(&host)?;
        found
            .iter()
            .map(|&i| &self.connections[i])
            .find(|c| c.conn.upstream.port == port)
    }

    /// The ports the connections on `host` are configured on.
    pub fn ports_of(&self, host: &str) -> Vec<u16> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let found = self.by_host.get(&host).map_or(&[][..], Vec::as_slice);
        found
            .iter()
            .map(|&i| self.connections[i].conn.upstream.port)
            .collect()
    }

    /// Every configured upstream host, once each (lower case), in configuration order.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for entry in &self.connections {
            let host = &entry.conn.upstream.host;
            if !hosts.contains(host) {
                hosts.push(host.clone());
            }
        }
        hosts
    }

    /// Whether some connection's upstream host is `host`.
    pub fn knows_host(&self, host: &str) -> bool {
        self.by_host
            .contains_key(&host.trim_end_matches('.').to_ascii_lowercase())
    }
}
