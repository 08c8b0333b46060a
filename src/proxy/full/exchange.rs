//! One request on the hyper path as the shared lifecycle drives it ([`Exchange`], a
//! [`Transport`]): planned from the head hyper parsed, sent on the worker's hyper pool
//! ([`Proxy::send_upstream`]), and — when it may be replayed after a 401 — its body read
//! whole first and kept with a copy of the head ([`keep_for_replay`]), as the fast path
//! keeps a request in its buffer.

use super::pool::{Pool, PooledBody};
use super::{ask, body_unreadable, stall, UpstreamBody};
use crate::proxy::error::ProxyError;
use crate::proxy::lifecycle::{Prepared, Transport};
use crate::proxy::tunnel::Inside;
use crate::proxy::{unauthorized, Proxy};
use crate::registry::Entry;
use bytes::Bytes;
use http::header::HeaderMap;
use http::uri::Uri;
use http::{Method, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::rc::Rc;
use tokio::time::Instant;

/// One request on the hyper path, as the lifecycle drives it.
pub(super) struct Exchange<'w> {
    pool: &'w Rc<Pool>,
    tunnel: Option<&'w Inside>,
    /// The app's request, until it is sent.
    app: Option<Request<Incoming>>,
    /// Then, when it may be replayed after a 401, a copy ([`keep_for_replay`]).
    kept: Option<Kept>,
    /// When it was last planned: the first send plans again as of then, so a token
    /// usable then is the one sent (however long its body took to read).
    planned_at: Instant,
}

impl<'w> Exchange<'w> {
    /// The app's request `req` (inside the intercepted tunnel to `tunnel`, if any), to be
    /// sent on `pool`.
    pub(super) fn new(
        pool: &'w Rc<Pool>,
        req: Request<Incoming>,
        tunnel: Option<&'w Inside>,
        now: Instant,
    ) -> Self {
        Exchange {
            pool,
            tunnel,
            app: Some(req),
            kept: None,
            planned_at: now,
        }
    }

    /// Plans the request (as it arrived) at `now`: what the lifecycle needs to know
    /// before it is sent. Sending plans it again, with the same result unless the token
    /// changed meanwhile ([`Proxy::send_upstream`]).
    pub(super) fn plan<'p>(
        &self,
        proxy: &'p Proxy,
        now: Instant,
    ) -> Result<Prepared<'p>, ProxyError> {
        let (method, uri, headers) = match (&self.app, &self.kept) {
            (Some(app), _) => (app.method(), app.uri(), app.headers()),
            (None, Some(kept)) => (&kept.method, &kept.uri, &kept.headers),
            // (Sent, and not kept: the lifecycle plans no replay of it.)
            (None, None) => return Err(body_unreadable()),
        };
        let named = crate::proxy::choice::Named::of(headers);
        let subject = crate::proxy::choice::subject_of(headers);
        let ask = ask(method, uri, headers, (named, subject), proxy, self.tunnel);
        Ok(proxy.plan(&ask, now)?.prepared())
    }
}

impl Transport for Exchange<'_> {
    type Answer = Response<PooledBody>;

    fn access_line(&self) -> (String, String) {
        match &self.app {
            Some(app) => (app.method().to_string(), app.uri().to_string()),
            None => Default::default(),
        }
    }

    fn prepare<'p>(
        &mut self,
        proxy: &'p Proxy,
        now: Instant,
    ) -> Option<Result<Prepared<'p>, ProxyError>> {
        self.planned_at = now;
        Some(self.plan(proxy, now))
    }

    async fn send<'p>(
        &mut self,
        proxy: &'p Proxy,
        req: &mut Prepared<'p>,
    ) -> Result<Self::Answer, ProxyError> {
        let upstream = match (self.app.take(), &self.kept) {
            (Some(app), _) => {
                let replayable = req.idempotent && req.token != 0;
                let (upstream, kept) = keep_for_replay(proxy, app, replayable).await?;
                self.kept = kept;
                upstream
            }
            (None, Some(kept)) => kept.request(),
            // (Sent, and not kept: the lifecycle asks for no replay of it.)
            (None, None) => return Err(body_unreadable()),
        };
        let sent = proxy.send_upstream(self.pool, upstream, self.tunnel, self.planned_at);
        let (sent, response) = sent.await?;
        *req = sent;
        Ok(response)
    }

    fn status(answer: &Self::Answer) -> u16 {
        answer.status().as_u16()
    }

    fn replayable(&self) -> bool {
        self.kept.is_some()
    }

    async fn discard(&mut self, answer: Self::Answer, _: &Entry) {
        // The body is dropped unread: hyper then closes that connection.
        drop(answer);
    }
}

/// A request kept whole for its replay after a 401 ([`keep_for_replay`]): the
/// app's head as it arrived (the replay is planned afresh) and its body.
struct Kept {
    method: Method,
    uri: Uri,
    version: http::Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Kept {
    /// The request again, for the replay.
    fn request(&self) -> Request<UpstreamBody> {
        let mut req = Request::new(Either::Right(Full::new(self.body.clone())));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// The request with its body as sent upstream: streamed (bounded by
/// `proxy.body_read_timeout`, or an HTTP/2 one by `proxy.stream_idle_timeout`), or, for a request that may be replayed after a 401
/// (`replayable`: idempotent, with a token) whose body has a known length of at most
/// [`unauthorized::MAX_REPLAY_BODY`], read whole first and kept with a copy of the
/// head, as the fast path keeps it in its buffer.
async fn keep_for_replay(
    proxy: &Proxy,
    req: Request<Incoming>,
    replayable: bool,
) -> Result<(Request<UpstreamBody>, Option<Kept>), ProxyError> {
    let stream = req.version() == http::Version::HTTP_2;
    let bounded = |body: Incoming| match stream {
        true => stall::Bounded::pausing(body, proxy.limits.stream_idle_timeout),
        false => stall::Bounded::new(body, proxy.limits.body_read_timeout),
    };
    let small = http_body::Body::size_hint(req.body())
        .exact()
        .is_some_and(|n| n <= unauthorized::MAX_REPLAY_BODY as u64);
    if !(replayable && small && !proxy.unauthorized_refresh_interval.is_zero()) {
        return Ok((req.map(|b| Either::Left(bounded(b))), None));
    }
    let (parts, body) = req.into_parts();
    let body = http_body_util::BodyExt::collect(bounded(body))
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "the request body could not be read");
            body_unreadable()
        })?
        .to_bytes();
    let kept = Kept {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    Ok((
        Request::from_parts(parts, Either::Right(Full::new(body))),
        Some(kept),
    ))
}
