//! The checks and credentials of a connection's strategy: [`Checker`] proves every
//! placeholder in the host and the auth requests resolves (from the params, or as a
//! runtime placeholder of that request), and [`static_auth`] builds the fixed header or
//! api_key parts of `bearer`, `basic` and `api_key` at load.

use super::connection::{ApiKey, Auth, Origin};
use super::fides::{self, SaasRequest};
use super::runtime;
use super::source::Problems;
use crate::template::{self, Lookup, Params};
use http::{HeaderName, HeaderValue};
use serde_yaml_ng::Value;

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

    pub(super) fn text(&self, rel: &str, text: &str, problems: &mut Problems) -> bool {
        let runtime: Vec<(&str, &str)> = self.runtime.iter().map(|n| (*n, "")).collect();
        let lookup = Lookup {
            params: self.params,
            runtime: &runtime,
        };
        let missing = template::missing(text, &lookup);
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
        missing.is_empty()
    }

    pub(super) fn request(
        &self,
        rel: &str,
        request: Option<&SaasRequest>,
        problems: &mut Problems,
    ) {
        let Some(r) = request else { return };
        if r.request_override.is_some() {
            problems.push(
                self.origin
                    .problem(rel, "request_override cannot be used for an OAuth2 request"),
            );
        }
        match r.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "HEAD") => {}
            Some(m) => problems.push(
                self.origin
                    .problem(&format!("{rel}.method"), format!("unknown method `{m}`")),
            ),
            None => problems.push(self.origin.problem(rel, "a request must specify a method")),
        }
        match &r.path {
            Some(p) => {
                self.text(&format!("{rel}.path"), p, problems);
            }
            None => problems.push(self.origin.problem(rel, "a request must specify a path")),
        }
        for (i, h) in r.headers.iter().enumerate() {
            self.text(&format!("{rel}.headers[{i}].value"), &h.value, problems);
        }
        for (i, q) in r.query_params.iter().enumerate() {
            self.text(
                &format!("{rel}.query_params[{i}].value"),
                &q.value,
                problems,
            );
        }
        if let Some(b) = &r.body {
            self.text(&format!("{rel}.body"), b, problems);
        }
        if let Some(c) = &r.client_config {
            self.text(&format!("{rel}.client_config.host"), &c.host, problems);
            if let Some(a) = &c.authentication {
                if a.strategy != "basic" {
                    problems.push(self.origin.problem(&format!("{rel}.client_config.authentication.strategy"), format!(
                        "only `basic` authentication is supported on an OAuth2 request, not `{}`", a.strategy
                    )));
                } else if let Some(conf) = &a.configuration {
                    let rel = format!("{rel}.client_config.authentication.configuration");
                    if let Ok(b) = self
                        .origin
                        .read::<fides::BasicConfiguration>(conf.clone(), &rel)
                        .map_err(|p| problems.push(p))
                    {
                        self.text(&format!("{rel}.username"), &b.username, problems);
                        if let Some(p) = &b.password {
                            self.text(&format!("{rel}.password"), p, problems);
                        }
                    }
                }
            }
        }
    }

    /// Fills a static credential; None (with a problem) when a placeholder is missing.
    pub(super) fn fill(&self, rel: &str, text: &str, problems: &mut Problems) -> Option<String> {
        if !self.text(rel, text, problems) {
            return None;
        }
        template::assign(text, &Lookup::new(self.params))
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

pub(super) fn static_auth(
    strategy: &str,
    conf: Value,
    check: &Checker<'_>,
    rel: &str,
    problems: &mut Problems,
) -> Option<Auth> {
    let origin = check.origin;
    let read_err = |p| problems.push(p);
    match strategy {
        "bearer" => {
            let c: fides::BearerConfiguration = origin.read(conf, rel).map_err(read_err).ok()?;
            let token = check.fill(&format!("{rel}.token"), &c.token, problems)?;
            sensitive(format!("Bearer {token}"), origin, rel, problems).map(Auth::Header)
        }
        "basic" => {
            let c: fides::BasicConfiguration = origin.read(conf, rel).map_err(read_err).ok()?;
            let user = check.fill(&format!("{rel}.username"), &c.username, problems)?;
            let pass = match &c.password {
                Some(p) => check.fill(&format!("{rel}.password"), p, problems)?,
                None => String::new(),
            };
            sensitive(template::basic_header(&user, &pass), origin, rel, problems).map(Auth::Header)
        }
        _ => {
            let c: fides::ApiKeyConfiguration = origin.read(conf, rel).map_err(read_err).ok()?;
            let headers = c.headers.unwrap_or_default();
            let query = c.query_params.unwrap_or_default();
            if headers.is_empty()
                && query.is_empty()
                && c.body.as_deref().unwrap_or_default().is_empty()
            {
                problems.push(origin.problem(rel, "At least one 'header', 'query_param', or 'body' object must be defined in an 'api_key' auth configuration"));
                return None;
            }
            let mut out = ApiKey {
                headers: Vec::new(),
                query_params: Vec::new(),
                body: None,
            };
            for (i, h) in headers.iter().enumerate() {
                let at = format!("{rel}.headers[{i}]");
                let value = check.fill(&format!("{at}.value"), &h.value, problems)?;
                let Ok(name) = HeaderName::try_from(h.name.as_str()) else {
                    problems.push(
                        origin.problem(&at, format!("`{}` is not a valid header name", h.name)),
                    );
                    return None;
                };
                out.headers
                    .push((name, sensitive(value, origin, &at, problems)?));
            }
            for (i, q) in query.iter().enumerate() {
                let value = check.fill(
                    &format!("{rel}.query_params[{i}].value"),
                    &q.value,
                    problems,
                )?;
                out.query_params.push((q.name.clone(), value));
            }
            if let Some(body) = c.body.filter(|b| !b.trim().is_empty()) {
                let filled = check.fill(&format!("{rel}.body"), &body, problems)?;
                match serde_json::from_str(&filled) {
                    Ok(serde_json::Value::Object(map)) => out.body = Some(map),
                    _ => {
                        problems.push(origin.problem(
                            &format!("{rel}.body"),
                            "the api_key body must be a JSON object",
                        ));
                        return None;
                    }
                }
            }
            Some(Auth::ApiKey(out))
        }
    }
}
