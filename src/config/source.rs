//! A config file being read (its text and node positions) and the problems found in it.

use super::hidden::{under_secrets, without_value, HIDDEN};
use super::position::{child_key, Positions};
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config file. `Display`: `file:line:column: message`.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found, in file order, and the warnings: things that load but are likely
/// mistakes (a key Fides ignores, two connections forward mode cannot tell apart).
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>, pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, p: Problem) {
        self.0.push(p);
    }

    /// Records a warning: `check` prints it, `run` logs it, neither refuses the file.
    pub fn warn(&mut self, p: Problem) {
        self.1.push(p);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The warnings, taken out.
    pub fn take_warnings(&mut self) -> Vec<Problem> {
        std::mem::take(&mut self.1)
    }

    /// Puts the problems in file order: grouped by file (in the order the files first
    /// appear), then by line and column; unpositioned problems first within their file.
    pub fn sort(&mut self) {
        let mut files: Vec<PathBuf> = Vec::new();
        for p in &self.0 {
            if !files.contains(&p.file) {
                files.push(p.file.clone());
            }
        }
        self.0.sort_by_key(|p| {
            let file = files.iter().position(|f| *f == p.file).unwrap_or(0);
            (file, p.line.unwrap_or(0), p.column.unwrap_or(0))
        });
    }

    pub fn into_result<T>(self, ok: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(ok)
        } else {
            Err(self)
        }
    }
}

impl From<Vec<Problem>> for Problems {
    fn from(v: Vec<Problem>) -> Problems {
        Problems(v, Vec::new())
    }
}

/// The problems, one a line, then the warnings, each after `warning: `.
impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        for w in &self.1 {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// A YAML file: its path, text and the position of each node, and which values a problem
/// must never quote.
pub struct Source {
    pub file: PathBuf,
    text: String,
    /// Indexed at the first problem (a valid file never needs them: the connection API
    /// validates a template and a request body per change).
    positions: std::sync::OnceLock<Positions>,
    /// Paths of the values a `${VAR}` went into.
    expanded: Vec<String>,
}

impl Source {
    pub fn read(file: &Path) -> Result<Source, Problem> {
        let text = std::fs::read_to_string(file).map_err(|e| Problem {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Ok(Source::from_text(file, text))
    }

    pub fn from_text(file: &Path, text: String) -> Source {
        let positions = std::sync::OnceLock::new();
        Source {
            file: file.to_path_buf(),
            text,
            positions,
            expanded: Vec::new(),
        }
    }

    /// Records the paths of the values a `${VAR}` went into ([`super::env::Expansion`]).
    pub fn hide_expanded(&mut self, paths: Vec<String>) {
        self.expanded = paths;
    }

    /// Whether a problem at `path` must not quote its value: the value, or the value it
    /// is part of, or one inside it, is under a connection's `secrets` or came from `${…}`.
    pub fn hides(&self, path: &str) -> bool {
        let related = |p: &str| {
            let (short, long) = if p.len() <= path.len() {
                (p, path)
            } else {
                (path, p)
            };
            long.strip_prefix(short).is_some_and(|rest| {
                rest.is_empty() || short.is_empty() || rest.starts_with(['.', '['])
            })
        };
        under_secrets(path) || self.expanded.iter().any(|p| related(p))
    }

    /// `text` in backquotes, for a message about the value at `path` — or `(value hidden)`
    /// when [`Source::hides`] it.
    pub fn quote(&self, path: &str, text: &str) -> String {
        if self.hides(path) {
            HIDDEN.to_owned()
        } else {
            format!("`{text}`")
        }
    }

    /// Parses the YAML text (syntax only).
    pub fn parse(&self) -> Result<Value, Problem> {
        serde_yaml_ng::from_str(&self.text).map_err(|e| {
            let location = e.location();
            let hint = location
                .as_ref()
                .filter(|l| self.unquoted_variable_at(l.line(), l.column()))
                .map_or("", |_| UNQUOTED_VARIABLE_HINT);
            Problem {
                file: self.file.clone(),
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                message: format!("invalid YAML: {}{hint}", strip_location(&e.to_string())),
            }
        })
    }

    /// Whether a syntax error at `line`:`column` (1-based) sits on a `${` — an unquoted
    /// variable inside `{ … }` or `[ … ]`, where YAML reads its braces as structure.
    fn unquoted_variable_at(&self, line: usize, column: usize) -> bool {
        let Some(text) = self.text.lines().nth(line.saturating_sub(1)) else {
            return false;
        };
        let at = column.saturating_sub(1);
        [at.saturating_sub(1), at]
            .iter()
            .any(|&i| text.get(i..).is_some_and(|rest| rest.starts_with("${")))
    }

    /// A problem at `path` (e.g. `connections[0].secrets`), positioned when known.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        let position = (self.positions)
            .get_or_init(|| Positions::index(&self.text))
            .find(path);
        let message = message.into();
        let message = if path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        };
        Problem {
            file: self.file.clone(),
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            message,
        }
    }

    /// Deserializes `value` (found at `prefix` in this file) into `T`, turning a serde error
    /// into a positioned problem.
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        value: Value,
        prefix: &str,
    ) -> Result<T, Problem> {
        serde_path_to_error::deserialize(value).map_err(|e| self.serde_problem(&e, prefix))
    }

    /// [`Source::deserialize`], but one wrong key does not hide the problems after it: an
    /// unknown key, or a value of the wrong type (`pkce: yes please`), is reported, its key
    /// removed (the field takes its default), and the rest read again. A required field
    /// whose value was removed so ends the reading, without a second problem about it.
    pub fn deserialize_all<T: DeserializeOwned>(
        &self,
        mut value: Value,
        prefix: &str,
        problems: &mut Problems,
    ) -> Option<T> {
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_REMOVED_KEYS {
            let e = match serde_path_to_error::deserialize(value.clone()) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let message = e.inner().to_string();
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(field, _)| child_key(&path_text("", e.path().iter()), field));
            if missing.is_some_and(|m| removed.contains(&m)) {
                return None;
            }
            problems.push(self.serde_problem(&e, prefix));
            removed.push(remove(&mut value, e.path())?);
        }
        None
    }

    fn serde_problem(
        &self,
        e: &serde_path_to_error::Error<serde_yaml_ng::Error>,
        prefix: &str,
    ) -> Problem {
        let path = path_text(prefix, e.path().iter());
        let message = super::suggest::did_you_mean(&strip_location(&e.inner().to_string()));
        if self.hides(&path) {
            self.problem(&path, without_value(&message))
        } else {
            self.problem(&path, message)
        }
    }
}

/// Most wrong keys reported in one value before giving up on it.
const MAX_REMOVED_KEYS: usize = 32;

/// `segments` after `prefix`, as a path in [`Source::problem`]'s form (`a[2].b`).
fn path_text<'a>(
    prefix: &str,
    segments: impl Iterator<Item = &'a serde_path_to_error::Segment>,
) -> String {
    use serde_path_to_error::Segment;
    segments.fold(prefix.to_owned(), |path, segment| match segment {
        Segment::Seq { index } => super::position::child_index(&path, *index),
        Segment::Map { key } => child_key(&path, key),
        Segment::Enum { variant } => child_key(&path, variant),
        Segment::Unknown => path,
    })
}

/// Removes from `value` the mapping key nearest to the node at `path` (the node's own key,
/// or the key of the list it is in); the removed key's path, or None when there is none.
fn remove(value: &mut Value, path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let last_key = segments
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))?;
    let (Segment::Map { key }, parents) = (segments[last_key], &segments[..last_key]) else {
        return None;
    };
    let mut node = value;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Mapping(m)) => m.get_mut(key.as_str())?,
            (Segment::Seq { index }, Value::Sequence(s)) => s.get_mut(*index)?,
            _ => return None,
        };
    }
    match node {
        // (In place: the keys after it keep their order, so problems keep file order.)
        Value::Mapping(m) => m
            .shift_remove(key.as_str())
            .map(|_| path_text("", segments[..=last_key].iter().copied())),
        _ => None,
    }
}

/// Appended to a YAML syntax error caused by an unquoted `${VAR}` in a flow collection.
const UNQUOTED_VARIABLE_HINT: &str = " (inside `{ … }` or `[ … ]`, quote a variable: \"${VAR}\")";

/// serde_yaml appends " at line L column C" to some messages; positions are shown once, up front.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read only to be checked
    struct Entry {
        name: String,
        #[serde(default)]
        on: bool,
        #[serde(default)]
        n: u8,
    }

    #[test]
    fn a_wrong_key_hides_none_after_it_and_a_removed_field_is_not_also_missing() {
        let text = "name: [x]\non: maybe\nn: 300\nother: 1\n";
        let src = Source::from_text(Path::new("c.yaml"), text.to_owned());
        let mut problems = Problems::default();
        let value = src.parse().unwrap();
        assert!(src
            .deserialize_all::<Entry>(value, "", &mut problems)
            .is_none());
        let lines: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            lines,
            [
                "c.yaml:1:1: name: invalid type: sequence, expected a string",
                "c.yaml:2:1: on: invalid type: string \"maybe\", expected a boolean",
                "c.yaml:3:1: n: invalid value: integer `300`, expected u8",
                "c.yaml:4:1: other: unknown field `other`, expected one of `name`, `on`, `n`",
            ]
        );
    }

    #[test]
    fn a_value_from_a_variable_is_hidden_with_what_holds_it_and_what_it_holds() {
        let mut src = Source::from_text(Path::new("c.yaml"), String::new());
        src.hide_expanded(vec!["connections[0].client_config".into()]);
        for path in [
            "connections[0].client_config",
            "connections[0].client_config.host",
            "connections[0]",
            "",
            "connections[2].secrets.id",
        ] {
            assert!(src.hides(path), "{path}");
            assert_eq!(src.quote(path, "v"), HIDDEN);
        }
        for path in ["connections[1]", "connections[0].client_configs", "proxy"] {
            assert!(!src.hides(path), "{path}");
            assert_eq!(src.quote(path, "v"), "`v`");
        }
    }
}
