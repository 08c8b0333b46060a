//! Real HTTP clients run as subprocesses (curl, Python `requests`), with every proxy
//! variable of the test's own environment removed first, a bounded run time, and a clear
//! failure when the tool is missing (CI installs them: `curl`, `python3-requests`).

use super::WAIT;
use std::process::Output;

/// Proxy variables cleared before each run (a CI's own proxy settings must not leak in).
pub const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// Seconds an external client may spend on one request (below the test's own deadline).
pub const CLIENT_MAX_SECS: &str = "8";

/// Runs `program args…` with a clean proxy environment plus `env`; panics with an install
/// hint when the program is missing, or when it outlives [`WAIT`].
pub async fn run(program: &str, args: &[&str], env: &[(&str, &str)], hint: &str) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.output();
    match tokio::time::timeout(WAIT, child).await {
        Err(_) => panic!("`{program}` did not finish within {WAIT:?}"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{program}` is required by this test but is not installed: {hint}")
        }
        Ok(Err(e)) => panic!("cannot run `{program}`: {e}"),
        Ok(Ok(out)) => out,
    }
}

/// `curl -q -sS --max-time N args…` (no `~/.curlrc`); panics if curl is missing.
pub async fn curl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["-q", "-sS", "--max-time", CLIENT_MAX_SECS];
    all.extend_from_slice(args);
    run("curl", &all, env, "apt-get install curl").await
}

/// Runs `python3 -c script args…`; panics with a hint if python3 or `requests` is missing.
pub async fn python_requests(script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    const HINT: &str = "apt-get install python3 python3-requests (or pip install requests)";
    let probe = run("python3", &["-c", "import requests"], &[], HINT).await;
    assert!(
        probe.status.success(),
        "Python `requests` is required by this test but cannot be imported ({HINT}):\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let mut all = vec!["-c", script];
    all.extend_from_slice(args);
    run("python3", &all, env, HINT).await
}

/// Splits output written as `BODY\nSTATUS` (curl `-w '\n%{http_code}'`) into both parts.
pub fn body_then_status(out: &Output) -> (String, u16) {
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or_else(|| {
        panic!(
            "unexpected client output: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let status = status.trim().parse().unwrap_or_else(|_| {
        panic!(
            "no status in client output: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (body.to_owned(), status)
}
