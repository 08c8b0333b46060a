//! The authorization-code dance from the outside: ask the admin listener for an
//! authorization URL, pick it apart, and deliver a callback the way a browser would.

use super::{client, Sidecar};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// An authorization URL as `/api/v1/connection/{key}/authorize` returned it.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub url: String,
    /// The decoded query parameters, in order.
    pub params: Vec<(String, String)>,
    pub state: String,
    pub code_challenge: Option<String>,
}

impl Authorization {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The raw query string (after `?`).
    pub fn query(&self) -> &str {
        self.url.split_once('?').map(|(_, q)| q).unwrap_or_default()
    }
}

/// GETs `path` on the admin listener at `admin` (no redirect following).
async fn admin_get(admin: SocketAddr, path: &str) -> reqwest::Response {
    client()
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// GETs the authorize route of `key` and parses the JSON-string answer; panics unless 200.
pub async fn authorize(sidecar: &Sidecar, key: &str) -> Authorization {
    authorize_at(sidecar.admin, key).await
}

/// [`authorize`] on the admin listener at `admin` (e.g. of a sidecar process).
pub async fn authorize_at(admin: SocketAddr, key: &str) -> Authorization {
    authorization(admin, key, &format!("/api/v1/connection/{key}/authorize")).await
}

/// The authorization of end user `subject` on per-user connection `key`
/// (`authorize?subject=`), on the admin listener at `admin`.
pub async fn authorize_user_at(admin: SocketAddr, key: &str, subject: &str) -> Authorization {
    let path = format!(
        "/api/v1/connection/{key}/authorize?{}",
        query(&[("subject", subject)])
    );
    authorization(admin, key, &path).await
}

/// GETs the authorize route at `path` and parses the JSON-string answer; panics unless 200.
async fn authorization(admin: SocketAddr, key: &str, path: &str) -> Authorization {
    let r = admin_get(admin, path).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "authorize of {key} answered {status}: {body}");
    let url: String = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("authorize must answer a JSON string ({e}): {body}"));
    let params: Vec<(String, String)> = reqwest::Url::parse(&url)
        .unwrap_or_else(|e| panic!("not a URL ({e}): {url}"))
        .query_pairs()
        .into_owned()
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    Authorization {
        state: get("state").unwrap_or_else(|| panic!("no state in {url}")),
        code_challenge: get("code_challenge"),
        params,
        url,
    }
}

/// A callback response: status, headers and body text.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// GETs `/api/v1/oauth/callback?{query}` on the admin listener (no redirect following).
pub async fn callback(sidecar: &Sidecar, query: &str) -> Page {
    callback_at(sidecar.admin, query).await
}

/// [`callback`] on the admin listener at `admin`.
pub async fn callback_at(admin: SocketAddr, query: &str) -> Page {
    let r = admin_get(admin, &format!("/api/v1/oauth/callback?{query}")).await;
    Page {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap_or_default(),
    }
}

/// Delivers the callback for `state` with `code`, as the provider's redirect would.
pub async fn redeem(sidecar: &Sidecar, code: &str, state: &str) -> Page {
    callback(sidecar, &query(&[("code", code), ("state", state)])).await
}

/// Authorizes `key` with `code` (authorize, then the callback); panics unless the callback
/// answers 200.
pub async fn authorize_with(sidecar: &Sidecar, key: &str, code: &str) -> Authorization {
    let a = authorize(sidecar, key).await;
    let page = redeem(sidecar, code, &a.state).await;
    assert_eq!(page.status, 200, "callback: {}", page.body);
    a
}

/// Form-encodes pairs into a query string.
pub fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 S256).
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}
