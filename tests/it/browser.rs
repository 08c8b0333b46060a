//! The status page in a real browser: `tokenwarden demo` (the binary, with its built-in
//! authorization server whose login approves at once), and headless chromium taking the
//! page, following its Authorize button — tokenwarden's 303 to the demo's login, its 302
//! back to tokenwarden's callback — and the page again, now showing the connection ready.
//! The browser also enforces the page's Content-Security-Policy: a style it blocked would
//! show in its console.

use crate::support::browser::{self, Loaded};
use crate::support::demo::Demo;
use crate::support::wait_state_at;

/// The demo's authorization-code connection (and its client-credentials one).
const USER_CONNECTION: &str = "echo-user";
const CC_CONNECTION: &str = "echo";

/// The `data-state` of connection `key`'s row in the page's DOM.
fn state_of<'a>(dom: &'a str, key: &str) -> &'a str {
    let marker = format!("<tr id=\"connection-{key}\" data-state=\"");
    let (_, rest) = dom
        .split_once(&marker)
        .unwrap_or_else(|| panic!("no row for {key} in:\n{dom}"));
    rest.split('"').next().unwrap()
}

/// The href of the Authorize button in connection `key`'s row.
fn authorize_href(dom: &str, key: &str) -> String {
    let start = dom
        .find(&format!("<tr id=\"connection-{key}\""))
        .unwrap_or_else(|| panic!("no row for {key} in:\n{dom}"));
    let row = &dom[start..start + dom[start..].find("</tr>").unwrap()];
    let (_, after) = row
        .split_once("<a class=\"button\" href=\"")
        .unwrap_or_else(|| panic!("no Authorize button in {row}"));
    let (href, rest) = after.split_once('"').unwrap();
    assert!(rest.starts_with(">Authorize</a>"), "{row}");
    href.replace("&amp;", "&")
}

fn assert_no_csp_violation(page: &Loaded) {
    let violations = page.csp_violations();
    assert!(
        violations.is_empty(),
        "the browser blocked: {violations:#?}"
    );
}

#[tokio::test]
async fn chromium_follows_the_authorize_button_through_the_demo_login_to_ready() {
    browser::chromium(); // fail at once, with the install hint, when there is none
    let mut demo = Demo::start();
    wait_state_at(demo.admin, CC_CONNECTION, "ready").await;

    let before = browser::load(&demo.url("/")).await;
    assert_no_csp_violation(&before);
    assert!(
        before.dom.contains("<h1>tokenwarden</h1>"),
        "{}",
        before.dom
    );
    assert_eq!(state_of(&before.dom, CC_CONNECTION), "ready");
    assert_eq!(
        state_of(&before.dom, USER_CONNECTION),
        "needs_authorization"
    );
    let href = authorize_href(&before.dom, USER_CONNECTION);
    assert!(
        href.starts_with('/'),
        "a link on the admin listener: {href}"
    );

    // The button: tokenwarden → the demo's login (approves) → tokenwarden's callback.
    let authorized = browser::load(&demo.url(&href)).await;
    assert!(
        authorized
            .dom
            .contains(&format!("Connection {USER_CONNECTION} is authorized.")),
        "{}\n{}",
        authorized.dom,
        authorized.log
    );

    // The callback page links back to the status page, which now shows the grant.
    assert!(
        authorized
            .dom
            .contains("<a href=\"/\">Back to the status page</a>"),
        "{}",
        authorized.dom
    );
    wait_state_at(demo.admin, USER_CONNECTION, "ready").await;
    let after = browser::load(&demo.url("/")).await;
    assert_no_csp_violation(&after);
    assert_eq!(state_of(&after.dom, USER_CONNECTION), "ready");
    assert!(!after.dom.contains("demo-token-"), "never a token value");
    assert!(
        !after.dom.contains("demo-refresh-"),
        "never a refresh token"
    );
    assert!(demo.stop(), "the demo exits cleanly on SIGTERM");
}
