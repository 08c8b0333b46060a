//! The credentials of a connection's strategy: [`oauth2_auth`] compiles the OAuth2 requests
//! (each with the request [`Checker`] and the run-time placeholders it receives), and
//! [`static_auth`] builds the fixed header or api_key parts of `bearer`, `basic` and
//! `api_key` at load.

use super::fides;
use super::model::{ApiKey, Auth, Grant, OAuth2, RequestTemplate};
use super::origin::Origin;
use super::request::{checked, Checker, Root, Use};
use super::runtime;
use super::source::{Problem, Problems};
use crate::template;
use http::{HeaderName, HeaderValue};
use serde_yaml_ng::Value;

/// What checking an OAuth2 strategy found, when its configuration could be read.
pub(super) enum Checked {
    Auth(Auth),
    /// Its problems are pushed; the rest of the connection is still checked.
    Invalid,
}

/// `oauth2_client_credentials` and `oauth2_authorization_code`: the configuration read at
/// `rel` (None, with a problem, when it cannot be), then each request compiled with the
/// run-time placeholders it receives. `pkce_refused` is the main file's problem for
/// `pkce: true`, reported if the grant turns out to be client credentials.
pub(super) fn oauth2_auth(
    grant: Grant,
    conf: Value,
    check: &Checker<'_>,
    root: &Root<'_>,
    rel: &str,
    pkce_refused: Option<Problem>,
    problems: &mut Problems,
) -> Option<Checked> {
    let origin = check.origin;
    let conf: fides::OAuth2Configuration =
        match origin.read_configuration(conf, rel, &fides::OAUTH2_KEYS, problems) {
            Ok(conf) => conf,
            Err(p) => {
                problems.push(p);
                return None;
            }
        };
    let code = match grant {
        Grant::AuthorizationCode => runtime::CODE_EXCHANGE,
        Grant::ClientCredentials => &[],
    };
    let token_request = RequestTemplate::compile(
        &check.allowing(code),
        &format!("{rel}.token_request"),
        &conf.token_request,
        root,
        Use::Sent,
        problems,
    );
    let refresh_request = conf.refresh_request.as_ref().map(|r| {
        let rel = format!("{rel}.refresh_request");
        RequestTemplate::compile(
            &check.allowing(runtime::REFRESH),
            &rel,
            r,
            root,
            Use::Sent,
            problems,
        )
    });
    let revoke_request = conf.revoke_request.as_ref().map(|r| {
        let rel = format!("{rel}.revoke_request");
        RequestTemplate::compile(
            &check.allowing(runtime::REFRESH),
            &rel,
            r,
            root,
            Use::Sent,
            problems,
        )
    });
    let authorization_request = authorization_request(grant, &conf, check, root, rel, problems);
    if let (Grant::ClientCredentials, Some(p)) = (grant, pkce_refused) {
        problems.push(p);
    }
    let expires_in = match conf.expires_in {
        Some(n) if n <= 0 => {
            problems.push(origin.problem(
                &format!("{rel}.expires_in"),
                "expires_in must be a positive number of seconds",
            ));
            return Some(Checked::Invalid);
        }
        n => n.map(|n| n.unsigned_abs()),
    };
    let oauth = (|| {
        Some(OAuth2 {
            grant,
            token_request: token_request?,
            refresh_request: checked(refresh_request)?,
            authorization_request: authorization_request?,
            expires_in,
            revoke_request: checked(revoke_request)?,
        })
    })();
    Some(oauth.map_or(Checked::Invalid, |o| {
        Checked::Auth(Auth::OAuth2(std::sync::Arc::new(o)))
    }))
}

/// The authorization request, compiled with `<state>`: `Some(None)` for client credentials,
/// None (with a problem) when it is wrong or missing.
fn authorization_request(
    grant: Grant,
    conf: &fides::OAuth2Configuration,
    check: &Checker<'_>,
    root: &Root<'_>,
    rel: &str,
    problems: &mut Problems,
) -> Option<Option<RequestTemplate>> {
    // Only authorization code reads it; client credentials ignores it, as Fides does.
    match (grant, &conf.authorization_request) {
        (Grant::ClientCredentials, _) => Some(None),
        (Grant::AuthorizationCode, Some(r)) => {
            let rel = format!("{rel}.authorization_request");
            let check = check.allowing(runtime::AUTHORIZATION);
            RequestTemplate::compile(&check, &rel, r, root, Use::UrlOnly, problems).map(Some)
        }
        (Grant::AuthorizationCode, None) => {
            problems.push(check.origin.problem(
                rel,
                "oauth2_authorization_code needs an authorization_request",
            ));
            None
        }
    }
}

fn sensitive(
    value: String,
    origin: &Origin<'_>,
    rel: &str,
    problems: &mut Problems,
) -> Option<HeaderValue> {
    match HeaderValue::try_from(value) {
        Ok(mut v) => {
            v.set_sensitive(true);
            Some(v)
        }
        Err(_) => {
            problems.push(origin.problem(rel, "the value is not a valid HTTP header value"));
            None
        }
    }
}

/// `bearer`, `basic` and `api_key`: the configuration read at `rel` with its strategy's
/// keys, then its credential built (None, with a problem, when either fails).
pub(super) fn static_auth(
    strategy: &str,
    conf: Value,
    check: &Checker<'_>,
    rel: &str,
    problems: &mut Problems,
) -> Option<Auth> {
    let origin = check.origin;
    let known: &[&str] = match strategy {
        "bearer" => &fides::BEARER_KEYS,
        "basic" => &fides::BASIC_KEYS,
        _ => &fides::API_KEY_KEYS,
    };
    let conf = match origin.read_configuration::<Value>(conf, rel, known, problems) {
        Ok(conf) => conf,
        Err(p) => {
            problems.push(p);
            return None;
        }
    };
    match strategy {
        "bearer" => bearer(conf, check, rel, problems),
        "basic" => basic(conf, check, rel, problems),
        _ => api_key(conf, check, rel, problems).map(Auth::ApiKey),
    }
}

/// `bearer`: `Authorization: Bearer <token>`, the token filled at load.
fn bearer(conf: Value, check: &Checker<'_>, rel: &str, problems: &mut Problems) -> Option<Auth> {
    let origin = check.origin;
    let c: fides::BearerConfiguration =
        origin.read(conf, rel).map_err(|p| problems.push(p)).ok()?;
    let token = check.fill(&format!("{rel}.token"), &c.token, problems)?;
    sensitive(format!("Bearer {token}"), origin, rel, problems).map(Auth::Header)
}

/// `basic`: `Authorization: Basic …` from the username and the (optional) password.
fn basic(conf: Value, check: &Checker<'_>, rel: &str, problems: &mut Problems) -> Option<Auth> {
    let origin = check.origin;
    let c: fides::BasicConfiguration = origin.read(conf, rel).map_err(|p| problems.push(p)).ok()?;
    let user = check.fill(&format!("{rel}.username"), &c.username, problems)?;
    let pass = match &c.password {
        Some(p) => check.fill(&format!("{rel}.password"), p, problems)?,
        None => String::new(),
    };
    sensitive(template::basic_header(&user, &pass), origin, rel, problems).map(Auth::Header)
}

/// `api_key`: its headers, query parameters and JSON body, each filled at load, in that
/// order (the first wrong part ends the reading).
fn api_key(conf: Value, check: &Checker<'_>, rel: &str, problems: &mut Problems) -> Option<ApiKey> {
    let origin = check.origin;
    let c: fides::ApiKeyConfiguration =
        origin.read(conf, rel).map_err(|p| problems.push(p)).ok()?;
    let headers = c.headers.unwrap_or_default();
    let query = c.query_params.unwrap_or_default();
    if headers.is_empty() && query.is_empty() && c.body.as_deref().unwrap_or_default().is_empty() {
        problems.push(origin.problem(rel, "At least one 'header', 'query_param', or 'body' object must be defined in an 'api_key' auth configuration"));
        return None;
    }
    let headers = api_key_headers(&headers, check, rel, problems)?;
    let mut query_params = Vec::new();
    for (i, q) in query.iter().enumerate() {
        let value = check.fill(
            &format!("{rel}.query_params[{i}].value"),
            &q.value,
            problems,
        )?;
        query_params.push((q.name.clone(), value));
    }
    let body = match c.body.filter(|b| !b.trim().is_empty()) {
        Some(body) => Some(api_key_body(&body, check, rel, problems)?),
        None => None,
    };
    Some(ApiKey {
        headers,
        query_params,
        body,
    })
}

/// The api_key headers, in order: each value filled and its name a valid header name.
fn api_key_headers(
    headers: &[fides::NameValue],
    check: &Checker<'_>,
    rel: &str,
    problems: &mut Problems,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let origin = check.origin;
    let mut out = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let at = format!("{rel}.headers[{i}]");
        let value = check.fill(&format!("{at}.value"), &h.value, problems)?;
        let Ok(name) = HeaderName::try_from(h.name.as_str()) else {
            let shown = origin.quote(&format!("{at}.name"), &h.name);
            problems.push(origin.problem(&at, format!("{shown} is not a valid header name")));
            return None;
        };
        out.push((name, sensitive(value, origin, &at, problems)?));
    }
    Some(out)
}

/// The api_key body: filled, then it must be a JSON object.
fn api_key_body(
    body: &str,
    check: &Checker<'_>,
    rel: &str,
    problems: &mut Problems,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let filled = check.fill(&format!("{rel}.body"), body, problems)?;
    match serde_json::from_str(&filled) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => {
            problems.push(check.origin.problem(
                &format!("{rel}.body"),
                "the api_key body must be a JSON object",
            ));
            None
        }
    }
}
