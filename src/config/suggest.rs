//! "Did you mean": the known key closest to a misspelled one, for every unknown key a
//! config problem or warning names.

/// Most edits between a key and a known one for "did you mean"…
const MAX_SUGGESTION_EDITS: usize = 2;
/// …and at most one edit per this many characters of the key (at least one edit), so a
/// short key is not "corrected" into an unrelated one (`foo` → `log`).
const CHARS_PER_EDIT: usize = 3;

/// The known key closest to `key`, if within [`MAX_SUGGESTION_EDITS`] edits (fewer for a
/// short key).
pub(super) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let most = (key.len() / CHARS_PER_EDIT).clamp(1, MAX_SUGGESTION_EDITS);
    known
        .iter()
        .map(|k| (edits(key, k), *k))
        .filter(|(d, _)| *d <= most)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edits between two keys: insertions, deletions, substitutions and swaps of two
/// neighbours (optimal string alignment distance; bytes — keys are ASCII).
fn edits(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    // d[i][j]: edits between the first i bytes of a and the first j bytes of b.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitution.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// serde's message for an unknown key (`unknown field `listn`, expected one of `listen`,
/// …`) with the list of every known key replaced by the closest one, when one is close:
/// `unknown field `listn`; did you mean `listen`?`. Any other message is returned as is.
pub(super) fn did_you_mean(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((key, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    // The known keys are the backquoted names after the key.
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(key, &known) {
        Some(k) => format!("unknown field `{key}`; did you mean `{k}`?"),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_keys_only() {
        let known = ["expires_in", "token_request", "refresh_request"];
        assert_eq!(closest("expire_in", &known), Some("expires_in"));
        assert_eq!(closest("token_requests", &known), Some("token_request"));
        assert_eq!(closest("scopes", &known), None);
        assert_eq!(closest("foo", &["log", "tls"]), None);
        assert_eq!(closest("tlz", &["log", "tls"]), Some("tls"));
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(edits("kitten", "sitting"), 3);
        assert_eq!(edits("pcke", "pkce"), 1);
        assert_eq!(closest("pcke", &["pkce", "key"]), Some("pkce"));
    }

    #[test]
    fn unknown_field_messages_suggest_the_closest_key() {
        assert_eq!(
            did_you_mean("unknown field `listn`, expected one of `listen`, `connect_timeout`"),
            "unknown field `listn`; did you mean `listen`?"
        );
        assert_eq!(
            did_you_mean("unknown field `secret`, expected `secrets` or `key`"),
            "unknown field `secret`; did you mean `secrets`?"
        );
        let far = "unknown field `mystery`, expected one of `listen`, `token`";
        assert_eq!(did_you_mean(far), far);
        assert_eq!(did_you_mean("missing field `key`"), "missing field `key`");
    }
}
