//! Placeholders as Fides finds and fills them (`assign_placeholders`, FIDES-BEHAVIOUR.md
//! §2.1): the regex `<([^<>]+)>`, sequential `str.replace`, optional `<name?>`.

use super::Lookup;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::test_params as params;
    use serde_json::json;

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
}
