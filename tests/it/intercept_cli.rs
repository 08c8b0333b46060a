//! Interception from the command line (issue 12): `tokenwarden ca init` and `ca bundle`
//! as a user runs them, and the real `tokenwarden run` binary intercepting a connection
//! whose host is an IP literal (no SNI; the leaf names the address), logging a client that
//! does not trust the CA once per client, with the hint, and no stack trace.

use crate::support::capture::{self, Capture};
use crate::support::external::{self, body_then_status};
use crate::support::process::SidecarProcess;
use crate::support::*;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

/// The hint the warning about an untrusting client carries.
const HINT: &str = "does not trust the interception CA";

fn tokenwarden(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .args(args)
        .output()
        .expect("run tokenwarden")
}

#[test]
fn ca_init_writes_a_private_key_and_prints_how_to_trust_it_and_ca_bundle_appends_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = ca_dir.to_str().unwrap();
    let out = tokenwarden(&["ca", "init", "--dir", ca]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "intercept:",
        "--cacert",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "ca bundle",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let mode = std::fs::metadata(ca_dir.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = tokenwarden(&["ca", "init", "--dir", ca]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let system = dir.path().join("system.pem");
    std::fs::write(
        &system,
        "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let out = tokenwarden(&[
        "ca",
        "bundle",
        "--dir",
        ca,
        "--system",
        system.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = std::fs::read_to_string(ca_dir.join("bundle.pem")).unwrap();
    let root = std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
    assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----\nMA==\n"));
    assert!(bundle.ends_with(&root));
}

#[tokio::test]
async fn an_untrusting_client_is_logged_once_with_a_hint_and_an_ip_host_is_intercepted() {
    let dir = tempfile::tempdir().unwrap();
    let files = tokenwarden::ca::init(&dir.path().join("ca")).unwrap();
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let capture = Capture::start(serde_json::json!({"ok": true})).await;
    let intercept = format!(
        "  intercept: {{ ca_cert: \"{}\", ca_key: \"{}\" }}\n",
        files.cert.display(),
        files.key.display()
    );
    let conn = cc_conn("ip", capture.addr, tokens.addr).protocol("https");
    let body = format!(
        "tls: {{ ca_file: \"{}\" }}\n{}",
        capture::ca_file().display(),
        connections(&[conn])
    );
    let sidecar = SidecarProcess::spawn_with(dir.path(), "tw", &intercept, "", &body, "info").await;
    sidecar.status("ip").await;
    wait_state_at(sidecar.admin, "ip", "ready").await;
    let proxy = sidecar.url("");
    let url = format!("https://{}/v1/ip", capture.addr);
    for _ in 0..2 {
        let out = external::curl(&[&url], &[("HTTPS_PROXY", &proxy)]).await;
        assert!(!out.status.success(), "an untrusting client must fail");
    }
    let ca = files.cert.display().to_string();
    let out = external::curl(
        &["--cacert", &ca, "-w", "\n%{http_code}", &url],
        &[("HTTPS_PROXY", &proxy)],
    )
    .await;
    let (text, status) = body_then_status(&out);
    assert_eq!(
        status,
        200,
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = capture.nth(1).await;
    assert_eq!(got.sni, None, "an IP host is reached without SNI");
    assert!(
        got.headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer tok-1"),
        "{:?}",
        got.headers
    );
    let logs = sidecar.logs();
    assert_eq!(
        logs.matches(HINT).count(),
        1,
        "logged once per client:\n{logs}"
    );
    assert!(
        logs.contains("NODE_EXTRA_CA_CERTS") && logs.contains("docs/local-proxy.md"),
        "{logs}"
    );
    assert!(
        !logs.contains("stack backtrace") && !logs.contains("panicked"),
        "{logs}"
    );
}

/// `ca init --dir` with a relative directory prints absolute paths: the config resolves a
/// relative path against its own folder, not the one `ca init` ran in, so the printed
/// `intercept:` line works pasted into a config file anywhere.
#[test]
fn ca_init_prints_absolute_paths_for_a_relative_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .args(["ca", "init", "--dir", "sub/ca"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("intercept:"))
        .unwrap_or_else(|| panic!("no intercept line in:\n{text}"));
    let cert = dir.path().canonicalize().unwrap().join("sub/ca/ca.pem");
    let key = cert.with_file_name("ca.key");
    let expected = format!(
        "intercept: {{ ca_cert: {}, ca_key: {} }}",
        cert.display(),
        key.display()
    );
    assert_eq!(line.trim(), expected);
    assert!(
        text.contains(&format!(
            "tokenwarden ca bundle --dir {}",
            cert.parent().unwrap().display()
        )),
        "{text}"
    );
}
