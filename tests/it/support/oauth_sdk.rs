//! Two real OAuth SDKs (`tests/py/oauth_sdk.py`, packages `google-auth`, `Authlib` and
//! `requests` of `tests/py/requirements.txt`) refreshing an access token at a token URL and
//! calling an API with it, for the placeholder-credential tests (`stub_token_endpoint`):
//! [`google`] (google-auth's user `Credentials`, `refresh`, then an `AuthorizedSession` GET)
//! and [`authlib`] (Authlib's requests `OAuth2Session` holding an expired token: its GET
//! refreshes first by itself). The script's docstring records what each sends.
//!
//! Each runs as a child process with the proxy taken from `env`, as an application's would
//! be: `HTTP_PROXY=http://<proxy>` for `http://` URLs (absolute-form requests),
//! `HTTPS_PROXY=http://<proxy>` with `REQUESTS_CA_BUNDLE=<CA file>` for `https://` URLs (a
//! CONNECT tunnel). The machine's own proxy and CA-bundle variables are cleared first.
//!
//! A missing package fails the test (never skips) and names `tests/deps.sh`.

use super::python::{route_env, run_script_with};
use super::WAIT;
use serde_json::Value;
use std::time::Duration;

/// The script's bound on each of its HTTP requests, in seconds (its `TIMEOUT`).
const REQUEST_TIMEOUT_SECS: u64 = 10;

/// The CA-bundle variables `requests` reads; cleared so that only a test's `env` decides
/// which CA verifies `https://` servers.
const CA_VARS: [&str; 2] = ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"];

/// google-auth refreshes the refresh token `refresh_token` of the client `client_id` /
/// `client_secret` at `token_uri`, then GETs `api` with the access token it got. Returns
/// `{token, expiry (ISO 8601, naive UTC, or null), refresh_token, status, body, headers:
/// {name: value}}` (the API's response), or `{error: "<exception class>: <message>"}` when
/// the refresh or the call failed.
pub async fn google(
    token_uri: &str,
    client: (&str, &str),
    refresh_token: &str,
    api: &str,
    env: &[(&str, &str)],
) -> Value {
    refresh_then_call(
        ("google", "--token-uri"),
        token_uri,
        client,
        refresh_token,
        api,
        env,
    )
    .await
}

/// Authlib's `OAuth2Session`, holding an expired access token and the refresh token
/// `refresh_token` of the client `client_id` / `client_secret` (authenticated with HTTP
/// Basic, Authlib's default), GETs `api`: it refreshes at `token_endpoint` first, then sends
/// the access token it got. Returns `{token, refresh_token, token_type, expires_in,
/// expires_at, status, body, headers: {name: value}}` (`token` is `"stale"` if it never
/// refreshed), or `{error: "<exception class>: <message>"}`.
pub async fn authlib(
    token_endpoint: &str,
    client: (&str, &str),
    refresh_token: &str,
    api: &str,
    env: &[(&str, &str)],
) -> Value {
    let sdk = ("authlib", "--token-endpoint");
    refresh_then_call(sdk, token_endpoint, client, refresh_token, api, env).await
}

/// [`google`] or [`authlib`]: `(subcommand, the flag of its token URL)`.
async fn refresh_then_call(
    (sdk, token_flag): (&str, &str),
    token_url: &str,
    (client_id, client_secret): (&str, &str),
    refresh_token: &str,
    api: &str,
    env: &[(&str, &str)],
) -> Value {
    let args = [
        token_flag,
        token_url,
        "--client-id",
        client_id,
        "--client-secret",
        client_secret,
        "--refresh-token",
        refresh_token,
        "--api",
        api,
    ];
    run(sdk, &args, env).await
}

/// `python3 tests/py/oauth_sdk.py <sdk> <args>` with the route of `env` (more arguments
/// than [`google`] and [`authlib`] pass, e.g. `--auth-method client_secret_post`): its one
/// JSON line.
pub async fn run(sdk: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = vec![sdk];
    all.extend_from_slice(args);
    // The script's own timeouts first (the refresh, google-auth's retries of it, the call),
    // so a stuck request reports an error line rather than a harness timeout.
    let limit = Duration::from_secs(3 * REQUEST_TIMEOUT_SECS) + WAIT;
    let out = run_script_with("oauth_sdk.py", &all, None, limit, |command| {
        for var in CA_VARS {
            command.env_remove(var);
        }
        route_env(command, env);
    })
    .await;
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("oauth_sdk.py {all:?} printed {out:?}: {e}"))
}
