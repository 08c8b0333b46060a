//! A Fides request (`SaaSRequest`) compiled at load into a [`RequestTemplate`]: one walk
//! that checks every part (method, path, placeholders, Content-Type, basic credentials) and
//! keeps it parsed, so that building a token, refresh or authorization request only fills
//! values in. What is left to fail then is a value: a run-time placeholder (`<code>`,
//! `<refresh_token>`, …) without one, or a form body that is not JSON once filled.

use super::fides::{self, NameValue, SaasRequest};
use super::source::Problems;
use super::strategy::Checker;
use crate::template::{Lookup, Template};
use http::Method;
use serde_yaml_ng::Value;

/// The methods Fides' `HTTPMethod` allows.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::HEAD,
];

/// The header whose value picks the body encoding (matched case-insensitively).
pub const CONTENT_TYPE: &str = "Content-Type";
/// JSON: the body text as is. Also what Fides adds when a request has no Content-Type.
pub const JSON: &str = "application/json";
/// Form: the body text parsed as JSON and form-encoded with sorted keys.
pub const FORM: &str = "application/x-www-form-urlencoded";
/// Plain text: the body text as is.
pub const PLAIN: &str = "text/plain";

/// A Fides request with every part parsed and checked. Holds secrets in its templates
/// (expanded `${VAR}`s); `Debug` shows only placeholder names.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub method: Method,
    /// From the request's own client_config, else the root one.
    pub protocol: String,
    /// As `protocol`.
    pub host: Template,
    pub path: Template,
    /// In config order. A pair whose value has a placeholder without a value is left out.
    pub query_params: Vec<Pair>,
    /// As `query_params`.
    pub headers: Vec<Pair>,
    /// None for a request without a body — and for the authorization request, which is
    /// never sent, so its body plays no part (FIDES-BEHAVIOUR.md §3.2).
    pub body: Option<Body>,
    /// The request's own `client_config.authentication` (`basic` is the only one allowed).
    pub basic_auth: Option<BasicAuth>,
}

/// A header or query parameter: a fixed name, a template value.
#[derive(Debug, Clone)]
pub struct Pair {
    pub name: String,
    pub value: Template,
}

/// A body template and the encoding its Content-Type asks for.
#[derive(Debug, Clone)]
pub struct Body {
    pub template: Template,
    pub encoding: Encoding,
}

/// How a filled body goes on the wire (Fides' `format_body`, FIDES-BEHAVIOUR.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No Content-Type header: the text as is, with `Content-Type: application/json` added.
    DefaultJson,
    /// `application/json` or `text/plain`: the text as is.
    AsIs,
    /// `application/x-www-form-urlencoded`: the text parsed as JSON, then form-encoded.
    Form,
}

/// `basic` credentials of one request: `Authorization: Basic base64(username:password)`.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub username: Template,
    /// None sends an empty password (Fides turns a None password into `""`).
    pub password: Option<Template>,
}

/// Whether the request is sent, or only read for the authorization URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    Sent,
    UrlOnly,
}

/// The root client_config's protocol and host, for requests without their own.
pub(super) struct Root<'a> {
    pub(super) protocol: &'a str,
    /// Checked by the caller (its problems sit at the root `host`): None when it failed.
    pub(super) host: Option<&'a Template>,
}

impl RequestTemplate {
    /// Checks `request` (found at `rel`) with `check` and compiles it; None, with every
    /// problem pushed, when any part is wrong.
    pub(super) fn compile(
        check: &Checker<'_>,
        rel: &str,
        request: &SaasRequest,
        root: &Root<'_>,
        usage: Use,
        problems: &mut Problems,
    ) -> Option<RequestTemplate> {
        let origin = check.origin;
        if request.request_override.is_some() {
            problems
                .push(origin.problem(rel, "request_override cannot be used for an OAuth2 request"));
        }
        let method = method(check, rel, request.method.as_deref(), problems);
        let path = match &request.path {
            Some(p) => check.compile(&format!("{rel}.path"), p, problems),
            None => {
                problems.push(origin.problem(rel, "a request must specify a path"));
                None
            }
        };
        let headers = pairs(check, &format!("{rel}.headers"), &request.headers, problems);
        let query_params = pairs(
            check,
            &format!("{rel}.query_params"),
            &request.query_params,
            problems,
        );
        let body = request
            .body
            .as_ref()
            .map(|b| check.compile(&format!("{rel}.body"), b, problems));
        let (protocol, host, basic_auth) = match &request.client_config {
            Some(c) => (
                c.protocol.as_str(),
                check.compile(&format!("{rel}.client_config.host"), &c.host, problems),
                basic_auth(check, &format!("{rel}.client_config"), c, problems),
            ),
            None => (root.protocol, root.host.cloned(), Some(None)),
        };
        let (headers, query_params) = (headers?, query_params?);
        let body = match (body, usage) {
            (None, _) => None,
            (Some(template), Use::UrlOnly) => {
                template?; // checked, not kept
                None
            }
            (Some(template), Use::Sent) => Some(Body {
                encoding: encoding(check, rel, &request.headers, &headers, problems)?,
                template: template?,
            }),
        };
        Some(RequestTemplate {
            method: method?,
            protocol: protocol.to_owned(),
            host: host?,
            path: path?,
            query_params,
            headers,
            body,
            basic_auth: basic_auth?,
        })
    }
}

/// Fills `pairs` in order: a pair with a missing placeholder is left out, and a repeated
/// name keeps its first position and takes the last value (Python dict semantics).
pub fn fill_pairs(pairs: &[Pair], lookup: &Lookup<'_>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in pairs {
        let Ok(value) = pair.value.fill(lookup) else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| *n == pair.name) {
            Some(slot) => slot.1 = value,
            None => out.push((pair.name.clone(), value)),
        }
    }
    out
}

fn method(
    check: &Checker<'_>,
    rel: &str,
    method: Option<&str>,
    problems: &mut Problems,
) -> Option<Method> {
    let Some(m) = method.map(str::to_ascii_uppercase) else {
        problems.push(check.origin.problem(rel, "a request must specify a method"));
        return None;
    };
    let found = METHODS.iter().find(|known| known.as_str() == m).cloned();
    if found.is_none() {
        let at = format!("{rel}.method");
        let shown = check.origin.quote(&at, &m);
        problems.push(check.origin.problem(&at, format!("unknown method {shown}")));
    }
    found
}

/// Every pair checked (each problem at its own value); None when any is wrong.
fn pairs(
    check: &Checker<'_>,
    rel: &str,
    items: &[NameValue],
    problems: &mut Problems,
) -> Option<Vec<Pair>> {
    let compiled: Vec<Option<Pair>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let value = check.compile(&format!("{rel}[{i}].value"), &item.value, problems)?;
            Some(Pair {
                name: item.name.clone(),
                value,
            })
        })
        .collect();
    compiled.into_iter().collect()
}

/// A request's own authentication: only `basic`, its credentials checked. `Some(None)`
/// when there is none; None (with problems) when it is wrong.
fn basic_auth(
    check: &Checker<'_>,
    rel: &str,
    client: &fides::ClientConfig,
    problems: &mut Problems,
) -> Option<Option<BasicAuth>> {
    let Some(auth) = &client.authentication else {
        return Some(None);
    };
    if auth.strategy != "basic" {
        let at = format!("{rel}.authentication.strategy");
        let shown = check.origin.quote(&at, &auth.strategy);
        problems.push(check.origin.problem(
            &at,
            format!("only `basic` authentication is supported on an OAuth2 request, not {shown}"),
        ));
        return None;
    }
    let rel = format!("{rel}.authentication.configuration");
    let conf = auth.configuration.clone().unwrap_or(Value::Null);
    let basic: fides::BasicConfiguration = check
        .origin
        .read(conf, &rel)
        .map_err(|p| problems.push(p))
        .ok()?;
    let username = check.compile(&format!("{rel}.username"), &basic.username, problems);
    let password = basic
        .password
        .as_ref()
        .map(|p| check.compile(&format!("{rel}.password"), p, problems));
    Some(Some(BasicAuth {
        username: username?,
        password: checked(password)?,
    }))
}

/// An optional part after checking: absent is fine (`Some(None)`), present must have
/// compiled (None when it did not).
pub(super) fn checked<T>(part: Option<Option<T>>) -> Option<Option<T>> {
    part.map_or(Some(None), |p| p.map(Some))
}

/// The encoding of a sent request's body, from the Content-Type header Fides' `format_body`
/// would find: the first header of that name (any case), with the last value given for
/// its exact name. The value is fixed at load: it may not use a run-time placeholder.
fn encoding(
    check: &Checker<'_>,
    rel: &str,
    written: &[NameValue],
    headers: &[Pair],
    problems: &mut Problems,
) -> Option<Encoding> {
    let content_type = |name: &str| name.eq_ignore_ascii_case(CONTENT_TYPE);
    let Some(first) = written.iter().find(|h| content_type(&h.name)) else {
        return Some(Encoding::DefaultJson);
    };
    // The header whose value is sent: the last one of the first name found.
    let last = written.iter().rposition(|h| h.name == first.name);
    let at = format!("{rel}.headers[{}].value", last.unwrap_or_default());
    if headers
        .iter()
        .any(|h| content_type(&h.name) && h.value.uses(check.runtime))
    {
        problems.push(check.origin.problem(
            &at,
            "the Content-Type of a request with a body is fixed at load: it cannot use a run-time placeholder",
        ));
        return None;
    }
    let filled = fill_pairs(headers, &Lookup::new(check.params));
    let value = filled
        .iter()
        .find(|(n, _)| content_type(n))
        .map(|(_, v)| v.as_str());
    match value {
        None => Some(Encoding::DefaultJson),
        Some(JSON | PLAIN) => Some(Encoding::AsIs),
        Some(FORM) => Some(Encoding::Form),
        Some(_) => {
            problems.push(check.origin.problem(
                &at,
                format!("unsupported Content-Type for a request with a body; Fides sends {JSON}, {FORM} or {PLAIN}"),
            ));
            None
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
