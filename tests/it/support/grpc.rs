//! The Python side of the HTTP/2 tests (`tests/py`, packages `grpcio` and `h2` of
//! `tests/py/requirements.txt`): grpcio's server over TLS as a child process on loopback
//! ([`GrpcServer`], `grpc_server.py`), one grpcio client call through a proxy taken from the
//! environment ([`grpc_call`], `grpc_client.py`), and a raw HTTP/2 client sending header blocks
//! byte-exact for the smuggling table ([`h2_raw`], `h2_raw.py`). The scripts' docstrings give
//! their JSON in full.
//!
//! A missing package fails the test (never skips) and names `tests/deps.sh`.

use super::python::{py_dir, require_packages, route_env, run_script_with, INSTALL_HINT};
use super::WAIT;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// grpc_client.py's deadline for a call, in seconds (its `--deadline` default).
const CALL_DEADLINE_SECS: u64 = 20;

/// h2_raw.py's overall timeout when the case gives none (its default).
const H2_RAW_TIMEOUT_SECS: f64 = 10.0;

/// grpcio's server (`tests/py/grpc_server.py`) on `127.0.0.1:<port>` over TLS, serving
/// `tw.Test` (`Unary`: the request reversed; `Stream`: `N` → `msg-0`..`msg-{N-1}`; `Fail`:
/// PERMISSION_DENIED "denied by test", or the `CODE:details` asked for) and printing a JSON
/// line per call. Dropping it closes its stdin (it exits) and kills it by pid.
pub struct GrpcServer {
    port: u16,
    /// Its stdout after the port line: one JSON line per call.
    lines: Lines<BufReader<ChildStdout>>,
    /// Everything it wrote to stderr so far.
    stderr: Arc<Mutex<String>>,
    _stdin: ChildStdin,
    _child: Child,
}

impl GrpcServer {
    /// Starts the server with the certificate chain `cert_pem` and its key `key_pem` (PEM
    /// files) and waits up to [`WAIT`] for its `{"port": N}` line.
    pub async fn start(cert_pem: &Path, key_pem: &Path) -> GrpcServer {
        require_packages();
        let mut child = Command::new("python3")
            .arg(py_dir().join("grpc_server.py"))
            .arg("--cert")
            .arg(cert_pem)
            .arg("--key")
            .arg(key_pem)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `python3` ({e}): {INSTALL_HINT}"));
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = super::child::collect_stderr(child.stderr.take().unwrap());
        let first = tokio::time::timeout(WAIT, lines.next_line()).await;
        let port = match &first {
            Ok(Ok(Some(line))) => serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v["port"].as_u64())
                .and_then(|p| u16::try_from(p).ok()),
            _ => None,
        };
        let Some(port) = port else {
            let status = child.try_wait().ok().flatten();
            // Give the reader a moment to collect the traceback.
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!(
                "grpc_server.py did not start (first line {first:?}, exit {status:?}); if something is missing, {INSTALL_HINT}\nstderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        GrpcServer {
            port,
            lines,
            stderr,
            _stdin: stdin,
            _child: child,
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next `n` calls it saw, in order: `{method, authorization, metadata,
    /// metadata_list, authority, request}` each. Waits up to [`WAIT`] in all, then panics
    /// with those it got and its stderr.
    pub async fn calls(&mut self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut calls = Vec::with_capacity(n);
        while calls.len() < n {
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                other => panic!(
                    "grpc_server.py: {} of {n} calls seen ({other:?}): {calls:?}\nstderr:\n{}",
                    calls.len(),
                    self.stderr.lock().unwrap()
                ),
            };
            let call = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("grpc_server.py printed {line:?}: {e}"));
            calls.push(call);
        }
        calls
    }
}

/// One call of `tw.Test` by grpcio (`tests/py/grpc_client.py`): `call` is `unary`, `stream`
/// or `fail`, to `target` (`host:port`, through a proxy the CONNECT authority), trusting the
/// roots in `ca` (PEM; through tokenwarden, its interception CA). `env`: the environment
/// that routes it (`https_proxy=http://127.0.0.1:<proxy>` or `grpc_proxy`), set after the
/// test's own proxy variables are cleared. Returns `{ok: true, replies, code: "OK",
/// trailing_metadata}` or `{ok: false, code, details, replies, trailing_metadata}`.
pub async fn grpc_call(
    target: &str,
    ca: &Path,
    call: &str,
    payload: &str,
    env: &[(&str, &str)],
) -> Value {
    grpc_call_args(target, ca, call, payload, &[], env).await
}

/// [`grpc_call`] with more of grpc_client.py's arguments (`--metadata KEY=VALUE`,
/// `--authority A`, `--server-name NAME`, `--deadline S`).
pub async fn grpc_call_args(
    target: &str,
    ca: &Path,
    call: &str,
    payload: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Value {
    let ca = ca.to_str().expect("a utf-8 path");
    let mut args = vec!["--target", target, "--ca", ca];
    args.extend(["--call", call, "--payload", payload]);
    args.extend_from_slice(extra);
    // Its own deadline first, so a stuck call reports DEADLINE_EXCEEDED rather than a
    // harness timeout.
    let limit = Duration::from_secs(CALL_DEADLINE_SECS) + WAIT;
    // The proxy variables gRPC C-core reads are cleared first (python::PROXY_VARS), so
    // that only `env` decides the route.
    let out = run_script_with("grpc_client.py", &args, None, limit, |command| {
        route_env(command, env);
    })
    .await;
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("grpc_client.py {args:?} printed {out:?}: {e}"))
}

/// One case of the raw HTTP/2 client (`tests/py/h2_raw.py`): `{host, port, tls, ca,
/// server_name, connect, headers: [[name, value]], data: [..], end_stream, rst_burst,
/// timeout}` → `{outcome: "response", status, headers, body, trailers}`, `{outcome: "reset",
/// error_code}`, `{outcome: "goaway", error_code, last_stream_id, debug}`, `{outcome:
/// "closed"}`, `{outcome: "timeout"}` (or `connect_failed`, `tls_error`, `no_h2`,
/// `protocol_error`), with `streams_opened` when the case has a `rst_burst`.
pub async fn h2_raw(case: Value) -> Value {
    let timeout = case["timeout"].as_f64().unwrap_or(H2_RAW_TIMEOUT_SECS);
    // Its own timeout first, so a silent peer reports "timeout".
    let limit = Duration::from_secs_f64(timeout) + WAIT;
    let input = serde_json::to_vec(&case).unwrap();
    let out = run_script_with("h2_raw.py", &[], Some(&input), limit, |_| {}).await;
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("h2_raw.py {case} printed {out:?}: {e}"))
}
