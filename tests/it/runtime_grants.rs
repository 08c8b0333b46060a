//! Grants of runtime connections: a connector type whose `templates:` entry says
//! `grants: per_user` makes every instance per-user (grants imported and chosen per
//! request), and a single-grant authorization-code instance is seeded with the tokens Fides
//! keeps in its secrets (`PATCH …/secret` with `access_token`, `refresh_token`,
//! `expires_at`), which never join the definition's secrets.

use crate::runtime::{call, STORE};
use crate::support::logs::Logs;
use crate::support::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;

/// An authorization-code connector type whose upstream and token endpoint come from the
/// instance's secrets.
const TEMPLATE: &str = r#"saas_config:
  fides_key: user_api
  name: User API
  type: user_api
  description: an authorization-code connector type for tests
  version: 0.0.1
  connector_params:
    - name: host
    - name: token_host
    - name: client_id
    - name: client_secret
    - name: redirect_uri
      default_value: https://app.example/api/v1/oauth/callback
  client_config:
    protocol: http
    host: <host>
    authentication:
      strategy: oauth2_authorization_code
      configuration:
        authorization_request:
          method: GET
          path: /authorize
          client_config: { protocol: https, host: idp.example }
          query_params:
            - { name: client_id, value: <client_id> }
            - { name: redirect_uri, value: <redirect_uri> }
            - { name: response_type, value: code }
            - { name: state, value: <state> }
        token_request:
          method: POST
          path: /oauth/token
          client_config: { protocol: http, host: <token_host> }
          headers: [{ name: Content-Type, value: application/x-www-form-urlencoded }]
          body: '{"grant_type": "authorization_code", "code": "<code>", "client_id": "<client_id>", "client_secret": "<client_secret>", "redirect_uri": "<redirect_uri>"}'
        refresh_request:
          method: POST
          path: /oauth/token
          client_config: { protocol: http, host: <token_host> }
          headers: [{ name: Content-Type, value: application/x-www-form-urlencoded }]
          body: '{"grant_type": "refresh_token", "refresh_token": "<refresh_token>", "client_id": "<client_id>", "client_secret": "<client_secret>"}'
  endpoints: []
  test_request: { method: GET, path: /ping }
"#;

/// The config on the store section `store`: the connector type twice — `user_api` (one
/// grant per instance) and `people_api` (`grants: per_user`, at most 2 token requests at
/// once).
fn config(dir: &Path, store: &str) -> String {
    for (folder, kind) in [("single", "user_api"), ("per_user", "people_api")] {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        let text = TEMPLATE.replace("type: user_api", &format!("type: {kind}"));
        std::fs::write(dir.join(folder).join(format!("{kind}.yml")), text).unwrap();
    }
    format!(
        "{store}templates:\n  - {{ path: single, allow_private_network: true }}\n  - {{ path: per_user, allow_private_network: true, grants: per_user, max_concurrent_token_requests: 2 }}\n"
    )
}

/// `PATCH /api/v1/connection/{key}/secret?verify=false` with `body` → (status, JSON).
async fn patch_secret(sc: &Sidecar, key: &str, body: &Value) -> (u16, Value) {
    let path = format!("/api/v1/connection/{key}/secret?verify=false");
    call(sc, "PATCH", &path, Some(body)).await
}

/// Instantiates `kind` as `key`, reaching `echo` with tokens from `token`.
async fn instantiate(sc: &Sidecar, kind: &str, key: &str, echo: SocketAddr, token: SocketAddr) {
    let body = json!({"instance_key": key, "secrets": {
        "host": echo.to_string(), "token_host": token.to_string(),
        "client_id": "the-client", "client_secret": CLIENT_SECRET}});
    let path = format!("/api/v1/connection/instantiate/{kind}");
    let (status, answer) = call(sc, "POST", &path, Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// `GET /{key}/x` through the proxy, as `subject` if given → (status, body).
async fn proxied(sc: &Sidecar, key: &str, subject: Option<&str>) -> (u16, Value) {
    let mut req = client().get(sc.url(&format!("/{key}/x")));
    if let Some(subject) = subject {
        req = req.header("tokenwarden-subject", subject);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_instance_of_a_per_user_type_holds_a_grant_per_user() {
    per_user_instances(STORE).await;
}

#[tokio::test]
async fn every_instance_of_a_per_user_type_holds_a_grant_per_user_in_redis() {
    let redis = crate::support::redis::RedisServer::start().await;
    let store =
        crate::support::redis::redis_store(&redis, crate::shared_store::STORE_KEY, "5s", "500ms");
    per_user_instances(&store).await;
}

pub(crate) async fn per_user_instances(store: &str) {
    let (echo, tokens) = (
        Echo::start().await,
        TokenServer::start(Reply::token(3600, true)).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(dir.path(), store);
    let sc = Sidecar::start_in(dir, &yaml, Default::default()).await;
    instantiate(&sc, "people_api", "acme", echo.addr, tokens.addr).await;

    let status = sc.status("acme").await;
    assert_eq!(status["state"], "per_user", "{status}");
    assert_eq!(status["grants"]["max_concurrent_token_requests"], 2);
    assert_eq!(status["grants"]["stored"]["total"], 0, "{status}");

    for (subject, token) in [("alice", "alice-token"), ("bob", "bob-token")] {
        let path = format!("/api/v1/connection/acme/grants/{subject}");
        let body = json!({"access_token": token, "expires_in": 3600});
        let (status, answer) = call(&sc, "PUT", &path, Some(&body)).await;
        assert_eq!(status, 201, "{answer}");
        assert!(!answer.to_string().contains(token), "{answer}");
    }
    for (subject, token) in [("alice", "alice-token"), ("bob", "bob-token")] {
        let (status, body) = proxied(&sc, "acme", Some(subject)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            echoed_authorization(&body).as_deref(),
            Some(format!("Bearer {token}").as_str())
        );
    }
    let (status, body) = proxied(&sc, "acme", None).await;
    assert_eq!(status, 400, "{body}");
    let status = sc.status("acme").await;
    assert_eq!(status["grants"]["stored"]["total"], 2, "{status}");
    assert_eq!(status["grants"]["in_memory"]["ready"], 2, "{status}");
    assert_eq!(
        tokens.count(),
        0,
        "imported access tokens need no token request"
    );

    // Deleting the connection deletes its grants: a new instance under the same key
    // starts with none.
    let (status, answer) = call(&sc, "DELETE", "/api/v1/connection/acme", None).await;
    assert_eq!(status, 204, "{answer}");
    instantiate(&sc, "people_api", "acme", echo.addr, tokens.addr).await;
    let (status, body) = proxied(&sc, "acme", Some("alice")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["subject"], "alice", "{body}");
}

#[tokio::test]
async fn the_tokens_fides_keeps_in_secrets_seed_a_single_grant() {
    let (echo, tokens) = (
        Echo::start().await,
        TokenServer::start(Reply::token(3600, true)).await,
    );
    let (logs, _capture) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(dir.path(), STORE);
    let sc = Sidecar::start_in(dir, &yaml, Default::default()).await;
    instantiate(&sc, "user_api", "crm", echo.addr, tokens.addr).await;
    instantiate(&sc, "people_api", "people", echo.addr, tokens.addr).await;
    sc.wait_state("crm", "needs_authorization").await;

    // Seeded: the access token is injected, no token request made, and the secrets keep
    // no token.
    let expires_at = unix_now() + 3600;
    let seed = json!({"access_token": "seeded-access", "refresh_token": "seeded-refresh", "expires_at": expires_at});
    let (status, answer) = patch_secret(&sc, "crm", &seed).await;
    assert_eq!(status, 200, "{answer}");
    let status = sc.wait_state("crm", "ready").await;
    assert_eq!(status["has_refresh_token"], true, "{status}");
    assert_eq!(status["expires_at"], expires_at, "{status}");
    let (status, body) = proxied(&sc, "crm", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        echoed_authorization(&body).as_deref(),
        Some("Bearer seeded-access")
    );
    assert_eq!(tokens.count(), 0);
    let (_, listed) = call(&sc, "GET", "/api/v1/connection/crm", None).await;
    assert!(!listed.to_string().contains("seeded-"), "{listed}");

    // A refresh token alone is refreshed at once, with the connection's refresh_request.
    let seed = json!({"refresh_token": "only-refresh"});
    let (status, answer) = patch_secret(&sc, "crm", &seed).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        tokens.nth(1).await.field("refresh_token").as_deref(),
        Some("only-refresh")
    );
    let (_, body) = proxied(&sc, "crm", None).await;
    assert_eq!(echoed_authorization(&body).as_deref(), Some("Bearer tok-1"));

    // Refused, naming the field: a wrong type, and a per-user connection (whose grants are
    // imported one by one).
    let (status, answer) = patch_secret(
        &sc,
        "crm",
        &json!({"expires_at": "soon", "access_token": "x"}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["detail"][0]["loc"],
        json!(["body", "expires_at"]),
        "{answer}"
    );
    let (status, answer) = patch_secret(&sc, "people", &json!({"access_token": "x"})).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.to_string().contains("grants/{subject}"), "{answer}");

    // Audited without a token.
    assert!(
        logs.text().contains("seed token"),
        "no audit line for the seed"
    );
    logs.assert_free_of(&[
        ("access token", "seeded-access"),
        ("refresh token", "seeded-refresh"),
        ("refresh token", "only-refresh"),
    ]);
}
