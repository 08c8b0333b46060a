//! `DELETE /api/v1/connection/{key}/grants/{subject}`: an end user's grant revoked at the
//! provider (RFC 7009), when the connection configures a `revoke_request`, then deleted
//! from the store and withdrawn from this process at once. A failed revocation does not
//! keep the grant: it is reported in the answer and the audit log.
//!
//! The revocation fills `<refresh_token>` with the grant's refresh token (else its access
//! token) and `<access_token>` with its access token, and authenticates the client as the
//! token requests do (`client_auth`). It is sent with the token client, whose answer is
//! read as a token response: a 2xx without a token in it (RFC 7009's empty 200) is a
//! revocation, an error status or OAuth error is not.

use super::grants::{no_grant, unavailable, Target};
use super::{json, Admin, AdminBody};
use crate::config::{Auth, Connection, RequestTemplate};
use crate::grants::AUDIT;
use crate::oauth::client::TokenError;
use crate::oauth::request::{self, BuiltRequest};
use crate::template::Lookup;
use crate::token::store::{GrantRef, StoreError, StoredToken};
use http::{Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::json;

/// `DELETE …/grants/{subject}`: 204 (deleted, and revoked if the connection revokes), 200
/// with `revoked: false` and `revoke_error` when the revocation failed (deleted anyway),
/// 404 when there was no grant.
pub async fn delete(admin: &Admin, target: &Target, subject: &str) -> Response<AdminBody> {
    let conn = &target.entry.conn;
    let key = conn.key.as_str();
    let grant = target.grants.get(subject);
    let _guard = grant.tokens.write_lock.lock().await;
    let stored = match admin.backend.read_grant(GrantRef::user(key, subject)).await {
        Ok(stored) => stored,
        Err(StoreError::Deleted { .. }) => None,
        Err(e) => return unavailable(key, &e),
    };
    let Some(stored) = stored else {
        target.grants.forget(subject);
        return no_grant(key);
    };
    let generation = stored.generation.max(grant.tokens.generation());
    let revoked = match revoke_template(conn) {
        Some(template) => Some(revoke(admin, conn, template, &stored.token).await),
        None => None,
    };
    if let Some(outcome) = &revoked {
        let error = outcome.as_ref().err().map(String::as_str);
        tracing::info!(target: AUDIT, action = "grant_revoked", connection = %key, subject = %subject, generation, revoked = outcome.is_ok(), error, "user grant revoked at the provider");
    }
    if let Err(e) = admin
        .backend
        .remove_grant(GrantRef::user(key, subject))
        .await
    {
        return unavailable(key, &e);
    }
    grant.tokens.withdraw();
    target.grants.forget(subject);
    tracing::info!(target: AUDIT, action = "grant_deleted", connection = %key, subject = %subject, generation, peer = %target.caller.peer(), by = target.caller.by(), "user grant deleted");
    match revoked {
        Some(Err(e)) => json(
            StatusCode::OK,
            &json!({"connection": key, "subject": subject, "deleted": true,
            "revoked": false, "revoke_error": e}),
        ),
        _ => {
            let mut r = json(StatusCode::NO_CONTENT, &json!(null));
            *r.body_mut() = http_body_util::Full::default();
            r
        }
    }
}

fn revoke_template(conn: &Connection) -> Option<&RequestTemplate> {
    match &conn.auth {
        Auth::OAuth2(o) => o.revoke_request.as_ref(),
        _ => None,
    }
}

/// Sends the revocation of `token`; Err: why it failed (never a token).
async fn revoke(
    admin: &Admin,
    conn: &Connection,
    template: &RequestTemplate,
    token: &StoredToken,
) -> Result<(), String> {
    let built = build(conn, template, token)?;
    match admin.client.send(&conn.key, built).await {
        Ok(_) | Err(TokenError::Invalid { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// The revocation request for `token`, client authentication included.
fn build(
    conn: &Connection,
    template: &RequestTemplate,
    token: &StoredToken,
) -> Result<BuiltRequest, String> {
    let access = token.access_token.expose_secret();
    let refresh = token
        .refresh_token
        .as_ref()
        .map_or(access, |r| r.expose_secret());
    let runtime = [("refresh_token", refresh), ("access_token", access)];
    let lookup = Lookup {
        params: &conn.params,
        runtime: &runtime,
    };
    let context = format!("{} OAuth2", conn.name);
    let mut built =
        request::build("revoke", &context, template, &lookup).map_err(|e| e.to_string())?;
    crate::oauth::flow::authenticate_client(conn, &mut built)?;
    Ok(built)
}
