//! The authorization code of a per-user connection (`grants: per_user`): `authorize` takes
//! the end user's subject (`?subject=`), which the pending state keeps with the PKCE
//! verifier; the callback, on whichever replica the redirect reaches, stores the grant
//! under (connection, subject). Each step is an audit event with the connection, the subject
//! and the token generation — never a token.

use super::oauth::page;
use super::{json, Admin, AdminBody};
use crate::grants::{self, AUDIT};
use crate::oauth::flow::Exchange;
use crate::refresher::persist::{self, Holder, Turn};
use crate::registry::Entry;
use crate::token::store::GrantRef;
use http::{Response, StatusCode};
use serde_json::json;

/// The subject an authorization of `entry` is for: required (and checked) on a per-user
/// connection, refused on a single-grant one. Otherwise the 400 to answer.
pub fn subject_of(
    entry: &Entry,
    query: Option<&str>,
) -> Result<Option<String>, Box<Response<AdminBody>>> {
    let named: Vec<String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "subject")
        .map(|(_, v)| v.into_owned())
        .collect();
    let key = &entry.conn.key;
    let refuse = |error: &str, message: String| {
        Err(Box::new(json(
            StatusCode::BAD_REQUEST,
            &json!({"error": error, "connection": key, "parameter": "subject", "message": message}),
        )))
    };
    if named.len() > 1 {
        // As a repeated header on the proxy: which one would it be?
        return refuse("bad_subject", "?subject= is repeated: name one user".into());
    }
    let given = named.into_iter().next();
    match (entry.grants.is_some(), given) {
        (true, None) => refuse(
            "subject_required",
            "this connection has a grant per user: name the user with ?subject=".into(),
        ),
        (true, Some(s)) => match grants::subject::check(&s) {
            Ok(_) => Ok(Some(s)),
            Err(_) => refuse(
                "bad_subject",
                format!(
                    "subject: 1 to {} bytes of visible ASCII (no spaces or control characters)",
                    grants::subject::MAX_SUBJECT_LEN
                ),
            ),
        },
        (false, Some(_)) => refuse(
            "not_per_user",
            "this connection has one grant: it takes no subject".into(),
        ),
        (false, None) => Ok(None),
    }
}

/// The audit event of an authorization started for `subject`.
pub fn audit_authorize(key: &str, subject: &str) {
    tracing::info!(target: AUDIT, action = "authorize", connection = %key, subject = %subject, "authorization started for a user");
}

/// The callback's code exchange for the end user `subject` of `entry`, under that grant's
/// write lock: the grant stored under (connection, subject) and published, then the
/// success page (naming the subject).
pub async fn exchange_code(
    admin: &Admin,
    entry: &Entry,
    subject: &str,
    exchange: Exchange<'_>,
) -> Response<AdminBody> {
    let key = &entry.conn.key;
    let Some(grants) = &entry.grants else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            &format!("Connection {key} no longer has a grant per user. Start again from the authorize route."),
        );
    };
    tracing::info!(target: AUDIT, action = "callback", connection = %key, subject = %subject, "authorization callback for a user");
    let grant = grants.get(subject);
    let _guard = grant.tokens.write_lock.lock().await;
    let holder = Holder {
        conn: &entry.conn,
        grant: GrantRef::user(key, subject),
        cache: &grant.tokens,
    };
    let writer = (&admin.client, &admin.backend);
    match persist::obtain(writer, holder, exchange, None, Turn::new_grant()).await {
        Ok(_) => {
            let generation = grant.tokens.generation();
            tracing::info!(target: AUDIT, action = "grant_created", connection = %key, subject = %subject, generation, "user grant created by authorization");
            match &admin.settings.success_url {
                Some(url) => super::oauth::redirect(url, key),
                None => page(
                    StatusCode::OK,
                    "Authorized",
                    &format!("Connection {key} is authorized for user {subject}. You can close this page."),
                ),
            }
        }
        Err(e) => {
            tracing::warn!(target: AUDIT, action = "grant_failed", connection = %key, subject = %subject, error = %e, "code exchange for a user failed");
            page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                &format!("The code exchange failed: {e}"),
            )
        }
    }
}
