//! The encodings of request parts: Python's `quote_plus` and `urlencode` for query
//! strings, Fides' form bodies (multidimensional_urlencode + nullsafe_urlencode), and
//! HTTP Basic credentials.

use super::python::{python_repr, python_text};
use base64::Engine as _;
use serde_json::Value;

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

/// `Basic base64(user:pass)`, as Fides' `basic` strategy sends it (no form-encoding).
pub fn basic_header(user: &str, pass: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn basic_credentials_are_base64_of_user_colon_pass() {
        // FIDES-BEHAVIOUR.md §4: Domo and PowerReviews with client / secret
        assert_eq!(
            basic_header("client", "secret"),
            "Basic Y2xpZW50OnNlY3JldA=="
        );
        assert_eq!(basic_header("a:b", ""), "Basic YTpiOg==");
    }
}
