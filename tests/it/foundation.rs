//! The foundation: token injection, header hygiene, refresh, failures, status, streaming.

use crate::support::*;

#[tokio::test]
async fn injects_the_token_and_replaces_the_apps_authorization() {
    let tokens = TokenServer::start(Reply::Token {
        expires_in: Some(3600),
        refresh: false,
    })
    .await;
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&format!(
        "connections:\n{}",
        cc_connection("api", echo.addr, tokens.addr, "")
    ))
    .await;
    sidecar.wait_state("api", "ready").await;
    let r = client()
        .get(sidecar.url("/api/v1/things?a=1&b=%2F+x"))
        .header("authorization", "Bearer from-the-app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["target"], "/v1/things?a=1&b=%2F+x");
    let auth: Vec<&serde_json::Value> = body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "authorization")
        .collect();
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0][1], "Bearer tok-1");
}
