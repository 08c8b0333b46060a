//! The hyper path's read deadline on a response body (`proxy.upstream_read_timeout`, as
//! the fast path's relay has it; `proxy.stream_idle_timeout` for an HTTP/2 request): a body that yields nothing for that long while the app
//! side waits for it fails, so hyper closes the app's connection (the response has begun;
//! only a close can tell the app it is cut short) and the upstream connection is dropped
//! with the body. The clock is the worker's coarse [`Timers`]: no tokio timer per
//! response, a slab slot only while a read is pending, and the app's own back-pressure
//! never counts (the clock runs only while the body is polled and has nothing).

use crate::proxy::deadline::{Guarded, Timers};
use pin_project_lite::pin_project;
use std::future::{pending, Future, Pending};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The error of a response body that stalled.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's response body sent nothing for {0:?} (proxy.upstream_read_timeout; on HTTP/2, proxy.stream_idle_timeout)")]
pub struct Stalled(Duration);

pin_project! {
    /// A response body bounded by [`Stalled`].
    pub struct ReadBounded<B> {
        #[pin]
        inner: B,
        timers: Rc<Timers>,
        after: Duration,
        // The deadline of the current wait (none while frames flow).
        wait: Option<Guarded<Pending<()>>>,
    }
}

impl<B> ReadBounded<B> {
    pub fn new(inner: B, timers: &Rc<Timers>, after: Duration) -> ReadBounded<B> {
        ReadBounded {
            inner,
            timers: Rc::clone(timers),
            after,
            wait: None,
        }
    }
}

impl<B> http_body::Body for ReadBounded<B>
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
            // Frees the slot: the next wait starts the clock afresh.
            *this.wait = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let (timers, after) = (&*this.timers, *this.after);
        let wait = this
            .wait
            .get_or_insert_with(|| timers.timeout(after, pending()));
        match Pin::new(wait).poll(cx) {
            Poll::Ready(_) => {
                *this.wait = None;
                Poll::Ready(Some(Err(Box::new(Stalled(after)))))
            }
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
    use tokio_util::sync::CancellationToken;

    #[tokio::test(start_paused = true)]
    async fn a_response_body_that_stalls_fails_and_one_that_flows_does_not() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let timers = Timers::new();
                tokio::task::spawn_local(Rc::clone(&timers).run(CancellationToken::new()));
                let (tx, mut rx) = tokio::sync::mpsc::channel::<
                    Result<http_body::Frame<Bytes>, std::io::Error>,
                >(1);
                let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
                let after = Duration::from_secs(5);
                let mut body = ReadBounded::new(StreamBody::new(stream), &timers, after);
                // A frame every four seconds keeps it going …
                let sender = tokio::task::spawn_local(async move {
                    for _ in 0..3 {
                        tokio::time::sleep(Duration::from_secs(4)).await;
                        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"a"))))
                            .await
                            .unwrap();
                    }
                    tx
                });
                for _ in 0..3 {
                    let frame = body.frame().await.unwrap().unwrap();
                    assert_eq!(frame.into_data().unwrap(), "a");
                }
                // … five seconds of nothing ends it (never early, at most two ticks late).
                let _tx = sender.await.unwrap();
                let started = tokio::time::Instant::now();
                let stalled = body.frame().await.unwrap();
                assert!(stalled.unwrap_err().is::<Stalled>());
                let waited = started.elapsed();
                assert!(waited >= after && waited <= after + Duration::from_millis(300));
            })
            .await;
    }
}
