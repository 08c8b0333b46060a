//! What a new user trips over: `check` refusing what `run` would refuse (store key, store
//! file) and warning about what loads but is likely a mistake, one process per store file,
//! quiet probes, retrying a failed connection, a plain-text
//! authorization URL, TLS failures in words, and the demo through `HTTP_PROXY`.

use crate::support::authz::authorize;
use crate::support::capture::Capture;
use crate::support::process::SidecarProcess;
use crate::support::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const STORE_KEY: &str = "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=";
const OTHER_KEY: &str = "BgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgY=";

/// `tokenwarden check` on `yaml` written into `dir` → (exit code, stdout, stderr).
fn check(dir: &Path, yaml: &str) -> (Option<i32>, String, String) {
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    crate::cli::run_check(&file, None)
}

fn store(key: &str) -> String {
    format!("store: {{ path: tokens.db, key: \"{key}\" }}\n")
}

#[tokio::test]
async fn check_refuses_the_store_run_would_refuse() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let echo = Echo::start().await;
    let conns = connections(&[cc_conn("api", echo.addr, tokens.addr)]);
    let dir = tempfile::tempdir().unwrap();

    // A key that is not 32 bytes of base64: check says so (once), without echoing it.
    let (code, _, err) = check(dir.path(), &format!("{}{conns}", store("c2hvcnQ=")));
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("decodes to 5 bytes, expected 32"), "{err}");
    assert_eq!(err.matches("token store").count(), 1, "said once: {err}");
    assert!(!err.contains("c2hvcnQ="), "{err}");

    // A store written with one key, checked with another: what run would refuse.
    let yaml = format!("{}{conns}", store(STORE_KEY));
    let sc = Sidecar::start_in(dir, &yaml, Default::default()).await;
    sc.wait_state("api", "ready").await;
    let dir = sc.stop().await;
    let (code, out, err) = check(dir.path(), &format!("{}{conns}", store(OTHER_KEY)));
    assert_eq!(code, Some(64), "{out}{err}");
    assert!(err.contains("was written with key id"), "{err}");
    let (code, _, err) = check(dir.path(), &yaml);
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test]
async fn check_warns_about_what_loads_but_is_likely_a_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let tokens: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let yaml = format!(
        "{}{}",
        store(STORE_KEY),
        connections(&[
            cc_conn("one", "api.example.com", tokens).configure("          expire_in: 3600\n"),
            cc_conn("two", "api.example.com", tokens),
        ])
    );
    let (code, out, err) = check(dir.path(), &yaml);
    assert_eq!(code, Some(0), "warnings do not refuse the file: {err}");
    assert!(out.contains("  - one"), "{out}");
    assert!(
        err.contains("warning: ") && err.contains("unknown key `expire_in` is ignored (as Fides ignores it); did you mean `expires_in`?"),
        "{err}"
    );
    assert!(
        err.contains("connections `one` and `two` reach the same host and port: in forward mode (HTTP_PROXY) a request to that host must name one with a `tokenwarden-connection` header"),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_process_on_one_store_is_refused_naming_the_first_and_check_reads_beside_it() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}{}",
        store(STORE_KEY),
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let mut first = SidecarProcess::spawn(dir.path(), "first", "", &body).await;
    wait_state_at(first.admin, "api", "ready").await;
    // `check` beside it: it reads the database the running process holds (read-only,
    // without the lock) and opens its token set — or says the key is the wrong one.
    let (code, out, err) = check(dir.path(), &body);
    assert_eq!(code, Some(0), "{out}{err}");
    let other = body.replace(STORE_KEY, OTHER_KEY);
    let (code, out, err) = check(dir.path(), &other);
    assert_eq!(code, Some(64), "{out}{err}");
    assert!(err.contains("was written with key id"), "{err}");
    // The same store file (tokens.db beside the configs) from this process.
    let err = try_start(dir.path(), &body)
        .await
        .err()
        .expect("the second sidecar must not start")
        .to_string();
    let pid = first.pid().unwrap();
    assert!(
        err.contains("is in use by another tokenwarden") && err.contains(&format!("(pid {pid})")),
        "{err}"
    );
    // The first is untouched; once it is gone (even killed), the store opens again.
    assert_eq!(status_at(first.admin, "api").await["state"], "ready");
    first.kill();
    let again = Sidecar::start_in(dir, &body, Default::default()).await;
    again.wait_state("api", "ready").await;
    assert_eq!(tokens.count(), 1, "the token came from the store");
}

#[tokio::test]
async fn probes_log_at_debug_level_only() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}{}",
        store(STORE_KEY),
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    );
    let p = SidecarProcess::spawn(dir.path(), "hup", "", &body).await;
    wait_state_at(p.admin, "api", "ready").await;
    let _ = get_json(&format!("http://{}/readyz", p.admin)).await;
    let _ = get_json(&format!("http://{}/api/v1/connections", p.admin)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !p.logs().contains("/api/v1/connections") {
        assert!(tokio::time::Instant::now() < deadline, "{}", p.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = p.logs();
    assert!(
        !logs.contains("/readyz") && !logs.contains("/healthz"),
        "{logs}"
    );

    // At debug level the probes are there.
    let body = body.replace("tokens.db", "debug.db");
    let debug = SidecarProcess::spawn_logging(dir.path(), "debug", "", &body, "debug").await;
    let _ = get_json(&format!("http://{}/readyz", debug.admin)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !debug.logs().contains("path=/readyz") {
        assert!(tokio::time::Instant::now() < deadline, "{}", debug.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failed_connection_is_retried_on_request() {
    let tokens = TokenServer::start(Reply::OAuthError {
        status: 401,
        code: "invalid_client",
    })
    .await;
    let echo = Echo::start().await;
    let sc = Sidecar::start(&format!(
        "{}{}",
        store(STORE_KEY),
        connections(&[cc_conn("api", echo.addr, tokens.addr)])
    ))
    .await;
    sc.wait_state("api", "failed").await;
    tokens.set_default(Reply::token(3600, false));
    let retry = sc.admin_url("/api/v1/connection/api/retry");
    let r = client().get(&retry).send().await.unwrap();
    assert_eq!(r.status(), 405, "POST only");
    let r = client()
        .post(&retry)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "a page elsewhere cannot retry through a browser"
    );
    let r = client().post(&retry).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["status"], "retrying");
    sc.wait_state("api", "ready").await;
    assert_eq!(tokens.count(), 2);
    let r = client()
        .post(sc.admin_url("/api/v1/connection/nope/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn authorize_answers_a_plain_url_on_request() {
    let echo = Echo::start().await;
    let sc = Sidecar::start(&format!(
        "{}{}",
        store(STORE_KEY),
        connections(&[fixture_authcode("crm", echo.addr, None, false)])
    ))
    .await;
    let json = authorize(&sc, "crm").await;
    let r = client()
        .get(sc.admin_url("/api/v1/connection/crm/authorize?format=text"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let text = r.text().await.unwrap();
    let url = text.trim_end();
    assert!(!url.starts_with('"') && text.ends_with('\n'), "{text:?}");
    let cut = |u: &str| u.split("state=").next().unwrap().to_owned();
    assert_eq!(cut(url), cut(&json.url), "the same URL, with its own state");
}

#[tokio::test]
async fn a_tls_failure_is_reported_in_words() {
    // A TLS token endpoint whose CA the sidecar was not told about.
    let tls = Capture::start(serde_json::json!({"access_token": "t", "expires_in": 3600})).await;
    let echo = Echo::start().await;
    let token_request = format!(
        r#"          token_request:
            method: POST
            path: /oauth/token
            client_config: {{ protocol: https, host: "127.0.0.1:{}" }}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "client_credentials"}}'
"#,
        tls.addr.port()
    );
    let sc = Sidecar::start(&format!(
        "{}{}",
        store(STORE_KEY),
        connections(&[Conn::new("api", echo.addr, CLIENT_CREDENTIALS)
            .secrets(CC_SECRETS)
            .configure(&token_request)])
    ))
    .await;
    let st = sc
        .wait_status("api", "a failed token request", |s| {
            !s["last_error"].is_null()
        })
        .await;
    let error = st["last_error"].as_str().unwrap();
    assert!(
        error.contains("TLS: the server's certificate is not signed by an authority tokenwarden trusts (add that CA with tls.ca_file)"),
        "{error}"
    );
    assert!(!error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn the_demo_works_through_http_proxy_with_no_proxy_and_cleans_up_on_sigterm() {
    let mut demo = Guard(
        Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
            .arg("demo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Its instructions, read on a thread so that a changed format fails instead of hanging.
    let (sender, received) = std::sync::mpsc::channel();
    let stdout = demo.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let (mut proxy, mut api, mut dir) = (None, None, None);
    while let Ok(line) = received.recv_timeout(WAIT) {
        let word_after = |marker: &str| {
            line.split_once(marker)
                .map(|(_, rest)| rest.split_whitespace().next().unwrap().to_owned())
        };
        if line.trim_start().starts_with("proxy ") {
            proxy = word_after("http://");
        }
        if api.is_none() && line.contains("echo API  http") {
            api = line
                .split("echo API")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned);
        }
        if let Some(d) = word_after("removes ") {
            dir = Some(d.trim_end_matches('.').to_owned());
            break;
        }
    }
    let (Some(proxy), Some(api), Some(dir)) = (proxy, api, dir) else {
        panic!("the demo did not print its addresses and directory");
    };
    assert!(api.starts_with("http://echo.demo.test:"), "{api}");
    assert!(Path::new(&dir).is_dir(), "{dir}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let answer = loop {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                "-H",
                "tokenwarden-connection: echo",
            ])
            .arg(format!("{api}/hello"))
            .env("HTTP_PROXY", format!("http://{proxy}"))
            .env("http_proxy", format!("http://{proxy}"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("Bearer demo-token-") || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(answer.contains("Bearer demo-token-"), "{answer}");
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(demo.0.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let status = demo.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!Path::new(&dir).exists(), "{dir} left behind");
}

/// A child process killed when the test ends, pass or fail.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Both request paths: the byte-level fast path, and hyper alone.
const BOTH_PATHS: [bool; 2] = [false, true];

/// A sidecar with `conns` (and this file's store) on the fast path, or on hyper alone.
async fn sidecar_on(hyper_only: bool, conns: &[Conn]) -> Sidecar {
    let yaml = format!("{}{}", store(STORE_KEY), connections(conns));
    let options = tokenwarden::app::Options {
        hyper_only,
        ..Default::default()
    };
    Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await
}

#[tokio::test]
async fn a_request_waits_briefly_for_a_first_token_on_its_way() {
    for hyper_only in BOTH_PATHS {
        let echo = Echo::start().await;
        // The first token takes 1 s to come: the request waits for it instead of a 503.
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        tokens.script([Reply::Slow(Duration::from_secs(1))]);
        let sc = sidecar_on(hyper_only, &[cc_conn("api", echo.addr, tokens.addr)]).await;
        tokens.wait_count(1).await;
        let started = tokio::time::Instant::now();
        let (status, body) = sc.get("/api/first").await;
        assert_eq!(status, 200, "hyper_only {hyper_only}: {body}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "it waited for the token"
        );
        assert!(echoed_authorization(&body).is_some(), "{body}");
        let metrics = sc.metrics().await;
        assert!(
            metrics.contains("tokenwarden_no_token_total{connection=\"api\",state=\"pending\"} 0"),
            "a request that waited and went through is no refusal: {metrics}"
        );
    }
}

#[tokio::test]
async fn a_token_too_slow_to_wait_for_is_a_503_with_retry_after() {
    for hyper_only in BOTH_PATHS {
        let echo = Echo::start().await;
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        // Far longer than the 2 s a request waits, however slow this machine is.
        tokens.script([Reply::Slow(Duration::from_secs(10))]);
        let sc = sidecar_on(
            hyper_only,
            &[
                cc_conn("api", echo.addr, tokens.addr),
                fixture_authcode("crm", echo.addr, None, false),
            ],
        )
        .await;
        tokens.wait_count(1).await;
        let started = tokio::time::Instant::now();
        let r = client().get(sc.url("/api/slow")).send().await.unwrap();
        assert_eq!(r.status(), 503, "hyper_only {hyper_only}");
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "it waited"
        );
        assert_eq!(r.headers()["retry-after"], "2", "a token is on its way");
        // A connection waiting for a person: no wait, a longer Retry-After.
        let r = client().get(sc.url("/crm/x")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "30");
        let metrics = sc.metrics().await;
        assert!(
            metrics.contains("tokenwarden_no_token_total{connection=\"api\",state=\"pending\"} 1"),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_named_with_its_address() {
    for hyper_only in BOTH_PATHS {
        // A port bound but not listening: connecting is refused, and no other test can take it.
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let closed = reserved.local_addr().unwrap().port();
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let upstream: std::net::SocketAddr = format!("127.0.0.1:{closed}").parse().unwrap();
        let sc = sidecar_on(hyper_only, &[cc_conn("api", upstream, tokens.addr)]).await;
        sc.wait_state("api", "ready").await;
        let (status, body) = sc.get("/api/x").await;
        assert_eq!(status, 502, "hyper_only {hyper_only}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "cannot connect to 127.0.0.1:{closed} (tried 127.0.0.1:{closed})"
            )),
            "hyper_only {hyper_only}: {message}"
        );
    }
}

#[tokio::test]
async fn an_upstream_tls_failure_is_reported_in_words() {
    // An https upstream whose CA the sidecar was not told about (no tls.ca_file).
    let upstream = Capture::start(serde_json::json!({})).await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    for hyper_only in BOTH_PATHS {
        let conn = cc_conn("api", upstream.addr, tokens.addr).protocol("https");
        let sc = sidecar_on(hyper_only, &[conn]).await;
        sc.wait_state("api", "ready").await;
        let (status, body) = sc.get("/api/x").await;
        assert_eq!(status, 502, "hyper_only {hyper_only}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("TLS handshake with 127.0.0.1:{} failed: TLS: the server's certificate is not signed by an authority tokenwarden trusts", upstream.addr.port())),
            "hyper_only {hyper_only}: {message}"
        );
    }
}

#[tokio::test]
async fn the_access_log_has_each_request_on_both_paths_and_no_secret() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    // A connection whose client is refused: its requests are the proxy's own 503.
    let refusing = TokenServer::start(Reply::OAuthError {
        status: 401,
        code: "invalid_client",
    })
    .await;
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let conns = connections(&[
        cc_conn("api", echo.addr, tokens.addr),
        cc_conn("dead", echo.addr, refusing.addr),
    ]);
    let on = format!("{}{conns}", store(STORE_KEY));
    let p = SidecarProcess::spawn_with(
        dir.path(),
        "access",
        "  access_log: true\n",
        "",
        &on,
        "info",
    )
    .await;
    wait_state_at(p.admin, "api", "ready").await;
    wait_state_at(p.admin, "dead", "failed").await;
    let http = client();
    // The fast path, with a secret in the query and in a header.
    let r = http
        .get(p.url("/api/fast?token=query-secret"))
        .header("x-secret", "header-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The hyper path (a `Connection` header naming another one), and a refusal.
    let r = http
        .post(p.url("/api/slow?q=2"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .body("posted")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        http.get(p.url("/nope/x")).send().await.unwrap().status(),
        404
    );
    // A 503 names its connection on both paths (the second sends a hop-by-hop header).
    for (path, connection) in [
        ("/dead/fast", "keep-alive"),
        ("/dead/slow", "keep-alive, x-hop"),
    ] {
        let r = http
            .get(p.url(path))
            .header("connection", connection)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{path}");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while p.logs().matches("proxied request").count() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "{}", p.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = p.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("proxied request"))
        .collect();
    let line = |path: &str| {
        lines
            .iter()
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"))
            .to_string()
    };
    let fast = line("/api/fast");
    assert!(
        fast.contains("connection=\"api\"") && fast.contains("GET") && fast.contains("status=200"),
        "{fast}"
    );
    let duration = fast
        .split("duration_ms=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let decimals = duration.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(
        decimals <= 3,
        "to the microsecond, without float noise: {fast}"
    );
    let slow = line("/api/slow");
    assert!(
        slow.contains("connection=\"api\"") && slow.contains("POST") && slow.contains("status=200"),
        "{slow}"
    );
    for path in ["/dead/fast", "/dead/slow"] {
        let dead = line(path);
        assert!(
            dead.contains("status=503") && dead.contains("connection=\"dead\""),
            "{dead}"
        );
    }
    let refused = line("/nope/x");
    assert!(
        refused.contains("status=404") && refused.contains("connection=\"-\""),
        "{refused}"
    );
    for secret in ["query-secret", "header-secret", "q=2", "Bearer", "tok-1"] {
        assert!(!logs.contains(secret), "{secret} in the log:\n{logs}");
    }

    // Off by default.
    let off = format!("{}{conns}", store(STORE_KEY)).replace("tokens.db", "off.db");
    let quiet = SidecarProcess::spawn(dir.path(), "quiet", "", &off).await;
    wait_state_at(quiet.admin, "api", "ready").await;
    assert_eq!(
        http.get(quiet.url("/api/x")).send().await.unwrap().status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !quiet.logs().contains("proxied request"),
        "{}",
        quiet.logs()
    );
}

/// `config/minimal.yaml`, the README's starting point: `check` passes with the variables its
/// header exports, and it holds one connection of each OAuth2 kind.
#[test]
fn the_minimal_example_config_passes_check() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/minimal.yaml");
    let out = crate::cli::binary()
        .args(["check", "--config"])
        .arg(&path)
        .env("TOKENWARDEN_STORE_KEY", STORE_KEY)
        .env("BILLING_CLIENT_ID", "billing-id")
        .env("BILLING_CLIENT_SECRET", "billing-secret")
        .env("CRM_CLIENT_ID", "crm-id")
        .env("CRM_CLIENT_SECRET", "crm-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("billing") && stdout.contains("oauth2_client_credentials"),
        "{stdout}"
    );
    assert!(
        stdout.contains("crm") && stdout.contains("oauth2_authorization_code"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("-secret") && !stderr.contains("-secret"),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.is_empty() || !stderr.contains("warning"),
        "no warning: {stderr}"
    );
}
