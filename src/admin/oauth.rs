//! The authorization-code routes: `authorize` (mint a state, build the URL Fides would
//! build, plus PKCE) and `callback` (redeem the state once, exchange the code once, store
//! the grant durably, wake the refresher).
//!
//! Trust model: only the operator may start an authorization, because whoever completes
//! it decides which account the sidecar acts as. `authorize` answers callers on loopback,
//! and others only with `Authorization: Bearer <admin.token>`; when an admin token is set, a
//! presented `Authorization` header must carry it, from loopback too. `callback` is open (the
//! provider's redirect lands in a browser), and is safe because it only redeems states
//! that `authorize` minted.

use super::{json, Admin, AdminBody};
use crate::config::{Auth, Grant, OAuth2};
use crate::oauth::flow::{self, Exchange};
use crate::oauth::pending::MintError;
use crate::oauth::{pkce, request};
use crate::refresher::persist::{self, Turn};
use crate::template::{encode_pairs, Lookup};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::net::SocketAddr;

/// How `authorize` answers the authorization URL (`?format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// A JSON string (the default, as Fides answers).
    Json,
    /// Plain text, for a shell (`open "$(curl -s …)"`).
    Text,
    /// `303 See Other` to the URL: the status page's Authorize button, in a browser.
    Redirect,
}

impl Format {
    fn of(query: Option<&str>) -> Format {
        let mut format = Format::Json;
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match (k.as_ref(), v.as_ref()) {
                ("format", "text") => format = Format::Text,
                ("format", "redirect") => format = Format::Redirect,
                _ => {}
            }
        }
        format
    }
}

/// `GET /api/v1/connection/{key}/authorize`: mints a state (and PKCE verifier) and answers
/// the authorization URL in the [`Format`] asked for. Trusted callers only; a request a
/// browser marks as coming from another site is refused too, so a page elsewhere cannot
/// start an authorization (or fill the pending states) through the operator's browser.
pub async fn authorize(
    admin: &Admin,
    key: &str,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    let state = match acting_on(admin, "authorize", key, req, peer) {
        Ok(entry) => entry,
        Err(refused) => return *refused,
    };
    let conn = &state.conn;
    let Some(oauth) = auth_code(&conn.auth) else {
        return json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"error": "not_authorization_code", "connection": key,
            "message": "the connection does not use OAuth2 Authorization Code authentication"}),
        );
    };
    let Some(template) = &oauth.authorization_request else {
        return json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"error": "no_authorization_request", "connection": key}),
        );
    };
    let verifier = conn.pkce.then(pkce::verifier);
    let challenge = verifier
        .as_ref()
        .map(|v| pkce::challenge(v.expose_secret()));
    let minted = match admin.pending.mint(key, verifier).await {
        Ok(s) => s,
        Err(e @ MintError::Full) => {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "too_many_pending", "message": e.to_string()}),
            )
        }
        Err(MintError::Store(e)) => {
            tracing::warn!(connection = %key, error = %e, "cannot store the authorization state");
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "store_unavailable", "message": "the shared token store does not answer; try again shortly"}),
            );
        }
    };
    let runtime = [("state", minted.as_str())];
    let lookup = Lookup {
        params: &conn.params,
        runtime: &runtime,
    };
    match request::authorization_url(&format!("{} OAuth2", conn.name), template, &lookup) {
        Ok(mut url) => {
            if let Some(c) = challenge {
                if !url.ends_with('?') {
                    url.push('&');
                }
                url.push_str(&encode_pairs([
                    ("code_challenge", c.as_str()),
                    ("code_challenge_method", "S256"),
                ]));
            }
            match Format::of(req.uri().query()) {
                Format::Json => json(StatusCode::OK, &json!(url)),
                Format::Text => text(url),
                Format::Redirect => match HeaderValue::try_from(url) {
                    Ok(location) => see_other(location),
                    Err(_) => {
                        let _ = admin.pending.take(&minted).await;
                        json(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": "bad_authorization_request",
                            "message": "the authorization URL is not a valid Location header"}),
                        )
                    }
                },
            }
        }
        Err(e) => {
            // No URL carries this state: withdraw it rather than let it hold a slot.
            let _ = admin.pending.take(&minted).await;
            json(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad_authorization_request", "message": e.to_string()}),
            )
        }
    }
}

/// A browser's `Sec-Fetch-Site` says another site started this request (`cross-site`, or
/// `same-site`: another port or subdomain of this host). Browsers send `same-origin` for the
/// status page's button and `none` for an address typed or opened directly; other clients
/// send nothing.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get(SEC_FETCH_SITE)
        .is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"))
}

/// The Fetch Metadata request header (not among `http`'s constants).
const SEC_FETCH_SITE: &str = "sec-fetch-site";

fn see_other(location: HeaderValue) -> Response<AdminBody> {
    let mut r = with_security_headers(Response::new(Full::default()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(header::LOCATION, location);
    r
}

fn text(body: String) -> Response<AdminBody> {
    let mut r = Response::new(Full::new(Bytes::from(body + "\n")));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Connection `key`, for a route that acts on it (`authorize`, `retry`): trusted callers
/// only (see [`trusted`]), and never a request a browser marks as started by another site
/// (so a page elsewhere cannot act through the operator's browser). Otherwise the 401, 403
/// or 404 to answer.
pub(super) fn acting_on(
    admin: &Admin,
    route: &str,
    key: &str,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<std::sync::Arc<crate::registry::Entry>, Box<Response<AdminBody>>> {
    if let Some(refused) = untrusted(admin, route, req, peer) {
        return Err(refused);
    }
    admin.registry.load().get(key).cloned().ok_or_else(|| {
        Box::new(json(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown_connection", "connection": key}),
        ))
    })
}

/// The 401 or 403 for a caller `route` must refuse (see [`acting_on`]); None: go ahead.
pub(super) fn untrusted(
    admin: &Admin,
    route: &str,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Option<Box<Response<AdminBody>>> {
    if !trusted(admin.settings.token.as_ref(), req.headers(), peer) {
        return Some(Box::new(json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "unauthorized",
            "message": format!("{route} is open to loopback callers, or to others with the admin token as a bearer token")}),
        )));
    }
    if cross_site(req.headers()) {
        return Some(Box::new(json(
            StatusCode::FORBIDDEN,
            &json!({"error": "cross_site",
            "message": format!("{route} refuses requests started by another site; use the status page or call this route directly")}),
        )));
    }
    None
}

fn auth_code(auth: &Auth) -> Option<&OAuth2> {
    match auth {
        Auth::OAuth2(o) if o.grant == Grant::AuthorizationCode => Some(o),
        _ => None,
    }
}

/// Loopback peers, or the admin token as a bearer token (compared in constant time). When
/// an admin token is configured, an `Authorization` header that is presented must carry it,
/// even from loopback (fail closed on a wrong or malformed one).
pub(super) fn trusted(
    expected: Option<&SecretString>,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> bool {
    if let (Some(expected), Some(given)) = (expected, headers.get(header::AUTHORIZATION)) {
        return given.to_str().ok().and_then(bearer).is_some_and(|given| {
            constant_time_eq(given.as_bytes(), expected.expose_secret().as_bytes())
        });
    }
    // `to_canonical`: a v4 peer on a dual-stack listener shows as ::ffff:127.0.0.1.
    peer.ip().to_canonical().is_loopback()
}

/// The credentials of a `Bearer` authorization (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn callback(admin: &Admin, query: &str) -> Response<AdminBody> {
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if params.iter().any(|(n, _)| *n == k) {
            return page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                &format!("The parameter {k} appears more than once."),
            );
        }
        params.push((k.into_owned(), v.into_owned()));
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(state) = get("state") else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "The callback has no state.",
        );
    };
    let pending = match admin.pending.take(state).await {
        Ok(Some(pending)) => pending,
        Ok(None) => return page(StatusCode::BAD_REQUEST, "Authorization failed",
            "This authorization link is unknown, expired or already used. Start again from the authorize route."),
        Err(e) => {
            tracing::warn!(error = %e, "cannot redeem the authorization state");
            return page(StatusCode::SERVICE_UNAVAILABLE, "Authorization failed",
                "The shared token store does not answer. Reload this page in a moment.");
        }
    };
    let Some(entry) = admin.registry.load().get(&pending.connection).cloned() else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "The connection no longer exists.",
        );
    };
    let key = &entry.conn.key;
    let cache = &entry.tokens;
    if let Some(error) = get("error") {
        let description = get("error_description")
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        tracing::warn!(connection = %key, error = %error, "the provider refused the authorization");
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization refused",
            &format!(
                "The provider refused the authorization of connection {key}: {error}{description}"
            ),
        );
    }
    let Some(code) = get("code") else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "The callback has no code.",
        );
    };
    if let (Some(expected), Some(iss)) = (&entry.conn.issuer, get("iss")) {
        if iss != expected {
            tracing::warn!(connection = %key, "callback iss does not match the configured issuer; refusing (RFC 9207)");
            return page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                "The authorization response came from an unexpected issuer.",
            );
        }
    }
    let _guard = cache.write_lock.lock().await;
    let exchange = Exchange::Code {
        code,
        verifier: pending.verifier.as_ref(),
    };
    let granted = flow::run(&admin.client, &entry.conn, exchange, None).await;
    match granted.and_then(|g| persist::token_set(key, g)) {
        Ok(set) => {
            persist::finish(&admin.backend, key, cache, set, Turn::new_grant()).await;
            cache.counters.ok.inc();
            cache.wake.notify_one();
            tracing::info!(connection = %key, "connection authorized");
            match &admin.settings.success_url {
                Some(url) => redirect(url, key),
                None => page(
                    StatusCode::OK,
                    "Authorized",
                    &format!("Connection {key} is authorized. You can close this page."),
                ),
            }
        }
        Err(e) => {
            cache.counters.failed.inc();
            tracing::warn!(connection = %key, error = %e, "code exchange failed");
            page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                &format!("The code exchange failed: {e}"),
            )
        }
    }
}

fn redirect(url: &str, key: &str) -> Response<AdminBody> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let target = format!(
        "{url}{sep}{}",
        encode_pairs([("connection", key), ("status", "authorized")])
    );
    let mut r = with_security_headers(Response::new(Full::default()));
    *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Ok(v) = HeaderValue::try_from(target) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A short HTML page; `message` is escaped.
fn page(status: StatusCode, title: &str, message: &str) -> Response<AdminBody> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{m}</p></body></html>\n",
        t = escape(title),
        m = escape(message)
    );
    let mut r = with_security_headers(Response::new(Full::new(Bytes::from(html))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

pub(super) fn with_security_headers(mut r: Response<AdminBody>) -> Response<AdminBody> {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    r
}

/// HTML-escapes text for element content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn trust_is_loopback_or_the_admin_token() {
        let token = SecretString::from("let-me-in");
        let remote: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let loopback6: SocketAddr = "[::1]:40000".parse().unwrap();
        let with = |auth: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
            h
        };
        let none = HeaderMap::new();
        // Without an admin token only loopback is trusted, whatever is presented.
        assert!(trusted(None, &none, loopback));
        assert!(trusted(None, &none, loopback6));
        assert!(!trusted(None, &none, remote));
        assert!(!trusted(None, &with("Bearer let-me-in"), remote));
        // With one, a remote caller needs it; a presented token must match, even on loopback.
        assert!(!trusted(Some(&token), &none, remote));
        assert!(trusted(Some(&token), &with("Bearer let-me-in"), remote));
        assert!(trusted(Some(&token), &with("bearer let-me-in"), remote));
        assert!(trusted(Some(&token), &with("BEARER  let-me-in"), remote));
        assert!(!trusted(Some(&token), &with("Bearer let-me-i"), remote));
        assert!(!trusted(Some(&token), &with("Bearer let-me-inn"), remote));
        assert!(!trusted(Some(&token), &with("Basic let-me-in"), remote));
        assert!(!trusted(Some(&token), &with("Bearer"), remote));
        assert!(!trusted(Some(&token), &with("Bearer wrong"), loopback));
        assert!(!trusted(Some(&token), &with("Bearer"), loopback));
        assert!(!trusted(
            Some(&token),
            &with("Basic dXNlcjpwYXNz"),
            loopback
        ));
        assert!(trusted(Some(&token), &none, loopback));
        // Loopback is 127.0.0.0/8 and ::1, not private ranges.
        assert!(trusted(None, &none, "127.0.0.2:1".parse().unwrap()));
        assert!(!trusted(None, &none, "10.0.0.1:1".parse().unwrap()));
        assert!(!trusted(
            None,
            &none,
            "[::ffff:10.0.0.1]:1".parse().unwrap()
        ));
        assert!(trusted(
            None,
            &none,
            "[::ffff:127.0.0.1]:1".parse().unwrap()
        ));
    }

    #[test]
    fn format_is_json_unless_asked() {
        assert_eq!(Format::of(None), Format::Json);
        assert_eq!(Format::of(Some("format=json")), Format::Json);
        assert_eq!(Format::of(Some("format=text")), Format::Text);
        assert_eq!(Format::of(Some("x=1&format=redirect")), Format::Redirect);
        assert_eq!(Format::of(Some("format=Redirect")), Format::Json);
    }

    #[test]
    fn cross_site_is_what_a_browser_marks_as_started_elsewhere() {
        let with = |site: &str| {
            let mut h = HeaderMap::new();
            h.insert(SEC_FETCH_SITE, HeaderValue::from_str(site).unwrap());
            h
        };
        assert!(
            !cross_site(&HeaderMap::new()),
            "curl sends no fetch metadata"
        );
        assert!(
            !cross_site(&with("same-origin")),
            "the status page's button"
        );
        assert!(!cross_site(&with("none")), "an address opened directly");
        assert!(cross_site(&with("cross-site")));
        assert!(cross_site(&with("same-site")), "another port of this host");
        assert!(cross_site(&with("bogus")), "fail closed");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
