//! Forward mode (issue 4): real clients (curl, reqwest, Python `requests`) using tokenwarden
//! as their `HTTP_PROXY`, host matching, refusals (never an open proxy), `CONNECT`, loop
//! protection, byte-exact targets, the SSRF guard, and tokenwarden's own clients ignoring
//! proxy variables. Connection hosts are made-up names (`*.saas.test`) answered by the
//! `static_hosts` resolver hook, so forward mode is exercised with real host *names*.

use crate::support::conn_counter::ConnCounter;
use crate::support::external::{self, body_then_status};
use crate::support::raw::{self, RawResponse};
use crate::support::*;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokenwarden::app::Options;

/// The made-up SaaS host of the main connection (resolves to 127.0.0.1, opted in).
const NAME: &str = "api.saas.test";
/// A made-up host that resolves to 127.0.0.1 but whose connection did not opt in.
const PRIVATE_NAME: &str = "private.saas.test";
/// A made-up https host on the default port (routing is visible before any connect).
const DEFAULT_PORT_NAME: &str = "dflt.saas.test";
/// A made-up host no connection names.
const OTHER_NAME: &str = "other.saas.test";

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A client-credentials connection to `{protocol}://{host}` with its token from `token`.
fn connection(
    key: &str,
    protocol: &str,
    host: &str,
    token: SocketAddr,
    allow_private_network: bool,
) -> String {
    cc_conn(key, host, token)
        .protocol(protocol)
        .field(&format!("allow_private_network: {allow_private_network}"))
        .to_string()
}

/// Every made-up name resolves to 127.0.0.1.
fn options() -> Options {
    Options {
        static_hosts: [NAME, PRIVATE_NAME, DEFAULT_PORT_NAME, OTHER_NAME]
            .into_iter()
            .map(|n| (n.to_string(), vec![LOOPBACK]))
            .collect(),
        ..Options::default()
    }
}

/// A sidecar with connection `saas` on `api.saas.test:<echo port>` (opted in to private
/// addresses), its own token endpoint (so its token is `tok-1`), `proxy_yaml` as the
/// `proxy:` section and `more` connections; every connection ready.
struct World {
    /// Kept alive for the sidecar's token refreshes.
    _tokens: TokenServer,
    echo: Echo,
    sidecar: Sidecar,
}

impl World {
    async fn start(proxy_yaml: &str, more: &[String]) -> World {
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let echo = Echo::start().await;
        let saas = connection(
            "saas",
            "http",
            &format!("{NAME}:{}", echo.addr.port()),
            tokens.addr,
            true,
        );
        let all: Vec<&String> = std::iter::once(&saas).chain(more).collect();
        let yaml = format!("proxy: {proxy_yaml}\n{}", connections(&all));
        let sidecar = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options()).await;
        let registry = sidecar.running.as_ref().unwrap().registry.load_full();
        for state in registry.iter() {
            sidecar.wait_state(&state.conn.key, "ready").await;
        }
        World {
            _tokens: tokens,
            echo,
            sidecar,
        }
    }

    /// `api.saas.test:<echo port>`, the main connection's authority.
    fn authority(&self) -> String {
        format!("{NAME}:{}", self.echo.addr.port())
    }

    /// `http://api.saas.test:<echo port>{path}`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.authority())
    }

    /// Sends a raw `GET {target}` to the proxy.
    async fn raw_get(&self, target: &str, extra: &str) -> RawResponse {
        raw::send(self.sidecar.proxy, &raw::get(target, NAME, extra)).await
    }

    /// Sends a raw `CONNECT {target}` to the proxy.
    async fn raw_connect(&self, target: &str) -> RawResponse {
        raw::send(self.sidecar.proxy, &raw::connect_request(target)).await
    }

    /// A reqwest client with the sidecar as its HTTP proxy.
    fn proxied_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(self.sidecar.url("")).unwrap())
            .timeout(WAIT)
            .build()
            .unwrap()
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The echo answer of a successful forward through the `saas` connection.
fn assert_forwarded(w: &World, body: &Value, target: &str) {
    assert_eq!(body["target"], target, "{body}");
    assert_eq!(echoed(body, "authorization"), ["Bearer tok-1"], "{body}");
    assert_eq!(echoed(body, "host"), [w.authority()], "{body}");
    assert_eq!(echoed(body, "via"), ["1.1 tokenwarden"], "{body}");
}

// ---------------------------------------------------------------- real clients

#[tokio::test]
async fn curl_with_dash_x_gets_the_injected_token() {
    let w = World::start("{}", &[]).await;
    let proxy = w.sidecar.url("");
    let url = w.url("/v1/things?x=1");
    let out = external::curl(
        &[
            "-x",
            &proxy,
            "--proxy-user",
            "app:proxy-secret",
            "-H",
            "Authorization: Bearer from-the-app",
            "-w",
            "\n%{http_code}",
            &url,
        ],
        &[],
    )
    .await;
    let (body, status) = body_then_status(&out);
    assert_eq!(status, 200, "{body}");
    let body = json(&body);
    assert_forwarded(&w, &body, "/v1/things?x=1");
    assert!(
        echoed(&body, "proxy-authorization").is_empty(),
        "Proxy-Authorization is hop-by-hop: {body}"
    );
    assert_eq!(w.echo.hits(), 1);
}

#[tokio::test]
async fn curl_with_the_http_proxy_variable_gets_the_injected_token() {
    let w = World::start("{}", &[]).await;
    let proxy = w.sidecar.url("");
    let url = w.url("/v1/env?via=http_proxy");
    // curl reads only the lower-case `http_proxy` (HTTP_PROXY is ignored for CGI safety).
    let out = external::curl(&["-w", "\n%{http_code}", &url], &[("http_proxy", &proxy)]).await;
    let (body, status) = body_then_status(&out);
    assert_eq!(status, 200, "{body}");
    assert_forwarded(&w, &json(&body), "/v1/env?via=http_proxy");
    assert_eq!(w.echo.hits(), 1);
}

#[tokio::test]
async fn reqwest_with_a_proxy_gets_the_injected_token() {
    let w = World::start("{}", &[]).await;
    let client = w.proxied_client();
    let r = client
        .post(w.url("/v1/items?page=2"))
        .header("authorization", "Bearer from-the-app")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_forwarded(&w, &body, "/v1/items?page=2");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["body"], "payload");
    assert_eq!(w.echo.hits(), 1);
}

#[tokio::test]
async fn python_requests_with_the_http_proxy_variable_gets_the_injected_token() {
    let w = World::start("{}", &[]).await;
    let proxy = w.sidecar.url("");
    let url = w.url("/v1/py?lang=python");
    let script = format!(
        "import sys, requests\n\
         r = requests.get(sys.argv[1], timeout={})\n\
         sys.stdout.write(r.text + '\\n' + str(r.status_code))\n",
        external::CLIENT_MAX_SECS
    );
    let out = external::python_requests(&script, &[&url], &[("HTTP_PROXY", &proxy)]).await;
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, status) = body_then_status(&out);
    assert_eq!(status, 200, "{body}");
    assert_forwarded(&w, &json(&body), "/v1/py?lang=python");
    assert_eq!(w.echo.hits(), 1);
}

// ---------------------------------------------------------------- host matching

#[tokio::test]
async fn host_matching_ignores_case_and_a_trailing_dot_and_is_port_aware() {
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    // `dflt` is https on 443 and resolves to 127.0.0.1 without opting in: a request routed
    // to it ends in the SSRF guard's 502 naming `dflt`, before any connection is made.
    let w = World::start(
        "{}",
        &[connection(
            "dflt",
            "https",
            DEFAULT_PORT_NAME,
            tokens.addr,
            false,
        )],
    )
    .await;
    let port = w.echo.addr.port();

    let matching = [
        format!("http://API.Saas.TEST:{port}/v1/case"),
        format!("http://{NAME}.:{port}/v1/case"),
        format!("http://Api.Saas.Test.:{port}/v1/case"),
        format!("HTTP://API.SAAS.TEST:{port}/v1/case"),
    ];
    for target in &matching {
        let r = w.raw_get(target, "").await;
        assert_eq!(r.status, 200, "{target}: {:?}", r.head);
        assert_forwarded(&w, &r.json(), "/v1/case");
    }

    // The connection is on the echo's port: any other port, or none (80), is refused.
    for target in [
        format!("http://{NAME}:{}/v1/port", port.wrapping_add(1)),
        format!("http://{NAME}/v1/port"),
        format!("http://{NAME}:80/v1/port"),
    ] {
        let r = w.raw_get(&target, "").await;
        assert_eq!(r.status, 403, "{target}: {:?}", r.head);
        assert_eq!(r.json()["error"], "forbidden");
    }
    assert_eq!(
        w.echo.hits(),
        matching.len(),
        "only the matching targets arrive"
    );

    // The default port of the connection's protocol (https: 443) counts as given, as
    // does the http:// default an app writes (none, or 80).
    for target in [
        format!("http://{DEFAULT_PORT_NAME}/v1/default"),
        format!("http://{DEFAULT_PORT_NAME}:80/v1/default"),
        format!("http://{DEFAULT_PORT_NAME}:443/v1/default"),
        "http://DFLT.saas.test./v1/default".to_string(),
    ] {
        let r = w.raw_get(&target, "").await;
        assert_eq!(r.status, 502, "{target} should route to dflt: {:?}", r.head);
        assert_eq!(r.json()["connection"], "dflt", "{target}");
    }
    for target in [
        format!("http://{DEFAULT_PORT_NAME}:8443/v1/default"),
        format!("http://{DEFAULT_PORT_NAME}:{port}/v1/default"),
    ] {
        let r = w.raw_get(&target, "").await;
        assert_eq!(r.status, 403, "{target}: {:?}", r.head);
    }
}

#[tokio::test]
async fn the_request_target_not_the_host_header_selects_and_host_is_regenerated() {
    let w = World::start("{}", &[]).await;
    let r = raw::send(
        w.sidecar.proxy,
        &raw::get(&w.url("/v1/h"), "evil.example", ""),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_forwarded(&w, &r.json(), "/v1/h");
}

// ---------------------------------------------------------------- refusals

#[tokio::test]
async fn a_host_no_connection_names_is_refused_and_never_reached() {
    let w = World::start("{}", &[]).await;
    let elsewhere = Echo::start().await;
    let client = w.proxied_client();
    for url in [
        format!("http://{}/v1/x", elsewhere.addr),
        format!("http://{OTHER_NAME}:{}/v1/x", elsewhere.addr.port()),
        format!("http://localhost:{}/v1/x", elsewhere.addr.port()),
    ] {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 403, "{url}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"], "forbidden", "{url}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("not the host of a configured connection")
                && message.contains("not an open proxy"),
            "{url}: {message}"
        );
    }
    // An https:// absolute-form target is refused too (only http:// is forwarded).
    let r = w
        .raw_get(&format!("https://{}/v1/x", elsewhere.addr), "")
        .await;
    assert_eq!(r.status, 403, "{}", r.head);
    // curl through the proxy to the unconfigured host: the same 403 reaches the client.
    let out = external::curl(
        &[
            "-x",
            &w.sidecar.url(""),
            "-w",
            "\n%{http_code}",
            &format!("http://{}/v1/curl", elsewhere.addr),
        ],
        &[],
    )
    .await;
    assert_eq!(body_then_status(&out).1, 403);
    assert_eq!(elsewhere.hits(), 0, "a refused request reached its target");
    assert_eq!(w.echo.hits(), 0);
}

#[tokio::test]
async fn connect_to_a_connection_host_is_refused_with_an_explanation() {
    let w = World::start("{}", &[]).await;
    for target in [
        format!("{NAME}:443"),
        w.authority(),
        format!("API.SAAS.TEST.:{}", w.echo.addr.port()),
    ] {
        let r = w.raw_connect(&target).await;
        assert_eq!(r.status, 403, "{target}: {}", r.head);
        let body = r.json();
        assert_eq!(body["error"], "forbidden");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("http://") && message.contains("inject"),
            "the body must tell the app to use http://: {message}"
        );
    }
    // What an app sees when it keeps an https:// URL: curl's tunnel fails with the 403.
    let out = external::curl(
        &[
            "-x",
            &w.sidecar.url(""),
            &format!("https://{}/v1/tls", w.authority()),
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("403"), "curl: {stderr}");
    assert_eq!(w.echo.hits(), 0);
}

#[tokio::test]
async fn connect_anywhere_else_is_refused() {
    let w = World::start("{}", &[]).await;
    let elsewhere = Echo::start().await;
    let target = elsewhere.addr.to_string();
    let r = w.raw_connect(&target).await;
    assert_eq!(r.status, 403, "{}", r.head);
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("not an open proxy") && message.contains("connect_passthrough"),
        "{message}"
    );
    assert_eq!(elsewhere.hits(), 0);
}

#[tokio::test]
async fn connect_to_an_allow_listed_target_is_a_plain_tunnel() {
    let elsewhere = Echo::start().await;
    let w = World::start(
        &format!("{{ connect_passthrough: [\"{}\"] }}", elsewhere.addr),
        &[],
    )
    .await;
    let target = elsewhere.addr.to_string();
    let mut stream = raw::connect(w.sidecar.proxy).await;
    raw::write(&mut stream, &raw::connect_request(&target)).await;
    let (status, head, rest) = raw::read_head(&mut stream).await;
    assert_eq!(status, 200, "{head}");
    assert!(rest.is_empty());
    // Speak HTTP to the echo through the tunnel: it arrives untouched, nothing injected.
    raw::write(
        &mut stream,
        &raw::get("/through/the/tunnel?a=%2F", &target, ""),
    )
    .await;
    let r = raw::read_response(&mut stream).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let body = r.json();
    assert_eq!(body["target"], "/through/the/tunnel?a=%2F");
    assert!(echoed(&body, "authorization").is_empty(), "{body}");
    assert!(echoed(&body, "via").is_empty(), "{body}");
    assert_eq!(elsewhere.hits(), 1);

    // Another port on the same host is not on the list.
    let other = format!("127.0.0.1:{}", w.echo.addr.port());
    let r = w.raw_connect(&other).await;
    assert_eq!(r.status, 403, "{}", r.head);
    assert_eq!(w.echo.hits(), 0);
}

// ---------------------------------------------------------------- loops

#[tokio::test]
async fn a_request_that_already_carries_our_via_is_a_loop() {
    let w = World::start("{}", &[]).await;
    for via in [
        "1.1 tokenwarden",
        "1.0 corp-proxy, 1.1 TokenWarden",
        "HTTP/1.1 tokenwarden (comment)",
    ] {
        let extra = format!("Via: {via}\r\n");
        let forward = w.raw_get(&w.url("/v1/loop"), &extra).await;
        assert_eq!(forward.status, 508, "forward, Via: {via}");
        assert_eq!(forward.json()["error"], "loop_detected");
        let reverse = w.raw_get("/saas/v1/loop", &extra).await;
        assert_eq!(reverse.status, 508, "reverse, Via: {via}");
    }
    assert_eq!(w.echo.hits(), 0);
    // Another proxy's Via is kept and ours appended.
    let r = w.raw_get(&w.url("/v1/ok"), "Via: 1.1 corp-proxy\r\n").await;
    assert_eq!(r.status, 200, "{}", r.head);
    let body = r.json();
    assert_eq!(echoed(&body, "via"), ["1.1 corp-proxy", "1.1 tokenwarden"]);
}

#[tokio::test]
async fn the_via_pseudonym_is_configurable() {
    let w = World::start("{ via_pseudonym: edge-tw }", &[]).await;
    let r = w.raw_get(&w.url("/v1/a"), "Via: 1.1 edge-tw\r\n").await;
    assert_eq!(r.status, 508, "{}", r.head);
    assert_eq!(w.echo.hits(), 0);
    // The default name is no longer ours.
    let r = w.raw_get(&w.url("/v1/b"), "Via: 1.1 tokenwarden\r\n").await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(echoed(&r.json(), "via"), ["1.1 tokenwarden", "1.1 edge-tw"]);
}

#[tokio::test]
async fn a_target_that_is_the_proxy_itself_is_refused_without_looping() {
    let w = World::start("{}", &[]).await;
    let (proxy, admin) = (w.sidecar.proxy, w.sidecar.admin);
    for target in [
        format!("http://{proxy}/saas/v1/self"),
        format!("http://localhost:{}/saas/v1/self", proxy.port()),
        format!("http://LOCALHOST:{}/saas/v1/self", proxy.port()),
        format!("http://{admin}/healthz"),
    ] {
        let r = w.raw_get(&target, "").await;
        assert_eq!(r.status, 508, "{target}: {}", r.head);
        assert_eq!(r.json()["error"], "loop_detected");
    }
    // A client whose HTTP_PROXY is the sidecar, calling the sidecar's reverse-mode URL
    // (NO_PROXY forgotten): a prompt 508, not a hang.
    let client = w.proxied_client();
    let r = client
        .get(w.sidecar.url("/saas/v1/self"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 508);
    assert_eq!(w.echo.hits(), 0);
}

#[tokio::test]
async fn a_connection_that_points_back_at_the_proxy_ends_in_508() {
    // The upstream of `loop` is the proxy listener itself: the first hop adds Via, the
    // second sees it and answers 508, which the first hop passes back.
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let proxy_l = loopback().await;
    let proxy = proxy_l.local_addr().unwrap();
    let yaml = connections(&[connection(
        "loop",
        "http",
        &proxy.to_string(),
        tokens.addr,
        false,
    )]);
    let sidecar = Sidecar::start_on(
        proxy_l,
        tempfile::tempdir().unwrap(),
        &yaml,
        Options::default(),
    )
    .await;
    sidecar.wait_state("loop", "ready").await;
    for target in ["/loop/loop/x", "/loop/x"] {
        let r = raw::send(proxy, &raw::get(target, "127.0.0.1", "")).await;
        assert_eq!(r.status, 508, "{target}: {}", r.head);
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn userinfo_in_the_target_is_rejected() {
    let w = World::start("{}", &[]).await;
    let port = w.echo.addr.port();
    for target in [
        format!("http://a@{NAME}:{port}/v1/x"),
        format!("http://user:pass@{NAME}:{port}/v1/x"),
        format!("http://{NAME}:{port}@{OTHER_NAME}:{port}/v1/x"),
    ] {
        let r = w.raw_get(&target, "").await;
        assert_eq!(r.status, 400, "{target}: {}", r.head);
        let body = r.json();
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains("userinfo"));
    }
    assert_eq!(w.echo.hits(), 0);
}

// ---------------------------------------------------------------- byte-exact targets

/// Paths and queries a client library would be tempted to normalise.
const TRICKY: [&str; 6] = [
    "/v1/a%2Fb/c%20d/e+f/%7Euser/g;h=i",
    "//double//slash///path/",
    "/v1/search?q=a+b%20c&path=%2Fx%2F&t=%7E&list=1;2&empty=&=v",
    "/v1/x?q=%2f%2F%25",
    "/v1/enc%252F?x=%E2%82%AC&y=caf%C3%A9",
    "/v1/dots/./../keep?a=/b//c",
];

#[tokio::test]
async fn path_and_query_pass_byte_for_byte_in_forward_mode() {
    let w = World::start("{}", &[]).await;
    for tricky in TRICKY {
        let r = w.raw_get(&w.url(tricky), "").await;
        assert_eq!(r.status, 200, "{tricky}: {}", r.head);
        assert_forwarded(&w, &r.json(), tricky);
    }
    // No path at all becomes `/`.
    let r = w.raw_get(&format!("http://{}", w.authority()), "").await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.json()["target"], "/");
}

#[tokio::test]
async fn path_and_query_pass_byte_for_byte_in_reverse_mode() {
    let w = World::start("{}", &[]).await;
    for tricky in TRICKY {
        let r = w.raw_get(&format!("/saas{tricky}"), "").await;
        assert_eq!(r.status, 200, "{tricky}: {}", r.head);
        assert_forwarded(&w, &r.json(), tricky);
    }
}

// ---------------------------------------------------------------- SSRF guard

#[tokio::test]
async fn the_ssrf_guard_refuses_names_that_resolve_to_private_addresses_unless_allowed() {
    let others = TokenServer::start(Reply::token(3600, false)).await;
    let guarded = Echo::start().await;
    let literal = Echo::start().await;
    let w = World::start(
        "{}",
        &[
            connection(
                "guarded",
                "http",
                &format!("{PRIVATE_NAME}:{}", guarded.addr.port()),
                others.addr,
                false,
            ),
            connection(
                "literal",
                "http",
                &literal.addr.to_string(),
                others.addr,
                false,
            ),
        ],
    )
    .await;

    // A name that resolves to 127.0.0.1, not opted in: 502 saying why, nothing connects.
    let forward = w
        .raw_get(
            &format!("http://{PRIVATE_NAME}:{}/v1/x", guarded.addr.port()),
            "",
        )
        .await;
    let reverse = w.raw_get("/guarded/v1/x", "").await;
    for r in [forward, reverse] {
        assert_eq!(r.status, 502, "{}", r.head);
        let body = r.json();
        assert_eq!(body["error"], "upstream_unreachable");
        assert_eq!(body["connection"], "guarded");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("private") && message.contains("allow_private_network"),
            "{message}"
        );
    }
    assert_eq!(guarded.hits(), 0, "the SSRF guard let a request through");

    // The same kind of name with `allow_private_network: true` works.
    let r = w.raw_get(&w.url("/v1/allowed"), "").await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_forwarded(&w, &r.json(), "/v1/allowed");

    // An IP-literal host is the operator's explicit choice: allowed, in both modes.
    let forward = w
        .raw_get(&format!("http://{}/v1/literal", literal.addr), "")
        .await;
    let reverse = w.raw_get("/literal/v1/literal", "").await;
    for r in [forward, reverse] {
        assert_eq!(r.status, 200, "{}", r.head);
        let body = r.json();
        assert_eq!(body["target"], "/v1/literal");
        let auth = echoed(&body, "authorization");
        assert!(
            auth.len() == 1 && auth[0].starts_with("Bearer tok-"),
            "{body}"
        );
    }
    assert_eq!(literal.hits(), 2);
}

// ---------------------------------------------------------------- own clients

/// Reads the binary's JSON log lines until `tokenwarden is listening`; returns the
/// proxy and admin addresses it names.
async fn listening_addrs(
    stderr: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) -> (SocketAddr, SocketAddr) {
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(WAIT, stderr.next_line())
            .await
            .unwrap_or_else(|_| panic!("no `listening` log line in time; got:\n{seen:#?}"))
            .expect("read stderr")
            .unwrap_or_else(|| panic!("tokenwarden exited; its log:\n{seen:#?}"));
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["fields"]["message"] == "tokenwarden is listening" {
                let addr = |k: &str| v["fields"][k].as_str().unwrap().parse().unwrap();
                return (addr("proxy"), addr("admin"));
            }
        }
        seen.push(line);
    }
}

#[tokio::test]
async fn tokenwardens_own_clients_ignore_proxy_variables() {
    use tokio::io::AsyncBufReadExt;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let echo = Echo::start().await;
    let trap = ConnCounter::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "proxy: {{ listen: \"127.0.0.1:0\" }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n\
             log: {{ level: info, format: json }}\n{}",
            connections(&[cc_connection("api", echo.addr, tokens.addr, "")])
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"));
    cmd.args(["run", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for var in external::PROXY_VARS {
        cmd.env_remove(var);
    }
    // Every proxy variable but NO_PROXY points at the trap.
    for var in external::PROXY_VARS
        .into_iter()
        .filter(|v| !v.eq_ignore_ascii_case("no_proxy"))
    {
        cmd.env(var, trap.url());
    }
    let mut child = cmd.spawn().expect("start tokenwarden");
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (proxy, admin) = listening_addrs(&mut stderr).await;
    // Keep draining the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });

    // The token client went straight to the token endpoint …
    tokens.wait_count(1).await;
    wait_state_at(admin, "api", "ready").await;
    // … and the upstream client straight to the echo.
    let (status, body) = get_json(&format!("http://{proxy}/api/v1/direct")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed(&body, "authorization"), ["Bearer tok-1"]);
    assert_eq!(
        trap.count(),
        0,
        "tokenwarden used a proxy from its environment"
    );
    child.kill().await.unwrap();
}

/// `reverse_only: true`: a connection that shares its host on purpose is reached by its key
/// in reverse mode, never by host — forward mode routes that host to the other connection,
/// even when the reverse-only one comes first — and `check` does not warn about the sharing.
#[tokio::test]
async fn a_reverse_only_connection_is_never_reached_by_host() {
    let echo = Echo::start().await;
    let authority = format!("{NAME}:{}", echo.addr.port());
    // Two token endpoints: `own`'s token is `own-token`, `saas`'s are `tok-…`.
    let own_tokens = TokenServer::start(Reply::Raw(
        r#"{"access_token": "own-token", "token_type": "bearer", "expires_in": 3600}"#,
    ))
    .await;
    let saas_tokens = TokenServer::start(Reply::token(3600, false)).await;
    let own =
        connection("own", "http", &authority, own_tokens.addr, true) + "    reverse_only: true\n";
    let saas = connection("saas", "http", &authority, saas_tokens.addr, true);
    let yaml = format!("proxy: {{}}\n{}", connections(&[&own, &saas]));
    let sc = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options()).await;
    sc.wait_state("own", "ready").await;
    sc.wait_state("saas", "ready").await;

    // Forward mode: the host is `saas`'s, though `own` is listed first.
    let target = format!("http://{authority}/v1/f");
    let r = raw::send(sc.proxy, &raw::get(&target, NAME, "")).await;
    assert_eq!(r.status, 200, "{:?}", r.head);
    assert_eq!(echoed(&r.json(), "authorization"), ["Bearer tok-1"]);
    // Reverse mode reaches `own` by its key, with its own token.
    let (status, body) = sc.get("/own/v1/r").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echoed(&body, "authorization"), ["Bearer own-token"]);

    // Alone on its host, a reverse-only connection is no forward-mode route at all.
    let alone = format!("proxy: {{}}\n{}", connections(&[&own]));
    let sc = Sidecar::start_in(tempfile::tempdir().unwrap(), &alone, options()).await;
    let r = raw::send(sc.proxy, &raw::get(&target, NAME, "")).await;
    assert_eq!(r.status, 403, "{:?}", r.head);

    // `check`: no "same host" warning once the sharing is declared.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("reach the same host"), "{stderr}");
}
