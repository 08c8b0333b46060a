//! The grants API of a per-user connection (`grants: per_user`):
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/connection/{key}/grants?cursor=&limit=` | a page of subjects (after `cursor`, at most `limit` ≤ 1000, default 100), each with its state and expiry; `next_cursor` (null at the end) and `counts` (total, expired) |
//! | `GET /api/v1/connection/{key}/grants/{subject}` | one grant's view (404 when there is none) |
//! | `PUT /api/v1/connection/{key}/grants/{subject}` | imports an existing grant (`grant_import`): 201 new, 200 replaced |
//! | `DELETE /api/v1/connection/{key}/grants/{subject}` | revokes it at the provider when the connection has a `revoke_request`, then deletes it (`grant_revoke`) |
//!
//! Subjects are personal data: every route is for trusted callers only (`access`, as the
//! connection API's writes). A subject in the path is percent-decoded, then checked
//! (`grants::subject::check`). No answer ever carries a token; every write is an audit
//! event (`tokenwarden::audit`) with connection, subject and token generation.

use super::connections::{invalid, Caller};
use super::{grant_import, grant_revoke, json, Admin, AdminBody};
use crate::grants::{self, Grants};
use crate::registry::Entry;
use crate::runtime::{now_ms, FieldError};
use crate::token::store::{GrantListing, GrantRef, StoreError};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// The default and the largest page of `GET …/grants`.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// A per-user connection, as the grants routes act on it.
pub(super) struct Target {
    pub entry: Arc<Entry>,
    pub grants: Arc<Grants>,
    pub caller: Caller,
}

/// The grants routes: their response, or the request back when it is none of them.
pub async fn route(
    admin: &Admin,
    segments: &[&str],
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<AdminBody>, Request<Incoming>> {
    let (key, subject) = match segments {
        ["api", "v1", "connection", key, "grants"] => (*key, None),
        ["api", "v1", "connection", key, "grants", subject] => (*key, Some(*subject)),
        _ => return Err(req),
    };
    let target = match target(admin, key, &req, peer) {
        Ok(target) => target,
        Err(refused) => return Ok(*refused),
    };
    let method = req.method().clone();
    let Some(raw) = subject else {
        return Ok(match method {
            Method::GET | Method::HEAD => list(admin, &target, req.uri().query()).await,
            _ => not_allowed("GET"),
        });
    };
    let subject = match decode_subject(raw) {
        Ok(subject) => subject,
        Err(refused) => return Ok(*refused),
    };
    Ok(match method {
        Method::GET | Method::HEAD => one(admin, &target, &subject).await,
        Method::PUT => grant_import::import(admin, &target, &subject, req).await,
        Method::DELETE => grant_revoke::delete(admin, &target, &subject).await,
        _ => not_allowed("GET, PUT, DELETE"),
    })
}

/// Connection `key` for a trusted caller, if it has grants per user; else the 401, 403 or
/// 404 (`unknown_connection`, `not_per_user`) to answer.
fn target(
    admin: &Admin,
    key: &str,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<Target, Box<Response<AdminBody>>> {
    let caller = Caller::of(admin, req, peer)?;
    let Some(entry) = admin.registry.load().get(key).cloned() else {
        return Err(Box::new(json(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown_connection", "connection": key}),
        )));
    };
    let Some(grants) = entry.grants.clone() else {
        return Err(Box::new(json(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_per_user", "connection": key,
            "message": "this connection has one grant, not one per user (grants: per_user)"}),
        )));
    };
    Ok(Target {
        entry,
        grants,
        caller,
    })
}

/// A path segment → the subject it names (percent-decoded, checked), or the 400.
fn decode_subject(raw: &str) -> Result<String, Box<Response<AdminBody>>> {
    let decoded = percent_decode(raw).filter(|s| grants::subject::check(s).is_ok());
    decoded.ok_or_else(|| {
        Box::new(json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "bad_subject", "message": format!(
                "a subject is 1 to {} bytes of visible ASCII (no spaces or control characters), percent-encoded in the path",
                grants::subject::MAX_SUBJECT_LEN)}),
        ))
    })
}

/// `%XX` escapes decoded (None: a bad escape, or not UTF-8).
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `GET …/grants`: a page of subjects, its next cursor and the connection's counts.
async fn list(admin: &Admin, target: &Target, query: Option<&str>) -> Response<AdminBody> {
    let (cursor, limit) = match paging(query) {
        Ok(p) => p,
        Err(problem) => return invalid(vec![problem]),
    };
    let key = &target.entry.conn.key;
    let page = admin
        .backend
        .grant_page(key, cursor.as_deref(), limit + 1)
        .await;
    let counts = admin.backend.grant_counts(key, now_ms()).await;
    let (mut page, counts) = match (page, counts) {
        (Ok(page), Ok(counts)) => (page, counts),
        (Err(e), _) | (_, Err(e)) => return unavailable(key, &e),
    };
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last().map(|l| l.subject.clone())
    });
    let items: Vec<Value> = page.iter().map(|l| listed(&target.grants, l)).collect();
    json(
        StatusCode::OK,
        &json!({"connection": key, "items": items, "next_cursor": next.flatten(),
        "counts": {"total": counts.total, "expired": counts.expired}}),
    )
}

/// `?cursor=&limit=` of `GET …/grants`, or the problem with them.
fn paging(query: Option<&str>) -> Result<(Option<String>, usize), FieldError> {
    let (mut cursor, mut limit) = (None, PAGE);
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "cursor" if !v.is_empty() => cursor = Some(v.into_owned()),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        FieldError::new(
                            &["query", "limit"],
                            format!("must be an integer from 1 to {MAX_PAGE}"),
                        )
                    })?;
            }
            _ => {}
        }
    }
    Ok((cursor, limit))
}

/// One listed grant: the state this process holds it in, else the one its stored expiry
/// says.
fn listed(grants: &Grants, listing: &GrantListing) -> Value {
    let held = grants
        .cached(&listing.subject)
        .filter(|g| g.tokens.token().is_some());
    let state = match held {
        Some(grant) => grant.tokens.state_name(),
        None => stored_state(listing.expires_at_ms),
    };
    json!({"subject": listing.subject, "state": state,
        "expires_at": listing.expires_at_ms.map(|ms| ms / 1000)})
}

/// `ready`, or `expired` once the stored expiry has passed.
fn stored_state(expires_at_ms: Option<u64>) -> &'static str {
    match expires_at_ms {
        Some(ms) if ms <= now_ms() => "expired",
        _ => "ready",
    }
}

/// `GET …/grants/{subject}`.
async fn one(admin: &Admin, target: &Target, subject: &str) -> Response<AdminBody> {
    let key = &target.entry.conn.key;
    match admin.backend.read_grant(GrantRef::user(key, subject)).await {
        Ok(Some(stored)) => {
            let held = target
                .grants
                .cached(subject)
                .filter(|g| g.tokens.token().is_some());
            let (state, generation) = match held {
                Some(g) => (g.tokens.state_name(), g.tokens.generation()),
                None => (stored_state(stored.token.expires_at_ms), stored.generation),
            };
            json(
                StatusCode::OK,
                &view(key, subject, state, stored.token.expires_at_ms, generation),
            )
        }
        Ok(None) | Err(StoreError::Deleted { .. }) => no_grant(key),
        Err(e) => unavailable(key, &e),
    }
}

/// A grant as the API shows it: never a token.
pub(super) fn view(
    key: &str,
    subject: &str,
    state: &str,
    expires_at_ms: Option<u64>,
    generation: u64,
) -> Value {
    json!({"connection": key, "subject": subject, "state": state,
        "expires_at": expires_at_ms.map(|ms| ms / 1000), "generation": generation})
}

/// 404: the subject has no grant.
pub(super) fn no_grant(key: &str) -> Response<AdminBody> {
    json(
        StatusCode::NOT_FOUND,
        &json!({"error": "no_grant", "connection": key}),
    )
}

/// 503: the store does not answer (logged).
pub(super) fn unavailable(key: &str, e: &StoreError) -> Response<AdminBody> {
    tracing::warn!(connection = %key, error = %e, "the grants API cannot reach the store");
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"error": "store_unavailable", "message": "the token store does not answer; try again shortly"}),
    )
}

fn not_allowed(allow: &str) -> Response<AdminBody> {
    json(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": "method_not_allowed", "allow": allow}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_percent_decoded() {
        assert_eq!(percent_decode("a%40b.c").as_deref(), Some("a@b.c"));
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("a%zz"), None);
        assert_eq!(percent_decode("a%FF"), None);
    }

    #[test]
    fn paging_is_bounded() {
        assert_eq!(paging(None).unwrap(), (None, PAGE));
        assert_eq!(
            paging(Some("cursor=bob&limit=2")).unwrap(),
            (Some("bob".into()), 2)
        );
        assert!(paging(Some("limit=0")).is_err());
        assert!(paging(Some("limit=1001")).is_err());
        assert!(paging(Some("limit=x")).is_err());
    }
}
