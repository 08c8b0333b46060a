//! The set of connections the proxy routes to, with their lookup tables: by key (reverse
//! mode) and by upstream host (forward mode). Built from the config and read-only; a
//! reload builds the next one ([`Registry::reloaded`]) and swaps it in whole.
//!
//! An [`Entry`] is what the request path needs of one connection: the validated
//! [`Connection`], its position (which indexes the per-worker upstream pools), the ready
//! `Host` value, the proxy's counters, and the connection's [`token::Cache`].

use crate::config::{Auth, Connection, Grant, Upstream};
use crate::instrument::ConnectionInstruments;
use crate::runtime::Definition;
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
    /// A runtime connection's definition (None: a connection of the config file).
    pub runtime: Option<Arc<Definition>>,
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
    pub fn new(conn: Arc<Connection>, index: usize) -> Entry {
        let state = match &conn.auth {
            Auth::OAuth2(o) if o.grant == Grant::AuthorizationCode => State::NeedsAuthorization,
            Auth::OAuth2(_) => State::Pending,
            _ => State::Static,
        };
        Entry::with_tokens(conn, index, Arc::new(token::Cache::new(state)))
    }

    /// The entry of a connection that takes over `tokens` (a changed definition under
    /// which they stay valid).
    pub fn with_tokens(conn: Arc<Connection>, index: usize, tokens: Arc<token::Cache>) -> Entry {
        let host_header = HeaderValue::from_str(conn.upstream.authority.as_str())
            .expect("an Authority is a valid header value");
        Entry {
            conn,
            index,
            host_header,
            counters: ProxyCounters::default(),
            tokens,
            runtime: None,
        }
    }
}

/// What a reload changed, by connection.
#[derive(Default)]
pub struct Changes {
    /// Same definition: the entry (tokens, refresher, counters) is kept.
    pub kept: Vec<String>,
    /// A new definition under an existing key: a new entry (new counters, a new refresher).
    /// It takes over the old entry's tokens when they stay valid under it (the same
    /// [`Connection::grant_identity`]); otherwise it starts afresh and its key is in
    /// `tokens_dropped`.
    pub changed: Vec<Arc<Entry>>,
    /// The changed connections whose tokens were obtained under what changed (token
    /// endpoint, client, upstream or scope): never sent under the new definition.
    pub tokens_dropped: Vec<String>,
    pub added: Vec<Arc<Entry>>,
    pub removed: Vec<Arc<Entry>>,
}

#[derive(Default)]
pub struct Registry {
    pub connections: Vec<Arc<Entry>>,
    /// The next free position: positions are never reused, so per-worker upstream pools
    /// indexed by them never mix a removed connection's links with a new one's.
    next_index: usize,
    by_key: HashMap<String, usize>,
    /// Lower-case host → connections on that host (several may differ by port).
    by_host: HashMap<String, Vec<usize>>,
}

impl Registry {
    pub fn new(connections: &[Arc<Connection>]) -> Registry {
        let entries = connections
            .iter()
            .enumerate()
            .map(|(i, c)| Arc::new(Entry::new(Arc::clone(c), i)))
            .collect();
        Registry::of(entries, connections.len())
    }

    fn of(entries: Vec<Arc<Entry>>, next_index: usize) -> Registry {
        let mut r = Registry {
            next_index,
            ..Registry::default()
        };
        for (i, entry) in entries.into_iter().enumerate() {
            r.by_key.insert(entry.conn.key.clone(), i);
            r.by_host
                .entry(entry.conn.upstream.host.clone())
                .or_default()
                .push(i);
            r.connections.push(entry);
        }
        r
    }

    /// The registry for a reloaded config: a connection with the same fingerprint keeps
    /// its entry; one whose definition changed gets a new entry (a new position; its token
    /// cache kept when the grant identity is the same, else a new one); new keys get new
    /// entries; the rest are removed.
    pub fn reloaded(&self, connections: &[Arc<Connection>]) -> (Registry, Changes) {
        let mut changes = Changes::default();
        let mut next_index = self.next_index;
        let mut entries = Vec::with_capacity(connections.len());
        for c in connections {
            let entry = match self.get(&c.key) {
                Some(old) if old.conn.fingerprint == c.fingerprint => {
                    changes.kept.push(c.key.clone());
                    Arc::clone(old)
                }
                Some(old) => {
                    let conn = Arc::clone(c);
                    let entry = if old.conn.grant_identity == c.grant_identity {
                        Entry::with_tokens(conn, next_index, Arc::clone(&old.tokens))
                    } else {
                        changes.tokens_dropped.push(c.key.clone());
                        Entry::new(conn, next_index)
                    };
                    let entry = Arc::new(entry);
                    changes.changed.push(Arc::clone(&entry));
                    next_index += 1;
                    entry
                }
                None => {
                    let entry = Arc::new(Entry::new(Arc::clone(c), next_index));
                    changes.added.push(Arc::clone(&entry));
                    next_index += 1;
                    entry
                }
            };
            entries.push(entry);
        }
        changes.removed = self
            .connections
            .iter()
            .filter(|e| e.runtime.is_none())
            .filter(|e| !connections.iter().any(|c| c.key == e.conn.key))
            .cloned()
            .collect();
        // Runtime connections are not the file's: a reload keeps them.
        let runtime = self.connections.iter().filter(|e| e.runtime.is_some());
        entries.extend(
            runtime
                .filter(|e| !connections.iter().any(|c| c.key == e.conn.key))
                .cloned(),
        );
        (Registry::of(entries, next_index), changes)
    }

    /// The registry with `entry` added, or in place of the entry of its key.
    pub fn with(&self, entry: Arc<Entry>) -> Registry {
        let mut entries = self.connections.clone();
        let next_index = self.next_index.max(entry.index + 1);
        match self.by_key.get(&entry.conn.key) {
            Some(&i) => entries[i] = entry,
            None => entries.push(entry),
        }
        Registry::of(entries, next_index)
    }

    /// The registry without the connection `key`.
    pub fn without(&self, key: &str) -> Registry {
        let entries = (self.connections.iter())
            .filter(|e| e.conn.key != key)
            .cloned()
            .collect();
        Registry::of(entries, self.next_index)
    }

    /// One more than the highest position in use (for sizing per-worker pools).
    pub fn positions(&self) -> usize {
        self.next_index
    }

    pub fn get(&self, key: &str) -> Option<&Arc<Entry>> {
        self.by_key.get(key).map(|&i| &self.connections[i])
    }

    /// Forward mode: the connection whose upstream is `host` (case-insensitive, trailing
    /// dot ignored) on `port`, the port of an `http://` request target (`None`: not
    /// written, so 80). A connection matches the port it is configured on, and a request
    /// without a port (or with the `http://` default, 80) also matches a connection on its
    /// protocol's default port: `http://api.example.com/` reaches `https://api.example.com`.
    /// A `reverse_only` connection is never the answer.
    pub fn by_authority(&self, host: &str, port: Option<u16>) -> Option<&Arc<Entry>> {
        let host = host.trim_end_matches('.');
        let found = match self.by_host.get(host) {
            Some(found) => found,
            None => self.by_host.get(&host.to_ascii_lowercase())?,
        };
        let implicit = matches!(port, None | Some(HTTP_DEFAULT_PORT));
        found.iter().map(|&i| &self.connections[i]).find(|c| {
            let upstream = &c.conn.upstream;
            !c.conn.reverse_only
                && (port == Some(upstream.port)
                    || (implicit && upstream.port == default_port(upstream)))
        })
    }

    /// `CONNECT host:port`: the connection whose upstream is `host` on exactly `port`
    /// (case-insensitive, trailing dot ignored); never a `reverse_only` one.
    pub fn by_tunnel(&self, host: &str, port: u16) -> Option<&Arc<Entry>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let found = self.by_host.get(&host)?;
        found
            .iter()
            .map(|&i| &self.connections[i])
            .find(|c| c.conn.upstream.port == port && !c.conn.reverse_only)
    }

    /// The ports the connections on `host` that a tunnel may reach are configured on (not
    /// a `reverse_only` one's).
    pub fn ports_of(&self, host: &str) -> Vec<u16> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let found = self.by_host.get(&host).map_or(&[][..], Vec::as_slice);
        found
            .iter()
            .map(|&i| &self.connections[i].conn)
            .filter(|c| !c.reverse_only)
            .map(|c| c.upstream.port)
            .collect()
    }

    /// Every configured upstream host, once each (lower case), in configuration order.
    pub fn hosts(&self) -> Vec<String> {
        Registry::hosts_of(self.connections.iter().map(|e| &*e.conn))
    }

    /// The upstream hosts of `connections`, each once, in order.
    pub fn hosts_of<'c>(connections: impl IntoIterator<Item = &'c Connection>) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for conn in connections {
            let host = &conn.upstream.host;
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
