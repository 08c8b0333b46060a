//! The authorization code of one end user on a per-user connection (`grants: per_user`):
//! `GET …/authorize?subject=alice` binds the minted state to the subject (and its PKCE
//! verifier), and the callback — on whichever replica the provider's redirect reaches, the
//! states being shared through Redis — exchanges the code under that grant's write lock and
//! stores the grant under (connection, subject), superseding what was stored.

use super::oauth::{page, redirect};
use super::{json, Admin, AdminBody};
use crate::grants::{self, Grants, AUDIT};
use crate::oauth::flow::Exchange;
use crate::refresher::persist::{self, Holder, Turn};
use crate::registry::Entry;
use crate::token::store::GrantRef;
use http::{Response, StatusCode};
use serde_json::json;

/// The `subject` of an authorize request for `entry` (`query`: the request's): required
/// and checked on a per-user connection, refused on any other (a 400 that never quotes it).
pub(super) fn subject_of(
    entry: &Entry,
    query: Option<&str>,
) -> Result<Option<String>, Box<Response<AdminBody>>> {
    let key = &entry.conn.key;
    let refuse = |error: &str, message: String| {
        Box::new(json(
            StatusCode::BAD_REQUEST,
            &json!({"error": error, "connection": key, "message": message}),
        ))
    };
    let mut named = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "subject")
        .map(|(_, v)| v.into_owned());
    let subject = named.next();
    if named.next().is_some() {
        return Err(refuse("bad_subject", "name one subject".into()));
    }
    match (subject, entry.grants.is_some()) {
        (None, false) => Ok(None),
        (Some(_), false) => Err(refuse(
            "not_per_user",
            "this connection has one grant, not one per user (grants: per_user): authorize it without a subject".into(),
        )),
        (None, true) => Err(refuse(
            "subject_required",
            "this connection has a grant per user: name the user with ?subject=".into(),
        )),
        (Some(subject), true) => match grants::subject::check(&subject) {
            Ok(_) => Ok(Some(subject)),
            Err(e) => Err(refuse("bad_subject", e.to_string())),
        },
    }
}

/// The code exchange of `subject`'s authorization on per-user `entry`, under the grant's
/// write lock: stored under (connection, subject) and published to the other replicas,
/// then the success page (or the 307 to `admin.success_url`).
pub(super) async fn exchange_code(
    admin: &Admin,
    entry: &Entry,
    users: &Grants,
    subject: &str,
    exchange: Exchange<'_>,
) -> Response<AdminBody> {
    let key = &entry.conn.key;
    let grant = users.get(subject);
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
            tracing::info!(target: AUDIT, action = "grant_created", connection = %key, subject, generation, "user grant authorized");
            match &admin.settings.success_url {
                Some(url) => redirect(url, key),
                None => page(
                    StatusCode::OK,
                    "Authorized",
                    &format!(
                        "Connection {key} is authorized for this user. You can close this page."
                    ),
                ),
            }
        }
        Err(e) => {
            tracing::warn!(target: AUDIT, action = "grant_failed", connection = %key, subject, error = %e, "code exchange of a user's authorization failed");
            page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                &format!("The code exchange failed: {e}"),
            )
        }
    }
}
