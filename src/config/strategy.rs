//! The credentials of a connection's strategy: [`oauth2_auth`] compiles the OAuth2 requests
//! (each with the request [`Checker`] and the run-time placeholders it receives), and
//! [`static_auth`] builds the fixed header or api_key parts of `bearer`, `basic` and
//! `api_key` at load.

use super::fides;
use super::model::{ApiKey, Assertion, Auth, Claim, Grant, OAuth2, RequestTemplate};
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
        origin.read_configuration(conf, rel, &fides::OAUTH2_KEYS, problems)?;
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
    let Some(expires_in) = expires_in(conf.expires_in, origin, rel, problems) else {
        return Some(Checked::Invalid);
    };
    let oauth = (|| {
        Some(OAuth2 {
            strategy: match grant {
                Grant::AuthorizationCode => "oauth2_authorization_code",
                Grant::ClientCredentials => "oauth2_client_credentials",
            },
            grant,
            token_request: token_request?,
            refresh_request: checked(refresh_request)?,
            authorization_request: authorization_request?,
            expires_in,
            revoke_request: checked(revoke_request)?,
            assertion: None,
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
    let conf = origin.read_configuration::<Value>(conf, rel, known, problems)?;
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

/// `oauth2_jwt_bearer`: the token request compiled as a client-credentials one, and the
/// assertion every token request carries (RFC 7523 §2.1), checked by signing one at load.
pub(super) fn jwt_bearer_auth(
    conf: Value,
    check: &Checker<'_>,
    root: &Root<'_>,
    rel: &str,
    problems: &mut Problems,
) -> Option<Checked> {
    let origin = check.origin;
    let conf: fides::JwtBearerConfiguration =
        origin.read_configuration(conf, rel, &fides::JWT_BEARER_KEYS, problems)?;
    let token_request = RequestTemplate::compile(
        check,
        &format!("{rel}.token_request"),
        &conf.token_request,
        root,
        Use::Sent,
        problems,
    );
    let assertion = assertion(
        &conf.assertion,
        check,
        &format!("{rel}.assertion"),
        problems,
    );
    if token_request
        .as_ref()
        .is_some_and(|r| matches!(r.method, http::Method::GET | http::Method::HEAD))
    {
        problems.push(origin.problem(
            &format!("{rel}.token_request.method"),
            "oauth2_jwt_bearer sends its assertion in the body: the token request must be a POST",
        ));
        return Some(Checked::Invalid);
    }
    let expires_in = expires_in(conf.expires_in, origin, rel, problems)?;
    Some(match (token_request, assertion) {
        (Some(token_request), Some(assertion)) => Checked::Auth(bearer_grant(
            "oauth2_jwt_bearer",
            token_request,
            assertion,
            expires_in,
        )),
        _ => Checked::Invalid,
    })
}

/// A configured `expires_in`: None (with a problem) when it is not positive.
fn expires_in(
    value: Option<i64>,
    origin: &Origin<'_>,
    rel: &str,
    problems: &mut Problems,
) -> Option<Option<u64>> {
    match value {
        Some(n) if n <= 0 => {
            problems.push(origin.problem(
                &format!("{rel}.expires_in"),
                "expires_in must be a positive number of seconds",
            ));
            None
        }
        n => Some(n.map(i64::unsigned_abs)),
    }
}

/// A JWT-bearer grant: a client-credentials grant whose token request carries `assertion`.
fn bearer_grant(
    strategy: &'static str,
    token_request: RequestTemplate,
    assertion: Assertion,
    expires_in: Option<u64>,
) -> Auth {
    Auth::OAuth2(std::sync::Arc::new(OAuth2 {
        strategy,
        grant: Grant::ClientCredentials,
        token_request,
        refresh_request: None,
        authorization_request: None,
        expires_in,
        revoke_request: None,
        assertion: Some(assertion),
    }))
}

/// The default assertion lifetime of `oauth2_jwt_bearer`, and the longest accepted.
const DEFAULT_ASSERTION_LIFETIME: u64 = 300;
const MAX_ASSERTION_LIFETIME: u64 = 3600;

/// `oauth2_jwt_bearer`'s `assertion` (at `rel`) compiled, its key tried with the
/// connection's params so that a key that cannot sign is a problem at load.
fn assertion(
    conf: &fides::AssertionConfiguration,
    check: &Checker<'_>,
    rel: &str,
    problems: &mut Problems,
) -> Option<Assertion> {
    let origin = check.origin;
    let at = |field: &str| format!("{rel}.{field}");
    let compile = |field: &str, text: &str, problems: &mut Problems| {
        check.compile(&at(field), text, problems)
    };
    let optional = |field: &str, text: &Option<String>, problems: &mut Problems| match text {
        Some(t) => compile(field, t, problems).map(Some),
        None => Some(None),
    };
    let issuer = compile("issuer", &conf.issuer, problems);
    let subject = optional("subject", &conf.subject, problems);
    let audience = match &conf.audience {
        Some(a) => compile("audience", a, problems),
        None => {
            problems.push(origin.problem(rel, "the assertion needs an `audience` (the authorization server's token endpoint URL, or what the provider documents)"));
            None
        }
    };
    let scope = optional("scope", &conf.scope, problems);
    let key = compile("key", &conf.key, problems)
        .filter(|k| key_signs(k, conf.alg.as_deref(), check, &at("key"), problems));
    let kid = optional("kid", &conf.kid, problems);
    let lifetime = match conf.lifetime {
        None => Some(DEFAULT_ASSERTION_LIFETIME),
        Some(n) if (1..=MAX_ASSERTION_LIFETIME).contains(&n) => Some(n),
        Some(_) => {
            let message =
                format!("lifetime must be between 1 and {MAX_ASSERTION_LIFETIME} seconds");
            problems.push(origin.problem(&at("lifetime"), message));
            None
        }
    };
    let mut claims = Vec::new();
    for (name, value) in &conf.claims {
        let Some(name) = name.as_str() else {
            problems.push(origin.problem(&at("claims"), "claim names must be text"));
            return None;
        };
        let claim = match value {
            Value::String(text) => Claim::Text(compile(&format!("claims.{name}"), text, problems)?),
            other => Claim::Json(serde_json::to_value(other).ok()?),
        };
        claims.push((name.to_owned(), claim));
    }
    Some(Assertion {
        issuer: issuer?,
        subject: subject?,
        audience: audience?,
        scope: scope?,
        lifetime: lifetime?,
        claims,
        key: key?,
        alg: conf.alg.clone(),
        kid: kid?,
        jti: true,
    })
}

/// Whether the assertion's `key`, filled from the connection's params, can sign with
/// `alg` (a problem at `rel` when not: unreadable, encrypted, too short, another kind). A
/// key that still holds a `${…}` is not tried: its unset variable or unusable file is
/// reported already.
fn key_signs(
    key: &crate::template::Template,
    alg: Option<&str>,
    check: &Checker<'_>,
    rel: &str,
    problems: &mut Problems,
) -> bool {
    let Ok(text) = key.fill(&crate::template::Lookup::new(check.params)) else {
        return false;
    };
    if text.contains("${") {
        return false;
    }
    match crate::jwt::SigningKey::try_key(&text, alg) {
        Ok(()) => true,
        Err(e) => {
            problems.push(check.origin.problem(rel, e.to_string()));
            false
        }
    }
}

/// Google's token endpoint, google-auth's default `token_uri` and its assertions' audience.
pub(super) const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Fides' scope when the configuration names none.
const GOOGLE_DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// google-auth's assertion lifetime.
const GOOGLE_ASSERTION_LIFETIME: u64 = 3600;

/// `google_cloud_service_account`: the token request and assertion google-auth's
/// service-account credentials send, from the service-account params (`google_params`
/// has checked and completed them, its key included).
pub(super) fn google_auth(
    conf: Value,
    check: &Checker<'_>,
    rel: &str,
    problems: &mut Problems,
) -> Option<Checked> {
    let origin = check.origin;
    let conf: fides::GoogleConfiguration =
        origin.read_configuration(conf, rel, &fides::GOOGLE_KEYS, problems)?;
    let scopes = conf
        .scopes
        .filter(|s| !s.is_empty())
        .map_or_else(|| GOOGLE_DEFAULT_SCOPE.to_owned(), |s| s.join(" "));
    let lookup = crate::template::Lookup::new(check.params);
    let token_uri = lookup
        .text("token_uri")
        .unwrap_or_else(|| GOOGLE_TOKEN_URI.into());
    let Some(token_request) = post_to(&token_uri) else {
        problems.push(origin.problem(rel, "the service account's token_uri is not an http(s) URL"));
        return Some(Checked::Invalid);
    };
    let literal = crate::template::Template::parse;
    let assertion = Assertion {
        issuer: crate::template::Template::parse("<client_email>"),
        subject: None,
        audience: literal(GOOGLE_TOKEN_URI),
        scope: Some(literal(&scopes)),
        lifetime: GOOGLE_ASSERTION_LIFETIME,
        claims: Vec::new(),
        key: crate::template::Template::parse("<private_key>"),
        alg: Some("RS256".into()),
        kid: check
            .params
            .contains("private_key_id")
            .then(|| crate::template::Template::parse("<private_key_id>")),
        jti: false,
    };
    Some(Checked::Auth(bearer_grant(
        "google_cloud_service_account",
        token_request,
        assertion,
        None,
    )))
}

/// A body-less POST to `url` (its query kept), or None when it is not an http(s) URL.
fn post_to(url: &str) -> Option<RequestTemplate> {
    let uri: http::Uri = url.parse().ok()?;
    let protocol = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    let host = uri.authority()?.as_str();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let literal = crate::template::Template::parse;
    Some(RequestTemplate {
        method: http::Method::POST,
        protocol: protocol.to_owned(),
        host: literal(host),
        path: literal(path),
        query_params: Vec::new(),
        headers: Vec::new(),
        body: None,
        basic_auth: None,
    })
}

/// The service-account fields `google_cloud_service_account` reads from the secrets, as
/// Fides does: `project_id`, `client_email` and `private_key` required, `token_uri`
/// defaulted — or all of them from `keyfile_creds`, the whole key file (a JSON object or
/// its text), each field a secret of its own unless the secrets set it. `prefix` is the
/// connection entry's path in the main file, where the secrets are written.
pub(super) fn google_params(
    params: &mut crate::template::Params,
    src: &super::source::Source,
    prefix: &str,
    problems: &mut Problems,
) {
    let at = format!("{prefix}.secrets");
    let mut from_key_file = false;
    if let Some(creds) = params.get("keyfile_creds").cloned() {
        let creds = match creds {
            serde_json::Value::String(text) => serde_json::from_str(&text).ok(),
            other => Some(other),
        };
        let Some(serde_json::Value::Object(fields)) = creds else {
            problems.push(src.problem(
                &format!("{at}.keyfile_creds"),
                "keyfile_creds is not a service-account key file (a JSON object)",
            ));
            return;
        };
        for (name, value) in fields {
            if !params.contains(&name) {
                from_key_file |= name == "private_key";
                params.insert(&name, value);
            }
        }
    }
    match params.get("type").and_then(serde_json::Value::as_str) {
        None | Some("service_account") => {}
        Some(_) => problems.push(src.problem(
            &at,
            "the credentials' `type` is not service_account (google_cloud_service_account needs a service-account key)",
        )),
    }
    let missing: Vec<&str> = ["project_id", "client_email", "private_key"]
        .into_iter()
        .filter(|n| {
            params
                .get(n)
                .and_then(serde_json::Value::as_str)
                .is_none_or(str::is_empty)
        })
        .collect();
    if !missing.is_empty() {
        problems.push(src.problem(
            &at,
            format!(
                "google_cloud_service_account needs {} in secrets (or keyfile_creds, the key file)",
                missing.join(", ")
            ),
        ));
    }
    if !params.contains("token_uri") {
        params.insert("token_uri", GOOGLE_TOKEN_URI.into());
    }
    let key = params
        .get("private_key")
        .and_then(serde_json::Value::as_str);
    if let Some(key) = key.filter(|k| !k.is_empty() && !k.contains("${")) {
        if let Err(e) = crate::jwt::SigningKey::try_key(key, Some("RS256")) {
            let field = if from_key_file {
                "keyfile_creds"
            } else {
                "private_key"
            };
            problems.push(src.problem(
                &format!("{at}.{field}"),
                format!("the service account's private_key: {e}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_uri_becomes_a_post_to_it_query_kept() {
        let params = crate::template::Params::default();
        let parts = |url: &str| {
            post_to(url).map(|r| {
                let lookup = crate::template::Lookup::new(&params);
                let fill = |t: &crate::template::Template| t.fill(&lookup).unwrap();
                (r.protocol, fill(&r.host), fill(&r.path))
            })
        };
        let part = |a: &str, b: &str, c: &str| Some((a.to_owned(), b.to_owned(), c.to_owned()));
        assert_eq!(
            parts(GOOGLE_TOKEN_URI),
            part("https", "oauth2.googleapis.com", "/token")
        );
        assert_eq!(
            parts("http://127.0.0.1:9/tok/en?x=1"),
            part("http", "127.0.0.1:9", "/tok/en?x=1")
        );
        assert_eq!(
            parts("https://as.example"),
            part("https", "as.example", "/")
        );
        for refused in ["ftp://as.example/token", "/token", "not a url", "https://"] {
            assert_eq!(parts(refused), None, "{refused}");
        }
    }
}
