//! Choosing among the connections on one host: forward and intercepted requests are routed
//! by host, and when several connections share a host the request names one with the
//! hop-local header [`CONNECTION_HEADER`] (`tokenwarden-connection: {key}`), which the
//! proxy removes before forwarding — in reverse mode too, where the path names the
//! connection and the header, if sent, must name the same one. Both parsers read it into
//! a [`Named`]; [`super::route`] decides; a request that cannot be routed so is refused
//! with a [`Misdirection`]: 421 Misdirected Request (RFC 9110 §15.5.20: this proxy cannot
//! answer for that target as it was asked), naming the header and the host, never a secret.
//!
//! A blind `CONNECT` tunnel carries no request the proxy reads, so it cannot tell several
//! connections on one host apart; it never reaches a connection's host anyway (such a
//! `CONNECT` is intercepted or refused: [`super::full::connect`]).

use super::error::ProxyError;
use crate::grants::subject::{Said, SUBJECT_HEADER};
use crate::registry::Unchosen;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::json;

/// The header that names the connection of a request (any case).
pub const CONNECTION_HEADER: &str = "tokenwarden-connection";

/// [`CONNECTION_HEADER`] as a `HeaderName`.
pub static CONNECTION_HEADER_NAME: HeaderName = HeaderName::from_static(CONNECTION_HEADER);

/// What a request's [`CONNECTION_HEADER`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Named<'r> {
    /// No such header.
    #[default]
    Absent,
    /// One, naming this key.
    Key(&'r str),
    /// Repeated, or not text: refused (400).
    Invalid,
}

impl<'r> Named<'r> {
    /// What one more `tokenwarden-connection` header with `value` makes of it.
    pub fn and(self, value: &'r [u8]) -> Named<'r> {
        match (self, std::str::from_utf8(value)) {
            (Named::Absent, Ok(key)) => Named::Key(key.trim_matches([' ', '\t'])),
            _ => Named::Invalid,
        }
    }

    /// The header in `headers`, as hyper parsed them.
    pub fn of(headers: &'r HeaderMap) -> Named<'r> {
        (headers.get_all(&CONNECTION_HEADER_NAME).iter())
            .fold(Named::Absent, |named, value| named.and(value.as_bytes()))
    }
}

/// The [`CONNECTION_HEADER`] and [`SUBJECT_HEADER`] of a request hyper parsed, taken out
/// of its headers (so they are never forwarded), and a copy of its `Proxy-Authorization`
/// (hop-by-hop: removed with the others).
pub struct Taken {
    connection: Header,
    subject: Header,
    proxy_authorization: Option<HeaderValue>,
}

/// One header taken out: its first value, and whether it was repeated.
struct Header {
    first: Option<HeaderValue>,
    repeated: bool,
}

impl Header {
    /// Removes `name` from `headers` (one lookup when it is not there).
    fn take(headers: &mut HeaderMap, name: &HeaderName) -> Header {
        if !headers.contains_key(name) {
            return Header {
                first: None,
                repeated: false,
            };
        }
        let repeated = headers.get_all(name).iter().nth(1).is_some();
        let first = headers.remove(name);
        Header { first, repeated }
    }
}

impl Taken {
    /// Takes the headers out of `headers`.
    pub fn from(headers: &mut HeaderMap) -> Taken {
        Taken {
            connection: Header::take(headers, &CONNECTION_HEADER_NAME),
            subject: Header::take(headers, &SUBJECT_HEADER_NAME),
            proxy_authorization: headers.get(header::PROXY_AUTHORIZATION).cloned(),
        }
    }

    /// What the connection header said.
    pub fn named(&self) -> Named<'_> {
        match (&self.connection.first, self.connection.repeated) {
            (_, true) => Named::Invalid,
            (Some(value), false) => Named::Absent.and(value.as_bytes()),
            (None, false) => Named::Absent,
        }
    }

    /// What the subject header said.
    pub fn said(&self) -> Said<'_> {
        match (&self.subject.first, self.subject.repeated) {
            (_, true) => Said::Repeated,
            (Some(value), false) => Said::One(value.as_bytes()),
            (None, false) => Said::Absent,
        }
    }

    /// The `Proxy-Authorization` value, if any.
    pub fn proxy_authorization(&self) -> Option<&[u8]> {
        self.proxy_authorization.as_ref().map(HeaderValue::as_bytes)
    }
}

/// The [`SUBJECT_HEADER`] and `Proxy-Authorization` of a request hyper parsed, read in place.
pub fn subject_of(headers: &HeaderMap) -> (Said<'_>, Option<&[u8]>) {
    let said = (headers.get_all(&SUBJECT_HEADER_NAME).iter())
        .fold(Said::Absent, |said, value| said.and(value.as_bytes()));
    let proxy_authorization = headers
        .get(header::PROXY_AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    (said, proxy_authorization)
}

/// [`SUBJECT_HEADER`] as a `HeaderName`.
pub static SUBJECT_HEADER_NAME: HeaderName = HeaderName::from_static(SUBJECT_HEADER);

/// Why a request's connection could not be chosen (a 421).
#[derive(Debug, Clone, PartialEq)]
pub enum Misdirection {
    /// Several connections serve `host` and the request named none.
    Unnamed { host: String },
    /// The request named `named`, which is not a connection forward mode reaches on `host`
    /// (another host's, a `reverse_only` one, or no connection at all).
    NotOnHost { host: String, named: String },
    /// Reverse mode: the path names connection `path`, the header `named`.
    NotThePath { path: String, named: String },
}

impl Misdirection {
    /// The JSON body of its 421.
    pub fn body(&self) -> serde_json::Value {
        match self {
            Misdirection::Unnamed { host } => json!({
                "error": "connection_not_named", "host": host,
                "message": format!("several connections serve {host}: name one with the {CONNECTION_HEADER} header (its key)"),
            }),
            Misdirection::NotOnHost { host, named } => json!({
                "error": "connection_mismatch", "host": host, "named": named,
                "message": format!("the {CONNECTION_HEADER} header names {named}, which is not a connection for {host}"),
            }),
            Misdirection::NotThePath { path, named } => json!({
                "error": "connection_mismatch", "path": path, "named": named,
                "message": format!("the {CONNECTION_HEADER} header names {named}, but the path names connection {path}"),
            }),
        }
    }
}

/// The refusal of a forward-mode request to `host` whose connection was not chosen.
pub fn unchosen(why: Unchosen, host: &str, named: Option<&str>) -> ProxyError {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match (why, named) {
        (Unchosen::NoConnection, _) => ProxyError::Forbidden {
            reason: format!(
                "{host} is not the host of a configured connection; tokenwarden is not an open proxy"
            ),
        },
        (Unchosen::Elsewhere, Some(named)) => ProxyError::Misdirected(Misdirection::NotOnHost {
            host,
            named: named.to_owned(),
        }),
        (Unchosen::Ambiguous | Unchosen::Elsewhere, _) => {
            ProxyError::Misdirected(Misdirection::Unnamed { host })
        }
    }
}

/// The 400 for a repeated or unreadable [`CONNECTION_HEADER`].
pub fn invalid() -> ProxyError {
    ProxyError::BadRequest {
        reason: format!("send one {CONNECTION_HEADER} header with a connection's key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_header_names_a_key_and_more_are_invalid() {
        let mut headers = HeaderMap::new();
        assert_eq!(Named::of(&headers), Named::Absent);
        headers.append("Tokenwarden-Connection", " a ".parse().unwrap());
        assert_eq!(Named::of(&headers), Named::Key("a"));
        headers.append("tokenwarden-connection", "b".parse().unwrap());
        assert_eq!(Named::of(&headers), Named::Invalid);
        assert_eq!(Named::Absent.and(b"\xff"), Named::Invalid);
        let taken = Taken::from(&mut headers);
        assert_eq!(taken.named(), Named::Invalid);
        assert!(headers.is_empty(), "every one is taken out");
        headers.insert("x", "1".parse().unwrap());
        assert_eq!(Taken::from(&mut headers).named(), Named::Absent);
    }

    #[test]
    fn every_body_names_the_header() {
        for m in [
            Misdirection::Unnamed { host: "h".into() },
            Misdirection::NotOnHost {
                host: "h".into(),
                named: "k".into(),
            },
            Misdirection::NotThePath {
                path: "p".into(),
                named: "k".into(),
            },
        ] {
            let body = m.body();
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains(CONNECTION_HEADER),
                "{body}"
            );
        }
    }
}
