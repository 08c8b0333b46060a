//! Placeholder credentials on the hyper path ([`crate::proxy::placeholder`] has the
//! policy): in the request head (every header, the target), in a form or JSON body of up
//! to 64 KiB, and echoed back in the response.

use super::pool::PooledBody;
use super::{AppBody, UpstreamBody};
use crate::config::Inject;
use crate::proxy::error::ProxyError;
use crate::proxy::placeholder;
use crate::proxy::route::Prepared;
use crate::proxy::unauthorized::MAX_REPLAY_BODY;
use crate::proxy::{Plan, Proxy};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Either, Full};

/// Checks the placeholders in the head (`headers`, and `target`, the origin-form target
/// sent upstream) against `plan`'s connection, decides whose `Authorization` goes up, and
/// swaps the connection's placeholder for its credential in the other headers and the
/// target. The refusal when another connection's placeholder is there, or the connection
/// requires its own and none is.
pub(super) fn in_head(
    proxy: &Proxy,
    plan: &mut Plan<'_, '_>,
    headers: &mut HeaderMap,
    target: PathAndQuery,
) -> Result<PathAndQuery, ProxyError> {
    let egress = &plan.entry.conn.egress;
    let scan = proxy.registry.has_placeholders();
    if !scan && egress.inject == Inject::Always && !egress.require_placeholder {
        return Ok(target);
    }
    let carried = headers.values().map(HeaderValue::as_bytes);
    let carried = carried.chain(std::iter::once(target.as_str().as_bytes()));
    let own = placeholder::check(&proxy.registry, plan.entry, carried)?;
    if egress.require_placeholder && !own {
        return Err(placeholder::required(plan.entry));
    }
    let app = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    plan.keeps_authorization = !placeholder::sets_authorization(egress, app);
    let (Some(own), Some(credential)) = (&egress.placeholder, plan.credential.authorization())
    else {
        return Ok(target);
    };
    let (own, secret) = (own.as_bytes(), placeholder::secret(credential));
    for (name, value) in headers.iter_mut() {
        if name == header::AUTHORIZATION {
            continue;
        }
        if let Some(swapped) = placeholder::swapped(value.as_bytes(), own, secret) {
            *value = HeaderValue::from_bytes(&swapped).map_err(|_| unswappable())?;
        }
    }
    let encoded = placeholder::url_encoded(secret);
    match placeholder::swapped(target.as_str().as_bytes(), own, &encoded) {
        None => Ok(target),
        Some(swapped) => PathAndQuery::try_from(swapped).map_err(|_| unswappable()),
    }
}

/// A credential that cannot go where its placeholder was (bytes a header or a target may
/// not hold).
fn unswappable() -> ProxyError {
    ProxyError::BadRequest {
        reason: "the credential cannot be written where its placeholder is".into(),
    }
}

/// The request body with the connection's placeholder swapped for its credential
/// (percent-encoded in a form), when it is a form or JSON body of a known length up to
/// 64 KiB (read whole for it); another connection's placeholder there is the refusal.
/// Any other body streams as it is.
pub(super) async fn in_body(
    proxy: &Proxy,
    sent: &Prepared<'_>,
    headers: &mut HeaderMap,
    body: UpstreamBody,
) -> Result<UpstreamBody, ProxyError> {
    let small = http_body::Body::size_hint(&body)
        .exact()
        .is_some_and(|n| n > 0 && n <= MAX_REPLAY_BODY as u64);
    if !small {
        return Ok(body);
    }
    let kind = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes().to_ascii_lowercase())
        .unwrap_or_default();
    let form = kind.starts_with(b"application/x-www-form-urlencoded");
    if !(form || memchr::memmem::find(&kind, b"json").is_some()) {
        return Ok(body);
    }
    let bytes = body
        .collect()
        .await
        .map_err(|_| super::body_unreadable())?
        .to_bytes();
    placeholder::check(&proxy.registry, sent.entry, [&bytes[..]])?;
    let egress = &sent.entry.conn.egress;
    let held = placeholder::held(sent.entry, sent.grant.as_deref());
    let swapped = match &egress.placeholder {
        Some(own) if !held.secret().is_empty() => {
            let secret = match form {
                true => placeholder::url_encoded(held.secret()),
                false => std::borrow::Cow::Borrowed(held.secret()),
            };
            placeholder::swapped(&bytes, own.as_bytes(), &secret)
        }
        _ => None,
    };
    let bytes = match swapped {
        Some(swapped) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(swapped.len()));
            Bytes::from(swapped)
        }
        None => bytes,
    };
    Ok(Either::Right(Full::new(bytes)))
}

/// The response as the app gets it: the credential `sent` carried, echoed in a header,
/// replaced (`scrub_response_headers`: by the placeholder, or `****`), and in a text body
/// by as many `*` (`scrub_response_bodies`).
pub(super) fn in_response(
    sent: &Prepared<'_>,
    headers: &mut HeaderMap,
    body: PooledBody,
) -> AppBody {
    let egress = &sent.entry.conn.egress;
    if !(egress.scrub_response_headers || egress.scrub_response_bodies) {
        return Either::Left(body);
    }
    let held = placeholder::held(sent.entry, sent.grant.as_deref());
    let secret = held.secret();
    if egress.scrub_response_headers {
        let mask = placeholder::mask(egress);
        for value in headers.values_mut() {
            if let Some(scrubbed) = placeholder::scrub(value.as_bytes(), secret, mask) {
                if let Ok(scrubbed) = HeaderValue::from_bytes(&scrubbed) {
                    *value = scrubbed;
                }
            }
        }
    }
    if egress.scrub_response_bodies && !secret.is_empty() && placeholder::scrubbable(headers) {
        return Either::Right(placeholder::Scrubbed::new(body, secret.to_vec()));
    }
    Either::Left(body)
}
