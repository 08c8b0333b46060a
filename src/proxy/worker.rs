//! Proxy worker threads, one per core: each runs a current-thread runtime with a
//! `LocalSet`, accepts on its own handle to the proxy's listening socket, and owns its
//! upstream [`Pool`] and coarse [`Timers`], so a request never crosses threads and
//! nothing on its path takes a lock. Shared state (the registry and its token caches) is
//! read lock-free through `ArcSwap`. Connections are served by [`fast::serve`].

use super::deadline::Timers;
use super::fast::{self, Worker};
use super::pool::Pool;
use super::Proxy;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Starts `workers` threads serving `listener` with `proxy`. The returned future resolves
/// when every worker has drained after `shutdown`.
pub fn spawn(
    workers: usize,
    listener: std::net::TcpListener,
    proxy: Arc<Proxy>,
    make_pool: Arc<dyn Fn() -> Pool + Send + Sync>,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    listener.set_nonblocking(true)?;
    let mut done = Vec::with_capacity(workers);
    for i in 0..workers.max(1) {
        let socket = listener.try_clone()?;
        let (proxy, make_pool, shutdown) =
            (Arc::clone(&proxy), Arc::clone(&make_pool), shutdown.clone());
        let (tx, rx) = oneshot::channel::<()>();
        done.push(rx);
        std::thread::Builder::new()
            .name(format!("tokenwarden-proxy-{i}"))
            .spawn(move || {
                run(socket, proxy, &*make_pool, header_read_timeout, shutdown);
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
/// pool reaper and accept loop, until the accept loop has drained after `shutdown`.
fn run(
    socket: std::net::TcpListener,
    proxy: Arc<Proxy>,
    make_pool: &(dyn Fn() -> Pool + Send + Sync),
    header_read_timeout: Duration,
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
        let pool = Rc::new(make_pool());
        tokio::task::spawn_local(reap(Rc::clone(&pool), shutdown.clone()));
        let worker = Rc::new(Worker {
            proxy,
            pool,
            timers,
            header_read_timeout,
            shutdown: shutdown.clone(),
        });
        crate::server::accept_loop(listener, &shutdown, |tracker, stream, peer| {
            tracker.spawn_local(fast::serve(Rc::clone(&worker), stream, peer));
        })
        .await;
    });
}

/// Runs the pool's reaper until shutdown.
async fn reap(pool: Rc<Pool>, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = pool.reap() => {}
    }
}
