//! A runtime [`Definition`] and its [`Template`] → the running [`Connection`], validated as
//! `tokenwarden check` validates a file connection: the definition becomes a `connections:`
//! entry (`saas_config:` the template's file, `secrets:` the instance's) in a document
//! `body: {…}`, so every problem names its field the way the API caller wrote it
//! (`body.secrets.domain`, as FastAPI's `loc` does). Then what only a runtime connection
//! must pass: a secret that is not one of the template's connector params, and a host that
//! is a private address while the template does not allow it.

use crate::config::{
    self, AdminSettings, Auth, Connection, Definition, Problems, Source, Template,
};
use crate::template::Lookup;
use serde::Serialize;
use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

/// The name problems in the request itself are placed under (never shown to the caller:
/// their `loc` says where).
const BODY_FILE: &str = "request body";
/// Where the entry sits in that document: FastAPI's `loc` root for a request body.
const BODY: &str = "body";

/// One problem with a request, FastAPI-style: where (`["body", "secrets", "domain"]`) and
/// what. Never a secret value.
#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    pub loc: Vec<String>,
    pub msg: String,
}

impl FieldError {
    pub fn new(loc: &[&str], msg: impl Into<String>) -> FieldError {
        FieldError {
            loc: loc.iter().map(|s| (*s).to_owned()).collect(),
            msg: msg.into(),
        }
    }
}

/// The connection `definition` makes of `template`, or every problem with it.
pub fn build(
    definition: &Definition,
    template: &Template,
    admin: &AdminSettings,
) -> Result<Arc<Connection>, Vec<FieldError>> {
    let secrets = secrets(definition, template)?;
    let mut entry = Mapping::new();
    entry.insert("key".into(), definition.key.clone().into());
    let file = template.file.to_string_lossy().into_owned();
    entry.insert("saas_config".into(), file.into());
    entry.insert("secrets".into(), Value::Mapping(secrets));
    if template.allow_private_network {
        entry.insert("allow_private_network".into(), true.into());
    }
    if let Some(settings) = template.per_user {
        entry.insert("grants".into(), "per_user".into());
        let settings = [
            (
                "max_concurrent_token_requests",
                settings.max_concurrent_token_requests,
            ),
            ("grant_cache_size", settings.cache_size),
        ];
        for (field, value) in settings {
            entry.insert(field.into(), (value as u64).into());
        }
    }
    let mut document = Mapping::new();
    document.insert(BODY.into(), Value::Mapping(entry));
    let text = serde_yaml_ng::to_string(&document).expect("a mapping serializes");
    let source = Source::from_text(Path::new(BODY_FILE), text);
    let entry = source
        .parse()
        .ok()
        .and_then(|mut v| v.get_mut(BODY).map(std::mem::take))
        .expect("the document just written parses");
    let mut problems = Problems::default();
    let built = config::validate_runtime(entry, &source, BODY, admin, &mut problems);
    match built {
        Some(conn) if problems.is_empty() => {
            let private = private_hosts(&conn, definition, template);
            if private.is_empty() {
                Ok(conn)
            } else {
                Err(private)
            }
        }
        _ => Err(problems.0.into_iter().map(field_error).collect()),
    }
}

/// The definition's secrets as the entry's `secrets:`: each one a connector param of the
/// template, with a text, number or true/false value.
fn secrets(definition: &Definition, template: &Template) -> Result<Mapping, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut out = Mapping::new();
    for (name, value) in &definition.secrets {
        let loc = [BODY, "secrets", name.as_str()];
        if !template.params.iter().any(|(p, _)| p == name) {
            let known: Vec<&str> = template.params.iter().map(|(p, _)| p.as_str()).collect();
            errors.push(FieldError::new(
                &loc,
                format!(
                    "`{name}` is not a connector param of `{}` (its params: {})",
                    template.kind,
                    known.join(", ")
                ),
            ));
            continue;
        }
        let value = match value {
            Json::String(s) => Value::from(s.as_str()),
            Json::Bool(b) => Value::from(*b),
            Json::Number(n) => serde_yaml_ng::to_value(n).expect("a number converts"),
            _ => {
                errors.push(FieldError::new(
                    &loc,
                    "expected text, a number or true/false",
                ));
                continue;
            }
        };
        out.insert(name.as_str().into(), value);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A loader problem as a field error: one in the request is placed by its path (the
/// message starts with it), one in the template file keeps its file's name, line and column.
fn field_error(mut problem: config::Problem) -> FieldError {
    if problem.file != Path::new(BODY_FILE) {
        // The template's file by its name: where the server keeps it is not the caller's.
        if let Some(name) = problem.file.file_name() {
            problem.file = name.into();
        }
        return FieldError::new(&[BODY, "connector_type"], problem.to_string());
    }
    match problem.message.split_once(": ") {
        Some((path, msg)) if path.starts_with(BODY) => FieldError {
            loc: path.split('.').map(str::to_owned).collect(),
            msg: msg.to_owned(),
        },
        _ => FieldError::new(&[BODY], problem.message),
    }
}

/// The hosts the connection would send to — its upstream and, for OAuth2, its token,
/// refresh and authorization endpoints — that are private addresses (or `localhost`)
/// while the template does not allow them: one error each, placed at the secrets that
/// hold the host (else at `secrets`).
fn private_hosts(
    conn: &Connection,
    definition: &Definition,
    template: &Template,
) -> Vec<FieldError> {
    if template.allow_private_network {
        return Vec::new();
    }
    let mut hosts = vec![conn.upstream.host.clone()];
    if let Auth::OAuth2(o) = &conn.auth {
        let lookup = Lookup::new(&conn.params);
        let requests = [Some(&o.token_request), o.refresh_request.as_ref()];
        let requests = requests
            .into_iter()
            .chain([o.authorization_request.as_ref()]);
        for request in requests.flatten() {
            if let Ok(host) = request.host.fill(&lookup) {
                hosts.push(host);
            }
        }
    }
    let mut errors: Vec<FieldError> = Vec::new();
    for host in hosts.iter().filter(|h| is_private_host(h)) {
        let holders: Vec<&String> = (definition.secrets.iter())
            .filter(|(_, v)| v.as_str().is_some_and(|v| v.contains(host_name(host))))
            .map(|(k, _)| k)
            .collect();
        let msg = format!(
            "the connection would reach `{host}`, a private, loopback or link-local address; connector type `{}` does not allow that (allow_private_network on its template)",
            template.kind
        );
        let error = match holders.first() {
            Some(name) => FieldError::new(&[BODY, "secrets", name], msg),
            None => FieldError::new(&[BODY, "secrets"], msg),
        };
        if !errors
            .iter()
            .any(|e| e.loc == error.loc && e.msg == error.msg)
        {
            errors.push(error);
        }
    }
    errors
}

/// `host[:port]` without its port and brackets, lower case.
fn host_name(authority: &str) -> &str {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
            _ => authority,
        },
    };
    host.trim_end_matches('.')
}

/// Whether `authority` names a private, loopback or link-local address, or `localhost`.
fn is_private_host(authority: &str) -> bool {
    let host = host_name(authority).to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(crate::proxy::upstream::is_private)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_port_and_brackets() {
        assert_eq!(host_name("api.example.com:8443"), "api.example.com");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("example.com."), "example.com");
    }

    #[test]
    fn private_hosts_are_told_apart() {
        for private in [
            "10.1.2.3",
            "127.0.0.1:80",
            "localhost",
            "a.localhost",
            "[::1]:1",
            "169.254.169.254",
        ] {
            assert!(is_private_host(private), "{private}");
        }
        for public in ["api.example.com", "93.184.216.34", "example.com:443"] {
            assert!(!is_private_host(public), "{public}");
        }
    }
}
