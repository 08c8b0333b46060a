//! The composition root: builds the shared state from a validated [`Config`], loads the
//! store, spawns one refresher per OAuth2 connection (and, with Redis, the follower that
//! adopts other replicas' tokens), and serves the proxy and admin listeners until the
//! shutdown token fires. Tests call [`start`] with listeners bound to
//! `127.0.0.1:0`; `main` does the same with the configured addresses.

use crate::admin::Admin;
use crate::config::{Auth, Config, Unreadable};
use crate::oauth::pending::PendingStates;
use crate::oauth::TokenClient;
use crate::proxy::tunnel::Interceptor;
use crate::proxy::upstream::{Dialer, GuardedResolver, StaticHosts};
use crate::refresher::follow::Follower;
use crate::registry::Registry;
use crate::reload::{Parts, Reloader};
use crate::runtime::Runtime;
use crate::token::store::redis::Versioned;
use crate::token::store::{Backend, RedisStore, SqliteStore, StoreError, StoredToken, TokenStore};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("proxy.intercept: {0}")]
    Intercept(#[from] crate::ca::CaError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("token store {path} is unreadable ({source}); fix or remove it, restore the right store.key, or set store.on_unreadable: start_unauthorized")]
    Unreadable { path: String, source: StoreError },
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Extra knobs for tests and the demo.
#[derive(Default)]
pub struct Options {
    /// Fixed DNS answers for host names (the SSRF guard still applies to them).
    pub static_hosts: StaticHosts,
    /// Fixed DNS answers for token-endpoint host names (the port is used when the URL has none).
    pub resolve: HashMap<String, SocketAddr>,
    /// Serve every proxy request on the hyper path (the fast path off), so tests can run
    /// the same requests down both paths and compare. Deliberately not a config option:
    /// only code that builds `Options` (tests) can set it.
    pub hyper_only: bool,
    /// How long a removed connection's stored grant is kept (None: the documented
    /// [`crate::reload::retired::REMOVED_GRANT_GRACE`]); tests shorten it.
    pub removed_grant_grace: Option<std::time::Duration>,
}

/// A running sidecar.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The current connections (a reload swaps them).
    pub registry: Arc<ArcSwap<Registry>>,
    pub reloader: Arc<Reloader>,
    pub shutdown: CancellationToken,
    /// Finishes when both listeners have drained after `shutdown`.
    pub task: JoinHandle<()>,
}

impl Running {
    /// Reads the config file again and applies it (`SIGHUP`).
    pub async fn reload(&self) -> Arc<crate::reload::Outcome> {
        self.reloader.reload().await
    }

    /// Stops the sidecar and waits for it to drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Starts the sidecar on already-bound listeners: the store read, one refresher per OAuth2
/// connection, the background tasks, the proxy workers and the admin listener.
pub async fn start(
    config: Config,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    options: Options,
) -> Result<Running, StartError> {
    let tls = crate::tls::client_config(config.ca_file.as_deref())?;
    let (backend, stored) = open_backend(&config).await?;
    let intercept = interceptor(&config)?;
    let token_client = TokenClient::with_resolve(Arc::clone(&tls), &options.resolve)?;
    let dialer = Dialer::new(
        Arc::clone(&tls),
        GuardedResolver::new(options.static_hosts),
        config.proxy.connect_timeout,
    );
    let (proxy_addr, admin_addr) = (proxy_listener.local_addr()?, admin_listener.local_addr()?);
    let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
    let (admin_settings, proxy_settings) = (config.admin.clone(), config.proxy.clone());
    let reloader = Arc::new(Reloader::new(Parts {
        started: config,
        intercept: intercept.clone(),
        own_addrs: vec![proxy_addr, admin_addr],
        client: token_client.clone(),
        backend: backend.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
        removed_grant_grace: (options.removed_grant_grace)
            .unwrap_or(crate::reload::retired::REMOVED_GRANT_GRACE),
    }));
    let (runtime, generation) = serve_stored(&reloader, &backend, stored).await?;
    Background {
        reloader: &reloader,
        runtime: (&runtime, generation),
        backend: &backend,
        intercept,
        watch: (admin_settings.watch_config)
            .map(|every| (reloader.config_file().to_path_buf(), every)),
    }
    .spawn(&tasks, &shutdown);
    let instruments = Arc::new(crate::instrument::Instruments::default());
    let admin = Arc::new(Admin {
        listen: admin_addr.ip(),
        instruments: Arc::clone(&instruments),
        registry: Arc::clone(&reloader.registry),
        reloader: Arc::clone(&reloader),
        pending: pending_states(&admin_settings, &backend),
        settings: admin_settings,
        client: token_client,
        backend,
        runtime,
    });
    let settings = crate::proxy::worker::Settings {
        workers: proxy_settings.worker_threads.unwrap_or_else(cpus),
        header_read_timeout: proxy_settings.header_read_timeout,
        fast_path: !options.hyper_only,
        instruments,
    };
    tasks.spawn(crate::proxy::worker::spawn(
        proxy_listener.into_std()?,
        Arc::clone(&reloader.proxy),
        dialer,
        settings,
        shutdown.clone(),
    )?);
    let serve_admin = move |req, peer| Arc::clone(&admin).handle(req, peer);
    let header_timeout = proxy_settings.header_read_timeout;
    let admin_server = crate::server::serve(
        admin_listener,
        header_timeout,
        shutdown.clone(),
        serve_admin,
    );
    tasks.spawn(admin_server);
    tasks.close();
    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, connections = reloader.registry.load().len(), "tokenwarden is listening");
    let task = tokio::spawn(async move { tasks.wait().await });
    Ok(Running {
        proxy_addr,
        admin_addr,
        registry: Arc::clone(&reloader.registry),
        reloader,
        shutdown,
        task,
    })
}

/// Start-up is a reload from the empty registry (the same steps, the same refreshers),
/// then the runtime connections the store defines, each served as its creation did; what
/// the store holds for neither is retired. Returns the runtime connections' side and the
/// change generation they were read at ([`load_runtime`]).
async fn serve_stored(
    reloader: &Arc<Reloader>,
    backend: &Backend,
    stored: HashMap<String, Versioned>,
) -> Result<(Arc<Runtime>, u64), StartError> {
    let mut unconfigured = reloader.start(stored).await;
    let runtime = Arc::new(Runtime::new(Arc::clone(reloader), backend.clone()));
    let generation = load_runtime(&runtime, &mut unconfigured).await?;
    reloader.retire(&unconfigured);
    Ok((runtime, generation))
}

/// The runtime connections the store defines, served again. A store that cannot be read
/// is fatal (as the token store is), unless `store.on_unreadable` says to start without.
/// Returns (Redis) the change generation they were read at; 0 when they were not, so the
/// follower of the shared store loads them all once Redis answers.
async fn load_runtime(
    runtime: &Runtime,
    stored: &mut HashMap<String, Versioned>,
) -> Result<u64, StartError> {
    match runtime.load(stored).await {
        Ok((0, generation)) => Ok(generation),
        Ok((served, generation)) => {
            tracing::info!(
                connections = served,
                "runtime connections loaded from the store"
            );
            Ok(generation)
        }
        Err(e @ StoreError::Unavailable { .. }) => {
            tracing::warn!(error = %e, "runtime connections not loaded: the store is unavailable; they are loaded when it answers");
            Ok(0)
        }
        Err(e) if runtime.reloader.unreadable() == Unreadable::StartUnauthorized => {
            tracing::error!(error = %e, "runtime connections unreadable; starting without them (store.on_unreadable)");
            Ok(0)
        }
        Err(e) => Err(StartError::Store(e)),
    }
}

/// TLS interception (`proxy.intercept`): its root CA loaded, the leaves for the configured
/// hosts minted.
fn interceptor(config: &Config) -> Result<Option<Arc<Interceptor>>, StartError> {
    let Some(ca) = &config.proxy.intercept else {
        return Ok(None);
    };
    let root = crate::ca::Root::load(&ca.ca_cert, &ca.ca_key)?;
    let hosts = Registry::hosts_of(config.connections.iter().map(|c| &**c));
    Ok(Some(Arc::new(Interceptor::new(root, hosts)?)))
}

/// The number of CPUs (the default `proxy.worker_threads`).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The tasks that run beside the listeners until shutdown.
struct Background<'a> {
    reloader: &'a Arc<Reloader>,
    /// The runtime connections, and the change generation they were loaded at.
    runtime: (&'a Arc<Runtime>, u64),
    backend: &'a Backend,
    intercept: Option<Arc<Interceptor>>,
    /// `admin.watch_config`: the config file, and how often it is read.
    watch: Option<(std::path::PathBuf, std::time::Duration)>,
}

impl Background<'_> {
    /// The interception leaves' renewal, the removed grants' expiry, the followers of the
    /// shared store (tokens, runtime connections), and the config file watch — those that apply. (The connections'
    /// refreshers are the reloader's: [`Reloader::start`].)
    fn spawn(self, tasks: &TaskTracker, shutdown: &CancellationToken) {
        if let Some(intercept) = self.intercept {
            tasks.spawn(intercept.renew_every(crate::ca::mint::RENEW_EVERY, shutdown.clone()));
        }
        tasks.spawn(Arc::clone(self.reloader).expire_retired());
        if let Backend::Shared(redis) = self.backend {
            let follower = Follower {
                registry: Arc::clone(&self.reloader.registry),
                redis: Arc::clone(redis),
            };
            tasks.spawn(follower.run(shutdown.clone()));
            let (runtime, seen) = self.runtime;
            let follower = crate::runtime::follow::Follower {
                runtime: Arc::clone(runtime),
                redis: Arc::clone(redis),
                seen,
            };
            tasks.spawn(follower.run(shutdown.clone()));
        }
        if let Some((file, every)) = self.watch {
            let reloader = Arc::clone(self.reloader);
            tasks.spawn(crate::watch::run(reloader, file, every, shutdown.clone()));
        }
    }
}

/// Authorization states waiting for their callback: in this process, or in Redis (so a
/// callback can land on any replica).
fn pending_states(admin: &crate::config::AdminSettings, backend: &Backend) -> PendingStates {
    let pending = PendingStates::new(
        admin.state_ttl,
        admin.max_pending_states,
        admin.instance.clone(),
    );
    match backend {
        Backend::Shared(redis) => pending.shared(Arc::clone(redis)),
        Backend::Local(_) => pending,
    }
}

/// What `run` would refuse beyond the config file, found without writing anything or
/// contacting Redis (`check`): the TLS roots, the CA files, the store key, the Redis URL,
/// and with the embedded database whether the key opens the existing database (or the
/// earlier store file it would migrate), read-only beside a running `run`. Every such problem,
/// with the config path of the setting it is about (`store.key`), to place it in the file.
pub fn preflight(config: &Config) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if let Err(e) = crate::tls::client_config(config.ca_file.as_deref()) {
        problems.push(("tls.ca_file", e.to_string()));
    }
    if let Some(ca) = &config.proxy.intercept {
        if let Err(e) = crate::ca::Root::load(&ca.ca_cert, &ca.ca_key) {
            let message = e.to_string();
            let at = if message.contains(&ca.ca_key.display().to_string()) {
                "proxy.intercept.ca_key"
            } else {
                "proxy.intercept.ca_cert"
            };
            problems.push((at, message));
        }
    }
    let (store, at) = match (&config.store.redis, &config.store.key) {
        (Some(redis), Some(key)) => (
            crate::token::store::check_key(key)
                .and_then(|()| crate::token::store::redis::check(redis)),
            "store.url",
        ),
        (Some(_), None) => (Ok(()), "store.key"), // config validation already requires it
        (None, key) => (
            SqliteStore::verify(&config.store.path, key.as_ref()),
            "store.path",
        ),
    };
    if let Err(e) = store {
        let at = match e {
            StoreError::BadKey { .. } | StoreError::WrongKey { .. } => "store.key",
            _ => at,
        };
        problems.push((at, e.to_string()));
    }
    problems
}

/// Opens the configured store and reads what it holds for the configured connections.
async fn open_backend(
    config: &Config,
) -> Result<(Backend, HashMap<String, Versioned>), StartError> {
    let Some(settings) = &config.store.redis else {
        return open_local(config).await;
    };
    let key = config
        .store
        .key
        .as_ref()
        .ok_or(StartError::Store(StoreError::BadKey {
            path: "store.key".into(),
            reason: "required with backend: redis".into(),
        }))?;
    let redis = Arc::new(RedisStore::open(settings, key)?);
    let keys: Vec<&str> = config
        .connections
        .iter()
        .filter(|c| matches!(c.auth, Auth::OAuth2(_)))
        .map(|c| c.key.as_str())
        .collect();
    let tokens = match redis.load(&keys).await {
        Ok(tokens) => tokens,
        Err(e @ StoreError::Unavailable { .. }) => {
            // Not fatal: the follower loads the tokens once Redis answers.
            tracing::warn!(error = %e, "token store unavailable at start-up; starting without tokens");
            HashMap::new()
        }
        Err(e) if config.store.on_unreadable == Unreadable::StartUnauthorized => {
            tracing::error!(error = %e, "token store unreadable; starting with every connection unauthorised (store.on_unreadable)");
            HashMap::new()
        }
        Err(e) => return Err(StartError::Store(e)),
    };
    Ok((Backend::Shared(redis), tokens))
}

/// Opens the embedded database and reads its token sets. One that cannot be read (damaged,
/// another key, a newer schema) is refused, or with `store.on_unreadable: start_unauthorized`
/// moved aside for a new, empty one.
async fn open_local(config: &Config) -> Result<(Backend, HashMap<String, Versioned>), StartError> {
    let path = &config.store.path;
    let source = match open_store(config, true).await? {
        Ok((store, tokens)) => return Ok(local_backend(store, tokens)),
        Err(
            source @ (StoreError::Corrupt { .. }
            | StoreError::WrongKey { .. }
            | StoreError::UnsupportedVersion { .. }),
        ) => source,
        Err(e) => return Err(StartError::Store(e)),
    };
    // An old file beside the database that cannot be migrated is not moved: only the
    // configured path is.
    if config.store.on_unreadable != Unreadable::StartUnauthorized || !path.exists() {
        return Err(StartError::Unreadable {
            path: path.display().to_string(),
            source,
        });
    }
    let suffix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        .to_string();
    let aside = SqliteStore::set_aside(path, &suffix)?;
    tracing::error!(store = %path.display(), error = %source, moved_to = %aside.display(),
        "token store unreadable; moved aside, starting with every connection unauthorised");
    let (store, _) = open_store(config, false).await??;
    Ok(local_backend(store, HashMap::new()))
}

/// The local backend over `store`, with the token sets it held.
fn local_backend(
    store: SqliteStore,
    tokens: HashMap<String, StoredToken>,
) -> (Backend, HashMap<String, Versioned>) {
    let tokens = tokens
        .into_iter()
        .map(|(k, token)| {
            (
                k,
                Versioned {
                    generation: 0,
                    token,
                },
            )
        })
        .collect();
    (Backend::Local(Arc::new(store)), tokens)
}

/// Opens the database off the runtime (taking its lock may wait for a holder to exit;
/// a first start migrates the old file) and, with `load`, reads its token sets.
async fn open_store(
    config: &Config,
    load: bool,
) -> Result<Result<(SqliteStore, HashMap<String, StoredToken>), StoreError>, StartError> {
    let (path, key) = (config.store.path.clone(), config.store.key.clone());
    tokio::task::spawn_blocking(move || {
        let store = SqliteStore::open(&path, key.as_ref())?;
        let tokens = if load {
            store.load_all()?
        } else {
            HashMap::new()
        };
        Ok((store, tokens))
    })
    .await
    .map_err(|e| StartError::Io(std::io::Error::other(e)))
}
