//! tokenwarden's own file, exactly as written (serde layer). Unknown keys are errors.
//! Downstream code never sees these types: [`super::validate`] turns them into [`super::Config`].

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

#[derive(Debug, Deserialize)]
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub listen: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub via_pseudonym: Option<String>,
    #[serde(default)]
    pub connect_passthrough: Vec<String>,
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub token: Option<String>,
    pub state_ttl: Option<String>,
    pub max_pending_states: Option<usize>,
    pub instance: Option<String>,
    pub success_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub path: Option<String>,
    pub key: Option<String>,
    pub on_unreadable: Option<String>,
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
    #[serde(default)]
    pub client_auth: Option<String>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub allow_private_network: bool,
}
