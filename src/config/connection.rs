//! One `connections:` entry → a typed [`Connection`]: where its Fides `client_config` comes
//! from, its params (secrets over connector-param defaults), its strategy, and the checks
//! that every placeholder the host and the auth requests use can be resolved.

use super::egress::egress;
use super::fides::{self, ClientConfig, SUPPORTED_STRATEGIES};
use super::model::{ClientAuth, Connection, Grant, PerUser};
use super::origin::{FidesSource, Named, Origin};
use super::raw::RawConnection;
use super::rejected::RejectedStatuses;
use super::request::{Checker, Root};
use super::settings::AdminSettings;
use super::source::{Problem, Problems, Source};
use super::strategy::{google_auth, jwt_bearer_auth, oauth2_auth, static_auth, Checked};
use super::upstream::upstream;
use crate::template::Params;
use serde_yaml_ng::Value;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// The callback route, appended to `admin.public_url` for the default `redirect_uri`.
pub const CALLBACK_PATH: &str = "/api/v1/oauth/callback";

pub fn validate_all(
    values: Vec<Value>,
    src: &Source,
    base: &Path,
    admin: &AdminSettings,
    problems: &mut Problems,
) -> Vec<Arc<Connection>> {
    let mut seen = HashSet::new();
    let mut placeholders = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let prefix = format!("connections[{i}]");
        let fingerprint = fingerprint(&value, base, admin);
        let Some(mut raw) = src.deserialize_all::<RawConnection>(value, &prefix, problems) else {
            continue;
        };
        let key_path = format!("{prefix}.key");
        let shown = src.quote(&key_path, &raw.key);
        if raw.key.is_empty()
            || !raw
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            problems.push(src.problem(
                &key_path,
                format!("connection key {shown} must be letters, digits, `-`, `_` or `.`"),
            ));
            if src.hides(&key_path) {
                // The rest of its problems name the entry, not the hidden key.
                raw.key = prefix.clone();
            }
        } else if !seen.insert(raw.key.clone()) {
            problems.push(src.problem(&key_path, format!("duplicate connection key {shown}")));
        }
        if let Some(mut c) = validate_one(raw, src, &prefix, base, admin, problems) {
            c.fingerprint = fingerprint;
            c.grant_identity = super::identity::grant_identity(&c);
            if let Some(p) = &c.egress.placeholder {
                if let Some(first) = placeholders.insert(Arc::clone(p), c.key.clone()) {
                    let message = format!("connection `{first}` has the same placeholder: each connection needs its own");
                    problems.push(src.problem(&format!("{prefix}.placeholder"), message));
                }
            }
            out.push(Arc::new(c));
        }
    }
    out
}

/// A runtime connection (the connection API's): `entry` is a `connections:` entry built
/// from the request (`saas_config` the template's file), found at `prefix` in `src` (the
/// request as YAML), validated as a file connection is. Its key was checked by the caller.
pub fn validate_runtime(
    entry: Value,
    src: &Source,
    prefix: &str,
    admin: &AdminSettings,
    problems: &mut Problems,
) -> Option<Arc<Connection>> {
    let base = Path::new("");
    let fingerprint = fingerprint(&entry, base, admin);
    let raw = src.deserialize_all::<RawConnection>(entry, prefix, problems)?;
    let mut c = validate_one(raw, src, prefix, base, admin, problems)?;
    c.fingerprint = fingerprint;
    c.grant_identity = super::identity::grant_identity(&c);
    Some(Arc::new(c))
}

/// What identifies a connection's definition: its entry, `admin.public_url` and, when
/// `saas_config` names a file, that file's text (an unreadable file is reported by
/// validation itself).
fn fingerprint(entry: &Value, base: &Path, admin: &AdminSettings) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    // It gives authorization-code connections their default redirect_uri.
    hash.update(admin.public_url.as_deref().unwrap_or_default());
    hash.update(serde_yaml_ng::to_string(entry).unwrap_or_default());
    if let Some(file) = entry.get("saas_config").and_then(Value::as_str) {
        hash.update(std::fs::read(base.join(file)).unwrap_or_default());
    }
    hash.finalize().into()
}

/// Validates one connection in the order its parts depend on each other: read its Fides
/// source, merge its params, check its strategy and compile its auth (host and requests
/// included), check its client_auth, and resolve its upstream. Every problem goes to
/// `problems`; None when there is any.
fn validate_one(
    mut raw: RawConnection,
    src: &Source,
    prefix: &str,
    base: &Path,
    admin: &AdminSettings,
    problems: &mut Problems,
) -> Option<Connection> {
    let egress_fields = super::egress::RawEgress::take(&mut raw);
    let named = Named {
        key: &raw.key,
        saas_config: raw.saas_config,
        client_config: raw.client_config,
        prefix,
    };
    let per_user_fields = (
        raw.grants.clone(),
        raw.max_concurrent_token_requests,
        raw.grant_cache_size,
    );
    let fides = FidesSource::read(named, src, base, problems)?;
    let origin = fides.origin(src, &raw.key);
    let saas = &fides.saas;
    let mut params = params(&saas.connector_params, raw.secrets, src, prefix, problems);
    let strategy = strategy(&saas.client_config, &origin, problems);
    default_redirect_uri(strategy.as_ref(), &mut params, admin);
    if strategy
        .as_ref()
        .is_some_and(|(s, _)| s.strategy == "google_cloud_service_account")
    {
        super::strategy::google_params(&mut params, src, prefix, problems);
    }
    let check = Checker {
        origin: &origin,
        params: &params,
        runtime: &[],
    };
    let host = check.compile("host", &saas.client_config.host, problems);
    let client_auth = client_auth(raw.client_auth, &params, src, prefix, problems);
    let token_rejected = RejectedStatuses::from_config(
        raw.token_rejected_statuses.as_deref(),
        src,
        prefix,
        problems,
    );
    let Some((strategy, grant)) = strategy else {
        placeholders_only(&saas.client_config, &check, problems);
        return None;
    };
    let per_user = per_user(per_user_fields, grant, src, prefix, problems);
    let pkce_refused = pkce_refused(raw.pkce, src, prefix);
    let root = Root {
        protocol: &saas.client_config.protocol,
        host: host.as_ref(),
    };
    let auth = auth(&strategy, grant, &check, &root, pkce_refused, problems)?;
    let (Checked::Auth(auth), Some(host)) = (auth, host) else {
        return None;
    };
    if !body_fits(&client_auth, &auth, src, prefix, problems) {
        return None;
    }
    let cc = &saas.client_config;
    let upstream = upstream(&cc.protocol, &cc.host, &host, &check, problems)?;
    let id = (&*raw.key, &auth, &params);
    let (upstream_http2, egress) = egress(egress_fields, id, src, prefix, problems)?;
    Some(Connection {
        key: raw.key,
        name: saas.name.clone(),
        upstream,
        auth,
        params,
        pkce: raw.pkce,
        client_auth,
        issuer: raw.issuer,
        allow_private_network: raw.allow_private_network,
        upstream_http2,
        egress,
        reverse_only: raw.reverse_only,
        token_rejected,
        per_user,
        fingerprint: [0; 32],
        grant_identity: [0; 32],
    })
}

/// `grants:` and the settings of `grants: per_user`, which only an authorization-code
/// connection can have (each end user authorizes their own grant). `prefix` is where the
/// fields are written: a connection entry, or a `templates:` entry (for every instance).
pub(super) fn per_user(
    (grants, max_concurrent, cache_size): (Option<String>, Option<u64>, Option<u64>),
    grant: Option<Grant>,
    src: &Source,
    prefix: &str,
    problems: &mut Problems,
) -> Option<PerUser> {
    let at = |field: &str| format!("{prefix}.{field}");
    let per_user = match grants.as_deref() {
        None | Some("single") => false,
        Some("per_user") => true,
        Some(other) => {
            let other = src.quote(&at("grants"), other);
            let message = format!("unknown value {other}: expected single or per_user");
            problems.push(src.problem(&at("grants"), message));
            return None;
        }
    };
    let mut bounded = |field: &str, value: Option<u64>, default: usize, max: u64| match value {
        None => Some(default),
        Some(n) if (1..=max).contains(&n) => usize::try_from(n).ok(),
        Some(_) => {
            let message = format!("{field} must be between 1 and {max}");
            problems.push(src.problem(&at(field), message));
            None
        }
    };
    let settings = PerUser {
        max_concurrent_token_requests: bounded(
            "max_concurrent_token_requests",
            max_concurrent,
            PerUser::DEFAULT_MAX_CONCURRENT_TOKEN_REQUESTS,
            MAX_CONCURRENT_TOKEN_REQUESTS,
        )?,
        cache_size: bounded(
            "grant_cache_size",
            cache_size,
            PerUser::DEFAULT_CACHE_SIZE,
            MAX_GRANT_CACHE_SIZE,
        )?,
    };
    if !per_user {
        for (field, set) in [
            ("max_concurrent_token_requests", max_concurrent.is_some()),
            ("grant_cache_size", cache_size.is_some()),
        ] {
            if set {
                let message = format!("{field} applies to grants: per_user only");
                problems.push(src.problem(&at(field), message));
            }
        }
        return None;
    }
    if grant != Some(Grant::AuthorizationCode) {
        let message = "grants: per_user needs an oauth2_authorization_code connection (each user authorizes their own grant)";
        problems.push(src.problem(&at("grants"), message));
        return None;
    }
    Some(settings)
}

/// The bounds of the per-user settings.
const MAX_CONCURRENT_TOKEN_REQUESTS: u64 = 1024;
const MAX_GRANT_CACHE_SIZE: u64 = 10_000_000;

/// The main file's problem for `pkce: true`, for the strategy check to report if the grant
/// turns out not to be authorization code.
fn pkce_refused(pkce: bool, src: &Source, prefix: &str) -> Option<Problem> {
    pkce.then(|| {
        let path = format!("{prefix}.pkce");
        src.problem(
            &path,
            "pkce applies to oauth2_authorization_code connections only",
        )
    })
}

/// A strategy tokenwarden does not know: its configuration cannot be read, but its
/// placeholders can still be checked, so that one pass shows every problem.
fn placeholders_only(client_config: &ClientConfig, check: &Checker<'_>, problems: &mut Problems) {
    let configuration = client_config.authentication.as_ref();
    if let Some(conf) = configuration.and_then(|s| s.configuration.as_ref()) {
        check
            .allowing(super::runtime::ALL)
            .compile_all(CONFIGURATION, conf, problems);
    }
}

/// Where a strategy's configuration sits in the client_config.
const CONFIGURATION: &str = "authentication.configuration";

/// The strategy's credentials: the OAuth2 requests compiled, or the static header or
/// api_key parts built. None (with a problem) when its configuration cannot be read.
fn auth(
    strategy: &fides::Strategy,
    grant: Option<Grant>,
    check: &Checker<'_>,
    root: &Root<'_>,
    pkce_refused: Option<Problem>,
    problems: &mut Problems,
) -> Option<Checked> {
    let conf = strategy.configuration.clone().unwrap_or(Value::Null);
    let name = strategy.strategy.as_str();
    match (name, grant) {
        ("oauth2_jwt_bearer" | "google_cloud_service_account", _) => {
            if let Some(p) = pkce_refused {
                problems.push(p);
            }
            if name == "oauth2_jwt_bearer" {
                jwt_bearer_auth(conf, check, root, CONFIGURATION, problems)
            } else {
                google_auth(conf, check, CONFIGURATION, problems)
            }
        }
        (_, Some(grant)) => oauth2_auth(
            grant,
            conf,
            check,
            root,
            CONFIGURATION,
            pkce_refused,
            problems,
        ),
        (_, None) => static_auth(name, conf, check, CONFIGURATION, problems).map(Checked::Auth),
    }
}

/// The params: connector-param defaults, then secrets over them.
fn params(
    connector_params: &[fides::ConnectorParam],
    secrets: serde_yaml_ng::Mapping,
    src: &Source,
    prefix: &str,
    problems: &mut Problems,
) -> Params {
    let mut map = serde_json::Map::new();
    for p in connector_params {
        if let Some(default) = p
            .default_value
            .as_ref()
            .and_then(|d| serde_json::to_value(d).ok())
        {
            map.insert(p.name.clone(), trim_string(default));
        }
    }
    for (k, v) in secrets {
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
    Params::new(map)
}

/// The client_config's strategy and, for the OAuth2 ones, its grant; None (with a problem)
/// when there is none or tokenwarden does not know it.
fn strategy(
    client_config: &ClientConfig,
    origin: &Origin<'_>,
    problems: &mut Problems,
) -> Option<(fides::Strategy, Option<Grant>)> {
    let supported = SUPPORTED_STRATEGIES.join(", ");
    let Some(strategy) = client_config.authentication.clone() else {
        problems.push(origin.problem(
            "",
            format!("has no authentication, so tokenwarden has nothing to inject; supported strategies: {supported}"),
        ));
        return None;
    };
    let grant = match strategy.strategy.as_str() {
        "oauth2_client_credentials" => Some(Grant::ClientCredentials),
        "oauth2_authorization_code" => Some(Grant::AuthorizationCode),
        // Tokens obtained with a signed assertion: renewed as client credentials are.
        "oauth2_jwt_bearer" | "google_cloud_service_account" => Some(Grant::ClientCredentials),
        "bearer" | "basic" | "api_key" => None,
        other => {
            let shown = origin.quote("authentication.strategy", other);
            problems.push(origin.problem(
                "authentication.strategy",
                format!("unknown strategy {shown}; supported strategies: {supported}"),
            ));
            return None;
        }
    };
    Some((strategy, grant))
}

/// An authorization-code connection without a `redirect_uri` secret gets the admin
/// callback under `admin.public_url`, when there is one.
fn default_redirect_uri(
    strategy: Option<&(fides::Strategy, Option<Grant>)>,
    params: &mut Params,
    admin: &AdminSettings,
) {
    // (An unknown strategy may be a misspelled authorization code: checked as one.)
    if strategy.is_some_and(|(_, grant)| *grant != Some(Grant::AuthorizationCode)) {
        return;
    }
    if params.contains("redirect_uri") {
        return;
    }
    if let Some(public) = &admin.public_url {
        params.insert(
            "redirect_uri",
            serde_json::Value::String(format!("{public}{CALLBACK_PATH}")),
        );
    }
}

/// `client_auth:`: how token requests present the client's credentials beyond what the
/// Fides requests carry — a name (the Basic forms, which need `client_id` and
/// `client_secret`), or a mapping with a `method` (`private_key_jwt`, `tls_client_auth`:
/// `client_id` only), its key and certificate checked here.
fn client_auth(
    value: Option<Value>,
    params: &Params,
    src: &Source,
    prefix: &str,
    problems: &mut Problems,
) -> ClientAuth {
    let at = format!("{prefix}.client_auth");
    let (client_auth, needs): (ClientAuth, &[&str]) = match value {
        None => return ClientAuth::AsConfigured,
        Some(Value::Mapping(map)) => {
            match client_auth_method(Value::Mapping(map), src, &at, problems) {
                Some(auth) => (auth, &["client_id"]),
                None => return ClientAuth::AsConfigured,
            }
        }
        Some(Value::String(name)) => match name.as_str() {
            "client_secret_basic" => (ClientAuth::Basic, &["client_id", "client_secret"]),
            "client_secret_basic_unencoded" => {
                (ClientAuth::BasicUnencoded, &["client_id", "client_secret"])
            }
            other => {
                let other = src.quote(&at, other);
                problems.push(src.problem(&at, format!(
                    "unknown value {other}: expected client_secret_basic, client_secret_basic_unencoded, or a mapping with a method (private_key_jwt, tls_client_auth)"
                )));
                return ClientAuth::AsConfigured;
            }
        },
        Some(_) => {
            problems.push(src.problem(&at, "client_auth is a name or a mapping with a method"));
            return ClientAuth::AsConfigured;
        }
    };
    for name in needs {
        if !params.contains(name) {
            problems.push(src.problem(&at, format!("needs `{name}` in secrets")));
        }
    }
    client_auth
}

/// `client_auth: { method: … }` read at `at`: the key (and certificate) loaded and checked
/// against each other and the algorithm. None, with problems, when anything is wrong.
fn client_auth_method(
    value: Value,
    src: &Source,
    at: &str,
    problems: &mut Problems,
) -> Option<ClientAuth> {
    let raw: RawClientAuth = src.deserialize_all(value, at, problems)?;
    let (method, refused): (_, &[(&str, bool)]) = match raw.method.as_str() {
        "private_key_jwt" => (
            private_key_jwt as MethodFn,
            &[
                ("cert", raw.cert.is_some()),
                ("upstream", raw.upstream.is_some()),
            ],
        ),
        "tls_client_auth" => (
            tls_client_auth as MethodFn,
            &[
                ("alg", raw.alg.is_some()),
                ("kid", raw.kid.is_some()),
                ("certificate", raw.certificate.is_some()),
                ("audience", raw.audience.is_some()),
            ],
        ),
        other => {
            let at = format!("{at}.method");
            let shown = src.quote(&at, other);
            let message =
                format!("unknown method {shown}: expected private_key_jwt or tls_client_auth");
            problems.push(src.problem(&at, message));
            return None;
        }
    };
    let before = problems.0.len();
    for (name, _) in refused.iter().filter(|(_, set)| *set) {
        let message = format!("{name} does not apply to {}", raw.method);
        problems.push(src.problem(&format!("{at}.{name}"), message));
    }
    let key = raw.key.clone().or_else(|| {
        problems.push(src.problem(at, format!("{} needs a `key`", raw.method)));
        None
    })?;
    let at_field =
        |name: &str, e: crate::jwt::KeyError| src.problem(&format!("{at}.{name}"), e.to_string());
    let key = crate::jwt::PrivateKey::parse(&key)
        .map_err(|e| problems.push(at_field("key", e)))
        .ok()?;
    let auth = method(raw, key).map_err(|(field, e)| problems.push(at_field(field, e)));
    auth.ok().filter(|_| problems.0.len() == before)
}

/// Builds one `client_auth` method from its fields and key; the error names its field.
type MethodFn = fn(
    RawClientAuth,
    crate::jwt::PrivateKey,
) -> Result<ClientAuth, (&'static str, crate::jwt::KeyError)>;

/// `private_key_jwt`: the key checked against `alg` and, if given, its `certificate`.
fn private_key_jwt(
    raw: RawClientAuth,
    key: crate::jwt::PrivateKey,
) -> Result<ClientAuth, (&'static str, crate::jwt::KeyError)> {
    use crate::jwt::{KeyError, SigningKey};
    let signing = SigningKey::new(
        &key,
        raw.alg.as_deref(),
        raw.kid,
        raw.certificate.as_deref(),
    )
    .and_then(|s| s.check().map(|()| s))
    .map_err(|e| match e {
        KeyError::Certificate(_) => ("certificate", e),
        KeyError::UnknownAlg(_) | KeyError::Mismatch { .. } => ("alg", e),
        _ => ("key", e),
    })?;
    Ok(ClientAuth::PrivateKeyJwt(Arc::new(
        super::model::PrivateKeyJwt {
            key: signing,
            audience: raw.audience,
        },
    )))
}

/// `tls_client_auth`: the certificate `cert`, checked to hold the key's public half.
fn tls_client_auth(
    raw: RawClientAuth,
    key: crate::jwt::PrivateKey,
) -> Result<ClientAuth, (&'static str, crate::jwt::KeyError)> {
    let cert = raw.cert.ok_or((
        "cert",
        crate::jwt::KeyError::Certificate("is missing: tls_client_auth needs `cert`".into()),
    ))?;
    let chain = crate::jwt::certificates(&cert).map_err(|e| ("cert", e))?;
    let identity = key.certified(chain).map_err(|e| ("cert", e))?;
    Ok(ClientAuth::TlsClientAuth(Arc::new(
        super::model::TlsClientAuth {
            identity: Arc::new(identity),
            upstream: raw.upstream.unwrap_or(false),
        },
    )))
}

/// Whether the token requests can carry what `client_auth` puts in their body (the
/// `private_key_jwt` client assertion): not a GET. A problem at `client_auth` when not.
fn body_fits(
    client_auth: &ClientAuth,
    auth: &super::model::Auth,
    src: &Source,
    prefix: &str,
    problems: &mut Problems,
) -> bool {
    let (ClientAuth::PrivateKeyJwt(_), super::model::Auth::OAuth2(o)) = (client_auth, auth) else {
        return true;
    };
    let requests = [Some(&o.token_request), o.refresh_request.as_ref()];
    let fits = requests
        .into_iter()
        .flatten()
        .all(|r| !matches!(r.method, http::Method::GET | http::Method::HEAD));
    if !fits {
        problems.push(src.problem(
            &format!("{prefix}.client_auth"),
            "private_key_jwt sends its client assertion in the body: the token and refresh requests must be POSTs",
        ));
    }
    fits
}

/// `client_auth:` as a mapping; which fields apply depends on `method`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientAuth {
    method: String,
    key: Option<String>,
    alg: Option<String>,
    kid: Option<String>,
    certificate: Option<String>,
    audience: Option<String>,
    cert: Option<String>,
    upstream: Option<bool>,
}

/// YAML drops trailing spaces of plain scalars; quoted defaults keep them — trim like Fides users expect.
fn trim_string(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(s.trim().to_owned()),
        other => other,
    }
}
