//! tokenwarden: an OAuth2 token-injecting sidecar proxy configured with the OAuth2 part of
//! the Fides SaaS-connector format.
//!
//! Data flow (one direction):
//!
//! ```text
//!  config file ─► config::load (validated Config) ─► Registry of Entries (ArcSwap; swapped on reload)
//!  refresher per connection ─ token/refresh requests (oauth) ─► token::Cache (ArcSwap<TokenSet>) ─► store (embedded SQLite database; Redis for many replicas)
//!  admin: /authorize ─► pending state (+PKCE) ; /oauth/callback ─► code exchange ─┘
//!  app ─► proxy worker (one per core) ─► route (reverse /{key}/… · forward absolute-form) ─► inject ─► its upstream pool ─► SaaS API
//!         (fast path: request and response heads as bytes; anything unusual: hyper)
//! ```
//!
//! Modules:
//! - [`config`]: the file schema → validated [`config::Config`]; Fides model; `${ENV}` and
//!   `${file:}`.
//! - [`jwt`]: signing keys and signed JWTs for the token endpoint (the JWT-bearer grant's
//!   assertion, the `private_key_jwt` client assertion).
//! - [`template`]: Fides placeholders and encodings.
//! - [`oauth`]: authorization URL, token/refresh requests and responses, states, PKCE.
//! - [`token`]: token sets, the lock-free cache, schedule, store (no OAuth, no proxy: it
//!   imports only `config`, `telemetry` and `instrument`).
//! - [`registry`]: connections by key and by host (persistent maps, one insert or remove per
//!   change); [`reload`]: config hot reload (SIGHUP, `POST /api/v1/reload`), which swaps the
//!   registry and the proxy settings, and the one insert or remove a runtime connection's
//!   change makes.
//! - [`runtime`]: connections created, changed and deleted through the connection API
//!   (Fides' `instantiate`, `secret` and delete routes): their definitions in the store,
//!   built from a template (`templates:`) as a file connection is.
//! - [`refresher`]: one task per OAuth2 connection that gets and renews its token (with the
//!   Redis store, under a lease, and a follower that adopts other replicas' tokens).
//! - [`proxy`]: the request path: routing, header hygiene, injection, errors; one worker
//!   thread per core, each with its own runtime, lock-free upstream pool and coarse timers;
//!   one request lifecycle (`proxy::lifecycle`: token wait, send, an upstream's 401 to a
//!   current token → one refresh and one replay, metrics, access log) over two transports,
//!   a byte-level fast path (`proxy::fast`) for ordinary requests and hyper for the rest.
//! - [`ca`]: the local CA of TLS interception (`ca init`, `ca bundle`) and the
//!   per-host intermediates and leaves minted from it.
//! - [`admin`]: health, readiness, metrics (OpenMetrics, by prometheus-client), status,
//!   authorize and callback routes.
//! - [`instrument`]: the lock-free, per-worker sharded histograms, counters and gauges the
//!   request path (and the token writers) record into for `/metrics`; it imports only
//!   `telemetry`.
//! - [`server`]: the accept loop shared by both listeners.
//! - [`app`]: the composition root; [`run`] is what `tokenwarden run` does.
//! - [`demo`]: the self-contained demo; [`telemetry`]: logging; [`tls`]: rustls roots and
//!   the `tls_client_auth` client certificate.

// The per-node connection of the Redis store (`token::store::redis::link`) deepens the
// futures of the admin routes and the request lifecycle past the default limit of 128.
#![recursion_limit = "256"]

pub mod admin;
pub mod app;
pub mod ca;
pub mod config;
pub mod demo;
pub mod describe;
pub mod grants;
pub mod instrument;
pub mod jwt;
pub mod oauth;
pub mod proxy;
pub mod refresher;
pub mod registry;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod token;
pub mod watch;

/// `tokenwarden run`: binds the configured listeners, serves until SIGINT/SIGTERM, drains.
pub async fn run(config: config::Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let proxy = tokio::net::TcpListener::bind(config.proxy.listen)
        .await
        .with_context(|| format!("cannot listen on {} (proxy.listen)", config.proxy.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin.listen)", config.admin.listen))?;
    // Listening from before the start, so no signal is missed (a SIGHUP would end the process).
    let mut signals = Signals::new();
    let running = app::start(config, proxy, admin, app::Options::default()).await?;
    serve_until_stopped(&running, &mut signals).await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Until SIGINT or SIGTERM: each SIGHUP reloads the configuration (see [`reload`]). A stop
/// that arrives during a reload is kept by the listener and taken next.
pub(crate) async fn serve_until_stopped(running: &app::Running, signals: &mut Signals) {
    while let Signal::Reload = signals.next().await {
        tracing::info!("SIGHUP: reloading the configuration");
        running.reload().await;
    }
}

/// What a signal asks for.
pub(crate) enum Signal {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGHUP.
    Reload,
}

/// The process's signal listeners, made once (a listener sees only what arrives after it
/// exists; once made, SIGHUP no longer ends the process).
pub(crate) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            hangup: signal(SignalKind::hangup()).expect("SIGHUP handler"),
        }
    }

    /// The next of SIGINT, SIGTERM or SIGHUP.
    pub(crate) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.term.recv() => Signal::Stop,
            _ = self.hangup.recv() => Signal::Reload,
        }
    }
}
