//! HTTP/2 on both legs (issue 27), with real clients and servers: curl `--http2` through
//! `HTTPS_PROXY` (h2 chosen by ALPN inside the intercepted tunnel) and
//! `--http2-prior-knowledge` (h2c on the proxy listener); grpcio's client and server through
//! `https_proxy` (unary, server streaming, an error status, the injected `authorization`
//! metadata, trailers); the upstream leg by ALPN per `upstream_http2` (one multiplexed
//! connection for 64 concurrent requests; `never`; `always` against an HTTP/1.1-only
//! upstream; gRPC never downgraded). The smuggling table of `paths.rs` has its HTTP/2 rows
//! in [`smuggling`].

use crate::support::capture::{self, Capture};
use crate::support::external;
use crate::support::grpc::{grpc_call, h2_raw, GrpcServer};
use crate::support::process::SidecarProcess;
use crate::support::*;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;
use tokenwarden::app::Options;
use tokenwarden::ca;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A host name the test certificates cover (resolved to 127.0.0.1 by the sidecar).
const NAME: &str = "tenant.example.com";

/// A sidecar with connection `saas` (token `tok-1`, `extra` lines on it) on
/// `https://tenant.example.com:<port>`, interception on with a fresh CA.
struct World {
    _tokens: TokenServer,
    sidecar: Sidecar,
    ca_dir: tempfile::TempDir,
    port: u16,
}

impl World {
    async fn start(port: u16, extra: &[&str], proxy_extra: &str) -> World {
        let ca_dir = tempfile::tempdir().unwrap();
        let files = ca::init(ca_dir.path()).unwrap();
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let mut conn = cc_conn("saas", format!("{NAME}:{port}"), tokens.addr)
            .protocol("https")
            .field("allow_private_network: true");
        for line in extra {
            conn = conn.field(line);
        }
        let yaml = format!(
            "proxy: {{ intercept: {{ ca_cert: \"{}\", ca_key: \"{}\" }}{proxy_extra} }}\ntls: {{ ca_file: \"{}\" }}\n{}",
            files.cert.display(),
            files.key.display(),
            capture::ca_file().display(),
            connections(&[conn.to_string()])
        );
        let options = Options {
            static_hosts: [(NAME.to_owned(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])]
                .into_iter()
                .collect(),
            ..Options::default()
        };
        let sidecar = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await;
        sidecar.wait_state("saas", "ready").await;
        World {
            _tokens: tokens,
            sidecar,
            ca_dir,
            port,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{NAME}:{}{path}", self.port)
    }

    fn ca_cert(&self) -> PathBuf {
        self.ca_dir.path().join(ca::CA_CERT_FILE)
    }

    /// `curl --http2` through `HTTPS_PROXY` trusting the CA: (HTTP version, status, body).
    async fn curl_h2(&self, path: &str) -> (String, u16, String) {
        let ca = self.ca_cert().display().to_string();
        let url = self.url(path);
        let args = [
            "--http2",
            "--cacert",
            &ca,
            "-sS",
            "-w",
            "\n%{http_version} %{http_code}",
            &url,
        ];
        let out = external::curl(&args, &[("HTTPS_PROXY", &self.sidecar.url(""))]).await;
        versioned(&out)
    }
}

/// curl's output ending in `\n<http_version> <status>`: (version, status, body).
fn versioned(out: &std::process::Output) -> (String, u16, String) {
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (version, status) = last.split_once(' ').unwrap_or((last, "0"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = status.parse().unwrap_or_else(|_| panic!("{text} {stderr}"));
    (version.to_owned(), status, body.to_owned())
}

fn header<'a>(got: &'a capture::Captured, name: &str) -> Vec<&'a str> {
    got.all(name)
}

// ---------------------------------------------------------------- the app's leg

#[tokio::test]
async fn curl_http2_through_https_proxy_speaks_h2_in_the_tunnel_and_gets_the_token() {
    let capture = Capture::start(json!({"ok": 1})).await;
    let w = World::start(capture.addr.port(), &[], "").await;
    let (version, status, body) = w.curl_h2("/v1/things?x=1").await;
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    assert_eq!(body, r#"{"ok":1}"#);
    let got = capture.nth(1).await;
    assert_eq!(got.target, "/v1/things?x=1");
    assert_eq!(header(&got, "authorization"), ["Bearer tok-1"]);
    assert_eq!(header(&got, "host"), [format!("{NAME}:{}", w.port)]);
    // The upstream offers HTTP/1.1 only: `auto` asked, and it went as HTTP/1.1.
    assert_eq!(got.version, "HTTP/1.1");
}

#[tokio::test]
async fn curl_http2_prior_knowledge_reaches_reverse_mode_over_h2c() {
    let upstream = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let yaml = connections(&[cc_connection("crm", upstream.addr, tokens.addr, "")]);
    let sidecar = Sidecar::start(&yaml).await;
    sidecar.wait_state("crm", "ready").await;
    let url = sidecar.url("/crm/v1/echo?q=1");
    let args = [
        "--http2-prior-knowledge",
        "-sS",
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
    ];
    let out = external::curl(&args, &[]).await;
    let (version, status, body) = versioned(&out);
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["target"], "/v1/echo?q=1", "{echoed}");
    let authorization = json!(["authorization", "Bearer tok-1"]);
    let headers = echoed["headers"].as_array().unwrap();
    assert!(headers.contains(&authorization), "{echoed}");
}

// ---------------------------------------------------------------- the upstream leg

/// 64 requests at once over HTTP/1.1 from the app, one worker: the upstream, which offers
/// h2, sees them all as HTTP/2 on one connection, each with the token and its authority.
#[tokio::test]
async fn upstream_h2_multiplexes_64_concurrent_requests_on_one_connection() {
    let capture = Capture::start_h2(json!({"ok": 2})).await;
    let w = World::start(capture.addr.port(), &[], ", worker_threads: 1").await;
    // The first request learns that the upstream speaks h2 (its probe connection closes).
    let client = reqwest_via(&w);
    let first = client.get(w.url("/first")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    capture.delay(Duration::from_millis(300));
    let sends = (0..64).map(|i| {
        let client = client.clone();
        let url = w.url(&format!("/many/{i}"));
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(sends).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let many: Vec<_> = capture
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/many/"))
        .collect();
    assert_eq!(many.len(), 64);
    let connections: std::collections::BTreeSet<usize> =
        many.iter().map(|r| r.connection).collect();
    assert_eq!(
        connections.len(),
        1,
        "one multiplexed connection: {connections:?}"
    );
    for r in &many {
        assert_eq!(r.version, "HTTP/2.0");
        assert_eq!(header(r, "authorization"), ["Bearer tok-1"]);
        assert_eq!(header(r, ":authority"), [format!("{NAME}:{}", w.port)]);
        assert!(header(r, "host").is_empty(), "no Host beside :authority");
    }
}

/// A reqwest client (HTTP/1.1 to the app's side) through the sidecar as `HTTPS_PROXY`,
/// trusting its CA.
fn reqwest_via(w: &World) -> reqwest::Client {
    let pem = std::fs::read(w.ca_cert()).unwrap();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(w.sidecar.url("")).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .http1_only()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// nginx ending each HTTP/2 connection after 10 requests (`keepalive_requests`: a GOAWAY
/// naming the last stream it took): the requests already sent beyond it are sent again on
/// a new connection, never answered 502.
#[tokio::test]
async fn requests_refused_by_an_upstreams_goaway_are_sent_again() {
    let nginx = crate::support::nginx::Nginx::start_h2(10).await;
    let w = World::start(nginx.port, &[], ", worker_threads: 1").await;
    let client = reqwest_via(&w);
    let sends = (0..400).map(|i| {
        let (client, url) = (client.clone(), w.url(&format!("/many/{i}")));
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    });
    // Sixteen at a time: requests keep arriving while connections end.
    use futures_util::StreamExt as _;
    let statuses: Vec<u16> = futures_util::stream::iter(sends)
        .buffer_unordered(16)
        .collect()
        .await;
    let failed = statuses.iter().filter(|&&s| s != 200).count();
    assert_eq!(failed, 0, "{statuses:?}");
}

/// A hostile HTTP/2 upstream (h2c, `upstream_http2: always`) answering with a 200 KiB header (beyond the 64 KiB an HTTP/1.1 head may have):
/// the app gets a 502, and the next request is served.
#[tokio::test]
async fn an_h2_upstreams_response_head_over_64_kib_is_a_502_and_one_under_it_served() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    // KiB of header: over the 64 KiB bound, or over hyper's 16 KiB default
                    // and within the bound.
                    let kib = match req.uri().path() {
                        "/big" => 200,
                        "/large" => 32,
                        _ => 0,
                    };
                    let mut response =
                        http::Response::new(http_body_util::Full::new(bytes::Bytes::from("ok")));
                    if kib > 0 {
                        let value = http::HeaderValue::from_str(&"a".repeat(kib * 1024)).unwrap();
                        response.headers_mut().insert("x-big", value);
                    }
                    Ok::<_, std::convert::Infallible>(response)
                },
            );
            let executor = hyper_util::rt::TokioExecutor::new();
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(executor)
                    .max_send_buf_size(4 << 20)
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let conn = cc_conn("crm", addr, tokens.addr).field("upstream_http2: always");
    let yaml = connections(&[conn.to_string()]);
    let sidecar = Sidecar::start(&yaml).await;
    sidecar.wait_state("crm", "ready").await;
    let http = client();
    let big = http.get(sidecar.url("/crm/big")).send().await.unwrap();
    assert_eq!(big.status(), 502);
    let large = http.get(sidecar.url("/crm/large")).send().await.unwrap();
    assert_eq!(large.status(), 200, "a 32 KiB header is within the bound");
    assert_eq!(large.headers()["x-big"].len(), 32 * 1024);
    let small = http.get(sidecar.url("/crm/small")).send().await.unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn upstream_http2_never_and_always() {
    let h2 = Capture::start_h2(json!({"ok": 3})).await;
    let w = World::start(h2.addr.port(), &["upstream_http2: never"], "").await;
    let (version, status, _) = w.curl_h2("/never").await;
    assert_eq!((version.as_str(), status), ("2", 200));
    assert_eq!(
        h2.nth(1).await.version,
        "HTTP/1.1",
        "never: HTTP/1.1 though h2 is offered"
    );

    let h1 = Capture::start(json!({"ok": 4})).await;
    let w = World::start(h1.addr.port(), &["upstream_http2: always"], "").await;
    let (_, status, body) = w.curl_h2("/always").await;
    assert_eq!(status, 502, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "upstream_unreachable");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("does not speak HTTP/2"), "{message}");
    assert_eq!(h1.count(), 0, "never sent as HTTP/1.1");
}

// ---------------------------------------------------------------- gRPC

/// grpcio's server over TLS (the test CA's certificate for NAME) behind connection `saas`.
async fn grpc_world(extra: &[&str]) -> (GrpcServer, World) {
    let fixtures = capture::ca_file().parent().unwrap().to_path_buf();
    let server =
        GrpcServer::start(&fixtures.join("server.pem"), &fixtures.join("server.key")).await;
    let w = World::start(server.port(), extra, "").await;
    (server, w)
}

async fn call(w: &World, call: &str, payload: &str) -> Value {
    let target = format!("{NAME}:{}", w.port);
    let proxy = w.sidecar.url("");
    let env = [("https_proxy", proxy.as_str())];
    grpc_call(&target, &w.ca_cert(), call, payload, &env).await
}

#[tokio::test]
async fn grpc_unary_stream_and_error_status_pass_through_with_the_token_injected() {
    let (mut server, w) = grpc_world(&[]).await;
    let unary = call(&w, "unary", "hello").await;
    assert_eq!(unary["ok"], true, "{unary}");
    assert_eq!(unary["replies"], json!(["olleh"]));
    assert_eq!(unary["trailing_metadata"]["tw-trailer"], "Unary", "{unary}");

    let stream = call(&w, "stream", "3").await;
    assert_eq!(
        stream["replies"],
        json!(["msg-0", "msg-1", "msg-2"]),
        "{stream}"
    );
    assert_eq!(stream["code"], "OK");

    let failed = call(&w, "fail", "NOT_FOUND:gone").await;
    assert_eq!(failed["ok"], false, "{failed}");
    assert_eq!(
        (&failed["code"], &failed["details"]),
        (&json!("NOT_FOUND"), &json!("gone"))
    );
    assert_eq!(
        failed["trailing_metadata"]["tw-trailer"], "Fail",
        "{failed}"
    );

    for seen in server.calls(3).await {
        assert_eq!(seen["authorization"], "Bearer tok-1", "{seen}");
    }
}

#[tokio::test]
async fn grpc_to_an_http1_only_upstream_is_refused_with_a_grpc_status_never_downgraded() {
    let h1 = Capture::start(json!({"ok": 5})).await;
    let w = World::start(h1.addr.port(), &[], "").await;
    let refused = call(&w, "unary", "hello").await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["code"], "UNIMPLEMENTED", "{refused}");
    let details = refused["details"].as_str().unwrap();
    assert!(
        details.contains("upstream_http1_only") && details.contains("HTTP/2"),
        "{details}"
    );
    assert_eq!(h1.count(), 0, "nothing went upstream as HTTP/1.1");
}

#[tokio::test]
async fn a_grpc_request_without_a_token_gets_unavailable() {
    let upstream = Echo::start().await;
    let yaml = connections(&[cc_connection(
        "crm",
        upstream.addr,
        "127.0.0.1:9".parse().unwrap(),
        "",
    )]);
    let sidecar = Sidecar::start(&yaml).await;
    let case = json!({
        "host": "127.0.0.1", "port": sidecar.proxy.port(), "tls": false,
        "headers": [[":method", "POST"], [":scheme", "http"], [":authority", sidecar.proxy.to_string()],
                    [":path", "/crm/tw.Test/Unary"], ["content-type", "application/grpc"], ["te", "trailers"]],
        "data": ["\u{0}\u{0}\u{0}\u{0}\u{0}"], "end_stream": true,
    });
    let got = h2_raw(case).await;
    assert_eq!(got["outcome"], "response", "{got}");
    assert_eq!(got["status"], 200, "gRPC's trailers-only answer: {got}");
    let headers: Vec<(String, String)> = serde_json::from_value(got["headers"].clone()).unwrap();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("grpc-status"), Some("14"), "UNAVAILABLE: {got}");
    assert!(get("grpc-message").unwrap().contains("no_token"), "{got}");
}

// ---------------------------------------------------------------- the lifecycle on h2

/// Over h2c: an upstream 401 to the current token is recovered as on HTTP/1.1 (one
/// refresh, the request replayed with the new token), `/metrics` counts it, and the access
/// log has the request's line.
#[tokio::test]
async fn unauthorized_recovery_metrics_and_access_log_work_on_h2() {
    let (api, _stop) = serve::spawn(|req| async move {
        let got = serve::receive(req).await;
        let auth = got.all("authorization").join(",");
        let status = if auth == "Bearer tok-1" { 401 } else { 200 };
        serve::json_response(status, json!({ "authorization": auth }).to_string())
    })
    .await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let dir = tempfile::tempdir().unwrap();
    let body = connections(&[cc_conn("api", api, tokens.addr).to_string()]);
    let p = SidecarProcess::spawn_with(dir.path(), "h2", "  access_log: true\n", "", &body, "info")
        .await;
    wait_state_at(p.admin, "api", "ready").await;
    let url = p.url("/api/v1/me?x=1");
    let args = [
        "--http2-prior-knowledge",
        "-sS",
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
    ];
    let (version, status, body) = versioned(&external::curl(&args, &[]).await);
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    assert_eq!(
        json!({"authorization": "Bearer tok-2"}),
        serde_json::from_str::<Value>(&body).unwrap()
    );
    assert_eq!(tokens.count(), 2, "one refresh");
    let metrics = reqwest::get(format!("http://{}/metrics", p.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refreshed =
        "tokenwarden_unauthorized_refreshes_total{connection=\"api\",outcome=\"refreshed\"} 1";
    assert!(metrics.contains(refreshed), "{metrics}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !p.logs().contains("proxied request") {
        assert!(tokio::time::Instant::now() < deadline, "{}", p.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = p.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("proxied request"))
        .unwrap();
    assert!(
        line.contains("connection=\"api\"")
            && line.contains("status=200")
            && line.contains("/api/v1/me"),
        "{line}"
    );
    assert!(
        !logs.contains("tok-1") && !logs.contains("tok-2"),
        "no token in the log: {logs}"
    );
}

/// `proxy.max_requests_per_connection` counts h2 streams: the second is answered, then
/// the connection ends gracefully (GOAWAY), and a third stream on it is refused unsent.
/// (hyper's client: curl 7.88 cannot reuse an h2c connection, with nginx either.)
/// A hostile HTTP/2 upstream refusing every stream (`REFUSED_STREAM`, "send it again"):
/// the request is sent again a bounded number of times, then answered 502 — it does not
/// dial on until the response timeout.
#[tokio::test]
async fn an_upstream_refusing_every_stream_gets_a_bounded_number_of_tries() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&streams);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let conn = cc_conn("crm", addr, tokens.addr).field("upstream_http2: always");
    let sidecar = Sidecar::start(&connections(&[conn.to_string()])).await;
    sidecar.wait_state("crm", "ready").await;
    let r = tokio::time::timeout(WAIT, client().get(sidecar.url("/crm/x")).send())
        .await
        .expect("answered long before the response timeout")
        .unwrap();
    assert_eq!(r.status(), 502);
    let tries = streams.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (2..=33).contains(&tries),
        "sent {tries} times: once, and at most 32 more"
    );
}

#[tokio::test]
async fn a_client_that_never_answers_the_goaway_is_dropped() {
    let upstream = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let yaml = format!(
        "proxy: {{ header_read_timeout: 500ms }}\n{}",
        connections(&[cc_connection("crm", upstream.addr, tokens.addr, "")])
    );
    let sidecar = Sidecar::start(&yaml).await;
    // The preface and an empty SETTINGS frame, then silence: no stream, no PING answered.
    let mut tcp = tokio::net::TcpStream::connect(sidecar.proxy).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    tcp.write_all(&hello).await.unwrap();
    // Idle for 500 ms: GOAWAY; 500 ms more without a stream: closed.
    let mut read = Vec::new();
    let closed = tokio::time::timeout(WAIT, tcp.read_to_end(&mut read)).await;
    assert!(
        matches!(closed, Ok(Ok(_))),
        "closed by the proxy: {closed:?}"
    );
    // What it got: the server's SETTINGS, and a GOAWAY (frame type 7).
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= read.len() {
        let len = usize::from(read[at]) << 16
            | usize::from(read[at + 1]) << 8
            | usize::from(read[at + 2]);
        frames.push(read[at + 3]);
        at += 9 + len;
    }
    assert!(
        frames.contains(&7),
        "a GOAWAY before the close: frame types {frames:?}"
    );
}

#[tokio::test]
async fn max_requests_per_connection_counts_h2_streams() {
    let upstream = Echo::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let yaml = format!(
        "proxy:\n  max_requests_per_connection: 2\n{}",
        connections(&[cc_connection("crm", upstream.addr, tokens.addr, "")])
    );
    let sidecar = Sidecar::start(&yaml).await;
    sidecar.wait_state("crm", "ready").await;
    let tcp = tokio::net::TcpStream::connect(sidecar.proxy).await.unwrap();
    let executor = hyper_util::rt::TokioExecutor::new();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(executor, hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let ended = tokio::spawn(conn);
    for i in 0..2 {
        let req = http::Request::get(format!("http://{}/crm/{i}", sidecar.proxy))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), 200, "request {i}");
    }
    let ended = tokio::time::timeout(WAIT, ended).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "closed gracefully: {ended:?}"
    );
    let third = http::Request::get(format!("http://{}/crm/2", sidecar.proxy))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert!(sender.send_request(third).await.is_err());
    assert_eq!(upstream.hits(), 2);
}
