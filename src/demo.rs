//! `tokenwarden demo`: everything on loopback in one process — a small OAuth2
//! authorization server (client credentials, and authorization code with an auto-approving
//! login and refresh-token rotation), an echo API that shows the headers it received, and
//! the sidecar configured for both through a real config file. Prints what to try.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Lifetime of the demo's access tokens: short, so the log shows refreshes.
pub const DEMO_TOKEN_LIFETIME: u64 = 60;
const DEMO_CLIENT_ID: &str = "demo-client";
const DEMO_CLIENT_SECRET: &str = "demo-secret";
/// Preferred ports; ephemeral ports are used when these are taken.
const DEMO_PROXY_PORT: u16 = 8080;
const DEMO_ADMIN_PORT: u16 = 9090;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The echo API's host name (RFC 6761 `.test`), resolved to loopback by the sidecar alone,
/// so `NO_PROXY=127.0.0.1,localhost` does not make clients bypass the proxy for it.
pub const DEMO_API_HOST: &str = "echo.demo.test";

/// The demo authorization server's state: issued codes and refresh tokens.
#[derive(Default)]
struct AuthServer {
    counter: AtomicU64,
    codes: Mutex<HashMap<String, ()>>,
    refresh_tokens: Mutex<HashMap<String, ()>>,
}

impl AuthServer {
    fn next(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}-{:08x}",
            self.counter.fetch_add(1, Ordering::Relaxed) + 1,
            rand::random::<u32>()
        )
    }

    /// Its two endpoints; anything else is not found.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/oauth/authorize") => self.authorize(&req),
            (Method::POST, "/oauth/token") => self.token(req).await,
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// The authorization endpoint: approves at once and redirects back with a fresh code.
    fn authorize(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let query: HashMap<String, String> =
            form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let (Some(redirect), Some(state)) = (query.get("redirect_uri"), query.get("state")) else {
            return text(
                StatusCode::BAD_REQUEST,
                "redirect_uri and state are required",
            );
        };
        // Auto-approve: the "user" logs in and consents at once.
        let code = self.next("code");
        self.codes.lock().expect("codes").insert(code.clone(), ());
        let target = format!(
            "{redirect}?{}",
            crate::template::encode_pairs([("code", code.as_str()), ("state", state.as_str())])
        );
        let mut r = text(
            StatusCode::FOUND,
            "approved; redirecting back to tokenwarden",
        );
        r.headers_mut()
            .insert(header::LOCATION, target.parse().expect("location"));
        r
    }

    /// The token endpoint: checks the client and the grant (a code or refresh token is
    /// good once), then issues a token, with a rotated refresh token unless client
    /// credentials.
    async fn token(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        if form.get("client_id").map(String::as_str) != Some(DEMO_CLIENT_ID)
            || form.get("client_secret").map(String::as_str) != Some(DEMO_CLIENT_SECRET)
        {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "invalid_client"}),
            );
        }
        let grant_ok = match form.get("grant_type").map(String::as_str) {
            Some("client_credentials") => true,
            Some("authorization_code") => form
                .get("code")
                .is_some_and(|c| self.codes.lock().expect("codes").remove(c).is_some()),
            Some("refresh_token") => form.get("refresh_token").is_some_and(|r| {
                self.refresh_tokens
                    .lock()
                    .expect("refresh")
                    .remove(r)
                    .is_some()
            }),
            _ => false,
        };
        if !grant_ok {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "invalid_grant"}),
            );
        }
        let mut answer = serde_json::json!({"access_token": self.next("demo-token"), "token_type": "Bearer", "expires_in": DEMO_TOKEN_LIFETIME});
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            let refresh = self.next("demo-refresh");
            self.refresh_tokens
                .lock()
                .expect("refresh")
                .insert(refresh.clone(), ());
            answer["refresh_token"] = refresh.into();
        }
        tracing::info!(target: "demo::auth_server", grant = form.get("grant_type").map(String::as_str).unwrap_or_default(), "issued a token");
        json(StatusCode::OK, answer)
    }
}

/// The echo API: answers with the method, path and headers it received.
async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("<binary>").into()))
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({"method": req.method().as_str(), "path": req.uri().to_string(), "headers": headers}),
    )
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// Writes `text` to a new file only its owner can read.
fn write_private(file: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?
        .write_all(text.as_bytes())
}

async fn bind_preferring(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind("127.0.0.1:0").await,
    }
}

/// The sidecar config the demo writes and loads (a real file, through the real loader).
fn demo_config(auth: SocketAddr, api: &str, admin: SocketAddr, store_key: &str) -> String {
    // The two authorization-code connections differ in their key and grants only.
    let authcode = |key: &str, extra: &str| {
        format!(
            r#"  - key: {key}
{extra}    pkce: true
    allow_private_network: true
    secrets: {{ client_id: {DEMO_CLIENT_ID}, client_secret: {DEMO_CLIENT_SECRET} }}
    client_config:
      protocol: http
      host: "{api}"
      authentication:
        strategy: oauth2_authorization_code
        configuration:
          authorization_request:
            method: GET
            path: /oauth/authorize
            client_config: {{ protocol: http, host: "{auth}" }}
            query_params:
              - {{ name: client_id, value: <client_id> }}
              - {{ name: redirect_uri, value: <redirect_uri> }}
              - {{ name: response_type, value: code }}
              - {{ name: state, value: <state> }}
          token_request:
            method: POST
            path: /oauth/token
            client_config: {{ protocol: http, host: "{auth}" }}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "authorization_code", "code": "<code>", "client_id": "<client_id>", "client_secret": "<client_secret>", "redirect_uri": "<redirect_uri>"}}'
          refresh_request:
            method: POST
            path: /oauth/token
            client_config: {{ protocol: http, host: "{auth}" }}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "refresh_token", "refresh_token": "<refresh_token>", "client_id": "<client_id>", "client_secret": "<client_secret>"}}'
"#
        )
    };
    let user = authcode("echo-user", "");
    let users = authcode(
        "echo-users",
        "    grants: per_user              # a grant per end user, named by each request (tokenwarden-subject)\n",
    );
    format!(
        r#"# Written by `tokenwarden demo`.
store: {{ path: tokens.db, key: "{store_key}" }}   # a fresh key per demo (this file is mode 600)
admin: {{ public_url: "http://{admin}" }}
connections:
  - key: echo
    allow_private_network: true   # {DEMO_API_HOST} resolves to loopback
    secrets: {{ client_id: {DEMO_CLIENT_ID}, client_secret: {DEMO_CLIENT_SECRET} }}
    client_config:
      protocol: http
      host: "{api}"
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            client_config: {{ protocol: http, host: "{auth}" }}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "client_credentials", "client_id": "<client_id>", "client_secret": "<client_secret>"}}'
{user}{users}"#
    )
}

/// The demo's authorization server and echo API, each on an ephemeral loopback port and
/// served until `shutdown`; their addresses.
async fn serve_auth_and_api(
    shutdown: &CancellationToken,
) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let auth_listener = TcpListener::bind("127.0.0.1:0").await?;
    let api_listener = TcpListener::bind("127.0.0.1:0").await?;
    let (auth_addr, api_addr) = (auth_listener.local_addr()?, api_listener.local_addr()?);
    let auth = Arc::new(AuthServer::default());
    tokio::spawn(crate::server::serve(
        auth_listener,
        HEADER_TIMEOUT,
        shutdown.clone(),
        move |req, _| Arc::clone(&auth).handle(req),
    ));
    tokio::spawn(crate::server::serve(
        api_listener,
        HEADER_TIMEOUT,
        shutdown.clone(),
        |req, _| echo(req),
    ));
    Ok((auth_addr, api_addr))
}

/// What to try, printed once everything runs: `servers` are the authorization server and
/// the echo API, `sidecar` the proxy and the admin listener.
fn print_guide(
    file: &std::path::Path,
    dir: &std::path::Path,
    api_host: &str,
    servers: (SocketAddr, SocketAddr),
    sidecar: (SocketAddr, SocketAddr),
) {
    let ((auth_addr, api_addr), (proxy_addr, admin_addr)) = (servers, sidecar);
    println!(
        r#"
tokenwarden demo is running (config: {file})
  authorization server  http://{auth_addr}   echo API  http://{api_host} (= {api_addr}, known to the proxy only)
  proxy                 http://{proxy_addr}  admin     http://{admin_addr}

1. Client credentials — tokenwarden fetched a token at start; the echo API shows it arrived:
     curl -s http://{proxy_addr}/echo/hello?x=1
   Look for "authorization": "Bearer demo-token-…" in the answer. Your own Authorization header is replaced:
     curl -s -H 'Authorization: Bearer mine' http://{proxy_addr}/echo/hello
   The same as a forward proxy (curl reads only the lower-case http_proxy for http:// URLs; {DEMO_API_HOST}
   is not in no_proxy, so it goes through the proxy, which alone knows that name; the demo connections all
   serve that host, so the request names one with tokenwarden-connection, which the proxy removes):
     http_proxy=http://{proxy_addr} no_proxy=127.0.0.1,localhost curl -s -H 'tokenwarden-connection: echo' http://{api_host}/hello

2. Authorization code (with PKCE) — not authorized yet, so the proxy says so:
     curl -s http://{proxy_addr}/echo-user/me
   Open the authorization URL in a browser (the demo server approves at once):
     curl -s "http://{admin_addr}/api/v1/connection/echo-user/authorize?format=text"
   then try again:
     curl -s http://{proxy_addr}/echo-user/me

3. Per-user grants — echo-users holds one grant per end user. Authorize two users (curl -L follows the
   redirects a browser would; the demo server approves at once):
     curl -sL "http://{admin_addr}/api/v1/connection/echo-users/authorize?subject=alice&format=redirect"
     curl -sL "http://{admin_addr}/api/v1/connection/echo-users/authorize?subject=bob&format=redirect"
   Each request names its user; each gets that user's token (the header is not forwarded):
     curl -s -H 'tokenwarden-subject: alice' http://{proxy_addr}/echo-users/me
     curl -s -H 'tokenwarden-subject: bob' http://{proxy_addr}/echo-users/me
   A user who has not authorized gets a 503 with their own authorize link; the grants, never a token:
     curl -s -H 'tokenwarden-subject: carol' http://{proxy_addr}/echo-users/me
     curl -s http://{admin_addr}/api/v1/connection/echo-users/grants

4. Status and metrics (never token values): the status page, with an Authorize button for echo-user,
     http://{admin_addr}/   (open it in a browser)
     curl -s http://{admin_addr}/api/v1/connections
     curl -s http://{admin_addr}/metrics

Tokens live {DEMO_TOKEN_LIFETIME}s and are refreshed ahead of expiry (watch the log). Ctrl-C (or SIGTERM) stops the demo
and removes {dir}.
"#,
        file = file.display(),
        dir = dir.display()
    );
}

/// Runs the demo until Ctrl-C or SIGTERM, then removes its temporary directory.
pub async fn run() -> anyhow::Result<()> {
    crate::telemetry::init(&crate::config::LogSettings {
        level: "info".into(),
        format: crate::config::LogFormat::Text,
    });
    let shutdown = CancellationToken::new();
    let (auth_addr, api_addr) = serve_auth_and_api(&shutdown).await?;

    let proxy_listener = bind_preferring(DEMO_PROXY_PORT).await?;
    let admin_listener = bind_preferring(DEMO_ADMIN_PORT).await?;
    let (proxy_addr, admin_addr) = (proxy_listener.local_addr()?, admin_listener.local_addr()?);
    let dir = std::env::temp_dir().join(format!("tokenwarden-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("config.yaml");
    let api_host = format!("{DEMO_API_HOST}:{}", api_addr.port());
    // The store key goes in the file itself (readable by this user only): a demo's store
    // lives as long as its temporary directory, and an explicit key spares the newcomer the
    // "generated a new token store key" warning meant for real deployments.
    let store_key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    };
    write_private(
        &file,
        &demo_config(auth_addr, &api_host, admin_addr, &store_key),
    )?;
    let config =
        crate::config::load(&file).map_err(|p| anyhow::anyhow!("demo config invalid:\n{p}"))?;
    let options = crate::app::Options {
        static_hosts: [(DEMO_API_HOST.to_owned(), vec![api_addr.ip()])].into(),
        ..Default::default()
    };
    let mut signals = crate::Signals::new();
    let running = crate::app::start(config, proxy_listener, admin_listener, options).await?;

    print_guide(
        &file,
        &dir,
        &api_host,
        (auth_addr, api_addr),
        (proxy_addr, admin_addr),
    );
    crate::serve_until_stopped(&running, &mut signals).await;
    running.stop().await;
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
