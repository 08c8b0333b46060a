//! Proxy worker threads, one per core: each runs a current-thread runtime with a
//! `LocalSet`, accepts on its own handle to the proxy's listening socket, and owns its
//! upstream [`Pool`] and coarse [`Timers`], so a request never crosses threads and
//! nothing on its path takes a lock. Shared state (the registry and its token caches) is
//! read lock-free through `ArcSwap`. Worker `i` records into shard `i` of the request
//! path's instruments ([`crate::instrument::shard`]). Connections are served by
//! [`super::conn::serve`], as many at once as `proxy.max_connections` admits
//! ([`Admission`], shared by the workers).

use super::conn::Shared;
use super::deadline::Timers;
use super::fast::link::Links;
use super::full::pool::Pool;
use super::heads::HeadBudget;
use super::limits::Admission;
use super::upstream::Dialer;
use super::{fast, full, Proxy};
use crate::instrument::Instruments;
use arc_swap::ArcSwap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How the workers serve their connections.
#[derive(Clone)]
pub struct Settings {
    pub workers: usize,
    pub header_read_timeout: Duration,
    /// Off only for tests of the hyper path ([`crate::app::Options::hyper_only`]).
    pub fast_path: bool,
    /// The process's open-connection gauges.
    pub instruments: Arc<Instruments>,
}

/// Starts `settings.workers` threads serving `listener` with the current `proxy` (a reload
/// swaps it), each with its own pools opening connections with `dialer`. The returned future resolves when every
/// worker has drained after `shutdown`.
pub fn spawn(
    listener: std::net::TcpListener,
    proxy: Arc<ArcSwap<Proxy>>,
    dialer: Dialer,
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let workers = settings.workers;
    let limits = proxy.load().limits;
    let admission = Arc::new(Admission::new(limits.max_connections));
    let heads = Arc::new(HeadBudget::new(limits.max_buffered_head_bytes));
    listener.set_nonblocking(true)?;
    let mut done = Vec::with_capacity(workers);
    for i in 0..workers.max(1) {
        let socket = listener.try_clone()?;
        let (proxy, dialer, settings, shutdown) = (
            Arc::clone(&proxy),
            dialer.clone(),
            settings.clone(),
            shutdown.clone(),
        );
        let shared = (Arc::clone(&admission), Arc::clone(&heads));
        let (tx, rx) = oneshot::channel::<()>();
        done.push(rx);
        std::thread::Builder::new()
            .name(format!("tokenwarden-proxy-{i}"))
            .spawn(move || {
                // Worker i records into shard i of the request-path instruments.
                crate::instrument::shard::enter(i);
                run(socket, proxy, dialer, settings, shared, shutdown);
                let _ = tx.send(());
            })?;
    }
    Ok(async move {
        for rx in done {
            let _ = rx.await;
        }
    })
}

/// One worker thread: a current-thread runtime and `LocalSet` with the worker's timers,
/// pool reaper and accept loop (admitting by the shared `Admission`, charging partial heads
/// to the shared `HeadBudget`), until the accept loop has drained after `shutdown`.
fn run(
    socket: std::net::TcpListener,
    proxy: Arc<ArcSwap<Proxy>>,
    dialer: Dialer,
    settings: Settings,
    (admission, heads): (Arc<Admission>, Arc<HeadBudget>),
    shutdown: CancellationToken,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "proxy worker could not start a runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = match tokio::net::TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "proxy worker could not register the listener");
                return;
            }
        };
        let timers = Timers::new();
        tokio::task::spawn_local(Rc::clone(&timers).run(shutdown.clone()));
        let instruments = &settings.instruments;
        let upstream = &instruments.open_upstream;
        let header_read_timeout = settings.header_read_timeout;
        let worker = Rc::new(Shared {
            proxy,
            fast: fast::Engine {
                links: Links::new(dialer.clone(), Arc::clone(upstream)),
                timers: Rc::clone(&timers),
                header_read_timeout,
                heads: Arc::clone(&heads),
            },
            full: Rc::new(full::Engine {
                pool: Rc::new(Pool::new(dialer, Arc::clone(upstream))),
                timers,
                header_read_timeout,
                shutdown: shutdown.clone(),
            }),
            fast_path: settings.fast_path,
            open_clients: Arc::clone(&instruments.open_client),
        });
        tokio::task::spawn_local(reap(Rc::clone(&worker), shutdown.clone()));
        crate::server::accept_loop(listener, &shutdown, |tracker, stream, peer| {
            // Beyond proxy.max_connections the connection is closed at once (logged).
            let Some(permit) = admission.admit() else {
                return;
            };
            let served = super::conn::serve(Rc::clone(&worker), stream, peer, None);
            tracker.spawn_local(async move {
                served.await;
                drop(permit);
            });
        })
        .await;
    });
}

/// Runs both pools' reapers until shutdown.
async fn reap(worker: Rc<Shared>, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = worker.fast.links.reap() => {}
        _ = worker.full.pool.reap() => {}
    }
}
