//! The Fides corpus (issue 6): the eleven real connector files in `config/fides/` load
//! unchanged, and `config/fides-example.yaml` lists them all ([`corpus`]); every request
//! tokenwarden builds from them is, byte for byte, the request Fides sends
//! (FIDES-BEHAVIOUR.md §4), checked on the wire over TLS through the running sidecar
//! ([`wire`]); Fides' own test cases (§5.1–5.3) where tokenwarden behaves the same
//! ([`same`]) and pins where it deliberately differs ([`differs`]); and the static
//! strategies `bearer`, `basic` and `api_key` through the proxy ([`strategies`]).
//! docs/fides-compatibility.md is the table these tests back.

mod corpus;
mod differs;
mod same;
mod strategies;
mod wire;

use crate::support::authz::{authorize, callback, query};
use crate::support::capture;
use crate::support::golden::{self, Connector};
use crate::support::*;
use secrecy::SecretString;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokenwarden::config::{Auth, Connection, OAuth2};
use tokenwarden::token::store::{FileStore, StoredToken, TokenStore};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn oauth(conn: &Connection) -> &OAuth2 {
    match &conn.auth {
        Auth::OAuth2(o) => o,
        _ => panic!("{} is not an OAuth2 connection", conn.key),
    }
}

/// A config with the given connectors (files by absolute path) and the golden secrets;
/// `domain` for the files without a default.
fn golden_yaml(connectors: &[Connector], domain: &str) -> String {
    let mut yaml = format!(
        "tls:\n  ca_file: {}\nconnections:\n",
        capture::ca_file().display()
    );
    for c in connectors {
        yaml.push_str(&format!(
            "  - key: {key}\n    saas_config: {file}\n    secrets:\n      client_id: {id}\n      client_secret: {secret}\n      redirect_uri: {redirect}\n",
            key = c.key,
            file = repo(&format!("config/fides/{}", c.file)).display(),
            id = golden::CLIENT_ID,
            secret = golden::CLIENT_SECRET,
            redirect = golden::REDIRECT_URI,
        ));
        if c.needs_domain {
            yaml.push_str(&format!("      domain: \"{domain}\"\n"));
        }
    }
    yaml
}

/// A token that needs renewing now, with refresh token `REFRESH789`, in the store the
/// sidecar in `dir` will open (as after a restart).
fn store_due_token(dir: &Path, key: &str) {
    let store = FileStore::open(&dir.join("state/tokens.bin"), None).unwrap();
    let t = now();
    store
        .put(
            key,
            &StoredToken {
                access_token: SecretString::from("tok-stale"),
                refresh_token: Some(SecretString::from(golden::REFRESH_TOKEN)),
                expires_at: Some(t - 60),
                scope: None,
                obtained_at: t - 3660,
            },
        )
        .unwrap();
}

/// Waits until the status of connection `key` satisfies `done`, and returns it.
async fn wait_status(sidecar: &Sidecar, key: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = sidecar.status(key).await;
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection {key} never reached the expected status; last {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Fides test fixture's authorization-code connection (§5.1): authorize GET
/// `/auth/authorize` on the root host; token and refresh requests with every value in the
/// query string and an empty form body — here sent to `token` over plain HTTP.
fn fixture_authcode(key: &str, root: &str, token: SocketAddr, refresh: bool) -> String {
    let refresh = if refresh {
        format!(
            r#"          refresh_request:
            method: POST
            path: /oauth/token
            client_config: {{ protocol: http, host: "{token}" }}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            query_params:
              - {{ name: client_id, value: "<client_id>" }}
              - {{ name: client_secret, value: "<client_secret>" }}
              - {{ name: redirect_uri, value: "<redirect_uri>" }}
              - {{ name: grant_type, value: refresh_token }}
              - {{ name: refresh_token, value: "<refresh_token>" }}
"#
        )
    } else {
        String::new()
    };
    format!(
        r#"  - key: {key}
    secrets: {{ domain: localhost, client_id: client, client_secret: secret, redirect_uri: "https://localhost/callback" }}
    client_config:
      {root}
      authentication:
        strategy: oauth2_authorization_code
        configuration:
          authorization_request:
            method: GET
            path: /auth/authorize
            query_params:
              - {{ name: client_id, value: "<client_id>" }}
              - {{ name: redirect_uri, value: "<redirect_uri>" }}
              - {{ name: response_type, value: code }}
              - {{ name: scope, value: "admin.read admin.write" }}
              - {{ name: state, value: "<state>" }}
          token_request:
            method: POST
            path: /oauth/token
            client_config: {{ protocol: http, host: "{token}" }}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            query_params:
              - {{ name: client_id, value: "<client_id>" }}
              - {{ name: client_secret, value: "<client_secret>" }}
              - {{ name: grant_type, value: authorization_code }}
              - {{ name: code, value: "<code>" }}
              - {{ name: redirect_uri, value: "<redirect_uri>" }}
{refresh}"#
    )
}

/// The root `protocol`/`host` of a connection proxying to the echo server.
fn echo_root(echo: &Echo) -> String {
    format!("protocol: http\n      host: \"{}\"", echo.addr)
}

/// Authorizes `key` with `code` through the admin routes; panics unless the callback succeeds.
async fn authorize_with(sidecar: &Sidecar, key: &str, code: &str) {
    let auth = authorize(sidecar, key).await;
    let page = callback(sidecar, &query(&[("code", code), ("state", &auth.state)])).await;
    assert_eq!(page.status, 200, "callback: {}", page.body);
}

/// GETs `/{key}{path}` through the proxy → (status, JSON body).
async fn proxied(sidecar: &Sidecar, key: &str, path: &str) -> (u16, Value) {
    get_json(&sidecar.url(&format!("/{key}{path}"))).await
}

/// The values of header `name` in an echo answer.
fn echoed<'a>(body: &'a Value, name: &str) -> Vec<&'a str> {
    body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

/// Seconds from now to the status' `expires_at`.
fn lifetime_left(status: &Value) -> i64 {
    status["expires_at"].as_i64().expect("expires_at") - now() as i64
}
