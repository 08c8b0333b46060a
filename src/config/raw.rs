//! tokenwarden's own file, exactly as written (serde layer). Unknown keys are errors.
//! Downstream code never sees these types: [`super::validate`] turns them into [`super::Config`].

use super::source::{Problems, Source};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

/// The top-level keys of tokenwarden's file, in the order error messages list them.
pub const TOP_LEVEL_KEYS: [&str; 7] = [
    "proxy",
    "admin",
    "store",
    "tls",
    "log",
    "connections",
    "templates",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub log: RawLog,
    /// Each connection is read on its own, so problems in several are all reported.
    #[serde(default)]
    pub connections: Vec<Value>,
    /// The connector types runtime connections are made from (each entry read on its own).
    #[serde(default)]
    pub templates: Vec<Value>,
}

impl RawFile {
    /// Reads the file section by section, so a problem in one section (or an unknown
    /// top-level key) does not hide the problems in the others. A section that cannot be
    /// read is reported and left at its default.
    pub fn read(value: Value, src: &Source, problems: &mut Problems) -> RawFile {
        let map = match value {
            Value::Mapping(map) => map,
            Value::Null => return RawFile::default(),
            other => {
                // Let serde word the type mismatch ("invalid type: …, expected struct RawFile").
                if let Err(p) = src.deserialize::<RawFile>(other, "") {
                    problems.push(p);
                }
                return RawFile::default();
            }
        };
        let mut raw = RawFile::default();
        for (key, value) in map {
            let Some(name) = key.as_str() else {
                problems.push(src.problem(
                    "",
                    format!("top-level keys must be text, not `{}`", yaml_text(&key)),
                ));
                continue;
            };
            match name {
                "proxy" => section(&mut raw.proxy, value, name, src, problems),
                "admin" => section(&mut raw.admin, value, name, src, problems),
                "store" => section(&mut raw.store, value, name, src, problems),
                "tls" => section(&mut raw.tls, value, name, src, problems),
                "log" => section(&mut raw.log, value, name, src, problems),
                "connections" => section(&mut raw.connections, value, name, src, problems),
                "templates" => section(&mut raw.templates, value, name, src, problems),
                other => problems.push(src.problem(
                    other,
                    super::suggest::did_you_mean(&format!(
                        "unknown field `{other}`, expected one of {}",
                        TOP_LEVEL_KEYS.map(|k| format!("`{k}`")).join(", ")
                    )),
                )),
            }
        }
        raw
    }
}

/// Reads one top-level section into `slot`; `null` (an empty section) keeps the default.
fn section<T: DeserializeOwned>(
    slot: &mut T,
    value: Value,
    name: &str,
    src: &Source,
    problems: &mut Problems,
) {
    if value.is_null() {
        return;
    }
    if let Some(v) = src.deserialize_all(value, name, problems) {
        *slot = v;
    }
}

/// A text field that may be written as a bare number (`listen: 8080`, `connect_timeout: 5`),
/// so validation can judge the value instead of serde rejecting its type.
fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        // The value is not quoted: some of these fields hold secrets.
        Some(other) => {
            let kind = match other {
                Value::Bool(_) => "true/false",
                Value::Sequence(_) => "a list",
                Value::Mapping(_) => "a mapping",
                _ => "a tagged value",
            };
            return Err(serde::de::Error::custom(format!(
                "expected text, not {kind}"
            )));
        }
    })
}

fn yaml_text(value: &Value) -> String {
    serde_yaml_ng::to_string(value)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    #[serde(default, deserialize_with = "scalar_text")]
    pub listen: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub connect_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub response_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub upstream_read_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub header_read_timeout: Option<String>,
    pub via_pseudonym: Option<String>,
    #[serde(default)]
    pub connect_passthrough: Vec<String>,
    pub worker_threads: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_requests_per_connection: Option<u64>,
    pub max_buffered_head_bytes: Option<usize>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub max_connection_lifetime: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub body_read_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub tunnel_idle_timeout: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub stream_idle_timeout: Option<String>,
    #[serde(default)]
    pub access_log: bool,
    #[serde(default, deserialize_with = "scalar_text")]
    pub unauthorized_refresh_interval: Option<String>,
    pub intercept: Option<RawIntercept>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default, deserialize_with = "scalar_text")]
    pub listen: Option<String>,
    pub public_url: Option<String>,
    /// A secret: a bare number is read as text, so no type error ever quotes it.
    #[serde(default, deserialize_with = "scalar_text")]
    pub token: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub state_ttl: Option<String>,
    pub max_pending_states: Option<usize>,
    pub instance: Option<String>,
    pub success_url: Option<String>,
    /// Addresses or CIDR ranges of reverse proxies whose forwarding headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub watch_config: Option<String>,
    /// `/metrics` labels runtime connections one by one (default: by connector type).
    #[serde(default)]
    pub metrics_per_connection: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub backend: Option<String>,
    pub path: Option<String>,
    /// A secret: a bare number is read as text, so no type error ever quotes it.
    #[serde(default, deserialize_with = "scalar_text")]
    pub key: Option<String>,
    pub on_unreadable: Option<String>,
    /// May carry a password: never echoed.
    #[serde(default, deserialize_with = "scalar_text")]
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub lease_ttl: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub poll_interval: Option<String>,
    /// Adopt (and re-seal) token sets an earlier version wrote; for one upgrade only.
    pub migrate_legacy: Option<bool>,
    /// The ACL user of the Redis data nodes (overrides the URL's).
    #[serde(default, deserialize_with = "scalar_text")]
    pub username: Option<String>,
    /// A secret: never echoed.
    #[serde(default, deserialize_with = "scalar_text")]
    pub password: Option<String>,
    pub password_file: Option<String>,
    /// TLS to the Redis data nodes.
    pub tls: Option<RawRedisTls>,
    /// Sentinels that name the master, in place of `url`.
    pub sentinel: Option<RawSentinel>,
    /// The seed nodes of a Redis Cluster, in place of `url` and `sentinel`.
    pub cluster: Option<RawCluster>,
    /// Replicas that must hold a rotated refresh token before it is used (`WAIT`).
    pub min_replicas_acked: Option<u32>,
}

/// `store.tls` (and the sentinels' `store.sentinel.tls`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisTls {
    pub enabled: Option<bool>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub server_name: Option<String>,
}

/// `store.sentinel`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master_name: Option<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub username: Option<String>,
    /// A secret: never echoed.
    #[serde(default, deserialize_with = "scalar_text")]
    pub password: Option<String>,
    pub password_file: Option<String>,
    /// TLS to the sentinels: the data nodes' CA and client certificate (default: as the
    /// data nodes).
    pub tls: Option<bool>,
}

/// `store.cluster`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `HOST[:PORT]` of one or more nodes; the others are learnt from them.
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// `proxy.intercept`: the local CA that lets `CONNECT` to a connection's host be intercepted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntercept {
    pub ca_cert: String,
    pub ca_key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnection {
    pub key: String,
    /// A path (relative to the config file) to an unchanged Fides file, or its mapping inline.
    #[serde(default)]
    pub saas_config: Option<Value>,
    /// An inline Fides `client_config`.
    #[serde(default)]
    pub client_config: Option<Value>,
    #[serde(default)]
    pub secrets: Mapping,
    #[serde(default)]
    pub pkce: bool,
    /// A name (`client_secret_basic`, …) or a mapping with a `method`.
    #[serde(default)]
    pub client_auth: Option<Value>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub allow_private_network: bool,
    /// Reached by its key in reverse mode only, never by host in forward mode.
    #[serde(default)]
    pub reverse_only: bool,
    /// Upstream statuses that mean the token was rejected (default `[401]`).
    #[serde(default)]
    pub token_rejected_statuses: Option<Vec<u16>>,
    /// `single` (default: one grant for the connection) or `per_user` (one per end user,
    /// chosen per request: `crate::grants`).
    #[serde(default)]
    pub grants: Option<String>,
    /// Per-user grants: token requests in flight at once for this connection (default 8).
    #[serde(default)]
    pub max_concurrent_token_requests: Option<u64>,
    /// Per-user grants: how many this process keeps in memory (default 10,000).
    #[serde(default)]
    pub grant_cache_size: Option<u64>,
    /// `auto` (default), `never` or `always`: HTTP/2 to the upstream ([`crate::config::Http2`]).
    #[serde(default)]
    pub upstream_http2: Option<String>,
    /// `always` (default), `if_absent` or `placeholder` ([`crate::config::Inject`]).
    #[serde(default)]
    pub inject: Option<String>,
    /// The string the app holds in place of the credential (`tokenwarden placeholder`).
    #[serde(default)]
    pub placeholder: Option<String>,
    /// Refuse a request that does not carry the placeholder.
    #[serde(default)]
    pub require_placeholder: bool,
    /// Answer the app's own token requests to the provider's token URL with a placeholder.
    #[serde(default)]
    pub stub_token_endpoint: bool,
    /// Replace the credential in response headers (default true).
    #[serde(default)]
    pub scrub_response_headers: Option<bool>,
    /// Replace the credential in text response bodies too.
    #[serde(default)]
    pub scrub_response_bodies: bool,
}
