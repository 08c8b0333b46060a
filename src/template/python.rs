//! Python's text for JSON values, as Fides substitutes and encodes them: `str()`,
//! `json.dumps`, `repr()` and `repr(float)`.

use serde_json::Value;

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
        Value::Array(_) | Value::Object(_) => container(value, python_json, json_string),
        Value::String(s) => json_string(s),
        Value::Number(n) => python_number(n),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
    }
}

/// A list or dict as Python writes both `json.dumps` and `repr()` of one: `[a, b]`,
/// `{k: v}`, items by `item` and keys by `key`. Any other value is written by `item`.
fn container(value: &Value, item: fn(&Value) -> String, key: fn(&str) -> String) -> String {
    match value {
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(item).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", key(k), item(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        other => item(other),
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
        Value::Array(_) | Value::Object(_) => container(value, python_repr, python_repr_str),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::test_assign as assign;
    use crate::template::test_params as params;
    use crate::template::Lookup;
    use serde_json::json;

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
}
