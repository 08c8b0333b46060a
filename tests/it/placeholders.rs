//! Credentials the app never holds (issue 28): SDK-shaped requests carrying a connection's
//! placeholder in `Authorization`, `x-api-key`, a query parameter and a JSON body reach a
//! recording upstream with the real token (both request paths); `inject: if_absent` keeps
//! the app's own `Authorization`; `require_placeholder` refuses a bare request; another
//! connection's placeholder is refused and never forwarded (audit-logged); an upstream
//! that echoes request headers and bodies gives the app nothing of the real token; and
//! two real OAuth SDKs (google-auth, Authlib) get the stub token from the provider's token
//! URL through the proxy while their API calls carry the real one.

use crate::support::oauth_sdk;
use crate::support::process::SidecarProcess;
use crate::support::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokenwarden::app::Options;

const PH_CRM: &str = "twph_crm_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const PH_OTHER: &str = "twph_other_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

/// An upstream that records every request and echoes its `authorization` and `x-api-key`
/// in response headers, and the whole request (target, headers, body) in a JSON body.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<serve::Received>>>,
    _stop: tokio_util::sync::CancellationToken,
}

impl Recorder {
    async fn start() -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let (addr, stop) = serve::spawn(move |req| {
            let record = Arc::clone(&record);
            async move {
                let got = serve::receive(req).await;
                let body = json!({
                    "target": got.target,
                    "headers": got.headers,
                    "body": String::from_utf8_lossy(&got.body),
                });
                let mut response = serve::json_response(200, body.to_string());
                for name in ["authorization", "x-api-key"] {
                    if let Some(v) = got.all(name).first() {
                        let echoed = format!("echo {v}");
                        let header =
                            http::HeaderName::from_bytes(format!("x-echo-{name}").as_bytes())
                                .unwrap();
                        response
                            .headers_mut()
                            .insert(header, echoed.parse().unwrap());
                    }
                }
                record.lock().unwrap().push(got);
                response
            }
        })
        .await;
        Recorder {
            addr,
            seen,
            _stop: stop,
        }
    }

    fn seen(&self) -> Vec<serve::Received> {
        self.seen.lock().unwrap().clone()
    }

    fn last(&self) -> serve::Received {
        self.seen()
            .last()
            .cloned()
            .expect("a request reached the upstream")
    }
}

/// Connections `crm` (on `crm_up`, with `crm_extra`) and `other` (on `other_up`), both
/// client credentials against `tokens` (`tok-1`, `tok-2`, … in order of asking).
fn config(
    tokens: &TokenServer,
    crm_up: SocketAddr,
    crm_extra: &[&str],
    other_up: SocketAddr,
) -> String {
    let mut crm = cc_conn("crm", crm_up, tokens.addr).field(&format!("placeholder: {PH_CRM}"));
    for line in crm_extra {
        crm = crm.field(line);
    }
    let other = cc_conn("other", other_up, tokens.addr).field(&format!("placeholder: {PH_OTHER}"));
    connections(&[crm.to_string(), other.to_string()])
}

async fn sidecar(yaml: &str, hyper_only: bool) -> Sidecar {
    let options = Options {
        hyper_only,
        ..Options::default()
    };
    let sidecar = Sidecar::start_in(tempfile::tempdir().unwrap(), yaml, options).await;
    sidecar.wait_state("crm", "ready").await;
    sidecar.wait_state("other", "ready").await;
    sidecar
}

/// The token `crm` injects (the first asked of the token server, by `crm` or `other`).
fn crm_token(tokens: &TokenServer, upstream: &serve::Received) -> String {
    let token = upstream
        .all("authorization")
        .first()
        .map(|v| v.trim_start_matches("Bearer ").to_owned());
    let token = token.unwrap_or_else(|| upstream.all("x-api-key").first().unwrap().to_string());
    assert!(token.starts_with("tok-"), "{token}");
    assert!(tokens.count() >= 1);
    token
}

#[tokio::test]
async fn placeholders_in_a_header_a_query_and_a_json_body_are_swapped_on_both_paths() {
    for hyper_only in [false, true] {
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let (crm_up, other_up) = (Recorder::start().await, Recorder::start().await);
        let yaml = config(
            &tokens,
            crm_up.addr,
            &["inject: placeholder"],
            other_up.addr,
        );
        let sc = sidecar(&yaml, hyper_only).await;
        let http = client();
        let at = |path: &str| sc.url(&format!("/crm{path}"));

        let r = http
            .get(at("/bearer"))
            .bearer_auth(PH_CRM)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "hyper_only {hyper_only}");
        let got = crm_up.last();
        let token = crm_token(&tokens, &got);
        assert_eq!(got.all("authorization"), [format!("Bearer {token}")]);

        let r = http
            .get(at("/key"))
            .header("x-api-key", PH_CRM)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = crm_up.last();
        assert_eq!(
            got.all("x-api-key"),
            [token.as_str()],
            "hyper_only {hyper_only}"
        );
        assert!(
            got.all("authorization").is_empty(),
            "inject: placeholder adds nothing else"
        );

        let r = http
            .get(at(&format!("/q?key={PH_CRM}&x=1")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(crm_up.last().target, format!("/q?key={token}&x=1"));

        let body = json!({"api_key": PH_CRM, "n": 1});
        let r = http
            .post(at("/json"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = crm_up.last();
        let sent: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(
            sent,
            json!({"api_key": token, "n": 1}),
            "hyper_only {hyper_only}"
        );

        // Nothing at all: nothing injected (inject: placeholder).
        let r = http.get(at("/bare")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(crm_up.last().all("authorization").is_empty());
        assert!(other_up.seen().is_empty());
        sc.stop().await;
    }
}

/// A token with `+`, `/` and `=` (base64): percent-encoded where its placeholder is in
/// the target or a form body (a form's `+` reads as a space), as it is in a header or JSON.
#[tokio::test]
async fn a_token_is_percent_encoded_in_a_query_and_a_form_and_raw_elsewhere() {
    const TOKEN: &str = "a+b/c=";
    let tokens = TokenServer::start(Reply::Raw(
        r#"{"access_token":"a+b/c=","token_type":"Bearer","expires_in":3600}"#,
    ))
    .await;
    let (crm_up, other_up) = (Recorder::start().await, Recorder::start().await);
    let yaml = config(
        &tokens,
        crm_up.addr,
        &["inject: placeholder"],
        other_up.addr,
    );
    let sc = sidecar(&yaml, false).await;
    let http = client();
    let at = |path: &str| sc.url(&format!("/crm{path}"));

    let r = http
        .get(at(&format!("/q?key={PH_CRM}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(crm_up.last().target, "/q?key=a%2Bb%2Fc%3D");
    let r = http
        .post(at("/form"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={PH_CRM}&n=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(crm_up.last().body, b"key=a%2Bb%2Fc%3D&n=1");
    let r = http
        .post(at("/json"))
        .header("content-type", "application/json")
        .body(json!({"key": PH_CRM}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent: Value = serde_json::from_slice(&crm_up.last().body).unwrap();
    assert_eq!(sent, json!({"key": TOKEN}));
    let r = http
        .get(at("/h"))
        .header("x-api-key", PH_CRM)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(crm_up.last().all("x-api-key"), [TOKEN]);
}

#[tokio::test]
async fn if_absent_keeps_the_apps_own_authorization_and_always_replaces_it() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let (crm_up, other_up) = (Recorder::start().await, Recorder::start().await);
    let yaml = config(&tokens, crm_up.addr, &["inject: if_absent"], other_up.addr);
    let sc = sidecar(&yaml, false).await;
    let http = client();
    let r = http
        .get(sc.url("/crm/own"))
        .bearer_auth("apps-own")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(crm_up.last().all("authorization"), ["Bearer apps-own"]);
    let r = http.get(sc.url("/crm/none")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = crm_token(&tokens, &crm_up.last());
    assert_eq!(
        crm_up.last().all("authorization"),
        [format!("Bearer {token}")]
    );
    // `other` injects always: the app's own is replaced.
    let r = http
        .get(sc.url("/other/own"))
        .bearer_auth("apps-own")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = other_up.last();
    let injected = got.all("authorization");
    assert_eq!(injected.len(), 1, "{injected:?}");
    assert!(injected[0].starts_with("Bearer tok-"), "{injected:?}");
}

#[tokio::test]
async fn require_placeholder_refuses_a_bare_request_on_both_paths() {
    for hyper_only in [false, true] {
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let (crm_up, other_up) = (Recorder::start().await, Recorder::start().await);
        let extra = ["inject: placeholder", "require_placeholder: true"];
        let sc = sidecar(
            &config(&tokens, crm_up.addr, &extra, other_up.addr),
            hyper_only,
        )
        .await;
        let http = client();
        let r = http
            .get(sc.url("/crm/bare"))
            .bearer_auth("not-a-placeholder")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "hyper_only {hyper_only}");
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("require_placeholder"),
            "{body}"
        );
        assert!(crm_up.seen().is_empty(), "never forwarded");
        let r = http
            .get(sc.url("/crm/ok"))
            .bearer_auth(PH_CRM)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(crm_up.seen().len(), 1);
        sc.stop().await;
    }
}

/// `crm`'s placeholder sent to `other` (reverse and forward mode, either path) and to a
/// host no connection has: refused, never forwarded, and each refusal to a configured
/// host an audit line in the log.
#[tokio::test]
async fn another_connections_placeholder_is_refused_never_forwarded_and_audited() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let (crm_up, other_up) = (Recorder::start().await, Recorder::start().await);
    let dir = tempfile::tempdir().unwrap();
    let body = config(&tokens, crm_up.addr, &[], other_up.addr);
    let p = SidecarProcess::spawn(dir.path(), "ph", "", &body).await;
    wait_state_at(p.admin, "other", "ready").await;
    let http = client();
    let forward = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", p.proxy)).unwrap())
        .build()
        .unwrap();
    let sends = [
        http.get(p.url("/other/a")).header("x-api-key", PH_CRM),
        http.get(p.url(&format!("/other/b?k={PH_CRM}"))),
        // (A chunked body goes to the hyper path.)
        http.post(p.url("/other/c"))
            .bearer_auth(PH_CRM)
            .header("transfer-encoding", "chunked")
            .body("x"),
        http.post(p.url("/other/d"))
            .header("content-type", "application/json")
            .body(json!({"k": PH_CRM}).to_string()),
        forward
            .get(format!("http://{}/e", other_up.addr))
            .header("x-api-key", PH_CRM),
        // The fast path's own cases, each on a new connection (one the hyper path took
        // stays its): `Authorization`, `Via`, and the first of two `Authorization`s.
        client().get(p.url("/other/f")).bearer_auth(PH_CRM),
        client()
            .get(p.url("/other/g"))
            .header("via", format!("1.1 {PH_CRM}")),
        client()
            .get(p.url("/other/h"))
            .header("authorization", format!("Bearer {PH_CRM}"))
            .header("authorization", "Bearer app-own"),
    ];
    for send in sends {
        let r = send.send().await.unwrap();
        assert_eq!(r.status(), 403);
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("placeholder of connection `crm`"),
            "{body}"
        );
    }
    let r = forward
        .get("http://unconfigured.example/x")
        .header("x-api-key", PH_CRM)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        other_up.seen().is_empty() && crm_up.seen().is_empty(),
        "never forwarded"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while p.logs().matches("placeholder_misdirected").count() < 8 {
        assert!(tokio::time::Instant::now() < deadline, "{}", p.logs());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let logs = p.logs();
    assert!(
        logs.contains("tokenwarden::audit") && logs.contains("placeholder_of=\"crm\""),
        "{logs}"
    );
}

/// An upstream that echoes the request's credential in its headers and its JSON body: the
/// app reads neither token, on either path (`scrub_response_bodies` on `crm`; `other`
/// scrubs headers only, the default).
#[tokio::test]
async fn echoed_credentials_are_scrubbed_from_response_headers_and_bodies() {
    for hyper_only in [false, true] {
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let (crm_up, other_up) = (Recorder::start().await, Recorder::start().await);
        let extra = ["scrub_response_bodies: true"];
        let sc = sidecar(
            &config(&tokens, crm_up.addr, &extra, other_up.addr),
            hyper_only,
        )
        .await;
        let http = client();
        let r = http
            .get(sc.url("/crm/echo"))
            .header("x-api-key", PH_CRM)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let token = crm_token(&tokens, &crm_up.last());
        assert_eq!(
            r.headers()["x-echo-authorization"],
            format!("echo Bearer {PH_CRM}")
        );
        assert_eq!(r.headers()["x-echo-x-api-key"], format!("echo {PH_CRM}"));
        let text = r.text().await.unwrap();
        assert!(!text.contains(&token), "hyper_only {hyper_only}: {text}");
        assert!(text.contains(&"*".repeat(token.len())), "{text}");
        serde_json::from_str::<Value>(&text).expect("still JSON, the same length");

        let r = http.get(sc.url("/other/echo")).send().await.unwrap();
        let other_token = other_up.last().all("authorization")[0]
            .trim_start_matches("Bearer ")
            .to_owned();
        assert_eq!(
            r.headers()["x-echo-authorization"],
            format!("echo Bearer {PH_OTHER}")
        );
        let text = r.text().await.unwrap();
        assert!(
            text.contains(&other_token),
            "bodies are scrubbed only when asked"
        );
        sc.stop().await;
    }
}

// ---------------------------------------------------------------- the token-endpoint stub

/// google-auth and Authlib, each holding a fake refresh token, refresh against the
/// provider's token URL through the proxy (forward mode): the stub answers with the
/// placeholder, the token server never sees their request, and their API call reaches the
/// upstream with the real token; the real token and refresh token appear nowhere the SDK
/// can read.
#[tokio::test]
async fn google_auth_and_authlib_get_the_stub_token_and_their_calls_carry_the_real_one() {
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let (crm_up, other_up) = (Recorder::start().await, Recorder::start().await);
    let extra = [
        "inject: placeholder",
        "stub_token_endpoint: true",
        // The recorder echoes the whole request in its body.
        "scrub_response_bodies: true",
    ];
    let sc = sidecar(&config(&tokens, crm_up.addr, &extra, other_up.addr), false).await;
    let asked = tokens.count();
    let token_url = format!("http://{}/oauth/token", tokens.addr);
    let api = format!("http://{}/v1/me", crm_up.addr);
    let proxy = sc.url("");
    let env = [("HTTP_PROXY", proxy.as_str())];
    let google =
        oauth_sdk::google(&token_url, ("cid", "csecret"), "fake-refresh", &api, &env).await;
    let authlib =
        oauth_sdk::authlib(&token_url, ("cid", "csecret"), "fake-refresh", &api, &env).await;
    for (sdk, out) in [("google-auth", &google), ("Authlib", &authlib)] {
        assert_eq!(out["token"], PH_CRM, "{sdk}: {out}");
        assert_eq!(out["status"], 200, "{sdk}: {out}");
        let shown = out.to_string();
        for (i, r) in tokens.requests().iter().enumerate() {
            let field = r.field("refresh_token");
            assert!(
                field.is_none_or(|v| v != "fake-refresh"),
                "request {i} to the token server"
            );
        }
        assert!(
            !shown.contains("tok-") && !shown.contains("ref-"),
            "{sdk} read a real credential: {shown}"
        );
    }
    assert_eq!(tokens.count(), asked, "the SDKs' token requests never left");
    let calls = crm_up.seen();
    assert_eq!(calls.len(), 2);
    for call in calls {
        let auth = call.all("authorization");
        assert!(
            auth.len() == 1 && auth[0].starts_with("Bearer tok-"),
            "{auth:?}"
        );
    }
}

/// The same through `HTTPS_PROXY` (interception): the token endpoint is an `https://` URL
/// on its own host, which tokenwarden intercepts only because it answers it; google-auth
/// trusting the interception CA gets the stub token there, and its API call inside the
/// API host's tunnel carries the real one.
#[tokio::test]
async fn the_stub_and_the_swap_work_through_interception() {
    use crate::support::capture::{self, Capture};
    const API: &str = "tenant.example.com";
    const TOKEN_HOST: &str = "oauth2.googleapis.com";
    let token = json!({"access_token": "tok-tls", "token_type": "bearer", "expires_in": 3600});
    let (token_server, api) = (
        Capture::start(token).await,
        Capture::start(json!({"ok": 1})).await,
    );
    let ca_dir = tempfile::tempdir().unwrap();
    let files = tokenwarden::ca::init(ca_dir.path()).unwrap();
    let bundle = ca_dir.path().join(tokenwarden::ca::BUNDLE_FILE);
    tokenwarden::ca::bundle(&files.cert, None, &bundle).unwrap();
    let token_at = format!("{TOKEN_HOST}:{}", token_server.addr.port());
    let conn = Conn::new("crm", format!("{API}:{}", api.addr.port()), CLIENT_CREDENTIALS)
        .protocol("https")
        .secrets(CC_SECRETS)
        .configure(&format!(
            r#"          token_request:
            method: POST
            path: /token
            client_config: {{ protocol: https, host: "{token_at}" }}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "client_credentials", "client_id": "<client_id>", "client_secret": "<client_secret>"}}'
"#
        ))
        .field("allow_private_network: true")
        .field(&format!("placeholder: {PH_CRM}"))
        .field("inject: placeholder")
        .field("stub_token_endpoint: true");
    let yaml = format!(
        "proxy: {{ intercept: {{ ca_cert: \"{}\", ca_key: \"{}\" }} }}\ntls: {{ ca_file: \"{}\" }}\n{}",
        files.cert.display(),
        files.key.display(),
        capture::ca_file().display(),
        connections(&[conn.to_string()])
    );
    let loopback = vec![std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];
    let options = Options {
        static_hosts: [
            (API.to_owned(), loopback.clone()),
            (TOKEN_HOST.to_owned(), loopback),
        ]
        .into_iter()
        .collect(),
        resolve: [(TOKEN_HOST.to_owned(), token_server.addr)]
            .into_iter()
            .collect(),
        ..Options::default()
    };
    let sc = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await;
    sc.wait_state("crm", "ready").await;
    assert_eq!(token_server.count(), 1, "tokenwarden's own token request");
    let proxy = sc.url("");
    let bundle = bundle.display().to_string();
    let env = [
        ("HTTPS_PROXY", proxy.as_str()),
        ("REQUESTS_CA_BUNDLE", bundle.as_str()),
    ];
    let token_url = format!("https://{token_at}/token");
    let api_url = format!("https://{API}:{}/v1/me", api.addr.port());
    let out = oauth_sdk::google(&token_url, ("cid", "cs"), "fake-refresh", &api_url, &env).await;
    assert_eq!(out["token"], PH_CRM, "{out}");
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(
        token_server.count(),
        1,
        "the SDK's token request never left"
    );
    let call = api.nth(1).await;
    assert_eq!(call.all("authorization"), ["Bearer tok-tls"]);
}
