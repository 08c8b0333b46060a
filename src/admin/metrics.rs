//! `/metrics` in the Prometheus text format. Labels are connection keys and fixed words;
//! never a token, secret or URL.

use super::AdminBody;
use crate::registry::Registry;
use crate::token::cache::Counters;
use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Every state a connection can report, so each gets a 0/1 series.
const STATES: [&str; 7] = [
    "pending",
    "ready",
    "expired",
    "failed",
    "needs_authorization",
    "needs_reauthorization",
    "static",
];

pub fn render(registry: &Registry, pending_states: usize) -> Response<AdminBody> {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        name.to_owned()
    };
    let mut lines = Vec::new();
    let state = family(
        "tokenwarden_connection_state",
        "gauge",
        "1 for the connection's current state.",
    );
    for c in &registry.connections {
        let now = c.state_name();
        for s in STATES {
            lines.push(format!(
                "{state}{{connection=\"{}\",state=\"{s}\"}} {}",
                c.conn.key,
                u8::from(s == now)
            ));
        }
    }
    let expiry = family(
        "tokenwarden_token_expires_at_seconds",
        "gauge",
        "Unix time the current token expires (absent: none or long-lived).",
    );
    for c in &registry.connections {
        if let Some(at) = c
            .token()
            .and_then(|t| t.expires_at)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        {
            lines.push(format!(
                "{expiry}{{connection=\"{}\"}} {}",
                c.conn.key,
                at.as_secs()
            ));
        }
    }
    let tokens = family(
        "tokenwarden_token_requests_total",
        "counter",
        "Token requests by outcome.",
    );
    let proxied = family(
        "tokenwarden_proxied_requests_total",
        "counter",
        "Requests forwarded with a credential.",
    );
    let refused = family(
        "tokenwarden_no_token_total",
        "counter",
        "Requests refused with 503 for want of a usable token.",
    );
    for c in &registry.connections {
        let k = &c.conn.key;
        let n = &c.counters;
        lines.push(format!(
            "{tokens}{{connection=\"{k}\",outcome=\"ok\"}} {}",
            Counters::get(&n.token_ok)
        ));
        lines.push(format!(
            "{tokens}{{connection=\"{k}\",outcome=\"error\"}} {}",
            Counters::get(&n.token_failed)
        ));
        lines.push(format!(
            "{proxied}{{connection=\"{k}\"}} {}",
            Counters::get(&n.proxied)
        ));
        lines.push(format!(
            "{refused}{{connection=\"{k}\"}} {}",
            Counters::get(&n.no_token)
        ));
    }
    let pending = family(
        "tokenwarden_pending_authorizations",
        "gauge",
        "Authorization states waiting for their callback.",
    );
    lines.push(format!("{pending} {pending_states}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let _ = now;
    // HELP/TYPE headers first, then the samples (Prometheus accepts either order per family).
    let mut text = out;
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
