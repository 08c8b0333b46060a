//! The hand-over of an app connection from the fast path to hyper, for the rest of its
//! life: the bytes the fast path read are replayed ([`Rewind`]); hyper's partial heads are
//! charged to the workers' head budget ([`ChargedIo`]: what it reads while no request is
//! in flight); each request counts against the connection's
//! [`Budget`](crate::proxy::limits::Budget); and a `CONNECT` tunnel left in the
//! connection's [`Slot`] runs once hyper lets go of the connection.

use super::io::{AppIo, Rewind};
use super::{Client, Worker};
use crate::proxy::heads::ChargedIo;
use crate::proxy::tunnel::Slot;
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::time::Instant;

/// Serves `client` with hyper until it closes, then the tunnel it opened, if any.
pub(super) async fn serve_with_hyper<S: AppIo>(
    worker: Rc<Worker>,
    client: Client<S>,
    peer: SocketAddr,
) {
    // Hyper's partial heads are charged too: what it reads while no request is in flight.
    let (io, gate) = ChargedIo::new(
        Rewind::new(client.buf.into_pending(), client.io),
        &worker.heads,
    );
    let (this, budget, tunnel) = (Rc::clone(&worker), client.budget, client.tunnel);
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
            let response = proxy.handle(Rc::clone(&this), req, peer, tunnel.clone(), slot);
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
        worker.header_read_timeout,
        worker.shutdown.clone(),
    )
    .await;
    // A CONNECT: hyper has handed the connection over; serve the tunnel.
    let tunnel = left.borrow_mut().take();
    if let Some(tunnel) = tunnel {
        tunnel.await;
    }
}
