//! Configuration: the file schema (serde, `raw` and [`fides`]) → [`load`] → a typed,
//! validated [`Config`]. Every problem in a file is reported at once, each with
//! `file:line:column` where the YAML parser knows it. Downstream code never sees serde types:
//! the Fides request templates are compiled at load into [`RequestTemplate`]s.
//!
//! The modules import one way only, down this list (no circle):
//! - `connection` (one `connections:` entry) → `identity`, `strategy`, `upstream`;
//! - `strategy` (OAuth2 and static credentials) → `request`;
//! - `upstream` (the host dialled) → `request`;
//! - `identity` (what tokens were obtained under) → `model`;
//! - `request` (the placeholder `Checker` and the Fides request walk) → `model`;
//! - `model`: the output types ([`Connection`], [`Auth`], [`RequestTemplate`], [`Upstream`],
//!   …), plain data with no checking; `definition`: a runtime connection's [`Definition`]
//!   (what the connection API was given), plain data too.
//!
//! Under them sit the file readers (`origin`, `fides`, `raw`, `source`, `position`,
//! `hidden`, `env` with `secret_file`, `suggest`) and the settings (`settings`, `store`, `proxy`, `fields`,
//! `rejected`), and [`runtime`], the run-time placeholder lists, which import nothing. This
//! file declares, re-exports and drives them; no module imports it back, but for [`runtime`].

mod connection;
mod definition;
pub mod egress;
mod env;
pub mod fides;
mod fields;
mod hidden;
mod identity;
mod model;
mod origin;
mod position;
mod proxy;
mod raw;
mod redis;
mod rejected;
mod request;
mod secret_file;
mod settings;
mod source;
mod store;
mod strategy;
mod suggest;
mod template;
mod upstream;

pub use connection::validate_runtime;
pub use definition::Definition;
pub use env::file_references;
pub use model::{
    fill_pairs, ApiKey, Auth, BasicAuth, Body, ClientAuth, Connection, Egress, Encoding, Grant,
    Http2, Inject, OAuth2, Pair, PerUser, RequestTemplate, StubEndpoint, Upstream, CONTENT_TYPE,
    FORM, JSON, PLAIN,
};
pub use proxy::{InterceptSettings, ProxyLimits, ProxySettings};
pub use rejected::RejectedStatuses;
pub use settings::{
    AdminSettings, ClientIdentity, ClusterSettings, LogFormat, LogSettings, RedisSettings,
    RedisTarget, RedisTls, SentinelSettings, StoreSettings, Unreadable,
};
pub use source::Source;
pub use source::{Problem, Problems};
pub use template::Template;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The whole validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    pub proxy: ProxySettings,
    pub admin: AdminSettings,
    pub store: StoreSettings,
    /// Extra PEM roots trusted for upstream and token-endpoint TLS.
    pub ca_file: Option<PathBuf>,
    pub log: LogSettings,
    pub connections: Vec<Arc<Connection>>,
    /// The connector types runtime connections are instantiated from (`templates:`).
    pub templates: Vec<Arc<Template>>,
    /// What loads but is likely a mistake (`check` prints these, `run` logs them).
    pub warnings: Vec<Problem>,
}

/// Placeholders tokenwarden fills at run time, by the request that may use them: a config
/// may use them there without defining them.
pub mod runtime {
    /// In `authorization_request`: the state tokenwarden mints.
    pub const AUTHORIZATION: &[&str] = &["state"];
    /// In an authorization-code `token_request`: the code from the callback.
    pub const CODE_EXCHANGE: &[&str] = &["code"];
    /// In `refresh_request`: the current refresh and access tokens.
    pub const REFRESH: &[&str] = &["refresh_token", "access_token"];
    /// Every runtime placeholder (for messages).
    pub const ALL: &[&str] = &["state", "code", "refresh_token", "access_token"];
}

/// Reads, expands, parses and validates the config file at `path`, with `${VAR}` taken
/// from the process environment and `${file:PATH}` from the files (read now: a reload reads
/// them again).
pub fn load(path: &Path) -> Result<Config, Problems> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// [`load`] with an explicit environment (for tests).
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Problems> {
    let mut problems = Problems::default();
    let mut source = source::Source::read(path).map_err(|p| Problems::from(vec![p]))?;
    let mut value = source.parse().map_err(|p| Problems::from(vec![p]))?;
    let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut expansion = env::Expansion::default();
    let lookup = env::Lookup {
        env,
        base: &base_dir,
    };
    env::expand_tree(&mut value, "", &lookup, &mut expansion);
    let env::Expansion {
        unresolved,
        expanded,
    } = expansion;
    source.hide_expanded(expanded);
    for u in &unresolved {
        problems.push(source.problem(&u.path, u.missing.to_string()));
    }
    let env_problems = problems.0.len();
    let raw = raw::RawFile::read(value, &source, &mut problems);
    let s = settings::validate(&raw, &source, &base_dir, &mut problems);
    let connections =
        connection::validate_all(raw.connections, &source, &base_dir, &s.admin, &mut problems);
    let templates = template::validate_all(raw.templates, &source, &base_dir, &mut problems);
    // A value whose variable is unset (or whose file is unusable) still holds `${…}`: what
    // validation then says about that value would only repeat that, less clearly.
    let mut index = 0;
    problems.0.retain(|p| {
        index += 1;
        index <= env_problems
            || !unresolved
                .iter()
                .any(|u| p.message.starts_with(&format!("{}: ", u.path)))
    });
    cross_checks(&s.proxy, &connections, &templates, &source, &mut problems);
    problems.sort();
    // With errors the warnings stay with them (printed after), so nothing is hidden.
    let warnings = if problems.is_empty() {
        problems.take_warnings()
    } else {
        Vec::new()
    };
    problems.into_result(Config {
        file: path.to_path_buf(),
        proxy: s.proxy,
        admin: s.admin,
        store: s.store,
        ca_file: s.ca_file,
        log: s.log,
        connections,
        templates,
        warnings,
    })
}

/// A problem about the setting at `path` (`store.key`) of the config file `file`, placed at
/// its line and column (or its nearest ancestor's) when the file can be read again.
pub fn locate(file: &Path, path: &str, message: impl Into<String>) -> Problem {
    match source::Source::read(file) {
        Ok(source) => source.problem(path, message),
        Err(_) => source::Source::from_text(file, String::new()).problem(path, message),
    }
}

/// What only the settings and the connections together can show: no connection at all, a
/// passthrough entry no CONNECT can ever use, and hosts forward mode cannot tell apart.
fn cross_checks(
    proxy: &ProxySettings,
    connections: &[Arc<Connection>],
    templates: &[Arc<Template>],
    src: &source::Source,
    problems: &mut Problems,
) {
    if connections.is_empty() && templates.is_empty() && problems.is_empty() {
        problems.push(src.problem(
            "connections",
            "at least one connection or template is required (see docs/configuration.md: Connections and strategies, and docs/runtime-connections.md)",
        ));
    }
    for (i, target) in proxy.connect_passthrough.iter().enumerate() {
        let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Some(c) = connections.iter().find(|c| c.upstream.host == host) {
            let path = format!("proxy.connect_passthrough[{i}]");
            problems.push(src.problem(
                &path,
                format!(
                    "{} can never be tunnelled: its host is connection `{}`'s, and a host with credentials is never tunnelled untouched: CONNECT to it is refused, or intercepted with proxy.intercept (send http:// requests, or turn interception on)",
                    src.quote(&path, target),
                    c.key
                ),
            ));
        }
    }
    // A `reverse_only` connection says it shares its host on purpose: forward mode skips it.
    for (i, c) in connections
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.reverse_only)
    {
        // (A duplicate key is an error of its own.)
        let same = |o: &&Arc<Connection>| {
            o.key != c.key
                && !o.reverse_only
                && o.upstream.host == c.upstream.host
                && o.upstream.port == c.upstream.port
        };
        if let Some(first) = connections[..i].iter().find(same) {
            problems.warn(src.problem(
                &format!("connections[{i}].key"),
                format!(
                    // (Not the host itself: it may be filled in from the secrets.)
                    "connections `{}` and `{}` reach the same host and port: in forward mode (HTTP_PROXY) a request to that host must name one with a `tokenwarden-connection` header, or is refused (421); reverse mode reaches each by its key (set `reverse_only: true` on `{}` if it is reached only that way)",
                    first.key, c.key, c.key
                ),
            ));
        }
    }
}

/// Loading a config from its text, for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{load_with_env, Config, Problems};

    /// Loads `yaml` as a `config.yaml` in a fresh directory, with an empty environment.
    pub(crate) fn load_text(yaml: &str) -> Result<Config, Problems> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, yaml).unwrap();
        load_with_env(&file, &|_| None)
    }
}
