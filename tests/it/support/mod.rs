//! The shared test kit: a scriptable token endpoint, an echo upstream, and `Sidecar`, the
//! real tokenwarden started in-process on `127.0.0.1:0` from a config file written to a
//! temp dir. Every server here binds loopback only.

#![allow(dead_code)]

pub mod authz;
pub mod capture;
pub mod conn_counter;
pub mod echo;
pub mod external;
pub mod golden;
pub mod logs;
pub mod memory;
pub mod oidc;
pub mod raw;
pub mod raw_upstream;
pub mod token_server;
pub mod upload;

pub use echo::Echo;
pub use token_server::{Reply, TokenServer};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokenwarden::app::{self, Options, Running};

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
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, yaml).expect("write config");
        let config =
            tokenwarden::config::load(&file).unwrap_or_else(|p| panic!("config invalid:\n{p}"));
        let proxy_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = app::start(config, proxy_l, admin_l, options)
            .await
            .expect("sidecar starts");
        Sidecar {
            proxy: running.proxy_addr,
            admin: running.admin_addr,
            running: Some(running),
            dir,
        }
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

    /// The status document of connection `key`.
    pub async fn status(&self, key: &str) -> serde_json::Value {
        get_json(&self.admin_url(&format!("/api/v1/connection/{key}")))
            .await
            .1
    }

    /// Waits until connection `key` reports `state`.
    pub async fn wait_state(&self, key: &str, state: &str) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            last = self.status(key).await;
            if last["state"] == state {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("connection {key} never reached state {state}; last status {last}");
    }

    /// Stops the sidecar and hands back its directory (to restart on the same store).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.dir
    }
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

/// A connection block with an inline client_config using client credentials against
/// `token` and forwarding to `upstream` (both `host:port`, plain http).
pub fn cc_connection(key: &str, upstream: SocketAddr, token: SocketAddr, extra: &str) -> String {
    format!(
        r#"  - key: {key}
    secrets: {{ client_id: the-client, client_secret: "s3cret-VALUE" }}
    client_config:
      protocol: http
      host: "{upstream}"
      authentication:
        strategy: oauth2_client_credentials
        configuration:
{extra}          token_request:
            method: POST
            path: /oauth/token
            client_config: {{ protocol: http, host: "{token}" }}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "client_credentials", "client_id": "<client_id>", "client_secret": "<client_secret>"}}'
"#
    )
}
