//! The OAuth2 exchanges of a connection: the client-credentials token request, the
//! authorization-code exchange and the refresh, each built from the connection's Fides
//! templates and turned into a [`TokenSet`].

use super::client::{TokenClient, TokenError};
use super::request::{self, BuiltRequest};
use super::response::TokenResponse;
use crate::config::{Auth, ClientAuth, Connection, Grant, OAuth2};
use crate::template::{self, Lookup};
use crate::token::TokenSet;
use secrecy::{ExposeSecret, SecretString};
use std::time::SystemTime;

/// Which exchange to run.
pub enum Exchange<'a> {
    /// Client credentials: `token_request`.
    ClientCredentials,
    /// Authorization code: `token_request` with `<code>` (and the PKCE verifier).
    Code {
        code: &'a str,
        verifier: Option<&'a SecretString>,
    },
    /// `refresh_request` with `<refresh_token>` (authorization code), or `token_request`
    /// again (client credentials, as Fides does since PR #5569).
    Refresh {
        refresh_token: Option<&'a SecretString>,
    },
}

/// Runs `exchange` for `conn` and returns the new token set. A response without a refresh
/// token keeps `previous_refresh` (rotation replaces it only when a new one arrives).
pub async fn run(
    client: &TokenClient,
    conn: &Connection,
    exchange: Exchange<'_>,
    previous_refresh: Option<SecretString>,
) -> Result<TokenSet, TokenError> {
    let oauth = oauth2(conn)?;
    let built = build(conn, oauth, &exchange)?;
    let response = client.send(&conn.key, built).await?;
    token_set(conn, oauth, response, previous_refresh)
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
        Exchange::Refresh { refresh_token } => {
            let runtime = refresh_token
                .map(|t| vec![("refresh_token", t.expose_secret())])
                .unwrap_or_default();
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
    let mut built = request::build(action, &context, template, &conn.client_config, &lookup)
        .map_err(build_err)?;
    if let Exchange::Code {
        verifier: Some(v), ..
    } = exchange
    {
        add_parameter(&mut built, "code_verifier", v.expose_secret());
    }
    if conn.client_auth != ClientAuth::AsConfigured {
        let get = |name| {
            conn.params
                .get(name)
                .map(template::python_text)
                .unwrap_or_default()
        };
        let (id, secret) = (get("client_id"), get("client_secret"));
        let header = match conn.client_auth {
            ClientAuth::Basic => {
                request::basic_header(&template::quote_plus(&id), &template::quote_plus(&secret))
            }
            _ => request::basic_header(&id, &secret),
        };
        built.set_header("Authorization", header);
    }
    Ok(built)
}

/// Adds a parameter where the request carries its parameters: a form body, a JSON body,
/// or (no body) the query string.
fn add_parameter(built: &mut BuiltRequest, name: &str, value: &str) {
    let content_type = built
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str());
    match (&mut built.body, content_type) {
        (Some(body), Some("application/x-www-form-urlencoded")) => {
            let pair = template::encode_pairs([(name, value)]);
            if !body.is_empty() {
                body.push(b'&');
            }
            body.extend_from_slice(pair.as_bytes());
        }
        (Some(body), Some("application/json")) => {
            if let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice(body) {
                map.insert(name.into(), value.into());
                *body = serde_json::to_vec(&map).unwrap_or_default();
            }
        }
        _ => {
            built
                .url
                .push(if built.url.contains('?') { '&' } else { '?' });
            built.url.push_str(&template::encode_pairs([(name, value)]));
        }
    }
}

/// A token response → a token set. A configured `expires_in` wins over the response's
/// (as in Fides); with neither, the token is long-lived.
fn token_set(
    conn: &Connection,
    oauth: &OAuth2,
    response: TokenResponse,
    previous_refresh: Option<SecretString>,
) -> Result<TokenSet, TokenError> {
    let lifetime = oauth
        .expires_in
        .map(std::time::Duration::from_secs)
        .or(response.expires_in);
    TokenSet::new(
        response.access_token,
        response.refresh_token.or(previous_refresh),
        response.scope,
        SystemTime::now(),
        lifetime,
        rand::random::<f64>(),
    )
    .map_err(|e| TokenError::Invalid {
        connection: conn.key.clone(),
        reason: e.to_string(),
    })
}
