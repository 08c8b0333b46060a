//! `POST /api/v1/connection/{key}/retry`: an operator's "try again now" for a connection
//! that is backing off or stopped on a terminal error (`invalid_client` fixed at the
//! provider, say), without a restart.

use super::access::acting_on;
use super::{json, Admin, AdminBody};
use crate::config::{Auth, Grant};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use std::net::SocketAddr;

/// `POST /api/v1/connection/{key}/retry`: the connection's refresher stops backing off (or
/// waiting after a terminal error) and tries now. Same access rule as `authorize`.
pub fn retry(
    admin: &Admin,
    key: &str,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    let entry = match acting_on(admin, "retry", key, req, peer) {
        Ok(entry) => entry,
        Err(refused) => return *refused,
    };
    let state = entry.tokens.state_name();
    match &entry.conn.auth {
        _ if entry.grants.is_some() => json(
            StatusCode::CONFLICT,
            &json!({"error": "per_user", "connection": key, "state": state,
            "message": "this connection holds a grant per end user, each renewed when a request needs it: there is no connection grant to retry"}),
        ),
        Auth::OAuth2(o)
            if o.grant == Grant::AuthorizationCode && entry.tokens.token().is_none() =>
        {
            json(
                StatusCode::CONFLICT,
                &json!({"error": "needs_authorization", "connection": key, "state": state,
                "authorize": format!("/api/v1/connection/{key}/authorize"),
                "message": "there is no grant to retry with: authorize the connection"}),
            )
        }
        Auth::OAuth2(_) => {
            tracing::info!(connection = %key, state, "retry requested");
            entry.tokens.signals.wake.notify_one();
            json(
                StatusCode::ACCEPTED,
                &json!({"status": "retrying", "connection": key, "state": state}),
            )
        }
        _ => json(
            StatusCode::CONFLICT,
            &json!({"error": "static_credential", "connection": key,
            "message": "the connection uses a static credential: nothing to retry"}),
        ),
    }
}
