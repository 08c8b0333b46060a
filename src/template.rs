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
/// outer braces, lists as `json.dumps`, booleans as `True`/`False`, floats as Python
/// writes them (`1e+16`, `1000.0`).
pub fn python_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Number(n) => python_number(n),
        Value::Object(_) => {
            let dumped = python_json(value);
            dumped[1..dumped.len() - 1].to_owned()
        }
        Value::Array(_) => python_json(value),
    }
}

/// `json.dumps` with Python's defaults: separators `", "` and `": "`, `ensure_ascii`
/// (every character outside `' '..='~'` as `\uXXXX`), floats as `repr`.
///
/// Object keys come out in `serde_json::Map` order (sorted), where Python keeps the
/// order of the text it parsed; the two agree for the values Fides connector files use.
pub fn python_json(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(python_json).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", json_string(k), python_json(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        Value::String(s) => json_string(s),
        Value::Number(n) => python_number(n),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
    }
}

/// A JSON string literal as `json.dumps` writes it (`ensure_ascii=True`).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// A JSON number as Python prints it: integers as they are, floats as `repr(float)`.
fn python_number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => python_float(f),
        _ => n.to_string(),
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in exponent form when the
/// decimal exponent is below -4 or at least 16 (`1e+16`, `1e-05`), else positional with
/// at least one decimal (`1000.0`, `0.0001`).
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` also prints the shortest round-trip digits: `-1.25e16`, `0e0`.
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or_default();
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exponent) {
        // digits before the decimal point
        let point = exponent + 1;
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (whole, fraction) = digits.split_at(point as usize);
            format!("{whole}.{fraction}")
        };
        format!("{sign}{text}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_owned()
        } else {
            format!("{first}.{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.unsigned_abs())
    }
}

/// Python's `repr()` of a JSON value (`str()` of a dict or list shows its items this
/// way): `{'k': 'v', 'n': 1}`, `[True, 1.5]`, strings in single quotes unless they hold
/// a single quote and no double quote. Non-printable characters are escaped as Python
/// does for the control, separator and format characters a JSON text can carry; object
/// keys come out in `serde_json::Map` order (sorted).
pub fn python_repr(value: &Value) -> String {
    match value {
        Value::String(s) => python_repr_str(s),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Number(n) => python_number(n),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", python_repr_str(k), python_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

fn python_repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if python_printable(c) => out.push(c),
            c => {
                let code = u32::from(c);
                let escaped = if code <= 0xff {
                    format!("\\x{code:02x}")
                } else if code <= 0xffff {
                    format!("\\u{code:04x}")
                } else {
                    format!("\\U{code:08x}")
                };
                out.push_str(&escaped);
            }
        }
    }
    out.push(quote);
    out
}

/// `str.isprintable()` for one character, for the characters that matter in practice:
/// controls (Cc), separators other than the ASCII space (Zs, Zl, Zp), and the common
/// format characters (Cf) are not printable.
fn python_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    let format_char = matches!(
        c,
        '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}'
            | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    );
    !(c.is_control() || c.is_whitespace() || format_char)
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
        // A list's items are values of `key[]` (`urlencode(doseq=True)`): a nested list or
        // dict is not flattened further but sent as Python's `str()` of it, null items
        // (made "" by nullsafe_urlencode) included.
        Value::Array(items) => {
            let name = format!("{key}[]");
            for v in items {
                let text = match v {
                    Value::Null => String::new(),
                    Value::Array(_) | Value::Object(_) => python_repr(&nulls_to_empty(v)),
                    other => python_text(other),
                };
                out.push((name.clone(), text));
            }
        }
        Value::Null => out.push((key, String::new())),
        other => out.push((key, python_text(other))),
    }
}

/// nullsafe_urlencode's `prepare_null_values`: every null, at any depth, becomes "".
fn nulls_to_empty(value: &Value) -> Value {
    match value {
        Value::Null => Value::String(String::new()),
        Value::Array(items) => Value::Array(items.iter().map(nulls_to_empty).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), nulls_to_empty(v)))
                .collect(),
        ),
        other => other.clone(),
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
    fn floats_print_as_python_does() {
        // expected values: Python 3 `repr(float)`
        for (f, want) in [
            (1e16, "1e+16"),
            (1e-5, "1e-05"),
            (-1.25e-7, "-1.25e-07"),
            (0.0001, "0.0001"),
            (123456789012345.6, "123456789012345.6"),
            (1e15, "1000000000000000.0"),
            (1000.0, "1000.0"),
            (2.5, "2.5"),
            (0.1, "0.1"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ] {
            assert_eq!(python_float(f), want, "{f:e}");
        }
        let p = params(json!({"big": 1e16, "small": 1e-5, "whole": 1000.0, "n": 7}));
        let l = Lookup::new(&p);
        assert_eq!(
            assign("<big> <small> <whole> <n>", &l).as_deref(),
            Some("1e+16 1e-05 1000.0 7")
        );
    }

    #[test]
    fn json_values_are_dumped_as_python_does() {
        // expected value: Python 3 `json.dumps` (ensure_ascii)
        let v = json!({"a": "é\u{2028}😀\u{1}\u{7f}\"\\\n", "b": [1.0, 1e16, true, null]});
        assert_eq!(
            python_json(&v),
            r#"{"a": "\u00e9\u2028\ud83d\ude00\u0001\u007f\"\\\n", "b": [1.0, 1e+16, true, null]}"#
        );
        let p = params(json!({"obj": {"x": "é"}}));
        assert_eq!(
            assign("{<obj>}", &Lookup::new(&p)).as_deref(),
            Some(r#"{"x": "\u00e9"}"#)
        );
    }

    #[test]
    fn python_repr_of_strings() {
        // expected values: Python 3 `repr(str)`
        assert_eq!(python_repr(&json!("it's")), r#""it's""#);
        assert_eq!(python_repr(&json!("say \"hi\"")), r#"'say "hi"'"#);
        assert_eq!(python_repr(&json!("both ' \"")), r#"'both \' "'"#);
        assert_eq!(
            python_repr(&json!("é\u{a0}\u{1}\u{200b}😀\u{7f}\u{85}")),
            r"'é\xa0\x01\u200b😀\x7f\x85'"
        );
        assert_eq!(
            python_repr(&json!([true, null, 1.5, {"k": [1]}])),
            "[True, None, 1.5, {'k': [1]}]"
        );
    }

    #[test]
    fn form_list_items_that_are_lists_or_dicts_are_sent_as_python_str() {
        // expected values: Fides' nullsafe_urlencode with multidimensional_urlencode 0.0.4
        let body: Value = serde_json::from_str(
            r#"{"a": [{"b": 1}], "c": [[1, "x"], null, true, 1.5, 1e16, 1e-7, 123456789.0]}"#,
        )
        .unwrap();
        assert_eq!(
            form_encode(&body).unwrap(),
            "a%5B%5D=%7B%27b%27%3A+1%7D&c%5B%5D=%5B1%2C+%27x%27%5D&c%5B%5D=&c%5B%5D=True&c%5B%5D=1.5&c%5B%5D=1e%2B16&c%5B%5D=1e-07&c%5B%5D=123456789.0"
        );
        let body: Value = serde_json::from_str(
            r#"{"z": [{"y": "it's"}, ["é", "\n", null, "say \"hi\" it's", "tab\tback\\", "\u00a0\u0001\u200b"]]}"#,
        )
        .unwrap();
        assert_eq!(
            form_encode(&body).unwrap(),
            "z%5B%5D=%7B%27y%27%3A+%22it%27s%22%7D&z%5B%5D=%5B%27%C3%A9%27%2C+%27%5Cn%27%2C+%27%27%2C+%27say+%22hi%22+it%5C%27s%27%2C+%27tab%5Ctback%5C%5C%27%2C+%27%5Cxa0%5Cx01%5Cu200b%27%5D"
        );
        let scalars: Value =
            serde_json::from_str(r#"{"t": true, "n": null, "f": 2.50, "big": 1e16, "neg": -1e-5}"#)
                .unwrap();
        assert_eq!(
            form_encode(&scalars).unwrap(),
            "big=1e%2B16&f=2.5&n=&neg=-1e-05&t=True"
        );
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
