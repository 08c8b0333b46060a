//! The OAuth2 exchanges of a connection: the client-credentials token request, the
//! authorization-code exchange and the refresh, each built from the connection's Fides
//! templates and turned into a plain [`Granted`] (the refresher and the callback make a
//! token set of it).

use super::client::{TokenClient, TokenError};
use super::request::{self, BuiltRequest};
use super::response::TokenResponse;
use crate::config::{Auth, ClientAuth, Connection, Grant, OAuth2};
use crate::template::{self, Lookup};
use secrecy::{ExposeSecret, SecretString};
use std::time::{Duration, SystemTime};

/// What a successful exchange granted.
pub struct Granted {
    pub access_token: SecretString,
    /// The new refresh token, or the previous one when the response carried none.
    pub refresh_token: Option<SecretString>,
    pub scope: Option<String>,
    pub obtained_at: SystemTime,
    /// None: long-lived.
    pub lifetime: Option<Duration>,
}

/// Which exchange to run.
pub enum Exchange<'a> {
    /// Client credentials: `token_request`.
    ClientCredentials,
    /// Authorization code: `token_request` with `<code>` (and the PKCE verifier).
    Code {
        code: &'a str,
        verifier: Option<&'a SecretString>,
    },
    /// `refresh_request` with `<refresh_token>` and `<access_token>` (authorization code),
    /// or `token_request` again (client credentials, as Fides does since PR #5569).
    Refresh {
        refresh_token: Option<&'a SecretString>,
        access_token: Option<&'a SecretString>,
    },
}

/// Runs `exchange` for `conn` and returns what it granted. A response without a refresh
/// token keeps `previous_refresh` (rotation replaces it only when a new one arrives).
pub async fn run(
    client: &TokenClient,
    conn: &Connection,
    exchange: Exchange<'_>,
    previous_refresh: Option<SecretString>,
) -> Result<Granted, TokenError> {
    let oauth = oauth2(conn)?;
    let built = build(conn, oauth, &exchange)?;
    let response = client.send(&conn.key, built).await?;
    Ok(granted(oauth, response, previous_refresh))
}

fn oauth2(conn: &Connection) -> Result<&OAuth2, TokenError> {
    match &conn.auth {
        Auth::OAuth2(o) => Ok(o),
        _ => Err(TokenError::Build {
            connection: conn.key.clone(),
            message: "not an OAuth2 connection".into(),
        }),
    }
}

/// Builds the request of an exchange (exposed for golden tests).
pub fn build(
    conn: &Connection,
    oauth: &OAuth2,
    exchange: &Exchange<'_>,
) -> Result<BuiltRequest, TokenError> {
    let context = format!("{} OAuth2", conn.name);
    let build_err = |e: request::BuildError| TokenError::Build {
        connection: conn.key.clone(),
        message: e.to_string(),
    };
    let (action, template, runtime): (&str, _, Vec<(&str, &str)>) = match exchange {
        Exchange::ClientCredentials => ("access", &oauth.token_request, vec![]),
        Exchange::Code { code, .. } => ("access", &oauth.token_request, vec![("code", *code)]),
        Exchange::Refresh {
            refresh_token,
            access_token,
        } => {
            let runtime = [
                ("refresh_token", refresh_token),
                ("access_token", access_token),
            ]
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v.expose_secret())))
            .collect();
            match (oauth.grant, &oauth.refresh_request) {
                (Grant::AuthorizationCode, Some(r)) => ("refresh", r, runtime),
                _ => ("refresh", &oauth.token_request, runtime),
            }
        }
    };
    let lookup = Lookup {
        params: &conn.params,
        runtime: &runtime,
    };
    let mut built = request::build(action, &context, template, &lookup).map_err(build_err)?;
    if let Exchange::Code {
        verifier: Some(v), ..
    } = exchange
    {
        add_body_parameter(&mut built, "code_verifier", v.expose_secret()).map_err(|reason| {
            TokenError::Build {
                connection: conn.key.clone(),
                message: format!("cannot send the PKCE code_verifier: {reason}"),
            }
        })?;
    }
    if let Some(assertion) = &oauth.assertion {
        let jwt = assertion
            .sign(&lookup, crate::jwt::now())
            .map_err(|message| TokenError::Build {
                connection: conn.key.clone(),
                message,
            })?;
        add_body_parameter(&mut built, "assertion", &jwt)
            .and_then(|()| match has_parameter(&built, "grant_type") {
                true => Ok(()),
                false => add_body_parameter(&mut built, "grant_type", JWT_BEARER_GRANT),
            })
            .map_err(|reason| TokenError::Build {
                connection: conn.key.clone(),
                message: format!("cannot send the JWT-bearer assertion: {reason}"),
            })?;
    }
    authenticate_client(conn, &mut built).map_err(|message| TokenError::Build {
        connection: conn.key.clone(),
        message,
    })?;
    Ok(built)
}

/// The JWT-bearer grant type (RFC 7523 §2.1).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The client assertion type of `private_key_jwt` (RFC 7523 §2.2).
pub const JWT_CLIENT_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a `private_key_jwt` client assertion is valid: one request's worth, with room
/// for clock skew.
pub const CLIENT_ASSERTION_LIFETIME: u64 = 60;

/// Authenticates the client as its `client_auth` says, on token and revocation requests
/// alike: the `Authorization: Basic` header, a `private_key_jwt` client assertion in the
/// body, or the `tls_client_auth` certificate (with `client_id` in the body unless the
/// request carries it). The message says what went wrong, never a secret.
pub fn authenticate_client(conn: &Connection, built: &mut BuiltRequest) -> Result<(), String> {
    let get = |name| {
        conn.params
            .get(name)
            .map(template::python_text)
            .unwrap_or_default()
    };
    match &conn.client_auth {
        ClientAuth::AsConfigured => {}
        ClientAuth::Basic => built.set_header(
            "Authorization",
            template::basic_header(
                &template::quote_plus(&get("client_id")),
                &template::quote_plus(&get("client_secret")),
            ),
        ),
        ClientAuth::BasicUnencoded => built.set_header(
            "Authorization",
            template::basic_header(&get("client_id"), &get("client_secret")),
        ),
        ClientAuth::PrivateKeyJwt(p) => {
            let endpoint = token_endpoint(conn, &built.url);
            let client_id = get("client_id");
            let now = crate::jwt::now();
            let mut claims = serde_json::Map::new();
            claims.insert("iss".into(), client_id.clone().into());
            claims.insert("sub".into(), client_id.into());
            claims.insert(
                "aud".into(),
                p.audience.as_deref().unwrap_or(&endpoint).into(),
            );
            claims.insert("jti".into(), crate::jwt::jti().into());
            claims.insert("iat".into(), now.into());
            claims.insert("exp".into(), (now + CLIENT_ASSERTION_LIFETIME).into());
            let jwt = p
                .key
                .sign(&claims)
                .map_err(|e| format!("private_key_jwt: {e}"))?;
            add_body_parameter(built, "client_assertion_type", JWT_CLIENT_ASSERTION)
                .and_then(|()| add_body_parameter(built, "client_assertion", &jwt))
                .map_err(|reason| {
                    format!("cannot send the private_key_jwt client assertion: {reason}")
                })?;
        }
        ClientAuth::TlsClientAuth(t) => {
            if !has_parameter(built, "client_id") {
                add_body_parameter(built, "client_id", &get("client_id")).map_err(|reason| {
                    format!("cannot send the client_id of tls_client_auth: {reason}")
                })?;
            }
            built.identity = Some(request::ClientCertificate(std::sync::Arc::clone(
                &t.identity,
            )));
        }
    }
    Ok(())
}

/// The token endpoint's URL — the token request's, without its query — the default
/// audience of a client assertion on every request (a revocation request's too, as OpenID
/// Connect Core §9 asks); `url`'s when it cannot be filled.
fn token_endpoint(conn: &Connection, url: &str) -> String {
    let endpoint = match &conn.auth {
        Auth::OAuth2(o) => o.token_request.endpoint(&conn.params),
        _ => None,
    };
    endpoint.unwrap_or_else(|| url.split(['?', '#']).next().unwrap_or_default().to_owned())
}

/// Whether the request already sends parameter `name`, in its query or its form or JSON body.
fn has_parameter(built: &BuiltRequest, name: &str) -> bool {
    let in_pairs = |text: &[u8]| form_urlencoded::parse(text).any(|(n, _)| n == name);
    let query = built
        .url
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default();
    if in_pairs(query.as_bytes()) {
        return true;
    }
    let Some(body) = &built.body else {
        return false;
    };
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => map.contains_key(name),
        _ => in_pairs(body),
    }
}

/// Adds a parameter to the body of a token request: appended to a form body, merged into a
/// JSON object body, or — for a body-less request, such as a Fides template that puts
/// everything in the query — as a new body (form-encoded unless the request says JSON).
/// Never in the URL: this carries the PKCE verifier (RFC 7636 §4.5, RFC 6749 §4.1.3).
fn add_body_parameter(
    built: &mut BuiltRequest,
    name: &str,
    value: &str,
) -> Result<(), &'static str> {
    use crate::config::{CONTENT_TYPE, FORM, JSON};
    let content_type = built
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(CONTENT_TYPE))
        .map(|(_, v)| v.clone());
    if built.body.is_none() {
        if matches!(built.method.as_str(), "GET" | "HEAD") {
            return Err("the token request is a GET, which has no body; use POST");
        }
        match content_type.as_deref() {
            None => built.set_header(CONTENT_TYPE, FORM.to_owned()),
            Some(FORM) => {}
            Some(JSON) => {
                let mut map = serde_json::Map::new();
                map.insert(name.into(), value.into());
                built.body = Some(serde_json::Value::Object(map).to_string().into_bytes());
                return Ok(());
            }
            Some(_) => return Err("the token request's Content-Type is neither form nor JSON"),
        }
        built.body = Some(template::encode_pairs([(name, value)]).into_bytes());
        return Ok(());
    }
    let body = built.body.as_mut().ok_or("no body")?;
    match content_type.as_deref() {
        Some(FORM) => {
            if !body.is_empty() {
                body.push(b'&');
            }
            body.extend_from_slice(template::encode_pairs([(name, value)]).as_bytes());
            Ok(())
        }
        Some(JSON) => match serde_json::from_slice(body) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.insert(name.into(), value.into());
                *body = serde_json::to_vec(&map).map_err(|_| "the JSON body cannot be written")?;
                Ok(())
            }
            _ => Err("the token request's JSON body is not an object"),
        },
        _ => Err("the token request's body is neither form nor JSON"),
    }
}

/// A token response → what it granted. A configured `expires_in` wins over the
/// response's (as in Fides); with neither, the token is long-lived.
fn granted(
    oauth: &OAuth2,
    response: TokenResponse,
    previous_refresh: Option<SecretString>,
) -> Granted {
    Granted {
        access_token: response.access_token,
        refresh_token: response.refresh_token.or(previous_refresh),
        scope: response.scope,
        obtained_at: SystemTime::now(),
        lifetime: oauth
            .expires_in
            .map(Duration::from_secs)
            .or(response.expires_in),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, content_type: Option<&str>, body: Option<&str>) -> BuiltRequest {
        BuiltRequest {
            method: method.into(),
            url: "https://as.example/token?client_id=c".into(),
            headers: content_type
                .map(|c| vec![("Content-Type".to_owned(), c.to_owned())])
                .unwrap_or_default(),
            body: body.map(|b| b.as_bytes().to_vec()),
            identity: None,
        }
    }

    fn add(mut r: BuiltRequest) -> Result<(String, String), &'static str> {
        add_body_parameter(&mut r, "code_verifier", "v+/ 1")?;
        assert_eq!(
            r.url, "https://as.example/token?client_id=c",
            "never the URL"
        );
        let ct = r
            .headers
            .iter()
            .find(|(n, _)| n == "Content-Type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        Ok((ct, String::from_utf8(r.body.unwrap()).unwrap()))
    }

    const FORM: &str = "application/x-www-form-urlencoded";

    #[test]
    fn the_verifier_goes_in_the_body_never_the_url() {
        assert_eq!(
            add(request("POST", Some(FORM), Some("code=x"))),
            Ok((FORM.into(), "code=x&code_verifier=v%2B%2F+1".into()))
        );
        // A Fides template with everything in the query and no body (Outreach style).
        assert_eq!(
            add(request("POST", Some(FORM), None)),
            Ok((FORM.into(), "code_verifier=v%2B%2F+1".into()))
        );
        assert_eq!(
            add(request("POST", None, None)),
            Ok((FORM.into(), "code_verifier=v%2B%2F+1".into()))
        );
        assert_eq!(
            add(request(
                "POST",
                Some("application/json"),
                Some(r#"{"code":"x"}"#)
            )),
            Ok((
                "application/json".into(),
                r#"{"code":"x","code_verifier":"v+/ 1"}"#.into()
            ))
        );
        assert_eq!(
            add(request("POST", Some("application/json"), None)),
            Ok((
                "application/json".into(),
                r#"{"code_verifier":"v+/ 1"}"#.into()
            ))
        );
    }

    #[test]
    fn requests_that_cannot_carry_it_are_refused() {
        assert!(add(request("GET", None, None)).is_err());
        assert!(add(request("POST", Some("text/plain"), Some("x"))).is_err());
        assert!(add(request("POST", Some("application/json"), Some("[1]"))).is_err());
    }
}
