//! Values a config problem must never quote — a connection's `secrets` and whatever a
//! `${VAR}` went into — and serde's messages with such a value taken out.

/// What a message says in place of a value it must not quote.
pub const HIDDEN: &str = "(value hidden)";

/// Whether `path` is a connection's `secrets` or lies under it (`connections[3].secrets.id`).
pub(super) fn under_secrets(path: &str) -> bool {
    path.strip_prefix("connections[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(_, rest)| rest.strip_prefix(".secrets"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// serde's words for the values its messages quote, and what to say instead.
const QUOTED_KINDS: [(&str, &str); 6] = [
    ("string ", "a string"),
    ("integer ", "a number"),
    ("floating point ", "a number"),
    ("boolean ", "a boolean"),
    ("char ", "a character"),
    ("bytes ", "bytes"),
];

/// serde's words for values its messages describe without quoting them.
const UNQUOTED_KINDS: [&str; 8] = [
    "map",
    "sequence",
    "unit value",
    "unit variant",
    "newtype struct",
    "newtype variant",
    "tuple variant",
    "struct variant",
];

/// Messages of serde and serde_yaml_ng that never quote a value (keys are not values).
const VALUE_FREE: [&str; 6] = [
    "missing field ",
    "unknown field ",
    "duplicate field ",
    "invalid length ",
    "expected text, not ",
    "data did not match any variant",
];

/// A serde message about a value it must not quote, with the value taken out and what was
/// wrong kept: `invalid type: string "…", expected a YAML mapping` → `invalid type: a string
/// (value hidden), expected a YAML mapping`; likewise `invalid value:` and `unknown variant`.
/// Any other message that might quote a value is replaced whole.
pub(super) fn without_value(message: &str) -> String {
    // The value is quoted before ", expected …" (found from the end: it may hold those words).
    let expected = message.rfind(", expected ").map_or("", |i| &message[i..]);
    for lead in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(lead) else {
            continue;
        };
        if UNQUOTED_KINDS.iter().any(|k| rest.starts_with(k)) {
            return message.to_owned();
        }
        let kind = QUOTED_KINDS
            .iter()
            .find(|(quoted, _)| rest.starts_with(quoted))
            .map_or("a value", |(_, kind)| kind);
        return format!("{lead}{kind} {HIDDEN}{expected}");
    }
    if message.starts_with("unknown variant ") {
        return format!("unknown variant {HIDDEN}{expected}");
    }
    if VALUE_FREE.iter().any(|m| message.starts_with(m)) {
        return message.to_owned();
    }
    format!("the value is not valid here {HIDDEN}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_lose_the_value_and_keep_what_was_wrong() {
        for (message, hidden) in [
            (
                r#"invalid type: string "sk-live, expected x", expected a YAML mapping"#,
                "invalid type: a string (value hidden), expected a YAML mapping",
            ),
            (
                "invalid value: integer `-7`, expected u16",
                "invalid value: a number (value hidden), expected u16",
            ),
            (
                "invalid type: floating point `1.5`, expected usize",
                "invalid type: a number (value hidden), expected usize",
            ),
            (
                "invalid type: boolean `true`, expected a string",
                "invalid type: a boolean (value hidden), expected a string",
            ),
            (
                "unknown variant `sk-live`, expected `a` or `b`",
                "unknown variant (value hidden), expected `a` or `b`",
            ),
            (
                "invalid type: map, expected a string",
                "invalid type: map, expected a string",
            ),
            ("missing field `token`", "missing field `token`"),
            (
                "something new about sk-live",
                "the value is not valid here (value hidden)",
            ),
        ] {
            assert_eq!(without_value(message), hidden);
        }
    }

    #[test]
    fn secrets_are_the_secrets_mapping_and_what_is_under_it() {
        assert!(under_secrets("connections[0].secrets"));
        assert!(under_secrets("connections[12].secrets.client_secret"));
        assert!(under_secrets("connections[1].secrets.list[0]"));
        assert!(!under_secrets("connections[0].secrets_x"));
        assert!(!under_secrets("connections[0].key"));
        assert!(!under_secrets("proxy.secrets"));
    }
}
