//! The slow-body bound of the hyper path: a streamed request body that sends nothing for
//! `proxy.body_read_timeout` while the upstream side waits for it fails, so the request
//! ends (400) and the connection closes, instead of an app holding an upstream
//! connection open byte by byte. The clock runs only while the body is awaited: the
//! upstream's own back-pressure never counts against the app.

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The error of a body that stalled.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub struct Stalled(Duration);

pin_project! {
    /// A request body bounded by [`Stalled`].
    pub struct Bounded<B> {
        #[pin]
        inner: B,
        // Boxed, so the body is `Unpin` whenever its inner body is.
        sleep: Pin<Box<Sleep>>,
        after: Duration,
        // The last poll returned a frame: the next wait starts the clock afresh.
        fresh: bool,
    }
}

impl<B> Bounded<B> {
    pub fn new(inner: B, after: Duration) -> Bounded<B> {
        Bounded {
            inner,
            sleep: Box::pin(tokio::time::sleep(after)),
            after,
            fresh: true,
        }
    }
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
            *this.fresh = true;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if std::mem::take(this.fresh) {
            this.sleep.as_mut().reset(Instant::now() + *this.after);
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(*this.after))))),
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
        // … six is not.
        let _tx = sender.await.unwrap();
        let stalled = body.frame().await.unwrap();
        assert!(stalled.unwrap_err().is::<Stalled>());
    }

    /// A `Stream` of the channel's items.
    fn tokio_stream_from<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
