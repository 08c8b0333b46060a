//! The authorization-code routes: `authorize` (mint a state, build the URL Fides would
//! build, plus PKCE) and `callback` (redeem the state once, exchange the code once, store
//! the grant durably, wake the refresher).
//!
//! Only trusted callers may start an authorization (see `access`). `callback` is open (the
//! provider's redirect lands in a browser), and is safe because it only redeems states
//! that `authorize` minted.

use super::access::acting_on;
use super::user_auth;
use super::{json, Admin, AdminBody};
use crate::config::{Auth, Grant, OAuth2};
use crate::oauth::flow::Exchange;
use crate::oauth::pending::MintError;
use crate::oauth::{pkce, request};
use crate::refresher::persist::{self, Turn};
use crate::registry::Entry;
use crate::template::{encode_pairs, Lookup};
use crate::token::store::GrantRef;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use secrecy::ExposeSecret;
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
    let subject = match user_auth::subject_of(&state, req.uri().query()) {
        Ok(subject) => subject,
        Err(refused) => return *refused,
    };
    let verifier = conn.pkce.then(pkce::verifier);
    let challenge = verifier
        .as_ref()
        .map(|v| pkce::challenge(v.expose_secret()));
    let minted = match mint(admin, key, subject.as_deref(), verifier).await {
        Ok(state) => state,
        Err(refused) => return *refused,
    };
    if let Some(subject) = &subject {
        user_auth::audit_authorize(key, subject);
    }
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

/// A new authorization state for connection `key` (and the end user `subject`, with its
/// PKCE verifier), or the 503 that says why there is none: too many waiting, or the shared
/// store does not answer.
async fn mint(
    admin: &Admin,
    key: &str,
    subject: Option<&str>,
    verifier: Option<secrecy::SecretString>,
) -> Result<String, Box<Response<AdminBody>>> {
    match admin.pending.mint(key, subject, verifier).await {
        Ok(state) => Ok(state),
        Err(e @ MintError::Full) => Err(Box::new(json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "too_many_pending", "message": e.to_string()}),
        ))),
        Err(MintError::Store(e)) => {
            tracing::warn!(connection = %key, error = %e, "cannot store the authorization state");
            Err(Box::new(json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "store_unavailable", "message": "the shared token store does not answer; try again shortly"}),
            )))
        }
    }
}

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

fn auth_code(auth: &Auth) -> Option<&OAuth2> {
    match auth {
        Auth::OAuth2(o) if o.grant == Grant::AuthorizationCode => Some(o),
        _ => None,
    }
}

/// The query's parameters, each once; a parameter given twice is refused (a page that says
/// which).
fn callback_params(query: &str) -> Result<Vec<(String, String)>, Box<Response<AdminBody>>> {
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if params.iter().any(|(n, _)| *n == k) {
            return Err(Box::new(page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                &format!("The parameter {k} appears more than once."),
            )));
        }
        params.push((k.into_owned(), v.into_owned()));
    }
    Ok(params)
}

/// The provider's redirect: the state redeemed once, the response checked (error, code,
/// RFC 9207 issuer), then the code exchanged once ([`exchange_code`]).
pub async fn callback(admin: &Admin, query: &str) -> Response<AdminBody> {
    let params = match callback_params(query) {
        Ok(params) => params,
        Err(refused) => return *refused,
    };
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
    if let Some(refused) = issuer_mismatch(key, entry.conn.issuer.as_deref(), get("iss")) {
        return refused;
    }
    let exchange = Exchange::Code {
        code,
        verifier: pending.verifier.as_ref(),
    };
    if pending.subject.is_none() && entry.grants.is_some() {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            &format!("Connection {key} now has a grant per user. Start again from the authorize route with ?subject=."),
        );
    }
    exchange_code(admin, &entry, pending.subject.as_deref(), exchange).await
}

/// The code exchange of an authorization for `entry` — its own grant, or on a per-user
/// connection the grant of `subject` — under that grant's write lock: the grant stored
/// (and the connection's refresher woken, or the user's grant audited), then the success
/// page (or the 307 to `admin.success_url`).
async fn exchange_code(
    admin: &Admin,
    entry: &Entry,
    subject: Option<&str>,
    exchange: Exchange<'_>,
) -> Response<AdminBody> {
    let key = &entry.conn.key;
    let user_grant;
    let holder = match (subject, &entry.grants) {
        (None, _) => persist::Holder::own(entry),
        (Some(subject), Some(grants)) => {
            user_auth::audit_callback(key, subject);
            user_grant = grants.get(subject);
            persist::Holder {
                conn: &entry.conn,
                grant: GrantRef::user(key, subject),
                cache: &user_grant.tokens,
            }
        }
        (Some(_), None) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                &format!("Connection {key} no longer has a grant per user. Start again from the authorize route."),
            )
        }
    };
    let cache = holder.cache;
    let _guard = cache.write_lock.lock().await;
    let writer = (&admin.client, &admin.backend);
    match persist::obtain(writer, holder, exchange, None, Turn::new_grant()).await {
        Ok(_) => {
            let authorized = match subject {
                None => {
                    cache.signals.wake.notify_one();
                    tracing::info!(connection = %key, "connection authorized");
                    format!("Connection {key} is authorized.")
                }
                Some(subject) => {
                    user_auth::audit_created(key, subject, cache.generation());
                    format!("Connection {key} is authorized for user {subject}.")
                }
            };
            match &admin.settings.success_url {
                Some(url) => redirect(url, key),
                None => page(
                    StatusCode::OK,
                    "Authorized",
                    &format!("{authorized} You can close this page."),
                ),
            }
        }
        Err(e) => {
            match subject {
                None => tracing::warn!(connection = %key, error = %e, "code exchange failed"),
                Some(subject) => user_auth::audit_failed(key, subject, &e),
            }
            page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                &format!("The code exchange failed: {e}"),
            )
        }
    }
}

/// RFC 9207: with an `issuer` configured the client expects `iss`, so a response with a
/// different one (a mix-up) or without one (§2.4) is refused before any token request.
/// The page names neither the code nor the state.
fn issuer_mismatch(
    key: &str,
    expected: Option<&str>,
    iss: Option<&str>,
) -> Option<Response<AdminBody>> {
    let message = match (expected?, iss) {
        (expected, Some(iss)) if iss == expected => return None,
        (_, Some(_)) => "The authorization response came from an unexpected issuer.".to_owned(),
        (_, None) => format!(
            "The authorization response has no iss parameter, but connection {key} sets an \
             issuer and expects one (RFC 9207)."
        ),
    };
    tracing::warn!(connection = %key, iss_present = iss.is_some(), "callback iss does not match the configured issuer; refusing (RFC 9207)");
    Some(page(
        StatusCode::BAD_REQUEST,
        "Authorization failed",
        &message,
    ))
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

/// A short HTML page, with a link back to the status page (the callback is on the admin
/// listener, so `/` is that page); `message` is escaped.
pub(super) fn page(status: StatusCode, title: &str, message: &str) -> Response<AdminBody> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{m}</p><p><a href=\"/\">Back to the status page</a></p></body></html>\n",
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
    fn format_is_json_unless_asked() {
        assert_eq!(Format::of(None), Format::Json);
        assert_eq!(Format::of(Some("format=json")), Format::Json);
        assert_eq!(Format::of(Some("format=text")), Format::Text);
        assert_eq!(Format::of(Some("x=1&format=redirect")), Format::Redirect);
        assert_eq!(Format::of(Some("format=Redirect")), Format::Json);
    }
}
