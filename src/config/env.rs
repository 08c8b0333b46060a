//! `${VAR}` expansion in the string values of tokenwarden's own file. `$${` writes a
//! literal `${`. Expansion happens after YAML parsing, so a variable's value can never
//! change the structure of the file. Fides files are never expanded (they are used unchanged).
//! The paths of the values a variable went into are recorded: problems never quote them.

use super::position::{child_index, child_key};
use serde_yaml_ng::Value;

/// A variable that is referenced but not set, with the path of the value that needs it.
#[derive(Debug, PartialEq)]
pub struct Unset {
    pub path: String,
    pub variable: String,
}

/// What expanding a file found: the variables that are not set, and the paths of the
/// values that a variable's value went into (never to be quoted in a problem).
#[derive(Debug, Default)]
pub struct Expansion {
    pub unset: Vec<Unset>,
    pub expanded: Vec<String>,
}

/// Expands every string in `value` in place, using `lookup` for variables.
pub fn expand_tree(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    found: &mut Expansion,
) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(Expanded { text, substituted }) => {
                if substituted {
                    found.expanded.push(path.to_owned());
                }
                *s = text;
            }
            Err(missing) => found
                .unset
                .extend(missing.into_iter().map(|variable| Unset {
                    path: path.to_owned(),
                    variable,
                })),
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

/// A text with its variables expanded.
#[derive(Debug, PartialEq)]
pub struct Expanded {
    pub text: String,
    /// Whether a variable's value went into it (a literal `$${` alone does not count).
    pub substituted: bool,
}

/// Expands `${NAME}` in `text`; returns the names that are unset.
pub fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut substituted = false;
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            match tail.find('}') {
                Some(end) if is_var_name(&tail[..end]) => {
                    let name = &tail[..end];
                    match lookup(name) {
                        Some(v) => {
                            out.push_str(&v);
                            substituted = true;
                        }
                        None => missing.push(name.to_owned()),
                    }
                    rest = &tail[end + 1..];
                }
                _ => {
                    out.push_str("${");
                    rest = tail;
                }
            }
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(Expanded {
            text: out,
            substituted,
        })
    } else {
        Err(missing)
    }
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ID" => Some("abc".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn text(text: &str) -> Result<String, Vec<String>> {
        expand(text, &env).map(|e| e.text)
    }

    #[test]
    fn expands_and_reports_unset() {
        assert_eq!(text("x-${ID}-y"), Ok("x-abc-y".into()));
        assert_eq!(text("${EMPTY}"), Ok(String::new()));
        assert_eq!(text("$${ID} $5 ${ not}"), Ok("${ID} $5 ${ not}".into()));
        assert!(expand("${EMPTY}", &env).unwrap().substituted);
        assert!(!expand("$${ID} $5", &env).unwrap().substituted);
        assert_eq!(text("${A}${ID}${B}"), Err(vec!["A".into(), "B".into()]));
    }

    #[test]
    fn expands_nested_values_with_paths() {
        let mut v: Value = serde_yaml_ng::from_str("a:\n  - x: ${NOPE}\n  - ${ID}\n").unwrap();
        let mut found = Expansion::default();
        expand_tree(&mut v, "", &env, &mut found);
        assert_eq!(
            found.unset,
            vec![Unset {
                path: "a[0].x".into(),
                variable: "NOPE".into()
            }]
        );
        assert_eq!(found.expanded, ["a[1]"]);
        assert_eq!(v["a"][1].as_str(), Some("abc"));
    }
}
