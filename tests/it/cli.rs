//! The binary and its CLI: secrets never reach the logs, `check` prints connections
//! without secrets and lists every problem (exit 64), `run` refuses a bad config before
//! binding any port, and a config's `Debug` never shows a secret.

use crate::support::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;

/// Exit status of `tokenwarden` for an invalid config.
pub(crate) const EXIT_INVALID_CONFIG: i32 = 64;

pub(crate) fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
}

/// `tokenwarden check --config {file}` → (exit code, stdout, stderr); with `env`, that is
/// its whole environment.
pub(crate) fn run_check(
    file: &Path,
    env: Option<&std::collections::BTreeMap<String, String>>,
) -> (Option<i32>, String, String) {
    let mut command = binary();
    command.args(["check", "--config"]).arg(file);
    if let Some(env) = env {
        command.env_clear().envs(env);
    }
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tokenwarden run --config {config}` with the binary tests' secrets in its environment,
/// killed when dropped.
pub(crate) fn run_binary(config: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env("TW_TEST_SECRET", ENV_SECRET)
        .env("TW_STORE_KEY", STORE_KEY)
        .kill_on_drop(true);
    cmd
}

/// A config for the binary: one client-credentials connection whose secret comes from
/// `${TW_TEST_SECRET}`, and the listeners on the given ports.
pub(crate) fn binary_config(
    proxy_port: u16,
    admin_port: u16,
    upstream: SocketAddr,
    token: SocketAddr,
) -> String {
    format!(
        r#"proxy:
  listen: 127.0.0.1:{proxy_port}
admin:
  listen: 127.0.0.1:{admin_port}
store:
  key: ${{TW_STORE_KEY}}
log:
  level: trace
connections:
  - key: api
    secrets:
      client_id: the-client
      client_secret: ${{TW_TEST_SECRET}}
    client_config:
      protocol: http
      host: "{upstream}"
      authentication:
        strategy: oauth2_client_credentials
        configuration:
{token_request}"#,
        token_request = cc_token_request(token)
    )
}

/// Base64 of 32 bytes: a valid store key (and a secret that must not be logged).
const STORE_KEY: &str = "c3RvcmUta2V5LW11c3QtbmV2ZXItYmUtbG9nZ2VkLiE=";
/// The client secret the binary tests pass through the environment.
pub(crate) const ENV_SECRET: &str = "env-s3cret-never-logged";
/// The app's own credential, replaced by the proxy (and not logged either).
const APP_SECRET: &str = "app-credential-never-logged";

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let tokens = TokenServer::start(Reply::token(2, true)).await;
    // The first answer is a (transient) OAuth error, so a token failure is logged too.
    tokens.script([Reply::Raw(
        r#"{"error":"temporarily_unavailable","error_description":"the server is busy, try later"}"#,
    )]);
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy_port, admin_port) = (free_port(), free_port());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        binary_config(proxy_port, admin_port, echo.addr, tokens.addr),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut child = run_binary(&config)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start tokenwarden");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    wait_until("/readyz to answer 200", || {
        let url = format!("{admin}/readyz");
        async move {
            match client().get(&url).send().await {
                Ok(r) => r.status() == 200,
                Err(_) => false,
            }
        }
    })
    .await;
    for (path, expected) in [
        ("/api/one", 200),
        ("/api/two?x=1", 200),
        ("/nope/unknown", 404),
    ] {
        let r = client()
            .get(format!("{proxy}{path}"))
            .header("authorization", format!("Bearer {APP_SECRET}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected, "{path}");
    }
    // Let the 2 s tokens (with rotating refresh tokens) be refreshed twice.
    tokens.wait_count(4).await;
    let (status, _) = proxied_at(&proxy, "/api/three").await;
    assert_eq!(status, 200);

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("tokenwarden stops on SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    // The log is real: it holds the start, the failure and the new tokens.
    assert!(log.contains("tokenwarden is listening"), "{log}");
    assert!(log.contains("temporarily_unavailable"), "{log}");
    assert!(log.contains("new token"), "{log}");
    let issued = tokens.count();
    let mut secrets: Vec<String> = vec![ENV_SECRET.into(), STORE_KEY.into(), APP_SECRET.into()];
    for n in 1..=issued {
        secrets.push(format!("tok-{n}"));
        secrets.push(format!("ref-{n}"));
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "`{secret}` is in the log:\n{log}"
        );
    }
}

async fn proxied_at(proxy: &str, path: &str) -> (u16, Value) {
    get_json(&format!("{proxy}{path}")).await
}

/// Writes `yaml` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, yaml: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn check_prints_the_connections_without_secret_values() {
    let dir = tempfile::tempdir().unwrap();
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = write(
        dir.path(),
        "good.yaml",
        &binary_config(18080, 19090, upstream, upstream),
    );
    let out = binary()
        .args(["check", "--config"])
        .arg(&config)
        .env("TW_TEST_SECRET", ENV_SECRET)
        .env("TW_STORE_KEY", STORE_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("  - api  (api)"), "{stdout}");
    assert!(stdout.contains("upstream  http://127.0.0.1:9"), "{stdout}");
    assert!(
        stdout.contains("strategy  oauth2_client_credentials"),
        "{stdout}"
    );
    assert!(
        stdout.contains("client_id"),
        "the param names are listed: {stdout}"
    );
    assert!(stdout.contains("client_secret"), "{stdout}");
    assert!(stdout.contains("proxy listen  127.0.0.1:18080"), "{stdout}");
    for secret in [ENV_SECRET, STORE_KEY] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}{stderr}"
        );
    }
}

#[test]
fn check_lists_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.yaml",
        "proxy:\n  listen: nowhere\nmystery: 1\nconnections:\n  - key: api\n    secrets:\n      client_secret: ${TW_UNSET_VARIABLE}\n    client_config:\n      protocol: https\n      host: example.com\n      authentication:\n        strategy: oauth2_telepathy\n",
    );
    let out = binary()
        .args(["check", "--config"])
        .arg(&config)
        .env_remove("TW_UNSET_VARIABLE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = config.display();
    let expected = [
        format!("{file}:2:3: proxy.listen: bad listen address `nowhere`: expected IP:PORT, such as 127.0.0.1:8080"),
        format!("{file}:3:1: mystery: unknown field `mystery`, expected one of `proxy`, `admin`, `store`, `tls`, `log`, `connections`, `templates`"),
        format!("{file}:7:7: connections[0].secrets.client_secret: environment variable `TW_UNSET_VARIABLE` is not set"),
        format!("{file}:12:9: connections[0].client_config.authentication.strategy: connection `api`: unknown strategy `oauth2_telepathy`; supported strategies: oauth2_authorization_code, oauth2_client_credentials, oauth2_jwt_bearer, google_cloud_service_account, bearer, basic, api_key"),
        "4 problem(s); tokenwarden would not start.".to_owned(),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");
}

/// What `run` would refuse beyond the file (a store key that is not one, a CA key file
/// that is missing) is placed in the file like every other problem; `check` then never
/// says the config is valid nor prints its summary.
#[test]
fn check_places_what_run_would_refuse_and_never_calls_it_valid() {
    let dir = tempfile::tempdir().unwrap();
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let yaml = binary_config(18080, 19090, upstream, upstream).replace(
        "  listen: 127.0.0.1:18080\n",
        "  listen: 127.0.0.1:18080\n  intercept:\n    ca_cert: ca.pem\n    ca_key: missing.key\n",
    );
    std::fs::write(dir.path().join("ca.pem"), "").unwrap();
    let config = write(dir.path(), "config.yaml", &yaml);
    let out = binary()
        .args(["check", "--config"])
        .arg(&config)
        .env("TW_TEST_SECRET", ENV_SECRET)
        .env("TW_STORE_KEY", "c2hvcnQ=")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG), "{stderr}");
    assert_eq!(stdout, "", "no summary of a config run would refuse");
    let file = config.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{file}:5:5: proxy.intercept.ca_key: ")),
        "{stderr}"
    );
    assert!(lines[0].contains("missing.key"), "{stderr}");
    assert!(
        lines[1].starts_with(&format!("{file}:9:3: store.key: token store key ")),
        "{stderr}"
    );
    assert_eq!(lines[2], "2 problem(s); tokenwarden would not start.");
    assert!(!stderr.contains("is valid") && !stderr.contains("did not start"));
}

#[tokio::test]
async fn run_refuses_a_bad_config_before_binding_any_port() {
    let dir = tempfile::tempdir().unwrap();
    // Hold the configured proxy port: a `run` that bound before validating would fail
    // on it ("cannot listen", exit 1) instead of listing the problems (exit 64).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let good = binary_config(port, free_port(), upstream, upstream);
    let bad = good.replace("log:\n", "mystery: 1\nlog:\n");
    let run = |yaml: &str, name: &str| {
        let config = write(dir.path(), name, yaml);
        let mut cmd = run_binary(&config);
        cmd.env_remove("RUST_LOG");
        async move {
            tokio::time::timeout(WAIT, cmd.output())
                .await
                .expect("tokenwarden exits")
                .unwrap()
        }
    };
    let out = run(&bad, "bad.yaml").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG), "{stderr}");
    assert!(stderr.contains("unknown field `mystery`"), "{stderr}");
    assert!(
        stderr.contains("1 problem(s); tokenwarden did not start."),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    // The same file without the problem does try to bind (and the held port stops it).
    let out = run(&good, "good.yaml").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    drop(held);
}

#[test]
fn debug_output_of_a_config_never_shows_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.yaml",
        r#"admin:
  token: admin-token-never-shown
store:
  key: ${TW_STORE_KEY}
connections:
  - key: cc
    secrets:
      client_id: the-client
      client_secret: ${TW_TEST_SECRET}
    client_config:
      protocol: https
      host: api.example.com
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            body: '{"client_id": "<client_id>", "client_secret": "<client_secret>"}'
  - key: static
    secrets: { api_token: static-token-never-shown }
    client_config:
      protocol: https
      host: static.example.com
      authentication: { strategy: bearer, configuration: { token: "<api_token>" } }
  - key: inline
    client_config:
      protocol: https
      host: inline.example.com
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /oauth/token
            body: '{"client_secret": "inline-secret-never-shown"}'
  - key: keyed
    secrets: { key: query-key-never-shown, body_key: body-key-never-shown }
    client_config:
      protocol: https
      host: keyed.example.com
      authentication:
        strategy: api_key
        configuration:
          query_params: [{ name: api_key, value: "<key>" }]
          body: '{"token": "<body_key>"}'
"#,
    );
    let config = tokenwarden::config::load_with_env(&config, &|name| match name {
        "TW_STORE_KEY" => Some(STORE_KEY.to_owned()),
        "TW_TEST_SECRET" => Some(ENV_SECRET.to_owned()),
        _ => None,
    })
    .unwrap_or_else(|p| panic!("{p}"));
    let debug = format!("{config:?}");
    assert!(debug.contains("api.example.com"), "{debug}");
    for secret in [
        ENV_SECRET,
        STORE_KEY,
        "admin-token-never-shown",
        "static-token-never-shown",
        "query-key-never-shown",
        "body-key-never-shown",
        "inline-secret-never-shown",
    ] {
        assert!(
            !debug.contains(secret),
            "`{secret}` in Debug output:\n{debug}"
        );
    }
}

/// `tokenwarden placeholder NAME` prints one line, a new placeholder in the documented
/// format each time, which `check` accepts as the connection's `placeholder:` as printed.
#[test]
fn placeholder_prints_a_new_placeholder_that_a_config_takes_as_printed() {
    let make = || {
        let out = binary().args(["placeholder", "billing"]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let (first, second) = (make(), make());
    assert_ne!(first, second, "a new one each time");
    let printed = first.strip_suffix('\n').expect("one line");
    assert!(!printed.contains('\n'));
    assert!(printed.starts_with("twph_billing_") && printed.len() == "twph_billing_".len() + 32);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let conn = Conn::new("billing", "api.billing.example", "bearer")
        .protocol("https")
        .secrets("token: t")
        .configure("          token: <token>\n")
        .field(&format!("placeholder: {printed}"))
        .field("inject: placeholder");
    std::fs::write(&config, connections(&[conn.to_string()])).unwrap();
    let (code, stdout, stderr) = run_check(&config, None);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}
