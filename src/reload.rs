//! Config hot reload: `SIGHUP` or `POST /api/v1/reload` re-read the config file and its
//! Fides files. An invalid file changes nothing (every problem is logged and kept for
//! `GET /api/v1/reload`). A valid one is swapped in whole: a new [`Registry`] and [`Proxy`]
//! behind their `ArcSwap`s, which each request loads once, so requests in flight finish on
//! what they started with.
//!
//! Per connection, by fingerprint ([`Registry::reloaded`]): unchanged ones keep their
//! tokens, refresher and counters; a changed one (secrets, token requests, upstream,
//! strategy) starts afresh — its old refresher is stopped and waited for, its old token
//! leaves the file store and is never sent under the new definition (an authorization-code
//! connection then needs a new authorization); new ones start (with a token the store
//! holds for them); removed ones stop and leave the file store (a Redis store keeps them:
//! other replicas may still serve them). Settings that need a
//! new socket, thread or client — listen addresses, worker threads, connection limit,
//! connect and header timeouts, the store, TLS roots, the admin and log sections — are
//! reported as "restart required", not half-applied.

use crate::config::{self, Auth, Config};
use crate::oauth::TokenClient;
use crate::proxy::tunnel::Interceptor;
use crate::proxy::Proxy;
use crate::refresher::Refresher;
use crate::registry::{Entry, Registry};
use crate::token::store::Backend;
use crate::token::TokenSet;
use arc_swap::ArcSwap;
use secrecy::ExposeSecret;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest wait for a stopped refresher to finish its token request (the token client's
/// own timeout is 30 s).
const REFRESHER_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(35);
use tokio_util::task::TaskTracker;

/// What the last reload did (`GET /api/v1/reload`). Never a secret: problems are the
/// loader's positioned messages, which quote no secret value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// `none` (no reload yet), `applied` or `invalid` (nothing changed).
    pub result: &'static str,
    /// Unix seconds of the reload.
    pub at: Option<u64>,
    pub problems: Vec<String>,
    /// Settings that differ from the running ones but apply only after a restart.
    pub restart_required: Vec<&'static str>,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// What a reload needs of the running sidecar.
pub struct Reloader {
    /// The config the process started with (what a restart-required setting still is).
    started: Config,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
    pub registry: Arc<ArcSwap<Registry>>,
    pub proxy: Arc<ArcSwap<Proxy>>,
    own_addrs: Vec<SocketAddr>,
    intercept: Option<Arc<Interceptor>>,
    client: TokenClient,
    backend: Backend,
    /// Each OAuth2 connection's refresher, by key, to stop it and wait for it.
    refreshers: Mutex<HashMap<String, (CancellationToken, JoinHandle<()>)>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    last: ArcSwap<Outcome>,
}

/// The parts of a running sidecar a [`Reloader`] is made of.
pub struct Parts {
    pub started: Config,
    /// TLS interception (`proxy.intercept`), if on.
    pub intercept: Option<Arc<Interceptor>>,
    pub registry: Arc<Registry>,
    pub own_addrs: Vec<SocketAddr>,
    pub client: TokenClient,
    pub backend: Backend,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

impl Reloader {
    pub fn new(parts: Parts) -> Reloader {
        let proxy = proxy(
            Arc::clone(&parts.registry),
            &parts.started.proxy,
            parts.own_addrs.clone(),
            parts.intercept.as_ref(),
        );
        Reloader {
            started: parts.started,
            busy: tokio::sync::Mutex::new(()),
            registry: Arc::new(ArcSwap::new(parts.registry)),
            proxy: Arc::new(ArcSwap::from_pointee(proxy)),
            own_addrs: parts.own_addrs,
            intercept: parts.intercept,
            client: parts.client,
            backend: parts.backend,
            refreshers: Mutex::new(HashMap::new()),
            tasks: parts.tasks,
            shutdown: parts.shutdown,
            last: ArcSwap::from_pointee(Outcome {
                result: "none",
                ..Outcome::default()
            }),
        }
    }

    /// The last reload's outcome.
    pub fn last(&self) -> Arc<Outcome> {
        self.last.load_full()
    }

    /// Starts the refresher of an OAuth2 connection (a static credential has none).
    /// Call [`Reloader::stop_refresher`] for a previous one first.
    pub fn start_refresher(&self, entry: &Arc<Entry>) {
        if !matches!(entry.conn.auth, Auth::OAuth2(_)) {
            return;
        }
        let stop = self.shutdown.child_token();
        let refresher = Refresher {
            entry: Arc::clone(entry),
            client: self.client.clone(),
            backend: self.backend.clone(),
        };
        let task = self.tasks.spawn(refresher.run(stop.clone()));
        self.refreshers
            .lock()
            .expect("refreshers lock")
            .insert(entry.conn.key.clone(), (stop, task));
    }

    /// Stops the refresher of `key` and waits for it: a token request under way finishes
    /// first (abandoning it could lose a rotated refresh token), so nothing it writes can
    /// land after the connection was changed or removed.
    async fn stop_refresher(&self, key: &str) {
        let running = self.refreshers.lock().expect("refreshers lock").remove(key);
        if let Some((stop, task)) = running {
            stop.cancel();
            if tokio::time::timeout(REFRESHER_STOP_WAIT, task)
                .await
                .is_err()
            {
                tracing::warn!(connection = %key, "the old refresher did not stop in time");
            }
        }
    }

    /// Reads the config file again and applies it (see the module doc).
    pub async fn reload(&self) -> Arc<Outcome> {
        let _one_at_a_time = self.busy.lock().await;
        let at = Some(crate::token::set::unix_seconds(Some(
            std::time::SystemTime::now(),
        )));
        let config = match config::load(&self.started.file) {
            Ok(config) => config,
            Err(problems) => {
                let problems: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
                for p in &problems {
                    tracing::error!("reload refused, the running config stays: {p}");
                }
                return self.finish(Outcome {
                    result: "invalid",
                    at,
                    problems,
                    ..Outcome::default()
                });
            }
        };
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let restart_required = restart_required(&self.started, &config);
        for setting in &restart_required {
            tracing::warn!(
                setting,
                "changed in the config file; applies after a restart"
            );
        }
        let (registry, changes) = self.registry.load().reloaded(&config.connections);
        self.restore(&changes.added).await;
        // Restart-required proxy settings keep their running values.
        let mut settings = config.proxy.clone();
        settings.connect_timeout = self.started.proxy.connect_timeout;
        settings.limits.max_connections = self.started.proxy.limits.max_connections;
        settings.limits.max_buffered_head_bytes = self.started.proxy.limits.max_buffered_head_bytes;
        let registry = Arc::new(registry);
        if let Some(intercept) = &self.intercept {
            if let Err(e) = intercept.renew_for(registry.hosts()) {
                tracing::error!(error = %e, "interception certificates not minted for the new hosts; the old ones stay");
            }
        }
        let proxy = proxy(
            Arc::clone(&registry),
            &settings,
            self.own_addrs.clone(),
            self.intercept.as_ref(),
        );
        self.registry.store(Arc::clone(&registry));
        self.proxy.store(Arc::new(proxy));
        for entry in changes.removed.iter().chain(&changes.changed) {
            self.stop_refresher(&entry.conn.key).await;
            self.forget(&entry.conn.key).await;
        }
        for entry in changes.changed.iter().chain(&changes.added) {
            self.start_refresher(entry);
        }
        let names = |entries: &[Arc<Entry>]| entries.iter().map(|e| e.conn.key.clone()).collect();
        let outcome = Outcome {
            result: "applied",
            at,
            problems: Vec::new(),
            restart_required,
            added: names(&changes.added),
            changed: names(&changes.changed),
            removed: names(&changes.removed),
        };
        tracing::info!(added = ?outcome.added, changed = ?outcome.changed, removed = ?outcome.removed, kept = changes.kept.len(), "configuration reloaded");
        self.finish(outcome)
    }

    fn finish(&self, outcome: Outcome) -> Arc<Outcome> {
        let outcome = Arc::new(outcome);
        self.last.store(Arc::clone(&outcome));
        outcome
    }

    /// Puts the tokens the store holds for newly added connections in their caches.
    async fn restore(&self, added: &[Arc<Entry>]) {
        for entry in added {
            let key = entry.conn.key.clone();
            let stored = match &self.backend {
                Backend::Local(store) => {
                    let store = Arc::clone(store);
                    let all = tokio::task::spawn_blocking(move || store.load_all()).await;
                    match all {
                        Ok(Ok(mut all)) => all.remove(&key).map(|token| (0, token)),
                        _ => None,
                    }
                }
                Backend::Shared(redis) => redis
                    .read(&key, entry.tokens.generation())
                    .await
                    .ok()
                    .flatten()
                    .map(|v| (v.generation, v.token)),
            };
            if let Some((generation, token)) = stored {
                if let Ok(set) = TokenSet::from_stored(token, rand::random()) {
                    entry.tokens.restore(set, generation);
                }
            }
        }
    }

    /// A removed or changed connection's token leaves the file store (Redis keeps it for
    /// other replicas).
    async fn forget(&self, key: &str) {
        if let Backend::Local(store) = &self.backend {
            let (store, key) = (Arc::clone(store), key.to_owned());
            let removed = tokio::task::spawn_blocking(move || store.remove(&key)).await;
            if let Ok(Err(e)) = removed {
                tracing::error!(error = %e, "could not remove a removed connection's token from the store");
            }
        }
    }
}

/// The proxy for `registry`, intercepting when `intercept` is on.
fn proxy(
    registry: Arc<Registry>,
    settings: &crate::config::ProxySettings,
    own_addrs: Vec<SocketAddr>,
    intercept: Option<&Arc<Interceptor>>,
) -> Proxy {
    let proxy = Proxy::new(registry, settings, own_addrs);
    match intercept {
        Some(i) => proxy.with_intercept(Arc::clone(i)),
        None => proxy,
    }
}

/// The settings that differ between `running` and `next` but apply only after a restart.
fn restart_required(running: &Config, next: &Config) -> Vec<&'static str> {
    let (a, b) = (&running.proxy, &next.proxy);
    let secret =
        |s: &Option<secrecy::SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
    let differs = [
        ("proxy.listen", a.listen != b.listen),
        (
            "proxy.intercept",
            format!("{:?}", a.intercept) != format!("{:?}", b.intercept),
        ),
        ("proxy.worker_threads", a.worker_threads != b.worker_threads),
        (
            "proxy.max_connections",
            a.limits.max_connections != b.limits.max_connections,
        ),
        (
            "proxy.max_buffered_head_bytes",
            a.limits.max_buffered_head_bytes != b.limits.max_buffered_head_bytes,
        ),
        (
            "proxy.connect_timeout",
            a.connect_timeout != b.connect_timeout,
        ),
        (
            "proxy.header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        ("admin.listen", running.admin.listen != next.admin.listen),
        (
            "admin",
            // The rest of `admin` (its listen address is reported above, not twice).
            format!("{:?}", running.admin)
                != format!(
                    "{:?}",
                    crate::config::AdminSettings {
                        listen: running.admin.listen,
                        ..next.admin.clone()
                    }
                )
                || secret(&running.admin.token) != secret(&next.admin.token),
        ),
        (
            "store",
            format!("{:?}", running.store) != format!("{:?}", next.store)
                || secret(&running.store.key) != secret(&next.store.key)
                || running
                    .store
                    .redis
                    .as_ref()
                    .map(|r| r.url.expose_secret().to_owned())
                    != next
                        .store
                        .redis
                        .as_ref()
                        .map(|r| r.url.expose_secret().to_owned()),
        ),
        ("tls.ca_file", running.ca_file != next.ca_file),
        (
            "log",
            format!("{:?}", running.log) != format!("{:?}", next.log),
        ),
    ];
    differs
        .into_iter()
        .filter(|(_, d)| *d)
        .map(|(name, _)| name)
        .collect()
}
