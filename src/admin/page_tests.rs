use super::*;
use serde_json::json;

/// 2026-12-02 16:50:47 UTC.
const NOW: u64 = 1_796_230_247;

fn connection(key: &str, strategy: &str, state: &str) -> Value {
    json!({
        "key": key, "name": key, "strategy": strategy, "upstream": "https://api.example",
        "state": state, "has_token": state == "ready", "has_refresh_token": false,
        "expires_at": null, "last_refresh": null, "last_error": null,
        "consecutive_failures": 0,
        "store": {"backend": "sqlite", "state": "ok", "last_error": null},
    })
}

fn view(connections: Vec<Value>, may_authorize: bool) -> View {
    View {
        total: connections.len(),
        connections,
        page: 1,
        store: json!({"backend": "sqlite", "state": "ok", "last_error": null}),
        may_authorize,
        now: NOW,
    }
}

/// The `<tr>` of connection `key`.
fn row_of<'a>(html: &'a str, key: &str) -> &'a str {
    let start = html
        .find(&format!("<tr id=\"connection-{key}\""))
        .unwrap_or_else(|| panic!("no row for {key}: {html}"));
    let end = start + html[start..].find("</tr>").unwrap();
    &html[start..end]
}

#[test]
fn dates_are_utc_civil_dates() {
    assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(time(NOW), "2026-12-02 16:50:47 UTC");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(time(4_107_542_399), "2100-02-28 23:59:59 UTC");
    assert_eq!(time(4_107_542_400), "2100-03-01 00:00:00 UTC");
}

#[test]
fn spans_use_the_largest_unit_held_twice() {
    assert_eq!(span(59), "59 s");
    assert_eq!(span(119), "119 s");
    assert_eq!(span(120), "2 min");
    assert_eq!(span(3 * HOUR), "3 h");
    assert_eq!(span(3 * DAY), "3 days");
}

#[test]
fn every_state_is_shown_with_its_badge() {
    let states = [
        ("pending", "warn"),
        ("ready", "ok"),
        ("expired", "bad"),
        ("failed", "bad"),
        ("needs_authorization", "warn"),
        ("needs_reauthorization", "bad"),
        ("static", "ok"),
    ];
    let conns = states
        .iter()
        .map(|(s, _)| connection(s, "oauth2_client_credentials", s))
        .collect();
    let html = html(&view(conns, true));
    for (state, class) in states {
        let row = row_of(&html, state);
        assert!(row.contains(&format!("data-state=\"{state}\"")), "{row}");
        assert!(
            row.contains(&format!("<span class=\"state {class}\">{state}</span>")),
            "{row}"
        );
    }
}

#[test]
fn times_errors_and_the_store_are_shown() {
    let mut c = connection("crm", "oauth2_authorization_code", "ready");
    c["expires_at"] = json!(NOW + 59);
    c["last_refresh"] = json!(NOW - 3 * MINUTE);
    c["last_error"] = json!("connection `crm`: token endpoint answered HTTP 503");
    c["consecutive_failures"] = json!(2);
    let mut v = view(vec![c], true);
    v.store = json!({"backend": "redis", "state": "degraded", "last_error": "connection refused"});
    let html = html(&v);
    let row = row_of(&html, "crm");
    assert!(
        row.contains("<time datetime=\"2026-12-02T16:51:46Z\">2026-12-02 16:51:46 UTC</time> <small>(in 59 s)</small>"),
        "{row}"
    );
    assert!(row.contains("(3 min ago)"), "{row}");
    assert!(
        row.contains("token endpoint answered HTTP 503 <small>(2 in a row)</small>"),
        "{row}"
    );
    assert!(
        html.contains("<p id=\"store\" data-state=\"degraded\">Token store: <b>redis</b> <span class=\"state bad\">degraded</span> <span class=\"error\">connection refused</span></p>"),
        "{html}"
    );
}

#[test]
fn absent_times_say_so() {
    let html = html(&view(
        vec![connection("api", "oauth2_client_credentials", "pending")],
        true,
    ));
    let row = row_of(&html, "api");
    assert!(row.contains("<td>—</td><td>never</td><td></td>"), "{row}");
}

#[test]
fn everything_is_escaped() {
    let mut c = connection("a<b>", "oauth2_authorization_code", "failed\"><script>");
    c["name"] = json!("<script>alert('name')</script>");
    c["upstream"] = json!("https://x/<i>");
    c["last_error"] = json!("returned OAuth error `invalid_client` (<img src=x onerror=alert(1)>)");
    let mut v = view(vec![c], true);
    v.store = json!({"backend": "file<", "state": "ok", "last_error": "<b>"});
    let html = html(&v);
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<i>"), "{html}");
    assert!(
        html.contains("<span class=\"error\">&lt;b&gt;</span>"),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;"));
    assert!(html.contains("(&lt;img src=x onerror=alert(1)&gt;)"));
    assert!(html.contains("data-state=\"failed&quot;&gt;&lt;script&gt;\""));
    assert!(html.contains("href=\"/api/v1/connection/a%3Cb%3E/authorize?format=redirect\""));
    assert!(html.contains("<b>file&lt;</b>"));
}

#[test]
fn the_authorize_button_is_for_authorization_code_and_trusted_callers() {
    let conns = vec![
        connection("crm", "oauth2_authorization_code", "needs_authorization"),
        connection("billing", "oauth2_client_credentials", "ready"),
        connection("static", "static_header", "static"),
    ];
    let html_trusted = html(&view(conns.clone(), true));
    assert!(row_of(&html_trusted, "crm").contains(
        "<a class=\"button\" href=\"/api/v1/connection/crm/authorize?format=redirect\">Authorize</a>"
    ));
    assert!(!row_of(&html_trusted, "billing").contains("Authorize"));
    assert!(!row_of(&html_trusted, "static").contains("Authorize"));
    assert!(!html_trusted.contains("Authorizing is open to"));

    for state in ["ready", "expired", "needs_reauthorization"] {
        let row = html(&view(
            vec![connection("crm", "oauth2_authorization_code", state)],
            true,
        ));
        assert!(
            row_of(&row, "crm").contains("authorize?format=redirect\">Re-authorize</a>"),
            "{state}: {row}"
        );
    }

    let html_untrusted = html(&view(conns, false));
    assert!(!html_untrusted.contains("href=\"/api/v1/connection/crm/authorize"));
    assert!(row_of(&html_untrusted, "crm").contains("Authorize from loopback"));
    assert!(html_untrusted.contains("Authorizing is open to loopback callers"));
}

#[test]
fn the_page_holds_no_script_and_its_style_matches_the_policy() {
    let html = html(&view(
        vec![connection("crm", "oauth2_authorization_code", "ready")],
        true,
    ));
    assert!(!html.contains("<script"));
    let handler = html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(0);
        name_len > 0 && rest[name_len..].starts_with('=')
    });
    assert!(!handler, "no event-handler attribute: {html}");
    let style = html
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(s, _)| s)
        .unwrap();
    let hash = STANDARD.encode(Sha256::digest(style.as_bytes()));
    let csp = CSP.to_str().unwrap();
    assert!(csp.contains(&format!("style-src 'sha256-{hash}'")), "{csp}");
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
}

#[test]
fn many_connections_are_paged_with_links_either_way() {
    let rows = (0..PAGE_ROWS)
        .map(|i| connection(&format!("c{i}"), "oauth2_client_credentials", "ready"))
        .collect();
    let mut middle = view(rows, true);
    middle.page = 2;
    middle.total = 2 * PAGE_ROWS + 50;
    let html = html(&middle);
    assert!(html.contains("Connections 101–200 of 250."), "{html}");
    assert!(html.contains("<a href=\"/?page=1\">Previous</a>"), "{html}");
    assert!(html.contains("<a href=\"/?page=3\">Next</a>"), "{html}");
    let one = html_of_one_page();
    assert!(
        !one.contains("id=\"pages\""),
        "a single page has no page links"
    );
}

fn html_of_one_page() -> String {
    html(&view(
        vec![connection("a", "oauth2_client_credentials", "ready")],
        true,
    ))
}
