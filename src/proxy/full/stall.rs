//! The slow-body bounds of the hyper path, as the fast path has them: a streamed request
//! body fails when it sends nothing for `proxy.body_read_timeout` while the upstream side
//! waits for it; a body whose known length is at most [`MAX_WHOLE_BODY`] must arrive whole
//! within that time, and a larger or chunked one must average at least [`MIN_BODY_RATE`]
//! after a first `body_read_timeout` of grace. Either way the request ends (400) and the
//! connection closes, instead of an app holding an upstream connection open byte by byte.
//! The clock runs only while the body is awaited: the upstream's own back-pressure never
//! counts against the app.

use crate::proxy::unauthorized::MAX_REPLAY_BODY;
use bytes::Buf;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A body of a known length up to this must arrive whole within `body_read_timeout` (the
/// fast path buffers such bodies, up to the same bound [`MAX_REPLAY_BODY`], under the same
/// rule).
pub const MAX_WHOLE_BODY: u64 = MAX_REPLAY_BODY as u64;
/// Bytes per second a larger or chunked body must average, over the time it is awaited,
/// after a first `body_read_timeout` of grace: its budget of waiting time is
/// `body_read_timeout` plus one second per this many bytes received.
pub const MIN_BODY_RATE: u64 = 1024;

/// The error of a body that stalled.
#[derive(Debug, thiserror::Error)]
pub enum Stalled {
    #[error("the request body sent nothing for {0:?}")]
    Paused(Duration),
    #[error("the request body arrived too slowly (proxy.body_read_timeout, a minimum rate)")]
    TooSlow,
}

pin_project! {
    /// A request body bounded by [`Stalled`].
    pub struct Bounded<B> {
        #[pin]
        inner: B,
        // Boxed, so the body is `Unpin` whenever its inner body is.
        sleep: Pin<Box<Sleep>>,
        after: Duration,
        // Larger than MAX_WHOLE_BODY or of unknown length: the budget grows with the bytes.
        rated: bool,
        // Only each pause is bounded, not the waiting time in all (`pausing`).
        pausing: bool,
        received: u64,
        // Time spent awaiting the body, up to the start of the current wait.
        waited: Duration,
        // The start of the current wait (none while frames flow).
        since: Option<Instant>,
        // The current wait's deadline is the budget's, not the pause's.
        budget_bound: bool,
    }
}

impl<B: http_body::Body> Bounded<B> {
    pub fn new(inner: B, after: Duration) -> Bounded<B> {
        let whole = inner
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MAX_WHOLE_BODY);
        Bounded::with(inner, after, !whole, false)
    }

    /// A body that fails only when it pauses for `after`, without a minimum rate: an
    /// HTTP/2 stream's (`proxy.stream_idle_timeout`; h2 flow control bounds what it holds).
    pub fn pausing(inner: B, after: Duration) -> Bounded<B> {
        Bounded::with(inner, after, false, true)
    }

    fn with(inner: B, after: Duration, rated: bool, pausing: bool) -> Bounded<B> {
        Bounded {
            inner,
            sleep: Box::pin(tokio::time::sleep(after)),
            after,
            rated,
            pausing,
            received: 0,
            waited: Duration::ZERO,
            since: None,
            budget_bound: false,
        }
    }
}

/// The waiting time a body may take in all, having received `received` bytes.
fn budget(after: Duration, rated: bool, received: u64) -> Duration {
    if !rated {
        return after;
    }
    after.saturating_add(Duration::from_secs_f64(
        received as f64 / MIN_BODY_RATE as f64,
    ))
}

impl<B> http_body::Body for Bounded<B>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if let Some(since) = this.since.take() {
                *this.waited += since.elapsed();
            }
            if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                *this.received += data.remaining() as u64;
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.since.is_none() {
            let now = Instant::now();
            *this.since = Some(now);
            let left = match *this.pausing {
                true => *this.after,
                false => {
                    budget(*this.after, *this.rated, *this.received).saturating_sub(*this.waited)
                }
            };
            *this.budget_bound = left < *this.after;
            this.sleep.as_mut().reset(now + left.min(*this.after));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) if *this.budget_bound => {
                Poll::Ready(Some(Err(Box::new(Stalled::TooSlow))))
            }
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled::Paused(*this.after))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_and_one_that_flows_does_not() {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
        let stream = tokio_stream_from(rx);
        let mut body = Bounded::new(StreamBody::new(stream), Duration::from_secs(5));
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        // Four seconds of silence is within the bound …
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"b"))))
                .await
                .unwrap();
            tx
        });
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "b"
        );
        // … more is not (here the minimum rate ends it first, one second later).
        let _tx = sender.await.unwrap();
        let stalled = body.frame().await.unwrap();
        assert!(stalled.unwrap_err().is::<Stalled>());
    }

    /// Sends `count` frames of `size` bytes, one every second, on a new task.
    fn every_second(
        size: usize,
        count: usize,
    ) -> impl http_body::Body<Data = Bytes, Error = std::io::Error> {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
        tokio::spawn(async move {
            for _ in 0..count {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let frame = http_body::Frame::data(Bytes::from(vec![b'x'; size]));
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
        });
        StreamBody::new(tokio_stream_from(rx))
    }

    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_must_keep_the_minimum_rate_after_its_grace() {
        let after = Duration::from_secs(5);
        // One byte a second never pauses for 5 s, but falls below the rate once 5 s of
        // grace are used up.
        let mut body = Bounded::new(every_second(1, 100), after);
        let started = Instant::now();
        let error = loop {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => break e,
                None => panic!("the body ended"),
            }
        };
        let took = started.elapsed();
        assert!(
            matches!(error.downcast_ref(), Some(Stalled::TooSlow)),
            "{error}"
        );
        assert!(
            took >= after && took < after + Duration::from_millis(100),
            "{took:?}"
        );
        // Twice the rate goes on for as long as it flows.
        let mut body = Bounded::new(every_second(2 * MIN_BODY_RATE as usize, 30), after);
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            frame.unwrap();
            frames += 1;
        }
        assert_eq!(frames, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pausing_body_has_no_minimum_rate() {
        // One byte a second for a minute: below the rate, never paused for 5 s.
        let mut body = Bounded::pausing(every_second(1, 60), Duration::from_secs(5));
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            frame.unwrap();
            frames += 1;
        }
        assert_eq!(frames, 60);
    }

    /// A `Stream` of the channel's items.
    fn tokio_stream_from<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
