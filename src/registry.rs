//! The set of connections the proxy routes to, with their lookup tables: by key (reverse
//! mode) and by upstream host (forward mode), and their listing order. Persistent maps
//! (`imbl`): a change is one insert or remove ([`Registry::with`], [`Registry::without`])
//! that shares everything else with the registry it came from, and the next registry is
//! swapped in whole behind the proxy's `ArcSwap`. A config reload ([`Registry::reloaded`])
//! is such changes for the file's connections; connections created at run time stay.
//!
//! Locking budget: none. Readers hold an `Arc<Registry>` (one `ArcSwap` load per request)
//! and look a key up in a hash trie; writers (reload, the admin API) build the next value.
//!
//! An [`Entry`] is what the request path needs of one connection: the validated
//! [`Connection`], the [`Origin`] its upstream pools are keyed by, the ready `Host` value,
//! the proxy's counters, and the connection's [`token::Cache`].

mod entry;
mod hosted;
mod origin;

pub use entry::{Entry, ProxyCounters, UpstreamVersion, Version};
use hosted::Hosted;
pub use origin::{Origin, OriginHash, OriginHasher};

use crate::config::Connection;
use std::collections::HashSet;
use std::sync::Arc;

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

/// Where a connection is listed: the file's connections in config order, then those
/// created at run time in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Place {
    runtime: bool,
    seq: u64,
}

/// A connection under its key: the entry and where it is listed.
#[derive(Clone)]
struct Slot {
    entry: Arc<Entry>,
    place: Place,
}

/// Why forward mode found no one connection for a request ([`Registry::by_authority`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchosen {
    /// No connection is reached at that host and port in forward mode.
    NoConnection,
    /// Several are, and the request named none.
    Ambiguous,
    /// The request named a connection that is not one of them.
    Elsewhere,
}

#[derive(Default, Clone)]
pub struct Registry {
    by_key: imbl::HashMap<String, Slot>,
    /// Listing order ([`Place`]).
    order: imbl::OrdMap<Place, Arc<Entry>>,
    /// Lower-case host → connections on that host (several may differ by port).
    by_host: imbl::HashMap<String, Hosted>,
    /// The place of the next connection created at run time.
    next_runtime: u64,
    /// Placeholder → the key of the connection it stands for (`placeholder:`).
    placeholders: imbl::HashMap<Arc<str>, String>,
    /// The port of a token endpoint answered by tokenwarden (`stub_token_endpoint`) → the
    /// connections whose endpoint is on it (a request compares their hosts and paths: no
    /// allocation on the request path).
    stubs: imbl::HashMap<u16, imbl::Vector<Arc<Entry>>>,
}

impl Registry {
    /// The registry of the file's `connections`.
    pub fn new(connections: &[Arc<Connection>]) -> Registry {
        Registry::default().reloaded(connections).0
    }

    /// With `entry` under its key: a new connection is listed after every other, one that
    /// replaces a connection keeps its place. O(log n), plus the other connections on its
    /// host (copied).
    pub fn with(&self, entry: Arc<Entry>) -> Registry {
        let mut next = self.clone();
        let place = match self.by_key.get(&entry.conn.key) {
            Some(slot) => slot.place,
            None => {
                next.next_runtime += 1;
                Place {
                    runtime: true,
                    seq: self.next_runtime,
                }
            }
        };
        next.put(entry, place);
        next
    }

    /// Without the connection `key` (the same registry when there is none).
    pub fn without(&self, key: &str) -> Registry {
        let mut next = self.clone();
        next.remove(key);
        next
    }

    /// Puts `entry` at `place`, in place of the connection under its key, if any.
    fn put(&mut self, entry: Arc<Entry>, place: Place) {
        if let Some(old) = self.unlist(&entry.conn.key) {
            self.host_without(&old);
        }
        self.list(Arc::clone(&entry), place);
        let host = entry.conn.upstream.host.clone();
        let hosted = match self.by_host.get(&host) {
            Some(hosted) => hosted.with(place, entry),
            None => Hosted::of(vec![(place, entry)]),
        };
        self.by_host.insert(host, hosted);
    }

    /// Removes the connection `key`, if any.
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.unlist(key) {
            self.host_without(&old);
        }
    }

    /// Puts `entry` under its key and in the listing at `place` (not on its host's list).
    fn list(&mut self, entry: Arc<Entry>, place: Place) {
        let egress = &entry.conn.egress;
        if let Some(p) = &egress.placeholder {
            self.placeholders
                .insert(Arc::clone(p), entry.conn.key.clone());
        }
        if let Some(stub) = &egress.stub {
            let mut list = self.stubs.get(&stub.port).cloned().unwrap_or_default();
            list.push_back(Arc::clone(&entry));
            self.stubs.insert(stub.port, list);
        }
        self.order.insert(place, Arc::clone(&entry));
        self.by_key
            .insert(entry.conn.key.clone(), Slot { entry, place });
    }

    /// Takes the connection `key` out of the key map and the listing (not its host's list).
    fn unlist(&mut self, key: &str) -> Option<Slot> {
        let slot = self.by_key.remove(key)?;
        self.order.remove(&slot.place);
        let egress = &slot.entry.conn.egress;
        if let Some(p) = &egress.placeholder {
            if self.placeholders.get(p).is_some_and(|k| k == key) {
                self.placeholders.remove(p);
            }
        }
        if let Some(stub) = &egress.stub {
            if let Some(list) = self.stubs.get(&stub.port) {
                let rest: imbl::Vector<_> =
                    list.iter().filter(|e| e.conn.key != key).cloned().collect();
                match rest.is_empty() {
                    true => self.stubs.remove(&stub.port),
                    false => self.stubs.insert(stub.port, rest),
                };
            }
        }
        Some(slot)
    }

    /// Takes `slot` off its host's list.
    fn host_without(&mut self, slot: &Slot) {
        let host = &slot.entry.conn.upstream.host;
        let Some(hosted) = self.by_host.get(host) else {
            return;
        };
        match hosted.without(slot.place) {
            Some(rest) => self.by_host.insert(host.clone(), rest),
            None => self.by_host.remove(host),
        };
    }

    /// Lists `hosts` afresh from the listing: one pass, however many connections changed
    /// on them (a reload of the file's thousands of connections on one host).
    fn relist(&mut self, hosts: &HashSet<String>) {
        let mut lists: std::collections::HashMap<&str, Vec<(Place, Arc<Entry>)>> =
            std::collections::HashMap::new();
        for (place, entry) in &self.order {
            let host = entry.conn.upstream.host.as_str();
            if hosts.contains(host) {
                lists
                    .entry(host)
                    .or_default()
                    .push((*place, Arc::clone(entry)));
            }
        }
        let mut by_host = self.by_host.clone();
        for host in hosts {
            match lists.remove(host.as_str()) {
                Some(list) => by_host.insert(host.clone(), Hosted::of(list)),
                None => by_host.remove(host),
            };
        }
        self.by_host = by_host;
    }

    /// The registry for a reloaded config: a connection with the same fingerprint keeps
    /// its entry; one whose definition changed gets a new entry (its token cache kept when
    /// the grant identity is the same, else a new one); new keys get new entries; the
    /// file's other connections are removed. Connections created at run time stay, but one
    /// the file now defines under the same key becomes the file's. The file's connections
    /// are listed in its order, first.
    pub fn reloaded(&self, connections: &[Arc<Connection>]) -> (Registry, Changes) {
        let mut changes = Changes::default();
        let mut next = self.clone();
        // The hosts whose lists change: listed afresh at the end, once each.
        let mut hosts = HashSet::new();
        let wanted: HashSet<&str> = connections.iter().map(|c| c.key.as_str()).collect();
        for (place, entry) in &self.order {
            if !place.runtime && !wanted.contains(entry.conn.key.as_str()) {
                next.unlist(&entry.conn.key);
                hosts.insert(entry.conn.upstream.host.clone());
                changes.removed.push(Arc::clone(entry));
            }
        }
        let mut moved = Vec::new();
        for (seq, c) in (0u64..).zip(connections) {
            let place = Place {
                runtime: false,
                seq,
            };
            let (entry, old_place) = match self.by_key.get(&c.key) {
                Some(old) if old.entry.conn.fingerprint == c.fingerprint => {
                    changes.kept.push(c.key.clone());
                    (Arc::clone(&old.entry), Some(old.place))
                }
                Some(old) => {
                    let conn = Arc::clone(c);
                    let entry = if old.entry.conn.grant_identity == c.grant_identity {
                        Entry::with_tokens(
                            conn,
                            Arc::clone(&old.entry.tokens),
                            old.entry.grants.as_ref(),
                        )
                    } else {
                        changes.tokens_dropped.push(c.key.clone());
                        Entry::new(conn)
                    };
                    let entry = Arc::new(entry);
                    changes.changed.push(Arc::clone(&entry));
                    (entry, Some(old.place))
                }
                None => {
                    let entry = Arc::new(Entry::new(Arc::clone(c)));
                    changes.added.push(Arc::clone(&entry));
                    (entry, None)
                }
            };
            let same = old_place == Some(place) && Arc::ptr_eq(&entry, &self.by_key[&c.key].entry);
            if !same {
                moved.push((entry, place));
            }
        }
        // All out first: a place is free only once the entry listed there left.
        for (entry, _) in &moved {
            if let Some(old) = next.unlist(&entry.conn.key) {
                hosts.insert(old.entry.conn.upstream.host.clone());
            }
        }
        for (entry, place) in moved {
            hosts.insert(entry.conn.upstream.host.clone());
            next.list(entry, place);
        }
        next.relist(&hosts);
        (next, changes)
    }

    pub fn get(&self, key: &str) -> Option<&Arc<Entry>> {
        self.by_key.get(key).map(|slot| &slot.entry)
    }

    /// How many connections there are.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every connection in listing order: the file's in config order, then those created
    /// at run time in creation order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Entry>> + '_ {
        self.order.values()
    }

    /// At most `limit` connections in listing order from the `offset`th on (walks
    /// `offset` entries; collects nothing).
    pub fn page(&self, offset: usize, limit: usize) -> impl Iterator<Item = &Arc<Entry>> + '_ {
        self.iter().skip(offset).take(limit)
    }

    /// The connections on `host` (case-insensitive, trailing dot ignored).
    fn hosted(&self, host: &str) -> Option<&Hosted> {
        let host = host.trim_end_matches('.');
        match self.by_host.get(host) {
            Some(found) => Some(found),
            None => self.by_host.get(&host.to_ascii_lowercase()),
        }
    }

    /// Forward mode: the connection whose upstream is `host` (case-insensitive, trailing
    /// dot ignored) on `port`, the port of an `http://` request target (`None`: not
    /// written, so 80). A connection matches the port it is configured on, and a request
    /// without a port (or with the `http://` default, 80) also matches a connection on its
    /// protocol's default port: `http://api.example.com/` reaches `https://api.example.com`.
    /// A `reverse_only` connection is never the answer.
    ///
    /// `named`: the key the request names (`tokenwarden-connection`). It must be one of
    /// the connections that match, and it is needed when several do. Without it, the cost
    /// is the matching connections up to the second; with it, one lookup by key.
    pub fn by_authority(
        &self,
        host: &str,
        port: Option<u16>,
        named: Option<&str>,
    ) -> Result<&Arc<Entry>, Unchosen> {
        if let Some(key) = named {
            let bare = host.trim_end_matches('.');
            if let Some(e) = self.get(key) {
                if e.conn.upstream.host.eq_ignore_ascii_case(bare) && e.forwards_at(port) {
                    return Ok(e);
                }
            }
        }
        let hosted = self.hosted(host).ok_or(Unchosen::NoConnection)?;
        let mut matching = hosted.values().filter(|e| e.forwards_at(port));
        match (matching.next(), matching.next()) {
            (Some(_), _) if named.is_some() => Err(Unchosen::Elsewhere),
            (Some(one), None) => Ok(one),
            (Some(_), Some(_)) => Err(Unchosen::Ambiguous),
            (None, _) => Err(Unchosen::NoConnection),
        }
    }

    /// `CONNECT host:port`: a connection whose upstream is `host` on exactly `port`
    /// (case-insensitive, trailing dot ignored), the first listed; never a `reverse_only`
    /// one. (An intercepted tunnel's requests choose among several themselves.)
    pub fn by_tunnel(&self, host: &str, port: u16) -> Option<&Arc<Entry>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let found = self.by_host.get(&host)?;
        found
            .values()
            .find(|c| c.conn.upstream.port == port && !c.conn.reverse_only)
    }

    /// The ports the connections on `host` that a tunnel may reach are configured on (not
    /// a `reverse_only` one's), each once.
    pub fn ports_of(&self, host: &str) -> Vec<u16> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let mut ports: Vec<u16> = Vec::new();
        for e in self.by_host.get(&host).into_iter().flat_map(Hosted::values) {
            let port = e.conn.upstream.port;
            if !e.conn.reverse_only && !ports.contains(&port) {
                ports.push(port);
            }
        }
        ports
    }

    /// Every upstream host, once each (lower case), in listing order.
    pub fn hosts(&self) -> Vec<String> {
        Registry::hosts_of(self.iter().map(|e| &*e.conn))
    }

    /// The upstream hosts of `connections`, each once, in order.
    pub fn hosts_of<'c>(connections: impl IntoIterator<Item = &'c Connection>) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut hosts = Vec::new();
        for conn in connections {
            // A token endpoint answered by tokenwarden is intercepted too.
            let stub = conn.egress.stub.as_ref().filter(|s| s.https);
            for host in std::iter::once(&conn.upstream.host).chain(stub.map(|s| &s.host)) {
                if seen.insert(host.as_str()) {
                    hosts.push(host.clone());
                }
            }
        }
        hosts
    }

    /// Whether some connection has a placeholder (then every request is checked for one).
    pub fn has_placeholders(&self) -> bool {
        !self.placeholders.is_empty()
    }

    /// The key of the connection whose placeholder is `placeholder`.
    pub fn placeholder_owner(&self, placeholder: &str) -> Option<&str> {
        self.placeholders.get(placeholder).map(String::as_str)
    }

    /// The connection whose token endpoint, answered by tokenwarden, is `path` at
    /// `host:port` (`stub_token_endpoint`; the host in any case, a trailing dot ignored).
    pub fn stub_at(&self, host: &str, port: u16, path: &str) -> Option<&Arc<Entry>> {
        self.stubs_on(host, port)
            .find(|e| e.conn.egress.stub.as_ref().is_some_and(|s| s.path == path))
    }

    /// Whether a token endpoint answered by tokenwarden is at `host:port`.
    pub fn stubs_at(&self, host: &str, port: u16) -> bool {
        self.stubs_on(host, port).next().is_some()
    }

    /// The connections whose token endpoint, answered by tokenwarden, is at `host:port`.
    fn stubs_on<'r, 'h>(
        &'r self,
        host: &'h str,
        port: u16,
    ) -> impl Iterator<Item = &'r Arc<Entry>> + use<'r, 'h> {
        let host = host.trim_end_matches('.');
        let on_port = self.stubs.get(&port).into_iter().flatten();
        on_port.filter(move |e| {
            let stub = e.conn.egress.stub.as_ref();
            stub.is_some_and(|s| s.host.eq_ignore_ascii_case(host))
        })
    }

    /// Whether some connection's upstream host is `host`.
    pub fn knows_host(&self, host: &str) -> bool {
        self.by_host
            .contains_key(&host.trim_end_matches('.').to_ascii_lowercase())
    }
}

#[cfg(test)]
#[path = "registry/tests.rs"]
mod tests;
