//! One `connections:` entry → a typed [`Connection`]: where its Fides `client_config` comes
//! from, its params (secrets over connector-param defaults), its strategy, and the checks
//! that every placeholder the host and the auth requests use can be resolved.

use super::fides::{
    self, ClientConfig, SaasConfig, SaasConfigFile, SaasRequest, SUPPORTED_STRATEGIES,
};
use super::raw::RawConnection;
use super::runtime;
use super::settings::AdminSettings;
use super::source::{Problems, Source};
use super::strategy::{static_auth, Checker};
use crate::template::{self, Lookup, Params};
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// The callback route, appended to `admin.public_url` for the default `redirect_uri`.
pub const CALLBACK_PATH: &str = "/api/v1/oauth/callback";

/// A validated connection. Holds secrets (in `params`, header values, and request
/// templates, which may carry expanded `${VAR}`s): its `Debug` output never shows them.
pub struct Connection {
    /// URL prefix in reverse mode and name everywhere else.
    pub key: String,
    /// Fides `name` (or the key for an inline client_config).
    pub name: String,
    pub upstream: Upstream,
    pub auth: Auth,
    pub params: Params,
    /// The root Fides client_config (token requests without their own use its host).
    pub client_config: ClientConfig,
    pub pkce: bool,
    pub client_auth: ClientAuth,
    /// Expected `iss` on the callback (RFC 9207).
    pub issuer: Option<String>,
    pub allow_private_network: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("upstream", &self.upstream)
            .field("auth", &self.auth)
            .field("params", &self.params)
            .field("pkce", &self.pkce)
            .field("client_auth", &self.client_auth)
            .field("issuer", &self.issuer)
            .field("allow_private_network", &self.allow_private_network)
            .finish_non_exhaustive()
    }
}

/// Where proxied requests go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    /// `host[:port]` as written (placeholders filled); also the `Host` header.
    pub authority: Authority,
    /// Lower-case host name or IP literal, without brackets or trailing dot.
    pub host: String,
    pub port: u16,
}

/// How requests on a connection are authenticated.
#[derive(Debug)]
pub enum Auth {
    /// `bearer` or `basic`: one fixed `Authorization` value, built at load.
    Header(HeaderValue),
    ApiKey(ApiKey),
    OAuth2(Box<OAuth2>),
}

/// `api_key`: headers set, query parameters set or replaced, JSON merged into the body.
/// Its values are secrets: `Debug` shows only names.
pub struct ApiKey {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub query_params: Vec<(String, String)>,
    pub body: Option<serde_json::Map<String, serde_json::Value>>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field(
                "query_params",
                &self.query_params.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field(
                "body",
                &self.body.as_ref().map(|b| b.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// `Debug` leaves out the request templates (they may hold expanded secrets).
pub struct OAuth2 {
    pub grant: Grant,
    pub token_request: SaasRequest,
    pub refresh_request: Option<SaasRequest>,
    pub authorization_request: Option<SaasRequest>,
    /// A configured lifetime wins over the token response's `expires_in` (as in Fides).
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("grant", &self.grant)
            .field("refresh_request", &self.refresh_request.is_some())
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    ClientCredentials,
    AuthorizationCode,
}

/// How token and refresh requests present the client's credentials, on top of what the
/// Fides requests themselves carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Exactly as the Fides requests say (default).
    AsConfigured,
    /// `Authorization: Basic base64(urlencode(client_id):urlencode(client_secret))` (RFC 6749 §2.3.1).
    Basic,
    /// The same without the form-encoding, for providers that do not decode it.
    BasicUnencoded,
}

pub fn validate_all(
    values: Vec<Value>,
    src: &Source,
    base: &Path,
    admin: &AdminSettings,
    problems: &mut Problems,
) -> Vec<Arc<Connection>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let prefix = format!("connections[{i}]");
        let Some(raw) = src.deserialize_all::<RawConnection>(value, &prefix, problems) else {
            continue;
        };
        let key_path = format!("{prefix}.key");
        if raw.key.is_empty()
            || !raw
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            problems.push(src.problem(
                &key_path,
                format!(
                    "connection key `{}` must be letters, digits, `-`, `_` or `.`",
                    raw.key
                ),
            ));
        } else if !seen.insert(raw.key.clone()) {
            problems
                .push(src.problem(&key_path, format!("duplicate connection key `{}`", raw.key)));
        }
        if let Some(c) = validate_one(raw, src, &prefix, base, admin, problems) {
            out.push(Arc::new(c));
        }
    }
    out
}

/// Where a connection's client_config lives: the file (main or Fides) and the path in it.
pub(super) struct Origin<'a> {
    src: &'a Source,
    path: String,
    key: &'a str,
}

impl Origin<'_> {
    fn at(&self, rel: &str) -> String {
        format!("{}.{rel}", self.path)
    }
    pub(super) fn problem(&self, rel: &str, msg: impl std::fmt::Display) -> super::Problem {
        self.src
            .problem(&self.at(rel), format!("connection `{}`: {msg}", self.key))
    }
    pub(super) fn read<T: DeserializeOwned>(
        &self,
        value: Value,
        rel: &str,
    ) -> Result<T, super::Problem> {
        self.src.deserialize(value, &self.at(rel))
    }
}

fn validate_one(
    raw: RawConnection,
    src: &Source,
    prefix: &str,
    base: &Path,
    admin: &AdminSettings,
    problems: &mut Problems,
) -> Option<Connection> {
    // 1. The Fides config: a file, an inline saas_config, or an inline client_config.
    let fides_src;
    let (saas, origin_src, origin_path): (SaasConfig, &Source, String) =
        match (raw.saas_config, raw.client_config) {
            (Some(Value::String(file)), None) => {
                let file = base.join(file);
                fides_src = match std::fs::read_to_string(&file) {
                    Ok(text) => Source::from_text(&file, text),
                    Err(e) => {
                        // Positioned where the main file names it.
                        problems.push(src.problem(
                            &format!("{prefix}.saas_config"),
                            format!(
                                "connection `{}`: cannot read the Fides file `{}`: {e}",
                                raw.key,
                                file.display()
                            ),
                        ));
                        return None;
                    }
                };
                let in_fides_file = |mut p: super::Problem| {
                    p.message = format!("connection `{}`: {}", raw.key, p.message);
                    p
                };
                let value = fides_src
                    .parse()
                    .map_err(|p| problems.push(in_fides_file(p)))
                    .ok()?;
                let parsed: SaasConfigFile = fides_src
                    .deserialize(value, "")
                    .map_err(|p| problems.push(in_fides_file(p)))
                    .ok()?;
                (
                    parsed.saas_config,
                    &fides_src,
                    "saas_config.client_config".into(),
                )
            }
            (Some(value @ Value::Mapping(_)), None) => {
                let at = format!("{prefix}.saas_config");
                let parsed: SaasConfig = src
                    .deserialize(value, &at)
                    .map_err(|p| problems.push(p))
                    .ok()?;
                (parsed, src, format!("{at}.client_config"))
            }
            (None, Some(value)) => {
                let at = format!("{prefix}.client_config");
                let client_config: ClientConfig = src
                    .deserialize(value, &at)
                    .map_err(|p| problems.push(p))
                    .ok()?;
                let saas = SaasConfig {
                    fides_key: raw.key.clone(),
                    name: raw.key.clone(),
                    kind: "custom".into(),
                    connector_params: Vec::new(),
                    client_config,
                };
                (saas, src, at)
            }
            (Some(_), None) => {
                problems.push(src.problem(
                    &format!("{prefix}.saas_config"),
                    "expected a file path or a saas_config mapping",
                ));
                return None;
            }
            (Some(_), Some(_)) => {
                problems.push(src.problem(
                    &format!("{prefix}.client_config"),
                    format!(
                        "connection `{}` has both saas_config and client_config; keep one",
                        raw.key
                    ),
                ));
                return None;
            }
            (None, None) => {
                problems.push(src.problem(
                    prefix,
                    format!(
                        "connection `{}` needs a saas_config (a Fides file) or a client_config",
                        raw.key
                    ),
                ));
                return None;
            }
        };
    let origin = Origin {
        src: origin_src,
        path: origin_path,
        key: &raw.key,
    };

    // 2. Params: connector-param defaults, then secrets.
    let mut map = serde_json::Map::new();
    for p in &saas.connector_params {
        if let Some(default) = p
            .default_value
            .as_ref()
            .and_then(|d| serde_json::to_value(d).ok())
        {
            map.insert(p.name.clone(), trim_string(default));
        }
    }
    for (k, v) in raw.secrets {
        match (k.as_str(), serde_json::to_value(&v)) {
            (Some(name), Ok(value)) => {
                map.insert(name.to_owned(), value);
            }
            _ => problems.push(src.problem(
                &format!("{prefix}.secrets"),
                "secrets must map names to values",
            )),
        }
    }
    let mut params = Params::new(map);

    // 3. Strategy.
    let Some(strategy) = saas.client_config.authentication.clone() else {
        problems.push(origin.problem(
            "",
            format!(
            "has no authentication, so tokenwarden has nothing to inject; supported strategies: {}",
            SUPPORTED_STRATEGIES.join(", ")
        ),
        ));
        return None;
    };
    let config_value = strategy.configuration.clone().unwrap_or(Value::Null);
    let conf_rel = "authentication.configuration";
    let grant = match strategy.strategy.as_str() {
        "oauth2_client_credentials" => Some(Grant::ClientCredentials),
        "oauth2_authorization_code" => Some(Grant::AuthorizationCode),
        "bearer" | "basic" | "api_key" => None,
        other => {
            problems.push(origin.problem(
                "authentication.strategy",
                format!(
                    "unknown strategy `{other}`; supported strategies: {}",
                    SUPPORTED_STRATEGIES.join(", ")
                ),
            ));
            return None;
        }
    };
    if grant == Some(Grant::AuthorizationCode) && !params.contains("redirect_uri") {
        if let Some(public) = &admin.public_url {
            params.insert(
                "redirect_uri",
                serde_json::Value::String(format!("{public}{CALLBACK_PATH}")),
            );
        }
    }
    let check = Checker {
        origin: &origin,
        params: &params,
        runtime: &[],
    };
    let host_ok = check.text("host", &saas.client_config.host, problems);
    let auth = match grant {
        Some(grant) => {
            let conf: fides::OAuth2Configuration = origin
                .read(config_value, conf_rel)
                .map_err(|p| problems.push(p))
                .ok()?;
            let code = match grant {
                Grant::AuthorizationCode => runtime::CODE_EXCHANGE,
                Grant::ClientCredentials => &[],
            };
            check.allowing(code).request(
                &format!("{conf_rel}.token_request"),
                Some(&conf.token_request),
                problems,
            );
            check.allowing(runtime::REFRESH).request(
                &format!("{conf_rel}.refresh_request"),
                conf.refresh_request.as_ref(),
                problems,
            );
            if grant == Grant::AuthorizationCode {
                match &conf.authorization_request {
                    Some(_) => check.allowing(runtime::AUTHORIZATION).request(
                        &format!("{conf_rel}.authorization_request"),
                        conf.authorization_request.as_ref(),
                        problems,
                    ),
                    None => problems.push(origin.problem(
                        conf_rel,
                        "oauth2_authorization_code needs an authorization_request",
                    )),
                }
            } else if raw.pkce {
                problems.push(src.problem(
                    &format!("{prefix}.pkce"),
                    "pkce applies to oauth2_authorization_code connections only",
                ));
            }
            let expires_in = match conf.expires_in {
                Some(n) if n <= 0 => {
                    problems.push(origin.problem(
                        &format!("{conf_rel}.expires_in"),
                        "expires_in must be a positive number of seconds",
                    ));
                    None
                }
                n => n.map(|n| n as u64),
            };
            Auth::OAuth2(Box::new(OAuth2 {
                grant,
                token_request: conf.token_request,
                refresh_request: conf.refresh_request,
                authorization_request: conf.authorization_request,
                expires_in,
            }))
        }
        None => static_auth(&strategy.strategy, config_value, &check, conf_rel, problems)?,
    };
    let client_auth = match raw.client_auth.as_deref() {
        None => ClientAuth::AsConfigured,
        Some("client_secret_basic") => ClientAuth::Basic,
        Some("client_secret_basic_unencoded") => ClientAuth::BasicUnencoded,
        Some(other) => {
            problems.push(src.problem(&format!("{prefix}.client_auth"), format!(
                "unknown value `{other}`: expected client_secret_basic or client_secret_basic_unencoded"
            )));
            ClientAuth::AsConfigured
        }
    };
    if client_auth != ClientAuth::AsConfigured {
        for name in ["client_id", "client_secret"] {
            if !params.contains(name) {
                problems.push(src.problem(
                    &format!("{prefix}.client_auth"),
                    format!("needs `{name}` in secrets"),
                ));
            }
        }
    }
    if !host_ok {
        return None;
    }
    let host = template::assign(&saas.client_config.host, &Lookup::new(&params))?;
    let upstream = match parse_upstream(&saas.client_config.protocol, &host) {
        Ok(u) => u,
        Err(msg) => {
            problems.push(origin.problem("host", msg));
            return None;
        }
    };
    Some(Connection {
        key: raw.key,
        name: saas.name,
        upstream,
        auth,
        params,
        client_config: saas.client_config,
        pkce: raw.pkce,
        client_auth,
        issuer: raw.issuer,
        allow_private_network: raw.allow_private_network,
    })
}

/// YAML drops trailing spaces of plain scalars; quoted defaults keep them — trim like Fides users expect.
fn trim_string(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(s.trim().to_owned()),
        other => other,
    }
}

/// `protocol` + `host[:port]` → an upstream; the port defaults from the protocol.
fn parse_upstream(protocol: &str, host: &str) -> Result<Upstream, String> {
    let (scheme, default_port) = match protocol {
        "https" => (Scheme::HTTPS, 443),
        "http" => (Scheme::HTTP, 80),
        other => return Err(format!("protocol `{other}` is not http or https")),
    };
    let authority: Authority = host
        .parse()
        .map_err(|_| format!("host `{host}` is not a valid host[:port]"))?;
    if authority.as_str().contains('@') || host.contains('/') {
        return Err(format!("host `{host}` must be a bare host[:port]"));
    }
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Ok(Upstream {
        scheme,
        host: name.trim_end_matches('.').to_ascii_lowercase(),
        port: authority.port_u16().unwrap_or(default_port),
        authority,
    })
}
