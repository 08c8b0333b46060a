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
use std::sync::Arc;
use tokio::time::Instant;

/// What the lifecycle keeps of a planned request. (The plan itself borrows the token and
/// ends before anything awaits.)
#[derive(Clone, Copy)]
pub(crate) struct Prepared<'p> {
    pub entry: &'p Arc<Entry>,
    /// Safe to send again by the shared retry rule.
    pub idempotent: bool,
    /// The serial of the token injected (0: none), for [`Proxy::unauthorized`].
    pub token: u64,
}

/// What a request path does for the lifecycle.
pub(crate) trait Transport {
    /// A response head from the upstream, with what the transport needs to relay its body.
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
    /// `req` what was sent.
    async fn send<'p>(
        &mut self,
        proxy: &'p Proxy,
        req: &mut Prepared<'p>,
    ) -> Result<Self::Answer, ProxyError>;

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
pub(crate) async fn forward<'p, T: Transport>(
    proxy: &'p Proxy,
    transport: &mut T,
    first: Result<Prepared<'p>, ProxyError>,
    started: Instant,
) -> Result<(&'p Arc<Entry>, T::Answer), ProxyError> {
    let line = proxy.access_log.then(|| transport.access_line());
    let result = match planned(proxy, transport, first).await {
        Ok(req) => exchange(proxy, transport, req).await,
        Err(refusal) => Err(refusal),
    };
    let (connection, status) = match &result {
        Ok((entry, answer)) => {
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

/// The plan to send: `first`, or — when it was refused for want of a token that is being
/// fetched — the plan once the token arrived ([`Proxy::token_arrives`]).
async fn planned<'p, T: Transport>(
    proxy: &'p Proxy,
    transport: &mut T,
    first: Result<Prepared<'p>, ProxyError>,
) -> Result<Prepared<'p>, ProxyError> {
    let mut refusal = match first {
        Ok(req) => return Ok(req),
        Err(refusal) => refusal,
    };
    // (Boxed, as the other cold paths: it would otherwise grow every request's future.)
    while Box::pin(proxy.token_arrives(&refusal)).await {
        match transport.prepare(proxy, Instant::now()) {
            Some(Ok(req)) => return Ok(req),
            Some(Err(again)) => refusal = again,
            None => break,
        }
    }
    Err(refusal)
}

/// Sends `req`; a status the connection names in `token_rejected_statuses` gets the
/// shared recovery: one refresh and, when the request can be sent again, one replay with
/// the new token. A replay is never replayed.
async fn exchange<'p, T: Transport>(
    proxy: &'p Proxy,
    transport: &mut T,
    mut req: Prepared<'p>,
) -> Result<(&'p Arc<Entry>, T::Answer), ProxyError> {
    let answer = transport.send(proxy, &mut req).await?;
    let status = T::status(&answer);
    if !req.entry.conn.token_rejected.contains(status) {
        return Ok((req.entry, answer));
    }
    let replayable = req.idempotent && transport.replayable();
    if !Box::pin(proxy.unauthorized(req.entry, status, req.token, replayable)).await {
        return Ok((req.entry, answer));
    }
    let Some(Ok(mut again)) = transport.prepare(proxy, Instant::now()) else {
        // Not forwardable any more (say, the new token is unusable): the 401 stands.
        return Ok((req.entry, answer));
    };
    Box::pin(transport.discard(answer, req.entry)).await;
    let answer = transport.send(proxy, &mut again).await?;
    Ok((again.entry, answer))
}
