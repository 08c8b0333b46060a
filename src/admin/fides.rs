//! The connection API's bodies, in Fides' shapes: `ConnectionConfigurationResponse`, its
//! paginated list (`{items, total, page, size, pages}`), `TestStatusMessage`, the connector
//! types (`GET /api/v1/connection_type`). Never a secret value: a connector type lists the
//! names of the secrets it needs, a connection none of its secrets.

use crate::config::Template;
use crate::registry::Entry;
use serde_json::{json, Value};

/// Fides' default page size and the largest one a request may ask for (Fides' is 100: a
/// tokenwarden holds more connections than a Fides deployment, so larger pages are allowed).
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;

/// `?page=&size=` (1-based page), defaults filled; an unusable value is the error text.
pub fn paging(query: Option<&str>) -> Result<(usize, usize), String> {
    let (mut page, mut size) = (1, DEFAULT_PAGE_SIZE);
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("`{name}` must be a whole number of at least 1"))
        };
        match &*name {
            "page" => page = number()?,
            "size" => size = number()?,
            _ => {}
        }
    }
    if size > MAX_PAGE_SIZE {
        return Err(format!("`size` must be at most {MAX_PAGE_SIZE}"));
    }
    Ok((page, size))
}

/// A Fides page of `items` out of `total`.
pub fn page(items: Vec<Value>, total: usize, page: usize, size: usize) -> Value {
    json!({
        "items": items,
        "total": total,
        "page": page,
        "size": size,
        "pages": total.div_ceil(size),
    })
}

/// Unix milliseconds as Fides writes a datetime (ISO 8601, UTC).
fn datetime(ms: Option<u64>) -> Value {
    let Some(ms) = ms else {
        return Value::Null;
    };
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(Value::Null, Value::String)
}

/// `ConnectionConfigurationResponse` of a connection. A file connection has no creation
/// time or test, and its `saas_config.type` is the file's.
pub fn connection(entry: &Entry) -> Value {
    let conn = &entry.conn;
    match &entry.runtime {
        Some(d) => json!({
            "name": d.name.clone().unwrap_or_else(|| conn.name.clone()),
            "key": conn.key,
            "description": d.description,
            "connection_type": "saas",
            "access": "write",
            "created_at": datetime(Some(d.created_at)),
            "updated_at": datetime(d.updated_at),
            "disabled": false,
            "last_test_timestamp": datetime(d.last_test.map(|t| t.0)),
            "last_test_succeeded": d.last_test.map(|t| t.1),
            "saas_config": {
                "fides_key": d.instance_key,
                "name": conn.name,
                "type": d.connector_type,
            },
        }),
        None => json!({
            "name": conn.name,
            "key": conn.key,
            "description": null,
            "connection_type": "saas",
            "access": "write",
            "created_at": null,
            "updated_at": null,
            "disabled": false,
            "last_test_timestamp": null,
            "last_test_succeeded": null,
            "saas_config": null,
        }),
    }
}

/// One connector type: its identifier, name, whether an instance needs a person to
/// authorize it, and the secrets an instance gives (with their defaults, which are the
/// template's, not secrets).
pub fn connection_type(template: &Template) -> Value {
    let secrets: Vec<Value> = (template.params.iter())
        .map(|(name, default)| {
            json!({"name": name, "default_value": default, "required": default.is_none()})
        })
        .collect();
    json!({
        "identifier": template.kind,
        "type": "saas",
        "human_readable": template.name,
        "authorization_required": template.authorization_required(),
        "secrets": secrets,
    })
}

/// `TestStatusMessage`: what a secrets change answers.
pub fn test_status(key: &str, test: Option<Result<(), String>>) -> Value {
    let msg = format!("Secrets updated for ConnectionConfig with key: {key}.");
    match test {
        None => json!({"msg": msg, "test_status": null, "failure_reason": null}),
        Some(Ok(())) => json!({"msg": msg, "test_status": "succeeded", "failure_reason": null}),
        Some(Err(reason)) => {
            json!({"msg": msg, "test_status": "failed", "failure_reason": reason})
        }
    }
}
