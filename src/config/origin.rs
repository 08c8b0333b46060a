//! Where a connection's Fides config comes from — a Fides file beside the config, an inline
//! `saas_config`, or an inline `client_config` — read into a [`FidesSource`], and
//! [`Origin`], which positions a problem in the file and at the path it came from.

use super::fides::{ClientConfig, SaasConfig, SaasConfigFile};
use super::source::{Problem, Problems, Source};
use super::suggest::closest;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;
use std::path::Path;

/// The `kind` of a connection given by an inline client_config (Fides' custom connector).
const INLINE_KIND: &str = "custom";

/// Where a connection's client_config lives: the file (main or Fides) and the path in it.
pub(super) struct Origin<'a> {
    src: &'a Source,
    path: &'a str,
    key: &'a str,
}

impl Origin<'_> {
    fn at(&self, rel: &str) -> String {
        format!("{}.{rel}", self.path)
    }

    pub(super) fn problem(&self, rel: &str, msg: impl std::fmt::Display) -> Problem {
        self.src
            .problem(&self.at(rel), format!("connection `{}`: {msg}", self.key))
    }

    /// [`Source::quote`] of the value at `rel`.
    pub(super) fn quote(&self, rel: &str, text: &str) -> String {
        self.src.quote(&self.at(rel), text)
    }

    pub(super) fn read<T: DeserializeOwned>(&self, value: Value, rel: &str) -> Result<T, Problem> {
        self.src.deserialize(value, &self.at(rel))
    }

    /// [`Origin::read`] of a strategy `configuration`, with a warning for each key not in
    /// `known`: Fides ignores them, so they load, but a typo (`expire_in`) would otherwise
    /// pass without a word. None, with the problem pushed, when it cannot be read.
    pub(super) fn read_configuration<T: DeserializeOwned>(
        &self,
        value: Value,
        rel: &str,
        known: &[&str],
        problems: &mut Problems,
    ) -> Option<T> {
        if let Value::Mapping(map) = &value {
            for key in map.keys().filter_map(Value::as_str) {
                if known.contains(&key) {
                    continue;
                }
                let hint = closest(key, known)
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                problems.warn(self.problem(
                    &format!("{rel}.{key}"),
                    format!("unknown key `{key}` is ignored (as Fides ignores it){hint}"),
                ));
            }
        }
        self.read(value, rel).map_err(|p| problems.push(p)).ok()
    }
}

/// A connection's Fides config, read, with the Fides file's source when it came from one.
pub(super) struct FidesSource {
    pub(super) saas: SaasConfig,
    file: Option<Source>,
    /// The client_config's path in its file.
    path: String,
}

/// How one `connections:` entry names its Fides config.
pub(super) struct Named<'a> {
    pub(super) key: &'a str,
    pub(super) saas_config: Option<Value>,
    pub(super) client_config: Option<Value>,
    /// The entry's path in the main file (`connections[i]`).
    pub(super) prefix: &'a str,
}

impl FidesSource {
    /// Reads the Fides config `named` names: a file relative to `base`, or inline in `src`.
    /// None, with the problem pushed, when there is none, two, or one that does not read.
    pub(super) fn read(
        named: Named<'_>,
        src: &Source,
        base: &Path,
        problems: &mut Problems,
    ) -> Option<FidesSource> {
        let Named { key, prefix, .. } = named;
        match (named.saas_config, named.client_config) {
            (Some(Value::String(file)), None) => {
                FidesSource::from_file(&base.join(file), key, prefix, src, problems)
            }
            (Some(value @ Value::Mapping(_)), None) => {
                let at = format!("{prefix}.saas_config");
                let saas: SaasConfig = src
                    .deserialize(value, &at)
                    .map_err(|p| problems.push(p))
                    .ok()?;
                Some(FidesSource {
                    saas,
                    file: None,
                    path: format!("{at}.client_config"),
                })
            }
            (None, Some(value)) => FidesSource::inline(value, key, prefix, src, problems),
            (Some(_), None) => {
                problems.push(src.problem(
                    &format!("{prefix}.saas_config"),
                    "expected a file path or a saas_config mapping",
                ));
                None
            }
            (Some(_), Some(_)) => {
                problems.push(src.problem(
                    &format!("{prefix}.client_config"),
                    format!("connection `{key}` has both saas_config and client_config; keep one"),
                ));
                None
            }
            (None, None) => {
                problems.push(src.problem(
                    prefix,
                    format!(
                        "connection `{key}` needs a saas_config (a Fides file) or a client_config"
                    ),
                ));
                None
            }
        }
    }

    /// An unchanged Fides file (`saas_config: <path>`); an unreadable one is a problem where
    /// the main file names it, the file's own problems are placed in it.
    fn from_file(
        file: &Path,
        key: &str,
        prefix: &str,
        src: &Source,
        problems: &mut Problems,
    ) -> Option<FidesSource> {
        let fides = match std::fs::read_to_string(file) {
            Ok(text) => Source::from_text(file, text),
            Err(e) => {
                problems.push(src.problem(
                    &format!("{prefix}.saas_config"),
                    format!(
                        "connection `{key}`: cannot read the Fides file `{}`: {e}",
                        file.display()
                    ),
                ));
                return None;
            }
        };
        let in_fides_file = |mut p: Problem| {
            p.message = format!("connection `{key}`: {}", p.message);
            p
        };
        let value = fides
            .parse()
            .map_err(|p| problems.push(in_fides_file(p)))
            .ok()?;
        let parsed: SaasConfigFile = fides
            .deserialize(value, "")
            .map_err(|p| problems.push(in_fides_file(p)))
            .ok()?;
        Some(FidesSource {
            saas: parsed.saas_config,
            file: Some(fides),
            path: "saas_config.client_config".into(),
        })
    }

    /// An inline `client_config:`, as the Fides config of a connector named by its key.
    fn inline(
        value: Value,
        key: &str,
        prefix: &str,
        src: &Source,
        problems: &mut Problems,
    ) -> Option<FidesSource> {
        let at = format!("{prefix}.client_config");
        let client_config: ClientConfig = src
            .deserialize(value, &at)
            .map_err(|p| problems.push(p))
            .ok()?;
        let saas = SaasConfig {
            fides_key: key.to_owned(),
            name: key.to_owned(),
            kind: INLINE_KIND.into(),
            connector_params: Vec::new(),
            client_config,
        };
        Some(FidesSource {
            saas,
            file: None,
            path: at,
        })
    }

    /// Positions problems of connection `key` at its client_config (`main` unless it came
    /// from a Fides file).
    pub(super) fn origin<'a>(&'a self, main: &'a Source, key: &'a str) -> Origin<'a> {
        Origin {
            src: self.file.as_ref().unwrap_or(main),
            path: &self.path,
            key,
        }
    }
}
