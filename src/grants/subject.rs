//! Who a request acts for on a per-user connection: the end user's *subject*, named by the
//! hop-local header [`SUBJECT_HEADER`] or, in forward mode, by the user name of
//! `Proxy-Authorization: Basic` (so `HTTPS_PROXY=http://alice@127.0.0.1:8080` works for
//! tools that cannot set headers). Neither is ever forwarded. A subject is 1 to
//! [`MAX_SUBJECT_LEN`] bytes of visible ASCII (`!` to `~`): it names a key in the store
//! and a Redis key, and goes in URLs percent-encoded.

use base64::Engine as _;
use std::borrow::Cow;

/// The header that names the end user of a request (any case).
pub const SUBJECT_HEADER: &str = "tokenwarden-subject";
/// The longest subject, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Why a request's subject cannot be used (a 400; the reason never quotes the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this connection has a grant per user: name the user with the {SUBJECT_HEADER} header (or, in forward mode, the user name of Proxy-Authorization: Basic)")]
    Missing,
    #[error("the {SUBJECT_HEADER} header is repeated")]
    Repeated,
    #[error("a subject is 1 to {MAX_SUBJECT_LEN} bytes of visible ASCII (no spaces or control characters)")]
    Malformed,
    #[error("the {SUBJECT_HEADER} header and the Proxy-Authorization user name differ")]
    Conflicting,
    #[error("Proxy-Authorization must be Basic with a user name")]
    BadProxyAuthorization,
}

/// Checks a subject (see the module doc).
pub fn check(subject: &str) -> Result<&str, Refused> {
    let ok = (1..=MAX_SUBJECT_LEN).contains(&subject.len())
        && subject.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(subject)
    } else {
        Err(Refused::Malformed)
    }
}

/// What the request's [`SUBJECT_HEADER`]s say, as both parsers read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Said<'r> {
    #[default]
    Absent,
    One(&'r [u8]),
    Repeated,
}

impl<'r> Said<'r> {
    /// What one more header with `value` makes of it.
    pub fn and(self, value: &'r [u8]) -> Said<'r> {
        match self {
            Said::Absent => Said::One(value),
            _ => Said::Repeated,
        }
    }
}

/// The subject of a request to a per-user connection: its [`SUBJECT_HEADER`] (`said`) and,
/// when `proxy_authorization` is given (forward mode), that header's Basic user name. Both
/// present must agree.
pub fn choose<'r>(
    said: Said<'r>,
    proxy_authorization: Option<&'r [u8]>,
) -> Result<Cow<'r, str>, Refused> {
    let header = match said {
        Said::Absent => None,
        Said::Repeated => return Err(Refused::Repeated),
        Said::One(value) => {
            let text = std::str::from_utf8(value).map_err(|_| Refused::Malformed)?;
            Some(check(text.trim_matches([' ', '\t']))?)
        }
    };
    let user = proxy_authorization.map(basic_user).transpose()?;
    match (header, user) {
        (Some(h), Some(u)) if h != u => Err(Refused::Conflicting),
        (Some(h), _) => Ok(Cow::Borrowed(h)),
        (None, Some(u)) => Ok(Cow::Owned(u)),
        (None, None) => Err(Refused::Missing),
    }
}

/// The user name of `Basic base64(user:password)`, checked as a subject.
fn basic_user(value: &[u8]) -> Result<String, Refused> {
    let text = std::str::from_utf8(value).map_err(|_| Refused::BadProxyAuthorization)?;
    let (scheme, encoded) = text
        .trim()
        .split_once(' ')
        .ok_or(Refused::BadProxyAuthorization)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Refused::BadProxyAuthorization);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Refused::BadProxyAuthorization)?;
    let decoded = String::from_utf8(decoded).map_err(|_| Refused::BadProxyAuthorization)?;
    let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
    if user.is_empty() {
        return Err(Refused::BadProxyAuthorization);
    }
    check(user).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(credentials: &str) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        format!("Basic {encoded}").into_bytes()
    }

    #[test]
    fn subjects_are_visible_ascii_up_to_256_bytes() {
        assert!(check("alice").is_ok());
        assert!(check("user:42@example.com").is_ok());
        assert!(check(&"a".repeat(256)).is_ok());
        for bad in ["", "a b", "tab\there", "é", "nul\0"] {
            assert_eq!(check(bad), Err(Refused::Malformed), "{bad:?}");
        }
        assert_eq!(check(&"a".repeat(257)), Err(Refused::Malformed));
    }

    #[test]
    fn the_header_or_the_proxy_user_names_the_subject() {
        assert_eq!(choose(Said::One(b" alice "), None).unwrap(), "alice");
        let auth = basic("bob:");
        assert_eq!(choose(Said::Absent, Some(&auth)).unwrap(), "bob");
        assert_eq!(choose(Said::Absent, Some(&basic("bob"))).unwrap(), "bob");
        assert_eq!(choose(Said::One(b"bob"), Some(&auth)).unwrap(), "bob");
        assert_eq!(
            choose(Said::One(b"alice"), Some(&auth)),
            Err(Refused::Conflicting)
        );
        assert_eq!(choose(Said::Absent, None), Err(Refused::Missing));
        assert_eq!(choose(Said::Repeated, None), Err(Refused::Repeated));
        assert_eq!(choose(Said::One(b"a\xffb"), None), Err(Refused::Malformed));
        for bad in [b"Bearer x".to_vec(), basic(":secret"), b"Basic !!".to_vec()] {
            assert_eq!(
                choose(Said::Absent, Some(&bad)),
                Err(Refused::BadProxyAuthorization)
            );
        }
    }

    #[test]
    fn refusals_never_quote_the_value() {
        let r = choose(Said::One(b"alice smith"), None).unwrap_err();
        assert!(!r.to_string().contains("alice"));
    }
}
