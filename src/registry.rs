//! The set of connections the proxy routes to, with their lookup tables: by key (reverse
//! mode) and by upstream host (forward mode). Built once from the config; read-only.

use crate::config::Connection;
use crate::token::ConnectionState;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Registry {
    pub connections: Vec<Arc<ConnectionState>>,
    by_key: HashMap<String, usize>,
    /// Lower-case host → connections on that host (several may differ by port).
    by_host: HashMap<String, Vec<usize>>,
}

impl Registry {
    pub fn new(connections: &[Arc<Connection>]) -> Registry {
        let mut r = Registry::default();
        for (i, c) in connections.iter().enumerate() {
            r.connections
                .push(Arc::new(ConnectionState::new(Arc::clone(c))));
            r.by_key.insert(c.key.clone(), i);
            r.by_host
                .entry(c.upstream.host.clone())
                .or_default()
                .push(i);
        }
        r
    }

    pub fn get(&self, key: &str) -> Option<&Arc<ConnectionState>> {
        self.by_key.get(key).map(|&i| &self.connections[i])
    }

    /// Forward mode: the connection whose upstream is `host` (case-insensitive, trailing
    /// dot ignored). With `port`, it must equal the connection's port (the protocol's
    /// default counts); without, the host alone decides.
    pub fn by_authority(&self, host: &str, port: Option<u16>) -> Option<&Arc<ConnectionState>> {
        let host = host.trim_end_matches('.');
        let found = match self.by_host.get(host) {
            Some(found) => found,
            None => self.by_host.get(&host.to_ascii_lowercase())?,
        };
        found
            .iter()
            .map(|&i| &self.connections[i])
            .find(|c| port.is_none_or(|p| p == c.conn.upstream.port))
    }

    /// Whether some connection's upstream host is `host`.
    pub fn knows_host(&self, host: &str) -> bool {
        self.by_host
            .contains_key(&host.trim_end_matches('.').to_ascii_lowercase())
    }
}
