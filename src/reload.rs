//! Config hot reload: `SIGHUP` or `POST /api/v1/reload` re-read the config file and its
//! Fides files. An invalid file changes nothing (every problem is logged and kept for
//! `GET /api/v1/reload`). A valid one is swapped in whole: a new [`Registry`] and [`Proxy`]
//! behind their `ArcSwap`s, which each request loads once, so requests in flight finish on
//! what they started with.
//!
//! Per connection, by fingerprint ([`Registry::reloaded`]): unchanged ones keep their
//! tokens, refresher and counters; a changed one keeps its tokens and its refresher
//! restarts with the new definition (secrets, token requests, upstream); new ones start
//! (with a token the store holds for them); removed ones stop, and leave the file store
//! (a Redis store keeps them: other replicas may still serve them). Settings that need a
//! new socket, thread or client — listen addresses, worker threads, connection limit,
//! connect and header timeouts, the store, TLS roots, the admin and log sections — are
//! reported as "restart required", not half-applied.

use crate::config::{self, Auth, Config};
use crate::oauth::TokenClient;
use crate::proxy::upstream::GuardedResolver;
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
use tokio_util::sync::CancellationToken;
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
    resolver: GuardedResolver,
    client: TokenClient,
    backend: Backend,
    /// Each OAuth2 connection's refresher, by key, to stop it.
    refreshers: Mutex<HashMap<String, CancellationToken>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    last: ArcSwap<Outcome>,
}

/// The parts of a running sidecar a [`Reloader`] is made of.
pub struct Parts {
    pub started: Config,
    pub registry: Arc<Registry>,
    pub own_addrs: Vec<SocketAddr>,
    pub resolver: GuardedResolver,
    pub client: TokenClient,
    pub backend: Backend,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

impl Reloader {
    pub fn new(parts: Parts) -> Reloader {
        let proxy = Proxy::new(
            Arc::clone(&parts.registry),
            &parts.started.proxy,
            parts.own_addrs.clone(),
        );
        Reloader {
            started: parts.started,
            busy: tokio::sync::Mutex::new(()),
            registry: Arc::new(ArcSwap::new(parts.registry)),
            proxy: Arc::new(ArcSwap::from_pointee(proxy)),
            own_addrs: parts.own_addrs,
            resolver: parts.resolver,
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

    /// Starts (or restarts) the refresher of an OAuth2 connection.
    pub fn start_refresher(&self, entry: &Arc<Entry>) {
        if !matches!(entry.conn.auth, Auth::OAuth2(_)) {
            return;
        }
        let stop = self.shutdown.child_token();
        let previous = self
            .refreshers
            .lock()
            .expect("refreshers lock")
            .insert(entry.conn.key.clone(), stop.clone());
        if let Some(previous) = previous {
            previous.cancel();
        }
        let refresher = Refresher {
            entry: Arc::clone(entry),
            client: self.client.clone(),
            backend: self.backend.clone(),
        };
        self.tasks.spawn(refresher.run(stop));
    }

    fn stop_refresher(&self, key: &str) {
        if let Some(stop) = self.refreshers.lock().expect("refreshers lock").remove(key) {
            stop.cancel();
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
        self.resolver.allow_private(
            config
                .connections
                .iter()
                .filter(|c| c.allow_private_network)
                .map(|c| c.upstream.host.clone())
                .collect(),
        );
        // Restart-required proxy settings keep their running values.
        let mut settings = config.proxy.clone();
        settings.connect_timeout = self.started.proxy.connect_timeout;
        settings.limits.max_connections = self.started.proxy.limits.max_connections;
        let registry = Arc::new(registry);
        let proxy = Proxy::new(Arc::clone(&registry), &settings, self.own_addrs.clone());
        self.registry.store(Arc::clone(&registry));
        self.proxy.store(Arc::new(proxy));
        for entry in &changes.removed {
            self.stop_refresher(&entry.conn.key);
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
                    .read(&key)
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

    /// A removed connection leaves the file store (Redis keeps it for other replicas).
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

/// The settings that differ between `running` and `next` but apply only after a restart.
fn restart_required(running: &Config, next: &Config) -> Vec<&'static str> {
    let (a, b) = (&running.proxy, &next.proxy);
    let secret =
        |s: &Option<secrecy::SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
    let differs = [
        ("proxy.listen", a.listen != b.listen),
        ("proxy.worker_threads", a.worker_threads != b.worker_threads),
        (
            "proxy.max_connections",
            a.limits.max_connections != b.limits.max_connections,
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
            format!("{:?}", running.admin) != format!("{:?}", next.admin)
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
