//! `PUT /api/v1/connection/{key}/grants/{subject}`: imports an end user's existing grant
//! (how users migrate from another system). The body names at least one token; with an
//! access token the set is stored as given, with only a refresh token it is refreshed at
//! once (the connection needs a `refresh_request`). Either way it supersedes what is stored
//! (`Turn::new_grant`), under the grant's write lock, and is published to this process and,
//! with Redis, to the others. The answer is the grant's view — never a token.

use super::connections::{invalid, read_json};
use super::grants::{unavailable, view, Target};
use super::{json, Admin, AdminBody};
use crate::config::Auth;
use crate::grants::AUDIT;
use crate::oauth::flow::Exchange;
use crate::refresher::persist::{self, Holder, Turn};
use crate::runtime::FieldError;
use crate::token::store::GrantRef;
use crate::token::TokenSet;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The body of an import (and the token secrets of a single-grant connection's
/// `PATCH …/secret`). Token values are wiped once stored.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Import {
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Seconds from now.
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// The imported tokens, checked.
pub(super) struct Tokens {
    access: Option<SecretString>,
    refresh: Option<SecretString>,
    lifetime: Option<Duration>,
    scope: Option<String>,
}

/// `PUT …/grants/{subject}`: 201 (new) or 200 (replaced) with the grant's view; 422 for a
/// body that names no token, or only a refresh token without a `refresh_request`; 502 when
/// that refresh fails.
pub async fn import(
    admin: &Admin,
    target: &Target,
    subject: &str,
    req: Request<Incoming>,
) -> Response<AdminBody> {
    let body: Import = match read_json(req).await {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let tokens = match check(body, can_refresh(&target.entry.conn.auth)) {
        Ok(tokens) => tokens,
        Err(problems) => return invalid(problems),
    };
    let key = &target.entry.conn.key;
    let existed = match admin.backend.read_grant(GrantRef::user(key, subject)).await {
        Ok(found) => found.is_some(),
        Err(crate::token::store::StoreError::Deleted { .. }) => false,
        Err(e) => return unavailable(key, &e),
    };
    let grant = target.grants.get(subject);
    let _guard = grant.tokens.write_lock.lock().await;
    let holder = Holder {
        conn: &target.entry.conn,
        grant: GrantRef::user(key, subject),
        cache: &grant.tokens,
    };
    if let Err(refused) = store(admin, holder, tokens).await {
        return *refused;
    }
    let generation = grant.tokens.generation();
    let expires_at = grant.tokens.token().and_then(|t| t.expires_at);
    tracing::info!(target: AUDIT, action = "grant_imported", connection = %key, subject = %subject, generation, replaced = existed, peer = %target.caller.peer(), by = target.caller.by(), "user grant imported");
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    json(
        status,
        &view(
            key,
            subject,
            grant.tokens.state_name(),
            expires_at.map(|t| crate::token::set::unix_seconds(Some(t)) * 1000),
            generation,
        ),
    )
}

/// Whether `auth` can refresh an imported refresh token (a `refresh_request`).
pub(super) fn can_refresh(auth: &Auth) -> bool {
    matches!(auth, Auth::OAuth2(o) if o.refresh_request.is_some())
}

/// The body → the tokens to store, or every problem with it.
pub(super) fn check(body: Import, can_refresh: bool) -> Result<Tokens, Vec<FieldError>> {
    let mut problems = Vec::new();
    let secret = |name: &str, v: Option<String>, problems: &mut Vec<FieldError>| match v {
        Some(v) if v.is_empty() => {
            problems.push(FieldError::new(&["body", name], "must not be empty"));
            None
        }
        v => v.map(SecretString::from),
    };
    let access = secret("access_token", body.access_token, &mut problems);
    let refresh = secret("refresh_token", body.refresh_token, &mut problems);
    if access.is_none() && refresh.is_none() && problems.is_empty() {
        problems.push(FieldError::new(
            &["body"],
            "name an access_token, a refresh_token or both",
        ));
    }
    if access.is_none() && refresh.is_some() && !can_refresh {
        problems.push(FieldError::new(
            &["body", "access_token"],
            "required: the connection has no refresh_request to turn a refresh_token into an access token",
        ));
    }
    let lifetime = match (body.expires_at, body.expires_in) {
        (Some(_), Some(_)) => {
            problems.push(FieldError::new(
                &["body", "expires_in"],
                "give expires_at or expires_in, not both",
            ));
            None
        }
        (Some(at), None) => Some(
            (UNIX_EPOCH + Duration::from_secs(at))
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        ),
        (None, secs) => secs.map(Duration::from_secs),
    };
    match problems.is_empty() {
        true => Ok(Tokens {
            access,
            refresh,
            lifetime,
            scope: body.scope,
        }),
        false => Err(problems),
    }
}

/// Stores `tokens` as the set of `holder`'s grant, superseding what is stored (with only
/// a refresh token: refreshed first). Call with the grant's write lock held.
pub(super) async fn store(
    admin: &Admin,
    holder: Holder<'_>,
    tokens: Tokens,
) -> Result<(), Box<Response<AdminBody>>> {
    let conn = holder.conn;
    let subject = holder.grant.subject;
    let Some(access) = tokens.access else {
        let refresh = tokens.refresh.expect("checked: one token at least");
        let exchange = Exchange::Refresh {
            refresh_token: Some(&refresh),
            access_token: None,
        };
        let writer = (&admin.client, &admin.backend);
        let previous = Some(refresh.clone());
        return match persist::obtain(writer, holder, exchange, previous, Turn::new_grant()).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(target: AUDIT, action = "grant_failed", connection = %conn.key, subject, error = %e, "refreshing an imported grant failed");
                Err(Box::new(json(
                    StatusCode::BAD_GATEWAY,
                    &json!({"error": "refresh_failed", "message": e.to_string()}),
                )))
            }
        };
    };
    let set = TokenSet::new(
        access,
        tokens.refresh,
        tokens.scope,
        SystemTime::now(),
        tokens.lifetime,
        rand::random::<f64>(),
    )
    .map_err(|_| {
        Box::new(invalid(vec![FieldError::new(
            &["body", "access_token"],
            "must be visible ASCII (it goes in an Authorization header)",
        )]))
    })?;
    let set = set.obtained_under(conn.grant_identity);
    persist::finish(&admin.backend, holder, set, Turn::new_grant()).await;
    Ok(())
}
