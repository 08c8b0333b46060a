//! Who may use the admin routes that act (`authorize`, `retry`, `reload`, the status page's
//! Authorize button). Only the operator may, because whoever completes an authorization
//! decides which account the sidecar acts as: callers on loopback, and others only with
//! `Authorization: Bearer <admin.token>`; when an admin token is set, a presented
//! `Authorization` header must carry it, from loopback too. A request a reverse proxy
//! forwarded is a loopback caller only as `forwarded` decides (by default never). A request
//! a browser marks as started by another site (Fetch Metadata), or whose `Origin` is not the
//! listener's own (`host`), is refused as well, so a page elsewhere cannot act through the
//! operator's browser.

use super::{forwarded, host, json, Admin, AdminBody};
use http::{header, HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::net::SocketAddr;

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
    let settings = &admin.settings;
    if !trusted(
        settings.token.as_ref(),
        &settings.trusted_proxies,
        req.headers(),
        peer,
    ) {
        return Some(Box::new(json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "unauthorized",
            "message": format!("{route} is open to loopback callers, or to others with the admin token as a bearer token (a request a reverse proxy forwarded is a loopback caller only when admin.trusted_proxies names the proxy)")}),
        )));
    }
    if cross_site(req.headers()) {
        return Some(Box::new(json(
            StatusCode::FORBIDDEN,
            &json!({"error": "cross_site",
            "message": format!("{route} refuses requests started by another site; use the status page or call this route directly")}),
        )));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        if !admin.names().is_own_origin(origin, host::request_host(req)) {
            return Some(Box::new(json(
                StatusCode::FORBIDDEN,
                &json!({"error": "cross_origin",
                "message": format!("{route} refuses requests from a page of another origin; use the status page or call this route directly")}),
            )));
        }
    }
    None
}

/// Loopback callers (as [`forwarded::loopback_caller`] tells them, given the trusted
/// `proxies`), or the admin token as a bearer token (compared in constant time). When an
/// admin token is configured, an `Authorization` header that is presented must carry it,
/// even from loopback (fail closed on a wrong or malformed one).
pub(super) fn trusted(
    expected: Option<&SecretString>,
    proxies: &[IpNet],
    headers: &HeaderMap,
    peer: SocketAddr,
) -> bool {
    if let (Some(expected), Some(given)) = (expected, headers.get(header::AUTHORIZATION)) {
        return given.to_str().ok().and_then(bearer).is_some_and(|given| {
            constant_time_eq(given.as_bytes(), expected.expose_secret().as_bytes())
        });
    }
    forwarded::loopback_caller(proxies, headers, peer)
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// [`trusted`] without trusted proxies (`forwarded` has its own tests).
    fn check(token: Option<&SecretString>, headers: &HeaderMap, peer: SocketAddr) -> bool {
        trusted(token, &[], headers, peer)
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
        assert!(check(None, &none, loopback));
        assert!(check(None, &none, loopback6));
        assert!(!check(None, &none, remote));
        assert!(!check(None, &with("Bearer let-me-in"), remote));
        // With one, a remote caller needs it; a presented token must match, even on loopback.
        assert!(!check(Some(&token), &none, remote));
        assert!(check(Some(&token), &with("Bearer let-me-in"), remote));
        assert!(check(Some(&token), &with("bearer let-me-in"), remote));
        assert!(check(Some(&token), &with("BEARER  let-me-in"), remote));
        assert!(!check(Some(&token), &with("Bearer let-me-i"), remote));
        assert!(!check(Some(&token), &with("Bearer let-me-inn"), remote));
        assert!(!check(Some(&token), &with("Basic let-me-in"), remote));
        assert!(!check(Some(&token), &with("Bearer"), remote));
        assert!(!check(Some(&token), &with("Bearer wrong"), loopback));
        assert!(!check(Some(&token), &with("Bearer"), loopback));
        assert!(!check(Some(&token), &with("Basic dXNlcjpwYXNz"), loopback));
        assert!(check(Some(&token), &none, loopback));
        // Loopback is 127.0.0.0/8 and ::1, not private ranges.
        assert!(check(None, &none, "127.0.0.2:1".parse().unwrap()));
        assert!(!check(None, &none, "10.0.0.1:1".parse().unwrap()));
        assert!(!check(None, &none, "[::ffff:10.0.0.1]:1".parse().unwrap()));
        assert!(check(None, &none, "[::ffff:127.0.0.1]:1".parse().unwrap()));
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
