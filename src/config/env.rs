//! `${VAR}` and `${file:PATH}` expansion in the string values of tokenwarden's own file.
//! `${VAR}` is an environment variable's value; `${file:PATH}` is a file's text without its
//! trailing line ends ([`secret_file`]: a relative PATH is in the config file's folder, and
//! a file others may read or write is refused). `$${` writes a literal `${`. Expansion
//! happens after YAML parsing, so a value can never change the structure of the file, and an
//! expanded value is not expanded again. Fides files are never expanded (they are used
//! unchanged). The paths of the values a variable or a file went into are recorded: problems
//! never quote them.

use super::position::{child_index, child_key};
use super::secret_file::{self, FileError};
use serde_yaml_ng::Value;
use std::path::Path;

/// Where the values of `${…}` come from.
pub struct Lookup<'a> {
    /// The environment: a variable's value, None when it is not set.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The config file's folder, where a relative `${file:}` path starts.
    pub base: &'a Path,
}

/// Why a `${…}` gives no value.
#[derive(Debug)]
pub enum Missing {
    /// `${NAME}`: the variable is not set.
    Variable(String),
    /// `${file:PATH}`: the file cannot be used.
    File(FileError),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Variable(name) => write!(f, "environment variable `{name}` is not set"),
            Missing::File(e) => write!(f, "{e}"),
        }
    }
}

/// A `${…}` without a value, with the path of the value that needs it.
#[derive(Debug)]
pub struct Unresolved {
    pub path: String,
    pub missing: Missing,
}

/// What expanding a file found: the references without a value, and the paths of the
/// values that a variable's value or a file's text went into (never to be quoted in a
/// problem).
#[derive(Debug, Default)]
pub struct Expansion {
    pub unresolved: Vec<Unresolved>,
    pub expanded: Vec<String>,
}

/// Expands every string in `value` in place.
pub fn expand_tree(value: &mut Value, path: &str, lookup: &Lookup<'_>, found: &mut Expansion) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(Expanded { text, substituted }) => {
                if substituted {
                    found.expanded.push(path.to_owned());
                }
                *s = text;
            }
            Err(missing) => {
                found
                    .unresolved
                    .extend(missing.into_iter().map(|missing| Unresolved {
                        path: path.to_owned(),
                        missing,
                    }))
            }
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &child_index(path, i), lookup, found);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                expand_tree(v, &child_key(path, key), lookup, found);
            }
        }
        Value::Tagged(tagged) => expand_tree(&mut tagged.value, path, lookup, found),
        _ => {}
    }
}

/// The `${file:PATH}` paths in the strings of `value`, as written (the files a config
/// file's values come from: the config watch follows them).
pub fn file_references(value: &Value) -> Vec<String> {
    let mut files = Vec::new();
    visit_strings(value, &mut |s| {
        scan(s, &mut |piece| {
            if let Piece::File(path) = piece {
                files.push(path.to_owned());
            }
        });
    });
    files
}

fn visit_strings(value: &Value, each: &mut dyn FnMut(&str)) {
    match value {
        Value::String(s) => each(s),
        Value::Sequence(items) => items.iter().for_each(|v| visit_strings(v, each)),
        Value::Mapping(map) => map.values().for_each(|v| visit_strings(v, each)),
        Value::Tagged(tagged) => visit_strings(&tagged.value, each),
        _ => {}
    }
}

/// A text with its references expanded.
#[derive(Debug, PartialEq)]
pub struct Expanded {
    pub text: String,
    /// Whether a variable's value or a file's text went into it (a literal `$${` alone
    /// does not count).
    pub substituted: bool,
}

/// Expands `${NAME}` and `${file:PATH}` in `text`; or says which give no value.
pub fn expand(text: &str, lookup: &Lookup<'_>) -> Result<Expanded, Vec<Missing>> {
    let mut out = String::with_capacity(text.len());
    let mut substituted = false;
    let mut missing = Vec::new();
    scan(text, &mut |piece| {
        let value = match piece {
            Piece::Text(t) => {
                out.push_str(t);
                return;
            }
            Piece::Variable(name) => {
                (lookup.env)(name).ok_or_else(|| Missing::Variable(name.to_owned()))
            }
            Piece::File("") => Err(Missing::File(FileError::NoPath)),
            Piece::File(path) => {
                secret_file::read(&secret_file::locate(lookup.base, path)).map_err(Missing::File)
            }
        };
        match value {
            Ok(v) => {
                out.push_str(&v);
                substituted = true;
            }
            Err(m) => missing.push(m),
        }
    });
    if missing.is_empty() {
        Ok(Expanded {
            text: out,
            substituted,
        })
    } else {
        Err(missing)
    }
}

/// A part of a text: literal, or a reference to expand.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    /// `${NAME}`.
    Variable(&'a str),
    /// `${file:PATH}` (PATH may be empty: an error).
    File(&'a str),
}

/// Splits `text` into its pieces, in order. `$${` is the text `${`; a `${` that starts no
/// reference (`${ x}`, no closing `}`) is text.
fn scan<'a>(text: &'a str, each: &mut dyn FnMut(Piece<'a>)) {
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        if i > 0 {
            each(Piece::Text(&rest[..i]));
        }
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            each(Piece::Text("${"));
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let inside = tail.find('}').map(|end| (&tail[..end], &tail[end + 1..]));
            match inside {
                Some((inside, next)) if is_var_name(inside) => {
                    each(Piece::Variable(inside));
                    rest = next;
                }
                Some((inside, next)) if inside.starts_with(FILE_PREFIX) => {
                    each(Piece::File(&inside[FILE_PREFIX.len()..]));
                    rest = next;
                }
                _ => {
                    each(Piece::Text("${"));
                    rest = tail;
                }
            }
        } else {
            each(Piece::Text("$"));
            rest = &after[1..];
        }
    }
    if !rest.is_empty() {
        each(Piece::Text(rest));
    }
}

/// What starts a file reference inside `${…}`.
const FILE_PREFIX: &str = "file:";

fn is_var_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn env(name: &str) -> Option<String> {
        match name {
            "ID" => Some("abc".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    /// A lookup with [`env`] and files in `base`.
    fn lookup(base: &Path) -> Lookup<'_> {
        Lookup { env: &env, base }
    }

    fn text(text: &str) -> Result<String, Vec<String>> {
        expand(text, &lookup(Path::new("/nonexistent")))
            .map(|e| e.text)
            .map_err(|m| m.iter().map(ToString::to_string).collect())
    }

    /// A file `name` in `dir` holding `content`, readable by its owner only.
    fn secret(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
        let file = dir.join(name);
        std::fs::write(&file, content).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        file
    }

    #[test]
    fn expands_and_reports_unset() {
        let unset = |name: &str| format!("environment variable `{name}` is not set");
        assert_eq!(text("x-${ID}-y"), Ok("x-abc-y".into()));
        assert_eq!(text("${EMPTY}"), Ok(String::new()));
        assert_eq!(text("$${ID} $5 ${ not}"), Ok("${ID} $5 ${ not}".into()));
        assert_eq!(text("$${file:/x} ${file"), Ok("${file:/x} ${file".into()));
        let none = lookup(Path::new("/nonexistent"));
        assert!(expand("${EMPTY}", &none).unwrap().substituted);
        assert!(!expand("$${ID} $5", &none).unwrap().substituted);
        assert_eq!(text("${A}${ID}${B}"), Err(vec![unset("A"), unset("B")]));
    }

    #[test]
    fn a_file_s_text_goes_in_without_its_trailing_line_ends() {
        let dir = tempfile::tempdir().unwrap();
        let abs = secret(dir.path(), "abs", "from-abs\r\n");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        secret(dir.path(), "sub/rel", "from-rel\n\n");
        // A file's text is not expanded again.
        secret(dir.path(), "raw", "${ID}$${x}\n");
        let files = lookup(dir.path());
        let value = format!(
            "Bearer ${{file:{}}}|${{file:sub/rel}}|${{ID}}",
            abs.display()
        );
        assert_eq!(
            expand(&value, &files).unwrap(),
            Expanded {
                text: "Bearer from-abs|from-rel|abc".into(),
                substituted: true
            }
        );
        assert_eq!(expand("${file:raw}", &files).unwrap().text, "${ID}$${x}");
    }

    #[test]
    fn an_unusable_file_is_named_and_its_text_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let open = secret(dir.path(), "open", "s3cret-in-file");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let files = lookup(dir.path());
        let missing = expand("${file:gone} ${file:open} ${file:} ${NOPE}", &files).unwrap_err();
        let messages: Vec<String> = missing.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        let gone = dir.path().join("gone").display().to_string();
        assert!(
            messages[0].starts_with(&format!("cannot read {gone}: ")),
            "{messages:?}"
        );
        assert!(
            messages[0].contains("No such file or directory"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains(&open.display().to_string()),
            "{messages:?}"
        );
        assert!(messages[1].contains("mode 644"), "{messages:?}");
        assert!(messages[2].contains("names no file"), "{messages:?}");
        assert_eq!(messages[3], "environment variable `NOPE` is not set");
        assert!(messages.iter().all(|m| !m.contains("s3cret")));
    }

    #[test]
    fn expands_nested_values_with_paths() {
        let dir = tempfile::tempdir().unwrap();
        secret(dir.path(), "client-secret", "from-file\n");
        let mut v: Value = serde_yaml_ng::from_str(
            "a:\n  - x: ${NOPE}\n  - ${ID}\n  - s: ${file:client-secret}\n    t: ${file:gone}\n  - plain\n",
        )
        .unwrap();
        let mut found = Expansion::default();
        expand_tree(&mut v, "", &lookup(dir.path()), &mut found);
        let unresolved: Vec<(&str, String)> = found
            .unresolved
            .iter()
            .map(|u| (u.path.as_str(), u.missing.to_string()))
            .collect();
        assert_eq!(unresolved.len(), 2, "{unresolved:?}");
        assert_eq!(unresolved[0].0, "a[0].x");
        assert!(matches!(found.unresolved[0].missing, Missing::Variable(ref n) if n == "NOPE"));
        assert_eq!(unresolved[1].0, "a[2].t");
        assert!(unresolved[1].1.contains("gone"), "{unresolved:?}");
        assert_eq!(found.expanded, ["a[1]", "a[2].s"]);
        assert_eq!(v["a"][1].as_str(), Some("abc"));
        assert_eq!(v["a"][2]["s"].as_str(), Some("from-file"));
    }

    #[test]
    fn file_references_are_listed_as_written_but_escaped_ones() {
        let v: Value = serde_yaml_ng::from_str(
            "a: ${file:/run/a}\nb: [\"x ${file:rel/b} ${ID} $${file:/not} ${file:/run/c}\"]\nc: { d: 1 }\n",
        )
        .unwrap();
        assert_eq!(file_references(&v), ["/run/a", "rel/b", "/run/c"]);
    }
}
