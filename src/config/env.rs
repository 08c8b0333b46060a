//! `${VAR}` expansion in the string values of tokenwarden's own file. `$${` writes a
//! literal `${`. Expansion happens after YAML parsing, so a variable's value can never
//! change the structure of the file. Fides files are never expanded (they are used unchanged).

use super::position::{child_index, child_key};
use serde_yaml_ng::Value;

/// A variable that is referenced but not set, with the path of the value that needs it.
#[derive(Debug, PartialEq)]
pub struct Unset {
    pub path: String,
    pub variable: String,
}

/// Expands every string in `value` in place, using `lookup` for variables.
pub fn expand_tree(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<Unset>,
) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(missing) => unset.extend(missing.into_iter().map(|variable| Unset {
                path: path.to_owned(),
                variable,
            })),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &child_index(path, i), lookup, unset);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                expand_tree(v, &child_key(path, key), lookup, unset);
            }
        }
        Value::Tagged(tagged) => expand_tree(&mut tagged.value, path, lookup, unset),
        _ => {}
    }
}

/// Expands `${NAME}` in `text`; returns the names that are unset.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
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
                        Some(v) => out.push_str(&v),
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
        Ok(out)
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

    #[test]
    fn expands_and_reports_unset() {
        assert_eq!(expand("x-${ID}-y", &env), Ok("x-abc-y".into()));
        assert_eq!(expand("${EMPTY}", &env), Ok(String::new()));
        assert_eq!(
            expand("$${ID} $5 ${ not}", &env),
            Ok("${ID} $5 ${ not}".into())
        );
        assert_eq!(
            expand("${A}${ID}${B}", &env),
            Err(vec!["A".into(), "B".into()])
        );
    }

    #[test]
    fn expands_nested_values_with_paths() {
        let mut v: Value = serde_yaml_ng::from_str("a:\n  - x: ${NOPE}\n  - ${ID}\n").unwrap();
        let mut unset = Vec::new();
        expand_tree(&mut v, "", &env, &mut unset);
        assert_eq!(
            unset,
            vec![Unset {
                path: "a[0].x".into(),
                variable: "NOPE".into()
            }]
        );
        assert_eq!(v["a"][1].as_str(), Some("abc"));
    }
}
