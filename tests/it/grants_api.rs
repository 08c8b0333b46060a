//! The grants API of a per-user connection (issue 24) on the admin listener: import
//! (`PUT …/grants/{subject}`: an access token as given, a refresh token alone refreshed at
//! once, 422 for a body that names no token or two expiries), read one, page through the
//! subjects with counts, delete (revoked at the provider first when the connection has a
//! `revoke_request`; deleted even when that fails), and `not_per_user` for a single-grant
//! connection. No answer ever carries a token.

use crate::per_user::{
    bearer, client_basic, grant, json_of, put_grant, refreshes_with, World, KEY,
};
use crate::support::*;
use serde_json::{json, Value};
use tokenwarden::app::Options;

/// `{method} /api/v1/connection/crm/grants{rest}` on `sc`'s admin listener → (status, body).
async fn call(sc: &Sidecar, method: &str, rest: &str, body: Option<Value>) -> (u16, Value) {
    let url = sc.admin_url(&format!("/api/v1/connection/{KEY}/grants{rest}"));
    let mut req = client().request(method.parse().unwrap(), url);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), json_of(r).await)
}

/// Panics if `v` (an answer) carries any of `tokens`.
fn assert_no_token(v: &Value, tokens: &[&str]) {
    let text = v.to_string();
    for t in tokens {
        assert!(!text.contains(t), "an answer carries {t}: {text}");
    }
}

#[tokio::test]
async fn import_read_page_and_delete_with_revocation() {
    let w = World::start().await;
    let now = unix_now();

    // An access token: stored as given (201), then replaced (200).
    let (status, view) = put_grant(w.sc.admin, "alice", &grant("alice-at", "alice-rt", 3600)).await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["connection"], KEY);
    assert_eq!(view["subject"], "alice");
    assert_eq!(view["state"], "ready", "{view}");
    let expires_at = view["expires_at"].as_i64().unwrap();
    assert!((now + 3590..=now + 3610).contains(&expires_at), "{view}");
    let body = json!({"access_token": "alice-at-2", "refresh_token": "alice-rt-2",
        "expires_at": now + 7200, "scope": "read"});
    let (status, replaced) = put_grant(w.sc.admin, "alice", &body).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["expires_at"], now + 7200, "{replaced}");
    // (The generation counts writes in Redis; the SQLite store keeps none: 0.)
    assert!(replaced["generation"].is_u64(), "{replaced}");
    assert_no_token(&replaced, &["alice-at", "alice-rt"]);
    let (status, body) = w.get_as("alice").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer alice-at-2"));

    // A refresh token alone is refreshed at once.
    let (status, view) = put_grant(w.sc.admin, "bob", &json!({"refresh_token": "bob-rt"})).await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["state"], "ready", "{view}");
    assert_eq!(w.tokens.count(), 1);
    let refresh = &w.tokens.requests()[0];
    assert_eq!(
        refresh.field("grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(refresh.field("refresh_token").as_deref(), Some("bob-rt"));
    assert_eq!(
        refresh.header("authorization"),
        Some(client_basic().as_str())
    );
    assert_no_token(&view, &["bob-rt", "tok-1", "ref-1"]);
    let (status, body) = w.get_as("bob").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer tok-1"));

    // 422: no token, an empty one, two expiries; an unknown field is refused too.
    for bad in [
        json!({}),
        json!({"access_token": ""}),
        json!({"access_token": "x", "expires_at": now + 60, "expires_in": 60}),
    ] {
        let (status, answer) = put_grant(w.sc.admin, "carol", &bad).await;
        assert_eq!(status, 422, "{bad}: {answer}");
    }
    let (status, answer) = put_grant(
        w.sc.admin,
        "carol",
        &json!({"access_token": "x", "token": "y"}),
    )
    .await;
    assert!(status == 400 || status == 422, "{status} {answer}");
    let (status, _) = call(&w.sc, "GET", "/carol", None).await;
    assert_eq!(status, 404, "nothing stored by a refused import");

    // Read one.
    let (status, one) = call(&w.sc, "GET", "/alice", None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["subject"], "alice");
    assert_eq!(one["state"], "ready");
    assert_eq!(one["expires_at"], now + 7200);
    assert_eq!(one["generation"], replaced["generation"]);
    assert_no_token(&one, &["alice-at", "alice-rt"]);
    let (status, missing) = call(&w.sc, "GET", "/nobody", None).await;
    assert_eq!((status, &missing["error"]), (404, &json!("no_grant")));

    // Page through five subjects two at a time (one of them expired).
    w.put("carol", grant("carol-at", "carol-rt", 3600)).await;
    w.put("dave", grant("dave-at", "dave-rt", 0)).await;
    w.put("erin", grant("erin-at", "erin-rt", 3600)).await;
    let mut cursor = String::new();
    let mut pages = Vec::new();
    loop {
        let (status, page) = call(&w.sc, "GET", &format!("?limit=2{cursor}"), None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["counts"], json!({"total": 5, "expired": 1}), "{page}");
        assert_no_token(&page, &["-at", "-rt", "tok-"]);
        let subjects: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["subject"].as_str().unwrap().to_owned())
            .collect();
        for item in page["items"].as_array().unwrap() {
            let expected = if item["subject"] == "dave" {
                "expired"
            } else {
                "ready"
            };
            assert_eq!(item["state"], expected, "{item}");
        }
        pages.push(subjects);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(
        pages,
        [vec!["alice", "bob"], vec!["carol", "dave"], vec!["erin"]],
        "subjects in order, two per page"
    );
    let (status, _) = call(&w.sc, "GET", "?limit=0", None).await;
    assert_eq!(status, 422);

    // Delete: revoked at the provider with the refresh token and the client's
    // authentication, then gone — the subject's requests get no_token again.
    let (status, answer) = call(&w.sc, "DELETE", "/alice", None).await;
    assert_eq!(status, 204, "{answer}");
    let revocations = w.revoker.requests();
    assert_eq!(revocations.len(), 1);
    let r = &revocations[0];
    assert_eq!(r.path_and_query, "/oauth/revoke");
    assert_eq!(r.field("token").as_deref(), Some("alice-rt-2"));
    assert_eq!(r.field("token_type_hint").as_deref(), Some("refresh_token"));
    assert_eq!(r.header("authorization"), Some(client_basic().as_str()));
    let (status, body) = w.get_as("alice").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "no_token");
    assert_eq!(body["subject"], "alice");
    let (status, _) = call(&w.sc, "GET", "/alice", None).await;
    assert_eq!(status, 404);
    let (status, answer) = call(&w.sc, "DELETE", "/alice", None).await;
    assert_eq!((status, &answer["error"]), (404, &json!("no_grant")));
    let (_, page) = call(&w.sc, "GET", "", None).await;
    assert_eq!(page["counts"]["total"], 4, "{page}");
    // Others are untouched.
    let (status, body) = w.get_as("erin").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer erin-at"));
}

#[tokio::test]
async fn a_failed_revocation_is_reported_and_the_grant_deleted_anyway() {
    let w = World::start().await;
    w.revoker.set_default(Reply::OAuthError {
        status: 400,
        code: "unsupported_token_type",
    });
    w.put("alice", grant("alice-at", "alice-rt", 3600)).await;
    let (status, answer) = call(&w.sc, "DELETE", "/alice", None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deleted"], true, "{answer}");
    assert_eq!(answer["revoked"], false, "{answer}");
    assert!(answer["revoke_error"].is_string(), "{answer}");
    assert_no_token(&answer, &["alice-at", "alice-rt"]);
    assert_eq!(w.revoker.count(), 1);
    let (status, _) = call(&w.sc, "GET", "/alice", None).await;
    assert_eq!(status, 404);
    let (status, body) = w.get_as("alice").await;
    assert_eq!((status, &body["error"]), (503, &json!("no_token")));

    // An endpoint that does not answer at all: the same.
    w.revoker.stop();
    w.put("bob", grant("bob-at", "bob-rt", 3600)).await;
    let (status, answer) = call(&w.sc, "DELETE", "/bob", None).await;
    assert_eq!(
        (status, &answer["revoked"]),
        (200, &json!(false)),
        "{answer}"
    );
    let (status, _) = call(&w.sc, "GET", "/bob", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_single_grant_connection_has_no_grants_api_and_subjects_are_checked() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let echo = Echo::start().await;
    let yaml = connections(&[
        cc_conn("single", echo.addr, tokens.addr).to_string(),
        fixture_authcode("single-ac", echo.addr, Some(tokens.addr), true).to_string(),
        crate::per_user::per_user_conn(echo.addr, tokens.addr, None).to_string(),
    ]);
    let sc = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, Options::default()).await;
    for (method, rest, body) in [
        ("GET", "", None),
        ("GET", "/alice", None),
        ("PUT", "/alice", Some(json!({"access_token": "x"}))),
        ("DELETE", "/alice", None),
    ] {
        let url = sc.admin_url(&format!("/api/v1/connection/single/grants{rest}"));
        let mut req = client().request(method.parse().unwrap(), url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 404, "{method} {rest}");
        let v = json_of(r).await;
        assert_eq!(v["error"], "not_per_user", "{v}");
    }
    // Its authorization names no subject.
    let authorize = sc.admin_url("/api/v1/connection/single-ac/authorize");
    let (status, v) = get_json(&format!("{authorize}?subject=alice")).await;
    assert_eq!((status, &v["error"]), (400, &json!("not_per_user")), "{v}");
    let (status, v) = get_json(&authorize).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = get_json(&sc.admin_url("/api/v1/connection/nope/grants")).await;
    assert_eq!((status, &v["error"]), (404, &json!("unknown_connection")));

    // A subject in the path is percent-decoded and checked as the header's are.
    let (status, view) =
        put_grant(sc.admin, "user@example.com", &grant("u-at", "u-rt", 3600)).await;
    assert_eq!(
        (status, &view["subject"]),
        (201, &json!("user@example.com"))
    );
    let (status, one) = call(&sc, "GET", "/user%40example.com", None).await;
    assert_eq!((status, &one["subject"]), (200, &json!("user@example.com")));
    for bad in ["a%20b", &"a".repeat(257), "a%FF", "a%2"] {
        let (status, v) = call(
            &sc,
            "PUT",
            &format!("/{bad}"),
            Some(json!({"access_token": "x"})),
        )
        .await;
        assert_eq!((status, &v["error"]), (400, &json!("bad_subject")), "{bad}");
    }
    assert_eq!(refreshes_with(&tokens, "u-rt"), 0);
}
