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
use crate::proxy::upstream::{DialError, Dialer, Stream};
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

    /// A new link to `entry`'s upstream (timed, or its failure counted: [`measure::dial`]).
    pub async fn connect(&self, entry: &Entry) -> Result<Link, DialError> {
        Ok(Link {
            stream: measure::dial(&self.dialer, entry).await?,
            buf: Buf::with_capacity(LINK_BUFFER),
            head: Vec::new(),
            _open: self.open.open(),
        })
    }
}
