//! What a reload does to an authorization-code grant: an edit that leaves its token valid
//! (a comment in the Fides file, `pkce: true`, `admin.public_url`) keeps it, as does a
//! connection removed and restored within the grace period — even across a restart; an
//! edit of what the token was obtained under (token endpoint, client id) drops it; and a
//! removed connection's grant leaves the store once the grace has passed.

use crate::support::authz::authorize_with;
use crate::support::logs::Logs;
use crate::support::*;
use std::time::Duration;

/// The connection under test.
const KEY: &str = "api";
/// The file store and its key.
const STORE: &str =
    "store: { path: tokens.db, key: \"CgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo=\" }\n";
/// The Fides file beside the config.
const FIDES_FILE: &str = "api.yml";
/// Lifetime of the first token: its refresh (at about half of it) comes after the reload,
/// and shows which refresh token the connection holds then.
const FIRST_LIFETIME: u64 = 4;

/// The connection as a `connections:` entry naming [`FIDES_FILE`], and that file's text:
/// the Fides test fixture's authorization code with a refresh request, to `echo`, tokens
/// from `tokens`.
fn in_fides_file(echo: &Echo, tokens: &TokenServer, entry_fields: &[&str]) -> (String, String) {
    let mut conn = fixture_authcode(KEY, echo.addr, Some(tokens.addr), true);
    for field in entry_fields {
        conn = conn.field(field);
    }
    let text = conn.to_string();
    let (entry, client_config) = text.split_once("    client_config:\n").unwrap();
    let client_config: String = client_config
        .lines()
        .map(|l| format!("{}\n", &l[2..]))
        .collect();
    (
        format!("{entry}    saas_config: {FIDES_FILE}\n"),
        format!("saas_config:\n  fides_key: api\n  name: API\n  type: api\n  client_config:\n{client_config}"),
    )
}

/// Another connection, with a static credential (no token requests of its own).
fn other(echo: &Echo) -> String {
    Conn::new("other", echo.addr, "bearer")
        .secrets("api_token: static")
        .configure("          token: <api_token>\n")
        .to_string()
}

/// A config: `admin` lines, the store, and the connections.
fn config(admin: &str, entries: &str) -> String {
    format!("{admin}{STORE}connections:\n{entries}")
}

/// A sidecar whose connection (entry and Fides file from [`in_fides_file`]) has been
/// authorized: tok-1 (living [`FIRST_LIFETIME`] s) and ref-1.
async fn authorized(options: tokenwarden::app::Options) -> (TokenServer, Echo, Sidecar) {
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    tokens.script([Reply::token(FIRST_LIFETIME, true)]);
    let echo = Echo::start().await;
    let (entry, fides) = in_fides_file(&echo, &tokens, &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FIDES_FILE), fides).unwrap();
    let sc = Sidecar::start_in(dir, &config("", &entry), options).await;
    authorize_with(&sc, KEY, "the-code").await;
    assert_eq!(injected(&sc).await.as_deref(), Some("Bearer tok-1"));
    (tokens, echo, sc)
}

/// The Authorization the echo upstream received for a request through `sc`.
async fn injected(sc: &Sidecar) -> Option<String> {
    echoed_authorization(&sc.get(&format!("/{KEY}/x")).await.1)
}

/// Writes `yaml` as the config (and `fides` as the Fides file, if given) and reloads:
/// panics unless the reload applied; returns its outcome.
async fn reload(sc: &Sidecar, yaml: &str, fides: Option<&str>) -> serde_json::Value {
    if let Some(fides) = fides {
        std::fs::write(sc.dir.path().join(FIDES_FILE), fides).unwrap();
    }
    std::fs::write(sc.config_path(), yaml).unwrap();
    let r = client()
        .post(sc.admin_url("/api/v1/reload"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let outcome: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{outcome}");
    outcome
}

/// The grant is still held: ready, tok-1 injected, and the next refresh presents ref-1
/// (then tok-2 is injected).
async fn assert_grant_kept(sc: &Sidecar, tokens: &TokenServer) {
    let status = sc.status(KEY).await;
    assert_eq!(status["state"], "ready", "{status}");
    let refresh = tokens.nth(2).await;
    assert_eq!(
        refresh.field("grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(refresh.field("refresh_token").as_deref(), Some("ref-1"));
    wait_until("tok-2 to be injected", || async {
        injected(sc).await.as_deref() == Some("Bearer tok-2")
    })
    .await;
}

#[tokio::test]
async fn a_comment_in_the_fides_file_keeps_the_grant() {
    let (tokens, echo, sc) = authorized(Default::default()).await;
    let (entry, fides) = in_fides_file(&echo, &tokens, &[]);
    let edited = format!(
        "# reviewed\n{}",
        fides.replace("  type: api\n", "  type: api # ours\n")
    );
    let outcome = reload(&sc, &config("", &entry), Some(&edited)).await;
    assert_grant_kept(&sc, &tokens).await;
    assert_eq!(outcome["changed"], serde_json::json!([KEY]), "{outcome}");
    assert_eq!(
        outcome["tokens_dropped"],
        serde_json::json!([]),
        "{outcome}"
    );
}

#[tokio::test]
async fn turning_pkce_on_keeps_the_grant() {
    let (tokens, echo, sc) = authorized(Default::default()).await;
    let (entry, _) = in_fides_file(&echo, &tokens, &["pkce: true"]);
    let outcome = reload(&sc, &config("", &entry), None).await;
    assert_eq!(outcome["changed"], serde_json::json!([KEY]), "{outcome}");
    assert_grant_kept(&sc, &tokens).await;
    // The new definition applies: the next authorization asks for PKCE.
    let a = crate::support::authz::authorize(&sc, KEY).await;
    assert!(a.code_challenge.is_some(), "{}", a.url);
}

#[tokio::test]
async fn setting_the_public_url_keeps_the_grant() {
    let (tokens, echo, sc) = authorized(Default::default()).await;
    let (entry, _) = in_fides_file(&echo, &tokens, &[]);
    let admin = "admin:\n  public_url: https://tw.example\n";
    let by_public_name = || {
        let request =
            "GET /api/v1/connections HTTP/1.1\r\nHost: tw.example\r\nConnection: close\r\n\r\n";
        crate::support::raw::send(sc.admin, request)
    };
    assert_eq!(
        by_public_name().await.status,
        421,
        "not the listener's name yet"
    );
    let outcome = reload(&sc, &config(admin, &entry), None).await;
    assert_grant_kept(&sc, &tokens).await;
    // Applied whole at once: the default redirect_uri and the name the listener answers to.
    assert_eq!(
        outcome["restart_required"],
        serde_json::json!([]),
        "{outcome}"
    );
    assert_eq!(by_public_name().await.status, 200);
    assert_eq!(
        outcome["tokens_dropped"],
        serde_json::json!([]),
        "{outcome}"
    );
}

#[tokio::test]
async fn a_connection_removed_and_restored_within_the_grace_gets_its_grant_back() {
    let (tokens, echo, sc) = authorized(Default::default()).await;
    let (entry, _) = in_fides_file(&echo, &tokens, &[]);
    let other = other(&echo);
    // A file caught half-saved: the connection is missing, the rest still loads.
    let outcome = reload(&sc, &config("", &other), None).await;
    assert_eq!(outcome["removed"], serde_json::json!([KEY]), "{outcome}");
    assert_eq!(sc.get(&format!("/{KEY}/x")).await.0, 404);
    let outcome = reload(&sc, &config("", &entry), None).await;
    assert_eq!(outcome["added"], serde_json::json!([KEY]), "{outcome}");
    assert_grant_kept(&sc, &tokens).await;
}

#[tokio::test]
async fn a_restart_within_the_grace_keeps_a_removed_connections_grant() {
    let (tokens, echo, sc) = authorized(Default::default()).await;
    let (entry, _) = in_fides_file(&echo, &tokens, &[]);
    let other = other(&echo);
    reload(&sc, &config("", &other), None).await;
    let sc = sc.restart(&config("", &other)).await;
    let sc = sc.restart(&config("", &entry)).await;
    assert_grant_kept(&sc, &tokens).await;
}

#[tokio::test]
async fn a_new_token_endpoint_or_client_id_drops_the_grant() {
    for (what, from, to) in [
        (
            "token endpoint",
            "path: /oauth/token",
            "path: /v2/oauth/token",
        ),
        (
            "client id",
            "client_id: client,",
            "client_id: another-client,",
        ),
    ] {
        let (tokens, echo, sc) = authorized(Default::default()).await;
        let (entry, fides) = in_fides_file(&echo, &tokens, &[]);
        assert!(entry.contains(from) || fides.contains(from), "{what}");
        let outcome = reload(
            &sc,
            &config("", &entry.replace(from, to)),
            Some(&fides.replace(from, to)),
        )
        .await;
        assert_eq!(
            outcome["tokens_dropped"],
            serde_json::json!([KEY]),
            "{what}: {outcome}"
        );
        let status = sc.wait_state(KEY, "needs_authorization").await;
        assert_eq!(status["has_refresh_token"], false, "{what}: {status}");
        assert_eq!(sc.get(&format!("/{KEY}/x")).await.0, 503, "{what}");
        // Nor does a restart bring it back: it left the store.
        let sc = sc.restart(&config("", &entry.replace(from, to))).await;
        assert_eq!(
            sc.status(KEY).await["state"],
            "needs_authorization",
            "{what}"
        );
        assert_eq!(tokens.count(), 1, "{what}: no refresh with the old grant");
    }
}

#[tokio::test]
async fn a_removed_connections_grant_leaves_the_store_after_the_grace() {
    let (logs, _capture) = Logs::capture();
    let options = tokenwarden::app::Options {
        removed_grant_grace: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let (tokens, echo, sc) = authorized(options).await;
    let (entry, _) = in_fides_file(&echo, &tokens, &[]);
    let other = other(&echo);
    reload(&sc, &config("", &other), None).await;
    wait_until("the grant to be deleted", || async {
        logs.text().contains("its grace period has passed")
    })
    .await;
    reload(&sc, &config("", &entry), None).await;
    assert_eq!(sc.status(KEY).await["state"], "needs_authorization");
}
