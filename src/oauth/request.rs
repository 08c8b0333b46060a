//! Builds the authorization URL and the token/refresh requests from a connection's Fides
//! request templates, byte for byte as Fides does (FIDES-BEHAVIOUR.md §2.2–2.4, §3.2, §3.5).

use crate::config::fides::{ClientConfig, SaasRequest};
use crate::template::{self, Lookup};
use std::fmt;

/// Why a request could not be built. Messages name placeholders, never their values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    #[error("the '{action}' request of {context} has no method and path")]
    Incomplete { action: String, context: String },
    #[error("the following param_values reference invalid fields for the '{action}' request of {context}: [{names}]")]
    Path {
        action: String,
        context: String,
        names: String,
    },
    #[error("unable to replace placeholders in body for the '{action}' request of {context}. The following placeholders could not be resolved: [{names}]")]
    Body {
        action: String,
        context: String,
        names: String,
    },
    #[error(
        "the host of the '{action}' request of {context} has unresolved placeholders: [{names}]"
    )]
    Host {
        action: String,
        context: String,
        names: String,
    },
    #[error("the body of the '{action}' request of {context} is not valid JSON for a form body")]
    FormBody { action: String, context: String },
    #[error("unsupported Content-Type {content_type:?} in the '{action}' request of {context}")]
    ContentType {
        action: String,
        context: String,
        content_type: String,
    },
    #[error(
        "the basic credentials of the '{action}' request of {context} have unresolved placeholders"
    )]
    BasicAuth { action: String, context: String },
}

/// A request ready to send. It carries secrets, so `Debug` shows only method and path.
#[derive(Clone, PartialEq)]
pub struct BuiltRequest {
    pub method: String,
    /// `protocol://host/path?query`.
    pub url: String,
    /// In config order; later duplicates replace earlier values (Python dict semantics).
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl fmt::Debug for BuiltRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.url.split('?').next().unwrap_or_default();
        write!(f, "BuiltRequest({} {path} ****)", self.method)
    }
}

impl BuiltRequest {
    /// Sets (or replaces, case-insensitively) a header.
    pub fn set_header(&mut self, name: &str, value: String) {
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.headers.push((name.to_owned(), value)),
        }
    }
}

/// Builds a token or refresh request. `action` is Fides' action name (`access`, `refresh`)
/// and `context` names the connection in errors.
pub fn build(
    action: &str,
    context: &str,
    request: &SaasRequest,
    root: &ClientConfig,
    lookup: &Lookup<'_>,
) -> Result<BuiltRequest, BuildError> {
    let err_ctx = || (action.to_owned(), context.to_owned());
    let (Some(method), Some(path_template)) = (&request.method, &request.path) else {
        let (action, context) = err_ctx();
        return Err(BuildError::Incomplete { action, context });
    };
    let base = base_url(action, context, request, root, lookup)?;
    let path = template::assign(path_template, lookup).ok_or_else(|| {
        let (action, context) = err_ctx();
        let names = template::missing(path_template, lookup).join(", ");
        BuildError::Path {
            action,
            context,
            names,
        }
    })?;
    let mut url = base + &path;
    let query = resolved_pairs(&request.query_params, lookup);
    if !query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&template::encode_pairs(
            query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
    }
    let mut built = BuiltRequest {
        method: method.to_ascii_uppercase(),
        url,
        headers: resolved_pairs(&request.headers, lookup),
        body: None,
    };
    if let Some(body_template) = &request.body {
        let body = template::assign(body_template, lookup).ok_or_else(|| {
            let (action, context) = err_ctx();
            let names = template::missing(body_template, lookup).join(", ");
            BuildError::Body {
                action,
                context,
                names,
            }
        })?;
        built.body = Some(format_body(&mut built, body, action, context)?);
    }
    // A request's own client_config.authentication applies to this request only.
    let auth = request
        .client_config
        .as_ref()
        .and_then(|c| c.authentication.as_ref());
    if let Some(strategy) = auth.filter(|s| s.strategy == "basic") {
        let basic: crate::config::fides::BasicConfiguration = strategy
            .configuration
            .clone()
            .and_then(|c| serde_yaml_ng::from_value(c).ok())
            .ok_or_else(|| {
                let (action, context) = err_ctx();
                BuildError::BasicAuth { action, context }
            })?;
        let user = template::assign(&basic.username, lookup);
        let pass = match &basic.password {
            Some(p) => template::assign(p, lookup),
            None => Some(String::new()),
        };
        let (Some(user), Some(pass)) = (user, pass) else {
            let (action, context) = err_ctx();
            return Err(BuildError::BasicAuth { action, context });
        };
        built.set_header("Authorization", template::basic_header(&user, &pass));
    }
    Ok(built)
}

/// The authorization URL: `protocol://host + path + "?" + urlencode(query_params)`, query
/// parameters in config order, unresolved ones left out (FIDES-BEHAVIOUR.md §3.2).
pub fn authorization_url(
    context: &str,
    request: &SaasRequest,
    root: &ClientConfig,
    lookup: &Lookup<'_>,
) -> Result<String, BuildError> {
    let base = base_url("authorize", context, request, root, lookup)?;
    let path = request.path.as_deref().unwrap_or_default();
    let path = template::assign(path, lookup).ok_or_else(|| BuildError::Path {
        action: "authorize".into(),
        context: context.into(),
        names: template::missing(path, lookup).join(", "),
    })?;
    let query = resolved_pairs(&request.query_params, lookup);
    Ok(format!(
        "{base}{path}?{}",
        template::encode_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    ))
}

/// `protocol://host` from the request's own client_config, else the root one.
fn base_url(
    action: &str,
    context: &str,
    request: &SaasRequest,
    root: &ClientConfig,
    lookup: &Lookup<'_>,
) -> Result<String, BuildError> {
    let client = request.client_config.as_ref().unwrap_or(root);
    let host = template::assign(&client.host, lookup).ok_or_else(|| BuildError::Host {
        action: action.into(),
        context: context.into(),
        names: template::missing(&client.host, lookup).join(", "),
    })?;
    Ok(format!("{}://{}", client.protocol, host))
}

/// Name/value pairs with placeholders filled; a pair with a missing placeholder is left
/// out; a repeated name keeps its first position and takes the last value.
fn resolved_pairs(
    items: &[crate::config::fides::NameValue],
    lookup: &Lookup<'_>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items {
        let Some(value) = template::assign(&item.value, lookup) else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| *n == item.name) {
            Some(slot) => slot.1 = value,
            None => out.push((item.name.clone(), value)),
        }
    }
    out
}

/// Fides' `format_body`: picks the encoding from Content-Type, adding
/// `application/json` when there is none.
fn format_body(
    built: &mut BuiltRequest,
    body: String,
    action: &str,
    context: &str,
) -> Result<Vec<u8>, BuildError> {
    let content_type = built
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.clone());
    match content_type.as_deref() {
        None => {
            built
                .headers
                .push(("Content-Type".into(), "application/json".into()));
            Ok(body.into_bytes())
        }
        Some("application/json") | Some("text/plain") => Ok(body.into_bytes()),
        Some("application/x-www-form-urlencoded") => {
            let form_error = || BuildError::FormBody {
                action: action.into(),
                context: context.into(),
            };
            let json: serde_json::Value = serde_json::from_str(&body).map_err(|_| form_error())?;
            template::form_encode(&json)
                .map(String::into_bytes)
                .map_err(|_| form_error())
        }
        Some(other) => Err(BuildError::ContentType {
            action: action.into(),
            context: context.into(),
            content_type: other.into(),
        }),
    }
}
