//! Per-user grants (issue 24) on the request path: one authorization-code connection with
//! `grants: per_user`, a grant per end user ("subject"), chosen per request by the
//! `tokenwarden-subject` header or, in forward mode and inside intercepted tunnels, by the
//! user name of `Proxy-Authorization: Basic`. Real sidecars on loopback: the subject
//! checks (400s that never quote the value), `no_token` with the subject's authorize link,
//! authorization per subject, forward mode and interception, renewal on demand (one
//! refresh per grant, shared; the per-connection cap), 401 recovery per grant, two replicas
//! on one Redis, a SIGKILL during one subject's refresh, and what the audit log and
//! `/metrics` say (never a token, never a subject label).
//!
//! Grants are seeded through the grants API (`PUT …/grants/{subject}`, tested in
//! `grants_api`) where a test is about what happens after.

use crate::support::authz::{callback_at, query, Authorization};
use crate::support::logs::Logs;
use crate::support::process::SidecarProcess;
use crate::support::raw;
use crate::support::redis::{redis_store, RedisServer};
use crate::support::*;
use base64::Engine as _;
use serde_json::{json, Value};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokenwarden::app::Options;

/// The per-user connection's key.
pub const KEY: &str = "crm";
/// The header that names a request's subject.
pub const SUBJECT: &str = "tokenwarden-subject";
/// Both request paths: the byte-level fast path, and hyper alone.
const BOTH_PATHS: [bool; 2] = [false, true];
/// A store key for the Redis tests (32 bytes, base64).
const STORE_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// The code exchange (the client authenticates with HTTP Basic: `client_auth`).
const CODE_BODY: &str =
    r#"{"grant_type": "authorization_code", "code": "<code>", "redirect_uri": "<redirect_uri>"}"#;
/// The refresh request.
const REFRESH_BODY: &str = r#"{"grant_type": "refresh_token", "refresh_token": "<refresh_token>"}"#;
/// The revocation request (RFC 7009).
const REVOKE_BODY: &str = r#"{"token": "<refresh_token>", "token_type_hint": "refresh_token"}"#;

/// The per-user connection `crm` to `{protocol}://{host}`: authorize on
/// login.example.com, code exchange and refresh on `tokens`, revocation (when `revoke`)
/// on that endpoint; the client authenticates with `client_secret_basic`.
pub fn per_user_conn(
    host: impl fmt::Display,
    tokens: SocketAddr,
    revoke: Option<SocketAddr>,
) -> Conn {
    let conn = Conn::new(KEY, host, AUTHORIZATION_CODE)
        .field("grants: per_user")
        .field("client_auth: client_secret_basic")
        .field("allow_private_network: true")
        .secrets(&format!(
            "client_id: the-client, client_secret: \"{CLIENT_SECRET}\", redirect_uri: \"https://app.example/api/v1/oauth/callback\""
        ))
        .configure(&authorization_request(
            "/oauth/authorize",
            Some("login.example.com"),
            &[
                ("client_id", "<client_id>"),
                ("redirect_uri", "<redirect_uri>"),
                ("response_type", "code"),
                ("state", "<state>"),
            ],
        ))
        .configure(&form_request("token_request", "/oauth/token", tokens, CODE_BODY))
        .configure(&form_request("refresh_request", "/oauth/token", tokens, REFRESH_BODY));
    match revoke {
        Some(r) => conn.configure(&form_request(
            "revoke_request",
            "/oauth/revoke",
            r,
            REVOKE_BODY,
        )),
        None => conn,
    }
}

/// `Basic base64(the-client:s3cret-VALUE)`: how the client authenticates.
pub fn client_basic() -> String {
    basic(&format!("the-client:{CLIENT_SECRET}"))
}

/// `Basic base64(credentials)`.
pub fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// A token endpoint (tokens living an hour, refresh tokens rotated), a revocation
/// endpoint, an echo upstream, and a sidecar with the per-user connection between them.
pub struct World {
    pub tokens: TokenServer,
    pub revoker: TokenServer,
    pub echo: Echo,
    pub sc: Sidecar,
}

impl World {
    pub async fn start() -> World {
        World::with("", "", Options::default()).await
    }

    /// [`World::start`] with `fields` lines on the connection entry (each ending in `\n`,
    /// indented four spaces) and `top` lines at the top of the config.
    pub async fn with(fields: &str, top: &str, options: Options) -> World {
        let tokens = TokenServer::start(Reply::token(3600, true)).await;
        let revoker = TokenServer::start(Reply::Raw("{}")).await;
        let echo = Echo::start().await;
        let mut conn = per_user_conn(echo.addr, tokens.addr, Some(revoker.addr));
        for line in fields.lines() {
            conn = conn.field(line.trim());
        }
        let yaml = format!("{top}{}", connections(&[conn]));
        let sc = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await;
        World {
            tokens,
            revoker,
            echo,
            sc,
        }
    }

    /// Imports a grant for `subject` (panics unless 201 or 200) → its view.
    pub async fn put(&self, subject: &str, body: Value) -> Value {
        put_ok(self.sc.admin, subject, body).await
    }

    /// GET `/crm/v1/me` as `subject` → (status, JSON body).
    pub async fn get_as(&self, subject: &str) -> (u16, Value) {
        get_as(self.sc.proxy, subject).await
    }
}

/// PUT `…/grants/{subject}` on the admin listener at `admin` → (status, JSON body).
pub async fn put_grant(admin: SocketAddr, subject: &str, body: &Value) -> (u16, Value) {
    let url = format!(
        "http://{admin}/api/v1/connection/{KEY}/grants/{}",
        encode(subject)
    );
    let r = client()
        .put(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), json_of(r).await)
}

/// [`put_grant`] that must succeed (201 or 200) → the grant's view.
pub async fn put_ok(admin: SocketAddr, subject: &str, body: Value) -> Value {
    let (status, view) = put_grant(admin, subject, &body).await;
    assert!(
        status == 201 || status == 200,
        "import of {subject}: {status} {view}"
    );
    view
}

/// Percent-encodes a path segment or query value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The JSON body of `r` (Null when it is not JSON).
pub async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null)
}

/// GET `/crm/v1/me` through the proxy at `proxy` as `subject` → (status, JSON body).
pub async fn get_as(proxy: SocketAddr, subject: &str) -> (u16, Value) {
    let r = client()
        .get(format!("http://{proxy}/{KEY}/v1/me"))
        .header(SUBJECT, subject)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, json_of(r).await)
}

/// The one Authorization header an echo answer got.
pub fn bearer(body: &Value) -> &str {
    let auth = echoed(body, "authorization");
    assert_eq!(auth.len(), 1, "one Authorization header: {body}");
    auth[0]
}

/// An import of `access` and `refresh` living `expires_in` seconds.
pub fn grant(access: &str, refresh: &str, expires_in: u64) -> Value {
    json!({"access_token": access, "refresh_token": refresh, "expires_in": expires_in})
}

/// GETs `/api/v1/connection/crm/authorize?subject=…` on `admin` (panics unless 200).
pub async fn authorize_subject(admin: SocketAddr, subject: &str) -> Authorization {
    let url = format!(
        "http://{admin}/api/v1/connection/{KEY}/authorize?subject={}",
        encode(subject)
    );
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "authorize {subject}: {body}");
    let url: String = serde_json::from_str(&body).unwrap();
    let params: Vec<(String, String)> = reqwest::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let state = params.iter().find(|(n, _)| n == "state").unwrap().1.clone();
    Authorization {
        url,
        params,
        state,
        code_challenge: None,
    }
}

/// Authorizes `subject` on `admin` with `code`: authorize, then the provider's redirect.
pub async fn authorize_as(admin: SocketAddr, subject: &str, code: &str) {
    let a = authorize_subject(admin, subject).await;
    let page = callback_at(admin, &query(&[("code", code), ("state", &a.state)])).await;
    assert_eq!(page.status, 200, "callback for {subject}: {}", page.body);
}

/// Token requests that presented `refresh_token`.
pub fn refreshes_with(tokens: &TokenServer, refresh_token: &str) -> usize {
    tokens
        .requests()
        .iter()
        .filter(|r| r.field("refresh_token").as_deref() == Some(refresh_token))
        .count()
}

// ---------------------------------------------------------------- the subject

/// A header's name and raw value bytes.
type Header<'a> = (&'a str, &'a [u8]);

/// GET through the proxy at `proxy` with `headers`.
async fn get_with(proxy: SocketAddr, headers: &[Header<'_>]) -> (u16, Vec<u8>) {
    let mut req = client().get(format!("http://{proxy}/{KEY}/v1/me"));
    for (name, value) in headers {
        req = req.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_subject_is_required_checked_and_never_quoted() {
    for hyper_only in BOTH_PATHS {
        let options = Options {
            hyper_only,
            ..Options::default()
        };
        let w = World::with("", "", options).await;
        let longest = "a".repeat(256);
        w.put(&longest, grant("longest-at", "longest-rt", 3600))
            .await;

        let (status, body) = get_with(w.sc.proxy, &[]).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 400, "no subject: {text}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "bad_request", "{v}");
        assert!(text.contains(SUBJECT), "the 400 names the header: {text}");

        // Malformed (a space, a control character, obs-text), too long, repeated: 400,
        // and the answer never quotes what was sent.
        let too_long = format!("s3cret{}", "a".repeat(251));
        assert_eq!(too_long.len(), 257);
        let refused: [(&str, Vec<Header>); 5] = [
            ("a space", vec![(SUBJECT, b"s3cret smith")]),
            ("a control character", vec![(SUBJECT, b"s3cret\tsmith")]),
            ("obs-text", vec![(SUBJECT, b"s3cret\xe9")]),
            ("257 bytes", vec![(SUBJECT, too_long.as_bytes())]),
            (
                "a repeated header",
                vec![(SUBJECT, b"s3cret"), (SUBJECT, b"s3cret")],
            ),
        ];
        for (what, headers) in &refused {
            let (status, body) = get_with(w.sc.proxy, headers).await;
            let text = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(status, 400, "{what} (hyper_only {hyper_only}): {text}");
            assert!(
                !text.contains("s3cret"),
                "{what}: the 400 quotes the subject: {text}"
            );
        }
        assert_eq!(w.echo.hits(), 0, "no refused request reached the upstream");

        // 256 bytes is a subject.
        let (status, body) = w.get_as(&longest).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(bearer(&body), "Bearer longest-at");
        assert!(echoed(&body, SUBJECT).is_empty(), "{body}");
    }
}

#[tokio::test]
async fn a_subject_without_a_grant_gets_no_token_with_its_own_authorize_link() {
    let w = World::start().await;
    w.put("alice", grant("alice-at", "alice-rt", 3600)).await;
    let (status, body) = w.get_as("carol@example.com").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "no_token", "{body}");
    assert_eq!(body["connection"], KEY);
    assert_eq!(body["state"], "needs_authorization", "{body}");
    assert_eq!(body["subject"], "carol@example.com", "{body}");
    assert_eq!(
        body["authorize"],
        format!("/api/v1/connection/{KEY}/authorize?subject=carol%40example.com"),
        "{body}"
    );
    assert_eq!(w.echo.hits(), 0);
    assert_eq!(w.tokens.count(), 0, "nothing to refresh: no token request");
    // The grant of another subject is not lent.
    let (status, body) = w.get_as("alice").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer alice-at"));
}

// ---------------------------------------------------------------- authorization per subject

#[tokio::test]
async fn two_subjects_authorized_through_the_admin_route_each_get_their_own_token() {
    let w = World::start().await;
    // The link a 503 gives is the route that authorizes that subject.
    let (_, refused) = w.get_as("alice").await;
    assert_eq!(
        refused["authorize"],
        format!("/api/v1/connection/{KEY}/authorize?subject=alice")
    );
    // Without a subject, or with one that is none, no state is minted.
    for (query, error) in [
        (String::new(), "subject_required"),
        (format!("?subject={}", encode("al ice")), "bad_subject"),
        (format!("?subject={}", "a".repeat(257)), "bad_subject"),
    ] {
        let url =
            w.sc.admin_url(&format!("/api/v1/connection/{KEY}/authorize{query}"));
        let (status, body) = get_json(&url).await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!(error)),
            "{query}: {body}"
        );
    }
    authorize_as(w.sc.admin, "alice", "code-for-alice").await;
    authorize_as(w.sc.admin, "bob", "code-for-bob").await;
    let codes: Vec<Option<String>> = w
        .tokens
        .requests()
        .iter()
        .map(|r| r.field("code"))
        .collect();
    assert_eq!(
        codes,
        [
            Some("code-for-alice".to_owned()),
            Some("code-for-bob".to_owned())
        ]
    );
    for r in w.tokens.requests() {
        assert_eq!(r.header("authorization"), Some(client_basic().as_str()));
    }

    for _ in 0..2 {
        for (subject, token) in [("alice", "Bearer tok-1"), ("bob", "Bearer tok-2")] {
            let (status, body) = w.get_as(subject).await;
            assert_eq!(status, 200, "{subject}: {body}");
            assert_eq!(bearer(&body), token, "{subject}");
            assert!(echoed(&body, SUBJECT).is_empty(), "never forwarded: {body}");
        }
    }
    // In reverse mode Proxy-Authorization names nobody, and is not forwarded either.
    let r = client()
        .get(w.sc.url(&format!("/{KEY}/v1/me")))
        .header(SUBJECT, "bob")
        .header("proxy-authorization", basic("alice:"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json_of(r).await;
    assert_eq!(bearer(&body), "Bearer tok-2");
    assert!(echoed(&body, "proxy-authorization").is_empty(), "{body}");
    assert_eq!(w.tokens.count(), 2, "no token request beyond the two codes");

    // The grants API lists both, authorized.
    let (status, list) =
        get_json(&w.sc.admin_url(&format!("/api/v1/connection/{KEY}/grants"))).await;
    assert_eq!(status, 200, "{list}");
    let subjects: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["alice", "bob"], "{list}");
}

// ---------------------------------------------------------------- forward mode

/// The echo's authority as a forward-mode connection's host: `127.0.0.1:<port>`.
fn forward_world_host(w: &World) -> String {
    w.echo.addr.to_string()
}

#[tokio::test]
async fn in_forward_mode_the_proxy_user_names_the_subject() {
    let w = World::start().await;
    w.put("alice", grant("alice-at", "alice-rt", 3600)).await;
    w.put("bob", grant("bob-at", "bob-rt", 3600)).await;
    let host = forward_world_host(&w);

    // A real client: `HTTP_PROXY=http://alice@…`, as reqwest sends it.
    let proxy = reqwest::Proxy::http(w.sc.url(""))
        .unwrap()
        .basic_auth("alice", "");
    let alice = reqwest::Client::builder()
        .proxy(proxy)
        .timeout(WAIT)
        .build()
        .unwrap();
    let r = alice
        .get(format!("http://{host}/v1/me?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json_of(r).await;
    assert_eq!(bearer(&body), "Bearer alice-at", "{body}");
    assert_eq!(body["target"], "/v1/me?x=1");
    assert!(echoed(&body, "proxy-authorization").is_empty(), "{body}");
    assert!(echoed(&body, SUBJECT).is_empty(), "{body}");

    // Raw: the header alone, the proxy user alone, both agreeing, both differing.
    let (target, proxy) = (format!("http://{host}/v1/raw"), w.sc.proxy);
    let send = |extra: String| {
        let request = raw::get(&target, &host, &extra);
        async move { raw::send(proxy, &request).await }
    };
    let r = send(format!("Proxy-Authorization: {}\r\n", basic("bob:"))).await;
    assert_eq!((r.status, bearer(&r.json())), (200, "Bearer bob-at"));
    let r = send(format!("{SUBJECT}: bob\r\n")).await;
    assert_eq!((r.status, bearer(&r.json())), (200, "Bearer bob-at"));
    let r = send(format!(
        "{SUBJECT}: bob\r\nProxy-Authorization: {}\r\n",
        basic("bob:ignored-password")
    ))
    .await;
    assert_eq!((r.status, bearer(&r.json())), (200, "Bearer bob-at"));
    let hits = w.echo.hits();
    let r = send(format!(
        "{SUBJECT}: bob\r\nProxy-Authorization: {}\r\n",
        basic("alice:")
    ))
    .await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 400, "{text}");
    assert_eq!(r.json()["error"], "bad_request", "{text}");
    assert!(!text.contains("alice") && !text.contains("bob"), "{text}");
    // A proxy user that is no subject is refused too, without quoting it.
    let r = send(format!(
        "Proxy-Authorization: {}\r\n",
        basic("s3cret smith:")
    ))
    .await;
    assert_eq!(r.status, 400);
    assert!(!String::from_utf8_lossy(&r.body).contains("s3cret"));
    assert_eq!(
        w.echo.hits(),
        hits,
        "refused requests never reach the upstream"
    );
}

// ---------------------------------------------------------------- interception

/// A host name the capture server's certificate covers (resolved to 127.0.0.1).
const TLS_NAME: &str = "tenant.example.com";

#[tokio::test]
async fn inside_an_intercepted_tunnel_the_connect_proxy_user_names_the_subject() {
    use crate::support::capture::{self, Capture};
    use rustls::pki_types::ServerName;
    use tokio::io::AsyncWriteExt as _;

    let ca_dir = tempfile::tempdir().unwrap();
    let files = tokenwarden::ca::init(ca_dir.path()).unwrap();
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let upstream = Capture::start(json!({"ok": true})).await;
    let authority = format!("{TLS_NAME}:{}", upstream.addr.port());
    let conn = per_user_conn(&authority, tokens.addr, None).protocol("https");
    let yaml = format!(
        "proxy: {{ intercept: {{ ca_cert: \"{}\", ca_key: \"{}\" }} }}\ntls: {{ ca_file: \"{}\" }}\n{}",
        files.cert.display(),
        files.key.display(),
        capture::ca_file().display(),
        connections(&[conn])
    );
    let options = Options {
        static_hosts: [(TLS_NAME.to_owned(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])]
            .into_iter()
            .collect(),
        ..Options::default()
    };
    let sc = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await;
    put_ok(sc.admin, "alice", grant("alice-at", "alice-rt", 3600)).await;
    put_ok(sc.admin, "bob", grant("bob-at", "bob-rt", 3600)).await;

    // One request in a new tunnel opened with `connect_extra` header lines, sending
    // `extra` header lines.
    let in_tunnel = |connect_extra: String, extra: String| {
        let (authority, cert, proxy) = (authority.clone(), files.cert.clone(), sc.proxy);
        async move {
            let mut stream = raw::connect(proxy).await;
            let connect =
                format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{connect_extra}\r\n");
            raw::write(&mut stream, &connect).await;
            let (status, head, _) = raw::read_head(&mut stream).await;
            assert_eq!(status, 200, "{head}");
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(&cert).unwrap();
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots.add(c.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let name = ServerName::try_from(TLS_NAME.to_owned()).unwrap();
            let mut tls = connector
                .connect(name, stream)
                .await
                .expect("the tunnel opens");
            let request = raw::get("/v1/me", &authority, &extra);
            tls.write_all(request.as_bytes()).await.unwrap();
            raw::read_response(&mut tls).await
        }
    };
    let header = |n: usize, name: &str| {
        let got = upstream.requests()[n].clone();
        got.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };

    // `HTTPS_PROXY=http://alice@…`: the CONNECT's Proxy-Authorization names alice.
    let r = in_tunnel(
        format!("Proxy-Authorization: {}\r\n", basic("alice:")),
        String::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    upstream.nth(1).await;
    assert_eq!(header(0, "authorization"), ["Bearer alice-at"]);
    assert!(header(0, "proxy-authorization").is_empty());
    // The header inside the tunnel names bob, and is not forwarded.
    let r = in_tunnel(String::new(), format!("{SUBJECT}: bob\r\n")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    upstream.nth(2).await;
    assert_eq!(header(1, "authorization"), ["Bearer bob-at"]);
    assert!(header(1, SUBJECT).is_empty());
    // Neither: 400 naming the header; both, differing: 400; never sent upstream.
    let r = in_tunnel(String::new(), String::new()).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains(SUBJECT));
    let r = in_tunnel(
        format!("Proxy-Authorization: {}\r\n", basic("alice:")),
        format!("{SUBJECT}: bob\r\n"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(upstream.count(), 2);
    assert_eq!(tokens.count(), 0);
}

// ---------------------------------------------------------------- renewal on demand

#[tokio::test]
async fn an_expired_grant_is_refreshed_once_for_all_the_requests_that_wait_for_it() {
    let w = World::start().await;
    w.tokens.set_default(Reply::SlowToken {
        delay: Duration::from_millis(300),
        expires_in: 3600,
        refresh: true,
    });
    w.put("alice", grant("alice-at", "alice-rt", 0)).await;
    w.put("bob", grant("bob-at", "bob-rt", 3600)).await;
    let asks: Vec<_> = (0..8).map(|_| w.get_as("alice")).collect();
    let answers = futures_util::future::join_all(asks).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(bearer(body), "Bearer tok-1");
    }
    assert_eq!(
        w.tokens.count(),
        1,
        "one refresh for eight waiting requests"
    );
    let refresh = &w.tokens.requests()[0];
    assert_eq!(
        refresh.field("grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(refresh.field("refresh_token").as_deref(), Some("alice-rt"));
    assert_eq!(
        refresh.header("authorization"),
        Some(client_basic().as_str())
    );
    // The rotated refresh token is kept: alice's next refresh would present ref-1.
    let (status, body) = w.get_as("bob").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer bob-at"));
    assert_eq!(w.tokens.count(), 1, "bob's grant is untouched");
}

#[tokio::test]
async fn a_request_waits_at_most_two_seconds_for_its_grants_refresh() {
    let w = World::start().await;
    w.tokens.script([Reply::SlowToken {
        delay: Duration::from_secs(5),
        expires_in: 3600,
        refresh: true,
    }]);
    w.put("alice", grant("alice-at", "alice-rt", 0)).await;
    let started = tokio::time::Instant::now();
    let (status, body) = w.get_as("alice").await;
    let waited = started.elapsed();
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("no_token")),
        "{body}"
    );
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_millis(4500),
        "waited {waited:?} for a refresh that takes 5 s"
    );
    assert_eq!(w.tokens.count(), 1);
    wait_until("the slow refresh to land", || async {
        w.get_as("alice").await.0 == 200
    })
    .await;
    let (_, body) = w.get_as("alice").await;
    assert_eq!(bearer(&body), "Bearer tok-1");
    assert_eq!(
        w.tokens.count(),
        1,
        "the waiting requests started no other refresh"
    );
}

#[tokio::test]
async fn a_grant_in_its_refresh_window_is_used_while_one_background_refresh_runs() {
    let w = World::start().await;
    // Six seconds: refreshed after about 2.7 to 3 s, injected until 5.4 s.
    w.put("alice", grant("alice-at", "alice-rt", 6)).await;
    let (status, body) = w.get_as("alice").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer alice-at"));
    assert_eq!(w.tokens.count(), 0, "not yet due");
    tokio::time::sleep(Duration::from_millis(3100)).await; // into the window
    w.tokens.set_default(Reply::SlowToken {
        delay: Duration::from_millis(1000),
        expires_in: 3600,
        refresh: true,
    });
    let asks: Vec<_> = (0..5).map(|_| w.get_as("alice")).collect();
    for (status, body) in futures_util::future::join_all(asks).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            bearer(&body),
            "Bearer alice-at",
            "used while the refresh runs"
        );
    }
    wait_until("alice's new token", || async {
        bearer(&w.get_as("alice").await.1) == "Bearer tok-1"
    })
    .await;
    assert_eq!(w.tokens.count(), 1, "one background refresh");
    assert_eq!(refreshes_with(&w.tokens, "alice-rt"), 1);
}

#[tokio::test]
async fn token_requests_in_flight_never_exceed_the_connection_cap() {
    let w = World::with("max_concurrent_token_requests: 2", "", Options::default()).await;
    w.tokens.set_default(Reply::SlowToken {
        delay: Duration::from_millis(150),
        expires_in: 3600,
        refresh: true,
    });
    let subjects: Vec<String> = (0..8).map(|i| format!("user-{i}")).collect();
    for s in &subjects {
        w.put(s, grant(&format!("{s}-at"), &format!("{s}-rt"), 0))
            .await;
    }
    let asks: Vec<_> = subjects.iter().map(|s| w.get_as(s)).collect();
    let answers = futures_util::future::join_all(asks).await;
    // On a slow machine a request may give up after its 2 s wait; its grant is renewed
    // all the same, and served afterwards.
    for s in &subjects {
        wait_until(&format!("{s}'s refreshed token"), || async {
            let (status, body) = w.get_as(s).await;
            status == 200 && bearer(&body).starts_with("Bearer tok-")
        })
        .await;
    }
    assert!(answers.iter().any(|(status, _)| *status == 200));
    assert_eq!(w.tokens.count(), 8, "one refresh per subject");
    for s in &subjects {
        assert_eq!(refreshes_with(&w.tokens, &format!("{s}-rt")), 1, "{s}");
    }
    assert_eq!(
        w.tokens.max_in_flight(),
        2,
        "at most (and, with eight waiting, exactly) two token requests at once"
    );
}

#[tokio::test]
async fn grants_evicted_from_a_small_cache_are_read_again_from_the_store() {
    // Sixteen shards of one grant each: forty subjects cannot all stay in memory.
    let w = World::with("grant_cache_size: 16", "", Options::default()).await;
    let subjects: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    for s in &subjects {
        w.put(s, grant(&format!("{s}-at"), &format!("{s}-rt"), 3600))
            .await;
    }
    for round in 0..2 {
        for s in &subjects {
            let (status, body) = w.get_as(s).await;
            assert_eq!(status, 200, "round {round}, {s}: {body}");
            assert_eq!(bearer(&body), format!("Bearer {s}-at"), "round {round}");
        }
    }
    assert_eq!(w.tokens.count(), 0, "nothing refreshed, only read again");
}

#[tokio::test]
async fn a_refused_refresh_asks_that_subject_to_authorize_again_and_is_not_retried() {
    let (logs, _capture) = Logs::capture();
    let w = World::start().await;
    w.put("alice", grant("alice-at", "alice-rt", 0)).await;
    w.put("bob", grant("bob-at", "bob-rt", 3600)).await;
    w.tokens.script([Reply::OAuthError {
        status: 400,
        code: "invalid_grant",
    }]);
    let (status, body) = w.get_as("alice").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "no_token");
    // (This request was planned while the token was merely expired.)
    assert_eq!(
        body["authorize"],
        format!("/api/v1/connection/{KEY}/authorize?subject=alice")
    );
    assert!(
        logs.text().contains("action=\"grant_failed\""),
        "{}",
        logs.text()
    );
    // The dead refresh token is not presented again, however often alice asks.
    for _ in 0..5 {
        let (status, body) = w.get_as("alice").await;
        assert_eq!(
            (status, &body["state"]),
            (503, &json!("needs_reauthorization")),
            "{body}"
        );
    }
    assert_eq!(w.tokens.count(), 1, "one refused refresh, then none");
    let (status, body) = w.get_as("bob").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer bob-at"));
    // Authorized again, alice is served.
    authorize_as(w.sc.admin, "alice", "code-again").await;
    let (status, body) = w.get_as("alice").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer tok-1"), "{body}");
}

// ---------------------------------------------------------------- 401 recovery per grant

#[tokio::test]
async fn a_401_renews_the_grant_of_that_subject_only() {
    // An upstream that rejects alice's imported token and echoes the rest.
    let rejected = Arc::new(Mutex::new(vec!["Bearer alice-old".to_owned()]));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (r, s) = (Arc::clone(&rejected), Arc::clone(&seen));
    let (api, _stop) = serve::spawn(move |req| {
        let (rejected, seen) = (Arc::clone(&r), Arc::clone(&s));
        async move {
            let got = serve::receive(req).await;
            let auth = got.header("authorization").unwrap_or_default().to_owned();
            seen.lock().unwrap().push(auth.clone());
            if rejected.lock().unwrap().contains(&auth) {
                return serve::json_response(401, r#"{"error":"invalid_token"}"#);
            }
            serve::json_response(200, json!({"authorization": auth}).to_string())
        }
    })
    .await;
    for hyper_only in BOTH_PATHS {
        seen.lock().unwrap().clear();
        let tokens = TokenServer::start(Reply::token(3600, true)).await;
        let yaml = connections(&[per_user_conn(api, tokens.addr, None)]);
        let options = Options {
            hyper_only,
            ..Options::default()
        };
        let sc = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await;
        put_ok(sc.admin, "alice", grant("alice-old", "alice-rt", 3600)).await;
        put_ok(sc.admin, "bob", grant("bob-at", "bob-rt", 3600)).await;

        let (status, body) = get_as(sc.proxy, "alice").await;
        assert_eq!(status, 200, "replayed with the renewed token: {body}");
        assert_eq!(body["authorization"], "Bearer tok-1");
        assert_eq!(
            *seen.lock().unwrap(),
            ["Bearer alice-old", "Bearer tok-1"],
            "hyper_only {hyper_only}"
        );
        assert_eq!(tokens.count(), 1);
        assert_eq!(refreshes_with(&tokens, "alice-rt"), 1);

        let (status, body) = get_as(sc.proxy, "bob").await;
        assert_eq!(
            (status, &body["authorization"]),
            (200, &json!("Bearer bob-at"))
        );
        let (status, body) = get_as(sc.proxy, "alice").await;
        assert_eq!(
            (status, &body["authorization"]),
            (200, &json!("Bearer tok-1"))
        );
        assert_eq!(
            tokens.count(),
            1,
            "bob's grant untouched, alice's renewed once"
        );
        sc.stop().await;
    }
}

// ---------------------------------------------------------------- replicas on one Redis

#[tokio::test]
async fn replicas_on_one_redis_share_each_subjects_grant_and_its_refresh() {
    let redis = RedisServer::start().await;
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let echo = Echo::start().await;
    let yaml = format!(
        "{}{}",
        redis_store(&redis, STORE_KEY, "5s", "1s"),
        connections(&[per_user_conn(echo.addr, tokens.addr, None)])
    );
    let a = Sidecar::start(&yaml).await;
    let b = Sidecar::start(&yaml).await;

    // Authorized through A (its state redeemed there), used by B.
    authorize_as(a.admin, "alice", "code-for-alice").await;
    let (status, body) = get_as(b.proxy, "alice").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer tok-1"), "{body}");
    // A state minted by A is redeemed by B (the provider's redirect may reach either).
    let state = authorize_subject(a.admin, "bob").await.state;
    let page = callback_at(
        b.admin,
        &query(&[("code", "code-for-bob"), ("state", &state)]),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    for sc in [&a, &b] {
        let (status, body) = get_as(sc.proxy, "bob").await;
        assert_eq!((status, bearer(&body)), (200, "Bearer tok-2"));
    }
    assert_eq!(tokens.count(), 2);

    // Carol's token expires while both hold it: A refreshes it, B adopts the new set
    // rather than refreshing again with the rotated-away refresh token.
    let imported = put_ok(a.admin, "carol", grant("carol-at", "carol-rt", 3)).await;
    for sc in [&a, &b] {
        let (status, body) = get_as(sc.proxy, "carol").await;
        assert_eq!((status, bearer(&body)), (200, "Bearer carol-at"));
    }
    tokio::time::sleep(Duration::from_millis(3000)).await; // past its last usable moment
    let (status, body) = get_as(a.proxy, "carol").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer tok-3"), "{body}");
    let (status, body) = get_as(b.proxy, "carol").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer tok-3"), "{body}");
    assert_eq!(tokens.count(), 3, "one refresh between the replicas");
    // In Redis every write is a new generation: the import's, then the refresh's.
    let url = b.admin_url(&format!("/api/v1/connection/{KEY}/grants/carol"));
    let (status, one) = get_json(&url).await;
    assert_eq!(status, 200, "{one}");
    assert!(
        one["generation"].as_u64() > imported["generation"].as_u64(),
        "{imported} {one}"
    );
    assert_eq!(refreshes_with(&tokens, "carol-rt"), 1);
    assert_eq!(refreshes_with(&tokens, "ref-3"), 0);

    // A grant imported again on A replaces the one B holds; one deleted on A is no longer
    // injected by B.
    put_ok(a.admin, "bob", grant("bob-at-2", "bob-rt-2", 3600)).await;
    wait_until("B to follow bob's import on A", || async {
        bearer(&get_as(b.proxy, "bob").await.1) == "Bearer bob-at-2"
    })
    .await;
    let url = a.admin_url(&format!("/api/v1/connection/{KEY}/grants/bob"));
    let r = client().delete(url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    wait_until("B to stop injecting bob's deleted grant", || async {
        get_as(b.proxy, "bob").await.0 == 503
    })
    .await;
    let (status, body) = get_as(b.proxy, "bob").await;
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("no_token")),
        "{body}"
    );
    let (status, body) = get_as(b.proxy, "alice").await;
    assert_eq!(
        (status, bearer(&body)),
        (200, "Bearer tok-1"),
        "others untouched"
    );
    assert_eq!(tokens.count(), 3);
}

// ---------------------------------------------------------------- SIGKILL

#[tokio::test]
async fn a_sigkill_during_one_subjects_refresh_leaves_every_grant_usable() {
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = connections(&[per_user_conn(echo.addr, tokens.addr, None)]);
    let mut p = SidecarProcess::spawn(dir.path(), "p", "", &body).await;
    put_ok(p.admin, "alice", grant("alice-at", "alice-rt", 3600)).await;
    put_ok(p.admin, "bob", grant("bob-at", "bob-rt", 3600)).await;
    put_ok(p.admin, "carol", grant("carol-at", "carol-rt", 0)).await;
    for (subject, token) in [("alice", "Bearer alice-at"), ("bob", "Bearer bob-at")] {
        let (status, body) = get_as(p.proxy, subject).await;
        assert_eq!((status, bearer(&body)), (200, token));
    }

    // Carol's refresh hangs at the token endpoint; the process dies while it waits.
    tokens.script([Reply::SlowToken {
        delay: Duration::from_secs(30),
        expires_in: 3600,
        refresh: true,
    }]);
    let url = p.url(&format!("/{KEY}/v1/me"));
    let waiting = tokio::spawn(client().get(url).header(SUBJECT, "carol").send());
    wait_until("carol's refresh in flight", || async {
        tokens.in_flight() == 1
    })
    .await;
    p.kill();
    let _ = waiting.await;
    assert_eq!(refreshes_with(&tokens, "carol-rt"), 1);

    p.start().await;
    for (subject, token) in [("alice", "Bearer alice-at"), ("bob", "Bearer bob-at")] {
        let (status, body) = get_as(p.proxy, subject).await;
        assert_eq!((status, bearer(&body)), (200, token), "{subject}: {body}");
    }
    let (status, body) = get_as(p.proxy, "carol").await;
    assert_eq!(status, 200, "{body}\n{}", p.logs());
    assert!(bearer(&body).starts_with("Bearer tok-"), "{body}");
    assert_eq!(
        refreshes_with(&tokens, "carol-rt"),
        2,
        "carol's stored refresh token was still hers after the kill"
    );
    assert_eq!(
        refreshes_with(&tokens, "alice-rt") + refreshes_with(&tokens, "bob-rt"),
        0
    );
}

#[tokio::test]
async fn on_redis_a_replica_killed_mid_refresh_holds_back_only_that_subject_until_its_lease_ends() {
    let redis = RedisServer::start().await;
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}{}",
        redis_store(&redis, STORE_KEY, "5s", "1s"),
        connections(&[per_user_conn(echo.addr, tokens.addr, None)])
    );
    let mut a = SidecarProcess::spawn(dir.path(), "a", "", &body).await;
    let b = SidecarProcess::spawn(dir.path(), "b", "", &body).await;
    put_ok(a.admin, "alice", grant("alice-at", "alice-rt", 3600)).await;
    put_ok(a.admin, "bob", grant("bob-at", "bob-rt", 3600)).await;
    put_ok(a.admin, "carol", grant("carol-at", "carol-rt", 0)).await;
    for (subject, token) in [("alice", "Bearer alice-at"), ("bob", "Bearer bob-at")] {
        let (status, body) = get_as(b.proxy, subject).await;
        assert_eq!((status, bearer(&body)), (200, token));
    }

    // A takes carol's lease and hangs at the token endpoint; it is killed there.
    tokens.script([Reply::SlowToken {
        delay: Duration::from_secs(30),
        expires_in: 3600,
        refresh: true,
    }]);
    let url = a.url(&format!("/{KEY}/v1/me"));
    let waiting = tokio::spawn(client().get(url).header(SUBJECT, "carol").send());
    wait_until("carol's refresh in flight on A", || async {
        tokens.in_flight() == 1
    })
    .await;
    a.kill();
    let _ = waiting.await;

    // B serves the others as before, and carol once A's lease has lapsed.
    for (subject, token) in [("alice", "Bearer alice-at"), ("bob", "Bearer bob-at")] {
        let (status, body) = get_as(b.proxy, subject).await;
        assert_eq!((status, bearer(&body)), (200, token), "{subject}: {body}");
    }
    wait_until("B to refresh carol's grant", || async {
        get_as(b.proxy, "carol").await.0 == 200
    })
    .await;
    let (_, body) = get_as(b.proxy, "carol").await;
    let carol = bearer(&body).to_owned();
    assert!(carol.starts_with("Bearer tok-"), "{body}");
    assert_eq!(
        refreshes_with(&tokens, "carol-rt"),
        2,
        "A's, cut off, then B's"
    );
    assert_eq!(
        refreshes_with(&tokens, "alice-rt") + refreshes_with(&tokens, "bob-rt"),
        0
    );

    // A, restarted, reads what B stored.
    let count = tokens.count();
    a.start().await;
    let (status, body) = get_as(a.proxy, "carol").await;
    assert_eq!(
        (status, bearer(&body)),
        (200, carol.as_str()),
        "{body}\n{}",
        a.logs()
    );
    assert_eq!(tokens.count(), count);
}

// ---------------------------------------------------------------- audit and metrics

#[tokio::test]
async fn audit_lines_name_connection_subject_and_generation_never_a_token_nor_metrics_a_subject() {
    let (logs, _capture) = Logs::capture();
    let w = World::start().await;
    w.put(
        "alice.audit",
        grant("alice-AT-secret", "alice-RT-secret", 0),
    )
    .await;
    w.put("bob.audit", grant("bob-AT-secret", "bob-RT-secret", 3600))
        .await;
    let (status, body) = w.get_as("alice.audit").await;
    assert_eq!((status, bearer(&body)), (200, "Bearer tok-1"));
    let (status, _) = w.get_as("bob.audit").await;
    assert_eq!(status, 200);
    let (status, _) = w.get_as("nobody.audit").await;
    assert_eq!(status, 503);
    authorize_as(w.sc.admin, "carol.audit", "code-SECRET").await;
    let r = client()
        .delete(w.sc.admin_url(&format!("/api/v1/connection/{KEY}/grants/bob.audit")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let text = logs.text();
    let audit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("tokenwarden::audit"))
        .collect();
    let line = |action: &str, subject: &str| {
        audit
            .iter()
            .find(|l| {
                l.contains(&format!("action=\"{action}\""))
                    && l.contains(&format!("subject={subject}"))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {action} audit line for {subject}:\n{}",
                    audit.join("\n")
                )
            })
            .to_string()
    };
    for (action, subject) in [
        ("grant_imported", "alice.audit"),
        ("grant_imported", "bob.audit"),
        ("grant_refreshed", "alice.audit"),
        ("grant_revoked", "bob.audit"),
        ("grant_deleted", "bob.audit"),
        ("grant_created", "carol.audit"),
    ] {
        let l = line(action, subject);
        assert!(l.contains(&format!("connection={KEY}")), "{l}");
        assert!(l.contains("generation="), "{l}");
    }
    // Before any token there is no generation to name.
    for action in ["authorize", "callback"] {
        let l = line(action, "carol.audit");
        assert!(l.contains(&format!("connection={KEY}")), "{l}");
    }
    logs.assert_free_of(&[
        ("imported access token", "alice-AT-secret"),
        ("imported refresh token", "alice-RT-secret"),
        ("imported access token", "bob-AT-secret"),
        ("imported refresh token", "bob-RT-secret"),
        ("refreshed access token", "tok-1"),
        ("rotated refresh token", "ref-1"),
        ("access token of an authorization", "tok-2"),
        ("refresh token of an authorization", "ref-2"),
        ("authorization code", "code-SECRET"),
        ("client secret", CLIENT_SECRET),
    ]);

    let metrics = w.sc.metrics().await;
    assert!(
        metrics.contains(&format!("connection=\"{KEY}\"")),
        "{metrics}"
    );
    for subject in [
        "alice.audit",
        "bob.audit",
        "carol.audit",
        "nobody.audit",
        "subject=",
    ] {
        assert!(
            !metrics.contains(subject),
            "/metrics names {subject}:\n{metrics}"
        );
    }
}
