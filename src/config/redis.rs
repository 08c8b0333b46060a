//! `store: { backend: redis, … }`: where the Redis data nodes are (one URL, the sentinels
//! that name the master, or the seed nodes of a Redis Cluster), how tokenwarden authenticates (ACL user and password, TLS with a
//! CA and a client certificate), and how many replicas must hold a rotated refresh token
//! before it is used. Every file is read and checked here, so `check` finds a wrong path or
//! PEM without contacting Redis; no password is ever quoted.

use super::raw::{RawCluster, RawFile, RawRedisTls, RawSentinel, RawStore};
use super::source::{Problems, Source};
use secrecy::SecretString;
use std::path::Path;
use std::time::Duration;

/// Default prefix of every Redis key and channel tokenwarden uses.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "tokenwarden:";
/// Shortest lease: a token request and the write of its result (which may wait out one
/// Redis timeout, 2 s) must both fit in it.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(5);
/// Default port of a Redis server, and of a sentinel.
const DEFAULT_REDIS_PORT: u16 = 6379;
const DEFAULT_SENTINEL_PORT: u16 = 26379;
/// Most replicas `min_replicas_acked` may ask for.
const MAX_REPLICAS_ACKED: u32 = 16;

/// The Redis backend's settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Where the data nodes are.
    pub target: RedisTarget,
    /// Where Redis is, for logs and errors: `host:port`, the sentinels' master name, or the
    /// cluster's seed nodes.
    pub endpoint: String,
    /// ACL user of the data nodes (None: the URL's, or `default`).
    pub username: Option<String>,
    /// Password of the data nodes (None: the URL's, or none).
    pub password: Option<SecretString>,
    /// TLS to the data nodes (None: plain TCP).
    pub tls: Option<RedisTls>,
    pub key_prefix: String,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    /// `store.migrate_legacy`: a replica holding no token set for a connection adopts (and
    /// re-seals) a value an earlier version wrote, bound to its connection only. Off, such a
    /// value is refused: it may be an old grant written back to roll the grant back.
    pub migrate_legacy: bool,
    /// Replicas that must hold a token set with a refresh token before it is used or
    /// announced (`WAIT`); 0: none (default with a URL; 1 with sentinels or a cluster).
    pub min_replicas_acked: u32,
}

/// Where the Redis data nodes are.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One server: `redis://` or `rediss://` URL, which may carry a password (a secret).
    Url(SecretString),
    /// The master the sentinels name, followed across failovers.
    Sentinel(SentinelSettings),
    /// A Redis Cluster: each command goes to the master of its key's slot.
    Cluster(ClusterSettings),
}

/// `store.cluster`.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `(host, port)` of each seed node; the cluster's other nodes are learnt from them.
    pub nodes: Vec<(String, u16)>,
}

/// `store.sentinel`.
#[derive(Debug, Clone)]
pub struct SentinelSettings {
    pub master_name: String,
    /// `(host, port)` of each sentinel.
    pub nodes: Vec<(String, u16)>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// TLS to the sentinels, with the data nodes' CA and client certificate.
    pub tls: bool,
}

/// TLS to Redis: the CA that signed the server's certificate (None: the web PKI roots) and
/// an optional client certificate, as PEM read at load time.
#[derive(Debug, Clone)]
pub struct RedisTls {
    pub ca_pem: Option<Vec<u8>>,
    pub client: Option<ClientIdentity>,
    /// `store.tls.server_name`: the name every node's certificate is verified against,
    /// and sent as SNI, in place of its host — the server, the sentinels and the master
    /// they name (not allowed with a cluster).
    pub server_name: Option<String>,
}

/// A client certificate chain and its private key, PEM.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: SecretString,
}

impl RedisSettings {
    /// Every secret of the settings (URL, passwords, client key), to tell whether a reload
    /// changed one (their `Debug` form hides them).
    pub fn secrets(&self) -> Vec<&str> {
        use secrecy::ExposeSecret;
        let mut secrets = vec![self.password.as_ref().map_or("", |p| p.expose_secret())];
        match &self.target {
            RedisTarget::Url(url) => secrets.push(url.expose_secret()),
            RedisTarget::Sentinel(s) => {
                secrets.push(s.password.as_ref().map_or("", |p| p.expose_secret()));
            }
            RedisTarget::Cluster(_) => {}
        }
        if let Some(client) = self.tls.as_ref().and_then(|t| t.client.as_ref()) {
            secrets.push(client.key_pem.expose_secret());
        }
        secrets
    }

    /// The settings of a plain `redis://` URL with every default (tests and benchmarks).
    pub fn for_url(url: &str) -> RedisSettings {
        RedisSettings {
            target: RedisTarget::Url(SecretString::from(url.to_owned())),
            endpoint: redis_endpoint(url).unwrap_or_default(),
            username: None,
            password: None,
            tls: None,
            key_prefix: DEFAULT_REDIS_KEY_PREFIX.into(),
            lease_ttl: super::store::DEFAULT_LEASE_TTL,
            poll_interval: super::store::DEFAULT_POLL_INTERVAL,
            migrate_legacy: false,
            min_replicas_acked: 0,
        }
    }
}

/// The Redis backend's settings, when `store.backend` is `redis`; the problems of a store
/// section whose fields do not fit its backend. `base`: the config file's directory, which
/// relative file paths start from; `ca_file`: the top-level `tls.ca_file`, the CA of a TLS
/// Redis unless `store.tls.ca_file` names another.
pub(super) fn redis_settings(
    raw: &RawFile,
    (src, problems): (&Source, &mut Problems),
    base: &Path,
    (lease_ttl, poll_interval): (Duration, Duration),
    ca_file: Option<&Path>,
) -> Option<RedisSettings> {
    let store = &raw.store;
    if !chosen(raw, src, problems) {
        return None;
    }
    if store.path.is_some() {
        problems.push(src.problem(
            "store.path",
            "only applies with `backend: sqlite`; Redis holds the tokens",
        ));
    }
    if store.key.as_deref().is_none_or(str::is_empty) {
        problems.push(src.problem(
            "store.key",
            "is required with `backend: redis` (every replica needs the same key)",
        ));
    }
    if lease_ttl < MIN_LEASE_TTL {
        problems.push(src.problem(
            "store.lease_ttl",
            format!(
                "must be at least {}s (a token request and the write of its result must fit in it)",
                MIN_LEASE_TTL.as_secs()
            ),
        ));
    }
    if poll_interval.is_zero() {
        problems.push(src.problem("store.poll_interval", "must be more than 0"));
    }
    let mut files = Files {
        src,
        problems,
        base,
    };
    let password = files.password(
        "store",
        store.username.as_deref(),
        store.password.as_deref(),
        store.password_file.as_deref(),
    );
    if store.min_replicas_acked > Some(MAX_REPLICAS_ACKED) {
        files.problems.push(src.problem(
            "store.min_replicas_acked",
            format!("must be at most {MAX_REPLICAS_ACKED}"),
        ));
    }
    let (target, endpoint, tls_wanted) = files.target(store, password.is_some())?;
    let cluster = matches!(target, RedisTarget::Cluster(_));
    let tls = tls_wanted
        .then(|| files.tls(store.tls.as_ref(), ca_file, cluster))
        .flatten();
    let min_replicas_acked = store.min_replicas_acked.unwrap_or(match target {
        RedisTarget::Sentinel(_) | RedisTarget::Cluster(_) => 1,
        RedisTarget::Url(_) => 0,
    });
    Some(RedisSettings {
        target,
        endpoint,
        username: store.username.clone().filter(|u| !u.is_empty()),
        password,
        tls,
        key_prefix: store
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.into()),
        lease_ttl,
        poll_interval,
        migrate_legacy: store.migrate_legacy.unwrap_or(false),
        min_replicas_acked,
    })
}

/// Whether `store.backend` is `redis`; otherwise, the problems of Redis fields given.
fn chosen(raw: &RawFile, src: &Source, problems: &mut Problems) -> bool {
    let store = &raw.store;
    let redis_only = [
        ("store.url", store.url.is_some()),
        ("store.key_prefix", store.key_prefix.is_some()),
        ("store.lease_ttl", store.lease_ttl.is_some()),
        ("store.poll_interval", store.poll_interval.is_some()),
        ("store.migrate_legacy", store.migrate_legacy.is_some()),
        ("store.username", store.username.is_some()),
        ("store.password", store.password.is_some()),
        ("store.password_file", store.password_file.is_some()),
        ("store.tls", store.tls.is_some()),
        ("store.sentinel", store.sentinel.is_some()),
        ("store.cluster", store.cluster.is_some()),
        (
            "store.min_replicas_acked",
            store.min_replicas_acked.is_some(),
        ),
    ];
    match store.backend.as_deref() {
        // `file`: the name of the default backend before it became a database.
        None | Some("sqlite" | "file") => {
            for (path, given) in redis_only {
                if given {
                    problems.push(src.problem(path, "only applies with `backend: redis`"));
                }
            }
            false
        }
        Some("redis") => true,
        Some(other) => {
            let other = src.quote("store.backend", other);
            problems.push(src.problem(
                "store.backend",
                format!("unknown value {other}: expected sqlite or redis"),
            ));
            false
        }
    }
}

/// Reads and checks the files the Redis settings name, relative to `base`.
struct Files<'a> {
    src: &'a Source,
    problems: &'a mut Problems,
    base: &'a Path,
}

impl Files<'_> {
    /// The password at `{at}.password` or read from `{at}.password_file` (one trailing
    /// newline dropped), checked against the user name.
    fn password(
        &mut self,
        at: &str,
        username: Option<&str>,
        password: Option<&str>,
        password_file: Option<&str>,
    ) -> Option<SecretString> {
        let password = match (password, password_file) {
            (Some(_), Some(_)) => {
                self.problems.push(self.src.problem(
                    &format!("{at}.password_file"),
                    "give either `password` or `password_file`, not both",
                ));
                None
            }
            (Some(p), None) => Some(SecretString::from(p.to_owned())),
            (None, Some(file)) => {
                self.read(&format!("{at}.password_file"), file)
                    .and_then(|bytes| {
                        let text = String::from_utf8(bytes).ok().or_else(|| {
                            self.problems.push(
                                self.src
                                    .problem(&format!("{at}.password_file"), "is not UTF-8 text"),
                            );
                            None
                        })?;
                        let text = text
                            .strip_suffix('\n')
                            .map(|t| t.strip_suffix('\r').unwrap_or(t))
                            .unwrap_or(&text);
                        Some(SecretString::from(text.to_owned()))
                    })
            }
            (None, None) => None,
        };
        if password.is_none() && username.is_some_and(|u| !u.is_empty()) {
            self.problems.push(self.src.problem(
                &format!("{at}.username"),
                "needs a `password` or `password_file` (an ACL user signs in with both)",
            ));
        }
        password.filter(|p| !secrecy::ExposeSecret::expose_secret(p).is_empty())
    }

    /// Where the data nodes are (`url`, `sentinel` or `cluster`), where that is for logs,
    /// and whether TLS is wanted. `password`: whether `password` or `password_file` is given.
    fn target(&mut self, store: &RawStore, password: bool) -> Option<(RedisTarget, String, bool)> {
        let src = self.src;
        if let Some(cluster) = &store.cluster {
            if store.url.is_some() || store.sentinel.is_some() {
                self.problems.push(src.problem(
                    "store.cluster",
                    "give one of `url` (one server), `sentinel` (the sentinels that name the \
                     master) or `cluster` (the nodes of a Redis Cluster), not several",
                ));
                return None;
            }
            return self.cluster(cluster, store);
        }
        match (&store.url, &store.sentinel) {
            (Some(_), Some(_)) => {
                self.problems.push(src.problem(
                    "store.sentinel",
                    "give either `url` (one server) or `sentinel` (the sentinels that name the master), not both",
                ));
                None
            }
            (None, Some(sentinel)) => {
                let wanted = store.tls.as_ref().is_some_and(|t| t.enabled != Some(false));
                let sentinel = self.sentinel(sentinel, wanted)?;
                let endpoint = format!("master {} (sentinels)", sentinel.master_name);
                Some((RedisTarget::Sentinel(sentinel), endpoint, wanted))
            }
            (url, None) => {
                let (url, endpoint) = redis_url(url.as_deref(), src, self.problems)?;
                let wanted = url.starts_with("rediss://");
                if password && url_has_password(url) {
                    self.problems.push(src.problem(
                        "store.password",
                        "the URL carries a password too: give it in one place",
                    ));
                }
                match store.tls.as_ref().map(|t| t.enabled) {
                    Some(Some(true) | None) if !wanted => self.problems.push(src.problem(
                        "store.tls",
                        "TLS to one server is chosen by the URL: use rediss://",
                    )),
                    Some(Some(false)) if wanted => self.problems.push(src.problem(
                        "store.tls.enabled",
                        "is false, but the URL is rediss:// (TLS)",
                    )),
                    _ => {}
                }
                Some((
                    RedisTarget::Url(SecretString::from(url.to_owned())),
                    endpoint,
                    wanted,
                ))
            }
        }
    }

    /// `store.sentinel`.
    fn sentinel(&mut self, raw: &RawSentinel, data_tls: bool) -> Option<SentinelSettings> {
        let master_name = raw.master_name.clone().filter(|m| !m.is_empty());
        if master_name.is_none() {
            self.problems.push(self.src.problem(
                "store.sentinel.master_name",
                "is required: the name the sentinels monitor the master under",
            ));
        }
        if raw.nodes.is_empty() {
            self.problems.push(self.src.problem(
                "store.sentinel.nodes",
                "is required: the sentinels' HOST:PORT, such as [\"sentinel-0:26379\"]",
            ));
        }
        let mut nodes = Vec::new();
        for (i, node) in raw.nodes.iter().enumerate() {
            let at = format!("store.sentinel.nodes[{i}]");
            match host_port(node, DEFAULT_SENTINEL_PORT) {
                Some(hp) => nodes.push(hp),
                None => {
                    let shown = self.src.quote(&at, node);
                    self.problems
                        .push(self.src.problem(&at, format!("{shown} is not HOST[:PORT]")));
                }
            }
        }
        let password = self.password(
            "store.sentinel",
            raw.username.as_deref(),
            raw.password.as_deref(),
            raw.password_file.as_deref(),
        );
        if raw.tls == Some(true) && !data_tls {
            self.problems.push(self.src.problem(
                "store.sentinel.tls",
                "TLS to the sentinels uses the data nodes' `store.tls`: add it",
            ));
        }
        Some(SentinelSettings {
            master_name: master_name?,
            nodes,
            username: raw.username.clone().filter(|u| !u.is_empty()),
            password,
            tls: raw.tls.unwrap_or(data_tls),
        })
    }

    /// `store.cluster`: its seed nodes, and the key prefix checked to hold no hash tag (it
    /// would move every key into one slot, or split one connection's keys across two).
    fn cluster(
        &mut self,
        raw: &RawCluster,
        store: &RawStore,
    ) -> Option<(RedisTarget, String, bool)> {
        if raw.nodes.is_empty() {
            self.problems.push(self.src.problem(
                "store.cluster.nodes",
                "is required: HOST:PORT of one or more cluster nodes (the others are found \
                 from them), such as [\"redis-0:6379\", \"redis-1:6379\"]",
            ));
        }
        let mut nodes = Vec::new();
        for (i, node) in raw.nodes.iter().enumerate() {
            let at = format!("store.cluster.nodes[{i}]");
            match host_port(node, DEFAULT_REDIS_PORT) {
                Some(hp) => nodes.push(hp),
                // Perhaps a URL with a password: never quoted.
                None if node.contains('@') => self.problems.push(self.src.problem(
                    &at,
                    "is not HOST[:PORT]: give credentials as `store.username` and \
                     `store.password`, not in a node's address",
                )),
                None => {
                    let shown = self.src.quote(&at, node);
                    self.problems
                        .push(self.src.problem(&at, format!("{shown} is not HOST[:PORT]")));
                }
            }
        }
        if store
            .key_prefix
            .as_deref()
            .is_some_and(|p| p.contains(['{', '}']))
        {
            self.problems.push(self.src.problem(
                "store.key_prefix",
                "holds `{` or `}`, which a Redis Cluster reads as a hash tag: leave them out",
            ));
        }
        if nodes.is_empty() {
            return None;
        }
        let wanted = store.tls.as_ref().is_some_and(|t| t.enabled != Some(false));
        let endpoint = cluster_endpoint(&nodes);
        Some((
            RedisTarget::Cluster(ClusterSettings { nodes }),
            endpoint,
            wanted,
        ))
    }

    /// `store.tls`: its CA (or the top-level `tls.ca_file`) and client certificate, read
    /// and checked, and its server name (`cluster`: the target is a Redis Cluster).
    fn tls(
        &mut self,
        raw: Option<&RawRedisTls>,
        ca_file: Option<&Path>,
        cluster: bool,
    ) -> Option<RedisTls> {
        let default = RawRedisTls::default();
        let raw = raw.unwrap_or(&default);
        let ca_pem = match (&raw.ca_file, ca_file) {
            (Some(file), _) => self.pem("store.tls.ca_file", file, Pem::Certificates),
            // Already checked where it is read for upstreams.
            (None, Some(top)) => std::fs::read(top).ok(),
            (None, None) => None,
        };
        let client = match (&raw.cert_file, &raw.key_file) {
            (Some(cert), Some(key)) => {
                let cert_pem = self.pem("store.tls.cert_file", cert, Pem::Certificates);
                let key_pem = self.pem("store.tls.key_file", key, Pem::PrivateKey);
                match (cert_pem, key_pem) {
                    (Some(cert_pem), Some(key_pem)) => Some(ClientIdentity {
                        cert_pem,
                        key_pem: SecretString::from(String::from_utf8_lossy(&key_pem).into_owned()),
                    }),
                    _ => None,
                }
            }
            (Some(_), None) => {
                self.problems.push(self.src.problem(
                    "store.tls.key_file",
                    "is required with `cert_file`: the client certificate's private key",
                ));
                None
            }
            (None, Some(_)) => {
                self.problems.push(self.src.problem(
                    "store.tls.cert_file",
                    "is required with `key_file`: the client certificate",
                ));
                None
            }
            (None, None) => None,
        };
        let server_name = raw.server_name.as_deref().and_then(|name| {
            let at = "store.tls.server_name";
            if cluster {
                self.problems.push(self.src.problem(
                    at,
                    "is not available with `store.cluster`: its nodes are reached at the \
                     addresses the cluster announces, each verified against its own; make \
                     them names on the certificates (`cluster-announce-hostname` and \
                     `cluster-preferred-endpoint-type hostname` in redis.conf)",
                ));
                return None;
            }
            if rustls::pki_types::ServerName::try_from(name).is_err() {
                let shown = self.src.quote(at, name);
                self.problems.push(
                    self.src
                        .problem(at, format!("{shown} is not a DNS name or IP address")),
                );
                return None;
            }
            Some(name.to_owned())
        });
        Some(RedisTls {
            ca_pem,
            client,
            server_name,
        })
    }

    /// The bytes of `file` (relative to the config's directory), or None with the problem.
    fn read(&mut self, at: &str, file: &str) -> Option<Vec<u8>> {
        let path = self.base.join(file);
        std::fs::read(&path)
            .map_err(|e| {
                self.problems.push(
                    self.src
                        .problem(at, format!("cannot read {}: {e}", path.display())),
                );
            })
            .ok()
    }

    /// The PEM in `file`, checked to hold what `kind` says (the key's bytes never quoted).
    fn pem(&mut self, at: &str, file: &str, kind: Pem) -> Option<Vec<u8>> {
        let bytes = self.read(at, file)?;
        let path = self.base.join(file);
        let usable = match kind {
            Pem::Certificates => {
                let certs: Result<Vec<_>, _> =
                    rustls_pemfile::certs(&mut bytes.as_slice()).collect();
                certs.is_ok_and(|c| !c.is_empty())
            }
            Pem::PrivateKey => {
                matches!(
                    rustls_pemfile::private_key(&mut bytes.as_slice()),
                    Ok(Some(_))
                )
            }
        };
        if !usable {
            let what = match kind {
                Pem::Certificates => "PEM certificate",
                Pem::PrivateKey => "PEM private key (PKCS#8, PKCS#1 or SEC1)",
            };
            self.problems.push(
                self.src
                    .problem(at, format!("{} holds no usable {what}", path.display())),
            );
            return None;
        }
        Some(bytes)
    }
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

/// `host[:port]` (IPv6 in brackets) with `default` as the port.
fn host_port(text: &str, default: u16) -> Option<(String, u16)> {
    if text.is_empty() || text.contains(['/', '@', ' ']) {
        return None;
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (text, default),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// Where a cluster is, for logs and errors: `cluster of host:port, …` (its seed nodes).
fn cluster_endpoint(nodes: &[(String, u16)]) -> String {
    let nodes: Vec<String> = nodes
        .iter()
        .map(|(host, port)| {
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        })
        .collect();
    format!("cluster of {}", nodes.join(", "))
}

/// Whether a `redis://` URL's user info carries a password (`:password@` or `user:pw@`).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.split_once(':').is_some_and(|(_, p)| !p.is_empty()))
}

/// `store.url` and its `host:port`, or None with the problem (the URL is never quoted: it
/// may carry a password).
fn redis_url<'a>(
    url: Option<&'a str>,
    src: &Source,
    problems: &mut Problems,
) -> Option<(&'a str, String)> {
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        problems.push(src.problem(
            "store.url",
            "is required with `backend: redis` (or `sentinel`, or `cluster`), such as redis://127.0.0.1:6379/0",
        ));
        return None;
    };
    let Some(endpoint) = redis_endpoint(url) else {
        problems.push(src.problem(
            "store.url",
            "is not a redis://HOST[:PORT][/DB] or rediss://HOST[:PORT][/DB] URL",
        ));
        return None;
    };
    // The redis client reads `#insecure` as "do not verify the server's certificate".
    if url.contains('#') {
        problems.push(src.problem(
            "store.url",
            "takes no #fragment: the server's certificate is always verified (for a private CA, set store.tls.ca_file)",
        ));
        return None;
    }
    Some((url, endpoint))
}

/// `host:port` of a `redis://[user:password@]host[:port][/db]` URL (or `rediss://`).
fn redis_endpoint(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))?;
    // A password may hold `/` or `?` (base64 does): the host starts after the last `@`.
    let after_userinfo = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = after_userinfo.split(['/', '?']).next()?;
    if host_port.is_empty() {
        return None;
    }
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'));
    Some(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:{DEFAULT_REDIS_PORT}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_endpoints_never_show_the_password() {
        assert_eq!(
            redis_endpoint("redis://127.0.0.1:6380/0").as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(
            redis_endpoint("rediss://:pw@cache.internal").as_deref(),
            Some("cache.internal:6379")
        );
        assert_eq!(
            redis_endpoint("redis://user:p@ss:w@[::1]:7000").as_deref(),
            Some("[::1]:7000")
        );
        assert_eq!(
            redis_endpoint("redis://:ab/cd?e@redis:6380/1").as_deref(),
            Some("redis:6380"),
            "a password with / and ? never shows"
        );
        assert_eq!(redis_endpoint("http://127.0.0.1"), None);
        assert_eq!(redis_endpoint("redis://"), None);
    }

    #[test]
    fn sentinel_addresses() {
        assert_eq!(host_port("s0", 26379), Some(("s0".into(), 26379)));
        assert_eq!(host_port("s0:26380", 26379), Some(("s0".into(), 26380)));
        assert_eq!(host_port("[::1]:26380", 26379), Some(("::1".into(), 26380)));
        assert_eq!(host_port("[::1]", 26379), Some(("::1".into(), 26379)));
        assert_eq!(host_port("s0:x", 26379), None);
        assert_eq!(host_port("redis://s0", 26379), None);
        assert_eq!(host_port("", 26379), None);
    }

    #[test]
    fn passwords_in_urls() {
        assert!(url_has_password("redis://:pw@h"));
        assert!(url_has_password("rediss://u:pw@h:1/0"));
        assert!(!url_has_password("redis://u@h"));
        assert!(!url_has_password("redis://h:6379"));
    }
}
