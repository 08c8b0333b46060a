//! Connection status routes and readiness. Nothing here reads a token value.

use super::{json, AdminBody};
use crate::config::{Auth, Grant};
use crate::grants::Grants;
use crate::registry::{Entry, Registry};
use crate::runtime::now_ms;
use crate::token::store::Backend;
use http::{Response, StatusCode};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

fn unix(t: Option<SystemTime>) -> Value {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(Value::Null, |d| json!(d.as_secs()))
}

/// The store's health: `{"backend": "sqlite"|"redis", "state": "ok"|"degraded", "last_error"}`.
pub(super) fn store(backend: &Backend) -> Value {
    let (name, up, error) = backend.health();
    json!({
        "backend": name,
        "state": if up { "ok" } else { "degraded" },
        "last_error": error.as_deref(),
    })
}

/// The status document of one connection.
pub async fn describe(entry: &Entry, backend: &Backend) -> Value {
    let conn = &entry.conn;
    let status = entry.tokens.status();
    let token = entry.tokens.token();
    let strategy = match &conn.auth {
        Auth::OAuth2(o) => o.strategy,
        Auth::Header(_) => "static_header",
        Auth::ApiKey(_) => "api_key",
    };
    let mut status = json!({
        "key": conn.key,
        "name": conn.name,
        "strategy": strategy,
        "upstream": format!("{}://{}", conn.upstream.scheme, conn.upstream.authority),
        "state": entry.tokens.state_name(),
        "has_token": token.is_some(),
        "has_refresh_token": token.as_ref().is_some_and(|t| t.refresh_token.is_some()),
        "expires_at": unix(token.as_ref().and_then(|t| t.expires_at)),
        "last_refresh": unix(status.last_refresh),
        "last_error": status.last_error,
        "consecutive_failures": status.consecutive_failures,
        "store": store(backend),
    });
    if let Some(grants) = &entry.grants {
        status["grants"] = user_grants(&conn.key, grants, backend).await;
    }
    status
}

/// The grants of a per-user connection: the store's count of them (and of those expired,
/// which their next request refreshes), and those this process holds, by state.
async fn user_grants(key: &str, grants: &Grants, backend: &Backend) -> Value {
    let stored = match backend.grant_counts(key, now_ms()).await {
        Ok(counts) => json!({"total": counts.total, "expired": counts.expired}),
        Err(e) => {
            tracing::debug!(connection = %key, error = %e, "grants not counted: the store does not answer");
            Value::Null
        }
    };
    let mut in_memory = serde_json::Map::new();
    for (state, n) in grants.in_memory() {
        in_memory.insert(state.as_str().into(), json!(n));
    }
    let settings = grants.settings();
    json!({
        "stored": stored,
        "in_memory": in_memory,
        "cache_size": settings.cache_size,
        "max_concurrent_token_requests": settings.max_concurrent_token_requests,
    })
}

/// Every connection's status, or with `?page=&size=` one page of them (as the Fides list
/// pages: `page` from 1, `size` up to [`super::fides::MAX_PAGE_SIZE`]).
pub async fn list(
    registry: &Registry,
    backend: &Backend,
    query: Option<&str>,
) -> Response<AdminBody> {
    let paged = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(name, _)| name == "page" || name == "size");
    let (offset, limit) = if paged {
        match super::fides::paging(query) {
            Ok((page, size)) => ((page - 1) * size, size),
            Err(msg) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "bad_query", "message": msg}),
                )
            }
        }
    } else {
        (0, usize::MAX)
    };
    let mut all = Vec::new();
    for c in registry.page(offset, limit) {
        all.push(describe(c, backend).await);
    }
    json(StatusCode::OK, &Value::Array(all))
}

/// One connection's status, with the fields of Fides' `ConnectionConfigurationResponse`.
pub async fn one(registry: &Registry, backend: &Backend, key: &str) -> Response<AdminBody> {
    match registry.get(key) {
        Some(c) => {
            let mut status = describe(c, backend).await;
            if let (Some(all), Value::Object(fides)) =
                (status.as_object_mut(), super::fides::connection(c))
            {
                all.extend(fides);
            }
            json(StatusCode::OK, &status)
        }
        None => json(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown_connection", "connection": key}),
        ),
    }
}

/// Ready when every client-credentials connection holds a usable token (authorization-code
/// connections wait for a human, so they do not hold readiness back). A degraded shared
/// store shows in the body but does not make the pod unready: the tokens held still work,
/// and taking every replica out of service when Redis blips would turn a store outage
/// into an application outage.
pub fn ready(registry: &Registry, backend: &Backend) -> Response<AdminBody> {
    let waiting: Vec<&str> = registry
        .iter()
        .filter(|c| matches!(&c.conn.auth, Auth::OAuth2(o) if o.grant == Grant::ClientCredentials))
        .filter(|c| c.tokens.header().is_none())
        .map(|c| c.conn.key.as_str())
        .collect();
    if waiting.is_empty() {
        json(
            StatusCode::OK,
            &json!({"status": "ready", "store": store(backend)}),
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not_ready", "waiting_for": waiting, "store": store(backend)}),
        )
    }
}
