//! The connection API (Fides' routes and bodies; `docs/fides-compatibility.md` lists each
//! and every difference):
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/connection_type` | the connector types (`templates:`), paginated, with the secrets each needs |
//! | `POST /api/v1/connection/instantiate/{type}` | creates a connection: 200 with it, 422 with every problem, 409 on a key in use, 404 on an unknown type |
//! | `PUT`/`PATCH /api/v1/connection/{key}/secret` | replaces / merges its secrets; `?verify=true` (the default, as in Fides) runs one client-credentials token request; `access_token`, `refresh_token`, `expires_at` (where Fides keeps an authorization-code connection's tokens) seed its grant instead of joining its secrets |
//! | `GET /api/v1/connection` | every connection, paginated (`?page=&size=`) |
//! | `DELETE /api/v1/connection/{key}` | 204: no longer served, its refresher stopped, its definition and tokens deleted |
//!
//! `GET /api/v1/connection/{key}` is the status route (`status`), with these fields added.
//! Connections of the config file are listed but read-only here (409 naming the file).
//! Writes are for trusted callers only (`access`: loopback or the admin token, never a
//! request another site started), take a JSON body of at most [`MAX_BODY`] bytes, and
//! each is an audit event at log target `tokenwarden::audit`: who, what, which connection
//! — never a secret value.

use super::access::untrusted;
use super::{fides, grant_import, json, Admin, AdminBody};
use crate::config::{Auth, Definition};
use crate::refresher::persist::Holder;
use crate::runtime::{now_ms, FieldError, RuntimeError};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;

/// The largest request body read (a definition is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// `SaasConnectionTemplateValues`: what instantiating a connector type takes. Unknown
/// fields are ignored, as Fides ignores them.
#[derive(Deserialize)]
struct TemplateValues {
    instance_key: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    secrets: Map<String, Value>,
}

/// A write's caller, for the audit log.
pub(super) struct Caller {
    peer: SocketAddr,
    /// Whether it presented the admin token (else it is trusted as a loopback caller).
    admin_token: bool,
}

impl Caller {
    /// The caller of a write, if `access` lets it through (else the 401 or 403 to answer).
    /// With an admin token configured, a presented `Authorization` is that token
    /// (anything else is refused).
    pub(super) fn of(
        admin: &Admin,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Caller, Box<Response<AdminBody>>> {
        if let Some(refused) = untrusted(admin, "the connection API", req, peer) {
            return Err(refused);
        }
        Ok(Caller {
            peer,
            admin_token: admin.settings.token.is_some()
                && req.headers().contains_key(header::AUTHORIZATION),
        })
    }

    /// Where the caller called from, for the audit log.
    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// How the caller was trusted, for the audit log.
    pub(super) fn by(&self) -> &'static str {
        if self.admin_token {
            "admin token"
        } else {
            "loopback"
        }
    }

    fn audit(&self, action: &str, connection: &str, detail: &str) {
        let by = self.by();
        tracing::info!(target: "tokenwarden::audit", action, connection, peer = %self.peer, by, detail, "connection API write");
    }
}

/// The connection API's writes (they read a body): their response, or the request back
/// when it is none of them.
pub async fn route(
    admin: &Admin,
    segments: &[&str],
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<AdminBody>, Request<Incoming>> {
    match (req.method(), segments) {
        (&Method::POST, ["api", "v1", "connection", "instantiate", kind]) => {
            Ok(instantiate(admin, kind, req, peer).await)
        }
        (&Method::PUT | &Method::PATCH, ["api", "v1", "connection", key, "secret"]) => {
            Ok(secrets(admin, key, req, peer).await)
        }
        (&Method::DELETE, ["api", "v1", "connection", key]) => {
            Ok(delete(admin, key, &req, peer).await)
        }
        _ => Err(req),
    }
}

/// `GET /api/v1/connection_type`.
pub fn types(admin: &Admin, query: Option<&str>) -> Response<AdminBody> {
    let (page, size) = match fides::paging(query) {
        Ok(p) => p,
        Err(msg) => return invalid(vec![FieldError::new(&["query"], msg)]),
    };
    let templates = admin.reloader.templates();
    let items = (templates.iter().skip((page - 1) * size).take(size))
        .map(|t| fides::connection_type(t))
        .collect();
    json(
        StatusCode::OK,
        &fides::page(items, templates.len(), page, size),
    )
}

/// `GET /api/v1/connection`.
pub fn list(admin: &Admin, query: Option<&str>) -> Response<AdminBody> {
    let (page, size) = match fides::paging(query) {
        Ok(p) => p,
        Err(msg) => return invalid(vec![FieldError::new(&["query"], msg)]),
    };
    let registry = admin.registry.load();
    let items = (registry.page((page - 1) * size, size))
        .map(|e| fides::connection(e))
        .collect();
    let total = registry.len();
    json(StatusCode::OK, &fides::page(items, total, page, size))
}

/// `POST /api/v1/connection/instantiate/{type}`.
pub async fn instantiate(
    admin: &Admin,
    kind: &str,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    let caller = match Caller::of(admin, &req, peer) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    if let Err(e) = admin.runtime.template(kind) {
        return refused(&e);
    }
    let values: TemplateValues = match read_json(req).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let key = values.key.unwrap_or_else(|| values.instance_key.clone());
    let mut problems = Vec::new();
    check_key(
        &["body", "instance_key"],
        &values.instance_key,
        &mut problems,
    );
    check_key(&["body", "key"], &key, &mut problems);
    if !problems.is_empty() {
        return invalid(problems);
    }
    let definition = Definition {
        key: key.clone(),
        connector_type: kind.to_owned(),
        instance_key: values.instance_key,
        name: values.name,
        description: values.description,
        secrets: values.secrets,
        created_at: now_ms(),
        updated_at: None,
        last_test: None,
    };
    match admin.runtime.create(definition).await {
        Ok(entry) => {
            caller.audit("create", &key, kind);
            let body = json!({"connection": fides::connection(&entry), "dataset": null});
            json(StatusCode::OK, &body)
        }
        Err(e) => refused(&e),
    }
}

/// `PUT` (replace) and `PATCH` (merge) `/api/v1/connection/{key}/secret`.
pub async fn secrets(
    admin: &Admin,
    key: &str,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    let caller = match Caller::of(admin, &req, peer) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let merge = req.method() == Method::PATCH;
    let verify = match verify_flag(req.uri().query()) {
        Ok(v) => v,
        Err(msg) => return invalid(vec![FieldError::new(&["query", "verify"], msg)]),
    };
    if let Err(e) = admin.runtime.runtime_entry(key) {
        return refused(&e);
    }
    let mut given: Map<String, Value> = match read_json(req).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let seed = match token_secrets(admin, key, &mut given) {
        Ok(seed) => seed,
        Err(problems) => return invalid(problems),
    };
    let change = |d: &mut Definition| {
        if merge {
            d.secrets.extend(given);
        } else {
            d.secrets = given;
        }
    };
    let verify = verify.then_some(&admin.client);
    let (entry, test) = match admin.runtime.change(key, change, verify).await {
        Ok(changed) => changed,
        Err(e) => return refused(&e),
    };
    if let Some(tokens) = seed {
        let _guard = entry.tokens.write_lock.lock().await;
        if let Err(refused) = grant_import::store(admin, Holder::own(&entry), tokens).await {
            return *refused;
        }
        entry.tokens.signals.wake.notify_one();
        let generation = entry.tokens.generation();
        caller.audit("seed token", key, &format!("generation {generation}"));
    }
    caller.audit(
        if merge {
            "merge secrets"
        } else {
            "replace secrets"
        },
        key,
        "",
    );
    json(StatusCode::OK, &fides::test_status(key, test))
}

/// The secrets in which Fides keeps an authorization-code connection's tokens: in a
/// `PUT`/`PATCH …/secret` they seed the connection's grant (stored as a token set, as an
/// authorization would) instead of joining its definition.
const TOKEN_SECRETS: [&str; 3] = ["access_token", "refresh_token", "expires_at"];

/// Takes the token secrets out of `given`: the grant they seed, if any, or the problems
/// with them (a connection that has no grant of its own to seed, a value of the wrong type).
fn token_secrets(
    admin: &Admin,
    key: &str,
    given: &mut Map<String, Value>,
) -> Result<Option<grant_import::Tokens>, Vec<FieldError>> {
    let taken: Vec<(&str, Value)> = (TOKEN_SECRETS.iter())
        .filter_map(|name| given.remove(*name).map(|v| (*name, v)))
        .collect();
    let Some((first, _)) = taken.first() else {
        return Ok(None);
    };
    let entry = admin.registry.load().get(key).cloned();
    let auth = entry.as_ref().map(|e| (&e.conn.auth, e.grants.is_some()));
    let can_refresh = match auth {
        Some((Auth::OAuth2(_), true)) => {
            let msg = "this connection has a grant per user: import each with PUT /api/v1/connection/{key}/grants/{subject}";
            return Err(vec![FieldError::new(&["body", first], msg)]);
        }
        Some((auth @ Auth::OAuth2(_), false)) => grant_import::can_refresh(auth),
        _ => {
            let msg = "only an OAuth2 connection holds a token to seed";
            return Err(vec![FieldError::new(&["body", first], msg)]);
        }
    };
    let mut import = grant_import::Import::default();
    let mut problems = Vec::new();
    for (name, value) in taken {
        match (name, value) {
            ("expires_at", Value::Number(n)) if n.as_u64().is_some() => {
                import.expires_at = n.as_u64();
            }
            ("expires_at", Value::String(s)) if s.parse::<u64>().is_ok() => {
                import.expires_at = s.parse().ok();
            }
            ("expires_at", Value::Null) => {}
            ("expires_at", _) => problems.push(FieldError::new(
                &["body", name],
                "must be Unix seconds (an integer)",
            )),
            ("access_token", Value::String(s)) => import.access_token = Some(s),
            ("refresh_token", Value::String(s)) => import.refresh_token = Some(s),
            (_, Value::Null) => {}
            _ => problems.push(FieldError::new(&["body", name], "must be a string")),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    grant_import::check(import, can_refresh).map(Some)
}

/// `?verify=` (default true, as in Fides).
fn verify_flag(query: Option<&str>) -> Result<bool, String> {
    let mut verify = true;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name == "verify" {
            verify = match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err("expected true or false".into()),
            };
        }
    }
    Ok(verify)
}

/// `DELETE /api/v1/connection/{key}`.
pub async fn delete(
    admin: &Admin,
    key: &str,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Response<AdminBody> {
    let caller = match Caller::of(admin, req, peer) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    match admin.runtime.delete(key).await {
        Ok(()) => {
            caller.audit("delete", key, "");
            let mut response = json(StatusCode::NO_CONTENT, &Value::Null);
            *response.body_mut() = AdminBody::default();
            response.headers_mut().remove(header::CONTENT_TYPE);
            response
        }
        Err(e) => refused(&e),
    }
}

/// A connection key: letters, digits, `-`, `_` or `.` (it is a URL path segment in
/// reverse mode), as in the config file.
fn check_key(loc: &[&str], key: &str, problems: &mut Vec<FieldError>) {
    let fine = !key.is_empty()
        && key.len() <= 255
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !fine {
        problems.push(FieldError::new(
            loc,
            "must be 1 to 255 letters, digits, `-`, `_` or `.`",
        ));
    }
}

/// The request's JSON body: at most [`MAX_BODY`] bytes (413), `application/json` (415:
/// a page elsewhere can post a form, not JSON, without asking first), and of shape `T`
/// (422 naming where it is not).
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Box<Response<AdminBody>>> {
    let is_json = (req.headers().get(header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Box::new(json(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &json!({"detail": "the body must be JSON (Content-Type: application/json)"}),
        )));
    }
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Box::new(json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"detail": format!("the body is larger than {MAX_BODY} bytes")}),
            )))
        }
        Err(_) => {
            return Err(Box::new(json(
                StatusCode::BAD_REQUEST,
                &json!({"detail": "the body could not be read"}),
            )))
        }
    };
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let mut loc = vec!["body".to_owned()];
        let path = e.path().to_string();
        if path != "." {
            loc.extend(path.split('.').map(str::to_owned));
        }
        // serde's own text names the field and the expected type; it quotes no value
        // but an unknown variant's, which these bodies have none of.
        let inner = e.into_inner();
        let msg = match inner.classify() {
            serde_json::error::Category::Data => data_message(&inner),
            _ => format!(
                "invalid JSON at line {}, column {}",
                inner.line(),
                inner.column()
            ),
        };
        Box::new(invalid(vec![FieldError { loc, msg }]))
    })
}

/// serde's message for a body of the wrong shape, without the position it appends.
fn data_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// 422 with every problem, FastAPI's shape: `{"detail": [{"loc": […], "msg": …}]}`.
pub(super) fn invalid(problems: Vec<FieldError>) -> Response<AdminBody> {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({"detail": problems}),
    )
}

/// The answer to a refused change.
fn refused(e: &RuntimeError) -> Response<AdminBody> {
    let status = match e {
        RuntimeError::Invalid(problems) => return invalid(problems.clone()),
        RuntimeError::UnknownType(_) | RuntimeError::NotFound(_) => StatusCode::NOT_FOUND,
        RuntimeError::Exists(_) | RuntimeError::FromFile { .. } | RuntimeError::Busy(_) => {
            StatusCode::CONFLICT
        }
        RuntimeError::Store(_) => {
            tracing::error!(error = %e, "a connection API write could not be stored");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    json(status, &json!({"detail": e.to_string()}))
}
