//! A Fides request (`SaaSRequest`) compiled at load into a [`RequestTemplate`]: one walk
//! that checks every part (method, path, placeholders, Content-Type, basic credentials) and
//! keeps it parsed, so that building a token, refresh or authorization request only fills
//! values in. What is left to fail then is a value: a run-time placeholder (`<code>`,
//! `<refresh_token>`, …) without one, or a form body that is not JSON once filled.
//!
//! [`Checker`] lives here, with the one walk that uses it most: it proves every placeholder
//! of a template resolves (from the params, or as a runtime placeholder of that request), for
//! the requests, the host and the static credentials alike. The compiled types themselves are
//! in `model`.

use super::fides::{self, NameValue, SaasRequest};
use super::model::{
    fill_pairs, BasicAuth, Body, Encoding, Pair, RequestTemplate, CONTENT_TYPE, FORM, JSON, PLAIN,
};
use super::origin::Origin;
use super::runtime;
use super::source::Problems;
use crate::template::{Lookup, Params, Template};
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

/// Checks that templates only use placeholders the params provide, or the runtime
/// placeholders of the request being checked.
pub(super) struct Checker<'a> {
    pub(super) origin: &'a Origin<'a>,
    pub(super) params: &'a Params,
    pub(super) runtime: &'a [&'a str],
}

impl<'a> Checker<'a> {
    /// The same checker for a request where `runtime` placeholders are filled at run time.
    pub(super) fn allowing(&self, runtime: &'a [&'a str]) -> Checker<'a> {
        Checker {
            origin: self.origin,
            params: self.params,
            runtime,
        }
    }

    /// Parses `text` (found at `rel`) and checks its placeholders; the template when they
    /// all resolve, else None with a problem per missing name.
    pub(super) fn compile(
        &self,
        rel: &str,
        text: &str,
        problems: &mut Problems,
    ) -> Option<Template> {
        let template = Template::parse(text);
        let runtime: Vec<(&str, &str)> = self.runtime.iter().map(|n| (*n, "")).collect();
        let lookup = Lookup {
            params: self.params,
            runtime: &runtime,
        };
        let missing = template.missing(&lookup);
        for name in &missing {
            let message = if runtime::ALL.contains(&name.as_str()) {
                format!(
                    "placeholder <{name}> is filled at run time only in the request that receives it ({})",
                    runtime_home(name)
                )
            } else {
                format!("placeholder <{name}> is not resolved: add `{name}` to the connection's secrets")
            };
            problems.push(self.origin.problem(rel, message));
        }
        missing.is_empty().then_some(template)
    }

    /// Checks the placeholders of every text in `value` (found at `rel`), each at its own
    /// path: for a configuration that cannot be read as its strategy's.
    pub(super) fn compile_all(&self, rel: &str, value: &Value, problems: &mut Problems) {
        match value {
            Value::String(text) => {
                self.compile(rel, text, problems);
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.compile_all(&format!("{rel}[{i}]"), item, problems);
                }
            }
            Value::Mapping(map) => {
                for (key, item) in map {
                    if let Some(key) = key.as_str() {
                        self.compile_all(&format!("{rel}.{key}"), item, problems);
                    }
                }
            }
            _ => {}
        }
    }

    /// Fills a static credential; None (with a problem) when a placeholder is missing.
    pub(super) fn fill(&self, rel: &str, text: &str, problems: &mut Problems) -> Option<String> {
        self.compile(rel, text, problems)?
            .fill(&Lookup::new(self.params))
            .ok()
    }
}

/// Where a runtime placeholder is available, for messages.
fn runtime_home(name: &str) -> &'static str {
    match name {
        "state" => "authorization_request",
        "code" => "the token_request of oauth2_authorization_code",
        _ => "refresh_request",
    }
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
