//! Reading a token endpoint's answer (RFC 6749 §5.1/§5.2), more tolerantly than Fides:
//! JSON or, failing that, a form-encoded body; `expires_in` as a number or a numeric
//! string, clamped; `token_type` compared case-insensitively; unknown fields ignored.

use secrecy::SecretString;
use serde_json::Value;
use std::time::Duration;

/// Shortest lifetime accepted from a token response; shorter values are raised to it.
pub const MIN_EXPIRES_IN: u64 = 1;
/// Longest lifetime accepted (ten years); longer values are lowered to it.
pub const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;
/// Longest `error_description` kept (it is shown in status and logs).
pub const MAX_DESCRIPTION_CHARS: usize = 200;

/// OAuth error codes after which retrying cannot help: the connection needs an operator
/// (or, for `invalid_grant` on refresh, a new authorization).
pub const TERMINAL_ERRORS: [&str; 5] = [
    "invalid_client",
    "unauthorized_client",
    "invalid_grant",
    "invalid_scope",
    "unsupported_grant_type",
];

/// A successful token response.
pub struct TokenResponse {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    /// Lifetime from the response, clamped; None when absent.
    pub expires_in: Option<Duration>,
    pub scope: Option<String>,
}

/// Why a token response is not a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// `{"error": code, "error_description": …}` (any HTTP status).
    OAuth {
        code: String,
        description: Option<String>,
    },
    /// A non-2xx status without an OAuth error body.
    Status(u16),
    /// 2xx, but no usable token in it.
    Invalid(&'static str),
}

/// Parses a token endpoint's response body.
pub fn parse(status: u16, body: &[u8]) -> Result<TokenResponse, ResponseError> {
    let fields = read_fields(body);
    if let Some(code) = fields.as_ref().and_then(|f| text(f, "error")) {
        let description = fields
            .as_ref()
            .and_then(|f| text(f, "error_description"))
            .map(|d| sanitize(&d));
        return Err(ResponseError::OAuth {
            code: sanitize(&code),
            description,
        });
    }
    if !(200..300).contains(&status) {
        return Err(ResponseError::Status(status));
    }
    let fields = fields.ok_or(ResponseError::Invalid(
        "the body is neither a JSON object nor form-encoded",
    ))?;
    let access_token = match fields.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(Value::String(_)) => return Err(ResponseError::Invalid("access_token is empty")),
        Some(_) => return Err(ResponseError::Invalid("access_token is not a string")),
        None => return Err(ResponseError::Invalid("the response has no access_token")),
    };
    if access_token.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(ResponseError::Invalid(
            "access_token has characters that cannot be sent in a header",
        ));
    }
    Ok(TokenResponse {
        access_token: access_token.into(),
        refresh_token: text(&fields, "refresh_token")
            .filter(|t| !t.is_empty())
            .map(SecretString::from),
        expires_in: expires_in(fields.get("expires_in")),
        scope: text(&fields, "scope"),
    })
}

/// `expires_in` as a JSON number or numeric string, clamped to
/// [`MIN_EXPIRES_IN`, `MAX_EXPIRES_IN`]; anything else (or ≤ 0) counts as absent.
fn expires_in(value: Option<&Value>) -> Option<Duration> {
    let seconds = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return None;
    }
    let whole = (seconds as u64).clamp(MIN_EXPIRES_IN, MAX_EXPIRES_IN);
    Some(Duration::from_secs(whole))
}

/// The body's fields: a JSON object, else `k=v&…` form encoding.
fn read_fields(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        return Some(map);
    }
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.is_empty() || !text.contains('=') || text.contains(['{', '<', ' ', '\n']) {
        return None;
    }
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(text.as_bytes()) {
        map.insert(k.into_owned(), Value::String(v.into_owned()));
    }
    Some(map)
}

fn text(fields: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Keeps provider text printable and short before it reaches status or logs.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_DESCRIPTION_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn json_token_with_every_field() {
        let r = parse(200, br#"{"access_token":"a1","token_type":"BEARER","expires_in":3600,"refresh_token":"r1","scope":"x y","extra":{"n":1}}"#).ok().unwrap();
        assert_eq!(r.access_token.expose_secret(), "a1");
        assert_eq!(r.refresh_token.unwrap().expose_secret(), "r1");
        assert_eq!(r.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(r.scope.as_deref(), Some("x y"));
    }

    #[test]
    fn expires_in_forms() {
        let get = |body: &str| parse(200, body.as_bytes()).ok().unwrap().expires_in;
        assert_eq!(
            get(r#"{"access_token":"a","expires_in":"7200"}"#),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            get(r#"{"access_token":"a","expires_in":59.9}"#),
            Some(Duration::from_secs(59))
        );
        assert_eq!(
            get(r#"{"access_token":"a","expires_in":0.2}"#),
            Some(Duration::from_secs(MIN_EXPIRES_IN))
        );
        assert_eq!(
            get(r#"{"access_token":"a","expires_in":1e12}"#),
            Some(Duration::from_secs(MAX_EXPIRES_IN))
        );
        assert_eq!(get(r#"{"access_token":"a","expires_in":0}"#), None);
        assert_eq!(get(r#"{"access_token":"a","expires_in":"soon"}"#), None);
        assert_eq!(get(r#"{"access_token":"a"}"#), None);
    }

    #[test]
    fn form_encoded_fallback() {
        let r = parse(200, b"access_token=tok%2B1&expires_in=60&token_type=bearer")
            .ok()
            .unwrap();
        assert_eq!(r.access_token.expose_secret(), "tok+1");
        assert_eq!(r.expires_in, Some(Duration::from_secs(60)));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(
                400,
                br#"{"error":"invalid_client","error_description":"bad\nsecret"}"#
            )
            .err(),
            Some(ResponseError::OAuth {
                code: "invalid_client".into(),
                description: Some("badsecret".into())
            })
        );
        // an error body wins even with 200, as Fides reads it
        assert!(matches!(
            parse(200, br#"{"error":"invalid_request"}"#),
            Err(ResponseError::OAuth { .. })
        ));
        assert_eq!(
            parse(503, b"<html>down</html>").err(),
            Some(ResponseError::Status(503))
        );
        assert!(matches!(
            parse(200, b"<html>"),
            Err(ResponseError::Invalid(_))
        ));
        assert!(matches!(
            parse(200, br#"{"access_token":""}"#),
            Err(ResponseError::Invalid(_))
        ));
        assert!(matches!(
            parse(200, br#"{"access_token":5}"#),
            Err(ResponseError::Invalid(_))
        ));
        assert!(matches!(
            parse(200, br#"{"access_token":"a b"}"#),
            Err(ResponseError::Invalid(_))
        ));
        assert!(matches!(
            parse(200, br#"[1]"#),
            Err(ResponseError::Invalid(_))
        ));
    }
}
