//! The origin of a connection's upstream, as the per-worker upstream pools key their idle
//! connections: what makes two dials interchangeable. Computed once per [`super::Entry`]
//! (a hash and an `Arc`), so a pool lookup per request hashes nothing and compares a
//! pointer in the common case.

use crate::config::Connection;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// Scheme, host and port of an upstream, and what else changes how it is dialled: the
/// SSRF guard's `allow_private_network` (the addresses a name may resolve to) and the
/// client certificate shown to it (`tls_client_auth` with `upstream: true`). The other TLS
/// client settings are the process's, the same for every connection, so they are not part
/// of it; the `Host` header is set per request, so the authority as written is not either.
#[derive(Clone)]
pub struct Origin(Arc<Key>);

#[derive(PartialEq, Eq, Hash)]
struct Key {
    https: bool,
    /// Lower case, without brackets or trailing dot ([`crate::config::Upstream::host`]).
    host: Box<str>,
    port: u16,
    allow_private_network: bool,
    /// SHA-256 of the client certificate shown to the upstream, if any.
    client_certificate: Option<[u8; 32]>,
    /// Of the fields above, computed once ([`OriginHasher`] passes it through).
    hash: u64,
}

impl Origin {
    /// The origin `conn` dials.
    pub fn of(conn: &Connection) -> Origin {
        let upstream = &conn.upstream;
        let mut key = Key {
            https: upstream.scheme == http::uri::Scheme::HTTPS,
            host: upstream.host.as_str().into(),
            port: upstream.port,
            allow_private_network: conn.allow_private_network,
            client_certificate: crate::proxy::upstream::upstream_certificate(conn).map(|c| {
                use sha2::Digest;
                let der = c.cert.first().map_or(&[][..], |d| d.as_ref());
                sha2::Sha256::digest(der).into()
            }),
            hash: 0,
        };
        // Fixed keys: origins come from the config and the admin API, not from requests.
        let mut hasher = std::hash::DefaultHasher::new();
        let fields = (key.https, &key.host, key.port, key.allow_private_network);
        (fields, key.client_certificate).hash(&mut hasher);
        key.hash = hasher.finish();
        Origin(Arc::new(key))
    }
}

impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for Origin {}

impl Hash for Origin {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.0.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.0.host, self.0.port)?;
        if self.0.allow_private_network {
            f.write_str(" (private network allowed)")?;
        }
        if self.0.client_certificate.is_some() {
            f.write_str(" (client certificate)")?;
        }
        Ok(())
    }
}

/// A hasher for maps keyed by [`Origin`]: takes the precomputed hash as it is.
#[derive(Default)]
pub struct OriginHasher(u64);

impl Hasher for OriginHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Origin`; a plain fold for anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builds [`OriginHasher`]s.
pub type OriginHash = BuildHasherDefault<OriginHasher>;
