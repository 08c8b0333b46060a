//! Config hot reload: `SIGHUP` or `POST /api/v1/reload` re-read the config file and its
//! Fides files. An invalid file changes nothing (every problem is logged and kept for
//! `GET /api/v1/reload`). A valid one is swapped in whole: a new [`Registry`] and [`Proxy`]
//! behind their `ArcSwap`s, which each request loads once, so requests in flight finish on
//! what they started with.
//!
//! Per connection, by fingerprint ([`Registry::reloaded`]): unchanged ones keep their
//! tokens, refresher and counters. A changed one gets a new refresher (the old one is
//! stopped and waited for) and keeps its tokens as long as what they were obtained under —
//! token endpoint, client id and secret, upstream, scope ([`Connection::grant_identity`])
//! — is the same: a comment, `pkce`, `expires_in` or `admin.public_url` changes nothing
//! for them. When that changed, its old token leaves the file store and is never sent under
//! the new definition (an authorization-code connection then needs a new authorization:
//! `tokens_dropped` in the outcome); a stored set carries the identity it was obtained
//! under, so no replica on the new definition adopts it from Redis either
//! (`refresher::persist::usable`). New ones start with a token the store holds for them.
//! Removed ones stop; their stored grant stays for [`retired::REMOVED_GRANT_GRACE`], so a
//! file restored meanwhile gets it back, then leaves the file store (a Redis store keeps
//! it: other replicas may still serve it). Settings that need a new socket, thread or
//! client — listen addresses, worker threads, connection and head-buffer limits, connect
//! and header timeouts, the store, TLS roots, the admin (but `public_url`) and log sections
//! — are reported as "restart required", not half-applied. `admin.public_url` applies at
//! once and whole: the connections' default `redirect_uri` (part of their definition) and
//! the name the admin listener answers to ([`Reloader::public_url`]).
//!
//! [`Connection::grant_identity`]: crate::config::Connection::grant_identity

mod restart;
pub mod retired;
mod runtime;

use crate::config::{self, Auth, Config};
use crate::oauth::TokenClient;
use crate::proxy::tunnel::Interceptor;
use crate::proxy::Proxy;
use crate::refresher::Refresher;
use crate::registry::{Changes, Entry, Registry};
use crate::token::store::redis::Versioned;
use crate::token::store::Backend;
use crate::token::State;
use arc_swap::{ArcSwap, ArcSwapOption};
use retired::{Retired, Revived};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use tokio_util::task::TaskTracker;

/// Longest wait for a stopped refresher to finish its token request (the token client's
/// own timeout is 30 s).
const REFRESHER_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(35);

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
    /// Changed connections whose tokens no longer apply (token endpoint, client, upstream
    /// or scope changed): an authorization-code one needs a new authorization.
    pub tokens_dropped: Vec<String>,
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
    /// Removed connections whose stored grant is kept for a while.
    retired: Retired,
    /// `admin.public_url` as last applied: the one admin setting a reload applies, since the
    /// connections' default `redirect_uri` follows it (the admin listener answers its host).
    public_url: ArcSwapOption<String>,
    /// The proxy settings as last applied (a runtime connection's change keeps them).
    proxy_settings: Mutex<crate::config::ProxySettings>,
    /// The connector types of runtime connections (`templates:`) as last applied.
    templates: ArcSwap<Vec<Arc<crate::config::Template>>>,
}

/// The parts of a running sidecar a [`Reloader`] is made of.
pub struct Parts {
    pub started: Config,
    /// TLS interception (`proxy.intercept`), if on.
    pub intercept: Option<Arc<Interceptor>>,
    pub own_addrs: Vec<SocketAddr>,
    pub client: TokenClient,
    pub backend: Backend,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// How long a removed connection's stored grant is kept.
    pub removed_grant_grace: std::time::Duration,
}

impl Reloader {
    /// A reloader whose registry is still empty: [`Reloader::start`] applies the config
    /// the process started with, as a reload would.
    pub fn new(parts: Parts) -> Reloader {
        let registry = Arc::new(Registry::new(&[]));
        let proxy = proxy(
            Arc::clone(&registry),
            &parts.started.proxy,
            parts.own_addrs.clone(),
            parts.intercept.as_ref(),
        );
        let public_url = parts.started.admin.public_url.clone().map(Arc::new);
        Reloader {
            busy: tokio::sync::Mutex::new(()),
            registry: Arc::new(ArcSwap::new(registry)),
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
            public_url: ArcSwapOption::from(public_url),
            proxy_settings: Mutex::new(parts.started.proxy.clone()),
            templates: ArcSwap::from_pointee(parts.started.templates.clone()),
            retired: Retired::new(parts.removed_grant_grace),
            started: parts.started,
        }
    }

    /// Start-up: the config the process started with applied to the empty registry, as a
    /// reload applies one ([`Reloader::apply`]), with `stored`, what the store held when
    /// it was opened. Returns what of `stored` no file connection took: the runtime
    /// connections' tokens, then [`Reloader::retire`]'s.
    pub async fn start(&self, stored: HashMap<String, Versioned>) -> HashMap<String, Versioned> {
        let _one_at_a_time = self.busy.lock().await;
        self.apply(&self.started, Some(stored)).await.1
    }

    /// Start-up, after the runtime connections took theirs: grants the store holds for
    /// connections neither the config nor the store's definitions name are retired (kept
    /// for the grace period, in case the file is restored).
    pub fn retire(&self, unconfigured: &HashMap<String, Versioned>) {
        for key in unconfigured.keys() {
            self.retired.retire(key, None);
        }
    }

    /// `admin.public_url` as the running config has it (the last applied reload's).
    pub fn public_url(&self) -> Option<Arc<String>> {
        self.public_url.load_full()
    }

    /// Deletes from the file store the grant of each retired connection whose grace has
    /// passed and that is still not configured, until shutdown. Spawned once, at start.
    pub async fn expire_retired(self: Arc<Self>) {
        loop {
            let due = tokio::select! {
                () = self.shutdown.cancelled() => return,
                due = self.retired.wait_due() => due,
            };
            let _no_reload_meanwhile = self.busy.lock().await;
            let registry = self.registry.load();
            for key in due.iter().filter(|k| registry.get(k).is_none()) {
                if self.forget(key).await {
                    tracing::info!(connection = %key, "the stored grant of a removed connection is deleted: its grace period has passed");
                }
            }
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
        if let Some(grants) = &entry.grants {
            // No task per grant: requests renew them (`crate::grants`).
            grants.attach(crate::grants::Links {
                client: self.client.clone(),
                backend: self.backend.clone(),
                runtime: tokio::runtime::Handle::current(),
            });
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
        let taken = self.taken_by_runtime(&config);
        if !taken.is_empty() {
            for p in &taken {
                tracing::error!("reload refused, the running config stays: {p}");
            }
            return self.finish(Outcome {
                result: "invalid",
                at,
                problems: taken,
                ..Outcome::default()
            });
        }
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let restart_required = restart::restart_required(&self.started, &config);
        for setting in &restart_required {
            tracing::warn!(
                setting,
                "changed in the config file; applies after a restart"
            );
        }
        let (changes, _) = self.apply(&config, None).await;
        let names = |entries: &[Arc<Entry>]| entries.iter().map(|e| e.conn.key.clone()).collect();
        let outcome = Outcome {
            result: "applied",
            at,
            problems: Vec::new(),
            restart_required,
            added: names(&changes.added),
            changed: names(&changes.changed),
            tokens_dropped: changes.tokens_dropped.clone(),
            removed: names(&changes.removed),
        };
        tracing::info!(added = ?outcome.added, changed = ?outcome.changed, removed = ?outcome.removed, kept = changes.kept.len(), "configuration reloaded");
        self.finish(outcome)
    }

    /// Makes `config`'s connections the running ones (see the module doc): compared with
    /// the running registry by fingerprint, the added ones given what the store holds for
    /// them (`stored`, when the caller read it already; else read here), the new registry
    /// swapped in, the refreshers of removed and changed ones stopped, and those of changed
    /// and added ones started. Returns the changes, and what of `stored` no configured
    /// connection took.
    async fn apply(
        &self,
        config: &Config,
        stored: Option<HashMap<String, Versioned>>,
    ) -> (Changes, HashMap<String, Versioned>) {
        let (registry, changes) = self.registry.load().reloaded(&config.connections);
        let mut foreign = Vec::new();
        for entry in &changes.added {
            let conn = &entry.conn;
            if self.retired.revive(&conn.key, conn.grant_identity) == Revived::Other {
                foreign.push(conn.key.clone());
            }
        }
        let stored = match stored {
            Some(stored) => stored,
            None => {
                let wanted: Vec<Arc<Entry>> = (changes.added.iter())
                    .filter(|e| !foreign.contains(&e.conn.key))
                    .cloned()
                    .collect();
                self.stored_for(&wanted).await
            }
        };
        let left = restore(&changes.added, &foreign, stored);
        // A changed connection whose token is dropped (a rotated client secret) fetches a
        // new one as soon as its refresher starts, below: requests in between wait for it
        // as for any fetch under way (the refresher's first fetch ends the mark), instead of
        // a 503 in the moment before.
        for entry in changes.changed.iter().filter(|e| {
            changes.tokens_dropped.contains(&e.conn.key) && e.tokens.state() == State::Pending
        }) {
            entry.tokens.fetch_marked();
        }
        self.swap_in(registry, config);
        for entry in changes.removed.iter().chain(&changes.changed) {
            self.stop_refresher(&entry.conn.key).await;
        }
        for entry in &changes.removed {
            let conn = &entry.conn;
            self.retired.retire(&conn.key, Some(conn.grant_identity));
        }
        for key in changes.tokens_dropped.iter().chain(&foreign) {
            tracing::warn!(connection = %key, "its token endpoint, client, upstream or scope changed: the token obtained before is dropped");
            self.forget(key).await;
        }
        for entry in changes.changed.iter().chain(&changes.added) {
            self.start_refresher(entry);
        }
        (changes, left)
    }

    /// Makes `registry` and `config`'s proxy settings (but those that need a restart, which
    /// keep their running values) and `admin.public_url` the running ones: requests in
    /// flight finish on what they loaded.
    fn swap_in(&self, registry: Registry, config: &Config) {
        let mut settings = config.proxy.clone();
        let running = &self.started.proxy;
        settings.connect_timeout = running.connect_timeout;
        settings.limits.max_connections = running.limits.max_connections;
        settings.limits.max_buffered_head_bytes = running.limits.max_buffered_head_bytes;
        let registry = Arc::new(registry);
        if let Some(intercept) = &self.intercept {
            if let Err(e) = intercept.renew_for(&registry.hosts()) {
                tracing::error!(error = %e, "interception certificates not minted for the new hosts; the old ones stay");
            }
        }
        let proxy = proxy(
            Arc::clone(&registry),
            &settings,
            self.own_addrs.clone(),
            self.intercept.as_ref(),
        );
        self.registry.store(registry);
        self.proxy.store(Arc::new(proxy));
        self.public_url
            .store(config.admin.public_url.clone().map(Arc::new));
        *self.proxy_settings.lock().expect("proxy settings lock") = settings;
        self.templates.store(Arc::new(config.templates.clone()));
    }

    fn finish(&self, outcome: Outcome) -> Arc<Outcome> {
        let outcome = Arc::new(outcome);
        self.last.store(Arc::clone(&outcome));
        outcome
    }

    /// What the store holds for the `added` connections: the file store read once, the
    /// shared store asked for each (those whose grant was obtained under another
    /// definition are not asked for).
    async fn stored_for(&self, added: &[Arc<Entry>]) -> HashMap<String, Versioned> {
        let mut stored = HashMap::new();
        if added.is_empty() {
            return stored;
        }
        match &self.backend {
            Backend::Local(store) => {
                let store = Arc::clone(store);
                let all = tokio::task::spawn_blocking(move || store.load_all()).await;
                if let Ok(Ok(all)) = all {
                    let versioned = |(key, token)| {
                        (
                            key,
                            Versioned {
                                generation: 0,
                                token,
                            },
                        )
                    };
                    stored.extend(all.into_iter().map(versioned));
                }
            }
            Backend::Shared(redis) => {
                for entry in added {
                    let key = &entry.conn.key;
                    match redis
                        .read(
                            crate::token::store::GrantRef::own(key),
                            entry.tokens.generation(),
                        )
                        .await
                    {
                        Ok(Some(value)) => {
                            stored.insert(key.clone(), value);
                        }
                        Ok(None) => {}
                        // (The follower reports it on the connection too, and retries.)
                        Err(e) => {
                            tracing::warn!(connection = %key, error = %e, "the shared store's token set for an added connection cannot be used")
                        }
                    }
                }
            }
        }
        stored
    }

    /// A connection's token leaves the file store (Redis keeps it for other replicas);
    /// whether it did.
    async fn forget(&self, key: &str) -> bool {
        let Backend::Local(store) = &self.backend else {
            return false;
        };
        let (store, key) = (Arc::clone(store), key.to_owned());
        match tokio::task::spawn_blocking(move || store.remove(&key)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not remove a connection's token from the store");
                false
            }
            Err(_) => false,
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

/// Puts the token set `stored` holds for each of the `added` connections in its cache, but
/// for those in `foreign` (whose stored grant was obtained under another definition);
/// returns what no added connection took.
fn restore(
    added: &[Arc<Entry>],
    foreign: &[String],
    mut stored: HashMap<String, Versioned>,
) -> HashMap<String, Versioned> {
    for entry in added {
        let key = &entry.conn.key;
        let Some(saved) = stored.remove(key) else {
            continue;
        };
        if matches!(entry.conn.auth, Auth::OAuth2(_)) && !foreign.contains(key) {
            crate::refresher::persist::restore(&entry.tokens, &entry.conn, saved);
        }
    }
    stored
}
