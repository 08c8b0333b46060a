//! Fides' `google_cloud_service_account` (issue 26) against Google's own client library:
//! google-auth (tests/py/google_auth_token.py, `service_account.Credentials
//! .from_service_account_info(info, scopes=…)` then `refresh(Request())`) and tokenwarden
//! each fetch a token for the same generated service-account key from one recording token
//! endpoint; the two requests must be the same apart from the assertion's times and
//! signature bytes.
//!
//! What google-auth 2.63.1 sends, observed against the recording endpoint (token_uri
//! `http://127.0.0.1:<port>/token`, key file with private_key_id `kid123`):
//!
//! ```text
//! POST <token_uri, path and query exactly as given>   HTTP/1.1
//! Content-Type: application/x-www-form-urlencoded
//! (also User-Agent python-requests/…, Accept */*, Accept-Encoding gzip, deflate,
//!  x-goog-api-client: gl-python/3.11.7 auth/2.63.1 auth-request-type/at cred-type/sa —
//!  library telemetry, not compared)
//!
//! assertion=<JWT>&grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer
//! ```
//! Two form fields, `assertion` first; only the grant type's `:` are percent-encoded (the
//! JWT is base64url and dots). The JWT (RS256 over the key's private_key):
//! - header, in this order: `{"typ": "JWT", "alg": "RS256", "kid": "<private_key_id>"}`
//!   (no `kid` when the key has no private_key_id)
//! - claims, in this order: `{"iat": now, "exp": now + 3600, "iss": "<client_email>",
//!   "aud": "https://oauth2.googleapis.com/token", "scope": "<scopes joined by one space>"}`
//!   — `aud` is google-auth's constant `_GOOGLE_OAUTH2_TOKEN_ENDPOINT` whatever the key's
//!   token_uri is (the request itself goes to token_uri); without scopes `scope` is `""`;
//!   no `sub` (only with domain-wide delegation), no `jti`, no `nbf`.
//! - JSON encoded by Python's `json.dumps` (`", "` and `": "` separators), so the bytes of
//!   the header and claims segments differ from a compact encoder's; only the decoded JSON
//!   is compared.
//!
//! Needs the packages of tests/py/requirements.txt (tests/deps.sh); without them these
//! tests fail.

use crate::support::logs::Logs;
use crate::support::python::{google_auth_token, verify_jwt, KeyPair};
use crate::support::token_server::Recorded;
use crate::support::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const KEY: &str = "gsheets";
const STRATEGY: &str = "google_cloud_service_account";
/// The `aud` google-auth puts in every service-account assertion.
const GOOGLE_TOKEN_ENDPOINT: &str = "https://oauth2.googleapis.com/token";
/// Fides' scope when the configuration names none.
const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/spreadsheets",
    "https://www.googleapis.com/auth/drive.readonly",
];
const CLIENT_EMAIL: &str = "tokenwarden-test@proj-tw-26.iam.gserviceaccount.com";
const PRIVATE_KEY_ID: &str = "3f0c6e1d9a7b5c2e4f8a1b0c9d7e6f5a4b3c2d1e";

/// How the connection's secrets carry the key.
enum Secrets {
    /// `type`, `project_id`, `private_key_id`, `private_key`, `client_email`, `token_uri`, …
    Fields,
    /// `keyfile_creds`: the whole key-file JSON.
    KeyfileCreds,
    /// `keyfile_creds: "${file:…}"`: the key file itself, as mounted from a Secret.
    KeyfileCredsFile,
}

/// A service-account key file for `key` whose token_uri is `token_uri`, as Google's
/// console writes them.
fn key_file_json(key: &KeyPair, token_uri: &str) -> Value {
    json!({
        "type": "service_account",
        "project_id": "proj-tw-26",
        "private_key_id": PRIVATE_KEY_ID,
        "private_key": key.private_pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "104857600000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/tokenwarden-test%40proj-tw-26.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com"
    })
}

/// The connection's `secrets:` flow mapping for `file` (written at `path`) in form `form`.
fn secrets(file: &Value, path: &Path, form: &Secrets) -> String {
    match form {
        Secrets::Fields => {
            let mut fields = Vec::new();
            for (name, value) in file.as_object().unwrap() {
                fields.push(format!("{name}: {value}"));
            }
            fields.join(", ")
        }
        Secrets::KeyfileCreds => {
            let text = serde_json::to_string_pretty(file).unwrap();
            format!("keyfile_creds: {}", serde_json::to_string(&text).unwrap())
        }
        Secrets::KeyfileCredsFile => format!("keyfile_creds: \"${{file:{}}}\"", path.display()),
    }
}

/// The JWT and the form without it: (assertion, body with the assertion's value replaced).
fn split_assertion(r: &Recorded) -> (String, String) {
    let assertion = r.field("assertion").expect("an assertion field");
    let body = String::from_utf8(r.body.clone()).expect("utf-8 body");
    assert_eq!(
        body.matches(&assertion).count(),
        1,
        "the assertion appears once, unencoded: {body}"
    );
    (assertion.clone(), body.replace(&assertion, "<JWT>"))
}

/// google-auth's request `g` and tokenwarden's `t` are the same: method, path and query,
/// Content-Type, form fields (names, order, values and their encoding, the assertion aside);
/// both assertions verify with `public_pem`, have the same header and the same claims but
/// iat and exp (exp − iat the same), and `scope` is `scope`.
async fn assert_same_request(g: &Recorded, t: &Recorded, public_pem: &str, scope: &str) {
    assert_eq!(g.method, "POST");
    assert_eq!(t.method, g.method, "method");
    assert_eq!(t.path_and_query, g.path_and_query, "path and query");
    assert_eq!(
        t.header("content-type"),
        g.header("content-type"),
        "Content-Type"
    );
    let names = |r: &Recorded| r.form().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(g), ["assertion", "grant_type"], "google-auth's form");
    assert_eq!(names(t), names(g), "form field names and order");
    let (g_jwt, g_rest) = split_assertion(g);
    let (t_jwt, t_rest) = split_assertion(t);
    assert_eq!(t_rest, g_rest, "form body apart from the assertion");

    let g_jwt = verify_jwt(public_pem, &g_jwt).await;
    let t_jwt = verify_jwt(public_pem, &t_jwt).await;
    assert!(g_jwt.valid, "google-auth's signature: {:?}", g_jwt.error);
    assert!(
        t_jwt.valid,
        "tokenwarden's signature: {:?} ({t_jwt:?})",
        t_jwt.error
    );

    assert_eq!(
        g_jwt.header,
        json!({"typ": "JWT", "alg": "RS256", "kid": PRIVATE_KEY_ID}),
        "google-auth's header"
    );
    assert_eq!(t_jwt.header, g_jwt.header, "JWT header");

    let (g_claims, t_claims) = (
        g_jwt.claims.as_object().unwrap(),
        t_jwt.claims.as_object().unwrap(),
    );
    let mut g_names: Vec<&String> = g_claims.keys().collect();
    let mut t_names: Vec<&String> = t_claims.keys().collect();
    g_names.sort();
    t_names.sort();
    assert_eq!(
        t_names, g_names,
        "claim names: tokenwarden {t_claims:?}, google-auth {g_claims:?}"
    );
    for (name, value) in g_claims {
        if name != "iat" && name != "exp" {
            assert_eq!(&t_claims[name], value, "claim {name}");
        }
    }
    assert_eq!(g_claims["aud"], GOOGLE_TOKEN_ENDPOINT, "google-auth's aud");
    assert_eq!(g_claims["iss"], CLIENT_EMAIL);
    assert_eq!(g_claims["scope"], scope, "google-auth's scope");
    let lifetime = |c: &serde_json::Map<String, Value>| {
        c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat")
    };
    assert_eq!(lifetime(g_claims), 3600);
    assert_eq!(lifetime(t_claims), lifetime(g_claims), "exp - iat");
    let iat = t_claims["iat"].as_i64().unwrap();
    assert!(
        (iat - unix_now()).abs() < 60,
        "tokenwarden's iat is now: {iat}"
    );
}

/// google-auth, then tokenwarden (secrets in `form`, `scopes` in the configuration or none),
/// fetch a token from one recording endpoint; their requests are compared; then the
/// sidecar injects its token.
async fn compare_with_google_auth(form: Secrets, scopes: Option<&[&str]>) {
    let (logs, _capture) = Logs::capture();
    let key = KeyPair::rsa().await;
    let tokens = TokenServer::start(token(3599)).await;
    let token_uri = format!("http://{}/token", tokens.addr);
    let file = key_file_json(&key, &token_uri);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("service-account.json");
    std::fs::write(
        &key_file,
        serde_json::to_string_pretty(&file).unwrap() + "\n",
    )
    .unwrap();
    // As a Secret volume mounts it: readable by the owner (and group) only.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let google_scopes = scopes.unwrap_or(&[DEFAULT_SCOPE]);
    let got = google_auth_token(&key_file, &token_uri, google_scopes).await;
    assert_eq!(got, "tok-1");
    let google = tokens.nth(1).await;

    let echo = Echo::start().await;
    let configuration = match scopes {
        Some(s) => format!("          scopes: {}\n", serde_json::to_string(s).unwrap()),
        None => String::new(),
    };
    let conn = Conn::new(KEY, echo.addr, STRATEGY)
        .secrets(&secrets(&file, &key_file, &form))
        .configure(&configuration);
    let sc = Sidecar::start(&connections(&[conn])).await;
    let st = sc.wait_state(KEY, "ready").await;
    assert_eq!(tokens.count(), 2, "one token request: {st}");
    let ours = tokens.nth(2).await;
    assert_same_request(&google, &ours, &key.public_pem, &google_scopes.join(" ")).await;

    let (status, body) = sc.get(&format!("/{KEY}/v4/spreadsheets/x")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(token_number(&body), 2, "tokenwarden's token is injected");
    assert_eq!(tokens.count(), 2, "the token is cached");
    logs.assert_free_of(&[("private key", key.private_body_line())]);
    sc.stop().await;
}

/// The key in individual secrets (as Fides reads them), two scopes.
#[tokio::test]
async fn individual_secret_fields_send_what_google_auth_sends() {
    compare_with_google_auth(Secrets::Fields, Some(&SCOPES)).await;
}

/// The whole key file in `keyfile_creds`, no `scopes`: Fides' default scope, compared with
/// google-auth asked for that scope.
#[tokio::test]
async fn keyfile_creds_with_the_default_scope_send_what_google_auth_sends() {
    compare_with_google_auth(Secrets::KeyfileCreds, None).await;
}

/// The whole key file in `keyfile_creds`, with scopes.
#[tokio::test]
async fn keyfile_creds_with_scopes_send_what_google_auth_sends() {
    compare_with_google_auth(Secrets::KeyfileCreds, Some(&SCOPES)).await;
}

/// `keyfile_creds: "${file:…}"`, the key file google-auth read, with scopes.
#[tokio::test]
async fn keyfile_creds_from_the_key_file_send_what_google_auth_sends() {
    compare_with_google_auth(Secrets::KeyfileCredsFile, Some(&SCOPES)).await;
}
