//! One app connection, from accept to close: the connection driver. Requests go to the
//! fast path ([`fast::Engine::request`]) until one needs hyper; then the connection moves
//! to hyper for the rest of its life: the bytes the fast path read are replayed
//! ([`Rewind`]), hyper's partial heads are charged to the workers' head budget
//! ([`ChargedIo`]: what it reads while no request is in flight), and each request counts
//! against the connection's [`Budget`]. A `CONNECT` tunnel left in the connection's
//! [`Slot`] runs once hyper lets go of the connection; an intercepted one's TLS handshake
//! then yields the decrypted stream, served here like an accepted socket (linkerd's
//! protocol detection, with `PrefixedIo`, is the model: only the driver knows both
//! engines).

use super::fast::io::{AppIo, Rewind};
use super::fast::{Client, Next};
use super::heads::ChargedIo;
use super::limits::Budget;
use super::tunnel::{Inside, Slot, Tunnel};
use super::{fast, full, h2, Proxy};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use tokio::time::Instant;

/// What the connections a worker thread serves share (built by [`super::worker`]): the
/// current proxy and each engine's own state.
pub struct Shared {
    /// The current proxy (a reload swaps in another registry and settings): loaded once per
    /// request, which then keeps what it loaded to its end.
    pub proxy: Arc<ArcSwap<Proxy>>,
    pub(crate) fast: fast::Engine,
    pub(crate) full: Rc<full::Engine>,
    /// Off only in tests of the hyper path ([`crate::app::Options::hyper_only`]).
    pub fast_path: bool,
    /// `tokenwarden_open_connections{side="client"}`.
    pub open_clients: Arc<crate::instrument::Gauge>,
}

/// Serves one app connection until it closes: a TCP connection the listener accepted
/// (`tunnel: None`), or the decrypted stream of an intercepted tunnel to `tunnel`.
pub async fn serve<S: AppIo>(
    worker: Rc<Shared>,
    io: S,
    peer: SocketAddr,
    tunnel: Option<Rc<Inside>>,
) {
    let _open = worker.open_clients.open();
    let budget = Budget::new(worker.proxy.load().limits, Instant::now());
    let mut client = Client::new(io, tunnel, budget);
    // Without the fast path (tests of the hyper path), hyper takes every connection.
    if worker.fast_path {
        loop {
            let proxy = worker.proxy.load_full();
            match worker.fast.request(&proxy, &mut client).await {
                Next::KeepAlive => {}
                Next::Close => return,
                Next::Hyper => break,
            }
        }
    }
    let tunnel = serve_with_hyper(&worker, client, peer).await;
    match tunnel {
        Some(Tunnel::Blind(tunnel)) => tunnel.await,
        Some(Tunnel::Intercepted(handshake)) => {
            if let Some((decrypted, authority)) = handshake.await {
                // (Boxed: the driver serves the tunnel's stream as it serves a socket.)
                Box::pin(serve(Rc::clone(&worker), decrypted, peer, Some(authority))).await;
            }
        }
        None => {}
    }
}

/// Serves `client` with hyper until it closes — HTTP/2 ([`h2`]) when it starts with the
/// HTTP/2 preface (h2c with prior knowledge, or `h2` chosen by ALPN in a tunnel), else
/// HTTP/1.1; returns the tunnel a `CONNECT` opened, if any.
async fn serve_with_hyper<S: AppIo>(
    worker: &Rc<Shared>,
    mut client: Client<S>,
    peer: SocketAddr,
) -> Option<Tunnel> {
    let preface = client.starts_with(h2::PREFACE);
    let h2 = tokio::time::timeout(worker.fast.header_read_timeout, preface).await;
    let (pending, io, budget, tunnel) = client.into_parts();
    if h2 == Ok(true) {
        h2::serve(worker, Rewind::new(pending, io), peer, tunnel, budget).await;
        return None;
    }
    // Hyper's partial heads are charged too: what it reads while no request is in flight.
    let (io, gate) = ChargedIo::new(Rewind::new(pending, io), &worker.fast.heads);
    let this = Rc::clone(worker);
    let slot = Slot::default();
    let left = Rc::clone(&slot);
    crate::server::connection(
        io,
        peer,
        move |req, peer| {
            gate.begin();
            let connect = req.method() == http::Method::CONNECT;
            let last = budget.last(Instant::now());
            let proxy = this.proxy.load_full();
            let slot = Rc::clone(&slot);
            let engine = Rc::clone(&this.full);
            let response = proxy.handle(engine, req, peer, tunnel.clone(), slot);
            let gate = gate.clone();
            async move {
                let mut response = response.await;
                // (The bytes of a tunnel are never a head: it stays in flight.)
                if !(connect && response.status().is_success()) {
                    gate.end();
                }
                if last {
                    // hyper closes the connection after a response that says so.
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                response
            }
        },
        worker.fast.header_read_timeout,
        worker.full.shutdown.clone(),
    )
    .await;
    // A CONNECT: hyper has handed the connection over.
    let tunnel = left.borrow_mut().take();
    tunnel
}
