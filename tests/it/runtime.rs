//! Connections at runtime through Fides' connection API: created from a template, served,
//! listed, their secrets replaced and merged (with `?verify=true`), deleted; kept across a
//! restart with their tokens; every bad request refused with its field and nothing
//! half-created; writes for trusted callers only, audited without a secret.

use crate::support::logs::Logs;
use crate::support::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;

pub(crate) const STORE: &str =
    "store: { path: state/tokens.db, key: \"CgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo=\" }\n";

/// A client-credentials connector type whose upstream and token endpoint come from the
/// instance's secrets (`host`, `token_host`), as Auth0's `domain` does.
const TEMPLATE: &str = r#"saas_config:
  fides_key: <instance_fides_key>
  name: Test API
  type: test_api
  description: a connector type for tests
  version: 0.0.1
  connector_params:
    - name: host
    - name: token_host
    - name: client_id
    - name: client_secret
    - name: audience
      default_value: https://api.test/
  client_config:
    protocol: http
    host: <host>
    authentication:
      strategy: oauth2_client_credentials
      configuration:
        token_request:
          method: POST
          path: /oauth/token
          client_config: { protocol: http, host: <token_host> }
          headers: [{ name: Content-Type, value: application/x-www-form-urlencoded }]
          body: '{"grant_type": "client_credentials", "client_id": "<client_id>", "client_secret": "<client_secret>", "audience": "<audience>"}'
  endpoints: []
  test_request: { method: GET, path: /ping }
"#;

/// The config: templates in `templates/` (private addresses allowed: the tests' servers
/// are on loopback) and `strict/` (not allowed), one file connection `from_file` (a static
/// bearer token: it asks the token endpoint for nothing), and the
/// `store` section.
pub(crate) fn config(dir: &Path, echo: SocketAddr, store: &str) -> String {
    for (folder, kind) in [("templates", "test_api"), ("strict", "strict_api")] {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        let text = TEMPLATE.replace("type: test_api", &format!("type: {kind}"));
        std::fs::write(dir.join(folder).join(format!("{kind}.yml")), text).unwrap();
    }
    format!(
        "{store}templates:\n  - {{ path: templates, allow_private_network: true }}\n  - {{ path: strict/strict_api.yml }}\n{}",
        connections(&[Conn::new("from_file", echo, "bearer")
            .secrets("api_token: file-static")
            .configure("          token: <api_token>\n")])
    )
}

/// The secrets of an instance reaching `echo` with tokens from `token`.
pub(crate) fn secrets(echo: SocketAddr, token: SocketAddr, client_id: &str) -> Value {
    json!({"host": echo.to_string(), "token_host": token.to_string(),
           "client_id": client_id, "client_secret": CLIENT_SECRET})
}

/// Sends `method path` with a JSON `body` to the admin listener → (status, JSON or Null).
pub(crate) async fn call(
    sc: &Sidecar,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), sc.admin_url(path));
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn instantiate(sc: &Sidecar, kind: &str, body: &Value) -> (u16, Value) {
    let path = format!("/api/v1/connection/instantiate/{kind}");
    call(sc, "POST", &path, Some(body)).await
}

/// The keys `GET /api/v1/connection` lists.
async fn listed(sc: &Sidecar) -> Vec<String> {
    let (status, page) = call(sc, "GET", "/api/v1/connection?size=1000", None).await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    items
        .iter()
        .map(|c| c["key"].as_str().unwrap().to_owned())
        .collect()
}

/// A sidecar on [`config`] with the embedded store → it and its config text (to restart with).
async fn start(echo: SocketAddr) -> (Sidecar, String) {
    start_on(echo, STORE).await
}

/// [`start`] on the store section `store`.
async fn start_on(echo: SocketAddr, store: &str) -> (Sidecar, String) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(dir.path(), echo, store);
    let sidecar = Sidecar::start_in(dir, &yaml, Default::default()).await;
    (sidecar, yaml)
}

/// Waits until `sc` answers `status` for `GET /{key}/x` through its proxy; its body.
async fn wait_proxied(sc: &Sidecar, key: &str, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (got, body) = sc.get(&format!("/{key}/x")).await;
        if got == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/{key}/x never answered {status}; last {got} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_connection_instantiated_through_the_api_is_served_listed_and_survives_a_restart() {
    let (echo, tokens) = (
        Echo::start().await,
        TokenServer::start(Reply::token(3600, false)).await,
    );
    let (logs, _capture) = Logs::capture();
    let (sc, yaml) = start(echo.addr).await;

    let (status, types) = call(&sc, "GET", "/api/v1/connection_type", None).await;
    assert_eq!(status, 200, "{types}");
    assert_eq!(types["total"], 2);
    let test_api = &types["items"][0];
    assert_eq!(test_api["identifier"], "test_api");
    assert_eq!(test_api["authorization_required"], false);
    assert_eq!(
        test_api["secrets"][4],
        json!({"name": "audience", "default_value": "https://api.test/", "required": false})
    );

    let body = json!({"instance_key": "acme", "name": "Acme", "description": "Acme's account",
                      "secrets": secrets(echo.addr, tokens.addr, "acme-client")});
    let (status, created) = instantiate(&sc, "test_api", &body).await;
    assert_eq!(status, 200, "{created}");
    let connection = &created["connection"];
    assert_eq!(connection["key"], "acme");
    assert_eq!(connection["name"], "Acme");
    assert_eq!(connection["saas_config"]["type"], "test_api");
    assert!(
        !created.to_string().contains(CLIENT_SECRET),
        "the answer shows no secret: {created}"
    );

    sc.wait_state("acme", "ready").await;
    let (status, body) = sc.get("/acme/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed_authorization(&body).as_deref(), Some("Bearer tok-1"));
    let request = tokens.nth(1).await;
    assert_eq!(request.field("client_id").as_deref(), Some("acme-client"));
    assert_eq!(
        request.field("audience").as_deref(),
        Some("https://api.test/")
    );

    let status = sc.status("acme").await;
    assert_eq!(status["saas_config"]["type"], "test_api", "{status}");
    assert_eq!(status["description"], "Acme's account");
    assert_eq!(listed(&sc).await, ["from_file", "acme"]);
    let audit = logs.text();
    assert!(
        audit.contains("tokenwarden::audit") && audit.contains("action=\"create\""),
        "{audit}"
    );
    logs.assert_free_of(&[("client secret", CLIENT_SECRET)]);
    // /metrics labels runtime connections by connector type, file ones by key.
    let metrics = sc.metrics().await;
    assert!(
        metrics.contains(r#"tokenwarden_proxied_requests_total{connector_type="test_api"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"connection="from_file""#), "{metrics}");
    assert!(!metrics.contains(r#"connection="acme""#), "{metrics}");

    // A restart serves it again, with the token it held: no new token request.
    let served = tokens.count();
    let sc = sc.restart(&yaml).await;
    sc.wait_state("acme", "ready").await;
    let (status, body) = sc.get("/acme/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed_authorization(&body).as_deref(), Some("Bearer tok-1"));
    assert_eq!(tokens.count(), served, "the stored token was used");
    assert_eq!(listed(&sc).await, ["from_file", "acme"]);
}

#[tokio::test]
async fn secrets_are_replaced_or_merged_verified_and_restart_the_token() {
    let (echo, tokens) = (
        Echo::start().await,
        TokenServer::start(Reply::token(3600, false)).await,
    );
    let (sc, _) = start(echo.addr).await;
    let body = json!({"instance_key": "acme", "secrets": secrets(echo.addr, tokens.addr, "first")});
    assert_eq!(instantiate(&sc, "test_api", &body).await.0, 200);
    sc.wait_state("acme", "ready").await;
    assert_eq!(
        tokens.nth(1).await.field("client_id").as_deref(),
        Some("first")
    );

    // PATCH merges: only client_id changes; verify runs one token request with it.
    let patch = json!({"client_id": "second"});
    let (status, answer) = call(&sc, "PATCH", "/api/v1/connection/acme/secret", Some(&patch)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["test_status"], "succeeded", "{answer}");
    assert_eq!(
        answer["msg"],
        "Secrets updated for ConnectionConfig with key: acme."
    );
    // The new client's token replaces the old one (the client changed: a new grant).
    sc.wait_status("acme", "a token under the new client", |s| {
        s["state"] == "ready"
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = sc.get("/acme/x").await;
        if echoed_authorization(&body).as_deref() != Some("Bearer tok-1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old token is still sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let clients: Vec<Option<String>> = tokens
        .requests()
        .iter()
        .map(|r| r.field("client_id"))
        .collect();
    assert!(
        clients[1..].iter().all(|c| c.as_deref() == Some("second")),
        "{clients:?}"
    );

    // PUT replaces: without client_secret the connection is invalid, and nothing changes.
    let put = json!({"host": echo.addr.to_string(), "token_host": tokens.addr.to_string(), "client_id": "third"});
    let (status, answer) = call(&sc, "PUT", "/api/v1/connection/acme/secret", Some(&put)).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.to_string().contains("client_secret"), "{answer}");
    // A failing verify is reported as Fides does, and the secrets are kept regardless.
    tokens.set_default(Reply::OAuthError {
        status: 401,
        code: "invalid_client",
    });
    let put = secrets(echo.addr, tokens.addr, "fourth");
    let (status, answer) = call(
        &sc,
        "PUT",
        "/api/v1/connection/acme/secret?verify=true",
        Some(&put),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["test_status"], "failed", "{answer}");
    assert!(
        answer["failure_reason"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{answer}"
    );
    let status = sc.status("acme").await;
    assert_eq!(status["last_test_succeeded"], false, "{status}");
}

#[tokio::test]
async fn a_deleted_connection_is_no_longer_served_nor_back_after_a_restart() {
    let (echo, tokens) = (
        Echo::start().await,
        TokenServer::start(Reply::token(3600, false)).await,
    );
    let (sc, yaml) = start(echo.addr).await;
    let body = json!({"instance_key": "gone", "secrets": secrets(echo.addr, tokens.addr, "c")});
    assert_eq!(instantiate(&sc, "test_api", &body).await.0, 200);
    sc.wait_state("gone", "ready").await;
    let (status, answer) = call(&sc, "DELETE", "/api/v1/connection/gone", None).await;
    assert_eq!(status, 204, "{answer}");
    let (status, _) = sc.get("/gone/x").await;
    assert_eq!(status, 404);
    assert_eq!(
        call(&sc, "DELETE", "/api/v1/connection/gone", None).await.0,
        404
    );
    // The file's connection is read-only here.
    let (status, answer) = call(&sc, "DELETE", "/api/v1/connection/from_file", None).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("config.yaml"),
        "{answer}"
    );
    let sc = sc.restart(&yaml).await;
    assert_eq!(listed(&sc).await, ["from_file"]);
    // Its key is free again.
    assert_eq!(instantiate(&sc, "test_api", &body).await.0, 200);

    // A connection whose template is gone is not served after a restart, but can still be
    // deleted; it does not come back with its template.
    let strict = json!({"instance_key": "orphan", "secrets": {"host": "api.example.com",
        "token_host": "auth.example.com", "client_id": "c", "client_secret": CLIENT_SECRET}});
    assert_eq!(instantiate(&sc, "strict_api", &strict).await.0, 200);
    let without = yaml.replace("  - { path: strict/strict_api.yml }\n", "");
    assert_ne!(without, yaml);
    let sc = sc.restart(&without).await;
    assert_eq!(listed(&sc).await, ["from_file", "gone"]);
    let (status, answer) = call(&sc, "DELETE", "/api/v1/connection/orphan", None).await;
    assert_eq!(status, 204, "{answer}");
    let sc = sc.restart(&yaml).await;
    assert_eq!(listed(&sc).await, ["from_file", "gone"]);
}

#[tokio::test]
async fn bad_requests_name_their_field_and_create_nothing() {
    let (echo, tokens) = (
        Echo::start().await,
        TokenServer::start(Reply::token(3600, false)).await,
    );
    let (sc, yaml) = start(echo.addr).await;
    let good = secrets(echo.addr, tokens.addr, "c");
    let with = |key: &str, secrets: Value| json!({"instance_key": key, "secrets": secrets});
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("client_secret");
    let mut extra = good.clone();
    extra["colour"] = json!("blue");
    let mut private = good.clone();
    private["host"] = json!("10.1.2.3:443");
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        ("unknown type", "nope", with("a", good.clone()), 404, "nope"),
        (
            "missing secret",
            "test_api",
            with("b", missing),
            422,
            "client_secret",
        ),
        ("extra secret", "test_api", with("c", extra), 422, "colour"),
        (
            "key with a slash",
            "test_api",
            with("d/e", good.clone()),
            422,
            "instance_key",
        ),
        (
            "key with a space",
            "test_api",
            json!({"instance_key": "f", "key": "f g", "secrets": good}),
            422,
            "key",
        ),
        (
            "secrets not a mapping",
            "test_api",
            json!({"instance_key": "h", "secrets": [1]}),
            422,
            "secrets",
        ),
        (
            "private host",
            "strict_api",
            with("i", private),
            422,
            "host",
        ),
        (
            "duplicate of a file connection",
            "test_api",
            with("from_file", good.clone()),
            409,
            "config.yaml",
        ),
    ];
    for (what, kind, body, expected, field) in cases {
        let (status, answer) = instantiate(&sc, kind, &body).await;
        assert_eq!(status, expected, "{what}: {answer}");
        assert!(
            answer.to_string().contains(field),
            "{what}: the answer names `{field}`: {answer}"
        );
        assert!(
            !answer.to_string().contains(CLIENT_SECRET),
            "{what}: {answer}"
        );
        assert!(
            !answer.to_string().contains("/templates/"),
            "{what}: no server path: {answer}"
        );
    }
    // Not JSON, and a body of 1 MiB.
    let url = sc.admin_url("/api/v1/connection/instantiate/test_api");
    let r = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"instance_key\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let big = format!(
        "{{\"instance_key\": \"big\", \"secrets\": {{\"client_id\": \"{}\"}}}}",
        "x".repeat(1 << 20)
    );
    let r = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let r = client()
        .post(&url)
        .header("content-type", "text/plain")
        .body(with("p", good.clone()).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // A page of another site cannot create one through the operator's browser.
    let r = client()
        .post(&url)
        .header("content-type", "application/json")
        .header("sec-fetch-site", "cross-site")
        .body(with("q", good.clone()).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // A duplicate runtime key.
    assert_eq!(
        instantiate(&sc, "test_api", &with("twice", good.clone()))
            .await
            .0,
        200
    );
    let (status, answer) = instantiate(&sc, "test_api", &with("twice", good.clone())).await;
    assert_eq!(status, 409, "{answer}");
    // A secret change that would point the connection at a private address is refused
    // too, and changes nothing.
    let mut public = good.clone();
    public["host"] = json!("api.example.com");
    public["token_host"] = json!("auth.example.com");
    assert_eq!(
        instantiate(&sc, "strict_api", &with("strict", public))
            .await
            .0,
        200
    );
    let patch = json!({"host": "169.254.169.254"});
    let (status, answer) = call(
        &sc,
        "PATCH",
        "/api/v1/connection/strict/secret?verify=false",
        Some(&patch),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["detail"][0]["loc"],
        json!(["body", "secrets", "host"]),
        "{answer}"
    );
    let status = sc.status("strict").await;
    assert_eq!(status["upstream"], "http://api.example.com", "{status}");
    // Nothing half-created, now or after a restart.
    assert_eq!(listed(&sc).await, ["from_file", "twice", "strict"]);
    let sc = sc.restart(&yaml).await;
    // (Listed in creation order, to the millisecond: these two may share one.)
    let mut after = listed(&sc).await;
    after[1..].sort();
    assert_eq!(after, ["from_file", "strict", "twice"]);
}

#[tokio::test]
async fn replicas_on_one_redis_serve_change_and_drop_each_others_connections() {
    let redis = crate::support::redis::RedisServer::start().await;
    let store =
        crate::support::redis::redis_store(&redis, crate::shared_store::STORE_KEY, "5s", "500ms");
    let (echo, tokens) = (
        Echo::start().await,
        TokenServer::start(Reply::token(3600, false)).await,
    );
    let (a, _) = start_on(echo.addr, &store).await;
    let (b, _) = start_on(echo.addr, &store).await;

    // Created on A, served on B.
    let body = json!({"instance_key": "acme", "secrets": secrets(echo.addr, tokens.addr, "first")});
    assert_eq!(instantiate(&a, "test_api", &body).await.0, 200);
    let served = wait_proxied(&b, "acme", 200).await;
    assert!(echoed_authorization(&served).is_some(), "{served}");

    // Secrets changed on B: A's next token request uses them.
    let patch = json!({"client_id": "second"});
    let (status, answer) = call(
        &b,
        "PATCH",
        "/api/v1/connection/acme/secret?verify=false",
        Some(&patch),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = a.status("acme").await;
        if !status["updated_at"].is_null() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never saw the change: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Every token A injects from now on was issued to the new client.
    let (_, body) = {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (s, body) = a.get("/acme/x").await;
            let token = echoed_authorization(&body).unwrap_or_default();
            let n: usize = token.trim_start_matches("Bearer tok-").parse().unwrap_or(0);
            let issued_to = (n > 0)
                .then(|| tokens.requests()[n - 1].field("client_id"))
                .flatten();
            if s == 200 && issued_to.as_deref() == Some("second") {
                break (s, body);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "A still sends {token} (issued to {issued_to:?})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    assert!(echoed_authorization(&body).is_some());

    // Deleted on A, refused on B.
    assert_eq!(
        call(&a, "DELETE", "/api/v1/connection/acme", None).await.0,
        204
    );
    wait_proxied(&b, "acme", 404).await;
    assert_eq!(
        call(&b, "GET", "/api/v1/connection/acme", None).await.0,
        404
    );
}

#[tokio::test]
async fn metrics_label_runtime_connections_one_by_one_when_asked() {
    let (echo, tokens) = (
        Echo::start().await,
        TokenServer::start(Reply::token(3600, false)).await,
    );
    let store = format!("admin: {{ metrics_per_connection: true }}\n{STORE}");
    let (sc, _) = start_on(echo.addr, &store).await;
    for key in ["one", "two"] {
        let body = json!({"instance_key": key, "secrets": secrets(echo.addr, tokens.addr, key)});
        assert_eq!(instantiate(&sc, "test_api", &body).await.0, 200);
        sc.wait_state(key, "ready").await;
    }
    let metrics = sc.metrics().await;
    for key in ["one", "two"] {
        let series =
            format!(r#"tokenwarden_connection_state{{connection="{key}",state="ready"}} 1"#);
        assert!(metrics.contains(&series), "{metrics}");
    }
    assert!(!metrics.contains("connector_type="), "{metrics}");
    // The two share their OAuth2 requests (one copy per connector type), not their params.
    let registry = sc.running.as_ref().unwrap().registry.load_full();
    let oauth = |key: &str| match &registry.get(key).unwrap().conn.auth {
        tokenwarden::config::Auth::OAuth2(o) => std::sync::Arc::clone(o),
        _ => panic!("{key} is OAuth2"),
    };
    assert!(std::sync::Arc::ptr_eq(&oauth("one"), &oauth("two")));
    let params = |key: &str| {
        registry
            .get(key)
            .unwrap()
            .conn
            .params
            .get("client_id")
            .cloned()
    };
    assert_eq!(params("one"), Some(json!("one")));
    assert_eq!(params("two"), Some(json!("two")));
    // The entry keeps the definition without its secrets (the store has them).
    let kept = registry.get("one").unwrap().runtime.clone().unwrap();
    assert!(kept.secrets.is_empty(), "{kept:?}");
}

#[tokio::test]
async fn writes_with_the_admin_token_are_audited_as_such_and_a_wrong_one_is_refused() {
    let echo = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let (logs, _capture) = Logs::capture();
    let store = format!("admin: {{ token: \"let-me-in\" }}\n{STORE}");
    let (sc, _) = start_on(echo.addr, &store).await;
    let url = sc.admin_url("/api/v1/connection/instantiate/test_api");
    let body = json!({"instance_key": "acme", "secrets": secrets(echo.addr, tokens.addr, "c")});
    let post = |bearer: &'static str| {
        client()
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {bearer}"))
            .body(body.to_string())
            .send()
    };
    assert_eq!(post("wrong").await.unwrap().status(), 401);
    assert_eq!(post("let-me-in").await.unwrap().status(), 200);
    let text = logs.text();
    let audit = text
        .lines()
        .find(|l| l.contains("tokenwarden::audit"))
        .unwrap_or_default();
    assert!(
        audit.contains(r#"by="admin token""#) && audit.contains("connection=\"acme\""),
        "{text}"
    );
    logs.assert_free_of(&[
        ("client secret", CLIENT_SECRET),
        ("admin token", "let-me-in"),
    ]);
}

/// `${file:}` and `${VAR}` belong to the operator's config file: a connection-API caller who
/// writes one in a secret gets that text sent as it is — never a file of the host (nor an
/// environment variable) read into a token request.
#[tokio::test]
async fn a_file_reference_in_an_api_secret_is_text_never_a_file_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let (echo, tokens) = (
        Echo::start().await,
        TokenServer::start(Reply::token(3600, false)).await,
    );
    let (sc, _) = start(echo.addr).await;
    // A file tokenwarden could read (mode 600, its own): what an attacker would be after.
    let target = sc.dir.path().join("host-secret");
    std::fs::write(&target, "HOST-ONLY-SECRET").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let reference = format!("${{file:{}}}", target.display());
    let mut secrets = secrets(echo.addr, tokens.addr, "acme-client");
    secrets["client_secret"] = json!(reference);
    secrets["audience"] = json!("${HOME}");
    let body = json!({"instance_key": "acme", "name": "Acme", "secrets": secrets});
    let (status, created) = instantiate(&sc, "test_api", &body).await;
    assert_eq!(status, 200, "{created}");
    sc.wait_state("acme", "ready").await;
    let request = tokens.nth(1).await;
    assert_eq!(request.field("client_secret"), Some(reference));
    assert_eq!(request.field("audience").as_deref(), Some("${HOME}"));
    assert!(!String::from_utf8_lossy(&request.body).contains("HOST-ONLY-SECRET"));
}
