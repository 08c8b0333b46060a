//! What both paths record for `/metrics` about a routed request, in one place so they
//! count alike: its duration by status class ([`answered`], [`failed`]), the kind of an
//! upstream failure ([`failed`], [`dial`]) and the upstream connect time ([`dial`]).
//!
//! A request's duration runs from when its head was read (the fast path's parse, the hyper
//! path's handler) to when the response head was ready for the app: the upstream's, or
//! the proxy's own 502, 503 or 504 for a routed connection. The body's relay is not in it
//! (the hyper path streams it after the handler returned), nor are refusals before a
//! connection was routed (404, 403, 508, 400). Each costs one clock read (the end) and
//! two relaxed atomic adds; nothing here locks or allocates.

use super::error::ProxyError;
use super::upstream::{DialError, Dialer, Offer, Stream};
use super::Proxy;
use crate::instrument::UpstreamError;
use crate::registry::Entry;
use tokio::time::Instant;

/// `entry`'s upstream answered with `status`; the request was read at `started`.
#[inline]
pub(crate) fn answered(entry: &Entry, status: u16, started: Instant) {
    let took = Instant::now().saturating_duration_since(started);
    entry.counters.requests.answered(status, took);
}

/// The request read at `started` is answered with `error`: counted with its status class
/// when it names a routed connection (`no_token`, an upstream fault), and an upstream
/// fault by its kind — except a failed dial (`connect`, `tls`), which [`dial`] counted
/// where it happened.
pub(crate) fn failed(proxy: &Proxy, error: &ProxyError, started: Instant) {
    let (connection, kind) = match error {
        ProxyError::NoToken { connection, .. } => (connection, None),
        ProxyError::Upstream { connection, fault } => match fault.kind {
            UpstreamError::Connect | UpstreamError::Tls => (connection, None),
            kind => (connection, Some(kind)),
        },
        _ => return,
    };
    let Some(entry) = proxy.registry.get(connection) else {
        return;
    };
    if let Some(kind) = kind {
        entry.counters.requests.upstream_error(kind);
    }
    answered(entry, error.status().as_u16(), started);
}

/// Opens a connection to `entry`'s upstream with `dialer`, offering `offer`: its connect
/// time recorded, or its failure counted by kind (`connect` or `tls`).
pub(crate) async fn dial(
    dialer: &Dialer,
    entry: &Entry,
    offer: Offer,
) -> Result<Stream, DialError> {
    let started = Instant::now();
    let opened = dialer.open(&entry.conn, offer).await;
    let instruments = &entry.counters.requests;
    match &opened {
        Ok(_) => instruments.connect.record(started.elapsed()),
        Err(e) => instruments.upstream_error(e.kind()),
    }
    opened
}
