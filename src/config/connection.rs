//! One `connections:` entry → a typed [`Connection`]: where its Fides `client_config` comes
//! from, its params (secrets over connector-param defaults), its strategy, and the checks
//! that every placeholder the host and the auth requests use can be resolved.

use super::fides::{self, ClientConfig, SUPPORTED_STRATEGIES};
use super::model::{ClientAuth, Connection, Grant, PerUser};
use super::origin::{FidesSource, Named, Origin};
use super::raw::RawConnection;
use super::rejected::RejectedStatuses;
use super::request::{Checker, Root};
use super::settings::AdminSettings;
use super::source::{Problem, Problems, Source};
use super::strategy::{oauth2_auth, static_auth, Checked};
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
    raw: RawConnection,
    src: &Source,
    prefix: &str,
    base: &Path,
    admin: &AdminSettings,
    problems: &mut Problems,
) -> Option<Connection> {
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
    let check = Checker {
        origin: &origin,
        params: &params,
        runtime: &[],
    };
    let host = check.compile("host", &saas.client_config.host, problems);
    let client_auth = client_auth(raw.client_auth.as_deref(), &params, src, prefix, problems);
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
    let client_config = &saas.client_config;
    let upstream = upstream(
        &client_config.protocol,
        &client_config.host,
        &host,
        &check,
        problems,
    )?;
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
    match grant {
        Some(grant) => oauth2_auth(
            grant,
            conf,
            check,
            root,
            CONFIGURATION,
            pkce_refused,
            problems,
        ),
        None => {
            static_auth(&strategy.strategy, conf, check, CONFIGURATION, problems).map(Checked::Auth)
        }
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
/// Fides requests carry; the Basic forms need `client_id` and `client_secret`.
fn client_auth(
    value: Option<&str>,
    params: &Params,
    src: &Source,
    prefix: &str,
    problems: &mut Problems,
) -> ClientAuth {
    let at = format!("{prefix}.client_auth");
    let client_auth = match value {
        None => ClientAuth::AsConfigured,
        Some("client_secret_basic") => ClientAuth::Basic,
        Some("client_secret_basic_unencoded") => ClientAuth::BasicUnencoded,
        Some(other) => {
            let other = src.quote(&at, other);
            problems.push(src.problem(&at, format!(
                "unknown value {other}: expected client_secret_basic or client_secret_basic_unencoded"
            )));
            ClientAuth::AsConfigured
        }
    };
    if client_auth != ClientAuth::AsConfigured {
        for name in ["client_id", "client_secret"] {
            if !params.contains(name) {
                problems.push(src.problem(&at, format!("needs `{name}` in secrets")));
            }
        }
    }
    client_auth
}

/// YAML drops trailing spaces of plain scalars; quoted defaults keep them — trim like Fides users expect.
fn trim_string(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(s.trim().to_owned()),
        other => other,
    }
}
