//! The fast path's upstream side of one request: [`Exchange`], what the shared lifecycle
//! drives ([`Transport`]); [`Engine::send`] takes a pooled [`Link`] (or opens one) and
//! [`exchange`]s the request head and body for the response head, retrying once by the
//! shared rule; [`Engine::discard`] ends a response the app will not see (a 401 before
//! its replay).

use super::io::{write_all2, AppIo};
use super::link::Link;
use super::relay::relay;
use super::request::{self, Framed, Outcome};
use super::{Client, Engine, COALESCE};
use crate::proxy::access;
use crate::proxy::deadline::{Guarded, Timers};
use crate::proxy::error::{ProxyError, UpstreamFault};
use crate::proxy::lifecycle::{Prepared, Transport};
use crate::proxy::response::{self, Framing, Parsed};
use crate::proxy::route::{may_retry, Unanswered};
use crate::proxy::Proxy;
use crate::registry::{Entry, Origin};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::time::Instant;

/// The longest body of a response the app does not get (a 401 before a replay) that is
/// read to its end to keep the link; a longer one closes it.
const MAX_DISCARDED_BODY: u64 = 64 * 1024;
/// How long the rest of such a body may take to arrive (on the worker's coarse clock, so
/// up to two ticks more); a body still incomplete then closes the link, so the replay is
/// not delayed by an upstream that stalls (the hyper path never reads it).
const DISCARD_WITHIN: std::time::Duration = std::time::Duration::from_millis(200);

impl Engine {
    /// Sends the request on a pooled or a new upstream connection and reads the response
    /// head. A pooled connection that fails before answering may have been closed by the
    /// upstream meanwhile: the shared rule ([`may_retry`]) says whether the request goes
    /// once more, on a new connection.
    pub(super) async fn send(
        &self,
        req: &Prepared<'_>,
        is_head: bool,
        request_head: &[u8],
        body: &[u8],
        close: bool,
        now: Instant,
    ) -> Result<(Link, response::Response), UpstreamFault> {
        let mut pooled = self.links.checkout(&req.entry.origin, now);
        loop {
            let reused = pooled.is_some();
            let mut link = match pooled.take() {
                Some(link) => link,
                // Boxed: the cold path would otherwise bloat every request's future.
                None => match Box::pin(self.links.connect(req.entry)).await {
                    Ok(link) => link,
                    Err(e) => return Err(UpstreamFault::dial(e.kind(), &e)),
                },
            };
            match exchange(&mut link, request_head, body, is_head, close, &self.timers).await {
                Ok(response) => return Ok((link, response)),
                Err(Failure::BeforeAnswer(_))
                    if may_retry(reused, req.idempotent, Unanswered::Sent) =>
                {
                    continue
                }
                Err(Failure::BeforeAnswer(reason)) => {
                    tracing::debug!(%reason, "the upstream did not answer");
                    return Err(UpstreamFault::closed());
                }
                Err(Failure::Protocol(reason)) => {
                    tracing::debug!(%reason, "the upstream's response was malformed");
                    return Err(UpstreamFault::malformed());
                }
            }
        }
    }

    /// Ends a response the app will not see (a 401 before a replay): a body of up to
    /// [`MAX_DISCARDED_BODY`] bytes that is at hand or arrives within [`DISCARD_WITHIN`] is
    /// read to its end, so the link can be pooled again; any other closes the link.
    pub(super) async fn discard(
        &self,
        mut link: Link,
        response: &response::Response,
        origin: &Origin,
    ) {
        let short = match response.framing {
            Framing::Empty => true,
            Framing::Length(n) => n <= MAX_DISCARDED_BODY,
            Framing::Chunked | Framing::UntilClose => false,
        };
        if !short {
            return;
        }
        let mut sink = tokio::io::sink();
        let read = relay(
            &mut link,
            &mut sink,
            response.framing,
            &self.timers,
            DISCARD_WITHIN,
        );
        let read = self.timers.timeout(DISCARD_WITHIN, read).await;
        if matches!(read, Ok(Ok(()))) && response.reusable && link.buf.is_empty() {
            self.links.checkin(origin, link, Instant::now());
        }
    }
}

/// One request of an app connection, as the lifecycle drives it: planned from the bytes
/// at the start of the connection's buffer (which stay there until it is answered, so a
/// replay translates them again), sent on the worker's links.
pub(super) struct Exchange<'c, S> {
    engine: &'c Engine,
    client: &'c mut Client<S>,
    framed: Framed,
    /// Tell the upstream the connection closes (the app asked, or its budget is spent).
    pub(super) close: bool,
    /// When the request was read, or planned again (a pooled link idle since before it
    /// is not reused).
    pub(super) now: Instant,
    /// The link the answer came on, its body still to read (kept here rather than in the
    /// answer, which the lifecycle moves: a smaller answer is cheaper per request).
    pub(super) link: Option<Link>,
}

impl<'c, S> Exchange<'c, S> {
    /// The request at the start of `client`'s buffer, `framed` so, read at `now`.
    pub(super) fn new(
        engine: &'c Engine,
        client: &'c mut Client<S>,
        framed: Framed,
        now: Instant,
    ) -> Self {
        let close = framed.close || client.budget.last(now);
        Exchange {
            engine,
            client,
            framed,
            close,
            now,
            link: None,
        }
    }

    /// `req`, with a body of up to [`COALESCE`] bytes copied behind its head in
    /// `client.out`, to go with it in one `send` (which costs the kernel less than a
    /// two-part `writev`).
    pub(super) fn coalesced<'p>(&mut self, req: Prepared<'p>) -> Prepared<'p> {
        if self.framed.body_len <= COALESCE {
            let Framed {
                head_len, body_len, ..
            } = self.framed;
            let body = &self.client.buf.pending()[head_len..head_len + body_len];
            self.client.out.extend_from_slice(body);
        }
        req
    }
}

impl<S: AppIo> Transport for Exchange<'_, S> {
    /// The response head; its link is [`Exchange::link`].
    type Answer = response::Response;

    fn access_line(&self) -> (String, String) {
        let (method, target) = access::request_line(self.client.buf.pending()).unwrap_or_default();
        (method.to_owned(), target.to_owned())
    }

    fn prepare<'p>(
        &mut self,
        proxy: &'p Proxy,
        now: Instant,
    ) -> Option<Result<Prepared<'p>, ProxyError>> {
        let client = &mut *self.client;
        let translated = request::translate_request(
            proxy,
            client.buf.pending(),
            &mut client.out,
            now,
            client.tunnel.as_deref(),
        );
        match translated {
            Outcome::Ready(req) => {
                // (After a token wait, or for the replay: links are checked out as of now.)
                self.now = now;
                Some(Ok(self.coalesced(req.prepared)))
            }
            Outcome::Refused(refused) => Some(Err(refused.error)),
            // (The same bytes under the same proxy: translated as they were the first time.)
            Outcome::Partial(_) | Outcome::Fallback => None,
        }
    }

    fn send<'p>(
        &mut self,
        proxy: &'p Proxy,
        req: &mut Prepared<'p>,
    ) -> impl Future<Output = Result<Self::Answer, ProxyError>> {
        let Framed {
            head_len,
            body_len,
            is_head,
            ..
        } = self.framed;
        let body = &self.client.buf.pending()[head_len..head_len + body_len];
        // A small body went behind the head ([`Exchange::coalesced`]).
        let rest = if body_len <= COALESCE { &[][..] } else { body };
        let connection = req.entry.conn.key.as_str();
        let sent = self
            .engine
            .send(req, is_head, &self.client.out, rest, self.close, self.now);
        Timed {
            sent: self.engine.timers.timeout(proxy.response_timeout, sent),
            connection,
            link: &mut self.link,
        }
    }

    fn status(answer: &Self::Answer) -> u16 {
        answer.status
    }

    fn replayable(&self) -> bool {
        // Head and body are whole at the start of the buffer until the request is answered.
        true
    }

    async fn discard(&mut self, response: Self::Answer, entry: &Entry) {
        if let Some(link) = self.link.take() {
            self.engine.discard(link, &response, &entry.origin).await;
        }
    }
}

pin_project! {
    /// A send under `proxy.response_timeout`, as the lifecycle takes it: the response head,
    /// its link left in `link`; a fault or the timeout is the request's error on
    /// `connection`.
    struct Timed<'c, 'l, F> {
        #[pin]
        sent: Guarded<F>,
        connection: &'c str,
        link: &'l mut Option<Link>,
    }
}

impl<F: Future<Output = Result<(Link, response::Response), UpstreamFault>>> Future
    for Timed<'_, '_, F>
{
    type Output = Result<response::Response, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.sent.poll(cx)) {
            Ok(Ok((link, response))) => {
                **this.link = Some(link);
                Ok(response)
            }
            Ok(Err(fault)) => Err(fault.on(this.connection)),
            Err(_) => Err(UpstreamFault::timeout().on(this.connection)),
        })
    }
}

/// Why an exchange failed.
enum Failure {
    /// Nothing of a response arrived (the request may not have reached the upstream).
    BeforeAnswer(String),
    /// The upstream answered with something that is not a valid response.
    Protocol(String),
}

/// Sends `request_head` and `body` on `link` and reads the response head, which is left
/// translated in `link.head`. The app is told the connection closes when it asked to, or
/// when the worker is shutting down by the time the response arrives.
async fn exchange(
    link: &mut Link,
    request_head: &[u8],
    body: &[u8],
    is_head: bool,
    close: bool,
    timers: &Timers,
) -> Result<response::Response, Failure> {
    write_all2(&mut link.stream, request_head, body)
        .await
        .map_err(|e| Failure::BeforeAnswer(e.to_string()))?;
    let mut answered = false;
    loop {
        let close = close || timers.shutting_down();
        match response::translate_response(link.buf.pending(), &mut link.head, is_head, close) {
            Ok(Parsed::Final(response)) => {
                link.buf.consume(response.head_len);
                return Ok(response);
            }
            Ok(Parsed::Interim(len)) => {
                link.buf.consume(len);
                continue;
            }
            Ok(Parsed::Partial) => {}
            Err(reason) => return Err(Failure::Protocol(reason)),
        }
        match link.buf.fill(&mut link.stream).await {
            Ok(0) if !answered => {
                return Err(Failure::BeforeAnswer(
                    "the upstream closed the connection without answering".into(),
                ))
            }
            Ok(0) => {
                return Err(Failure::Protocol(
                    "the upstream closed the connection in the middle of a response head".into(),
                ))
            }
            Ok(_) => answered = true,
            Err(e) if !answered => return Err(Failure::BeforeAnswer(e.to_string())),
            Err(e) => return Err(Failure::Protocol(e.to_string())),
        }
    }
}
