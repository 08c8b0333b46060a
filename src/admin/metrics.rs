//! `/metrics` in the Prometheus text format. Labels are connection keys and fixed words;
//! never a token, secret or URL.

use super::AdminBody;
use crate::registry::{Entry, Registry};
use crate::token::set::unix_seconds;
use crate::token::store::Backend;
use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;
use std::fmt::Write as _;

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

/// A family's samples: the label set (`{…}` or empty) and the value.
type Samples = Vec<(String, u64)>;

pub fn render(
    registry: &Registry,
    backend: &Backend,
    pending_states: usize,
) -> Response<AdminBody> {
    let mut out = String::new();
    // Each family: HELP and TYPE, then all its samples (the text format wants them grouped).
    let mut family = |name: &str, kind: &str, help: &str, samples: Samples| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let each = |f: &dyn Fn(&Entry, &str) -> Samples| -> Samples {
        registry
            .connections
            .iter()
            .flat_map(|c| f(c, &c.conn.key))
            .collect()
    };
    family(
        "tokenwarden_connection_state",
        "gauge",
        "1 for the connection's current state.",
        each(&|c, k| {
            let now = c.tokens.state_name();
            STATES
                .iter()
                .map(|s| {
                    (
                        format!("{{connection=\"{k}\",state=\"{s}\"}}"),
                        u64::from(*s == now),
                    )
                })
                .collect()
        }),
    );
    family(
        "tokenwarden_token_expires_at_seconds",
        "gauge",
        "Unix time the current token expires (absent: none or long-lived).",
        each(&|c, k| {
            c.tokens
                .token()
                .and_then(|t| t.expires_at)
                .map(|at| (format!("{{connection=\"{k}\"}}"), unix_seconds(Some(at))))
                .into_iter()
                .collect()
        }),
    );
    family(
        "tokenwarden_token_requests_total",
        "counter",
        "Token requests by outcome.",
        each(&|c, k| {
            vec![
                (
                    format!("{{connection=\"{k}\",outcome=\"ok\"}}"),
                    c.tokens.counters.ok.get(),
                ),
                (
                    format!("{{connection=\"{k}\",outcome=\"error\"}}"),
                    c.tokens.counters.failed.get(),
                ),
            ]
        }),
    );
    family(
        "tokenwarden_tokens_adopted_total",
        "counter",
        "Token sets taken from the shared store (written by another replica).",
        each(&|c, k| {
            vec![(
                format!("{{connection=\"{k}\"}}"),
                c.tokens.counters.adopted.get(),
            )]
        }),
    );
    family(
        "tokenwarden_proxied_requests_total",
        "counter",
        "Requests forwarded with a credential.",
        each(&|c, k| vec![(format!("{{connection=\"{k}\"}}"), c.counters.proxied.get())]),
    );
    family(
        "tokenwarden_no_token_total",
        "counter",
        "Requests refused with 503 for want of a usable token.",
        each(&|c, k| vec![(format!("{{connection=\"{k}\"}}"), c.counters.no_token.get())]),
    );
    family(
        "tokenwarden_unauthorized_refreshes_total",
        "counter",
        "Upstream 401s to requests that carried a token, by what came of them.",
        each(&|c, k| {
            crate::proxy::unauthorized::Outcome::ALL
                .iter()
                .map(|&o| {
                    (
                        format!("{{connection=\"{k}\",outcome=\"{}\"}}", o.as_str()),
                        c.counters.unauthorized.get(o),
                    )
                })
                .collect()
        }),
    );
    // With Redis the states live there (bounded by their TTL): this process cannot count them.
    if matches!(backend, Backend::Local(_)) {
        family(
            "tokenwarden_pending_authorizations",
            "gauge",
            "Authorization states waiting for their callback.",
            vec![(String::new(), pending_states as u64)],
        );
    }
    let (name, up, _) = backend.health();
    family(
        "tokenwarden_store_up",
        "gauge",
        "1 while the token store answers (always 1 for the file store).",
        vec![(format!("{{backend=\"{name}\"}}"), u64::from(up))],
    );
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
