//! An upstream that rejects a token tokenwarden still considers valid (401): one refresh
//! shared by every rejected request, one replay of an idempotent request with the new
//! token, the 401 passed through otherwise, the refresh rate-limited — the same on both
//! request paths, in reverse and forward mode.

use crate::support::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Both request paths: the byte-level fast path, and hyper alone.
const BOTH_PATHS: [bool; 2] = [false, true];

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    authorization: String,
    body: String,
    status: u16,
}

#[derive(Default)]
struct Rules {
    /// Tokens (`tok-N`) answered with 401.
    revoked: HashSet<String>,
    /// Every token is answered with 401.
    reject_all: bool,
    /// The status a rejected token gets instead of 401 (as some APIs answer 403).
    rejects_with: Option<u16>,
    seen: Vec<Seen>,
}

/// How long `/slow` takes to answer.
const SLOW: Duration = Duration::from_millis(800);

/// An API that answers 401 to revoked tokens (`/forbidden`, `/busy`, `/broken`: 403,
/// 429, 500 whatever the token) and otherwise echoes the token and body it got;
/// `/slow` answers after [`SLOW`], as it decided on arrival.
struct Api {
    addr: SocketAddr,
    rules: Arc<Mutex<Rules>>,
    _stop: CancellationToken,
}

impl Api {
    async fn start() -> Api {
        let rules = Arc::new(Mutex::new(Rules::default()));
        let shared = Arc::clone(&rules);
        let (addr, stop) = serve::spawn(move |req| {
            let rules = Arc::clone(&shared);
            async move {
                let got = serve::receive(req).await;
                let header = |name: &str| {
                    got.headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map_or(String::new(), |(_, v)| v.clone())
                };
                let authorization = header("authorization");
                let token = authorization.strip_prefix("Bearer ").unwrap_or_default();
                let path = got.target.split('?').next().unwrap_or_default();
                let body = String::from_utf8_lossy(&got.body).into_owned();
                let status = {
                    let mut rules = rules.lock().unwrap();
                    let status = match path {
                        "/forbidden" => 403,
                        "/busy" => 429,
                        "/broken" => 500,
                        _ if rules.reject_all || rules.revoked.contains(token) => {
                            rules.rejects_with.unwrap_or(401)
                        }
                        _ => 200,
                    };
                    rules.seen.push(Seen {
                        method: got.method.clone(),
                        authorization: authorization.clone(),
                        body: body.clone(),
                        status,
                    });
                    status
                };
                if path == "/slow" {
                    tokio::time::sleep(SLOW).await;
                }
                let answer = if status == 200 {
                    json!({"authorization": authorization, "method": got.method, "body": body})
                } else {
                    json!({"error": "invalid_token", "status": status})
                };
                let mut r = serve::json_response(status, answer.to_string());
                if status == 401 {
                    r.headers_mut().insert(
                        "www-authenticate",
                        "Bearer error=\"invalid_token\"".parse().unwrap(),
                    );
                }
                r
            }
        })
        .await;
        Api {
            addr,
            rules,
            _stop: stop,
        }
    }

    fn revoke(&self, token: &str) {
        self.rules.lock().unwrap().revoked.insert(token.into());
    }

    fn rejects_with(&self, status: u16) {
        self.rules.lock().unwrap().rejects_with = Some(status);
    }

    fn reject_all(&self) {
        self.rules.lock().unwrap().reject_all = true;
    }

    fn seen(&self) -> Vec<Seen> {
        self.rules.lock().unwrap().seen.clone()
    }

    /// Waits until `n` requests have arrived.
    async fn wait_seen(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.seen().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} requests never arrived"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A sidecar with one client-credentials connection `api` to `api`, `proxy` lines under
/// `proxy:`, on the fast path or on hyper alone.
async fn sidecar(hyper_only: bool, api: &Api, tokens: &TokenServer, proxy: &str) -> Sidecar {
    sidecar_to(hyper_only, api.addr, tokens, proxy).await
}

/// [`sidecar`] to the upstream at `upstream`.
async fn sidecar_to(
    hyper_only: bool,
    upstream: SocketAddr,
    tokens: &TokenServer,
    proxy: &str,
) -> Sidecar {
    let yaml = format!(
        "proxy:\n  listen: 127.0.0.1:0\n{proxy}{}",
        connections(&[cc_conn("api", upstream, tokens.addr)])
    );
    let options = tokenwarden::app::Options {
        hyper_only,
        ..Default::default()
    };
    Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await
}

/// Sends `method path` with `body` through the proxy → (status, JSON body).
async fn send(sc: &Sidecar, method: &str, path: &str, body: &str) -> (u16, Value) {
    let r = client()
        .request(method.parse().unwrap(), sc.url(path))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, json_of(r).await)
}

/// The JSON body of `r` (Null when it is not JSON).
async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null)
}

/// The `tokenwarden_unauthorized_refreshes_total` sample of connection `api` for `outcome`.
async fn unauthorized(sc: &Sidecar, outcome: &str) -> u64 {
    let metrics = sc.metrics().await;
    let prefix = format!(
        "tokenwarden_unauthorized_refreshes_total{{connection=\"api\",outcome=\"{outcome}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_and_the_request_replayed_with_the_new_one() {
    for hyper_only in BOTH_PATHS {
        let api = Api::start().await;
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        // (A short interval, so the second revocation below may refresh again.)
        let interval = "  unauthorized_refresh_interval: 50ms\n";
        let sc = sidecar(hyper_only, &api, &tokens, interval).await;
        let (status, body) = send(&sc, "GET", "/api/items", "").await;
        assert_eq!(status, 200, "hyper_only {hyper_only}: {body}");
        assert_eq!(body["authorization"], "Bearer tok-1");

        // The provider revokes tok-1 long before it expires.
        api.revoke("tok-1");
        let (status, body) = send(&sc, "GET", "/api/items", "").await;
        assert_eq!(status, 200, "hyper_only {hyper_only}: replayed, {body}");
        assert_eq!(body["authorization"], "Bearer tok-2");
        assert_eq!(tokens.count(), 2, "one refresh");

        // A PUT with a body is idempotent: replayed with the same body.
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.revoke("tok-2");
        let payload = "x".repeat(5000);
        let (status, body) = send(&sc, "PUT", "/api/items/1", &payload).await;
        assert_eq!(status, 200, "hyper_only {hyper_only}: {body}");
        assert_eq!(body["authorization"], "Bearer tok-3");
        assert_eq!(body["body"], payload.as_str());

        let seen = api.seen();
        let trail: Vec<(&str, u16)> = seen
            .iter()
            .map(|s| (s.authorization.as_str(), s.status))
            .collect();
        assert_eq!(
            trail,
            [
                ("Bearer tok-1", 200),
                ("Bearer tok-1", 401),
                ("Bearer tok-2", 200),
                ("Bearer tok-2", 401),
                ("Bearer tok-3", 200),
            ],
            "hyper_only {hyper_only}"
        );
        assert!(seen[3..]
            .iter()
            .all(|s| s.method == "PUT" && s.body == payload));
        assert_eq!(unauthorized(&sc, "refreshed").await, 2);
        assert_eq!(unauthorized(&sc, "failed").await, 0);
        sc.stop().await;
    }
}

#[tokio::test]
async fn concurrent_401s_share_one_token_request() {
    for hyper_only in BOTH_PATHS {
        let api = Api::start().await;
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let sc = sidecar(hyper_only, &api, &tokens, "").await;
        assert_eq!(send(&sc, "GET", "/api/warm", "").await.0, 200);
        api.revoke("tok-1");
        // The refresh takes a while, so the 401s overlap it.
        tokens.script([Reply::Slow(Duration::from_millis(500))]);
        let requests = (0..20).map(|i| {
            let url = sc.url(&format!("/api/items/{i}"));
            async move {
                let r = client().get(url).send().await.unwrap();
                let status = r.status().as_u16();
                (status, json_of(r).await)
            }
        });
        for (status, body) in futures_util::future::join_all(requests).await {
            assert_eq!(status, 200, "hyper_only {hyper_only}: {body}");
            assert_eq!(body["authorization"], "Bearer tok-2");
        }
        assert_eq!(
            tokens.count(),
            2,
            "hyper_only {hyper_only}: one token request"
        );
        assert_eq!(unauthorized(&sc, "refreshed").await, 1);
        assert_eq!(unauthorized(&sc, "reused").await, 19);
        sc.stop().await;
    }
}

#[tokio::test]
async fn a_post_gets_its_401_and_the_next_request_the_new_token() {
    for hyper_only in BOTH_PATHS {
        let api = Api::start().await;
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let sc = sidecar(hyper_only, &api, &tokens, "").await;
        api.revoke("tok-1");
        let r = client()
            .post(sc.url("/api/orders"))
            .body("{\"n\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "hyper_only {hyper_only}: not replayed");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\"",
            "the upstream's 401, unchanged"
        );
        assert_eq!(json_of(r).await["error"], "invalid_token");
        assert_eq!(tokens.count(), 2, "but the token was refreshed");
        let (status, body) = send(&sc, "POST", "/api/orders", "{\"n\":1}").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["authorization"], "Bearer tok-2");
        assert_eq!(api.seen().len(), 2, "the POST went upstream once each time");
        assert_eq!(unauthorized(&sc, "refreshed").await, 1);
        sc.stop().await;
    }
}

#[tokio::test]
async fn only_401_refreshes_403_429_and_5xx_pass_through() {
    for hyper_only in BOTH_PATHS {
        let api = Api::start().await;
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let sc = sidecar(hyper_only, &api, &tokens, "").await;
        for (path, expected) in [
            ("/api/forbidden", 403),
            ("/api/busy", 429),
            ("/api/broken", 500),
        ] {
            let (status, body) = send(&sc, "GET", path, "").await;
            assert_eq!(status, expected, "hyper_only {hyper_only} {path}");
            assert_eq!(body["status"], expected, "the upstream's own answer");
        }
        assert_eq!(tokens.count(), 1, "no refresh");
        assert_eq!(api.seen().len(), 3, "no replay");
        for outcome in [
            "refreshed",
            "reused",
            "limited",
            "failed",
            "not_refreshable",
        ] {
            assert_eq!(unauthorized(&sc, outcome).await, 0, "{outcome}");
        }
        sc.stop().await;
    }
}

/// An API that answers a revoked token with 403 (Django OAuth Toolkit's stock views, some
/// SaaS APIs): a connection that names 403 in `token_rejected_statuses` gets the same one
/// refresh and replay for it; without it the 403 passes through untouched.
#[tokio::test]
async fn a_connection_may_name_403_as_a_rejected_token() {
    for hyper_only in BOTH_PATHS {
        for (statuses, recovers) in [("[401, 403]", true), ("[401]", false)] {
            let api = Api::start().await;
            api.rejects_with(403);
            let tokens = TokenServer::start(Reply::token(3600, false)).await;
            let conn = cc_conn("api", api.addr, tokens.addr)
                .field(&format!("token_rejected_statuses: {statuses}"));
            let yaml = format!("proxy:\n  listen: 127.0.0.1:0\n{}", connections(&[conn]));
            let options = tokenwarden::app::Options {
                hyper_only,
                ..Default::default()
            };
            let sc = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await;
            let what = format!("hyper_only {hyper_only}, {statuses}");
            let (status, _) = send(&sc, "GET", "/api/items", "").await;
            assert_eq!(status, 200, "{what}");
            api.revoke("tok-1");
            let (status, body) = send(&sc, "GET", "/api/items", "").await;
            if recovers {
                assert_eq!(status, 200, "{what}: replayed, {body}");
                assert_eq!(body["authorization"], "Bearer tok-2", "{what}");
                assert_eq!(tokens.count(), 2, "{what}: one refresh");
                assert_eq!(unauthorized(&sc, "refreshed").await, 1, "{what}");
            } else {
                assert_eq!(status, 403, "{what}: the upstream's own answer, {body}");
                assert_eq!(tokens.count(), 1, "{what}: no refresh");
                assert_eq!(api.seen().len(), 2, "{what}: no replay");
            }
            sc.stop().await;
        }
    }
}

#[tokio::test]
async fn an_api_that_rejects_every_token_gets_one_refresh_per_interval() {
    for hyper_only in BOTH_PATHS {
        let api = Api::start().await;
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let sc = sidecar(hyper_only, &api, &tokens, "").await;
        api.reject_all();
        // Refreshed, replayed once with tok-2, rejected again: that 401 goes back.
        let (status, _) = send(&sc, "GET", "/api/a", "").await;
        assert_eq!(status, 401, "hyper_only {hyper_only}");
        assert_eq!(tokens.count(), 2);
        // Within the interval (default 30 s): no refresh, no replay.
        for _ in 0..5 {
            assert_eq!(send(&sc, "GET", "/api/b", "").await.0, 401);
        }
        assert_eq!(
            tokens.count(),
            2,
            "hyper_only {hyper_only}: no refresh storm"
        );
        let seen = api.seen();
        assert_eq!(seen.len(), 7, "one replay, then each request once");
        assert!(seen[1..].iter().all(|s| s.authorization == "Bearer tok-2"));
        assert_eq!(unauthorized(&sc, "refreshed").await, 1);
        assert_eq!(unauthorized(&sc, "limited").await, 5);
        sc.stop().await;
    }
}

#[tokio::test]
async fn the_interval_bounds_refreshes_and_zero_turns_them_off() {
    let api = Api::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let sc = sidecar(
        false,
        &api,
        &tokens,
        "  unauthorized_refresh_interval: 300ms\n",
    )
    .await;
    api.reject_all();
    assert_eq!(send(&sc, "GET", "/api/a", "").await.0, 401);
    assert_eq!(tokens.count(), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The interval has passed: the next 401 may refresh again.
    assert_eq!(send(&sc, "GET", "/api/b", "").await.0, 401);
    assert_eq!(tokens.count(), 3);
    assert_eq!(unauthorized(&sc, "refreshed").await, 2);
    sc.stop().await;

    let api = Api::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let sc = sidecar(false, &api, &tokens, "  unauthorized_refresh_interval: 0\n").await;
    api.revoke("tok-1");
    assert_eq!(send(&sc, "GET", "/api/a", "").await.0, 401);
    assert_eq!(tokens.count(), 1, "off: no refresh");
    assert_eq!(api.seen().len(), 1, "and no replay");
    sc.stop().await;
}

#[tokio::test]
async fn a_401_to_an_older_token_replays_with_the_current_one_without_a_refresh() {
    for hyper_only in BOTH_PATHS {
        let api = Api::start().await;
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let sc = sidecar(hyper_only, &api, &tokens, "").await;
        api.revoke("tok-1");
        // Sent with tok-1; its 401 comes late, after another request's 401 got tok-2.
        let late = tokio::spawn({
            let url = sc.url("/api/slow");
            async move {
                let r = client().get(url).send().await.unwrap();
                (r.status().as_u16(), json_of(r).await)
            }
        });
        // Once the API has the slow request (rejected on arrival, answered after SLOW).
        api.wait_seen(1).await;
        let (status, body) = send(&sc, "GET", "/api/fast", "").await;
        assert_eq!(
            (status, &body["authorization"]),
            (200, &json!("Bearer tok-2"))
        );
        let (status, body) = late.await.unwrap();
        assert_eq!(status, 200, "hyper_only {hyper_only}: {body}");
        assert_eq!(body["authorization"], "Bearer tok-2");
        assert_eq!(tokens.count(), 2, "no second refresh");
        assert_eq!(unauthorized(&sc, "refreshed").await, 1);
        assert_eq!(unauthorized(&sc, "reused").await, 1);
        sc.stop().await;
    }
}

#[tokio::test]
async fn forward_mode_replays_too() {
    let api = Api::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let sc = sidecar(false, &api, &tokens, "").await;
    api.revoke("tok-1");
    let proxied = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(sc.url("")).unwrap())
        .timeout(WAIT)
        .build()
        .unwrap();
    let r = proxied
        .get(format!("http://{}/items", api.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json_of(r).await;
    assert_eq!(body["authorization"], "Bearer tok-2");
    assert_eq!(tokens.count(), 2);
    sc.stop().await;
}

#[tokio::test]
async fn an_authorization_code_connection_without_a_refresh_token_passes_the_401_through() {
    let api = Api::start().await;
    // Token responses without a refresh token: nothing to refresh with.
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let conn = fixture_authcode("api", api.addr, Some(tokens.addr), true);
    let sc = Sidecar::start(&connections(&[conn])).await;
    authz::authorize_with(&sc, "api", "code-1").await;
    sc.wait_state("api", "ready").await;
    api.revoke("tok-1");
    let (status, _) = send(&sc, "GET", "/api/items", "").await;
    assert_eq!(status, 401);
    assert_eq!(tokens.count(), 1, "no token request");
    assert_eq!(unauthorized(&sc, "not_refreshable").await, 1);
    sc.stop().await;
}

#[tokio::test]
async fn replicas_on_one_redis_make_one_token_request_for_a_revoked_token() {
    use crate::support::redis::{redis_store, RedisServer};
    const STORE_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    let redis = RedisServer::start().await;
    let api = Api::start().await;
    let tokens = TokenServer::start(Reply::token(3600, false)).await;
    let config = format!(
        "{}{}",
        redis_store(&redis, STORE_KEY, "5s", "500ms"),
        connections(&[cc_conn("api", api.addr, tokens.addr)])
    );
    let a = Sidecar::start(&config).await;
    let b = Sidecar::start(&config).await;
    a.wait_state("api", "ready").await;
    b.wait_state("api", "ready").await;
    assert_eq!(tokens.count(), 1, "one first token between them");
    api.revoke("tok-1");
    // The refresh takes a while, so both replicas' 401s overlap it.
    tokens.script([Reply::Slow(Duration::from_millis(500))]);
    let (ra, rb) = tokio::join!(
        send(&a, "GET", "/api/items", ""),
        send(&b, "GET", "/api/items", "")
    );
    for (status, body) in [ra, rb] {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["authorization"], "Bearer tok-2");
    }
    assert_eq!(
        tokens.count(),
        2,
        "one refresh, under the lease, for both replicas"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_401_is_dropped_before_the_replay_whatever_its_framing() {
    use crate::support::upstream::{Scripted, Step};
    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    // Longer than what is read to keep the upstream connection: that one is closed.
    let large = "x".repeat(100 * 1024);
    let large: &'static str = Box::leak(
        format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n{large}",
            large.len()
        )
        .into_boxed_str(),
    );
    let rejections = [
        ("length", Step::Answer("HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!")),
        ("chunked", Step::Answer("HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n")),
        ("large", Step::Answer(large)),
        ("until close", Step::AnswerAndClose("HTTP/1.1 401 Unauthorized\r\n\r\nnope!")),
        ("empty", Step::Answer("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")),
    ];
    for hyper_only in BOTH_PATHS {
        for (name, rejection) in rejections {
            let upstream = Scripted::with_then(&[rejection], Step::Answer(OK)).await;
            let tokens = TokenServer::start(Reply::token(3600, false)).await;
            let sc = sidecar_to(hyper_only, upstream.addr, &tokens, "").await;
            sc.wait_state("api", "ready").await;
            let r = client().get(sc.url("/api/x")).send().await.unwrap();
            let what = format!("hyper_only {hyper_only}, {name} 401");
            assert_eq!(r.status(), 200, "{what}");
            assert_eq!(
                r.text().await.unwrap(),
                "hello",
                "{what}: none of the 401 reached the app"
            );
            // The connection still works afterwards (nothing of the 401 was left over).
            let r = client().get(sc.url("/api/y")).send().await.unwrap();
            assert_eq!(r.text().await.unwrap(), "hello", "{what}");
            let seen = upstream.requests();
            let tokens_sent: Vec<_> = seen
                .iter()
                .map(|r| {
                    r.headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                        .map(|(_, v)| v.clone())
                })
                .collect();
            let (one, two) = (
                Some("Bearer tok-1".to_owned()),
                Some("Bearer tok-2".to_owned()),
            );
            assert_eq!(tokens_sent, [one, two.clone(), two], "{what}");
            sc.stop().await;
        }
    }
}

#[tokio::test]
async fn a_401_whose_body_stalls_is_dropped_and_the_replay_is_prompt_on_both_paths() {
    use crate::support::upstream::{Scripted, Step};
    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    // 10 of 100 bytes, then nothing (the connection stays open).
    let stalled =
        Step::Answer("HTTP/1.1 401 Unauthorized\r\nContent-Length: 100\r\n\r\n0123456789");
    // Far beyond the bound asserted on: only a read of the 401's body could take this long.
    let response_timeout = "  response_timeout: 30s\n";
    let prompt = Duration::from_secs(10);
    for hyper_only in BOTH_PATHS {
        let upstream = Scripted::with_then(&[stalled], Step::Answer(OK)).await;
        let tokens = TokenServer::start(Reply::token(3600, false)).await;
        let sc = sidecar_to(hyper_only, upstream.addr, &tokens, response_timeout).await;
        sc.wait_state("api", "ready").await;
        let started = std::time::Instant::now();
        let r = client().get(sc.url("/api/x")).send().await.unwrap();
        let took = started.elapsed();
        let what = format!("hyper_only {hyper_only}");
        assert_eq!(r.status(), 200, "{what}");
        assert_eq!(r.text().await.unwrap(), "hello", "{what}");
        assert!(took < prompt, "{what}: the replay came after {took:?}");
        assert_eq!(upstream.requests().len(), 2, "{what}");
        sc.stop().await;
    }
}
