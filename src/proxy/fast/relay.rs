//! Relaying a response body to the app on the fast path: the translated head goes out
//! with the first body bytes, then the body as the upstream framed it (length, chunked —
//! tracked by the [`ChunkedScanner`] — or until close), never a byte past its end, so
//! what follows stays in the link's buffer (and a link with leftovers is not pooled). An
//! upstream that sends nothing for `proxy.upstream_read_timeout` between two reads of the
//! body breaks the relay (on the worker's coarse [`Timers`]: no timer per read).

use super::io::write_all2;
use super::link::Link;
use super::COALESCE;
use crate::proxy::chunked::{ChunkedError, ChunkedScanner};
use crate::proxy::deadline::Timers;
use crate::proxy::response::Framing;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncWrite;

/// Why a relay stopped short: the app may have part of the response (or its connection
/// failed, or the body's framing broke).
pub(super) enum Relay {
    Broken,
}

/// Writes the translated head and relays the body as framed, leaving `link.buf` holding
/// whatever followed the body; each read of the body must bring bytes within `idle`.
pub(super) async fn relay<A: AsyncWrite + Unpin>(
    link: &mut Link,
    app: &mut A,
    framing: Framing,
    timers: &Rc<Timers>,
    idle: Duration,
) -> Result<(), Relay> {
    let Link {
        stream, buf, head, ..
    } = link;
    let mut body = BodyLeft::new(framing);
    let mut first = true;
    loop {
        let take = match body.take(buf.pending()) {
            Ok(take) => take,
            Err(e) => {
                tracing::debug!(error = %e, "the upstream's response body is malformed");
                return Err(Relay::Broken);
            }
        };
        let chunk = &buf.pending()[..take];
        let written = if !first {
            write_all2(app, chunk, &[]).await
        } else if chunk.len() <= COALESCE {
            head.extend_from_slice(chunk);
            write_all2(app, head, &[]).await
        } else {
            write_all2(app, head, chunk).await
        };
        written.map_err(|_| Relay::Broken)?;
        first = false;
        buf.consume(take);
        if body.is_done() {
            return Ok(());
        }
        match timers.timeout(idle, buf.fill(stream)).await {
            Ok(Ok(0)) if matches!(body, BodyLeft::UntilClose) => return Ok(()),
            Ok(Ok(0) | Err(_)) => return Err(Relay::Broken),
            Ok(Ok(_)) => {}
            Err(_) => {
                tracing::debug!(
                    ?idle,
                    "the upstream's response body stalled past proxy.upstream_read_timeout"
                );
                return Err(Relay::Broken);
            }
        }
    }
}

/// What is left of a response body being relayed.
enum BodyLeft {
    Bytes(u64),
    Chunked(ChunkedScanner),
    UntilClose,
}

impl BodyLeft {
    fn new(framing: Framing) -> BodyLeft {
        match framing {
            Framing::Empty => BodyLeft::Bytes(0),
            Framing::Length(n) => BodyLeft::Bytes(n),
            Framing::Chunked => BodyLeft::Chunked(ChunkedScanner::new()),
            Framing::UntilClose => BodyLeft::UntilClose,
        }
    }

    /// How many of the bytes at hand belong to the body.
    fn take(&mut self, at_hand: &[u8]) -> Result<usize, ChunkedError> {
        Ok(match self {
            BodyLeft::Bytes(left) => {
                let take = at_hand
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= take as u64;
                take
            }
            BodyLeft::Chunked(scanner) => scanner.scan(at_hand)?,
            BodyLeft::UntilClose => at_hand.len(),
        })
    }

    fn is_done(&self) -> bool {
        match self {
            BodyLeft::Bytes(left) => *left == 0,
            BodyLeft::Chunked(scanner) => scanner.is_done(),
            BodyLeft::UntilClose => false,
        }
    }
}
