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

use crate::support::capture;
use crate::support::golden::{self, Connector};
use crate::support::*;
use secrecy::SecretString;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tokenwarden::config::{Auth, Connection, OAuth2};
use tokenwarden::oauth::request;
use tokenwarden::template::Lookup;
use tokenwarden::token::store::{SqliteStore, StoredToken, TokenStore};

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

/// A config with the given connectors' files as templates (`allow_private_network`: the
/// capture server a `domain` names is on loopback).
fn golden_templates_yaml(connectors: &[Connector]) -> String {
    let mut yaml = format!(
        "tls:\n  ca_file: {}\ntemplates:\n",
        capture::ca_file().display()
    );
    for c in connectors {
        let file = repo(&format!("config/fides/{}", c.file));
        yaml.push_str(&format!(
            "  - {{ path: {}, allow_private_network: true }}\n",
            file.display()
        ));
    }
    yaml
}

/// A token that needs renewing now, with refresh token `REFRESH789`, in the store the
/// sidecar in `dir` will open (as after a restart).
fn store_due_token(dir: &Path, key: &str) {
    let store = SqliteStore::open(&dir.join("state/tokens.db"), None).unwrap();
    let t = now();
    store
        .put(
            key,
            &StoredToken {
                access_token: SecretString::from("tok-stale"),
                refresh_token: Some(SecretString::from(golden::REFRESH_TOKEN)),
                expires_at_ms: Some((t - 60) * 1000),
                scope: None,
                obtained_at_ms: (t - 3660) * 1000,
                definition: None,
            },
        )
        .unwrap();
}

/// A config with the Fides fixture connection `key` (§5.1, [`fixture_authcode`]) from
/// `echo` to `tokens`, with a refresh request if `refresh`.
fn fixture_yaml(key: &str, echo: &Echo, tokens: &TokenServer, refresh: bool) -> String {
    connections(&[fixture_authcode(key, echo.addr, Some(tokens.addr), refresh)])
}

/// A token endpoint answering `reply`, the echo upstream, and a sidecar with the Fides
/// fixture connection `key` between them ([`fixture_yaml`]).
async fn start_fixture(key: &str, reply: Reply, refresh: bool) -> (TokenServer, Echo, Sidecar) {
    let tokens = TokenServer::start(reply).await;
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&fixture_yaml(key, &echo, &tokens, refresh)).await;
    (tokens, echo, sidecar)
}

/// The authorization URL of connection `key` built with the fixed `state` (no admin route).
fn authorization_url_with_state(sidecar: &Sidecar, key: &str, state: &str) -> String {
    let registry = sidecar.running.as_ref().unwrap().registry.load_full();
    let conn = &registry.get(key).unwrap().conn;
    let runtime = [("state", state)];
    request::authorization_url(
        &format!("{} OAuth2", conn.name),
        oauth(conn).authorization_request.as_ref().unwrap(),
        &Lookup {
            params: &conn.params,
            runtime: &runtime,
        },
    )
    .unwrap()
}

/// Seconds from now to the status' `expires_at`.
fn lifetime_left(status: &Value) -> i64 {
    status["expires_at"].as_i64().expect("expires_at") - now() as i64
}
