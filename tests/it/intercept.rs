//! HTTPS through `HTTPS_PROXY` (issue 12): real clients (curl, Python `requests` and
//! `httpx`, Node 20 `fetch` with undici's `ProxyAgent`) call an `https://` URL of a
//! configured connection, each trusting the local CA the documented way (no `-k`, no
//! `verify=False`). tokenwarden intercepts the `CONNECT`, injects the token and forwards
//! over its own verified TLS to the capture server (its own test CA, via `tls.ca_file`),
//! which records what arrived. Refusals: an unconfigured host, a configured host on
//! another port, an SNI that differs from the CONNECT host, a client not trusting the CA,
//! and a CA key with loose permissions (startup error).

use crate::support::capture::{self, Capture};
use crate::support::external::{self, body_then_status};
use crate::support::raw;
use crate::support::*;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenwarden::app::Options;
use tokenwarden::ca;

/// A host name the capture server's certificate covers (resolved to 127.0.0.1).
const NAME: &str = "tenant.example.com";
/// A host no connection names (also covered by the capture certificate).
const OTHER_NAME: &str = "accounts.google.com";
/// What the capture server answers.
fn reply() -> Value {
    json!({"ok": "from the upstream"})
}

/// A sidecar with connection `saas` on `https://tenant.example.com:<capture port>`, its
/// token `tok-1`, interception on with a fresh CA (and its trust bundle) in `ca_dir`.
struct World {
    _tokens: TokenServer,
    capture: Capture,
    sidecar: Sidecar,
    ca_dir: tempfile::TempDir,
}

impl World {
    async fn start(proxy_extra: &str) -> World {
        World::start_with(proxy_extra, |_| Vec::new()).await
    }

    /// [`World::start`] with `more` connections (given the capture server's port).
    async fn start_with(proxy_extra: &str, more: fn(u16) -> Vec<Conn>) -> World {
        let ca_dir = tempfile::tempdir().unwrap();
        let files = ca::init(ca_dir.path()).unwrap();
        ca::bundle(&files.cert, None, &ca_dir.path().join(ca::BUNDLE_FILE)).unwrap();
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let capture = Capture::start(reply()).await;
        let more = more(capture.addr.port());
        let yaml = config_yaml(
            &files.cert,
            &files.key,
            (&tokens, &capture),
            proxy_extra,
            &more,
        );
        let sidecar = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options()).await;
        sidecar.wait_state("saas", "ready").await;
        World {
            _tokens: tokens,
            capture,
            sidecar,
            ca_dir,
        }
    }

    fn authority(&self) -> String {
        format!("{NAME}:{}", self.capture.addr.port())
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.authority())
    }

    fn proxy(&self) -> String {
        self.sidecar.url("")
    }

    fn ca_cert(&self) -> String {
        path_text(&self.ca_dir.path().join(ca::CA_CERT_FILE))
    }

    fn bundle(&self) -> String {
        path_text(&self.ca_dir.path().join(ca::BUNDLE_FILE))
    }

    /// The request the capture server got as the `n`th: the token injected, over TLS
    /// with the real host name, the target and `Host` as the app sent them.
    async fn assert_injected(&self, n: usize, target: &str) {
        let got = self.capture.nth(n).await;
        assert_eq!(got.target, target);
        assert_eq!(got.sni.as_deref(), Some(NAME));
        let header = |name: &str| -> Vec<&str> {
            got.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(
            header("authorization"),
            ["Bearer tok-1"],
            "{:?}",
            got.headers
        );
        assert_eq!(header("host"), [self.authority()]);
        assert_eq!(header("via"), ["1.1 tokenwarden"]);
        assert!(header("proxy-connection").is_empty());
    }
}

fn path_text(p: &Path) -> String {
    p.display().to_string()
}

fn config_yaml(
    cert: &Path,
    key: &Path,
    (tokens, capture): (&TokenServer, &Capture),
    proxy_extra: &str,
    more: &[Conn],
) -> String {
    let conn = cc_conn(
        "saas",
        format!("{NAME}:{}", capture.addr.port()),
        tokens.addr,
    )
    .protocol("https")
    .field("allow_private_network: true");
    let all: Vec<String> = std::iter::once(&conn)
        .chain(more)
        .map(Conn::to_string)
        .collect();
    format!(
        "proxy: {{ intercept: {{ ca_cert: \"{}\", ca_key: \"{}\" }}{proxy_extra} }}\ntls: {{ ca_file: \"{}\" }}\n{}",
        cert.display(),
        key.display(),
        capture::ca_file().display(),
        connections(&all)
    )
}

fn options() -> Options {
    Options {
        static_hosts: [NAME, OTHER_NAME]
            .into_iter()
            .map(|n| (n.to_string(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]))
            .collect(),
        ..Options::default()
    }
}

/// A client's `BODY\nSTATUS` output: 200, with the upstream's reply.
fn assert_answered(out: &std::process::Output) {
    let (body, status) = body_then_status(out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status, 200, "{body} {stderr}");
    assert_eq!(json_body(&body), reply());
}

/// A `python3 -c` script: GET `sys.argv[1]` with `module` (`requests` or `httpx`, both
/// reading the proxy and CA variables), printing `BODY\nSTATUS`.
fn python_get(module: &str) -> String {
    format!(
        "import sys, {module}\nr = {module}.get(sys.argv[1], timeout=8)\nsys.stdout.write(r.text + '\\n' + str(r.status_code))"
    )
}

fn json_body(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

// ---------------------------------------------------------------- real clients

#[tokio::test]
async fn curl_with_cacert_and_with_curl_ca_bundle_gets_the_token_injected() {
    let w = World::start("").await;
    let proxy = w.proxy();
    let ca = w.ca_cert();
    let url = w.url("/v1/things?x=1");
    let out = external::curl(
        &["--cacert", &ca, "-w", "\n%{http_code}", &url],
        &[("HTTPS_PROXY", &proxy)],
    )
    .await;
    assert_answered(&out);
    w.assert_injected(1, "/v1/things?x=1").await;

    let url = w.url("/v1/env");
    let env = [
        ("HTTPS_PROXY", proxy.as_str()),
        ("CURL_CA_BUNDLE", ca.as_str()),
    ];
    let out = external::curl(&["-w", "\n%{http_code}", &url], &env).await;
    assert_answered(&out);
    w.assert_injected(2, "/v1/env").await;
}

#[tokio::test]
async fn python_requests_with_requests_ca_bundle_gets_the_token_injected() {
    let w = World::start("").await;
    let script = python_get("requests");
    let url = w.url("/v1/py?lang=python");
    let env = [
        ("HTTPS_PROXY", w.proxy()),
        ("REQUESTS_CA_BUNDLE", w.bundle()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = external::python_requests(&script, &[&url], &env).await;
    assert_answered(&out);
    w.assert_injected(1, "/v1/py?lang=python").await;
}

#[tokio::test]
async fn python_httpx_with_ssl_cert_file_gets_the_token_injected() {
    let w = World::start("").await;
    const HINT: &str = "pip install httpx";
    let probe = external::run("python3", &["-c", "import httpx"], &[], HINT).await;
    assert!(
        probe.status.success(),
        "Python `httpx` is required ({HINT})"
    );
    let script = python_get("httpx");
    let url = w.url("/v1/httpx");
    let (proxy, bundle) = (w.proxy(), w.bundle());
    let env = [
        ("HTTPS_PROXY", proxy.as_str()),
        ("SSL_CERT_FILE", bundle.as_str()),
    ];
    let out = external::run("python3", &["-c", &script, &url], &env, HINT).await;
    assert_answered(&out);
    w.assert_injected(1, "/v1/httpx").await;
}

#[tokio::test]
async fn node_fetch_with_undici_proxy_agent_and_node_extra_ca_certs_gets_the_token_injected() {
    let w = World::start("").await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/undici").is_dir(),
        "undici is not installed: npm ci --prefix tests/node"
    );
    let script = path_text(&dir.join("fetch.mjs"));
    let url = w.url("/v1/node?runtime=20");
    let (proxy, ca) = (w.proxy(), w.ca_cert());
    let env = [
        ("HTTPS_PROXY", proxy.as_str()),
        ("NODE_EXTRA_CA_CERTS", ca.as_str()),
    ];
    let out = external::run("node", &[&script, &url], &env, "install Node 20").await;
    assert_answered(&out);
    w.assert_injected(1, "/v1/node?runtime=20").await;
}

// ---------------------------------------------------------------- refusals

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_verification_and_nothing_is_sent() {
    let w = World::start("").await;
    let out = external::curl(&[&w.url("/v1/x")], &[("HTTPS_PROXY", &w.proxy())]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate"), "curl: {stderr}");
    assert_eq!(w.capture.count(), 0);
}

#[tokio::test]
async fn connect_to_an_unconfigured_host_or_another_port_is_refused() {
    let other = Capture::start(reply()).await;
    // (A passthrough entry naming a configured host is a config error: config_errors.rs.)
    let w = World::start("").await;
    let r = raw::send(
        w.sidecar.proxy,
        &raw::connect_request(&format!("{OTHER_NAME}:{}", other.addr.port())),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.head);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("not an open proxy"));
    let r = raw::send(
        w.sidecar.proxy,
        &raw::connect_request(&format!("{NAME}:443")),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.head);
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!("configured on port {}", w.capture.addr.port())),
        "{message}"
    );
    // The same refusal as a client sees it.
    let url = format!("https://{OTHER_NAME}:{}/", other.addr.port());
    let out = external::curl(
        &["--cacert", &w.ca_cert(), &url],
        &[("HTTPS_PROXY", &w.proxy())],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    assert_eq!((w.capture.count(), other.count()), (0, 0));
}

/// A tunnel through the sidecar to the connection, with a rustls client trusting only
/// the interception CA, sending `sni` and offering `h2` and `http/1.1`.
async fn tunnel(
    w: &World,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut stream = raw::connect(w.sidecar.proxy).await;
    raw::write(&mut stream, &raw::connect_request(&w.authority())).await;
    let (status, head, _) = raw::read_head(&mut stream).await;
    assert_eq!(status, 200, "{head}");
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(w.ca_cert()).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // (An HTTP/1.1 client: the requests in the tunnel are written as HTTP/1.1. Offered
    // `h2` too, tokenwarden chooses it: tests/it/http2.rs.)
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    connector.connect(name, stream).await
}

/// [`tunnel`]'s handshake: `http/1.1` chosen, and the leaf it was shown.
async fn handshake(w: &World, sni: &str) -> std::io::Result<Vec<u8>> {
    let tls = tunnel(w, sni).await?;
    let session = tls.get_ref().1;
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    Ok(session.peer_certificates().unwrap()[0].to_vec())
}

/// One request in a new tunnel to the connection's host, with `extra` header lines.
async fn in_tunnel(w: &World, extra: &str) -> raw::RawResponse {
    use tokio::io::AsyncWriteExt as _;
    let mut tls = tunnel(w, NAME).await.expect("the tunnel opens");
    let request = raw::get("/shared?x=1", &w.authority(), extra);
    tls.write_all(request.as_bytes()).await.unwrap();
    raw::read_response(&mut tls).await
}

#[tokio::test]
async fn in_a_tunnel_to_a_shared_host_each_request_names_its_connection() {
    // A second connection on the capture server's host and port.
    let w = World::start_with("", |port| {
        vec![Conn::new("other", format!("{NAME}:{port}"), "bearer")
            .protocol("https")
            .field("allow_private_network: true")
            .secrets("token: other-tok")
            .configure("          token: \"<token>\"\n")]
    })
    .await;
    let refused = in_tunnel(&w, "").await;
    assert_eq!(
        refused.status,
        421,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let body = refused.json();
    assert_eq!(body["error"], "connection_not_named", "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("tokenwarden-connection"));
    let r = in_tunnel(&w, "tokenwarden-connection: other\r\n").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got = w.capture.nth(1).await;
    let header = |name: &str| -> Vec<&str> {
        (got.headers.iter())
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(header("authorization"), ["Bearer other-tok"]);
    assert!(header("tokenwarden-connection").is_empty());
    let r = in_tunnel(&w, "tokenwarden-connection: saas\r\n").await;
    assert_eq!(r.status, 200);
    w.assert_injected(2, "/shared?x=1").await;
    assert_eq!(w.capture.count(), 2, "the refused request never left");
}

#[tokio::test]
async fn a_tunnel_holds_its_connection_permit() {
    use tokio::io::AsyncReadExt as _;
    let w = World::start(", max_connections: 1").await;
    let _open = tunnel(&w, NAME).await.expect("the tunnel opens");
    let mut second = raw::connect(w.sidecar.proxy).await;
    raw::write(&mut second, &raw::get("/", NAME, "")).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, second.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok() && answer.is_empty(),
        "beyond max_connections: closed unanswered"
    );
}

#[tokio::test]
async fn an_sni_that_differs_from_the_connect_host_is_refused_and_leaves_are_reused() {
    let w = World::start("").await;
    let leaf = handshake(&w, NAME)
        .await
        .expect("the minted leaf verifies for the CONNECT host");
    let again = handshake(&w, NAME).await.unwrap();
    assert_eq!(leaf, again, "the leaf minted at start is reused");
    let refused = handshake(&w, OTHER_NAME).await;
    assert!(
        refused.is_err(),
        "a ClientHello for another host must not complete"
    );
    assert_eq!(w.capture.count(), 0);
}

#[tokio::test]
async fn a_ca_key_readable_by_others_is_a_startup_error() {
    let ca_dir = tempfile::tempdir().unwrap();
    let files = ca::init(ca_dir.path()).unwrap();
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let capture = Capture::start(reply()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(&files.cert, &files.key, (&tokens, &capture), "", &[]);
    let e = try_start(dir.path(), &yaml).await.err().expect("refused");
    let text = e.to_string();
    assert!(
        text.contains("proxy.intercept") && text.contains("chmod 600"),
        "{text}"
    );
}
