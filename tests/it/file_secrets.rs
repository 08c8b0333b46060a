//! `${file:PATH}` values (issue 26 §1): a client secret read from a file is the one sent;
//! a file replaced on disk — renamed over, or a Kubernetes Secret volume's `..data` symlink
//! swapped — while requests flow is picked up by the config watch, the next token request
//! uses the new secret, and no request fails; a file others may read, or one that is
//! missing, is refused at load (and by `check`) naming the config value and the file; the
//! secret never reaches a log line, a problem or a response.

use crate::cli::{run_check, EXIT_INVALID_CONFIG};
use crate::support::logs::Logs;
use crate::support::*;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const STORE: &str =
    "store: { path: tokens.db, key: \"CgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo=\" }\n";
/// The config watch, fast for the tests.
const WATCH: &str = "admin: { watch_config: 100ms }\n";
/// The secrets' contents, one per rotation; each in the file with a trailing newline.
const SECRETS: [&str; 3] = ["file-secret-ONE", "file-secret-TWO", "file-secret-THREE"];
/// The value path of the client secret in the test configs.
const VALUE_PATH: &str = "connections[0].secrets.client_secret";

/// A client-credentials connection `api` whose client secret is `${file:{reference}}`.
fn file_conn(
    upstream: impl std::fmt::Display,
    token: std::net::SocketAddr,
    reference: &str,
) -> Conn {
    Conn::new("api", upstream, CLIENT_CREDENTIALS)
        .secrets(&format!(
            r#"client_id: the-client, client_secret: "${{file:{reference}}}""#
        ))
        .configure(&cc_token_request(token))
}

/// Writes `content` to `file` with `mode`.
fn write_secret(file: &Path, content: &str, mode: u32) {
    std::fs::write(file, content).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Replaces `file` as a careful deploy does: a new file beside it, renamed over it (atomic).
fn rename_over(file: &Path, content: &str) {
    let next = file.with_extension("next");
    write_secret(&next, content, 0o600);
    std::fs::rename(&next, file).unwrap();
}

/// A Kubernetes Secret volume as the kubelet writes it: `<dir>/client_secret` →
/// `..data/client_secret`, `..data` → `..<version>`, a folder holding the files with the
/// volume's `defaultMode`. An update writes a new folder, points a new link at it and
/// renames that link over `..data` (atomic), then removes the old folder.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn create(dir: PathBuf, secret: &str) -> SecretVolume {
        std::fs::create_dir(&dir).unwrap();
        let mut volume = SecretVolume { dir, version: 0 };
        volume.update(secret);
        std::os::unix::fs::symlink("..data/client_secret", volume.dir.join("client_secret"))
            .unwrap();
        volume
    }

    fn update(&mut self, secret: &str) {
        let old = format!("..v{}", self.version);
        self.version += 1;
        let new = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        // defaultMode: 0440.
        write_secret(&self.dir.join(&new).join("client_secret"), secret, 0o440);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.version > 1 {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

/// The client secrets of the token requests `tokens` received, in order.
fn secrets_sent(tokens: &TokenServer) -> Vec<String> {
    tokens
        .requests()
        .iter()
        .map(|r| r.field("client_secret").unwrap_or_default())
        .collect()
}

/// Starts a sidecar on `dir` from `yaml` (the secret files already there).
async fn start(dir: tempfile::TempDir, yaml: &str) -> Sidecar {
    Sidecar::start_in(dir, yaml, tokenwarden::app::Options::default()).await
}

#[tokio::test]
async fn a_client_secret_from_a_file_is_the_one_sent() {
    let (echo, tokens) = (Echo::start().await, TokenServer::start(token(3600)).await);
    let dir = tempfile::tempdir().unwrap();
    // CRLF and blank lines at the end are not part of the secret.
    write_secret(
        &dir.path().join("client-secret"),
        &format!("{}\r\n\n", SECRETS[0]),
        0o600,
    );
    let yaml = format!(
        "{STORE}{}",
        connections(&[file_conn(echo.addr, tokens.addr, "client-secret")])
    );
    let sc = start(dir, &yaml).await;
    sc.wait_state("api", "ready").await;
    assert_eq!(secrets_sent(&tokens), [SECRETS[0]]);
    let (status, body) = sc.get("/api/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed_authorization(&body).as_deref(), Some("Bearer tok-1"));
}

/// Requests through the proxy, from two clients (one keeping its connection, one opening a
/// new one each time), until stopped; each must get a 200.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(sc: &Arc<Sidecar>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let tasks = [true, false]
            .into_iter()
            .map(|keep_alive| {
                let (sc, stop, served) = (Arc::clone(sc), Arc::clone(&stop), Arc::clone(&served));
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .no_proxy()
                        .pool_max_idle_per_host(if keep_alive { usize::MAX } else { 0 })
                        .timeout(WAIT)
                        .build()
                        .unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let r = http
                            .get(sc.url("/api/x"))
                            .send()
                            .await
                            .expect("proxy answers");
                        let status = r.status();
                        assert_eq!(status, 200, "{}", r.text().await.unwrap_or_default());
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            stop,
            served,
            tasks,
        }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops the load; panics if a request failed. Returns the number served.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("no request failed");
        }
        self.served.load(Ordering::Relaxed)
    }
}

/// Waits until `tokens` has received `n` token requests, while `load` keeps being served.
async fn wait_for_token_request(tokens: &TokenServer, n: usize, load: &Load) {
    tokens.wait_count(n).await;
    // And the proxy serves with the new token: requests keep being answered.
    let served = load.served();
    wait_until("requests served after the rotation", || async {
        load.served() > served + 10
    })
    .await;
}

#[tokio::test]
async fn a_secret_file_replaced_on_disk_is_used_for_the_next_token_request_without_a_failed_request(
) {
    let (logs, _capture) = Logs::capture();
    let (echo, tokens) = (Echo::start().await, TokenServer::start(token(3600)).await);
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("client-secret");
    write_secret(&plain, &format!("{}\n", SECRETS[0]), 0o600);
    let mut volume = SecretVolume::create(dir.path().join("secret"), &format!("{}\n", SECRETS[1]));
    let config = |reference: &str| {
        format!(
            "{WATCH}{STORE}{}",
            connections(&[file_conn(echo.addr, tokens.addr, reference)])
        )
    };
    let sc = Arc::new(start(dir, &config("client-secret")).await);
    sc.wait_state("api", "ready").await;
    let load = Load::start(&sc);
    wait_until("requests served", || async { load.served() > 10 }).await;

    // 1. A new file renamed over the old one.
    rename_over(&plain, &format!("{}\n", SECRETS[1]));
    wait_for_token_request(&tokens, 2, &load).await;
    assert_eq!(secrets_sent(&tokens), [SECRETS[0], SECRETS[1]]);
    // (The outcome is recorded once the refreshers started: it may follow their request.)
    wait_until("the watch's reload recorded", || async {
        let (_, outcome) = get_json(&sc.admin_url("/api/v1/reload")).await;
        outcome["result"] == "applied"
            && outcome["changed"] == serde_json::json!(["api"])
            && outcome["tokens_dropped"] == serde_json::json!(["api"])
    })
    .await;

    // 2. The config now reads the Secret volume's file (its link, as a pod mounts it):
    // same secret, so the token stays; then the kubelet swaps `..data`.
    std::fs::write(sc.config_path(), config("secret/client_secret")).unwrap();
    wait_until("the config edit applied", || async {
        let (_, outcome) = get_json(&sc.admin_url("/api/v1/reload")).await;
        outcome["result"] == "applied" && outcome["changed"] == serde_json::json!([])
    })
    .await;
    assert_eq!(tokens.count(), 2, "the same secret keeps the token");
    volume.update(&format!("{}\n", SECRETS[2]));
    wait_for_token_request(&tokens, 3, &load).await;
    assert_eq!(secrets_sent(&tokens), SECRETS);

    let served = load.finish().await;
    assert!(served > 30, "the load ran: {served}");
    // Every request after the last rotation carries the new token.
    let (status, body) = sc.get("/api/x").await;
    assert_eq!(status, 200);
    assert_eq!(echoed_authorization(&body).as_deref(), Some("Bearer tok-3"));
    let secrets = SECRETS.map(|s| ("file secret", s));
    logs.assert_free_of(&secrets);
    assert!(
        logs.text().contains("the config file changed: reloading"),
        "the watch reloaded"
    );
}

/// The problems loading the config at `file` gives, one per line.
fn problems(file: &Path) -> Vec<String> {
    match tokenwarden::config::load(file) {
        Ok(_) => panic!("{} loaded", file.display()),
        Err(p) => p.to_string().lines().map(str::to_owned).collect(),
    }
}

/// `tokenwarden check --config file` → (exit code, stdout and stderr).
fn check(file: &Path) -> (Option<i32>, String) {
    let (code, out, err) = run_check(file, None);
    (code, out + &err)
}

/// A config at `<dir>/config.yaml` whose connection's client secret is `${file:reference}`.
fn write_config(dir: &Path, reference: &str) -> PathBuf {
    let here: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let file = dir.join("config.yaml");
    let yaml = format!(
        "{STORE}{}",
        connections(&[file_conn(here, here, reference)])
    );
    std::fs::write(&file, yaml).unwrap();
    file
}

#[tokio::test]
async fn a_secret_file_others_may_read_is_refused_saying_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    write_secret(&secret, SECRETS[0], 0o644);
    let config = write_config(dir.path(), "client-secret");
    let expected = format!(
        "{}:4:39: {VALUE_PATH}: {} is readable or writable by others (mode 644), and it holds a secret: chmod 600 {} (or 640 to share it with a group); from a Kubernetes Secret volume, set `defaultMode: 0440` (or 0400) on the volume",
        config.display(),
        secret.display(),
        secret.display()
    );
    assert_eq!(problems(&config), std::slice::from_ref(&expected));
    let (code, out) = check(&config);
    assert_eq!(code, Some(EXIT_INVALID_CONFIG), "{out}");
    assert!(out.contains(&expected), "{out}");
    assert!(!out.contains(SECRETS[0]), "{out}");

    // Group-readable (a Secret volume's `defaultMode: 0440` with `fsGroup`) is fine.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(tokenwarden::config::load(&config).is_ok());

    // A running sidecar refuses the reload and keeps its connection.
    let (echo, tokens) = (Echo::start().await, TokenServer::start(token(3600)).await);
    let yaml = format!(
        "{STORE}{}",
        connections(&[file_conn(echo.addr, tokens.addr, "client-secret")])
    );
    let sc = start(dir, &yaml).await;
    sc.wait_state("api", "ready").await;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o606)).unwrap();
    let (status, outcome) = sc.reload(&yaml).await;
    assert_eq!(status, 422, "{outcome}");
    let problem = outcome["problems"][0].as_str().unwrap();
    assert!(
        problem.contains(VALUE_PATH) && problem.contains("mode 606"),
        "{outcome}"
    );
    assert!(!outcome.to_string().contains(SECRETS[0]), "{outcome}");
    assert_eq!(sc.get("/api/x").await.0, 200);
}

#[test]
fn a_missing_secret_file_names_the_value_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "secrets/client-secret");
    let missing = dir.path().join("secrets/client-secret");
    let expected = format!(
        "{}:4:39: {VALUE_PATH}: cannot read {}: No such file or directory (os error 2)",
        config.display(),
        missing.display()
    );
    // That one problem: nothing else about the value that holds `${file:…}` still.
    assert_eq!(problems(&config), std::slice::from_ref(&expected));
    let (code, out) = check(&config);
    assert_eq!(code, Some(EXIT_INVALID_CONFIG), "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            expected.as_str(),
            "1 problem(s); tokenwarden would not start."
        ]
    );
    // Absolute paths are taken as they are.
    let config = write_config(dir.path(), "/nonexistent/tw/secret");
    assert!(
        problems(&config)[0].ends_with(
            "connections[0].secrets.client_secret: cannot read /nonexistent/tw/secret: No such file or directory (os error 2)"
        ),
        "{:?}",
        problems(&config)
    );
}

/// A file's text is hidden like a variable's: a problem about the value it went into
/// names the place, never the text — also outside `secrets`.
#[test]
fn a_value_from_a_file_is_never_quoted_in_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(&dir.path().join("listen"), "file-secret-LISTEN\n", 0o600);
    write_secret(&dir.path().join("client-secret"), SECRETS[0], 0o600);
    let config = write_config(dir.path(), "client-secret");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("proxy: {{ listen: \"${{file:listen}}\" }}\n{text}"),
    )
    .unwrap();
    let expected = format!(
        "{}:1:10: proxy.listen: bad listen address (value hidden): expected IP:PORT, such as 127.0.0.1:8080",
        config.display()
    );
    assert_eq!(problems(&config), std::slice::from_ref(&expected));
    let (code, out) = check(&config);
    assert_eq!(code, Some(EXIT_INVALID_CONFIG), "{out}");
    assert!(out.contains(&expected), "{out}");
    assert!(!out.contains("file-secret"), "{out}");

    // Valid, `check` lists the secret's name only.
    std::fs::write(&config, text).unwrap();
    let (code, out) = check(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("client_secret"), "{out}");
    assert!(!out.contains("file-secret"), "{out}");
}

/// A rotated Secret needs no restart and no setting: the watch that follows the files is
/// on unless `admin.watch_config: 0`.
#[test]
fn the_watch_is_on_by_default() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(&dir.path().join("client-secret"), SECRETS[0], 0o600);
    let config = tokenwarden::config::load(&write_config(dir.path(), "client-secret")).unwrap();
    assert_eq!(config.admin.watch_config, Some(Duration::from_secs(5)));
}
