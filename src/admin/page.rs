//! `GET /`: the status page, for an operator's browser. One server-rendered HTML document
//! (no script, no external asset) with the token store's health and a row per connection —
//! strategy, state, token expiry, last refresh, last error — drawn from the same status
//! documents as `/api/v1/connections`, so it never holds a token value either.
//!
//! Authorization-code connections get an "Authorize" button ("Re-authorize" once a grant is
//! held or was lost): a link to
//! `/api/v1/connection/{key}/authorize?format=redirect`, the authorize route itself, which
//! mints the state and answers `303 See Other` to the provider. The button is shown only to
//! callers that route trusts (loopback, e.g. through `kubectl port-forward`, or the admin
//! token); others see how to get there.
//!
//! Every value is HTML-escaped. The Content-Security-Policy allows nothing but the page's
//! own `<style>` (by its hash): no script, image, font, frame, form or base URL.

use super::access::trusted;
use super::oauth::{escape, with_security_headers};
use super::status::{describe, store};
use super::{Admin, AdminBody};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The page's only style sheet, allowed by its hash in [`CSP`].
const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f4f4f4}small{color:#666}\
.state{font-weight:600;padding:.1rem .4rem;border-radius:.25rem}\
.ok{background:#dff3e0;color:#17602a}.warn{background:#fff1cc;color:#7a5200}\
.bad{background:#fbdcdc;color:#8a1c1c}\
.error{font-family:ui-monospace,monospace;font-size:13px;max-width:32rem;overflow-wrap:anywhere}\
a.button{display:inline-block;padding:.3rem .8rem;border-radius:.25rem;background:#1f5fbf;color:#fff;text-decoration:none}";

/// Nothing but [`STYLE`]: no script, no external asset, no form, not framed.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    HeaderValue::try_from(format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ))
    .expect("a base64 hash is a valid header value")
});

/// Connections per page of the status page (`/?page=N`).
pub(crate) const PAGE_ROWS: usize = 100;

/// What the page shows: one page of the status documents (`page`, from 1, of `total`
/// connections), the store's health, whether the caller may start an authorization, and
/// the time it is rendered at (Unix seconds).
pub(crate) struct View {
    pub(crate) connections: Vec<Value>,
    pub(crate) page: usize,
    pub(crate) total: usize,
    pub(crate) store: Value,
    pub(crate) may_authorize: bool,
    pub(crate) now: u64,
}

/// `GET /` (`?page=N` for the Nth hundred connections): the page for this caller.
pub(crate) async fn render(
    admin: &Admin,
    headers: &HeaderMap,
    peer: SocketAddr,
    query: Option<&str>,
) -> Response<AdminBody> {
    let page = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "page")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let registry = admin.registry.load_full();
    let mut connections = Vec::new();
    for c in registry.page((page - 1) * PAGE_ROWS, PAGE_ROWS) {
        connections.push(describe(c, &admin.backend).await);
    }
    let view = View {
        connections,
        page,
        total: registry.len(),
        store: store(&admin.backend),
        may_authorize: trusted(
            admin.settings.token.as_ref(),
            &admin.settings.trusted_proxies,
            headers,
            peer,
        ),
        now: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let mut r = with_security_headers(Response::new(Full::new(Bytes::from(html(&view)))));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    r
}

/// The document. Each connection is a `<tr id="connection-{key}" data-state="{state}">`.
pub(crate) fn html(view: &View) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>tokenwarden status</title><style>{STYLE}</style></head><body>\n\
<h1>tokenwarden</h1>\n"
    );
    store_line(&mut out, &view.store);
    out.push_str(
        "<table><thead><tr><th>Connection</th><th>Strategy</th><th>State</th>\
<th>Token expires</th><th>Last refresh</th><th>Last error</th><th></th></tr></thead><tbody>\n",
    );
    for c in &view.connections {
        row(&mut out, c, view);
    }
    out.push_str("</tbody></table>\n");
    pages(&mut out, view);
    if !view.may_authorize {
        out.push_str(
            "<p><small>Authorizing is open to loopback callers (for example through \
<code>kubectl port-forward</code>) or to callers with the admin token.</small></p>\n",
        );
    }
    let _ = writeln!(
        out,
        "<p><small>Rendered {}. The same as JSON: <a href=\"/api/v1/connections\">/api/v1/connections</a>.</small></p>\n</body></html>",
        time(view.now)
    );
    out
}

/// "Connections 101–200 of 10000", with links to the pages before and after, when there
/// is more than one page.
fn pages(out: &mut String, view: &View) {
    if view.total <= PAGE_ROWS && view.page == 1 {
        return;
    }
    let first = (view.page - 1) * PAGE_ROWS;
    let last = first + view.connections.len();
    let _ = write!(
        out,
        "<p id=\"pages\">Connections {}–{last} of {}.",
        (first + 1).min(last.max(1)),
        view.total
    );
    if view.page > 1 {
        let _ = write!(out, " <a href=\"/?page={}\">Previous</a>", view.page - 1);
    }
    if last < view.total {
        let _ = write!(out, " <a href=\"/?page={}\">Next</a>", view.page + 1);
    }
    out.push_str("</p>\n");
}

fn store_line(out: &mut String, store: &Value) {
    let state = text(&store["state"]);
    let _ = write!(
        out,
        "<p id=\"store\" data-state=\"{s}\">Token store: <b>{b}</b> <span class=\"state {c}\">{s}</span>",
        b = escape(text(&store["backend"])),
        s = escape(state),
        c = if state == "ok" { "ok" } else { "bad" },
    );
    if let Some(e) = store["last_error"].as_str() {
        let _ = write!(out, " <span class=\"error\">{}</span>", escape(e));
    }
    out.push_str("</p>\n");
}

fn row(out: &mut String, c: &Value, view: &View) {
    let key = text(&c["key"]);
    let state = text(&c["state"]);
    let name = text(&c["name"]);
    let _ = write!(
        out,
        "<tr id=\"connection-{k}\" data-state=\"{s}\"><td><b>{k}</b>",
        k = escape(key),
        s = escape(state),
    );
    if name != key {
        let _ = write!(out, " <small>{}</small>", escape(name));
    }
    let _ = write!(
        out,
        "<br><small>{}</small></td><td>{}</td><td><span class=\"state {}\">{}</span>",
        escape(text(&c["upstream"])),
        escape(text(&c["strategy"])),
        state_class(state),
        escape(state),
    );
    if let Some(grants) = c.get("grants") {
        user_grants(out, grants);
    }
    out.push_str("</td>");
    let _ = write!(
        out,
        "<td>{}</td><td>{}</td>",
        when(&c["expires_at"], view.now, "—"),
        when(&c["last_refresh"], view.now, "never"),
    );
    match c["last_error"].as_str() {
        Some(e) => {
            let _ = write!(out, "<td class=\"error\">{}", escape(e));
            if let Some(n) = c["consecutive_failures"].as_u64().filter(|n| *n > 0) {
                let _ = write!(out, " <small>({n} in a row)</small>");
            }
            out.push_str("</td>");
        }
        None => out.push_str("<td></td>"),
    }
    out.push_str("<td>");
    if c.get("grants").is_some() {
        // Each user authorizes their own grant, through the app that names them.
        out.push_str("<small>Authorized per user (<code>authorize?subject=</code>)</small>");
    } else if c["strategy"] == "oauth2_authorization_code" {
        if view.may_authorize {
            // A connection that holds (or held) a grant is authorized again, as someone else
            // or after a revocation: the button says so.
            let label = if state == "needs_authorization" {
                "Authorize"
            } else {
                "Re-authorize"
            };
            let _ = write!(
                out,
                "<a class=\"button\" href=\"/api/v1/connection/{}/authorize?format=redirect\">{label}</a>",
                escape(&encode_segment(key)),
            );
        } else {
            out.push_str("<small>Authorize from loopback</small>");
        }
    }
    out.push_str("</td></tr>\n");
}

/// The grants of a per-user connection, under its state: how many are stored (and
/// expired), and how many this process holds.
fn user_grants(out: &mut String, grants: &Value) {
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let in_memory: u64 =
        (grants["in_memory"].as_object()).map_or(0, |states| states.values().map(count).sum());
    let stored = &grants["stored"];
    if stored.is_object() {
        let _ = write!(
            out,
            "<br><small>{} grants, {} expired; {in_memory} in memory</small>",
            count(&stored["total"]),
            count(&stored["expired"]),
        );
    } else {
        let _ = write!(out, "<br><small>{in_memory} grants in memory</small>");
    }
}

/// A string field, or "" when it is absent or not a string.
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The style of a state badge: usable, waiting, or needing the operator.
fn state_class(state: &str) -> &'static str {
    match state {
        "ready" | "static" | "per_user" => "ok",
        "failed" | "needs_reauthorization" | "expired" => "bad",
        _ => "warn",
    }
}

/// Percent-encodes a path segment (connection keys are already URL-safe; this keeps the
/// link right whatever a key holds).
fn encode_segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A Unix-seconds field as a `<time>` with its distance from `now`, or `absent`.
fn when(v: &Value, now: u64, absent: &str) -> String {
    let Some(t) = v.as_u64() else {
        return absent.to_owned();
    };
    let distance = if t > now {
        format!("in {}", span(t - now))
    } else {
        format!("{} ago", span(now - t))
    };
    format!(
        "<time datetime=\"{}\">{}</time> <small>({distance})</small>",
        rfc3339(t),
        time(t)
    )
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
/// Below twice a unit, the next smaller unit is shown ("90 s", "100 min").
const UNIT_SWITCH: u64 = 2;

/// A duration in seconds, in the largest unit it holds twice.
fn span(secs: u64) -> String {
    if secs < UNIT_SWITCH * MINUTE {
        format!("{secs} s")
    } else if secs < UNIT_SWITCH * HOUR {
        format!("{} min", secs / MINUTE)
    } else if secs < UNIT_SWITCH * DAY {
        format!("{} h", secs / HOUR)
    } else {
        format!("{} days", secs / DAY)
    }
}

/// Unix seconds → (year, month, day, seconds into the day), proleptic Gregorian, UTC
/// (Howard Hinnant's `civil_from_days`; its constants are those of the 400-year cycle).
fn civil(secs: u64) -> (u64, u64, u64, u64) {
    const DAYS_FROM_0000_03_01_TO_EPOCH: u64 = 719_468;
    const DAYS_PER_ERA: u64 = 146_097;
    let z = secs / DAY + DAYS_FROM_0000_03_01_TO_EPOCH;
    let era = z / DAYS_PER_ERA;
    let doe = z % DAYS_PER_ERA;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day, secs % DAY)
}

/// `2026-12-02 16:50:47 UTC`.
fn time(secs: u64) -> String {
    stamp(secs, ' ', " UTC")
}

/// `2026-12-02T16:50:47Z`.
fn rfc3339(secs: u64) -> String {
    stamp(secs, 'T', "Z")
}

/// Date, `between`, time of day, `zone`.
fn stamp(secs: u64, between: char, zone: &str) -> String {
    let (y, mo, d, s) = civil(secs);
    format!(
        "{y:04}-{mo:02}-{d:02}{between}{:02}:{:02}:{:02}{zone}",
        s / HOUR,
        s % HOUR / MINUTE,
        s % MINUTE
    )
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
