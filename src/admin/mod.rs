//! The admin listener. Routes:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the status page: HTML, every connection and the store's health, an Authorize button for authorization-code connections (see `page`) |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when every client-credentials connection holds a usable token, else 503 with the ones that do not; the body also shows the store's health |
//! | `GET /metrics` | OpenMetrics text (prometheus-client): token state, expiry, token requests and their durations, proxied requests and their durations, upstream connects and errors, `no_token` refusals, open connections, store health (see `collector`) |
//! | `GET /api/v1/connections` | every connection's status (never a token value); `?page=&size=` for one page |
//! | `GET /api/v1/connection/{key}` | one connection's status, with Fides' `ConnectionConfigurationResponse` fields |
//! | `GET /api/v1/connection/{key}/authorize` | mints a state and returns the authorization URL as a JSON string, as plain text with `?format=text`, or as a 303 redirect with `?format=redirect` (trusted callers only; never for a request a browser marks cross-site) |
//! | `POST /api/v1/reload` | reads the config file again and applies it (trusted callers only) |
//! | `GET /api/v1/reload` | the last reload's outcome |
//! | `POST /api/v1/connection/{key}/retry` | a failed or backing-off connection tries again now (trusted callers only) |
//! | `GET /api/v1/oauth/callback` | the provider's redirect: exchanges the code once |
//! | `GET /api/v1/connection_type`, `GET /api/v1/connection`, `POST /api/v1/connection/instantiate/{type}`, `PUT`/`PATCH /api/v1/connection/{key}/secret`, `DELETE /api/v1/connection/{key}` | the connection API: runtime connections, in Fides' shapes (see `connections`; writes: trusted callers only, audited) |
//!
//! Every route but the probes answers 421 to a `Host` that is not the listener's own (DNS
//! rebinding, see `host`); who may use the routes that act is `access`.
//!
//! Access logs record method, path (never the query: it carries codes and states) and status;
//! probes (`/healthz`, `/readyz`, `/metrics`) at debug level, the rest at info.

mod access;
mod collector;
mod connections;
mod fides;
mod forwarded;
mod grant_import;
mod grant_revoke;
mod grants;
mod host;
mod metrics;
mod oauth;
mod page;
mod retry;
mod status;
mod user_auth;

use crate::config::AdminSettings;
use crate::oauth::pending::PendingStates;
use crate::oauth::TokenClient;
use crate::registry::Registry;
use crate::reload::Reloader;
use crate::token::store::Backend;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

pub use host::OwnNames;

pub type AdminBody = Full<Bytes>;

/// Routes polled by probes and scrapers, logged at debug level.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub struct Admin {
    /// The current connections (a reload swaps them).
    pub registry: Arc<ArcSwap<Registry>>,
    pub reloader: Arc<Reloader>,
    pub settings: AdminSettings,
    pub pending: PendingStates,
    pub client: TokenClient,
    pub backend: Backend,
    /// The proxy's open-connection gauges.
    pub instruments: Arc<crate::instrument::Instruments>,
    /// The connection API's side: runtime connections created, changed, deleted.
    pub runtime: Arc<crate::runtime::Runtime>,
    /// The address the admin listener is bound to (with `admin.public_url`, which a reload
    /// may change, the names it answers to: [`Admin::names`]).
    pub listen: std::net::IpAddr,
}

impl Admin {
    /// The names this listener answers to (`Host`) and the origins that may act, under the
    /// running config's `admin.public_url`.
    pub fn names(&self) -> OwnNames {
        OwnNames::new(
            self.listen,
            self.reloader.public_url().as_deref().map(String::as_str),
        )
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<AdminBody> {
        let method = req.method().clone();
        let path = logged_path(req.uri().path()).to_owned();
        let response = self.route(req, peer).await;
        let status = response.status().as_u16();
        // Probes come every few seconds from every kubelet: debug, not info.
        if PROBES.contains(&path.as_str()) {
            tracing::debug!(target: "tokenwarden::access", %method, %path, status, %peer, "admin request");
        } else {
            tracing::info!(target: "tokenwarden::access", %method, %path, status, %peer, "admin request");
        }
        response
    }

    /// `POST /api/v1/reload` (reload now) and `GET` (the last reload's outcome).
    async fn reload(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<AdminBody> {
        match *req.method() {
            Method::POST => match access::untrusted(self, "reload", req, peer) {
                Some(refused) => *refused,
                None => {
                    let outcome = self.reloader.reload().await;
                    let status = match outcome.result {
                        "applied" => StatusCode::OK,
                        _ => StatusCode::UNPROCESSABLE_ENTITY,
                    };
                    json(status, &serde_json::json!(*outcome))
                }
            },
            Method::GET | Method::HEAD => match access::untrusted(self, "reload", req, peer) {
                Some(refused) => *refused,
                None => json(StatusCode::OK, &serde_json::json!(*self.reloader.last())),
            },
            _ => json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({"error": "method_not_allowed", "allow": "GET, POST"}),
            ),
        }
    }

    async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<AdminBody> {
        // Owned: the connection API's writes take the request (its body) along.
        let path = req.uri().path().to_owned();
        let path = path.as_str();
        // DNS rebinding: only the probes answer a name that is not the listener's own.
        if !PROBES.contains(&path)
            && !host::request_host(&req).is_some_and(|h| self.names().is_own_host(h))
        {
            return host::misdirected();
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let ["api", "v1", "reload"] = segments.as_slice() {
            return self.reload(&req, peer).await;
        }
        if let ["api", "v1", "connection", key, "retry"] = segments.as_slice() {
            return match *req.method() {
                Method::POST => retry::retry(self, key, &req, peer),
                _ => json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &serde_json::json!({"error": "method_not_allowed", "allow": "POST"}),
                ),
            };
        }
        let req = match grants::route(self, &segments, req, peer).await {
            Ok(response) => return response,
            Err(req) => req,
        };
        let req = match connections::route(self, &segments, req, peer).await {
            Ok(response) => return response,
            Err(req) => req,
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({"error": "method_not_allowed"}),
            );
        }
        match segments.as_slice() {
            [""] => page::render(self, req.headers(), peer, req.uri().query()).await,
            ["healthz"] => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            ["readyz"] => status::ready(&self.registry.load(), &self.backend),
            ["metrics"] => metrics::render(self),
            ["api", "v1", "connections"] => {
                status::list(&self.registry.load_full(), &self.backend, req.uri().query()).await
            }
            ["api", "v1", "connection_type"] => connections::types(self, req.uri().query()),
            ["api", "v1", "connection"] => connections::list(self, req.uri().query()),
            ["api", "v1", "connection", key] => {
                status::one(&self.registry.load_full(), &self.backend, key).await
            }
            // These two act (mint a state, exchange a code): GET only, never HEAD.
            ["api", "v1", "connection", _, "authorize"] | ["api", "v1", "oauth", "callback"]
                if req.method() != Method::GET =>
            {
                json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &serde_json::json!({"error": "method_not_allowed"}),
                )
            }
            ["api", "v1", "connection", key, "authorize"] => {
                oauth::authorize(self, key, &req, peer).await
            }
            ["api", "v1", "oauth", "callback"] => {
                oauth::callback(self, req.uri().query().unwrap_or_default()).await
            }
            _ => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not_found"}),
            ),
        }
    }
}

pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<AdminBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A request path as the access log shows it: a user's subject (`…/grants/{subject}`)
/// is personal data, kept out of the log.
fn logged_path(path: &str) -> &str {
    match path.find("/grants/") {
        Some(at) if path.starts_with("/api/v1/connection/") => &path[..at + "/grants/".len()],
        _ => path,
    }
}
