//! Builds the authorization URL and the token/refresh requests from a connection's
//! compiled request templates ([`RequestTemplate`]), byte for byte as Fides does
//! (FIDES-BEHAVIOUR.md §2.2–2.4, §3.2, §3.5). Load checked their shape; building only fills
//! values in, so what can fail here is a value.

use crate::config::{self, Encoding, RequestTemplate};
use crate::template::{self, Lookup, Template, Unresolved};
use std::fmt;

/// Why a request could not be built: a run-time placeholder without a value, or a form
/// body that is not JSON once filled. Messages name placeholders, never their values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// A run-time placeholder of `part` had no value (Fides' message for that part).
    #[error("{}", part.message(action, context, names))]
    Unresolved {
        part: Part,
        action: String,
        context: String,
        /// The placeholders, comma-separated.
        names: String,
    },
    #[error("the body of the '{action}' request of {context} is not valid JSON for a form body")]
    FormBody { action: String, context: String },
}

/// The part of a request a placeholder was missing in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Host,
    Path,
    Body,
    BasicAuth,
}

impl Part {
    fn message(self, action: &str, context: &str, names: &str) -> String {
        match self {
            Part::Path => format!("the following param_values reference invalid fields for the '{action}' request of {context}: [{names}]"),
            Part::Body => format!("unable to replace placeholders in body for the '{action}' request of {context}. The following placeholders could not be resolved: [{names}]"),
            Part::Host => format!("the host of the '{action}' request of {context} has unresolved placeholders: [{names}]"),
            Part::BasicAuth => format!("the basic credentials of the '{action}' request of {context} have unresolved placeholders: [{names}]"),
        }
    }
}

/// Which request is being built, for errors: Fides' action name (`authorize`, `access`,
/// `refresh`) and the connection's context (`"<name> OAuth2"`).
#[derive(Clone, Copy)]
struct Names<'a> {
    action: &'a str,
    context: &'a str,
}

impl Names<'_> {
    /// Fills `template`, the `part` of this request.
    fn fill(
        &self,
        part: Part,
        template: &Template,
        lookup: &Lookup<'_>,
    ) -> Result<String, BuildError> {
        template
            .fill(lookup)
            .map_err(|Unresolved { names }| BuildError::Unresolved {
                part,
                action: self.action.to_owned(),
                context: self.context.to_owned(),
                names: names.join(", "),
            })
    }

    fn form_error(&self) -> BuildError {
        BuildError::FormBody {
            action: self.action.to_owned(),
            context: self.context.to_owned(),
        }
    }
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
    /// The client certificate the TLS connection presents (`tls_client_auth`).
    pub identity: Option<ClientCertificate>,
}

/// A client certificate and its key, for the TLS connection of one request; equal when
/// it is the same one.
#[derive(Clone)]
pub struct ClientCertificate(pub std::sync::Arc<rustls::sign::CertifiedKey>);

impl PartialEq for ClientCertificate {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
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
    request: &RequestTemplate,
    lookup: &Lookup<'_>,
) -> Result<BuiltRequest, BuildError> {
    let names = Names { action, context };
    let mut url =
        base_url(names, request, lookup)? + &names.fill(Part::Path, &request.path, lookup)?;
    let query = config::fill_pairs(&request.query_params, lookup);
    if !query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&template::encode_pairs(
            query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
    }
    let mut built = BuiltRequest {
        method: request.method.as_str().to_owned(),
        url,
        headers: config::fill_pairs(&request.headers, lookup),
        body: None,
        identity: None,
    };
    if let Some(body) = &request.body {
        let text = names.fill(Part::Body, &body.template, lookup)?;
        built.body = Some(match body.encoding {
            Encoding::DefaultJson => {
                built
                    .headers
                    .push((config::CONTENT_TYPE.into(), config::JSON.into()));
                text.into_bytes()
            }
            Encoding::AsIs => text.into_bytes(),
            Encoding::Form => {
                let json: serde_json::Value =
                    serde_json::from_str(&text).map_err(|_| names.form_error())?;
                template::form_encode(&json)
                    .map_err(|_| names.form_error())?
                    .into_bytes()
            }
        });
    }
    // A request's own client_config.authentication applies to this request only.
    if let Some(basic) = &request.basic_auth {
        let user = names.fill(Part::BasicAuth, &basic.username, lookup)?;
        let pass = match &basic.password {
            Some(p) => names.fill(Part::BasicAuth, p, lookup)?,
            None => String::new(),
        };
        built.set_header("Authorization", template::basic_header(&user, &pass));
    }
    Ok(built)
}

/// The authorization URL: `protocol://host + path + "?" + urlencode(query_params)`, query
/// parameters in config order, unresolved ones left out (FIDES-BEHAVIOUR.md §3.2).
pub fn authorization_url(
    context: &str,
    request: &RequestTemplate,
    lookup: &Lookup<'_>,
) -> Result<String, BuildError> {
    let names = Names {
        action: "authorize",
        context,
    };
    let base = base_url(names, request, lookup)?;
    let path = names.fill(Part::Path, &request.path, lookup)?;
    let query = config::fill_pairs(&request.query_params, lookup);
    Ok(format!(
        "{base}{path}?{}",
        template::encode_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    ))
}

/// `protocol://host`, the request's own client_config's or the root one's.
fn base_url(
    names: Names<'_>,
    request: &RequestTemplate,
    lookup: &Lookup<'_>,
) -> Result<String, BuildError> {
    let host = names.fill(Part::Host, &request.host, lookup)?;
    Ok(format!("{}://{host}", request.protocol))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::load_text;
    use crate::config::{Auth, Connection, OAuth2};

    /// An authorization-code connection: the authorization host takes `<state>`, the token
    /// body `<code>`, the refresh path and query `<refresh_token>` and `<access_token>`.
    const CONFIG: &str = r#"connections:
  - key: api
    secrets: { client_id: cid, client_secret: "s e/c", domain: as.example }
    client_config:
      protocol: https
      host: api.example
      authentication:
        strategy: oauth2_authorization_code
        configuration:
          authorization_request:
            method: GET
            path: /authorize
            client_config: { protocol: https, host: "<state>.login.example" }
            query_params: [{ name: client_id, value: <client_id> }]
          token_request:
            method: POST
            path: /token
            headers: [{ name: Content-Type, value: application/x-www-form-urlencoded }]
            body: '{"code": "<code>", "client_id": "<client_id>"}'
          refresh_request:
            method: POST
            path: /refresh/<refresh_token>
            client_config:
              protocol: http
              host: <domain>
              authentication: { strategy: basic, configuration: { username: <client_id>, password: <client_secret> } }
            query_params: [{ name: at, value: <access_token> }, { name: id, value: <client_id> }]
            body: '{"r": "<refresh_token>"}'
"#;

    fn connection() -> Connection {
        let config = load_text(CONFIG).unwrap_or_else(|p| panic!("{p}"));
        let conn = config.connections.into_iter().next().unwrap();
        std::sync::Arc::try_unwrap(conn).unwrap()
    }

    fn oauth(conn: &Connection) -> &OAuth2 {
        match &conn.auth {
            Auth::OAuth2(o) => o,
            other => panic!("{other:?}"),
        }
    }

    fn build_with(
        conn: &Connection,
        request: &RequestTemplate,
        runtime: &[(&str, &str)],
    ) -> Result<BuiltRequest, BuildError> {
        let lookup = Lookup {
            params: &conn.params,
            runtime,
        };
        build("refresh", "Api OAuth2", request, &lookup)
    }

    fn body(built: &BuiltRequest) -> String {
        String::from_utf8(built.body.clone().unwrap()).unwrap()
    }

    #[test]
    fn one_compiled_template_builds_each_request_with_its_values() {
        let conn = connection();
        let token = &oauth(&conn).token_request;
        for code in ["C1", "a b/c"] {
            let built = build_with(&conn, token, &[("code", code)]).unwrap();
            assert_eq!(built.method, "POST");
            assert_eq!(built.url, "https://api.example/token");
            let expected = format!("client_id=cid&code={}", template::quote_plus(code));
            assert_eq!(body(&built), expected, "form keys sorted, values encoded");
        }
        let refresh = &oauth(&conn).refresh_request.as_ref().unwrap();
        let built = build_with(
            &conn,
            refresh,
            &[("refresh_token", "R"), ("access_token", "A")],
        )
        .unwrap();
        assert_eq!(built.url, "http://as.example/refresh/R?at=A&id=cid");
        assert_eq!(body(&built), r#"{"r": "R"}"#);
        let header = |name: &str| {
            built
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header(config::CONTENT_TYPE).as_deref(), Some(config::JSON));
        assert_eq!(
            header("Authorization"),
            Some(template::basic_header("cid", "s e/c"))
        );
    }

    #[test]
    fn a_run_time_placeholder_without_a_value_is_the_only_failure() {
        let conn = connection();
        let o = oauth(&conn);
        let refresh = o.refresh_request.as_ref().unwrap();
        // a pair without its value is left out, not an error
        let built = build_with(&conn, refresh, &[("refresh_token", "R")]).unwrap();
        assert_eq!(built.url, "http://as.example/refresh/R?id=cid");

        let names = |e: BuildError| match e {
            BuildError::Unresolved { part, names, .. } => (part, names),
            other => panic!("{other}"),
        };
        let missing = build_with(&conn, refresh, &[("access_token", "A")]).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "the following param_values reference invalid fields for the 'refresh' request of Api OAuth2: [refresh_token]",
            "Fides' message (FIDES-BEHAVIOUR.md §2.2)"
        );
        assert_eq!(names(missing), (Part::Path, "refresh_token".to_owned()));
        let missing = build_with(&conn, &o.token_request, &[]).unwrap_err();
        assert_eq!(names(missing.clone()), (Part::Body, "code".to_owned()));
        assert!(!missing.to_string().contains("cid"), "names, never values");

        let authorize = o.authorization_request.as_ref().unwrap();
        let lookup = Lookup::new(&conn.params);
        let missing = authorization_url("Api OAuth2", authorize, &lookup).unwrap_err();
        assert_eq!(names(missing), (Part::Host, "state".to_owned()));
        let runtime = [("state", "s1")];
        let lookup = Lookup {
            params: &conn.params,
            runtime: &runtime,
        };
        assert_eq!(
            authorization_url("Api OAuth2", authorize, &lookup).as_deref(),
            Ok("https://s1.login.example/authorize?client_id=cid")
        );
    }

    #[test]
    fn a_form_body_that_is_not_json_once_filled_is_a_value_error() {
        let conn = connection();
        let token = &oauth(&conn).token_request;
        let err = build_with(&conn, token, &[("code", "x\"y")]).unwrap_err();
        assert!(matches!(err, BuildError::FormBody { .. }), "{err}");
    }
}
