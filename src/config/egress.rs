//! What a connection does with the credential on the way out besides injecting it (issue
//! 28): `inject:` (always, if_absent, placeholder), its `placeholder:` and
//! `require_placeholder:`, `stub_token_endpoint:`, the scrubbing of echoed credentials
//! from responses, and `upstream_http2:`. Checked here into [`Egress`] and [`Http2`]; the
//! request path applies them (`crate::proxy::placeholder`, `crate::proxy::full::pool`).

use super::model::{Auth, Egress, Http2, Inject, StubEndpoint};
use super::raw::RawConnection;
use super::source::{Problems, Source};

/// Every placeholder starts with this (so one scan of a request finds any connection's).
pub const PLACEHOLDER_PREFIX: &str = "twph_";
/// A placeholder's shortest length: the prefix and at least 24 characters after it.
pub const MIN_PLACEHOLDER_LEN: usize = PLACEHOLDER_PREFIX.len() + 24;

/// Whether `b` may be part of a placeholder (after its prefix): letters, digits, `_`, `-`.
pub fn is_placeholder_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A new placeholder for connection `name`: `twph_<name>_<32 random letters and digits>`
/// (190 bits: two never collide), `name` reduced to the bytes a placeholder may hold.
pub fn new_placeholder(name: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let name: String = name
        .bytes()
        .map(|b| {
            if is_placeholder_byte(b) {
                char::from(b)
            } else {
                '-'
            }
        })
        .collect();
    let mut rng = rand::thread_rng();
    let random: String = (0..32)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect();
    format!("{PLACEHOLDER_PREFIX}{name}_{random}")
}

/// The fields of `raw` this module reads.
pub(super) struct RawEgress {
    upstream_http2: Option<String>,
    inject: Option<String>,
    placeholder: Option<String>,
    require_placeholder: bool,
    stub_token_endpoint: bool,
    scrub_response_headers: Option<bool>,
    scrub_response_bodies: bool,
}

impl RawEgress {
    pub(super) fn take(raw: &mut RawConnection) -> RawEgress {
        RawEgress {
            upstream_http2: raw.upstream_http2.take(),
            inject: raw.inject.take(),
            placeholder: raw.placeholder.take(),
            require_placeholder: raw.require_placeholder,
            stub_token_endpoint: raw.stub_token_endpoint,
            scrub_response_headers: raw.scrub_response_headers,
            scrub_response_bodies: raw.scrub_response_bodies,
        }
    }
}

/// Checks `raw` for the connection `(key, auth, params)` (its other fields validated),
/// whose entry is at `prefix`. None when there is a problem (pushed to `problems`).
pub(super) fn egress(
    raw: RawEgress,
    (key, auth, params): (&str, &Auth, &crate::template::Params),
    src: &Source,
    prefix: &str,
    problems: &mut Problems,
) -> Option<(Http2, Egress)> {
    let at = |field: &str| format!("{prefix}.{field}");
    let before = problems.0.len();
    let upstream_http2 = upstream_http2(raw.upstream_http2.as_deref(), src, prefix, problems);
    let inject = match raw.inject.as_deref() {
        None | Some("always") => Inject::Always,
        Some("if_absent") => Inject::IfAbsent,
        Some("placeholder") => Inject::Placeholder,
        Some(other) => {
            let other = src.quote(&at("inject"), other);
            let message =
                format!("unknown value {other}: expected always, if_absent or placeholder");
            problems.push(src.problem(&at("inject"), message));
            Inject::Always
        }
    };
    if let Some(p) = &raw.placeholder {
        let ok = p.len() >= MIN_PLACEHOLDER_LEN
            && p.starts_with(PLACEHOLDER_PREFIX)
            && p.bytes().all(is_placeholder_byte);
        if !ok {
            let message = format!(
                "a placeholder is `{PLACEHOLDER_PREFIX}` and at least 24 letters, digits, `_` or `-` (make one with `tokenwarden placeholder {}`)",
                key
            );
            problems.push(src.problem(&at("placeholder"), message));
        }
    }
    let needs = |field: &str, set: bool, problems: &mut Problems| {
        if set && raw.placeholder.is_none() {
            let message = format!("{field} needs the connection's `placeholder:`");
            problems.push(src.problem(&at(field), message));
        }
    };
    needs("inject", inject == Inject::Placeholder, problems);
    needs("require_placeholder", raw.require_placeholder, problems);
    needs("stub_token_endpoint", raw.stub_token_endpoint, problems);
    let fields_set = raw.placeholder.is_some() || inject != Inject::Always;
    if fields_set && matches!(auth, Auth::ApiKey(_)) {
        let message = "placeholders and `inject:` apply to connections that write Authorization (OAuth2, bearer, basic); an api_key connection writes its key where its strategy says, replacing what the app sent";
        problems.push(src.problem(
            &at(if raw.placeholder.is_some() {
                "placeholder"
            } else {
                "inject"
            }),
            message,
        ));
    }
    let stub = match raw.stub_token_endpoint {
        false => None,
        true => {
            let stub = stub_endpoint(auth, params);
            if stub.is_none() {
                let message = "stub_token_endpoint needs an OAuth2 connection whose token_request host and path are known at load";
                problems.push(src.problem(&at("stub_token_endpoint"), message));
            }
            stub
        }
    };
    if problems.0.len() > before {
        return None;
    }
    let egress = Egress {
        inject,
        placeholder: raw.placeholder.map(Into::into),
        require_placeholder: raw.require_placeholder,
        stub,
        scrub_response_headers: raw.scrub_response_headers.unwrap_or(true),
        scrub_response_bodies: raw.scrub_response_bodies,
    };
    Some((upstream_http2?, egress))
}

/// `upstream_http2:` (None: refused, the problem said).
fn upstream_http2(
    value: Option<&str>,
    src: &Source,
    prefix: &str,
    problems: &mut Problems,
) -> Option<Http2> {
    match value {
        None | Some("auto") => Some(Http2::Auto),
        Some("never") => Some(Http2::Never),
        Some("always") => Some(Http2::Always),
        Some(other) => {
            let field = format!("{prefix}.upstream_http2");
            let other = src.quote(&field, other);
            let message = format!("unknown value {other}: expected auto, never or always");
            problems.push(src.problem(&field, message));
            None
        }
    }
}

/// The token endpoint of an OAuth2 connection (its token request's protocol, host and
/// path, filled from its `params`).
fn stub_endpoint(auth: &Auth, params: &crate::template::Params) -> Option<StubEndpoint> {
    let Auth::OAuth2(o) = auth else {
        return None;
    };
    let url: http::Uri = o.token_request.endpoint(params)?.parse().ok()?;
    let https = url.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = url.host()?.trim_matches(['[', ']']).trim_end_matches('.');
    Some(StubEndpoint {
        https,
        host: host.to_ascii_lowercase(),
        port,
        path: url.path().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_placeholder_has_the_documented_format_and_never_repeats() {
        let a = new_placeholder("sales force");
        let b = new_placeholder("sales force");
        assert!(a.starts_with("twph_sales-force_"), "{a}");
        assert_eq!(a.len(), "twph_sales-force_".len() + 32);
        assert!(a
            .bytes()
            .skip(PLACEHOLDER_PREFIX.len())
            .all(is_placeholder_byte));
        assert_ne!(a, b);
    }
}
