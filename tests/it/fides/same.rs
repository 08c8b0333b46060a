//! Fides' own test cases (FIDES-BEHAVIOUR.md §5.1–5.3) where tokenwarden behaves the same.

use super::*;
use crate::support::authz::authorize_with;
use crate::support::*;

/// §5.2 case 8 (and 10–11: the referer plays no part in the URL).
#[tokio::test]
async fn authorization_url_of_the_test_fixture() {
    let expected = "https://localhost/auth/authorize?client_id=client&redirect_uri=https%3A%2F%2Flocalhost%2Fcallback&response_type=code&scope=admin.read+admin.write&state=unique_value";
    let key = "oauth2_authorization_code_connector";
    let unused = "127.0.0.1:9".parse().unwrap();
    let fixture = fixture_authcode(key, "localhost", Some(unused), true).protocol("https");
    let sidecar = Sidecar::start(&connections(&[fixture])).await;
    let url = authorization_url_with_state(&sidecar, key, "unique_value");
    assert_eq!(url, expected);
    let r = client()
        .get(sidecar.admin_url(&format!("/api/v1/connection/{key}/authorize")))
        .header("referer", "http://test.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        body.starts_with('"'),
        "a JSON string, as Fides answers: {body}"
    );
    let route_url: String = serde_json::from_str(&body).unwrap();
    let (head, state) = route_url.rsplit_once("&state=").unwrap();
    assert_eq!(format!("{head}&state=unique_value"), expected);
    assert!(state.len() >= 43 && state != "unique_value");
}

/// §5.2 cases 2–3 (no token yet: the request is refused and the authorize route named),
/// §5.1's token request byte for byte, and case 12 (the response's tokens and TTL stored).
#[tokio::test]
async fn code_exchange_of_the_test_fixture() {
    let key = "oauth2_authorization_code_connector";
    let (tokens, echo, sidecar) = start_fixture(key, Reply::token(7200, true), true).await;
    let (status, body) = sidecar.get(&format!("/{key}/v1/x")).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "no_token");
    assert_eq!(
        body["authorize"],
        format!("/api/v1/connection/{key}/authorize")
    );
    assert_eq!(echo.hits(), 0);

    authorize_with(&sidecar, key, "auth_code").await;
    let sent = &tokens.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(
        sent.path_and_query,
        "/oauth/token?client_id=client&client_secret=secret&grant_type=authorization_code&code=auth_code&redirect_uri=https%3A%2F%2Flocalhost%2Fcallback"
    );
    assert_eq!(
        sent.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(sent.header("content-length"), Some("0"));
    assert!(sent.body.is_empty());

    let status = sidecar.wait_state(key, "ready").await;
    assert!((7195..=7200).contains(&lifetime_left(&status)), "{status}");
    assert_eq!(status["has_refresh_token"], true);
    let (code, body) = sidecar.get(&format!("/{key}/v1/x")).await;
    assert_eq!(code, 200);
    assert_eq!(echoed(&body, "authorization"), ["Bearer tok-1"]);
}

/// §5.2 case 13 and §5.3 cases 8–9: a configured `expires_in` wins over the response's,
/// and applies when the response has none.
#[tokio::test]
async fn configured_expires_in_wins() {
    let says_60 = TokenServer::start(Reply::token(60, false)).await;
    let says_nothing = TokenServer::start(Reply::token_without_expiry()).await;
    let echo = Echo::start().await;
    let conf = "          expires_in: 3600\n";
    let sidecar = Sidecar::start(&connections(&[
        cc_connection("a", echo.addr, says_60.addr, conf),
        cc_connection("b", echo.addr, says_nothing.addr, conf),
    ]))
    .await;
    for key in ["a", "b"] {
        let status = sidecar.wait_state(key, "ready").await;
        assert!(
            (3595..=3600).contains(&lifetime_left(&status)),
            "{key}: {status}"
        );
    }
}

/// §5.3 case 5 and §3.9: client credentials renews by running `token_request` again, even
/// when the config also has a `refresh_request`.
#[tokio::test]
async fn client_credentials_renews_with_the_token_request() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    tokens.script([Reply::token(2, true)]);
    let echo = Echo::start().await;
    let refresh = form_request(
        "refresh_request",
        "/oauth/refresh",
        tokens.addr,
        r#"{"grant_type": "refresh_token", "refresh_token": "<refresh_token>"}"#,
    );
    let sidecar = Sidecar::start(&connections(&[cc_connection(
        "cc",
        echo.addr,
        tokens.addr,
        &refresh,
    )]))
    .await;
    tokens.wait_count(2).await;
    let status = sidecar
        .wait_status("cc", "an hour-long token", |s| lifetime_left(s) > 1800)
        .await;
    assert_eq!(status["state"], "ready");
    for sent in tokens.requests() {
        assert_eq!(sent.path_and_query, "/oauth/token");
        assert_eq!(
            sent.field("grant_type").as_deref(),
            Some("client_credentials")
        );
    }
    let (_, body) = sidecar.get("/cc/x").await;
    assert_eq!(echoed(&body, "authorization"), ["Bearer tok-2"]);
}

/// §5.2 case 5: a refresh answer without a refresh token keeps the old one, which the
/// next refresh sends again.
#[tokio::test]
async fn refresh_without_a_new_refresh_token_keeps_the_old_one() {
    let key = "ac";
    let (tokens, _echo, sidecar) = start_fixture(key, Reply::token(3600, false), true).await;
    tokens.script([
        Reply::token(2, true),  // ref-1, from the code exchange
        Reply::token(2, false), // the first refresh: no refresh token
    ]);
    authorize_with(&sidecar, key, "auth_code").await;
    tokens.wait_count(3).await;
    let sent = tokens.requests();
    for refresh in &sent[1..3] {
        assert_eq!(
            refresh.field("grant_type").as_deref(),
            Some("refresh_token")
        );
        assert_eq!(refresh.field("refresh_token").as_deref(), Some("ref-1"));
    }
    let status = sidecar
        .wait_status(key, "an hour-long token", |s| lifetime_left(s) > 1800)
        .await;
    assert_eq!(status["has_refresh_token"], true);
}
