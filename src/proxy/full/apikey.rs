//! The `api_key` strategy on the request path: headers set, query parameters set or
//! replaced (Fides' `set_query_parameter`), and its JSON merged into the request's JSON
//! body (the body is buffered, up to [`MAX_MERGED_BODY`]).

use super::UpstreamBody;
use crate::config::ApiKey;
use crate::proxy::error::ProxyError;
use crate::template;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Either, Full, Limited};

/// Largest request body that an `api_key` body can be merged into.
pub const MAX_MERGED_BODY: usize = 8 * 1024 * 1024;

pub async fn apply(
    key: &ApiKey,
    headers: &mut HeaderMap,
    path_and_query: PathAndQuery,
    body: UpstreamBody,
) -> Result<(PathAndQuery, UpstreamBody), ProxyError> {
    for (name, value) in &key.headers {
        headers.insert(name.clone(), value.clone());
    }
    let path_and_query = if key.query_params.is_empty() {
        path_and_query
    } else {
        with_query_params(&path_and_query, &key.query_params)?
    };
    let Some(extra) = &key.body else {
        return Ok((path_and_query, body));
    };
    let bytes = Limited::new(body, MAX_MERGED_BODY)
        .collect()
        .await
        .map_err(|_| ProxyError::BadRequest {
            reason: format!("the request body could not be read (api_key bodies are merged into bodies up to {MAX_MERGED_BODY} bytes)"),
        })?
        .to_bytes();
    let mut object = if bytes.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(ProxyError::BadRequest {
                    reason: "this connection merges its api_key into a JSON object body; the request body is not one".into(),
                })
            }
        }
    };
    for (k, v) in extra {
        object.insert(k.clone(), v.clone());
    }
    // Serialized as Python's json.dumps does (", " and ": ", insertion order), as Fides sends it.
    let merged = Bytes::from(template::python_json(&serde_json::Value::Object(object)));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(merged.len()));
    Ok((path_and_query, Either::Right(Full::new(merged))))
}

/// Sets or replaces query parameters: parse, replace in place (else append), re-encode.
fn with_query_params(
    pq: &PathAndQuery,
    params: &[(String, String)],
) -> Result<PathAndQuery, ProxyError> {
    let mut pairs: Vec<(String, String)> = pq
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    for (name, value) in params {
        match pairs.iter().position(|(n, _)| n == name) {
            Some(first) => {
                pairs[first].1 = value.clone();
                let mut i = 0;
                pairs.retain(|(n, _)| {
                    i += 1;
                    i - 1 == first || n != name
                });
            }
            None => pairs.push((name.clone(), value.clone())),
        }
    }
    let query = template::encode_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    PathAndQuery::try_from(format!("{}?{query}", pq.path())).map_err(|_| ProxyError::BadRequest {
        reason: "the request target cannot be forwarded".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_set_or_replaced() {
        let pq = PathAndQuery::from_static("/v1/x?a=1&token=old&b=two+words");
        let out = with_query_params(&pq, &[("token".into(), "s3cr=t".into())]).unwrap();
        assert_eq!(out.as_str(), "/v1/x?a=1&token=s3cr%3Dt&b=two+words");
        let out = with_query_params(
            &PathAndQuery::from_static("/p"),
            &[("k".into(), "v".into())],
        )
        .unwrap();
        assert_eq!(out.as_str(), "/p?k=v");
    }
}
