//! tokenwarden: an OAuth2 token-injecting sidecar proxy configured with the OAuth2 part of
//! the Fides SaaS-connector format.
//!
//! Data flow (one direction):
//!
//! ```text
//!  config file ─► config::load (validated Config) ─► Registry of ConnectionStates
//!  refresher per connection ─ token/refresh requests (oauth) ─► TokenCache (ArcSwap<TokenSet>) ─► store (encrypted file)
//!  admin: /authorize ─► pending state (+PKCE) ; /oauth/callback ─► code exchange ─┘
//!  app ─► proxy worker (one per core) ─► route (reverse /{key}/… · forward absolute-form) ─► inject ─► its upstream pool ─► SaaS API
//!         (fast path: request and response heads as bytes; anything unusual: hyper)
//! ```
//!
//! Modules:
//! - [`config`]: the file schema → validated [`config::Config`]; Fides model; `${ENV}`.
//! - [`template`]: Fides placeholders and encodings.
//! - [`oauth`]: authorization URL, token/refresh requests and responses, states, PKCE.
//! - [`token`]: token sets, the lock-free cache, schedule, refresher, store.
//! - [`registry`]: connections by key and by host.
//! - [`proxy`]: the request path: routing, header hygiene, injection, errors; one worker
//!   thread per core, each with its own runtime, lock-free upstream pool and coarse timers;
//!   a byte-level fast path (`proxy::fast`) for ordinary requests, hyper for the rest.
//! - [`ca`]: the local CA of TLS interception (`ca init`, `ca bundle`) and the
//!   intermediate and leaves minted from it at start.
//! - [`admin`]: health, readiness, metrics, status, authorize and callback routes.
//! - [`server`]: the accept loop shared by both listeners.
//! - [`app`]: the composition root; [`run`] is what `tokenwarden run` does.
//! - [`demo`]: the self-contained demo; [`telemetry`]: logging; [`tls`]: rustls roots.

pub mod admin;
pub mod app;
pub mod ca;
pub mod config;
pub mod demo;
pub mod describe;
pub mod oauth;
pub mod proxy;
pub mod refresher;
pub mod registry;
pub mod server;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod token;

/// `tokenwarden run`: binds the configured listeners, serves until SIGINT/SIGTERM, drains.
pub async fn run(config: config::Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let proxy = tokio::net::TcpListener::bind(config.proxy.listen)
        .await
        .with_context(|| format!("cannot listen on {} (proxy.listen)", config.proxy.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin.listen)", config.admin.listen))?;
    let running = app::start(config, proxy, admin, app::Options::default()).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Waits for SIGINT or SIGTERM. SIGHUP (which would otherwise end the process) is logged
/// and ignored: configuration reload does not exist yet.
pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hangup.recv() => tracing::warn!(
                "SIGHUP ignored: tokenwarden does not reload its configuration yet; restart it to apply changes"
            ),
        }
    }
}
