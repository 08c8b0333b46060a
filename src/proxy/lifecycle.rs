//! The life of a forwarded request, written once for both transports (pingora's
//! `process_request` is the model): its plan — waiting for a token that is being fetched
//! — its send, an upstream's 401 to a current token (one refresh, one replay), what
//! `/metrics` records ([`measure`]) and the access-log line ([`access`]).
//!
//! The transports implement [`Transport`]: [`super::fast`] (bytes on pooled links, the
//! worker's coarse clock) and [`super::full`] (hyper, tokio timers). Each keeps its own
//! clock, retry mechanics and app-side rendering: [`forward`] returns the upstream's answer
//! or the error, and the transport relays or renders it. Generic, not `dyn`: the fast
//! path's calls are monomorphised and it stays allocation-free.

use super::error::ProxyError;
use super::{access, measure, Proxy};
use crate::registry::Entry;
use std::future::Future;
use tokio::time::Instant;

pub(crate) use super::route::Prepared;

/// What a request path does for the lifecycle.
pub(crate) trait Transport {
    /// A response head from the upstream (with, or beside it in the transport, what is
    /// needed to relay its body).
    type Answer;

    /// `METHOD target` of the app's request, for the access log (asked only when it is on).
    fn access_line(&self) -> (String, String);

    /// Plans the request again at `now` and writes its upstream form: after a token
    /// arrived, and for the replay. `None`: it no longer plans to a request this
    /// transport forwards (the lifecycle then keeps what it had).
    fn prepare<'p>(
        &mut self,
        proxy: &'p Proxy,
        now: Instant,
    ) -> Option<Result<Prepared<'p>, ProxyError>>;

    /// Sends the request planned as `req` and reads the response head: under
    /// `proxy.response_timeout` on the transport's own clock, retried by
    /// [`super::route::may_retry`]. A transport that plans again as it sends leaves in
    /// `req` what was sent. (A future rather than an `async fn`, so the fast path can
    /// return its timed send as it is, without one more state machine per request.)
    fn send<'p>(
        &mut self,
        proxy: &'p Proxy,
        req: &mut Prepared<'p>,
    ) -> impl Future<Output = Result<Self::Answer, ProxyError>>;

    /// The answer's status.
    fn status(answer: &Self::Answer) -> u16;

    /// The request's body is still at hand, so it could be sent again.
    fn replayable(&self) -> bool;

    /// Ends an answer the app will not see (a 401 before the replay).
    async fn discard(&mut self, answer: Self::Answer, entry: &Entry);
}

/// The request planned as `first` (read at `started`), to its answer or its error: waits
/// for a token that is being fetched, sends, recovers once from a 401 to a current token
/// ([`Proxy::unauthorized`]), records it for `/metrics` and writes its access-log line.
///
/// The common case — planned, sent, answered — is this one function awaiting the
/// transport's `send`: each nested `async fn` costs every request its state machine, which
/// measured about 1 % of the fast path's CPU. The rest is boxed: taken rarely, it then
/// pays an allocation instead.
pub(crate) async fn forward<'p, T: Transport>(
    proxy: &'p Proxy,
    transport: &mut T,
    first: Result<Prepared<'p>, ProxyError>,
    started: Instant,
) -> Result<(Prepared<'p>, T::Answer), ProxyError> {
    let line = proxy.access_log.then(|| transport.access_line());
    let result = match first {
        Ok(mut req) => match transport.send(proxy, &mut req).await {
            Ok(answer) if !rejected::<T>(&req, &answer) => Ok((req, answer)),
            Ok(answer) => Box::pin(recover(proxy, transport, req, answer)).await,
            Err(error) => Err(error),
        },
        Err(refusal) => Box::pin(after_refusal(proxy, transport, refusal)).await,
    };
    let (connection, status) = match &result {
        Ok((Prepared { entry, .. }, answer)) => {
            let status = T::status(answer);
            measure::answered(entry, status, started);
            (entry.conn.key.as_str(), status)
        }
        Err(error) => {
            measure::failed(proxy, error, started);
            let connection = error.connection().unwrap_or(access::NO_CONNECTION);
            (connection, error.status().as_u16())
        }
    };
    if let Some((method, target)) = line {
        access::log(connection, &method, &target, status, started);
    }
    result
}

/// The answer's status is one the connection names in `token_rejected_statuses`.
fn rejected<T: Transport>(req: &Prepared<'_>, answer: &T::Answer) -> bool {
    req.entry.conn.token_rejected.contains(T::status(answer))
}

/// A request refused for want of a token that is being fetched: planned again once the
/// token arrived ([`Proxy::token_arrives`]), then sent as [`forward`] sends; otherwise the
/// refusal.
async fn after_refusal<'p, T: Transport>(
    proxy: &'p Proxy,
    transport: &mut T,
    mut refusal: ProxyError,
) -> Result<(Prepared<'p>, T::Answer), ProxyError> {
    let mut req = loop {
        if !proxy.token_arrives(&refusal).await {
            return Err(refusal);
        }
        match transport.prepare(proxy, Instant::now()) {
            Some(Ok(req)) => break req,
            Some(Err(again)) => refusal = again,
            None => return Err(refusal),
        }
    };
    let answer = transport.send(proxy, &mut req).await?;
    if !rejected::<T>(&req, &answer) {
        return Ok((req, answer));
    }
    recover(proxy, transport, req, answer).await
}

/// The shared recovery from an answer with a status in `token_rejected_statuses`: one
/// refresh and, when the request can be sent again, one replay with the new token. A
/// replay is never replayed.
async fn recover<'p, T: Transport>(
    proxy: &'p Proxy,
    transport: &mut T,
    req: Prepared<'p>,
    answer: T::Answer,
) -> Result<(Prepared<'p>, T::Answer), ProxyError> {
    let status = T::status(&answer);
    let replayable = req.idempotent && transport.replayable();
    if !proxy
        .unauthorized(req.entry, req.grant.as_ref(), status, req.token, replayable)
        .await
    {
        return Ok((req, answer));
    }
    let Some(Ok(mut again)) = transport.prepare(proxy, Instant::now()) else {
        // Not forwardable any more (say, the new token is unusable): the 401 stands.
        return Ok((req, answer));
    };
    transport.discard(answer, req.entry).await;
    let answer = transport.send(proxy, &mut again).await?;
    Ok((again, answer))
}
