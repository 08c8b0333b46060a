//! A value from `${VAR}`, or under a connection's `secrets`, is never quoted in a config
//! problem — not by serde ("invalid type: string …"), not by tokenwarden's own checks — in
//! `check`, `run`, a reload's 422 body, `GET /api/v1/reload` or the log. The problem still
//! names `file:line:column`, the field and what was wrong.

use crate::cli::{binary, binary_config, run_binary, write, ENV_SECRET, EXIT_INVALID_CONFIG};
use crate::support::*;
use std::net::SocketAddr;

/// Every secret of [`CONFIG`] begins with this: none may appear in any output.
const SECRET_MARK: &str = "sk-live-";

/// The environment of [`CONFIG`]: a secret for each field of the wrong type or value.
const ENV: &[(&str, &str)] = &[
    ("SF_TOKEN", "sk-live-sf-token-51Hx"),
    ("TW_MAX", "sk-live-max-connections"),
    ("TW_LISTEN", "sk-live-listen"),
    ("TW_FORMAT", "sk-live-format"),
    ("TW_PKCE", "sk-live-pkce"),
    ("TW_HOST", "sk-live host"),
    ("TW_KEY", "sk-live key"),
];

/// A config where each `${…}` (and one literal under `secrets`) lands in a field whose
/// type or value is wrong.
const CONFIG: &str = r#"proxy:
  max_connections: ${TW_MAX}
admin:
  listen: ${TW_LISTEN}
log:
  format: ${TW_FORMAT}
connections:
  - key: shape
    secrets: ${SF_TOKEN}
    client_config: { protocol: https, host: a.example, authentication: { strategy: bearer, configuration: { token: t } } }
  - key: literal
    secrets: sk-live-literal-secret
    client_config: { protocol: https, host: b.example, authentication: { strategy: bearer, configuration: { token: t } } }
  - key: flag
    pkce: ${TW_PKCE}
    client_config: { protocol: https, host: c.example, authentication: { strategy: bearer, configuration: { token: t } } }
  - key: host
    client_config: { protocol: https, host: "${TW_HOST}", authentication: { strategy: bearer, configuration: { token: t } } }
  - key: filled
    secrets: { domain: "sk-live domain" }
    client_config: { protocol: https, host: "<domain>", authentication: { strategy: bearer, configuration: { token: t } } }
  - key: ${TW_KEY}
    client_config: { protocol: https, host: d.example, authentication: { strategy: bearer, configuration: { token: t } } }
"#;

/// What the loader says about [`CONFIG`] (after `{file}:`).
const EXPECTED: &[&str] = &[
    "2:3: proxy.max_connections: invalid type: a string (value hidden), expected usize",
    "4:3: admin.listen: bad listen address (value hidden): expected IP:PORT, such as 127.0.0.1:9090",
    "6:3: log.format: unknown value (value hidden): expected text or json",
    "9:5: connections[0].secrets: invalid type: a string (value hidden), expected a YAML mapping",
    "12:5: connections[1].secrets: invalid type: a string (value hidden), expected a YAML mapping",
    "15:5: connections[2].pkce: invalid type: a string (value hidden), expected a boolean",
    "18:39: connections[3].client_config.host: connection `host`: host (value hidden) is not a valid host[:port]",
    "21:39: connections[4].client_config.host: connection `filled`: host `<domain>` (filled in: (value hidden)) is not a valid host[:port]",
    "22:5: connections[5].key: connection key (value hidden) must be letters, digits, `-`, `_` or `.`",
];

/// Panics unless `text` is free of every secret of [`CONFIG`].
fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET_MARK), "a secret in {what}:\n{text}");
}

#[test]
fn check_never_quotes_a_value_from_the_environment_or_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.yaml", CONFIG);
    let out = binary()
        .args(["check", "--config"])
        .arg(&config)
        .envs(ENV.iter().copied())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_no_secret("check's output", &format!("{stdout}{stderr}"));
    assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG), "{stderr}");
    let file = config.display();
    let mut expected: Vec<String> = EXPECTED.iter().map(|l| format!("{file}:{l}")).collect();
    expected.push(format!(
        "{} problem(s); tokenwarden would not start.",
        EXPECTED.len()
    ));
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");
}

#[tokio::test]
async fn run_never_quotes_a_value_from_the_environment_or_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.yaml", CONFIG);
    let out = tokio::time::timeout(WAIT, run_binary(&config).envs(ENV.iter().copied()).output())
        .await
        .expect("tokenwarden exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_no_secret("run's output", &stderr);
    assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:{}", config.display(), EXPECTED[3])),
        "{stderr}"
    );
}

/// A reload of the running binary into a file whose `secrets:` is `${TW_TEST_SECRET}` (a
/// string, not a mapping): refused, and the secret is nowhere — not in the 422 body, not
/// in `GET /api/v1/reload`, not in the log.
#[tokio::test]
async fn a_refused_reload_never_quotes_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy_port, admin_port) = (free_port(), free_port());
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let good = binary_config(proxy_port, admin_port, upstream, upstream);
    let config = write(dir.path(), "config.yaml", &good);
    let log_path = dir.path().join("stderr.log");
    let mut child = run_binary(&config)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start tokenwarden");
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_until("/healthz to answer 200", || {
        let url = format!("{admin}/healthz");
        async move {
            client()
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;

    let secrets =
        "    secrets:\n      client_id: the-client\n      client_secret: ${TW_TEST_SECRET}\n";
    assert!(good.contains(secrets));
    write(
        dir.path(),
        "config.yaml",
        &good.replace(secrets, "    secrets: ${TW_TEST_SECRET}\n"),
    );
    let r = client()
        .post(format!("{admin}/api/v1/reload"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let (_, last) = get_json(&format!("{admin}/api/v1/reload")).await;
    let _ = child.kill().await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    for (what, text) in [
        ("the 422 body", &body),
        ("GET /api/v1/reload", &last.to_string()),
        ("the log", &log),
    ] {
        assert!(!text.contains(ENV_SECRET), "the secret in {what}:\n{text}");
    }
    assert_eq!(status, 422, "{body}");
    let problem = format!(
        "{}:11:5: connections[0].secrets: invalid type: a string (value hidden), expected a YAML mapping",
        config.display()
    );
    // First, then what follows from it (the secrets the token request needs are missing).
    assert_eq!(last["problems"][0], problem.as_str(), "{last}");
    assert!(body.contains(&problem), "{body}");
    assert!(log.contains(&problem), "{log}");
}
