//! The authorization-code grant end to end, against the scriptable token endpoint: the
//! authorization URL (as Fides builds it, plus PKCE), the callback's defences (single-use
//! expiring state, provider errors, duplicate parameters, RFC 9207 issuer check, response
//! headers), who may mint a state, refresh with rotation and its failures, and the
//! encrypted store across restarts (wrong key, corruption, the opt-in to start anyway).
//!
//! The test plays the browser and the authorization server's front channel: it takes the
//! URL the authorize route returns, reads `state` (and `code_challenge`) from it, and calls
//! the callback with a code; the `TokenServer` plays the token endpoint.

use crate::support::authz::{authorize, authorize_with, callback, query, redeem, s256};
use crate::support::logs::Logs;
use crate::support::*;
use std::time::Duration;

/// A store key (32 bytes, base64) and another one.
const STORE_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const OTHER_KEY: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
/// The connection key of every test connection.
const KEY: &str = "crm";
/// Store file name, relative to the config file.
const STORE_FILE: &str = "tokens.db";
/// The code exchange of the test connection (client_secret_post).
const CODE_BODY: &str = r#"{"grant_type": "authorization_code", "code": "<code>", "client_id": "<client_id>", "client_secret": "<client_secret>", "redirect_uri": "<redirect_uri>"}"#;
/// The refresh request of the test connection (client_secret_post).
const REFRESH_BODY: &str = r#"{"grant_type": "refresh_token", "refresh_token": "<refresh_token>", "client_id": "<client_id>", "client_secret": "<client_secret>"}"#;

/// How to shape the test connection and the sidecar around it.
struct Ac<'a> {
    pkce: bool,
    refresh_request: bool,
    /// `redirect_uri` secret; None: left to `admin.public_url`.
    redirect_uri: Option<&'a str>,
    issuer: Option<&'a str>,
    /// Extra lines under `admin:` (each indented two spaces).
    admin: &'a str,
    /// Extra lines under `store:`.
    store: &'a str,
    store_key: &'a str,
}

impl Default for Ac<'_> {
    fn default() -> Self {
        Ac {
            pkce: false,
            refresh_request: true,
            redirect_uri: Some("https://app.example/api/v1/oauth/callback"),
            issuer: None,
            admin: "",
            store: "",
            store_key: STORE_KEY,
        }
    }
}

impl<'a> Ac<'a> {
    /// The default connection, with `admin` lines under `admin:`.
    fn with_admin(admin: &'a str) -> Ac<'a> {
        Ac {
            admin,
            ..Ac::default()
        }
    }

    /// A Fides-style inline client_config forwarding to `echo`: a GET authorization request
    /// on its own host, form-encoded token and refresh requests (client_secret_post) on
    /// `tokens`.
    fn yaml(&self, echo: &Echo, tokens: &TokenServer) -> String {
        let mut secrets = format!("client_id: the-client, client_secret: \"{CLIENT_SECRET}\"");
        if let Some(r) = self.redirect_uri {
            secrets.push_str(&format!(", redirect_uri: \"{r}\""));
        }
        let mut conn = Conn::new(KEY, echo.addr, AUTHORIZATION_CODE);
        if self.pkce {
            conn = conn.field("pkce: true");
        }
        if let Some(i) = self.issuer {
            conn = conn.field(&format!("issuer: \"{i}\""));
        }
        conn = conn
            .secrets(&secrets)
            .configure(&authorization_request(
                "/oauth/authorize",
                Some("login.example.com"),
                &[
                    ("client_id", "<client_id>"),
                    ("redirect_uri", "<redirect_uri>"),
                    ("response_type", "code"),
                    ("scope", "api:read offline_access"),
                    ("state", "<state>"),
                ],
            ))
            .configure(&form_request(
                "token_request",
                "/oauth/token",
                tokens.addr,
                CODE_BODY,
            ));
        if self.refresh_request {
            conn = conn.configure(&form_request(
                "refresh_request",
                "/oauth/token",
                tokens.addr,
                REFRESH_BODY,
            ));
        }
        format!(
            "admin:\n  listen: 127.0.0.1:0\n{admin}store:\n  path: {STORE_FILE}\n  key: \"{store_key}\"\n{store}{connections}",
            admin = self.admin,
            store = self.store,
            store_key = self.store_key,
            connections = connections(&[conn]),
        )
    }
}

/// The token endpoint, the echo upstream, and a sidecar with the test connection shaped by
/// `ac` between them. Unless a test scripts otherwise, every token lives an hour and comes
/// with a rotated refresh token.
async fn start(ac: Ac<'_>) -> (TokenServer, Echo, Sidecar) {
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let echo = Echo::start().await;
    let sc = Sidecar::start(&ac.yaml(&echo, &tokens)).await;
    (tokens, echo, sc)
}

/// A request through the proxy to the echo upstream → (status, injected Authorization, body).
async fn proxied(sc: &Sidecar) -> (u16, Option<String>, serde_json::Value) {
    let (status, body) = sc.get(&format!("/{KEY}/v1/contacts?page=2")).await;
    assert_ne!(body, serde_json::Value::Null, "a JSON answer ({status})");
    (status, echoed_authorization(&body), body)
}

/// Waits until the proxy answers 503 (the token has become unusable).
async fn wait_unusable(sc: &Sidecar) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _, body) = proxied(sc).await;
        if status == 503 {
            return body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the token never became unusable"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until proxied requests carry `authorization`.
async fn wait_injected(sc: &Sidecar, authorization: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while proxied(sc).await.1.as_deref() != Some(authorization) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{authorization} never injected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// HEAD `url` → status.
async fn head(url: &str) -> reqwest::StatusCode {
    client().head(url).send().await.unwrap().status()
}

fn store_path(sc: &Sidecar) -> std::path::PathBuf {
    sc.dir.path().join(STORE_FILE)
}

/// How many token sets the database at `path` holds (read beside the running sidecar, as
/// `sqlite3` would).
fn stored_token_sets(path: &std::path::Path) -> i64 {
    let db = rusqlite::Connection::open(path).unwrap();
    db.query_row("SELECT count(*) FROM token_sets", [], |r| r.get(0))
        .unwrap()
}

/// Flips one bit of the stored token set's ciphertext in the (stopped) sidecar's database;
/// returns the file's bytes after.
fn damage_token_set(path: &std::path::Path) -> Vec<u8> {
    let db = rusqlite::Connection::open(path).unwrap();
    let sealed: Vec<u8> = db
        .query_row("SELECT sealed FROM token_sets", [], |r| r.get(0))
        .unwrap();
    let mut damaged = sealed.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    db.execute("UPDATE token_sets SET sealed = ?1", [damaged])
        .unwrap();
    db.close().unwrap();
    std::fs::read(path).unwrap()
}

/// A sidecar that authorized once (code `abc`) and stopped → its token endpoint, echo
/// upstream, directory and store file.
async fn authorized_and_stopped() -> (TokenServer, Echo, tempfile::TempDir, std::path::PathBuf) {
    let (tokens, echo, sc) = start(Ac::default()).await;
    authorize_with(&sc, KEY, "abc").await;
    let path = store_path(&sc);
    let dir = sc.stop().await;
    (tokens, echo, dir, path)
}

// ---------------------------------------------------------------- authorization URL

/// The Fides fixture (FIDES-BEHAVIOUR.md §5.1/§5.2 case 8): same host, query params in
/// config order, quote_plus encoding; only the state differs, and tokenwarden makes it.
#[tokio::test]
async fn the_authorization_url_is_built_as_fides_builds_it() {
    let key = "oauth2_authorization_code_connector";
    let fixture = fixture_authcode(key, "<domain>", None, false).protocol("https");
    let sc = Sidecar::start(&connections(&[fixture])).await;
    let a = authorize(&sc, key).await;
    assert_eq!(
        a.url,
        format!("https://localhost/auth/authorize?client_id=client&redirect_uri=https%3A%2F%2Flocalhost%2Fcallback&response_type=code&scope=admin.read+admin.write&state={}", a.state)
    );
    // ≥ 128 bits from a CSPRNG, URL-safe (so quote_plus leaves it alone), fresh each time.
    assert!(a.state.len() >= 22, "{}", a.state);
    assert!(
        a.state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{}",
        a.state
    );
    let again = authorize(&sc, key).await;
    assert_ne!(a.state, again.state);
    assert_eq!(a.code_challenge, None, "no PKCE unless asked for");
    // The connection waits for a human.
    assert_eq!(sc.status(key).await["state"], "needs_authorization");
}

/// The authorization request's own client_config gives the host; values with `:` `/` and
/// spaces are quote_plus-encoded (as Microsoft's scope in §4); an instance prefix marks the
/// state; `pkce: true` appends an S256 challenge after the configured parameters.
#[tokio::test]
async fn the_authorization_url_uses_the_requests_own_host_and_appends_pkce() {
    let (tokens, _echo, sc) = start(Ac {
        pkce: true,
        admin: "  instance: east\n",
        ..Ac::default()
    })
    .await;
    let a = authorize(&sc, KEY).await;
    let challenge = a.code_challenge.clone().expect("a code_challenge");
    assert!(a.state.starts_with("east-"), "{}", a.state);
    assert_eq!(
        a.url,
        format!(
            "https://login.example.com/oauth/authorize?client_id=the-client&redirect_uri=https%3A%2F%2Fapp.example%2Fapi%2Fv1%2Foauth%2Fcallback&response_type=code&scope=api%3Aread+offline_access&state={}&code_challenge={challenge}&code_challenge_method=S256",
            a.state
        )
    );
    assert_eq!(challenge.len(), 43, "BASE64URL(SHA-256) without padding");
    assert_ne!(authorize(&sc, KEY).await.code_challenge.unwrap(), challenge);
    assert_eq!(
        tokens.count(),
        0,
        "authorize never calls the token endpoint"
    );
}

// ---------------------------------------------------------------- the whole flow

/// authorize → callback → code exchanged once (with the PKCE verifier) → token stored
/// encrypted → proxied requests carry it. Nothing secret reaches a log line, the status
/// document or the store file in clear.
#[tokio::test]
async fn the_whole_flow_with_pkce_stores_the_token_and_the_proxy_injects_it() {
    let (logs, _guard) = Logs::capture();
    let (tokens, echo, sc) = start(Ac {
        pkce: true,
        ..Ac::default()
    })
    .await;
    let (status, _, body) = proxied(&sc).await;
    assert_eq!(status, 503, "no token before the authorization: {body}");
    assert_eq!(
        body["authorize"],
        format!("/api/v1/connection/{KEY}/authorize")
    );
    assert_eq!(echo.hits(), 0, "never a silent pass-through");

    let a = authorize(&sc, KEY).await;
    let code = "SplxlOBeZQQYbYS6WxSbIA";
    let page = redeem(&sc, code, &a.state).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(&format!("{KEY} is authorized")),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<a href=\"/\">Back to the status page</a>"),
        "{}",
        page.body
    );
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));

    // Exactly one token request, carrying the code, the redirect_uri and the verifier.
    assert_eq!(tokens.count(), 1);
    let req = &tokens.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.path_and_query, "/oauth/token",
        "nothing secret in the URL"
    );
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        req.field("grant_type").as_deref(),
        Some("authorization_code")
    );
    assert_eq!(req.field("code").as_deref(), Some(code));
    assert_eq!(req.field("client_id").as_deref(), Some("the-client"));
    assert_eq!(req.field("client_secret").as_deref(), Some(CLIENT_SECRET));
    assert_eq!(
        req.field("redirect_uri").as_deref(),
        Some("https://app.example/api/v1/oauth/callback")
    );
    let verifier = req.field("code_verifier").expect("a code_verifier");
    assert!(
        (43..=128).contains(&verifier.len()),
        "RFC 7636 length: {verifier}"
    );
    assert_eq!(
        s256(&verifier),
        a.code_challenge.clone().unwrap(),
        "S256(code_verifier) must equal the code_challenge of the authorization URL"
    );
    assert!(
        !a.url.contains(&verifier),
        "the verifier never goes in a URL"
    );

    let st = sc.wait_state(KEY, "ready").await;
    assert_eq!(st["has_refresh_token"], true);
    let (status, auth, body) = proxied(&sc).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(auth.as_deref(), Some("Bearer tok-1"));
    assert_eq!(body["target"], "/v1/contacts?page=2");

    // Secrets stay out of the status document, the store file and the logs.
    let status_text = sc.status(KEY).await.to_string();
    let stored = std::fs::read(store_path(&sc)).expect("the store file was written");
    let stored = String::from_utf8_lossy(&stored);
    for (what, value) in [("access token", "tok-1"), ("refresh token", "ref-1")] {
        assert!(
            !status_text.contains(value),
            "{what} in status: {status_text}"
        );
        assert!(!stored.contains(value), "{what} in clear in the store");
    }
    sc.stop().await;
    logs.assert_free_of(&[
        ("code", code),
        ("state", &a.state),
        ("verifier", &verifier),
        ("challenge", a.code_challenge.as_deref().unwrap()),
        ("client secret", CLIENT_SECRET),
        ("access token", "tok-1"),
        ("refresh token", "ref-1"),
    ]);
    assert!(
        logs.text().contains("/api/v1/oauth/callback"),
        "the access log records the callback path"
    );
}

/// Without a `redirect_uri` secret, the authorization URL and the code exchange both use
/// `admin.public_url` + `/api/v1/oauth/callback`.
#[tokio::test]
async fn redirect_uri_defaults_to_the_public_url() {
    let (tokens, _echo, sc) = start(Ac {
        redirect_uri: None,
        admin: "  public_url: https://tokenwarden.example:8443/\n",
        ..Ac::default()
    })
    .await;
    let expected = "https://tokenwarden.example:8443/api/v1/oauth/callback";
    let a = authorize(&sc, KEY).await;
    assert_eq!(a.param("redirect_uri"), Some(expected));
    assert!(
        a.query().contains(
            "redirect_uri=https%3A%2F%2Ftokenwarden.example%3A8443%2Fapi%2Fv1%2Foauth%2Fcallback&"
        ),
        "{}",
        a.url
    );
    let page = redeem(&sc, "c0de", &a.state).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        tokens.requests()[0].field("redirect_uri").as_deref(),
        Some(expected)
    );
}

/// PKCE with a Fides template that puts every parameter in the token request's query
/// string and sends no body (the Fides fixture, Outreach): the verifier still goes in a
/// form body, never in the URL.
#[tokio::test]
async fn pkce_with_a_query_style_token_request_sends_the_verifier_in_the_body() {
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let echo = Echo::start().await;
    let fixture = fixture_authcode(KEY, echo.addr, Some(tokens.addr), false).field("pkce: true");
    let sc = Sidecar::start(&connections(&[fixture])).await;
    let a = authorize_with(&sc, KEY, "auth_code").await;
    let req = &tokens.requests()[0];
    // The Fides part is byte for byte what Fides sends (§5.1) …
    assert_eq!(
        req.path_and_query,
        "/oauth/token?client_id=client&client_secret=secret&grant_type=authorization_code&code=auth_code&redirect_uri=https%3A%2F%2Flocalhost%2Fcallback"
    );
    // … and the verifier is in the body only.
    assert!(!req.path_and_query.contains("code_verifier"));
    let body = String::from_utf8(req.body.clone()).unwrap();
    let verifier = body
        .strip_prefix("code_verifier=")
        .unwrap_or_else(|| panic!("body {body:?}"));
    assert_eq!(s256(verifier), a.code_challenge.unwrap());
    sc.wait_state(KEY, "ready").await;
}

// ---------------------------------------------------------------- state

#[tokio::test]
async fn a_state_is_single_use() {
    let (tokens, _echo, sc) = start(Ac::default()).await;
    let a = authorize_with(&sc, KEY, "first-code").await;
    let replay = redeem(&sc, "second-code", &a.state).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(
        replay.body.contains("unknown, expired or already used"),
        "{}",
        replay.body
    );
    assert_eq!(replay.header("cache-control"), Some("no-store"));
    assert_eq!(replay.header("referrer-policy"), Some("no-referrer"));
    assert!(
        !replay.body.contains(&a.state),
        "the page never echoes the state"
    );
    assert_eq!(tokens.count(), 1, "the replay made no token request");
    assert_eq!(proxied(&sc).await.1.as_deref(), Some("Bearer tok-1"));
}

/// Two callbacks with the same state at the same time: one exchange, one refusal.
#[tokio::test]
async fn concurrent_callbacks_with_one_state_make_exactly_one_token_request() {
    let (tokens, _echo, sc) = start(Ac::default()).await;
    // The first exchange is slow, so the second callback arrives while it is in flight.
    tokens.script([Reply::Slow(Duration::from_millis(300))]);
    let a = authorize(&sc, KEY).await;
    let q1 = query(&[("code", "code-a"), ("state", &a.state)]);
    let q2 = query(&[("code", "code-b"), ("state", &a.state)]);
    let (p1, p2) = tokio::join!(callback(&sc, &q1), callback(&sc, &q2));
    let mut statuses = [p1.status, p2.status];
    statuses.sort();
    assert_eq!(statuses, [200, 400], "{} / {}", p1.body, p2.body);
    assert_eq!(tokens.count(), 1);
    sc.wait_state(KEY, "ready").await;
}

#[tokio::test]
async fn an_expired_state_is_refused_without_a_token_request() {
    let (tokens, _echo, sc) = start(Ac::with_admin("  state_ttl: 1s\n")).await;
    let a = authorize(&sc, KEY).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let page = redeem(&sc, "late", &a.state).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(tokens.count(), 0);
    assert_eq!(sc.status(KEY).await["state"], "needs_authorization");
    // A fresh state within its lifetime still works.
    authorize_with(&sc, KEY, "in-time").await;
    assert_eq!(tokens.count(), 1);
}

#[tokio::test]
async fn unknown_or_missing_state_is_400_without_a_token_request() {
    let (tokens, _echo, sc) = start(Ac::default()).await;
    let _minted = authorize(&sc, KEY).await;
    for q in [
        query(&[("code", "abc"), ("state", "not_found")]),
        query(&[("code", "abc")]),
        query(&[("code", "abc"), ("state", "")]),
        String::new(),
    ] {
        let page = callback(&sc, &q).await;
        assert_eq!(page.status, 400, "{q}: {}", page.body);
        assert_eq!(page.header("cache-control"), Some("no-store"), "{q}");
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"), "{q}");
    }
    assert_eq!(tokens.count(), 0);
    assert_eq!(sc.status(KEY).await["state"], "needs_authorization");
}

/// Only GET acts: a HEAD (e.g. a link prefetcher) neither exchanges the code nor uses up
/// the state, and a HEAD cannot mint a state either.
#[tokio::test]
async fn head_requests_neither_mint_states_nor_exchange_codes() {
    let (tokens, _echo, sc) = start(Ac::default()).await;
    let authorize_url = sc.admin_url(&format!("/api/v1/connection/{KEY}/authorize"));
    assert_eq!(head(&authorize_url).await, 405);
    let a = authorize(&sc, KEY).await;
    let q = query(&[("code", "abc"), ("state", &a.state)]);
    let callback_url = sc.admin_url(&format!("/api/v1/oauth/callback?{q}"));
    assert_eq!(head(&callback_url).await, 405);
    assert_eq!(tokens.count(), 0, "a HEAD exchanged the code");
    let page = callback(&sc, &q).await;
    assert_eq!(
        page.status, 200,
        "the state survived the HEAD: {}",
        page.body
    );
    assert_eq!(tokens.count(), 1);
}

/// `error=access_denied` from the provider: the state is consumed, nothing is stored, and
/// the provider's text is shown HTML-escaped.
#[tokio::test]
async fn a_provider_error_consumes_the_state_stores_nothing_and_is_escaped() {
    let (tokens, _echo, sc) = start(Ac::default()).await;
    let a = authorize(&sc, KEY).await;
    let page = callback(
        &sc,
        &query(&[
            ("error", "access_denied"),
            ("error_description", "<script>alert('owned')</script>"),
            ("state", &a.state),
        ]),
    )
    .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("access_denied"), "{}", page.body);
    assert!(
        page.body
            .contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"), "{}", page.body);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    // Consumed: a code for the same state is refused.
    let later = redeem(&sc, "abc", &a.state).await;
    assert_eq!(later.status, 400);
    assert_eq!(tokens.count(), 0);
    assert_eq!(sc.status(KEY).await["state"], "needs_authorization");
    assert_eq!(stored_token_sets(&store_path(&sc)), 0, "nothing was stored");
}

#[tokio::test]
async fn duplicate_parameters_are_400_without_a_token_request() {
    let (tokens, _echo, sc) = start(Ac::default()).await;
    let a = authorize(&sc, KEY).await;
    let other = authorize(&sc, KEY).await;
    for q in [
        query(&[("code", "a"), ("code", "b"), ("state", &a.state)]),
        query(&[("code", "a"), ("state", &a.state), ("state", &a.state)]),
        query(&[("code", "a"), ("state", &a.state), ("state", &other.state)]),
        query(&[
            ("code", "a"),
            ("state", &a.state),
            ("iss", "x"),
            ("iss", "y"),
        ]),
    ] {
        let page = callback(&sc, &q).await;
        assert_eq!(page.status, 400, "{q}: {}", page.body);
        assert!(page.body.contains("more than once"), "{}", page.body);
    }
    assert_eq!(tokens.count(), 0);
    assert_eq!(sc.status(KEY).await["state"], "needs_authorization");
}

/// RFC 9207: with `issuer:` configured, an `iss` that differs is refused before any token
/// request, and the state is burnt; the right `iss` is accepted.
#[tokio::test]
async fn a_differing_iss_is_refused_before_any_token_request() {
    let issuer = "https://login.example.com";
    let ac = Ac {
        issuer: Some(issuer),
        ..Ac::default()
    };
    let (tokens, _echo, sc) = start(ac).await;
    let a = authorize(&sc, KEY).await;
    for iss in ["https://evil.example", "https://login.example.com/", ""] {
        let b = authorize(&sc, KEY).await;
        let page = callback(
            &sc,
            &query(&[("code", "abc"), ("state", &b.state), ("iss", iss)]),
        )
        .await;
        assert_eq!(page.status, 400, "iss {iss:?}: {}", page.body);
        assert!(page.body.contains("unexpected issuer"), "{}", page.body);
        let again = redeem(&sc, "abc", &b.state).await;
        assert_eq!(again.status, 400, "the mix-up response burnt the state");
    }
    assert_eq!(tokens.count(), 0);
    let page = callback(
        &sc,
        &query(&[("code", "abc"), ("state", &a.state), ("iss", issuer)]),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(tokens.count(), 1);
}

/// RFC 9207 §2.4: a client that expects `iss` (the connection sets `issuer:`) refuses a
/// response without it, before any token request, burning the state; the page says why
/// without echoing the code or the state.
#[tokio::test]
async fn a_missing_iss_is_refused_when_an_issuer_is_set() {
    let ac = Ac {
        issuer: Some("https://login.example.com"),
        ..Ac::default()
    };
    let (tokens, _echo, sc) = start(ac).await;
    let a = authorize(&sc, KEY).await;
    let code = "code-without-iss-7f3a";
    let page = redeem(&sc, code, &a.state).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("no iss"), "{}", page.body);
    assert!(
        !page.body.contains(code) && !page.body.contains(&a.state),
        "{}",
        page.body
    );
    assert_eq!(tokens.count(), 0, "no token request");
    let again = redeem(&sc, code, &a.state).await;
    assert_eq!(again.status, 400, "the response burnt the state");
    assert_eq!(sc.status(KEY).await["state"], "needs_authorization");
}

#[tokio::test]
async fn success_url_gets_a_307() {
    let (_tokens, _echo, sc) = start(Ac::with_admin(
        "  success_url: https://app.example/integrations?tab=oauth\n",
    ))
    .await;
    let a = authorize(&sc, KEY).await;
    let page = redeem(&sc, "abc", &a.state).await;
    assert_eq!(page.status, 307, "{}", page.body);
    assert_eq!(
        page.header("location"),
        Some("https://app.example/integrations?tab=oauth&connection=crm&status=authorized")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    sc.wait_state(KEY, "ready").await;
}

/// With `admin.token` set, a presented bearer token must match (loopback callers without
/// one are trusted; the non-loopback rule is unit-tested in `admin::oauth`).
#[tokio::test]
async fn authorize_checks_the_admin_token_when_one_is_presented() {
    let (_tokens, _echo, sc) = start(Ac::with_admin("  token: \"let-me-in-0123456789\"\n")).await;
    let url = sc.admin_url(&format!("/api/v1/connection/{KEY}/authorize"));
    let send = |auth: Option<&'static str>| {
        let mut r = client().get(&url);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    assert_eq!(send(None).await.unwrap().status(), 200, "loopback");
    assert_eq!(
        send(Some("Bearer let-me-in-0123456789"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(Some("bearer let-me-in-0123456789"))
            .await
            .unwrap()
            .status(),
        200,
        "the auth scheme is case-insensitive"
    );
    for wrong in [
        "Bearer let-me-in-012345678",
        "Bearer let-me-in-01234567890",
        "Bearer ",
    ] {
        let r = send(Some(wrong)).await.unwrap();
        assert_eq!(r.status(), 401, "{wrong}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("let-me-in"), "{body}");
    }
    // Unknown and non-authorization-code connections.
    let (status, _) = get_json(&sc.admin_url("/api/v1/connection/nope/authorize")).await;
    assert_eq!(status, 404);
}

/// Pending states are bounded: past `admin.max_pending_states`, authorize answers 503.
#[tokio::test]
async fn the_number_of_pending_states_is_bounded() {
    let (_tokens, _echo, sc) = start(Ac::with_admin("  max_pending_states: 2\n")).await;
    let first = authorize(&sc, KEY).await;
    authorize(&sc, KEY).await;
    let (status, body) =
        get_json(&sc.admin_url(&format!("/api/v1/connection/{KEY}/authorize"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "too_many_pending");
    // Redeeming one makes room again.
    let page = redeem(&sc, "abc", &first.state).await;
    assert_eq!(page.status, 200, "{}", page.body);
    authorize(&sc, KEY).await;
}

/// A code exchange the token endpoint refuses is reported (escaped, no secrets) and never
/// retried — the code is single use; the connection stays unauthorized.
#[tokio::test]
async fn a_refused_code_exchange_is_reported_and_not_retried() {
    let (tokens, echo, sc) = start(Ac::default()).await;
    for reply in [
        Reply::OAuthError {
            status: 400,
            code: "invalid_grant",
        },
        Reply::Status {
            status: 503,
            retry_after: Some(1),
        },
    ] {
        let before = tokens.count();
        tokens.script([reply]);
        let a = authorize(&sc, KEY).await;
        let page = redeem(&sc, "c0de-xyz", &a.state).await;
        assert_eq!(page.status, 400, "{}", page.body);
        assert!(page.body.contains("code exchange failed"), "{}", page.body);
        assert!(!page.body.contains("c0de-xyz") && !page.body.contains(CLIENT_SECRET));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(tokens.count(), before + 1, "exchanged once, not retried");
        assert_eq!(sc.status(KEY).await["state"], "needs_authorization");
    }
    // Authorize on a connection that is not authorization-code: 422.
    let cc = TokenServer::start(Reply::token(3600, false)).await;
    let sc2 = cc_sidecar("cc", echo.addr, cc.addr).await;
    let (status, body) = get_json(&sc2.admin_url("/api/v1/connection/cc/authorize")).await;
    assert_eq!(status, 422, "{body}");
}

// ---------------------------------------------------------------- refresh

/// A refresh that returns a new refresh token replaces the old one; one that returns none
/// keeps it.
#[tokio::test]
async fn refresh_tokens_rotate_and_a_response_without_one_keeps_the_old() {
    let (tokens, _echo, sc) = start(Ac::default()).await;
    tokens.set_default(Reply::token(3600, false));
    tokens.script([
        Reply::token(2, true),     // code → tok-1, ref-1
        Reply::token(2, true),     // refresh with ref-1 → tok-2, ref-2
        Reply::token(2, false),    // refresh with ref-2 → tok-3, no refresh token
        Reply::token(3600, false), // refresh with ref-2 again → tok-4
    ]);
    authorize_with(&sc, KEY, "abc").await;
    tokens.wait_count(4).await;
    let reqs = tokens.requests();
    assert_eq!(
        reqs[0].field("grant_type").as_deref(),
        Some("authorization_code")
    );
    for (i, expected) in [(1, "ref-1"), (2, "ref-2"), (3, "ref-2")] {
        assert_eq!(
            reqs[i].field("grant_type").as_deref(),
            Some("refresh_token")
        );
        assert_eq!(
            reqs[i].field("refresh_token").as_deref(),
            Some(expected),
            "refresh #{i}"
        );
    }
    wait_injected(&sc, "Bearer tok-4").await;
    let st = sc.wait_state(KEY, "ready").await;
    assert_eq!(st["has_refresh_token"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        tokens.count(),
        4,
        "a long-lived token is not refreshed early"
    );
}

/// `invalid_grant` on refresh: the connection needs re-authorization, the refresher stops,
/// the proxy's 503 names the authorize route; a new authorization brings it back.
#[tokio::test]
async fn invalid_grant_on_refresh_needs_reauthorization_without_retrying() {
    let (tokens, _echo, sc) = start(Ac::default()).await;
    tokens.script([
        Reply::token(2, true),
        Reply::OAuthError {
            status: 400,
            code: "invalid_grant",
        },
    ]);
    authorize_with(&sc, KEY, "abc").await;
    let st = sc.wait_state(KEY, "needs_reauthorization").await;
    assert_eq!(tokens.count(), 2);
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid_grant"),
        "{st}"
    );
    let body = wait_unusable(&sc).await;
    assert_eq!(body["error"], "no_token");
    assert_eq!(body["state"], "needs_reauthorization");
    assert_eq!(
        body["authorize"],
        format!("/api/v1/connection/{KEY}/authorize")
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/api/v1/connection/crm/authorize"),
        "{body}"
    );
    // No retry loop: the first backoff would have fired well within this.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(tokens.count(), 2, "no retry after invalid_grant");
    assert_eq!(sc.status(KEY).await["state"], "needs_reauthorization");

    // Re-authorizing brings the connection back and the refresher with it.
    tokens.script([Reply::token(2, true), Reply::token(3600, true)]);
    authorize_with(&sc, KEY, "again").await;
    assert_eq!(
        tokens.nth(4).await.field("refresh_token").as_deref(),
        Some("ref-2")
    );
    sc.wait_state(KEY, "ready").await;
}

/// A grant the provider says is dead (`invalid_grant` on refresh) is not injected for the
/// rest of its access token's life: the next request gets the 503 with the authorize link
/// at once, not a string of the provider's 401s.
#[tokio::test]
async fn a_dead_grant_is_not_injected_while_its_token_is_unexpired() {
    let (tokens, _echo, sc) = start(Ac::default()).await;
    // An 8 s token is refreshed at half its life and stays usable until 7.2 s.
    tokens.script([
        Reply::token(8, true),
        Reply::OAuthError {
            status: 400,
            code: "invalid_grant",
        },
    ]);
    authorize_with(&sc, KEY, "abc").await;
    let (status, injected, _) = proxied(&sc).await;
    assert_eq!((status, injected.as_deref()), (200, Some("Bearer tok-1")));
    let st = sc.wait_state(KEY, "needs_reauthorization").await;
    let (status, injected, body) = proxied(&sc).await;
    assert_eq!(
        status, 503,
        "the dead grant's token was injected: {body} (status {st})"
    );
    assert_eq!(injected, None);
    assert_eq!(body["state"], "needs_reauthorization");
    assert_eq!(
        body["authorize"],
        format!("/api/v1/connection/{KEY}/authorize")
    );
    assert_eq!(tokens.count(), 2, "no retry after invalid_grant");
}

/// Without a refresh_request the token is used until it expires, then the connection
/// needs re-authorization; nothing is requested.
#[tokio::test]
async fn without_refresh_request_the_token_lives_until_expiry() {
    let (tokens, _echo, sc) = start(Ac {
        refresh_request: false,
        ..Ac::default()
    })
    .await;
    tokens.set_default(Reply::token(2, true));
    authorize_with(&sc, KEY, "abc").await;
    assert_eq!(proxied(&sc).await.1.as_deref(), Some("Bearer tok-1"));
    let body = wait_unusable(&sc).await;
    assert_eq!(
        body["authorize"],
        format!("/api/v1/connection/{KEY}/authorize")
    );
    let st = sc.wait_state(KEY, "needs_reauthorization").await;
    assert_eq!(st["state"], "needs_reauthorization");
    assert_eq!(tokens.count(), 1, "no refresh without a refresh_request");
}

/// A refresh that falls due while a new authorization is being exchanged waits for it —
/// and must then act on the new grant's token, not on the decision it made for the old
/// one: no needless refresh, and no refresh attempted without a refresh token.
#[tokio::test]
async fn a_refresh_due_during_a_new_authorization_does_not_act_on_the_old_token() {
    let (tokens, _echo, sc) = start(Ac::default()).await;
    tokens.script([
        Reply::token(2, true), // first authorization: tok-1 / ref-1, refresh due after ~1 s
        // second authorization, held for 1.5 s across that instant: tok-2, 3600 s, no
        // refresh token
        Reply::Slow(Duration::from_millis(1500)),
    ]);
    authorize_with(&sc, KEY, "first").await;
    authorize_with(&sc, KEY, "second").await;
    assert_eq!(proxied(&sc).await.1.as_deref(), Some("Bearer tok-2"));
    // Give the refresher, released by the callback, time to act wrongly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = sc.status(KEY).await;
    assert_eq!(st["state"], "ready", "{st}");
    assert_eq!(st["last_error"], serde_json::Value::Null, "{st}");
    assert_eq!(tokens.count(), 2, "no refresh of the brand-new token");
    assert_eq!(proxied(&sc).await.1.as_deref(), Some("Bearer tok-2"));
}

// ---------------------------------------------------------------- the store

/// Stop and start on the same store: the token is back at once, with no new login and no
/// token request, and the refresher resumes from it.
#[tokio::test]
async fn a_restart_keeps_the_token_and_the_refresher_resumes() {
    let (tokens, echo, sc) = start(Ac::default()).await;
    tokens.script([Reply::token(6, true)]);
    authorize_with(&sc, KEY, "abc").await;

    let sc = sc.restart(&Ac::default().yaml(&echo, &tokens)).await;
    let st = sc.status(KEY).await;
    assert_eq!(st["state"], "ready", "{st}");
    assert_eq!(st["has_refresh_token"], true);
    assert_eq!(proxied(&sc).await.1.as_deref(), Some("Bearer tok-1"));
    assert_eq!(tokens.count(), 1, "no new login, no token request at start");
    // The restored 6 s token is refreshed ahead of its expiry with the stored refresh token.
    let refresh = tokens.nth(2).await;
    assert_eq!(
        refresh.field("grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(refresh.field("refresh_token").as_deref(), Some("ref-1"));
    wait_injected(&sc, "Bearer tok-2").await;
}

/// The refresh token a refresh rotated in is on disk before it is used: after a restart
/// the next refresh presents the rotated one, never the one it replaced.
/// `<access_token>` in a refresh request is the current access token (a runtime
/// placeholder, like `<refresh_token>`).
#[tokio::test]
async fn a_refresh_request_can_send_the_current_access_token() {
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    tokens.script([Reply::token(2, true)]);
    let echo = Echo::start().await;
    let yaml = Ac::default().yaml(&echo, &tokens).replace(
        r#""refresh_token": "<refresh_token>","#,
        r#""refresh_token": "<refresh_token>", "previous": "<access_token>","#,
    );
    assert!(yaml.contains("<access_token>"));
    let sc = Sidecar::start(&yaml).await;
    authorize_with(&sc, KEY, "abc").await;
    let refresh = tokens.nth(2).await;
    assert_eq!(
        refresh.field("grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(refresh.field("previous").as_deref(), Some("tok-1"));
    assert_eq!(refresh.field("refresh_token").as_deref(), Some("ref-1"));
}

#[tokio::test]
async fn a_rotated_refresh_token_survives_a_restart() {
    let (tokens, echo, sc) = start(Ac::default()).await;
    tokens.script([Reply::token(2, true), Reply::token(4, true)]);
    authorize_with(&sc, KEY, "abc").await;
    tokens.wait_count(2).await; // the refresh rotated ref-1 → ref-2

    let sc = sc.restart(&Ac::default().yaml(&echo, &tokens)).await;
    assert_eq!(sc.status(KEY).await["state"], "ready");
    assert_eq!(proxied(&sc).await.1.as_deref(), Some("Bearer tok-2"));
    assert_eq!(
        tokens.nth(3).await.field("refresh_token").as_deref(),
        Some("ref-2")
    );
    sc.wait_state(KEY, "ready").await;
}

/// A store written with one key and opened with another: start fails naming the file,
/// and the file is left exactly as it was.
#[tokio::test]
async fn a_wrong_store_key_refuses_to_start_and_leaves_the_file() {
    let (tokens, echo, dir, path) = authorized_and_stopped().await;
    let before = std::fs::read(&path).unwrap();

    let yaml = Ac {
        store_key: OTHER_KEY,
        ..Ac::default()
    }
    .yaml(&echo, &tokens);
    let message = match try_start(dir.path(), &yaml).await {
        Ok(_) => panic!("started with the wrong store key"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("key"), "{message}");
    assert!(
        !message.contains(OTHER_KEY) && !message.contains(STORE_KEY),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "file untouched");
    // The right key still opens it.
    let yaml = Ac::default().yaml(&echo, &tokens);
    let sc = Sidecar::start_in(dir, &yaml, Default::default()).await;
    assert_eq!(sc.status(KEY).await["state"], "ready");
}

/// Flip one bit of a stored token set: start fails naming the file; the file is untouched.
#[tokio::test]
async fn a_corrupted_store_refuses_to_start_and_leaves_the_file() {
    let (tokens, echo, dir, path) = authorized_and_stopped().await;
    let bytes = damage_token_set(&path);

    let yaml = Ac::default().yaml(&echo, &tokens);
    let message = match try_start(dir.path(), &yaml).await {
        Ok(_) => panic!("started on a corrupted store"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("start_unauthorized"),
        "names the opt-in: {message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "file untouched");
}

/// `store.on_unreadable: start_unauthorized`: starts anyway, the connection needs
/// authorization, and the unreadable file is moved aside (kept, not deleted).
#[tokio::test]
async fn start_unauthorized_moves_an_unreadable_store_aside() {
    let (tokens, echo, dir, path) = authorized_and_stopped().await;
    let bytes = damage_token_set(&path);

    let yaml = Ac {
        store: "  on_unreadable: start_unauthorized\n",
        ..Ac::default()
    }
    .yaml(&echo, &tokens);
    let sc = Sidecar::start_in(dir, &yaml, Default::default()).await;
    assert_eq!(sc.status(KEY).await["state"], "needs_authorization");
    assert_eq!(
        stored_token_sets(&path),
        0,
        "a new, empty database in its place"
    );
    let aside: Vec<_> = std::fs::read_dir(sc.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains("unreadable")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        bytes,
        "moved, not changed"
    );
    // A new authorization writes a fresh store.
    authorize_with(&sc, KEY, "fresh").await;
    assert_eq!(stored_token_sets(&path), 1);
    assert_eq!(proxied(&sc).await.1.as_deref(), Some("Bearer tok-2"));
}
