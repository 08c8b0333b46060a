//! Fides placeholders (`<name>`, `<a.b>`, `<name?>`) and the encodings Fides applies to
//! requests (FIDES-BEHAVIOUR.md §2): quote_plus query strings, form bodies with sorted keys,
//! and Python's `str()` / `json.dumps` text for substituted values.

use serde_json::Value;
use std::fmt;

/// Connection parameters (`secrets:` plus connector-param defaults). Values are secret:
/// `Debug` prints only the names.
#[derive(Clone, Default)]
pub struct Params(serde_json::Map<String, Value>);

impl Params {
    pub fn new(map: serde_json::Map<String, Value>) -> Params {
        Params(map)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn insert(&mut self, name: &str, value: Value) {
        self.0.insert(name.to_owned(), value);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Looks up `name` like pydash.get: the whole name first, then a dotted path.
    pub fn get(&self, name: &str) -> Option<&Value> {
        if let Some(v) = self.0.get(name) {
            return Some(v);
        }
        let mut parts = name.split('.');
        let mut current = self.0.get(parts.next()?)?;
        for part in parts {
            current = match current {
                Value::Object(map) => map.get(part)?,
                Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Where placeholder values come from: values known only at run time (`code`, `state`,
/// `refresh_token`, …) first, then the connection's params.
#[derive(Clone, Copy)]
pub struct Lookup<'a> {
    pub params: &'a Params,
    pub runtime: &'a [(&'a str, &'a str)],
}

impl<'a> Lookup<'a> {
    pub fn new(params: &'a Params) -> Lookup<'a> {
        Lookup {
            params,
            runtime: &[],
        }
    }

    /// The substituted text of a placeholder's value, or None when it is missing or null.
    fn text(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.runtime.iter().find(|(k, _)| *k == name) {
            return Some((*v).to_owned());
        }
        match self.params.get(name)? {
            Value::Null => None,
            value => Some(python_text(value)),
        }
    }
}

/// The placeholders in `text`, in order of appearance, as written (`name` or `name?`).
/// Matches the regex `<([^<>]+)>`: `<<a>>` holds the placeholder `a`.
pub fn placeholders(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let rest = &text[i + 1..];
            if let Some(end) = rest.find(['<', '>']) {
                if rest.as_bytes()[end] == b'>' && end > 0 {
                    found.push(&rest[..end]);
                    i += end + 2;
                    continue;
                }
            }
        }
        i += 1;
    }
    found
}

/// Required placeholders in `text` that `lookup` cannot resolve.
pub fn missing(text: &str, lookup: &Lookup<'_>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in placeholders(text) {
        if !p.ends_with('?') && lookup.text(p).is_none() && !names.iter().any(|n| n == p) {
            names.push(p.to_owned());
        }
    }
    names
}

/// Fides' `assign_placeholders`: every `<name>` replaced by its value; a missing optional
/// `"<name?>"` (quoted) becomes `null`; any missing required placeholder → None.
/// Nothing is escaped.
pub fn assign(text: &str, lookup: &Lookup<'_>) -> Option<String> {
    let mut out = text.to_owned();
    for p in placeholders(text) {
        let (name, optional) = match p.strip_suffix('?') {
            Some(name) => (name, true),
            None => (p, false),
        };
        match lookup.text(name) {
            Some(value) => out = out.replace(&format!("<{p}>"), &value),
            None if optional => out = out.replace(&format!("\"<{p}>\""), "null"),
            None => return None,
        }
    }
    Some(out)
}

/// Python's `str()` of a value as Fides substitutes it: dicts as `json.dumps` without the
/// outer braces, lists as `json.dumps`, booleans as `True`/`False`.
pub fn python_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Number(n) => n.to_string(),
        Value::Object(_) => {
            let dumped = python_json(value);
            dumped[1..dumped.len() - 1].to_owned()
        }
        Value::Array(_) => python_json(value),
    }
}

/// `json.dumps` with Python's default separators (`", "` and `": "`).
pub fn python_json(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(python_json).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

/// Python's `urllib.parse.quote_plus`: unreserved bytes kept, space → `+`, the rest `%XX`.
pub fn quote_plus(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xf) as usize] as char);
            }
        }
    }
    out
}

/// `urlencode(pairs)`: `k=v&k=v` in the given order, quote_plus on both sides.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&quote_plus(k));
        out.push('=');
        out.push_str(&quote_plus(v));
    }
    out
}

/// Fides' form body: the JSON object flattened PHP-style (`a[b]`, `a[]`), keys sorted,
/// null → empty, then `urlencode`d (multidimensional_urlencode + nullsafe_urlencode).
pub fn form_encode(value: &Value) -> Result<String, &'static str> {
    let Value::Object(map) = value else {
        return Err("a form body must be a JSON object");
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in sorted(map) {
        flatten(k.clone(), v, &mut pairs);
    }
    Ok(encode_pairs(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

fn sorted(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut items: Vec<_> = map.iter().collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    items
}

fn flatten(key: String, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in sorted(map) {
                flatten(format!("{key}[{k}]"), v, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                flatten(format!("{key}[]"), v, out);
            }
        }
        Value::Null => out.push((key, String::new())),
        other => out.push((key, python_text(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Params {
        match v {
            Value::Object(m) => Params::new(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn placeholder_scanning_matches_the_fides_regex() {
        assert_eq!(placeholders("<a> and <b.c?>"), vec!["a", "b.c?"]);
        assert_eq!(placeholders("<<access>>"), vec!["access"]);
        assert_eq!(placeholders("<access>>>"), vec!["access"]);
        assert_eq!(placeholders("<<<access>"), vec!["access"]);
        assert_eq!(placeholders("<> <"), Vec::<&str>::new());
    }

    #[test]
    fn assign_follows_fides_test_cases() {
        let p = params(
            json!({"access": "letmein", "access_key": "123", "user_id": "1",
            "user": {"name": "Ann"}, "masked": "", "n": 0, "f": false,
            "obj": {"a": 1, "b": "x"}, "list": [1, "two"]}),
        );
        let l = Lookup::new(&p);
        assert_eq!(assign("<access_key>", &l).as_deref(), Some("123"));
        assert_eq!(assign("<missing>", &l), None);
        assert_eq!(assign("/user/<user_id>/order/<order_id>", &l), None);
        assert_eq!(assign("{<masked>}", &l).as_deref(), Some("{}"));
        assert_eq!(assign("<<access>>", &l).as_deref(), Some("<letmein>"));
        assert_eq!(assign("<access>>>", &l).as_deref(), Some("letmein>>"));
        assert_eq!(assign("<<<access>", &l).as_deref(), Some("<<letmein"));
        assert_eq!(
            assign(r#"{"name": "<user.name>", "address": "<address?>"}"#, &l).as_deref(),
            Some(r#"{"name": "Ann", "address": null}"#)
        );
        assert_eq!(assign("<n>-<f>", &l).as_deref(), Some("0-False"));
        assert_eq!(
            assign("{<obj>}", &l).as_deref(),
            Some(r#"{"a": 1, "b": "x"}"#)
        );
        assert_eq!(assign("<list>", &l).as_deref(), Some(r#"[1, "two"]"#));
        assert_eq!(missing("<a> <access> <b?> <a>", &l), vec!["a".to_string()]);
    }

    #[test]
    fn runtime_values_win_over_params() {
        let p = params(json!({"code": "stale"}));
        let l = Lookup {
            params: &p,
            runtime: &[("code", "fresh")],
        };
        assert_eq!(assign("<code>", &l).as_deref(), Some("fresh"));
    }

    #[test]
    fn quote_plus_matches_python() {
        assert_eq!(
            quote_plus("https://localhost/callback"),
            "https%3A%2F%2Flocalhost%2Fcallback"
        );
        assert_eq!(
            quote_plus("admin.read admin.write"),
            "admin.read+admin.write"
        );
        assert_eq!(quote_plus("a~b*c+d&e=f"), "a~b%2Ac%2Bd%26e%3Df");
        assert_eq!(quote_plus("é"), "%C3%A9");
    }

    #[test]
    fn form_bodies_sort_keys_and_flatten() {
        let body = json!({"grant_type": "authorization_code", "code": "C", "client_id": "c",
            "redirect_uri": "https://x/cb", "n": null});
        assert_eq!(
            form_encode(&body).unwrap(),
            "client_id=c&code=C&grant_type=authorization_code&n=&redirect_uri=https%3A%2F%2Fx%2Fcb"
        );
        let nested = json!({"user": {"name": "John"}, "names": ["a", "b"]});
        assert_eq!(
            form_encode(&nested).unwrap(),
            "names%5B%5D=a&names%5B%5D=b&user%5Bname%5D=John"
        );
        assert!(form_encode(&json!([1])).is_err());
    }
}
