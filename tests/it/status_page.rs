//! The status page (`GET /` on the admin listener) against the real sidecar: every
//! connection in its state, escaped errors, security headers, never a token or secret; and
//! its Authorize button — the authorize route with `?format=redirect` — under the same
//! access rule as `/authorize`. `browser.rs` takes the same page in a real browser.

use crate::support::authz::{query, redeem};
use crate::support::*;

const STORE_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
/// The static bearer connection's credential: must never reach the page.
const STATIC_TOKEN: &str = "st4tic-CREDENTIAL";
/// An error description with markup, as a hostile or sloppy provider might send.
const HOSTILE_DESCRIPTION: &str = "<img src=x onerror=alert(1)>";
/// The admin token of the sidecar in the access-rule test.
const ADMIN_TOKEN: &str = "let-me-in";

fn store() -> String {
    format!("store: {{ path: tokens.db, key: \"{STORE_KEY}\" }}\n")
}

/// GETs `path` on the admin listener with extra `headers` (no redirect following).
async fn admin_get(sc: &Sidecar, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(sc.admin_url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// The status page as text, checking the response headers every page must carry.
async fn page(sc: &Sidecar, headers: &[(&str, &str)]) -> String {
    let r = admin_get(sc, "/", headers).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    let csp = header("content-security-policy");
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-")
            && csp.contains("form-action 'none'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("script-src")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    r.text().await.unwrap()
}

/// The `<tr>` of connection `key` on the page.
fn row<'a>(html: &'a str, key: &str) -> &'a str {
    let start = html
        .find(&format!("<tr id=\"connection-{key}\""))
        .unwrap_or_else(|| panic!("no row for {key}:\n{html}"));
    let end = start + html[start..].find("</tr>").unwrap();
    &html[start..end]
}

fn authorize_link(key: &str) -> String {
    format!("href=\"/api/v1/connection/{key}/authorize?format=redirect\"")
}

#[tokio::test]
async fn the_page_lists_every_connection_in_its_state_and_never_a_token() {
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let refusing = TokenServer::start(Reply::Raw(
        r#"{"error":"invalid_client","error_description":"<img src=x onerror=alert(1)>"}"#,
    ))
    .await;
    let echo = Echo::start().await;
    let yaml = format!(
        "{}{}",
        store(),
        connections(&[
            cc_conn("billing", echo.addr, tokens.addr),
            cc_conn("refused", echo.addr, refusing.addr),
            fixture_authcode("crm", echo.addr, Some(tokens.addr), true),
            fixture_authcode("crm-new", echo.addr, Some(tokens.addr), true),
            Conn::new("legacy", echo.addr, "bearer")
                .secrets(&format!("token: {STATIC_TOKEN}"))
                .configure("          token: \"<token>\"\n"),
        ])
    );
    let sc = Sidecar::start(&yaml).await;
    sc.wait_state("billing", "ready").await;
    sc.wait_state("refused", "failed").await;
    crate::support::authz::authorize_with(&sc, "crm", "the-code").await;
    sc.wait_state("crm", "ready").await;

    let html = page(&sc, &[]).await;
    for (key, state, strategy) in [
        ("billing", "ready", "oauth2_client_credentials"),
        ("refused", "failed", "oauth2_client_credentials"),
        ("crm", "ready", "oauth2_authorization_code"),
        (
            "crm-new",
            "needs_authorization",
            "oauth2_authorization_code",
        ),
        ("legacy", "static", "static_header"),
    ] {
        let r = row(&html, key);
        assert!(r.contains(&format!("data-state=\"{state}\"")), "{r}");
        assert!(r.contains(&format!("<td>{strategy}</td>")), "{r}");
    }
    // Token expiry and last refresh of the held tokens; none for the others.
    for key in ["billing", "crm"] {
        let r = row(&html, key);
        assert!(
            r.contains("(in 59 min)") || r.contains("(in 60 min)"),
            "{r}"
        );
        assert!(r.contains(" s ago)</small>"), "{r}");
    }
    assert!(row(&html, "crm-new").contains("<td>—</td><td>never</td>"));
    // The provider's error, escaped.
    let refused = row(&html, "refused");
    assert!(
        refused
            .contains("returned OAuth error `invalid_client` (&lt;img src=x onerror=alert(1)&gt;)"),
        "{refused}"
    );
    assert!(!html.contains(HOSTILE_DESCRIPTION), "{html}");
    assert!(html.contains("<p id=\"store\" data-state=\"ok\">Token store: <b>sqlite</b>"));
    // Authorize buttons for authorization-code connections only.
    assert!(row(&html, "crm").contains(&authorize_link("crm")));
    assert!(row(&html, "crm-new").contains(&authorize_link("crm-new")));
    for key in ["billing", "refused", "legacy"] {
        assert!(!row(&html, key).contains("authorize"), "{key}");
    }
    // Never a token, refresh token or secret (the token server issues tok-N and ref-N).
    assert!(tokens.count() >= 2, "billing and crm both got a token");
    for secret in ["tok-", "ref-", STATIC_TOKEN, CLIENT_SECRET, "the-code"] {
        assert!(!html.contains(secret), "{secret} on the page:\n{html}");
    }
    // HEAD answers the same headers without a body.
    let head = client().head(sc.admin_url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_authorize_button_redirects_to_the_provider_under_the_authorize_rule() {
    let tokens = TokenServer::start(Reply::token(3600, true)).await;
    let echo = Echo::start().await;
    let yaml = format!(
        "admin:\n  token: {ADMIN_TOKEN}\n{}{}",
        store(),
        connections(&[
            fixture_authcode("crm", echo.addr, Some(tokens.addr), true).field("pkce: true"),
            cc_conn("billing", echo.addr, tokens.addr),
        ])
    );
    let sc = Sidecar::start(&yaml).await;
    sc.wait_state("billing", "ready").await;
    let button = "/api/v1/connection/crm/authorize?format=redirect";

    // Refused the way /authorize refuses: a wrong admin token (even on loopback), and a
    // request a browser marks as started by another site. Neither mints a state.
    let wrong = admin_get(&sc, button, &[("authorization", "Bearer wrong")]).await;
    assert_eq!(wrong.status(), 401);
    let bare = admin_get(
        &sc,
        "/api/v1/connection/crm/authorize",
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(bare.status(), 401, "the same rule as the JSON answer");
    for site in ["cross-site", "same-site"] {
        let r = admin_get(&sc, button, &[("sec-fetch-site", site)]).await;
        assert_eq!(r.status(), 403, "{site}");
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"], "cross_site");
    }
    let metrics = sc.metrics().await;
    assert!(
        metrics.contains("tokenwarden_pending_authorizations 0"),
        "{metrics}"
    );
    // A caller the rule does not trust sees no button.
    let html = page(&sc, &[("authorization", "Bearer wrong")]).await;
    assert!(!html.contains(&authorize_link("crm")), "{html}");
    assert!(row(&html, "crm").contains("Authorize from loopback"));

    assert_eq!(sc.status("crm").await["state"], "needs_authorization");
    // Trusted (loopback, the page's own origin, or with the admin token): 303 to the
    // provider with a fresh state and the PKCE challenge.
    for headers in [
        vec![("sec-fetch-site", "same-origin")],
        vec![("authorization", "Bearer let-me-in")],
    ] {
        let r = admin_get(&sc, button, &headers).await;
        assert_eq!(r.status(), 303, "{headers:?}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["referrer-policy"], "no-referrer");
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&format!(
                "http://{}/auth/authorize?client_id=client&",
                echo.addr
            )),
            "{location}"
        );
        let url = reqwest::Url::parse(&location).unwrap();
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
        let state = param("state").unwrap();
        let exchanges = tokens.count();
        let done = redeem(&sc, "browser-code", &state).await;
        assert_eq!(done.status, 200, "{}", done.body);
        assert_eq!(tokens.count(), exchanges + 1, "the code was exchanged");
        sc.wait_state("crm", "ready").await;
    }
    // The redirect is for authorization-code connections only.
    let cc = admin_get(
        &sc,
        "/api/v1/connection/billing/authorize?format=redirect",
        &[],
    )
    .await;
    assert_eq!(cc.status(), 422);
    let unknown = admin_get(
        &sc,
        &format!(
            "/api/v1/connection/nope/authorize?{}",
            query(&[("format", "redirect")])
        ),
        &[],
    )
    .await;
    assert_eq!(unknown.status(), 404);
}
