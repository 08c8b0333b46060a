//! `GET /metrics`: the OpenMetrics text exposition, encoded by prometheus-client from a
//! [`Scrape`] of the sidecar taken when the request arrives (see `collector` for the
//! families). Ends with `# EOF`.

use super::collector::Scrape;
use super::{Admin, AdminBody};
use crate::token::store::Backend;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn render(admin: &Admin) -> Response<AdminBody> {
    let (backend, up, _) = admin.backend.health();
    let scrape = Scrape {
        registry: admin.registry.load_full(),
        instruments: std::sync::Arc::clone(&admin.instruments),
        store: (backend, up),
        // With Redis the states live there (bounded by their TTL): this process cannot count them.
        pending: matches!(admin.backend, Backend::Local(_)).then(|| admin.pending.len()),
        per_connection: admin.settings.metrics_per_connection,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    let mut response = match prometheus_client::encoding::text::encode(&mut out, &registry) {
        Ok(()) => Response::new(Full::new(Bytes::from(out))),
        // Writing to a String fails only if an encoder refuses a value: never expected.
        Err(_) => {
            tracing::error!("the metrics could not be encoded");
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return r;
        }
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
