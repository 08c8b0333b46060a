//! Against a real authorization server: panva's oidc-provider (tests/oidc/server.mjs),
//! with PKCE required, rotating refresh tokens (reuse revokes the whole grant) and a
//! 3-second access-token lifetime. A user authorizes once through the provider's login and
//! consent pages; then the sidecar keeps every proxied request to the provider's userinfo
//! endpoint (`/me`, which checks the token) succeeding across several refreshes and a
//! restart on the same store, with no second login.
//!
//! Needs Node.js and `npm ci --prefix tests/oidc`; without them these tests fail.
//!
//! The two refresh-and-restart runs (about 15 s each, most of it waiting for the provider's
//! access tokens to expire) are in the soak tier: ignored by plain `cargo test`, run by
//! `cargo test -- --include-ignored` (README, `.ci/run`).

use crate::support::authz::{authorize, callback};
use crate::support::oidc::{login, stat, Provider};
use crate::support::*;
use std::time::Duration;
use tokenwarden::app::Options;

/// Access-token lifetime at the provider, in seconds.
const ACCESS_TTL: u64 = 3;
/// Where the provider sends the browser: the sidecar's public URL + the callback route.
pub const PUBLIC_URL: &str = "https://tokenwarden.test";
pub const REDIRECT_URI: &str = "https://tokenwarden.test/api/v1/oauth/callback";
/// Proxied requests are sent this often…
const REQUEST_EVERY: Duration = Duration::from_millis(100);
/// …until the provider has seen this many more refresh grants (at ~1.4 s each).
const REFRESHES_PER_PHASE: u64 = 3;
pub const KEY: &str = "idp";
const STORE_KEY: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

/// The registered clients of server.mjs.
pub struct Client {
    id: &'static str,
    secret: &'static str,
    /// The connection's `client_auth` (None: as the Fides templates say, i.e. in the body).
    client_auth: Option<&'static str>,
    /// The method oidc-provider must see (its /__stats `auth_methods` key).
    method: &'static str,
}

pub const CS_POST: Client = Client {
    id: "cs-post",
    secret: "post-secret",
    client_auth: None,
    method: "client_secret_post",
};

const CS_BASIC: Client = Client {
    id: "cs-basic",
    secret: "s3cr:et%+/=&x",
    client_auth: Some("client_secret_basic"),
    method: "client_secret_basic",
};

/// A Fides-style inline config for the provider: `prompt=consent` and `offline_access` so
/// it issues refresh tokens; form bodies; the client's secret in the body for
/// client_secret_post, or only in the Basic header (`client_auth`) for client_secret_basic.
fn config(provider: &Provider, c: &Client, client_auth: Option<&str>) -> String {
    format!(
        r#"admin:
  listen: 127.0.0.1:0
  public_url: {PUBLIC_URL}
store:
  path: tokens.db
  key: "{STORE_KEY}"
{}"#,
        connection(provider, c, client_auth)
    )
}

/// The `connections:` section of [`config`]: connection [`KEY`] to the provider.
pub fn connection(provider: &Provider, c: &Client, client_auth: Option<&str>) -> String {
    let host = provider.authority();
    let issuer = &provider.issuer;
    let (id, secret) = (c.id, c.secret);
    let in_body = if client_auth.is_none() {
        r#", "client_id": "<client_id>", "client_secret": "<client_secret>""#
    } else {
        ""
    };
    let client_auth = client_auth
        .map(|a| format!("    client_auth: {a}\n"))
        .unwrap_or_default();
    format!(
        r#"connections:
  - key: {KEY}
    pkce: true
    issuer: "{issuer}"
{client_auth}    secrets: {{ client_id: {id}, client_secret: "{secret}" }}
    client_config:
      protocol: http
      host: "{host}"
      authentication:
        strategy: oauth2_authorization_code
        configuration:
          authorization_request:
            method: GET
            path: /auth
            query_params:
              - {{ name: client_id, value: <client_id> }}
              - {{ name: redirect_uri, value: <redirect_uri> }}
              - {{ name: response_type, value: code }}
              - {{ name: scope, value: "openid offline_access api:read" }}
              - {{ name: state, value: <state> }}
              - {{ name: prompt, value: consent }}
          token_request:
            method: POST
            path: /token
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "authorization_code", "code": "<code>", "redirect_uri": "<redirect_uri>"{in_body}}}'
          refresh_request:
            method: POST
            path: /token
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "refresh_token", "refresh_token": "<refresh_token>"{in_body}}}'
"#
    )
}

/// `names` as `tokenwarden run` processes (in `dir`) on the `store:` section `store` and
/// one authorization-code connection [`KEY`] at `provider`, authorized once as alice: the
/// state minted on the first, the provider's redirect delivered to the second (any replica
/// redeems). Returns once every one is ready.
pub async fn replicas_on_one_grant(
    dir: &std::path::Path,
    names: &[&str],
    store: &str,
    provider: &Provider,
) -> Vec<crate::support::process::SidecarProcess> {
    let admin_extra = format!("  public_url: {PUBLIC_URL}\n");
    let body = format!("{store}{}", connection(provider, &CS_POST, None));
    let mut replicas = Vec::new();
    for name in names {
        replicas.push(
            crate::support::process::SidecarProcess::spawn(dir, name, &admin_extra, &body).await,
        );
    }
    let auth = crate::support::authz::authorize_at(replicas[0].admin, KEY).await;
    let back = crate::support::oidc::login(provider, &auth.url, "alice").await;
    let page = crate::support::authz::callback_at(replicas[1].admin, back.query().unwrap()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for r in &replicas {
        wait_state_at(r.admin, KEY, "ready").await;
    }
    replicas
}

/// authorize → the provider's login and consent → the sidecar's callback. Returns the page.
async fn authorize_through_the_provider(sc: &Sidecar, provider: &Provider) -> authz::Page {
    let a = authorize(sc, KEY).await;
    assert!(
        a.url.starts_with(&format!("{}/auth?", provider.issuer)),
        "{}",
        a.url
    );
    assert_eq!(a.param("code_challenge_method"), Some("S256"));
    assert_eq!(a.param("redirect_uri"), Some(REDIRECT_URI));
    let back = login(provider, &a.url, "alice").await;
    // The browser lands on the public URL; the test plays the ingress that forwards it.
    assert_eq!(
        back.as_str().split('?').next(),
        Some(REDIRECT_URI),
        "{back}"
    );
    let pairs: Vec<(String, String)> = back.query_pairs().into_owned().collect();
    let get = |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(get("state"), Some(a.state.as_str()));
    assert_eq!(get("iss"), Some(provider.issuer.as_str()), "RFC 9207 iss");
    assert!(get("code").is_some(), "{back}");
    callback(sc, back.query().unwrap()).await
}

/// `GET /{KEY}/me` through the proxy until the provider has seen `refreshes` more refresh
/// grants; every request must reach `/me` with a valid token. Returns how many were sent.
async fn keep_calling_me(sc: &Sidecar, provider: &Provider, refreshes: u64) -> usize {
    let target = stat(&provider.stats().await, "grants", "refresh_token") + refreshes;
    // Generous: at ACCESS_TTL = 3 a refresh comes every ~1.4 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3 * refreshes + 5);
    let mut sent = 0;
    loop {
        let r = client()
            .get(sc.url(&format!("/{KEY}/me")))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        sent += 1;
        assert_eq!(
            status,
            200,
            "proxied request #{sent} to /me failed: {body}; status {}",
            sc.status(KEY).await
        );
        let me: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(me["sub"], "alice", "{body}");
        if stat(&provider.stats().await, "grants", "refresh_token") >= target {
            return sent;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} refresh grants after {sent} requests; status {}",
            stat(&provider.stats().await, "grants", "refresh_token"),
            sc.status(KEY).await
        );
        tokio::time::sleep(REQUEST_EVERY).await;
    }
}

/// The scenario of issue 3 §8 for one client: authorize once in the "browser", keep
/// proxying across several refreshes, restart on the same store, keep going.
async fn authorize_once_then_refresh_and_restart(c: &Client) {
    let provider = Provider::start(REDIRECT_URI, ACCESS_TTL).await;
    let yaml = config(&provider, c, c.client_auth);
    let sc = Sidecar::start(&yaml).await;
    let (status, body) = get_json(&sc.url(&format!("/{KEY}/me"))).await;
    assert_eq!(status, 503, "{body}");

    let page = authorize_through_the_provider(&sc, &provider).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let st = sc.wait_state(KEY, "ready").await;
    assert_eq!(
        st["has_refresh_token"], true,
        "offline_access granted: {st}"
    );
    let stats = provider.stats().await;
    assert_eq!(stat(&stats, "grants", "authorization_code"), 1, "{stats}");

    let sent = keep_calling_me(&sc, &provider, REFRESHES_PER_PHASE).await;
    assert!(sent >= 10, "{sent}");

    // Restart on the same store, down long enough for the last access token to expire at
    // the provider: no login; the refresher renews with the stored (rotated) refresh token.
    let dir = sc.stop().await;
    tokio::time::sleep(Duration::from_secs(ACCESS_TTL)).await;
    let sc = Sidecar::start_in(dir, &yaml, Options::default()).await;
    sc.wait_state(KEY, "ready").await;
    keep_calling_me(&sc, &provider, REFRESHES_PER_PHASE).await;

    let stats = provider.stats().await;
    assert_eq!(
        stat(&stats, "grants", "authorization_code"),
        1,
        "one login only: {stats}"
    );
    assert!(
        stat(&stats, "grants", "refresh_token") >= 2 * REFRESHES_PER_PHASE,
        "{stats}"
    );
    // A reused (rotated-out) refresh token would have revoked the grant: none was.
    assert_eq!(stats["errors"], serde_json::json!({}), "{stats}");
    let methods = stats["auth_methods"].as_object().unwrap();
    assert_eq!(
        methods.keys().collect::<Vec<_>>(),
        [c.method],
        "every token request authenticated with {}: {stats}",
        c.method
    );
    assert_eq!(
        stat(&stats, "auth_methods", c.method),
        stats["token_requests"].as_u64().unwrap()
    );
    sc.stop().await;
}

#[tokio::test]
#[ignore = "soak: about 15 s of refresh cycles and a restart; run with --include-ignored"]
async fn client_secret_post_authorize_once_refresh_and_restart() {
    authorize_once_then_refresh_and_restart(&CS_POST).await;
}

/// The secret `s3cr:et%+/=&x` is form-encoded before base64 (RFC 6749 §2.3.1); the
/// unencoded variant, for providers that do not decode, is refused by this one.
#[tokio::test]
#[ignore = "soak: about 15 s of refresh cycles and a restart; run with --include-ignored"]
async fn client_secret_basic_encodes_the_credentials() {
    authorize_once_then_refresh_and_restart(&CS_BASIC).await;

    let provider = Provider::start(REDIRECT_URI, ACCESS_TTL).await;
    let sc = Sidecar::start(&config(
        &provider,
        &CS_BASIC,
        Some("client_secret_basic_unencoded"),
    ))
    .await;
    let page = authorize_through_the_provider(&sc, &provider).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("invalid_request"), "{}", page.body);
    assert!(!page.body.contains(CS_BASIC.secret), "{}", page.body);
    assert_eq!(sc.status(KEY).await["state"], "needs_authorization");
    let stats = provider.stats().await;
    assert_eq!(stat(&stats, "auth_methods", "client_secret_basic"), 1);
}

/// A mix-up defence check against the real provider: with a different `issuer:` on the
/// connection, the provider's genuine `iss` is refused and no token request is made.
#[tokio::test]
async fn an_unexpected_issuer_is_refused_without_a_token_request() {
    let provider = Provider::start(REDIRECT_URI, ACCESS_TTL).await;
    let yaml = config(&provider, &CS_POST, None).replace(
        &format!("issuer: \"{}\"", provider.issuer),
        "issuer: \"https://other-issuer.example\"",
    );
    let sc = Sidecar::start(&yaml).await;
    let page = authorize_through_the_provider(&sc, &provider).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(provider.stats().await["token_requests"], 0);
    assert_eq!(sc.status(KEY).await["state"], "needs_authorization");
}
