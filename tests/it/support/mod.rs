//! The shared test kit: a scriptable token endpoint, an echo upstream, and `Sidecar`, the
//! real tokenwarden started in-process on `127.0.0.1:0` from a config file written to a
//! temp dir. Every server here binds loopback only.

pub mod authz;
pub mod browser;
pub mod capture;
pub mod child;
pub mod config;
pub mod conn_counter;
pub mod demo;
pub mod differential;
pub mod echo;
pub mod external;
pub mod golden;
pub mod grpc;
pub mod logs;
pub mod memory;
pub mod nginx;
pub mod oauth_sdk;
pub mod oidc;
pub mod process;
pub mod python;
pub mod raw;
pub mod redis;
pub mod redis_topology;
pub mod serve;
pub mod token_server;
pub mod upload;
pub mod upstream;

pub use config::*;
pub use echo::{echoed, echoed_authorization, Echo};
pub use token_server::{Reply, TokenServer};

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokenwarden::app::{self, Options, Running, StartError};

/// Longest wait for an asynchronous condition in tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running sidecar and the directory holding its config and store.
pub struct Sidecar {
    pub running: Option<Running>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Sidecar {
    /// Writes `yaml` to `<tempdir>/config.yaml` and starts the sidecar from it.
    pub async fn start(yaml: &str) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        Sidecar::start_in(dir, yaml, Options::default()).await
    }

    /// Starts in an existing directory (e.g. to restart on the same store).
    pub async fn start_in(dir: tempfile::TempDir, yaml: &str, options: Options) -> Sidecar {
        Sidecar::start_on(loopback().await, dir, yaml, options).await
    }

    /// Starts on a proxy listener bound beforehand (when the config must name its address).
    pub async fn start_on(
        proxy: tokio::net::TcpListener,
        dir: tempfile::TempDir,
        yaml: &str,
        options: Options,
    ) -> Sidecar {
        let running = start_app(proxy, dir.path(), yaml, options)
            .await
            .expect("sidecar starts");
        Sidecar {
            proxy: running.proxy_addr,
            admin: running.admin_addr,
            running: Some(running),
            dir,
        }
    }

    /// Stops and starts again from `yaml` on the same directory (and store).
    pub async fn restart(self, yaml: &str) -> Sidecar {
        let dir = self.stop().await;
        Sidecar::start_in(dir, yaml, Options::default()).await
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// `http://<proxy>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    /// `http://<admin>/<path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// GET `path` through the proxy → (status, JSON body or Null).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        get_json(&self.url(path)).await
    }

    /// The status document of connection `key`.
    pub async fn status(&self, key: &str) -> serde_json::Value {
        status_at(self.admin, key).await
    }

    /// Waits until connection `key` reports `state`.
    pub async fn wait_state(&self, key: &str, state: &str) -> serde_json::Value {
        wait_state_at(self.admin, key, state).await
    }

    /// Polls the status of connection `key` until `done` holds; returns that status
    /// (panics naming `what` after [`WAIT`]).
    pub async fn wait_status(
        &self,
        key: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.status(key).await;
            if done(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "connection {key}: timed out waiting for {what}; last status {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rewrites the config file and asks for a reload (`POST /api/v1/reload`) → (status,
    /// outcome).
    pub async fn reload(&self, yaml: &str) -> (u16, serde_json::Value) {
        std::fs::write(self.config_path(), yaml).unwrap();
        let r = client()
            .post(self.admin_url("/api/v1/reload"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap()).unwrap(),
        )
    }

    /// The `/metrics` scrape as text.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops the sidecar and hands back its directory (to restart on the same store).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.dir
    }
}

/// A fresh listener on `127.0.0.1:0`.
pub async fn loopback() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Writes `yaml` to `<dir>/config.yaml`, loads it (panics when it is invalid) and runs
/// `app::start` on `proxy` and a fresh admin listener.
async fn start_app(
    proxy: tokio::net::TcpListener,
    dir: &Path,
    yaml: &str,
    options: Options,
) -> Result<Running, StartError> {
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).expect("write config");
    let config =
        tokenwarden::config::load(&file).unwrap_or_else(|p| panic!("config invalid:\n{p}"));
    app::start(config, proxy, loopback().await, options).await
}

/// [`Sidecar::start_in`] that hands back a failed start instead of panicking.
pub async fn try_start(dir: &Path, yaml: &str) -> Result<Running, StartError> {
    start_app(loopback().await, dir, yaml, Options::default()).await
}

/// A sidecar with one client-credentials connection `key` from `upstream` to `token`
/// ([`cc_connection`]).
pub async fn cc_sidecar(key: &str, upstream: SocketAddr, token: SocketAddr) -> Sidecar {
    Sidecar::start(&connections(&[cc_connection(key, upstream, token, "")])).await
}

/// The status document of connection `key` from the admin listener at `admin`.
pub async fn status_at(admin: SocketAddr, key: &str) -> serde_json::Value {
    get_json(&format!("http://{admin}/api/v1/connection/{key}"))
        .await
        .1
}

/// Waits until connection `key` of the admin listener at `admin` reports `state`.
pub async fn wait_state_at(admin: SocketAddr, key: &str, state: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        last = status_at(admin, key).await;
        if last["state"] == state {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("connection {key} never reached state {state}; last status {last}");
}

/// A client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// GET `url` → (status, JSON body or Null).
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = client().get(url).send().await.expect("request");
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// A token endpoint answering `reply`, an echo upstream, and a sidecar with one
/// client-credentials connection `api` between them (`extra`: lines under `configuration:`).
pub async fn setup(reply: Reply, extra: &str) -> (TokenServer, Echo, Sidecar) {
    let tokens = TokenServer::start(reply).await;
    let echo = Echo::start().await;
    let yaml = connections(&[cc_connection("api", echo.addr, tokens.addr, extra)]);
    let sidecar = Sidecar::start(&yaml).await;
    (tokens, echo, sidecar)
}

/// A token living `expires_in` seconds, without a refresh token.
pub fn token(expires_in: u64) -> Reply {
    Reply::token(expires_in, false)
}

/// The number `N` of the `Bearer tok-N` an echo response received.
pub fn token_number(body: &Value) -> u64 {
    let auth = echoed(body, "authorization");
    assert_eq!(auth.len(), 1, "one Authorization header: {body}");
    auth[0]
        .strip_prefix("Bearer tok-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected Authorization {auth:?}"))
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `check` every 20 ms until it holds, or panics with `what` after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub use redis::free_port;
