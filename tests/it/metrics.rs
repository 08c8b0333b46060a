//! `/metrics` as OpenMetrics: the content type and `# EOF`, and that each family counts
//! what happened — request durations on both paths by status class, upstream errors by
//! kind, `no_token` refusals by state, connect and token-request durations, and the open
//! app connections.

use crate::support::upstream::{Scripted, Step};
use crate::support::*;

/// The OpenMetrics text content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The value of the sample `series` (name and labels, exactly as exposed) in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
}

/// [`sample`], which must be there.
fn value(metrics: &str, series: &str) -> f64 {
    sample(metrics, series).unwrap_or_else(|| panic!("no `{series}` in\n{metrics}"))
}

/// `_count` and `_bucket{le="+Inf"}` of `histogram` for `labels` (e.g.
/// `connection="api",status_class="2xx"`): they must agree.
fn count(metrics: &str, histogram: &str, labels: &str) -> f64 {
    let n = value(metrics, &format!("{histogram}_count{{{labels}}}"));
    let inf = value(
        metrics,
        &format!("{histogram}_bucket{{le=\"+Inf\",{labels}}}"),
    );
    assert_eq!(
        n, inf,
        "{histogram}{{{labels}}}: _count and the +Inf bucket"
    );
    n
}

const DURATION: &str = "tokenwarden_request_duration_seconds";

/// The request durations of connection `key` in status class `class`, `None` when the
/// class has no series (the connection never answered with it).
fn durations(metrics: &str, key: &str, class: &str) -> Option<f64> {
    let labels = format!("connection=\"{key}\",status_class=\"{class}\"");
    sample(metrics, &format!("{DURATION}_count{{{labels}}}"))?;
    Some(count(metrics, DURATION, &labels))
}

/// A scripted upstream answering every request with `answer` and a ready sidecar with a
/// client-credentials connection `api` to it.
async fn ready_on(upstream: impl std::fmt::Display, tokens: &TokenServer) -> Sidecar {
    let sidecar = Sidecar::start(&connections(&[cc_conn("api", upstream, tokens.addr)])).await;
    sidecar.wait_state("api", "ready").await;
    sidecar
}

#[tokio::test]
async fn the_scrape_is_openmetrics_text() {
    let (_tokens, _echo, sidecar) = setup(token(3600), "").await;
    let r = client()
        .get(sidecar.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], OPENMETRICS);
    let text = r.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in [
        "# TYPE tokenwarden_request_duration_seconds histogram",
        "# UNIT tokenwarden_request_duration_seconds seconds",
        "# TYPE tokenwarden_proxied_requests counter",
        "# TYPE tokenwarden_open_connections gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
}

#[tokio::test]
async fn request_durations_count_both_paths_by_status_class() {
    let (_tokens, echo, sidecar) = setup(token(3600), "").await;
    sidecar.wait_state("api", "ready").await;
    const FAST: usize = 3;
    const HYPER: usize = 2;
    for _ in 0..FAST {
        assert_eq!(sidecar.get("/api/plain").await.0, 200);
    }
    // A chunked request body is the hyper path's.
    let chunked = "POST /api/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                   Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    for _ in 0..HYPER {
        assert_eq!(raw::send(sidecar.proxy, chunked).await.status, 200);
    }
    assert_eq!(echo.hits(), FAST + HYPER);
    let metrics = sidecar.metrics().await;
    let labels = "connection=\"api\",status_class=\"2xx\"";
    assert_eq!(count(&metrics, DURATION, labels), (FAST + HYPER) as f64);
    let sum = value(&metrics, &format!("{DURATION}_sum{{{labels}}}"));
    assert!(sum > 0.0 && sum < 10.0, "{sum}");
    assert_eq!(
        value(
            &metrics,
            "tokenwarden_proxied_requests_total{connection=\"api\"}"
        ),
        (FAST + HYPER) as f64
    );
    // No other class was answered, so it has no series.
    assert_eq!(durations(&metrics, "api", "5xx"), None);
    // Connections were opened, and timed.
    assert!(
        count(
            &metrics,
            "tokenwarden_upstream_connect_seconds",
            "connection=\"api\""
        ) >= 1.0
    );
}

#[tokio::test]
async fn an_upstream_5xx_is_counted_in_its_class() {
    let upstream = Scripted::always(Step::Answer(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
    ))
    .await;
    let tokens = TokenServer::start(token(3600)).await;
    let sidecar = ready_on(upstream.addr, &tokens).await;
    assert_eq!(sidecar.get("/api/busy").await.0, 503);
    let metrics = sidecar.metrics().await;
    assert_eq!(durations(&metrics, "api", "5xx").unwrap(), 1.0);
    assert_eq!(durations(&metrics, "api", "2xx"), None);
    // The upstream answered: no upstream error.
    for kind in ["connect", "tls", "timeout", "closed", "malformed"] {
        let series =
            format!("tokenwarden_upstream_errors_total{{connection=\"api\",kind=\"{kind}\"}}");
        assert_eq!(value(&metrics, &series), 0.0, "{series}");
    }
}

#[tokio::test]
async fn upstream_failures_are_counted_by_kind_with_their_502_or_504_on_both_paths() {
    let fast = upstream_failures_are_counted_by_kind(false).await;
    let hyper = upstream_failures_are_counted_by_kind(true).await;
    assert_eq!(fast, hyper, "both paths answer each failure alike");
}

/// Runs the failures on one path; their error bodies (the upstreams' ports blanked).
async fn upstream_failures_are_counted_by_kind(hyper_only: bool) -> Vec<serde_json::Value> {
    let tokens = TokenServer::start(token(3600)).await;
    // Nothing listens on a port just freed: connect.
    let refused = loopback().await.local_addr().unwrap();
    let closing = Scripted::always(Step::Drop).await;
    let resetting = Scripted::always(Step::Reset).await;
    let malformed =
        Scripted::always(Step::Answer("HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n")).await;
    let silent = Scripted::always(Step::Silent).await;
    let conns = [
        cc_conn("refused", refused, tokens.addr),
        cc_conn("closing", closing.addr, tokens.addr),
        cc_conn("resetting", resetting.addr, tokens.addr),
        cc_conn("malformed", malformed.addr, tokens.addr),
        cc_conn("silent", silent.addr, tokens.addr),
    ];
    let yaml = format!("proxy:\n  response_timeout: 300ms\n{}", connections(&conns));
    let options = tokenwarden::app::Options {
        hyper_only,
        ..Default::default()
    };
    let sidecar = Sidecar::start_in(tempfile::tempdir().unwrap(), &yaml, options).await;
    let mut bodies = Vec::new();
    for (key, status, kind) in [
        ("refused", 502, "connect"),
        ("closing", 502, "closed"),
        ("resetting", 502, "closed"),
        ("malformed", 502, "malformed"),
        ("silent", 504, "timeout"),
    ] {
        sidecar.wait_state(key, "ready").await;
        let (got, body) = sidecar.get(&format!("/{key}/x")).await;
        assert_eq!(got, status, "hyper_only {hyper_only}, {key}: {body}");
        // (Each run's refused port differs.)
        let mut body = body;
        if let Some(message) = body["message"].as_str() {
            body["message"] = message.replace(&refused.port().to_string(), "PORT").into();
        }
        bodies.push(body);
        let metrics = sidecar.metrics().await;
        let errors = |k: &str| {
            value(
                &metrics,
                &format!("tokenwarden_upstream_errors_total{{connection=\"{key}\",kind=\"{k}\"}}"),
            )
        };
        assert_eq!(
            errors(kind),
            1.0,
            "hyper_only {hyper_only}, {key}: kind {kind}\n{metrics}"
        );
        let others: f64 = ["connect", "tls", "timeout", "closed", "malformed"]
            .iter()
            .filter(|k| **k != kind)
            .map(|k| errors(k))
            .sum();
        assert_eq!(others, 0.0, "{key}: only {kind}\n{metrics}");
        // The proxy's own answer counts as the routed connection's 5xx.
        assert_eq!(durations(&metrics, key, "5xx"), Some(1.0), "{key}");
    }
    bodies
}

#[tokio::test]
async fn a_no_token_refusal_is_counted_with_its_state_and_the_failed_token_request() {
    let tokens = TokenServer::start(Reply::OAuthError {
        status: 401,
        code: "invalid_client",
    })
    .await;
    let echo = Echo::start().await;
    let sidecar = cc_sidecar("api", echo.addr, tokens.addr).await;
    sidecar.wait_state("api", "failed").await;
    let (status, body) = sidecar.get("/api/x").await;
    assert_eq!(
        (status, &body["state"]),
        (503, &serde_json::json!("failed"))
    );
    let metrics = sidecar.metrics().await;
    let no_token = |state: &str| {
        value(
            &metrics,
            &format!("tokenwarden_no_token_total{{connection=\"api\",state=\"{state}\"}}"),
        )
    };
    assert_eq!(no_token("failed"), 1.0);
    assert_eq!(no_token("pending"), 0.0);
    assert_eq!(durations(&metrics, "api", "5xx").unwrap(), 1.0);
    // The token request: counted and timed as an error, as many as tokens saw.
    let timed = count(
        &metrics,
        "tokenwarden_token_request_duration_seconds",
        "connection=\"api\",outcome=\"error\"",
    );
    assert_eq!(timed, tokens.count() as f64);
    assert_eq!(
        value(
            &metrics,
            "tokenwarden_token_requests_total{connection=\"api\",outcome=\"error\"}"
        ),
        timed
    );
    assert_eq!(
        count(
            &metrics,
            "tokenwarden_token_request_duration_seconds",
            "connection=\"api\",outcome=\"ok\""
        ),
        0.0
    );
}

#[tokio::test]
async fn a_token_request_that_succeeds_is_timed_as_ok() {
    let (tokens, _echo, sidecar) = setup(token(3600), "").await;
    sidecar.wait_state("api", "ready").await;
    let metrics = sidecar.metrics().await;
    let labels = "connection=\"api\",outcome=\"ok\"";
    assert_eq!(tokens.count(), 1);
    assert_eq!(
        count(
            &metrics,
            "tokenwarden_token_request_duration_seconds",
            labels
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("tokenwarden_token_requests_total{{{labels}}}")
        ),
        1.0
    );
}

#[tokio::test]
async fn open_client_connections_rise_while_one_is_open_and_fall_after() {
    let (_tokens, _echo, sidecar) = setup(token(3600), "").await;
    sidecar.wait_state("api", "ready").await;
    let open = |side: &'static str| {
        let sidecar = &sidecar;
        async move {
            let series = format!("tokenwarden_open_connections{{side=\"{side}\"}}");
            value(&sidecar.metrics().await, &series)
        }
    };
    assert_eq!(open("client").await, 0.0);
    let mut app = raw::connect(sidecar.proxy).await;
    raw::write(&mut app, "GET /api/kept HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(raw::read_response(&mut app).await.status, 200);
    assert_eq!(open("client").await, 1.0, "the kept-alive app connection");
    assert!(
        open("upstream").await >= 1.0,
        "its pooled upstream connection"
    );
    drop(app);
    wait_until("the closed app connection is no longer counted", || async {
        open("client").await == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_reload_that_adds_a_connection_adds_its_series() {
    let (tokens, echo, sidecar) = setup(token(3600), "").await;
    sidecar.wait_state("api", "ready").await;
    let conns = [
        cc_conn("api", echo.addr, tokens.addr),
        cc_conn("more", echo.addr, tokens.addr),
    ];
    std::fs::write(sidecar.config_path(), connections(&conns)).unwrap();
    let r = client()
        .post(sidecar.admin_url("/api/v1/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sidecar.wait_state("more", "ready").await;
    assert_eq!(sidecar.get("/more/x").await.0, 200);
    let metrics = sidecar.metrics().await;
    assert_eq!(durations(&metrics, "more", "2xx").unwrap(), 1.0);
    assert_eq!(
        value(
            &metrics,
            "tokenwarden_connection_state{connection=\"more\",state=\"ready\"}"
        ),
        1.0
    );
}
