//! The Python side of the tests against real Python implementations (`tests/py`, see
//! `tests/py/requirements.txt`): Authlib's JWT-bearer authorization server as a child
//! process on loopback, Google's `google-auth` fetching one token, and key generation and
//! JWT signature checks with `cryptography` and joserfc.
//!
//! The packages are installed by `tests/deps.sh`; when they are missing a test fails
//! (never skips) and says so.

use super::child::Listening;
use super::{client, WAIT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// What to run when a Python package is missing.
pub const INSTALL_HINT: &str =
    "run tests/deps.sh (it pip-installs tests/py/requirements.txt into python3)";

/// The modules the scripts import.
const MODULES: &str =
    "authlib, joserfc, flask, werkzeug, google.auth, requests, cryptography, grpc, h2";

/// `tests/py`.
pub fn py_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

/// Panics, naming `tests/deps.sh`, unless python3 and every package of
/// `tests/py/requirements.txt` are there (checked once per test binary).
pub fn require_packages() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = CHECKED.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!("import {MODULES}"))
            .output()
            .map_err(|e| format!("cannot run `python3` ({e})"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "python3 lacks a package of tests/py/requirements.txt:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(why) = outcome {
        panic!("{why}\n{INSTALL_HINT}");
    }
}

/// The proxy variables a script's HTTP stack may read: `requests` (urllib's `*_proxy`,
/// `no_proxy`) and gRPC C-core (`grpc_proxy`, `no_grpc_proxy` too). [`route_env`] clears
/// each, in either case.
pub const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "grpc_proxy",
    "no_grpc_proxy",
];

/// Clears every [`PROXY_VARS`] (lower and upper case) from `command`'s environment, then
/// sets `env`: only the test's own variables decide a script's route, never the proxy
/// settings of the machine running the tests.
pub fn route_env(command: &mut Command, env: &[(&str, &str)]) {
    for var in PROXY_VARS {
        command.env_remove(var).env_remove(var.to_uppercase());
    }
    for (k, v) in env {
        command.env(k, v);
    }
}

/// Runs `python3 tests/py/<script> <args>` to completion and returns its stdout (panics
/// with its stderr if it fails or takes longer than [`WAIT`]).
pub async fn run_script(script: &str, args: &[&str]) -> String {
    run_script_with(script, args, None, WAIT, |_| {}).await
}

/// [`run_script`] with `stdin` written to the script (then closed; none: `/dev/null`), a
/// time `limit`, and `configure` applied to the command before it starts (its environment,
/// say).
pub async fn run_script_with(
    script: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    limit: Duration,
    configure: impl FnOnce(&mut Command),
) -> String {
    require_packages();
    let mut command = Command::new("python3");
    command
        .arg(py_dir().join(script))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    configure(&mut command);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `python3` ({e}): {INSTALL_HINT}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input)
            .await
            .unwrap_or_else(|e| panic!("{script}: writing its stdin: {e}"));
        // Dropping the pipe closes it: the script reads to EOF.
    }
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} {args:?} did not finish within {limit:?}"))
        .expect("wait for python3");
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}); if a module is missing, {INSTALL_HINT}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A private key (PKCS#8 PEM) and its public key (SubjectPublicKeyInfo PEM).
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

impl KeyPair {
    /// A fresh RSA-2048 key pair from `cryptography`.
    pub async fn rsa() -> KeyPair {
        KeyPair::generate("rsa").await
    }

    /// A fresh P-256 key pair from `cryptography`.
    pub async fn ec() -> KeyPair {
        KeyPair::generate("ec").await
    }

    async fn generate(kind: &str) -> KeyPair {
        let out = run_script("jose_tool.py", &["keygen", kind]).await;
        let v: Value = serde_json::from_str(&out).expect("keygen JSON");
        KeyPair {
            private_pem: v["private_pem"].as_str().unwrap().to_owned(),
            public_pem: v["public_pem"].as_str().unwrap().to_owned(),
        }
    }

    /// The private key as a YAML (and JSON) double-quoted scalar.
    pub fn private_yaml(&self) -> String {
        serde_json::to_string(&self.private_pem).unwrap()
    }

    /// A line of the private key's base64 body, to look for in logs.
    pub fn private_body_line(&self) -> &str {
        self.private_pem
            .lines()
            .nth(2)
            .expect("a PEM body of several lines")
    }
}

/// A JWT as `jose_tool.py verify` saw it.
#[derive(Debug)]
pub struct Checked {
    /// The signature verifies with the public key, for the header's `alg`.
    pub valid: bool,
    pub header: Value,
    pub claims: Value,
    pub error: Option<String>,
}

/// Decodes `jwt` and checks its signature with the public key `public_pem` (joserfc).
pub async fn verify_jwt(public_pem: &str, jwt: &str) -> Checked {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("public.pem");
    std::fs::write(&file, public_pem).unwrap();
    let out = run_script("jose_tool.py", &["verify", file.to_str().unwrap(), jwt]).await;
    let v: Value = serde_json::from_str(&out).expect("verify JSON");
    Checked {
        valid: v["valid"] == true,
        header: v["header"].clone(),
        claims: v["claims"].clone(),
        error: v["error"].as_str().map(str::to_owned),
    }
}

/// google-auth's token for the service-account key file `key_file`, fetched from
/// `token_uri` with `scopes` (`tests/py/google_auth_token.py`).
pub async fn google_auth_token(key_file: &Path, token_uri: &str, scopes: &[&str]) -> String {
    let mut args = vec![key_file.to_str().unwrap(), "--token-uri", token_uri];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let out = run_script("google_auth_token.py", &args).await;
    let v: Value = serde_json::from_str(&out).expect("google_auth_token JSON");
    v["token"].as_str().expect("a token").to_owned()
}

/// A Python server of `tests/py` running as a child process: started with its environment,
/// ready once it printed `LISTENING <base>`. Dropping it closes its stdin (it exits) and
/// kills it by pid.
pub struct PyServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    server: Listening,
}

impl PyServer {
    /// Starts `python3 tests/py/<script>` with `env` and waits for its `LISTENING` line.
    pub async fn start(script: &str, env: &[(&str, &str)]) -> PyServer {
        require_packages();
        let mut command = Command::new("python3");
        command
            .arg(py_dir().join(script))
            .current_dir(py_dir())
            .env("PYTHONUNBUFFERED", "1");
        for (k, v) in env {
            command.env(k, v);
        }
        let server = Listening::start(command, script, INSTALL_HINT).await;
        PyServer {
            base: server.base.clone(),
            server,
        }
    }

    /// `127.0.0.1:<port>` (for a connection's `host`).
    pub fn authority(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The last `max` characters the server wrote to stderr (for failure messages).
    pub fn stderr_tail(&self, max: usize) -> String {
        let text = self.server.stderr.lock().unwrap();
        let start = text
            .char_indices()
            .rev()
            .nth(max.saturating_sub(1))
            .map_or(0, |(i, _)| i);
        text[start..].to_owned()
    }

    /// GET `<base><path>` as JSON.
    pub async fn get(&self, path: &str) -> Value {
        let r = client()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }
}

/// The issuer (client id) the JWT-bearer server trusts.
pub const JWT_ISSUER: &str = "tw-client";
/// The subject it lets that issuer act for.
pub const JWT_SUBJECT: &str = "alice";

/// Authlib's authorization server with its RFC 7523 §2.1 JWT-bearer grant
/// (`tests/py/jwt_bearer_server.py`): trusts [`JWT_ISSUER`] with one public key, issues
/// short-lived access tokens and checks them at `/api/…`.
pub struct JwtBearerServer {
    pub server: PyServer,
    /// Where the token endpoint is, also the audience it accepts.
    pub token_url: String,
    _dir: tempfile::TempDir,
}

impl JwtBearerServer {
    /// Starts the server trusting `public_pem`, issuing tokens living `access_ttl` seconds;
    /// `extra`: more of its environment (`TOKEN_DELAY_MS`, `JWT_LEEWAY`, …).
    pub async fn start(public_pem: &str, access_ttl: u64, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("issuer-public.pem");
        std::fs::write(&key, public_pem).unwrap();
        let ttl = access_ttl.to_string();
        let mut env = vec![
            ("JWT_PUBLIC_KEY_FILE", key.to_str().unwrap()),
            ("JWT_ISSUER", JWT_ISSUER),
            ("JWT_SUBJECTS", JWT_SUBJECT),
            ("ACCESS_TTL", ttl.as_str()),
        ];
        env.extend_from_slice(extra);
        let server = PyServer::start("jwt_bearer_server.py", &env).await;
        let token_url = format!("{}/oauth2/token", server.base);
        JwtBearerServer {
            server,
            token_url,
            _dir: dir,
        }
    }

    /// `{token_requests, issued, errors: {code: n}, api_ok, api_refused}`.
    pub async fn stats(&self) -> Value {
        self.server.get("/__stats").await
    }

    /// Every token request: `{at, content_type, form: [[name, value]], assertion_header,
    /// assertion_claims, status, error, error_description, access_token}`.
    pub async fn requests(&self) -> Vec<Value> {
        match self.server.get("/__requests").await {
            Value::Array(list) => list,
            other => panic!("/__requests: {other}"),
        }
    }
}
