//! Reading one settings field that has a default: a listen address or a duration. A bad
//! value is a problem at its place (its text quoted unless it is hidden, see
//! [`Source::quote`]), and the default stands in for it so the rest is still checked.

use super::source::{Problems, Source};
use std::net::SocketAddr;
use std::time::Duration;

/// Where the problems of the fields read go.
pub(super) struct Fields<'a> {
    pub(super) src: &'a Source,
    pub(super) problems: &'a mut Problems,
}

impl Fields<'_> {
    /// `IP:PORT` at `path`, or `default`.
    pub(super) fn listen(
        &mut self,
        path: &str,
        value: &Option<String>,
        default: &str,
    ) -> SocketAddr {
        let text = value.as_deref().unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            self.problems.push(self.src.problem(
                path,
                format!(
                    "bad listen address {}: expected IP:PORT, such as {default}",
                    self.src.quote(path, text)
                ),
            ));
            default.parse().expect("default listen address")
        })
    }

    /// A duration at `path` ([`parse_duration`]), or `default`.
    pub(super) fn duration(
        &mut self,
        path: &str,
        value: &Option<String>,
        default: Duration,
    ) -> Duration {
        let Some(text) = value else {
            return default;
        };
        parse_duration(text).unwrap_or_else(|| {
            self.problems.push(self.src.problem(
                path,
                format!(
                    "bad duration {}: use a number with ms, s, m or h, such as 10s",
                    self.src.quote(path, text)
                ),
            ));
            default
        })
    }
}

/// `250ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
