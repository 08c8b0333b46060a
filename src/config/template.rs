//! The `templates:` section: the connector types runtime connections are instantiated from
//! (`POST /api/v1/connection/instantiate/{type}`). Each entry names an unchanged Fides file,
//! or a folder of them (every `*.yml` and `*.yaml` in it, not its subfolders); each file is
//! the connector type its `saas_config.type` names.

use super::fides::{SaasConfigFile, Strategy};
use super::model::{Grant, PerUser};
use super::source::{Problem, Problems, Source};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One `templates:` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    pub path: String,
    /// As on a file connection: an instance's upstream may be a private address (internal
    /// APIs, tests). Without it an instance whose host is one is refused.
    #[serde(default)]
    pub allow_private_network: bool,
    /// As on a file connection, for every instance: `single` (default) or `per_user`, and
    /// the settings of `per_user`.
    #[serde(default)]
    pub grants: Option<String>,
    #[serde(default)]
    pub max_concurrent_token_requests: Option<u64>,
    #[serde(default)]
    pub grant_cache_size: Option<u64>,
}

/// A connector type runtime connections are made from.
#[derive(Debug)]
pub struct Template {
    /// `saas_config.type`: the `{saas_connector_type}` of the instantiate route.
    pub kind: String,
    /// `saas_config.name`.
    pub name: String,
    /// The Fides file (absolute, or relative to the working directory as the config's
    /// directory is).
    pub file: PathBuf,
    pub allow_private_network: bool,
    /// `grants: per_user` on the entry: every instance has a grant per end user.
    pub per_user: Option<PerUser>,
    /// Its `connector_params`: each name with its default, as text (None: no default).
    pub params: Vec<(String, Option<String>)>,
    /// `authentication.strategy` (None: the file has no authentication).
    pub strategy: Option<String>,
}

impl Template {
    /// Whether an instance needs a person to authorize it (the authorization-code grant).
    pub fn authorization_required(&self) -> bool {
        self.strategy.as_deref() == Some("oauth2_authorization_code")
    }
}

/// Reads every template the section names; a problem in one does not hide the others'.
pub fn validate_all(
    entries: Vec<Value>,
    src: &Source,
    base: &Path,
    problems: &mut Problems,
) -> Vec<Arc<Template>> {
    let mut out: Vec<Arc<Template>> = Vec::new();
    for (i, value) in entries.into_iter().enumerate() {
        let at = format!("templates[{i}]");
        let Some(raw) = src.deserialize_all::<RawTemplate>(value, &at, problems) else {
            continue;
        };
        let path = base.join(&raw.path);
        let files = match files_of(&path) {
            Ok(files) => files,
            Err(message) => {
                problems.push(src.problem(&format!("{at}.path"), message));
                continue;
            }
        };
        let per_user_fields = (
            raw.grants.clone(),
            raw.max_concurrent_token_requests,
            raw.grant_cache_size,
        );
        for file in files {
            let Some(mut template) = read(&file, raw.allow_private_network, problems) else {
                continue;
            };
            let grant = match template.strategy.as_deref() {
                Some("oauth2_authorization_code") => Some(Grant::AuthorizationCode),
                Some("oauth2_client_credentials") => Some(Grant::ClientCredentials),
                _ => None,
            };
            let fields = per_user_fields.clone();
            template.per_user = super::connection::per_user(fields, grant, src, &at, problems);
            if let Some(first) = out.iter().find(|t| t.kind == template.kind) {
                problems.push(src.problem(
                    &format!("{at}.path"),
                    format!(
                        "connector type `{}` is defined twice: by {} and by {}",
                        template.kind,
                        first.file.display(),
                        template.file.display()
                    ),
                ));
                continue;
            }
            out.push(Arc::new(template));
        }
    }
    out
}

/// The Fides files `path` names: itself, or the `*.yml`/`*.yaml` files of a folder, sorted.
fn files_of(path: &Path) -> Result<Vec<PathBuf>, String> {
    let shown = path.display();
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| format!("cannot read `{shown}` (a Fides file or a folder of them): {e}"))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("folder `{shown}` holds no .yml or .yaml file"));
    }
    Ok(files)
}

/// One Fides file as a template; its own problems are placed in it.
fn read(file: &Path, allow_private_network: bool, problems: &mut Problems) -> Option<Template> {
    let source = Source::read(file).map_err(|p| problems.push(p)).ok()?;
    let value = source.parse().map_err(|p| problems.push(p)).ok()?;
    let parsed: SaasConfigFile = source
        .deserialize(value, "")
        .map_err(|p: Problem| problems.push(p))
        .ok()?;
    let saas = parsed.saas_config;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    };
    Some(Template {
        kind: saas.kind,
        name: saas.name,
        file: file.to_path_buf(),
        allow_private_network,
        per_user: None,
        params: (saas.connector_params.iter())
            .map(|p| (p.name.clone(), p.default_value.as_ref().map(text)))
            .collect(),
        strategy: (saas.client_config.authentication).map(|Strategy { strategy, .. }| strategy),
    })
}
