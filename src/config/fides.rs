//! The Fides SaaS-connector schema, as far as tokenwarden reads it (FIDES-BEHAVIOUR.md §1).
//!
//! Like Fides (pydantic's default), the top-level config, `client_config` and the strategy
//! configurations ignore keys they do not know — so `endpoints`, `test_request`, a stray
//! `port:` and the like are accepted and ignored. Like Fides, a request (`SaaSRequest`)
//! forbids unknown keys, and lists every field Fides allows so real files load unchanged.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_yaml_ng::Value;

/// A Fides connector file: its single top key is `saas_config`.
#[derive(Debug, Clone, Deserialize)]
pub struct SaasConfigFile {
    pub saas_config: SaasConfig,
}

/// `saas_config:` — the fields tokenwarden uses; the rest is accepted and ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct SaasConfig {
    pub fides_key: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub connector_params: Vec<ConnectorParam>,
    pub client_config: ClientConfig,
}

/// One `connector_params` entry: the names that `secrets:` fill, with optional defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectorParam {
    pub name: String,
    #[serde(default)]
    pub default_value: Option<Value>,
}

/// `client_config`: where requests go and how they authenticate. Fides has no `port`
/// field; a port belongs in `host` (`example.com:8443`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClientConfig {
    pub protocol: String,
    pub host: String,
    #[serde(default)]
    pub authentication: Option<Strategy>,
}

/// `authentication: {strategy, configuration}`; the configuration is read per strategy.
#[derive(Debug, Clone, Deserialize)]
pub struct Strategy {
    pub strategy: String,
    #[serde(default)]
    pub configuration: Option<Value>,
}

/// A request template (`SaaSRequest`). Fields marked "accepted" matter only for Fides'
/// data requests and are ignored here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the "accepted" fields are read only to be ignored
pub struct SaasRequest {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: Vec<NameValue>,
    #[serde(default)]
    pub query_params: Vec<NameValue>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub client_config: Option<ClientConfig>,
    // accepted
    #[serde(default)]
    pub request_override: Option<String>,
    #[serde(default)]
    param_values: IgnoredAny,
    #[serde(default)]
    data_path: IgnoredAny,
    #[serde(default)]
    postprocessors: IgnoredAny,
    #[serde(default)]
    pagination: IgnoredAny,
    #[serde(default)]
    grouped_inputs: IgnoredAny,
    #[serde(default)]
    ignore_errors: IgnoredAny,
    #[serde(default)]
    rate_limit_config: IgnoredAny,
    #[serde(default)]
    async_config: IgnoredAny,
    #[serde(default)]
    skip_missing_param_values: IgnoredAny,
    #[serde(default)]
    correlation_id_path: IgnoredAny,
    #[serde(default)]
    output: IgnoredAny,
}

/// A header or query parameter. Query values may be integers in Fides; they become text.
#[derive(Debug, Clone, Deserialize)]
pub struct NameValue {
    pub name: String,
    #[serde(deserialize_with = "scalar_text")]
    pub value: String,
}

fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::Text(s) => s,
        Scalar::Int(i) => i.to_string(),
    })
}

/// The keys of each strategy's `configuration`, for the unknown-key warning: keep each list
/// in step with its struct below.
pub const OAUTH2_KEYS: [&str; 5] = [
    "expires_in",
    "token_request",
    "refresh_request",
    "authorization_request",
    "revoke_request",
];
pub const JWT_BEARER_KEYS: [&str; 3] = ["expires_in", "token_request", "assertion"];
pub const GOOGLE_KEYS: [&str; 1] = ["scopes"];
pub const BASIC_KEYS: [&str; 2] = ["username", "password"];
pub const BEARER_KEYS: [&str; 1] = ["token"];
pub const API_KEY_KEYS: [&str; 3] = ["headers", "query_params", "body"];

/// `oauth2_authorization_code` and `oauth2_client_credentials` (`OAuth2BaseConfiguration`).
#[derive(Debug, Clone, Deserialize)]
pub struct OAuth2Configuration {
    #[serde(default)]
    pub expires_in: Option<i64>,
    pub token_request: SaasRequest,
    #[serde(default)]
    pub refresh_request: Option<SaasRequest>,
    #[serde(default)]
    pub authorization_request: Option<SaasRequest>,
    /// A tokenwarden extension: RFC 7009 revocation when a per-user grant is deleted.
    #[serde(default)]
    pub revoke_request: Option<SaasRequest>,
}

/// `oauth2_jwt_bearer` (a tokenwarden strategy, RFC 7523 §2.1): the token request, sent
/// with a signed assertion each time a token is needed.
#[derive(Debug, Clone, Deserialize)]
pub struct JwtBearerConfiguration {
    #[serde(default)]
    pub expires_in: Option<i64>,
    pub token_request: SaasRequest,
    pub assertion: AssertionConfiguration,
}

/// `oauth2_jwt_bearer`'s `assertion`: what the JWT says and the key that signs it. Unknown
/// keys are refused (a misspelled claim would otherwise be silently left out).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfiguration {
    pub issuer: String,
    #[serde(default)]
    pub subject: Option<String>,
    /// Required; optional here so that its absence is a problem in words.
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub lifetime: Option<u64>,
    #[serde(default)]
    pub claims: serde_yaml_ng::Mapping,
    pub key: String,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
}

/// `google_cloud_service_account` (`GoogleCloudServiceAccountConfiguration`).
#[derive(Debug, Clone, Deserialize)]
pub struct GoogleConfiguration {
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// `basic`.
#[derive(Debug, Clone, Deserialize)]
pub struct BasicConfiguration {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
}

/// `bearer`.
#[derive(Debug, Clone, Deserialize)]
pub struct BearerConfiguration {
    pub token: String,
}

/// `api_key`: at least one of the three must be non-empty.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiKeyConfiguration {
    #[serde(default)]
    pub headers: Option<Vec<NameValue>>,
    #[serde(default)]
    pub query_params: Option<Vec<NameValue>>,
    #[serde(default)]
    pub body: Option<String>,
}

/// The strategies tokenwarden implements, in the order error messages list them.
pub const SUPPORTED_STRATEGIES: [&str; 7] = [
    "oauth2_authorization_code",
    "oauth2_client_credentials",
    "oauth2_jwt_bearer",
    "google_cloud_service_account",
    "bearer",
    "basic",
    "api_key",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    /// A mapping with exactly the listed keys reads into the struct: no listed key is a
    /// typo. (A field added to a struct must be added to its list too, or `check` would
    /// warn that it is ignored.)
    fn reads_all<T: DeserializeOwned>(keys: &[&str], yaml: &str) {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let map = value.as_mapping().unwrap();
        let given: Vec<&str> = map.keys().filter_map(|k| k.as_str()).collect();
        assert_eq!(given, keys, "the fixture lists exactly the known keys");
        serde_yaml_ng::from_value::<T>(value).unwrap();
    }

    #[test]
    fn every_listed_configuration_key_is_read() {
        let request = "{ method: POST, path: /t }";
        reads_all::<OAuth2Configuration>(
            &OAUTH2_KEYS,
            &format!("{{ expires_in: 1, token_request: {request}, refresh_request: {request}, authorization_request: {request}, revoke_request: {request} }}"),
        );
        reads_all::<JwtBearerConfiguration>(
            &JWT_BEARER_KEYS,
            &format!(
                "{{ expires_in: 1, token_request: {request}, assertion: {{ issuer: i, key: k }} }}"
            ),
        );
        reads_all::<GoogleConfiguration>(&GOOGLE_KEYS, "{ scopes: [a] }");
        reads_all::<BasicConfiguration>(&BASIC_KEYS, "{ username: u, password: p }");
        reads_all::<BearerConfiguration>(&BEARER_KEYS, "{ token: t }");
        reads_all::<ApiKeyConfiguration>(
            &API_KEY_KEYS,
            "{ headers: [], query_params: [], body: b }",
        );
    }
}
