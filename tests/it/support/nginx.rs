//! nginx as an HTTP/2 upstream over TLS (the test CA's certificate, like the capture
//! server's), for what only a real server does: ending each connection after
//! `keepalive_requests` with a GOAWAY whose last stream is the last it took, so requests
//! already sent beyond it are refused unprocessed. Started on a free loopback port, stopped
//! by its pid when dropped; a missing nginx fails the test and names `tests/deps.sh`.

use super::capture;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct Nginx {
    pub port: u16,
    _dir: tempfile::TempDir,
    _child: Child,
}

impl Nginx {
    /// nginx answering `{"ok":1}` to everything over TLS with HTTP/2 (ALPN `h2, http/1.1`),
    /// `keepalive_requests` requests per connection.
    pub async fn start_h2(keepalive_requests: u32) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = super::redis::free_port();
        let fixtures = capture::ca_file().parent().unwrap().to_path_buf();
        let d = dir.path().display();
        let conf = format!(
            r#"worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests {keepalive_requests};
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        default_type application/json;
        location / {{ return 200 '{{"ok":1}}'; }}
    }}
}}
"#,
            cert = fixtures.join("server.pem").display(),
            key = fixtures.join("server.key").display(),
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nginx ({e}): run tests/deps.sh"));
        let deadline = tokio::time::Instant::now() + super::WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Nginx {
            port,
            _dir: dir,
            _child: child,
        }
    }
}
