//! Placeholders as Fides finds and fills them (`assign_placeholders`, FIDES-BEHAVIOUR.md
//! §2.1): the regex `<([^<>]+)>`, sequential `str.replace`, optional `<name?>`.

use super::Lookup;

/// The placeholders in `text`, in order of appearance, as written (`name` or `name?`).
/// Matches the regex `<([^<>]+)>`: `<<a>>` holds the placeholder `a`.
fn placeholders(text: &str) -> Vec<&str> {
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

/// A placeholder text parsed once: the text and its placeholders in order of appearance
/// (repeats included, as Fides' `re.findall` returns them). Filling it is Fides'
/// `assign_placeholders` without scanning the text again. The text may hold secrets (an
/// expanded `${VAR}`): `Debug` shows only the placeholder names.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    placeholders: Vec<Placeholder>,
}

/// One placeholder, as written (`name` or `name?`).
#[derive(Clone, PartialEq, Eq)]
struct Placeholder {
    /// `<name>` or `<name?>`: the text `str.replace` looks for.
    needle: String,
    optional: bool,
}

impl Placeholder {
    /// The name looked up (without `?`).
    fn name(&self) -> &str {
        let inner = &self.needle[1..self.needle.len() - 1];
        inner.strip_suffix('?').unwrap_or(inner)
    }
}

/// Required placeholders that had no value when a template was filled, in order of
/// appearance, each once. Names only, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unresolved placeholders: [{}]", .names.join(", "))]
pub struct Unresolved {
    pub names: Vec<String>,
}

impl Template {
    /// Parses `text`; any text is a template (one without placeholders fills to itself).
    pub fn parse(text: &str) -> Template {
        let placeholders = placeholders(text)
            .into_iter()
            .map(|written| Placeholder {
                needle: format!("<{written}>"),
                optional: written.ends_with('?'),
            })
            .collect();
        Template {
            text: text.to_owned(),
            placeholders,
        }
    }

    /// Whether any placeholder is one of `names`.
    pub fn uses(&self, names: &[&str]) -> bool {
        self.placeholders.iter().any(|p| names.contains(&p.name()))
    }

    /// Required placeholders that `lookup` cannot resolve, each once.
    pub fn missing(&self, lookup: &Lookup<'_>) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for p in self.placeholders.iter().filter(|p| !p.optional) {
            let name = p.name();
            if lookup.text(name).is_none() && !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        names
    }

    /// Fides' `assign_placeholders`: every `<name>` replaced by its value, in order, with
    /// `str.replace`; a missing optional `"<name?>"` (quoted) becomes `null`; any missing
    /// required placeholder fails the whole text. Nothing is escaped.
    pub fn fill(&self, lookup: &Lookup<'_>) -> Result<String, Unresolved> {
        let mut out = self.text.clone();
        for p in &self.placeholders {
            match lookup.text(p.name()) {
                Some(value) => out = out.replace(&p.needle, &value),
                None if p.optional => out = out.replace(&format!("\"{}\"", p.needle), "null"),
                None => {
                    return Err(Unresolved {
                        names: self.missing(lookup),
                    })
                }
            }
        }
        Ok(out)
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.placeholders.iter().map(|p| &p.needle))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::test_assign as assign;
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
        assert_eq!(
            Template::parse("<a> <access> <b?> <a>").missing(&l),
            vec!["a".to_string()]
        );
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
    fn a_template_parsed_once_fills_from_each_lookup() {
        let t = Template::parse(r#"{"code": "<code>", "id": "<client_id>", "x": "<x?>"}"#);
        let p = params(json!({"client_id": "c"}));
        let fill = |code: &str| {
            let runtime = [("code", code)];
            t.fill(&Lookup {
                params: &p,
                runtime: &runtime,
            })
        };
        assert_eq!(
            fill("one").as_deref(),
            Ok(r#"{"code": "one", "id": "c", "x": null}"#)
        );
        assert_eq!(
            fill("two").as_deref(),
            Ok(r#"{"code": "two", "id": "c", "x": null}"#)
        );
        assert_eq!(
            t.fill(&Lookup::new(&p)),
            Err(Unresolved {
                names: vec!["code".into()]
            })
        );
        assert!(t.uses(&["code"]) && t.uses(&["x"]) && !t.uses(&["state"]));
    }

    #[test]
    fn fill_replaces_in_sequence_as_str_replace_does() {
        // `a`'s value holds `<b>`, which the later replacement of `<b>` fills too (Python).
        let p = params(json!({"a": "<b>", "b": "x"}));
        let t = Template::parse("<a> <b> <a>");
        assert_eq!(t.fill(&Lookup::new(&p)).as_deref(), Ok("x x x"));
        // an unquoted missing optional stays as written
        assert_eq!(
            Template::parse("<o?> \"<o?>\"")
                .fill(&Lookup::new(&p))
                .as_deref(),
            Ok("<o?> null")
        );
        let t = Template::parse("<m> <a> <m> <n>");
        assert_eq!(t.missing(&Lookup::new(&p)), vec!["m", "n"]);
        assert_eq!(t.fill(&Lookup::new(&p)).unwrap_err().names, vec!["m", "n"]);
    }

    #[test]
    fn debug_shows_placeholder_names_not_the_text() {
        let t = Template::parse("Bearer literal-secret-<name>");
        assert_eq!(format!("{t:?}"), r#"["<name>"]"#);
    }
}
