//! The static Fides strategies (FIDES-BEHAVIOUR.md §1.5, §5.5) through the proxy, so one
//! sidecar serves every connector: `bearer`, `basic` (with and without a password) and
//! `api_key` (headers; query parameters set or replaced; a body merged into the JSON body).

use crate::support::*;
use serde_json::Value;

/// A connection to the echo server with a static Fides strategy.
fn static_connection(
    key: &str,
    echo: &Echo,
    strategy: &str,
    configuration: &str,
    secrets: &str,
) -> Conn {
    Conn::new(key, echo.addr, strategy)
        .secrets(secrets)
        .configure(configuration)
}

#[tokio::test]
async fn bearer_basic_and_api_key_headers_are_injected() {
    let echo = Echo::start().await;
    let conns = [
        static_connection(
            "bearer",
            &echo,
            "bearer",
            "          token: \"<api_token>\"\n",
            "api_token: imnotasecretitsok",
        ),
        static_connection(
            "basic",
            &echo,
            "basic",
            "          username: \"<username>\"\n          password: \"<password>\"\n",
            "username: admin, password: sufficientlylongpassword",
        ),
        static_connection(
            "user_only",
            &echo,
            "basic",
            "          username: \"<username>\"\n",
            "username: admin",
        ),
        static_connection(
            "header_key",
            &echo,
            "api_key",
            "          headers:\n            - { name: X-Api-Key, value: \"<api_key>\" }\n",
            "api_key: k3y",
        ),
    ];
    let sidecar = Sidecar::start(&connections(&conns)).await;
    for (key, header, value) in [
        ("bearer", "authorization", "Bearer imnotasecretitsok"),
        (
            "basic",
            "authorization",
            "Basic YWRtaW46c3VmZmljaWVudGx5bG9uZ3Bhc3N3b3Jk",
        ),
        ("user_only", "authorization", "Basic YWRtaW46"),
        ("header_key", "x-api-key", "k3y"),
    ] {
        let r = client()
            .get(sidecar.url(&format!("/{key}/v1/me")))
            .header("authorization", "Bearer from-the-app")
            .header("x-api-key", "from-the-app")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{key}");
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(echoed(&body, header), [value], "{key}");
        assert_eq!(body["target"], "/v1/me");
    }
}

#[tokio::test]
async fn api_key_query_params_are_set_or_replaced() {
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&connections(&[static_connection(
        "q",
        &echo,
        "api_key",
        "          query_params:\n            - { name: token, value: \"<api_key>\" }\n",
        "api_key: \"k3y/+=\"",
    )]))
    .await;
    for (path, target) in [
        ("/v1/x", "/v1/x?token=k3y%2F%2B%3D"),
        ("/v1/x?a=1", "/v1/x?a=1&token=k3y%2F%2B%3D"),
        (
            "/v1/x?a=1&token=old&b=two+words",
            "/v1/x?a=1&token=k3y%2F%2B%3D&b=two+words",
        ),
    ] {
        let (code, body) = sidecar.get(&format!("/q{path}")).await;
        assert_eq!(code, 200);
        assert_eq!(body["target"], target, "{path}");
    }
}

#[tokio::test]
async fn api_key_body_is_merged_into_the_json_body() {
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&connections(&[static_connection(
        "b",
        &echo,
        "api_key",
        "          body: '{\"api_key\": \"<api_key>\", \"nested\": {\"n\": 1}}'\n",
        "api_key: k3y",
    )]))
    .await;
    let r = client()
        .post(sidecar.url("/b/v1/orders"))
        .header("content-type", "application/json")
        .body(r#"{"order": 7, "api_key": "from-the-app"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    // The bytes Python's json.dumps writes: ", " and ": ", the app's keys first.
    assert_eq!(
        body["body"],
        r#"{"order": 7, "api_key": "k3y", "nested": {"n": 1}}"#
    );
    assert_eq!(echoed(&body, "content-type"), ["application/json"]);
    let len = body["body"].as_str().unwrap().len().to_string();
    assert_eq!(echoed(&body, "content-length"), [len.as_str()]);
}
