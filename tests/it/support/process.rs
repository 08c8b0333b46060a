//! The real `tokenwarden run` binary as a child process, on fixed loopback ports picked
//! free beforehand: for tests that need several replicas and SIGKILL. Its stderr goes to
//! a log file beside its config, printed when a test fails.

use super::redis::free_port;
use super::{client, status_at, WAIT};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct SidecarProcess {
    pub name: String,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    log_level: String,
    child: Option<Child>,
}

impl SidecarProcess {
    /// Writes `<dir>/<name>.yaml` — `body` after `proxy.listen` and `admin.listen` lines on
    /// free ports — and starts the binary on it; waits for `/healthz`.
    pub async fn spawn(dir: &Path, name: &str, admin_extra: &str, body: &str) -> SidecarProcess {
        SidecarProcess::spawn_logging(dir, name, admin_extra, body, "info").await
    }

    /// [`SidecarProcess::spawn`] with `RUST_LOG=<log>`.
    pub async fn spawn_logging(
        dir: &Path,
        name: &str,
        admin_extra: &str,
        body: &str,
        log: &str,
    ) -> SidecarProcess {
        SidecarProcess::spawn_proxy(dir, name, "", &format!("{admin_extra}{body}"), log).await
    }

    /// [`SidecarProcess::spawn_logging`] with `proxy_extra` lines under `proxy:` (indented
    /// two spaces, each ending in `\n`) and `body` after the `admin.listen` line.
    pub async fn spawn_proxy(
        dir: &Path,
        name: &str,
        proxy_extra: &str,
        body: &str,
        log: &str,
    ) -> SidecarProcess {
        let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join(format!("{name}.yaml"));
        let yaml =
            format!("proxy:\n  listen: {proxy}\n{proxy_extra}admin:\n  listen: {admin}\n{body}");
        std::fs::write(&config, yaml).unwrap();
        let mut p = SidecarProcess {
            name: name.to_owned(),
            proxy,
            admin,
            log: dir.join(format!("{name}.log")),
            log_level: log.to_owned(),
            config,
            child: None,
        };
        p.start().await;
        p
    }

    /// Starts the binary (again) on the same config and ports.
    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", &self.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tokenwarden");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let up = client()
                .get(format!("http://{}/healthz", self.admin))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if up {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{} exited with {status}:\n{}", self.name, self.logs());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not come up:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the drain.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + WAIT;
            while child.try_wait().ok().flatten().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = child.kill(); // did not drain in time: never left running
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }

    /// `http://<proxy><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    pub async fn status(&self, key: &str) -> serde_json::Value {
        status_at(self.admin, key).await
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
