//! The authorization code of a per-user connection (`grants: per_user`): `authorize` takes
//! the end user's subject (`?subject=`), which the pending state keeps with the PKCE
//! verifier; the callback, on whichever replica the redirect reaches, stores the grant
//! under (connection, subject) (`oauth::exchange_code`). Each step is an audit event with the connection, the subject
//! and the token generation — never a token.

use super::{json, AdminBody};
use crate::grants::{self, AUDIT};
use crate::registry::Entry;
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

/// The audit event of a callback for `subject`, before its code is exchanged.
pub fn audit_callback(key: &str, subject: &str) {
    tracing::info!(target: AUDIT, action = "callback", connection = %key, subject = %subject, "authorization callback for a user");
}

/// The audit event of `subject`'s grant stored by its authorization.
pub fn audit_created(key: &str, subject: &str, generation: u64) {
    tracing::info!(target: AUDIT, action = "grant_created", connection = %key, subject = %subject, generation, "user grant created by authorization");
}

/// The audit event of `subject`'s failed code exchange.
pub fn audit_failed(key: &str, subject: &str, e: &crate::oauth::client::TokenError) {
    tracing::warn!(target: AUDIT, action = "grant_failed", connection = %key, subject = %subject, error = %e, "code exchange for a user failed");
}
