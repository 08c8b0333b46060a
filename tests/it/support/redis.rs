//! A throwaway `redis-server` on a free loopback port, with no persistence, stopped by its
//! pid; and a small client for the tests to look at (or spoil) what the sidecars stored.
//!
//! Needs Debian's `redis-server` (`.ci/run` installs it); without it the tests fail, never
//! skip.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What to run when the server cannot start.
pub const INSTALL_HINT: &str = "install Redis: apt-get install redis-server";
/// Longest wait for the server to answer after it is started.
const START_WAIT: Duration = Duration::from_secs(10);

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub async fn start() -> RedisServer {
        let port = free_port();
        let mut server = RedisServer { port, child: None };
        server.launch().await;
        server
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The pid of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}): {INSTALL_HINT}"));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            if self.ping().await {
                // The port was free when picked; make sure the server answering is ours.
                let info: String = self.cmd(&[b"INFO", b"server"]).await;
                let pid = self.pid().unwrap();
                assert!(
                    info.contains(&format!("process_id:{pid}\r\n")),
                    "port {} answers, but not from the redis-server just started (pid {pid})",
                    self.port
                );
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {} did not answer within {START_WAIT:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut con) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut con)
            .await
            .is_ok()
    }

    /// Kills the server (SIGKILL by pid) and waits for it to exit; everything it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("test connection to redis")
    }

    /// Runs one command.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&[u8]]) -> T {
        let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut self.connection().await)
            .await
            .unwrap_or_else(|e| panic!("redis {:?}: {e}", String::from_utf8_lossy(args[0])))
    }

    /// The stored generation of connection `key` (default prefix), 0 when none.
    pub async fn generation(&self, key: &str) -> u64 {
        let gen: Option<String> = self
            .cmd(&[
                b"HGET",
                format!("tokenwarden:{{{key}}}:token").as_bytes(),
                b"gen",
            ])
            .await;
        gen.map_or(0, |g| g.parse().unwrap())
    }

    /// How many connections are subscribed to the token-update channel (default prefix).
    pub async fn subscribers(&self) -> i64 {
        let (_, n): (String, i64) = self
            .cmd(&[b"PUBSUB", b"NUMSUB", b"tokenwarden:tokens"])
            .await;
        n
    }

    /// How many times the server ran `command` (lower case, e.g. `subscribe`) since it
    /// started, from `INFO commandstats`.
    pub async fn calls(&self, command: &str) -> u64 {
        let info: String = self.cmd(&[b"INFO", b"commandstats"]).await;
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    /// Bytes the server has sent to all its clients since it started (`INFO stats`).
    pub async fn bytes_sent(&self) -> u64 {
        let info: String = self.cmd(&[b"INFO", b"stats"]).await;
        info.lines()
            .find_map(|line| line.strip_prefix("total_net_output_bytes:"))
            .map(|n| n.trim().parse().unwrap())
            .expect("total_net_output_bytes in INFO stats")
    }

    /// The holder of connection `key`'s refresh lease, if any.
    pub async fn lease_holder(&self, key: &str) -> Option<String> {
        self.cmd(&[b"GET", format!("tokenwarden:{{{key}}}:lease").as_bytes()])
            .await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A token set sealed as tokenwarden sealed it before issue 20 (associated data: magic,
/// version 1, connection; no generation or key prefix): `key id ‖ nonce ‖ ciphertext`, for
/// a `sealed` field. An independent re-implementation of that format, to play an earlier
/// version (or an attacker holding its old values).
pub fn seal_v1(store_key: &str, connection: &str, access: &str, refresh: &str) -> Vec<u8> {
    use base64::Engine as _;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use sha2::Digest as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(store_key)
        .unwrap();
    let cipher = chacha20poly1305::XChaCha20Poly1305::new_from_slice(&raw).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let document = serde_json::json!({
        "access_token": access, "refresh_token": refresh, "expires_at": now + 3600,
        "scope": null, "obtained_at": now,
    });
    let mut aad = b"TKWARDEN\x00\x01".to_vec();
    aad.extend_from_slice(&u16::try_from(connection.len()).unwrap().to_be_bytes());
    aad.extend_from_slice(connection.as_bytes());
    let nonce: [u8; 24] = rand::random();
    let plaintext = serde_json::to_vec(&document).unwrap();
    let payload = Payload {
        msg: &plaintext,
        aad: &aad,
    };
    let ciphertext = cipher.encrypt(&nonce.into(), payload).unwrap();
    let mut sealed = sha2::Sha256::digest(&raw)[..8].to_vec();
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    sealed
}

/// A loopback port nothing listens on (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `store:` section of a sidecar on `redis` with `key`, a lease of `lease_ttl` and a
/// poll every `poll`.
pub fn redis_store(redis: &RedisServer, key: &str, lease_ttl: &str, poll: &str) -> String {
    format!(
        "store:\n  backend: redis\n  url: {}\n  key: \"{key}\"\n  lease_ttl: {lease_ttl}\n  poll_interval: {poll}\n",
        redis.url()
    )
}
