//! The fast path's upstream connections of one proxy worker thread: raw [`Link`]s (a
//! stream, its read buffer, the buffer the app's response head is written into), idle by
//! upstream origin in the worker's [`IdleLists`] (no lock, no atomics), checked out for
//! one request and returned once its response was read to the end with nothing left over.
//! Nothing reads an idle link, so [`Links::reap`] closes those the upstream closed. Opened
//! by the shared [`Dialer`], with both pools' limits.

use super::io::Buf;
use crate::instrument::{Gauge, Open};
use crate::proxy::idle::{Idle, IdleLists};
use crate::proxy::measure;
use crate::proxy::upstream::{DialError, Dialer, Offer, Stream};
use crate::registry::{Entry, Origin};
use std::sync::Arc;
use tokio::time::Instant;

/// Read buffer of a link (a response head must fit; bodies are relayed through it in
/// pieces of up to this size).
pub const LINK_BUFFER: usize = 16 * 1024;

/// A fast-path upstream connection: the stream, its read buffer, and the buffer the
/// response head for the app is written into.
pub struct Link {
    pub stream: Stream,
    pub buf: Buf,
    pub head: Vec<u8>,
    /// Counts it in `tokenwarden_open_connections{side="upstream"}` while it exists.
    _open: Open,
}

impl Idle for Link {
    fn open(&self) -> bool {
        self.stream.idle_and_open()
    }
}

/// The idle links of one worker.
pub struct Links {
    idle: IdleLists<Link>,
    dialer: Dialer,
    /// The open upstream connections of the process.
    open: Arc<Gauge>,
}

impl Links {
    pub fn new(dialer: Dialer, open: Arc<Gauge>) -> Links {
        Links {
            idle: IdleLists::default(),
            dialer,
            open,
        }
    }

    /// An idle link to `origin` that is still open.
    pub fn checkout(&self, origin: &Origin, now: Instant) -> Option<Link> {
        self.idle.take(origin, now)
    }

    /// Returns a link whose last response was read to its end; idle since `since` (the
    /// start of that request will do: it errs on the old side).
    pub fn checkin(&self, origin: &Origin, mut link: Link, since: Instant) {
        if link.stream.is_clean() {
            self.idle.put(origin, link, since);
        }
    }

    /// Closes idle links the upstream closed or that waited too long, while any are
    /// pooled ([`IdleLists::reap`]).
    pub async fn reap(&self) {
        self.idle.reap().await;
    }

    /// A new HTTP/1.1 link to `entry`'s upstream (timed, or its failure counted:
    /// [`measure::dial`]).
    pub async fn connect(&self, entry: &Entry) -> Result<Link, DialError> {
        let stream = measure::dial(&self.dialer, entry, Offer::Http1).await?;
        Ok(self.link(stream))
    }

    fn link(&self, stream: Stream) -> Link {
        Link {
            stream,
            buf: Buf::with_capacity(LINK_BUFFER),
            head: Vec::new(),
            _open: self.open.open(),
        }
    }

    /// For `upstream_http2: auto` over https, before the first request to `entry`'s
    /// upstream: opens a connection offering both versions and learns which one the
    /// upstream chose ([`Entry::version`]). One that chose HTTP/1.1 is pooled for the
    /// request; one that chose HTTP/2 is closed (the hyper path, which speaks it, opens
    /// its own, once). False when the dial failed (not counted here: the hyper path then
    /// dials, and counts its outcome).
    pub async fn learn(&self, entry: &Entry, now: Instant) -> bool {
        let Ok(stream) = self.dialer.open(&entry.conn, Offer::Either).await else {
            return false;
        };
        let h2 = stream.speaks_h2();
        entry.version.learned(h2);
        if !h2 {
            self.checkin(&entry.origin, self.link(stream), now);
        }
        true
    }
}
