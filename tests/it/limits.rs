//! The proxy listener's resource limits, with real sockets: 2,000 idle app connections
//! keep the sidecar's memory bounded and ordinary requests served; `max_connections`
//! closes connections beyond it (and admits again once some close);
//! `max_requests_per_connection` and `max_connection_lifetime` end a connection after its
//! current response on both paths; a stalled request body is cut off on both paths;
//! passthrough `CONNECT` tunnels count against `max_connections` and close when idle.

use crate::support::config::{connections, Conn};
use crate::support::differential::Path;
use crate::support::echo::Echo;
use crate::support::memory::rss_bytes;
use crate::support::raw::{self, read_response};
use crate::support::upstream::{Scripted, Step};
use crate::support::{Sidecar, WAIT};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle app connections opened at once.
const IDLE: usize = 2000;
/// Largest growth of the test process's resident memory accepted for them (both ends of
/// every connection live in this process).
const MAX_IDLE_RSS_GROWTH: u64 = 64 * 1024 * 1024;

fn bearer(key: &str, upstream: SocketAddr) -> Conn {
    Conn::new(key, upstream, "bearer")
        .secrets("token: t0ken")
        .configure("          token: \"<token>\"\n")
}

async fn sidecar(proxy_yaml: &str, upstream: SocketAddr) -> Sidecar {
    let yaml = format!(
        "proxy: {{ {proxy_yaml} }}\n{}",
        connections(&[bearer("api", upstream)])
    );
    Sidecar::start(&yaml).await
}

/// Whether the proxy closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_keep_memory_bounded_and_requests_served() {
    let echo = Echo::start().await;
    let sidecar = sidecar("header_read_timeout: 60s", echo.addr).await;
    let before = rss_bytes();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(raw::connect(sidecar.proxy).await);
    }
    // Half of them started a request head and stopped.
    for stream in idle.iter_mut().step_by(2) {
        raw::write(stream, "GET /api/x HTTP/1.1\r\nHost: app\r\n").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("{IDLE} idle connections: RSS grew {} KiB", grown / 1024);
    assert!(
        grown < MAX_IDLE_RSS_GROWTH,
        "RSS grew {grown} bytes for {IDLE} idle connections"
    );
    for i in 0..20 {
        let r = raw::send(sidecar.proxy, &raw::get(&format!("/api/n/{i}"), "app", "")).await;
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.json()["target"], format!("/n/{i}"));
    }
    assert_eq!(echo.hits(), 20);
    drop(idle);
    sidecar.stop().await;
}

/// Waits until a new app connection to `sidecar` is admitted and answered again (a permit
/// is given back once the proxy has seen a close).
async fn admitted_again(sidecar: &Sidecar) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut stream = raw::connect(sidecar.proxy).await;
        raw::write(&mut stream, &raw::get("/api/again", "app", "")).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never admitted again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_until_some_close() {
    let echo = Echo::start().await;
    let sidecar = sidecar("max_connections: 3, header_read_timeout: 60s", echo.addr).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = raw::connect(sidecar.proxy).await;
        raw::write(&mut stream, "GET /api/held HTTP/1.1\r\nHost: app\r\n\r\n").await;
        let r = read_response(&mut stream).await;
        assert_eq!(r.status, 200);
        held.push(stream);
    }
    let mut fourth = raw::connect(sidecar.proxy).await;
    assert!(
        closed_within(&mut fourth, WAIT).await,
        "a fourth connection is closed at once"
    );
    drop(held.pop());
    // The permit is given back once the proxy has seen the close.
    admitted_again(&sidecar).await;
}

/// Sends `count` requests on one connection (each answered) and returns whether the
/// proxy closed the connection right after the last, with `connection: close` on it.
async fn closes_after(proxy: SocketAddr, request: &str, count: usize) -> bool {
    let mut app = raw::connect(proxy).await;
    for i in 0..count {
        raw::write(&mut app, request).await;
        let r = read_response(&mut app).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.head);
        let says_close = r.header("connection") == Some("close");
        if says_close {
            return i + 1 == count && closed_within(&mut app, WAIT).await;
        }
    }
    false
}

#[tokio::test]
async fn a_connection_ends_after_its_request_budget_on_both_paths() {
    let echo = Echo::start().await;
    let sidecar = sidecar("max_requests_per_connection: 3", echo.addr).await;
    let plain = "GET /api/x HTTP/1.1\r\nHost: app\r\n\r\n";
    assert!(closes_after(sidecar.proxy, plain, 3).await, "fast path");
    // HTTP/1.0 keep-alive requests go to hyper: the same budget applies there, and a
    // connection handed over mid-way keeps what it had used.
    let chunked =
        "POST /api/count HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n";
    assert!(closes_after(sidecar.proxy, chunked, 3).await, "hyper path");
    let mut app = raw::connect(sidecar.proxy).await;
    raw::write(&mut app, plain).await;
    assert_eq!(read_response(&mut app).await.header("connection"), None);
    raw::write(&mut app, chunked).await;
    assert_eq!(read_response(&mut app).await.header("connection"), None);
    raw::write(&mut app, chunked).await;
    assert_eq!(
        read_response(&mut app).await.header("connection"),
        Some("close")
    );
    assert!(closed_within(&mut app, WAIT).await);
}

#[tokio::test]
async fn a_connection_ends_after_its_lifetime() {
    let echo = Echo::start().await;
    let sidecar = sidecar("max_connection_lifetime: 300ms", echo.addr).await;
    let mut app = raw::connect(sidecar.proxy).await;
    raw::write(&mut app, "GET /api/x HTTP/1.1\r\nHost: app\r\n\r\n").await;
    assert_eq!(read_response(&mut app).await.header("connection"), None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    raw::write(&mut app, "GET /api/x HTTP/1.1\r\nHost: app\r\n\r\n").await;
    let r = read_response(&mut app).await;
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(closed_within(&mut app, WAIT).await);
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_off_on_both_paths() {
    for path in [Path::Fast, Path::Hyper] {
        let upstream = Scripted::always(Step::Answer(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ))
        .await;
        let yaml = format!(
            "proxy: {{ body_read_timeout: 500ms }}\n{}",
            connections(&[bearer("api", upstream.addr)])
        );
        let options = tokenwarden::app::Options {
            hyper_only: path == Path::Hyper,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let sidecar = Sidecar::start_in(dir, &yaml, options).await;
        let mut app = raw::connect(sidecar.proxy).await;
        // Half a small body, then nothing.
        raw::write(
            &mut app,
            "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nhello",
        )
        .await;
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, app.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{path:?}: the stalled body was never cut off"))
            .ok();
        assert!(
            started.elapsed() < WAIT,
            "{path:?}: cut off after {:?}",
            started.elapsed()
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{path:?}: {text}"
        );
        assert!(
            upstream.requests().is_empty(),
            "{path:?}: a half request went upstream"
        );
        sidecar.stop().await;
    }
}

/// Opens a passthrough tunnel through `proxy` to `target` (answered 200).
async fn tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut stream = raw::connect(proxy).await;
    raw::write(&mut stream, &raw::connect_request(target)).await;
    let (status, head, rest) = raw::read_head(&mut stream).await;
    assert_eq!(status, 200, "{head}");
    assert!(rest.is_empty());
    stream
}

/// An upstream for tunnels that keeps every connection open however long it is idle.
async fn tunnel_upstream() -> Scripted {
    Scripted::always(Step::Answer(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ))
    .await
}

/// One keep-alive request through an open tunnel to a [`tunnel_upstream`].
async fn through(stream: &mut TcpStream, target: &str, path: &str) {
    raw::write(
        stream,
        &format!("GET {path} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
    )
    .await;
    let r = read_response(stream).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]), "{}", r.head);
}

#[tokio::test]
async fn passthrough_tunnels_count_against_max_connections() {
    let echo = Echo::start().await;
    let elsewhere = tunnel_upstream().await;
    // (By name: the sidecar's connection is on 127.0.0.1, which is never tunnelled.)
    let target = format!("localhost:{}", elsewhere.addr.port());
    let yaml = format!(
        "max_connections: 3, header_read_timeout: 60s, connect_passthrough: [\"{target}\"]"
    );
    let sidecar = sidecar(&yaml, echo.addr).await;
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        tunnels.push(tunnel(sidecar.proxy, &target).await);
    }
    let mut fourth = raw::connect(sidecar.proxy).await;
    assert!(
        closed_within(&mut fourth, WAIT).await,
        "a fourth connection beside three tunnels is closed at once"
    );
    // The tunnels themselves still carry bytes.
    for (i, stream) in tunnels.iter_mut().enumerate() {
        through(stream, &target, &format!("/t/{i}")).await;
    }
    // Closing a tunnel gives its permit back.
    drop(tunnels.pop());
    admitted_again(&sidecar).await;
    sidecar.stop().await;
}

#[tokio::test]
async fn an_idle_passthrough_tunnel_closes_after_tunnel_idle_timeout_and_a_busy_one_does_not() {
    let echo = Echo::start().await;
    let elsewhere = tunnel_upstream().await;
    // (By name: the sidecar's connection is on 127.0.0.1, which is never tunnelled.)
    let target = format!("localhost:{}", elsewhere.addr.port());
    let idle_timeout = Duration::from_millis(600);
    let yaml = format!("tunnel_idle_timeout: 600ms, connect_passthrough: [\"{target}\"]");
    let sidecar = sidecar(&yaml, echo.addr).await;
    // (Before the CONNECT: the proxy's clock for the tunnel starts later.)
    let opened = tokio::time::Instant::now();
    let mut idle = tunnel(sidecar.proxy, &target).await;
    let mut busy = tunnel(sidecar.proxy, &target).await;
    // While the idle tunnel waits for its close, the busy one carries a request every
    // third of the timeout, for three timeouts.
    let idle_closed = async {
        assert!(
            closed_within(&mut idle, WAIT).await,
            "the idle tunnel was never closed"
        );
        opened.elapsed()
    };
    let busy_served = async {
        let mut i = 0;
        while opened.elapsed() < idle_timeout * 3 {
            through(&mut busy, &target, &format!("/busy/{i}")).await;
            i += 1;
            tokio::time::sleep(idle_timeout / 3).await;
        }
    };
    let (after, ()) = tokio::join!(idle_closed, busy_served);
    assert!(after >= idle_timeout, "closed early, after {after:?}");
    through(&mut busy, &target, "/busy/last").await;
    sidecar.stop().await;
}

/// A sidecar in front of `upstream` (connection `api`, static bearer) on `path`, with
/// `proxy_yaml` under `proxy:`.
async fn sidecar_on(path: Path, proxy_yaml: &str, upstream: SocketAddr) -> Sidecar {
    let yaml = format!(
        "proxy: {{ {proxy_yaml} }}\n{}",
        connections(&[bearer("api", upstream)])
    );
    let options = tokenwarden::app::Options {
        hyper_only: path == Path::Hyper,
        ..Default::default()
    };
    Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await
}

#[tokio::test]
async fn a_stalled_response_body_closes_the_app_connection_on_both_paths() {
    // 10 of 100 bytes, then nothing (the upstream keeps the connection open).
    let stalled = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789";
    let timeout = Duration::from_millis(500);
    for path in [Path::Fast, Path::Hyper] {
        let upstream = Scripted::always(Step::Answer(stalled)).await;
        let sidecar = sidecar_on(path, "upstream_read_timeout: 500ms", upstream.addr).await;
        let mut app = raw::connect(sidecar.proxy).await;
        raw::write(&mut app, "GET /api/a HTTP/1.1\r\nHost: app\r\n\r\n").await;
        let (status, head, mut body) = raw::read_head(&mut app).await;
        assert_eq!(status, 200, "{path:?}: {head}");
        let started = tokio::time::Instant::now();
        let cut = tokio::time::timeout(WAIT, app.read_to_end(&mut body)).await;
        let after = started.elapsed();
        assert!(cut.is_ok(), "{path:?}: the stalled body was never cut off");
        assert_eq!(body, b"0123456789", "{path:?}");
        // (The first bytes may have been read a little before the head was.)
        assert!(
            after >= timeout - Duration::from_millis(100),
            "{path:?}: cut after {after:?}"
        );
        // The next request works (on a new upstream connection).
        let r = raw::send(sidecar.proxy, &raw::get("/api/b", "app", "")).await;
        assert_eq!(r.status, 200, "{path:?}: {}", r.head);
        assert_eq!(
            upstream.accepted(),
            2,
            "{path:?}: the stalled link was reused"
        );
        sidecar.stop().await;
    }
}

/// Sends `head`, then each of `pieces` one `every` apart, to `proxy` while reading what
/// comes back: how long after the head the proxy closed the connection (or `None` if it
/// was still open after the last piece and `WAIT`), and what it answered.
async fn trickle(
    proxy: SocketAddr,
    head: &str,
    pieces: &[&str],
    every: Duration,
) -> (Option<Duration>, String) {
    let (mut rd, mut wr) = raw::connect(proxy).await.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let writer = async {
        for piece in pieces {
            tokio::time::sleep(every).await;
            let written = wr.write_all(piece.as_bytes()).await;
            if written.is_err() {
                break;
            }
        }
    };
    let reader = async {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(WAIT, rd.read_to_end(&mut answer)).await;
        (read.is_ok().then(|| started.elapsed()), answer)
    };
    let ((closed, answer), ()) = tokio::join!(reader, writer);
    (closed, String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn a_trickling_request_body_is_cut_off_on_both_paths() {
    // 1 s allowed; one byte every 200 ms, so never a pause of 1 s, for 8 s in all.
    let every = Duration::from_millis(200);
    let bytes: Vec<&str> = std::iter::repeat_n("x", 40).collect();
    let chunks: Vec<&str> = std::iter::repeat_n("1\r\nx\r\n", 40).collect();
    let length_head = "POST /api/a HTTP/1.1\r\nHost: app\r\nContent-Length: 40\r\n\r\n";
    let chunked_head = "POST /api/a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n";
    // A body of a known length up to 64 KiB must arrive whole within body_read_timeout;
    // a chunked one must keep the minimum rate after as much grace (hyper on both paths).
    let cases = [
        ("small", length_head, &bytes),
        ("chunked", chunked_head, &chunks),
    ];
    for path in [Path::Fast, Path::Hyper] {
        for (name, head, pieces) in cases {
            let upstream = Scripted::always(Step::Answer(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ))
            .await;
            let sidecar = sidecar_on(path, "body_read_timeout: 1s", upstream.addr).await;
            let (closed, answer) = trickle(sidecar.proxy, head, pieces, every).await;
            let what = format!("{path:?}, {name}");
            let closed = closed.unwrap_or_else(|| panic!("{what}: never cut off"));
            // Well before the 8 s the body takes (cut at about 1 s).
            assert!(
                closed < Duration::from_secs(5),
                "{what}: cut after {closed:?}"
            );
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
                "{what}: {answer}"
            );
            assert!(
                upstream.requests().is_empty(),
                "{what}: the body went upstream whole"
            );
            sidecar.stop().await;
        }
    }
}

/// Whether the proxy answered (a 431) or closed `stream` within `within`.
async fn refused_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(within, stream.read(&mut byte))
        .await
        .is_ok()
}

#[tokio::test]
async fn partial_heads_past_max_buffered_head_bytes_are_closed_on_both_paths() {
    const BUDGET: usize = 1024 * 1024;
    const CONNECTIONS: usize = 40;
    // 40 heads that never end, against a 1 MiB budget: of 60 KiB (read by the fast path,
    // or by hyper alone) and of 300 KiB (handed from the fast path to hyper at 64 KiB).
    let cases = [
        (Path::Fast, 60 * 1024),
        (Path::Hyper, 60 * 1024),
        (Path::Fast, 300 * 1024),
    ];
    for (path, pad) in cases {
        let partial = format!(
            "GET /api/x HTTP/1.1\r\nHost: app\r\nX-Pad: {}",
            "p".repeat(pad)
        );
        let fit = BUDGET / (pad + 64);
        let echo = Echo::start().await;
        let yaml = format!("header_read_timeout: 60s, max_buffered_head_bytes: {BUDGET}");
        let sidecar = sidecar_on(path, &yaml, echo.addr).await;
        let mut watching = tokio::task::JoinSet::new();
        for _ in 0..CONNECTIONS {
            let mut stream = raw::connect(sidecar.proxy).await;
            let partial = partial.clone();
            watching.spawn(async move {
                // (The proxy may close the connection before it has read it all.)
                let _ = tokio::time::timeout(WAIT, stream.write_all(partial.as_bytes())).await;
                let closed = refused_within(&mut stream, Duration::from_secs(3)).await;
                (closed, stream)
            });
        }
        let (mut closed, mut open) = (0, Vec::new());
        while let Some(watched) = watching.join_next().await {
            match watched.unwrap() {
                (true, _) => closed += 1,
                (false, stream) => open.push(stream),
            }
        }
        let what = format!("{path:?}, heads of {pad} bytes");
        assert!(
            closed >= CONNECTIONS - fit - 1 && open.len() + 2 >= fit,
            "{what}: {closed} closed, {} open; the budget holds {fit}",
            open.len()
        );
        // Ordinary requests go on meanwhile (a head read at once is never charged).
        for i in 0..5 {
            let r = raw::send(sidecar.proxy, &raw::get(&format!("/api/n/{i}"), "app", "")).await;
            assert_eq!(r.status, 200, "{what}: {}", r.head);
        }
        // Closed connections give their bytes back: a new partial head fits again.
        drop(open);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut stream = raw::connect(sidecar.proxy).await;
            let _ = tokio::time::timeout(WAIT, stream.write_all(partial.as_bytes())).await;
            if !refused_within(&mut stream, Duration::from_millis(500)).await {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: the budget was never given back"
            );
        }
        sidecar.stop().await;
    }
}
