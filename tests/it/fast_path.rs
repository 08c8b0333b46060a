//! The proxy's fast path (`src/proxy/fast.rs`) against upstreams that answer byte for byte
//! as scripted: keep-alive and pipelining on both sides, every response framing (length,
//! chunked with extensions and trailers, until close, HEAD, 204, interim 1xx), a pooled
//! connection the upstream dropped (retried once for GET, never for POST), malformed
//! responses (a bad chunk closes the app's connection), request bodies on both sides of the fast path's limit, a connection that
//! moves to the hyper path in the middle and goes on working, slow clients, idle upstream
//! connections the upstream closed, odd targets, TRACE, and a shutdown mid-request.

use crate::support::config::{connections, Conn};
use crate::support::echo::Echo;
use crate::support::raw::{self, read_response};
use crate::support::upstream::{Scripted, Step, PAUSE};
use crate::support::{Sidecar, WAIT};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A static-bearer connection `key` to `upstream`.
fn bearer(key: &str, upstream: SocketAddr) -> Conn {
    Conn::new(key, upstream, "bearer")
        .secrets("token: t0ken")
        .configure("          token: \"<token>\"\n")
}

/// One request on an open app connection, its response read whole.
async fn exchange(stream: &mut TcpStream, request: &str) -> raw::RawResponse {
    raw::write(stream, request).await;
    read_response(stream).await
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n")
}

const OK_5: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

/// Three of these open three upstream connections at once (a warm pool).
const WARM: Step = Step::Together {
    count: 3,
    answer: OK_5,
    close: false,
};

#[tokio::test]
async fn keep_alive_and_pipelining_share_one_upstream_connection() {
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", echo.addr)])).await;
    let mut app = raw::connect(sidecar.proxy).await;
    for i in 0..20 {
        let r = exchange(&mut app, &get(&format!("/api/v1/items/{i}?x=1"))).await;
        assert_eq!(r.status, 200, "{}", r.head);
        let body = r.json();
        assert_eq!(body["target"], format!("/v1/items/{i}?x=1"));
    }
    // Ten requests in one write; the answers come back in order.
    let pipelined: String = (0..10).map(|i| get(&format!("/api/p/{i}"))).collect();
    raw::write(&mut app, &pipelined).await;
    for i in 0..10 {
        let r = read_response(&mut app).await;
        assert_eq!(r.json()["target"], format!("/p/{i}"));
    }
    assert_eq!(echo.hits(), 30);
}

#[tokio::test]
async fn every_response_framing_is_relayed_exactly() {
    let upstream = Scripted::start(&[
        // Chunked, with an extension and a trailer; the connection stays reusable.
        Step::Answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n\
             5;ext=\"a;b\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        ),
        // An interim response first, then the real one.
        Step::Answer("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        // HEAD: a length but no body.
        Step::Answer("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        Step::Answer("HTTP/1.1 204 No Content\r\n\r\n"),
        // Until close: the app's connection closes after it.
        Step::AnswerAndClose("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"),
    ])
    .await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", upstream.addr)])).await;
    let mut app = raw::connect(sidecar.proxy).await;

    // Relayed as the upstream framed it, byte for byte, trailer included.
    raw::write(&mut app, &get("/api/chunked")).await;
    let (status, head, mut body) = raw::read_head(&mut app).await;
    assert_eq!(status, 200);
    assert!(head.contains("\r\nTransfer-Encoding: chunked"), "{head}");
    assert!(head.contains("\r\nX-Up: 1"), "{head}");
    let expected = "5;ext=\"a;b\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    while body.len() < expected.len() {
        let mut chunk = [0u8; 256];
        let n = tokio::time::timeout(WAIT, app.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&body));
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&body), expected);

    let r = exchange(&mut app, &get("/api/hints")).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"ok"[..]),
        "{}",
        r.head
    );

    raw::write(&mut app, "HEAD /api/head HTTP/1.1\r\nHost: app\r\n\r\n").await;
    let (status, head, rest) = raw::read_head(&mut app).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-length: 1000"), "{head}");
    assert!(rest.is_empty());

    let (status, _, rest) = {
        raw::write(&mut app, &get("/api/none")).await;
        raw::read_head(&mut app).await
    };
    assert_eq!((status, rest.len()), (204, 0));

    let r = exchange(&mut app, &get("/api/until-close")).await;
    assert_eq!(r.body, b"until the end");
    assert_eq!(r.header("connection"), Some("close"));
    let mut more = [0u8; 1];
    let n = tokio::time::timeout(WAIT, app.read(&mut more))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        n, 0,
        "the app connection closes after a close-delimited body"
    );

    // All but the last came over one upstream connection.
    assert_eq!(upstream.accepted(), 1);
    assert!(upstream.texts()[2].starts_with("HEAD /head HTTP/1.1\r\n"));
}

#[tokio::test]
async fn a_dropped_pooled_connection_is_retried_for_get_but_not_for_post() {
    let upstream = Scripted::start(&[
        Step::Answer(OK_5),
        // The upstream drops the pooled connection on the next request it reads.
        Step::Drop,
        Step::Answer(OK_5),
        Step::Answer(OK_5),
        Step::Drop,
    ])
    .await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", upstream.addr)])).await;
    let mut app = raw::connect(sidecar.proxy).await;
    assert_eq!(exchange(&mut app, &get("/api/a")).await.body, b"hello");
    // Sent on the pooled connection, dropped unanswered, sent again on a new one.
    assert_eq!(exchange(&mut app, &get("/api/b")).await.body, b"hello");
    assert_eq!(upstream.accepted(), 2);
    assert_eq!(exchange(&mut app, &get("/api/c")).await.body, b"hello");
    // A POST may have had its effect: it is answered 502, not sent twice.
    let r = exchange(
        &mut app,
        "POST /api/d HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.head);
    assert_eq!(r.json()["error"], "upstream_unreachable");
    let posts = upstream
        .texts()
        .iter()
        .filter(|r| r.starts_with("POST"))
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn malformed_or_ambiguous_responses_are_502() {
    let upstream = Scripted::start(&[
        Step::AnswerAndClose("SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        Step::AnswerAndClose(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        Step::AnswerAndClose("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
    ])
    .await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", upstream.addr)])).await;
    for path in ["/api/ssh", "/api/two-lengths", "/api/upgrade"] {
        let r = raw::send(sidecar.proxy, &raw::get(path, "app", "")).await;
        assert_eq!(r.status, 502, "{path}: {}", r.head);
        let body = r.json();
        assert_eq!(body["error"], "upstream_unreachable", "{path}");
        assert_eq!(body["connection"], "api");
    }
}

#[tokio::test]
async fn bad_chunked_framing_closes_the_app_connection() {
    let upstream = Scripted::start(&[
        // Broken at once: the connection closes without a response (as on the hyper
        // path, where hyper holds the head back with the first body bytes).
        Step::AnswerAndClose("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        // Broken after a good chunk: the app gets what was good, then the connection closes.
        Step::AnswerInTwo(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            "5\nworld\r\n0\r\n\r\n",
        ),
    ])
    .await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", upstream.addr)])).await;
    let mut app = raw::connect(sidecar.proxy).await;
    raw::write(&mut app, &get("/api/bad")).await;
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, app.read_to_end(&mut all))
        .await
        .expect("the app connection closes")
        .unwrap();
    assert!(all.is_empty(), "{:?}", String::from_utf8_lossy(&all));

    let mut app = raw::connect(sidecar.proxy).await;
    raw::write(&mut app, &get("/api/half")).await;
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, app.read_to_end(&mut all))
        .await
        .expect("the app connection closes")
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.ends_with("5\r\nhello\r\n"),
        "only the good chunk is relayed: {text}"
    );
}

#[tokio::test]
async fn request_bodies_below_and_above_the_fast_path_limit_arrive_intact() {
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", echo.addr)])).await;
    let mut app = raw::connect(sidecar.proxy).await;
    // 1 KiB goes with its head; 200 KiB moves the connection to the hyper path.
    for size in [0, 1024, 64 * 1024, 200 * 1024, 3] {
        let body = "x".repeat(size);
        let request = format!(
            "POST /api/count HTTP/1.1\r\nHost: app\r\nContent-Length: {size}\r\n\r\n{body}"
        );
        let r = exchange(&mut app, &request).await;
        assert_eq!(r.status, 200, "{size}: {}", r.head);
        assert_eq!(r.json()["received"], size, "{size}");
    }
}

#[tokio::test]
async fn a_connection_moved_to_the_hyper_path_keeps_working() {
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", echo.addr)])).await;
    let mut app = raw::connect(sidecar.proxy).await;
    let r = exchange(&mut app, &get("/api/first")).await;
    assert_eq!(r.json()["target"], "/first");
    // A refusal of the plan is answered on the fast path, on the same connection …
    let r = exchange(&mut app, &get("/nope/x")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown_connection");
    // … a chunked body moves the connection to the hyper path, which answers it.
    let chunked = "POST /api/count HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n\
                   3\r\nabc\r\n0\r\n\r\n";
    let r = exchange(&mut app, chunked).await;
    assert_eq!(r.json()["received"], 3, "{}", r.head);
    for i in 0..3 {
        let r = exchange(&mut app, &get(&format!("/api/after/{i}"))).await;
        assert_eq!(r.status, 200);
        let body = r.json();
        assert_eq!(body["target"], format!("/after/{i}"));
        assert_eq!(
            crate::support::echo::echoed_authorization(&body).as_deref(),
            Some("Bearer t0ken")
        );
    }
}

#[tokio::test]
async fn a_request_asking_to_close_gets_its_answer_then_the_close() {
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", echo.addr)])).await;
    let r = raw::send(sidecar.proxy, &raw::get("/api/bye", "app", "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.json()["target"], "/bye");
}

/// `count` requests at once, each on its own app connection; all must answer 200.
async fn concurrently(proxy: SocketAddr, path: &str, count: usize) {
    let handles: Vec<_> = (0..count)
        .map(|_| {
            let request = raw::get(path, "app", "");
            tokio::spawn(async move { raw::send(proxy, &request).await })
        })
        .collect();
    for handle in handles {
        let r = handle.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.head);
    }
}

#[tokio::test]
async fn a_failing_request_is_sent_at_most_twice_however_many_connections_are_pooled() {
    let upstream = Scripted::start(&[
        WARM,
        WARM,
        WARM,
        Step::Drop,
        Step::Drop,
        Step::Drop,
        Step::Drop,
    ])
    .await;
    // One worker, so the request finds the pool the warm-up filled.
    let yaml = format!(
        "proxy: {{ worker_threads: 1 }}\n{}",
        connections(&[bearer("api", upstream.addr)])
    );
    let sidecar = Sidecar::start(&yaml).await;
    concurrently(sidecar.proxy, "/api/warm", 3).await;
    assert_eq!(upstream.accepted(), 3, "three pooled connections");
    let r = raw::send(sidecar.proxy, &raw::get("/api/die", "app", "")).await;
    assert_eq!(r.status, 502, "{}", r.head);
    let sends = upstream
        .texts()
        .iter()
        .filter(|r| r.starts_with("GET /die "))
        .count();
    assert_eq!(
        sends, 2,
        "sent on a pooled connection, then once more on a new one"
    );
}

/// Sockets to `port` (as the remote port) in TCP state CLOSE_WAIT, from /proc/net/tcp.
fn close_wait_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().unwrap();
            u16::from_str_radix(remote_port, 16) == Ok(port) && fields[3] == "08"
        })
        .count()
}

#[tokio::test]
async fn idle_upstream_connections_the_upstream_closed_are_reaped() {
    // Three answers at once (each takes a pause, so three connections open), and the
    // upstream closes each connection after its answer, while it sits idle in the pool.
    let upstream = Scripted::start(
        &[Step::Together {
            count: 3,
            answer: OK_5,
            close: true,
        }; 3],
    )
    .await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", upstream.addr)])).await;
    concurrently(sidecar.proxy, "/api/x", 3).await;
    assert_eq!(upstream.accepted(), 3);
    let port = upstream.addr.port();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = 0;
    loop {
        let now_waiting = close_wait_to(port);
        seen = seen.max(now_waiting);
        if seen > 0 && now_waiting == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "CLOSE_WAIT sockets to the upstream: {now_waiting} (most seen {seen}), never reaped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_slow_client_gets_header_read_timeout_for_its_whole_head() {
    let echo = Echo::start().await;
    let yaml = format!(
        "proxy: {{ header_read_timeout: 1s }}\n{}",
        connections(&[bearer("api", echo.addr)])
    );
    let sidecar = Sidecar::start(&yaml).await;
    let mut app = raw::connect(sidecar.proxy).await;
    let started = std::time::Instant::now();
    // One byte every 300 ms: each read is quick, the head as a whole is not.
    let request = get("/api/slow");
    let mut closed = false;
    for byte in request.as_bytes() {
        if app.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(PAUSE * 3, app.read(&mut probe)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "the connection outlived its head's deadline");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(3),
        "closed after {took:?}, not about 1 s"
    );
    assert_eq!(echo.hits(), 0);
}

#[tokio::test]
async fn odd_targets_and_trace_are_answered_as_the_hyper_path_answers_them() {
    let upstream = Scripted::start(&[Step::Answer(OK_5), Step::Answer(OK_5)]).await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", upstream.addr)])).await;
    // A fragment is not sent upstream; a target with `<` is refused before it.
    let r = raw::send(sidecar.proxy, &raw::get("/api/a?x=1#frag", "app", "")).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let r = raw::send(sidecar.proxy, &raw::get("/api/a<b>", "app", "")).await;
    assert_eq!(r.status, 400, "{}", r.head);
    // JSON in a query goes through, unchanged.
    let r = raw::send(
        sidecar.proxy,
        &raw::get("/api/q?f={%22a%22:1}|x", "app", ""),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    // TRACE, in any case, would echo the injected credential back to the app.
    for method in ["TRACE", "trace"] {
        let request = format!("{method} /api/x HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
        let r = raw::send(sidecar.proxy, &request).await;
        assert_eq!(r.status, 403, "{method}: {}", r.head);
    }
    let targets: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.line().to_owned())
        .collect();
    assert_eq!(
        targets,
        ["GET /a?x=1 HTTP/1.1", "GET /q?f={%22a%22:1}|x HTTP/1.1"]
    );
}

#[tokio::test]
async fn a_body_still_arriving_when_shutdown_starts_is_answered() {
    let echo = Echo::start().await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", echo.addr)])).await;
    let mut app = raw::connect(sidecar.proxy).await;
    raw::write(
        &mut app,
        "POST /api/count HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    tokio::time::sleep(PAUSE).await;
    let stopping = tokio::spawn(sidecar.stop());
    tokio::time::sleep(PAUSE).await;
    raw::write(&mut app, "hello").await;
    let r = read_response(&mut app).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.json()["received"], 5);
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_response_during_shutdown_tells_the_app_the_connection_closes() {
    let upstream = Scripted::start(&[Step::Late(WAIT / 4, OK_5)]).await;
    let sidecar = Sidecar::start(&connections(&[bearer("api", upstream.addr)])).await;
    let mut app = raw::connect(sidecar.proxy).await;
    raw::write(&mut app, &get("/api/slow")).await;
    // Shutdown starts once the upstream has the request, well before it answers.
    let deadline = tokio::time::Instant::now() + WAIT;
    while upstream.requests().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let stopping = tokio::spawn(sidecar.stop());
    let r = read_response(&mut app).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_head_line_that_never_ends_is_handed_to_hyper_at_the_size_limit() {
    let echo = Echo::start().await;
    let yaml = format!(
        "proxy: {{ header_read_timeout: 60s }}\n{}",
        connections(&[bearer("api", echo.addr)])
    );
    let sidecar = Sidecar::start(&yaml).await;
    let mut app = raw::connect(sidecar.proxy).await;
    raw::write(&mut app, "GET /api/x HTTP/1.1\r\nX-Long: ").await;
    // A megabyte without a line end: hyper refuses the head long before it is all sent.
    let line = vec![b'a'; 1024 * 1024];
    let _ = tokio::time::timeout(WAIT, app.write_all(&line)).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, app.read_to_end(&mut answer))
        .await
        .expect("answered or closed long before header_read_timeout");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text:.200}"
    );
    assert_eq!(echo.hits(), 0);
}
