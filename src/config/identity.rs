//! What a connection's tokens were obtained under, and so what a reload may change without
//! dropping them: [`grant_identity`] hashes the grant, the upstream (scheme, host, port),
//! the token and refresh requests as they would be sent (token endpoint, client id and
//! secret, audience, …), the client id and secret params, and the scope the authorization
//! asks for. Everything else — comments and layout of the files, `pkce`, `client_auth`,
//! `issuer`, `expires_in`, `admin.public_url` and the `redirect_uri` it implies — leaves a
//! token valid, so a changed definition with the same identity keeps its tokens.

use super::model::{fill_pairs, Auth, Claim, Connection, Grant, OAuth2, RequestTemplate};
use crate::template::{Lookup, Params, Template};
use sha2::{Digest, Sha256};

/// The placeholders left out of the identity (filled with nothing): the run-time values of
/// one exchange, and `redirect_uri`, which a token does not depend on.
const LEFT_OUT: [(&str, &str); 5] = [
    ("code", ""),
    ("state", ""),
    ("refresh_token", ""),
    ("access_token", ""),
    ("redirect_uri", ""),
];

/// The params that identify the client wherever the requests present them (`client_auth`
/// sends them without a placeholder).
const CLIENT_PARAMS: [&str; 2] = ["client_id", "client_secret"];

/// The authorization request's parameter that names the scope of a grant.
const SCOPE: &str = "scope";

/// SHA-256 of what `conn`'s tokens were obtained under (see the module doc); equal
/// identities mean a token of one is valid for the other. A static credential has no
/// token: its identity is its kind alone. Never shown.
pub fn grant_identity(conn: &Connection) -> [u8; 32] {
    let mut hash = Part(Sha256::new());
    let Auth::OAuth2(oauth) = &conn.auth else {
        hash.add("static");
        return hash.0.finalize().into();
    };
    hash.add(match oauth.grant {
        Grant::ClientCredentials => "client_credentials",
        Grant::AuthorizationCode => "authorization_code",
    });
    let up = &conn.upstream;
    hash.add(up.scheme.as_str());
    hash.add(&up.host);
    hash.add(&up.port.to_string());
    let lookup = Lookup {
        params: &conn.params,
        runtime: &LEFT_OUT,
    };
    for name in CLIENT_PARAMS {
        hash.add(&param(&conn.params, name));
    }
    hash.request(&oauth.token_request, &lookup);
    match &oauth.refresh_request {
        Some(r) => hash.request(r, &lookup),
        None => hash.add("no refresh request"),
    }
    hash.add(&scope(oauth, &lookup));
    if let Some(a) = &oauth.assertion {
        // Who the tokens are for and what they may do; not the key, whose rotation keeps them.
        hash.template(&a.issuer, &lookup);
        let optional = [&a.subject, &a.scope];
        for t in optional {
            match t {
                Some(t) => hash.template(t, &lookup),
                None => hash.add("none"),
            }
        }
        hash.template(&a.audience, &lookup);
        for (name, claim) in &a.claims {
            hash.add(name);
            match claim {
                Claim::Text(t) => hash.template(t, &lookup),
                Claim::Json(v) => hash.add(&v.to_string()),
            }
        }
    }
    hash.0.finalize().into()
}

/// A param's value as text (`null` when absent).
fn param(params: &Params, name: &str) -> String {
    params
        .get(name)
        .map_or_else(|| "null".to_owned(), ToString::to_string)
}

/// The scope the authorization request asks for (empty without one).
fn scope(oauth: &OAuth2, lookup: &Lookup<'_>) -> String {
    let Some(authorize) = &oauth.authorization_request else {
        return String::new();
    };
    fill_pairs(&authorize.query_params, lookup)
        .into_iter()
        .filter(|(name, _)| name == SCOPE)
        .map(|(_, value)| value)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A hash fed with length-prefixed parts, so no two sequences of parts collide.
struct Part(Sha256);

impl Part {
    fn add(&mut self, text: &str) {
        self.0.update((text.len() as u64).to_be_bytes());
        self.0.update(text.as_bytes());
    }

    fn template(&mut self, template: &Template, lookup: &Lookup<'_>) {
        match template.fill(lookup) {
            Ok(text) => self.add(&text),
            Err(unresolved) => self.add(&unresolved.to_string()),
        }
    }

    /// A request as it would be sent, a JSON body in its canonical form (so that its
    /// layout does not count).
    fn request(&mut self, r: &RequestTemplate, lookup: &Lookup<'_>) {
        self.add(r.method.as_str());
        self.add(&r.protocol);
        self.template(&r.host, lookup);
        self.template(&r.path, lookup);
        for pairs in [&r.query_params, &r.headers] {
            for (name, value) in fill_pairs(pairs, lookup) {
                self.add(&name);
                self.add(&value);
            }
            self.add("end of pairs");
        }
        match &r.body {
            Some(body) => {
                let text = body.template.fill(lookup).unwrap_or_default();
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(json) => self.add(&json.to_string()),
                    Err(_) => self.add(&text),
                }
            }
            None => self.add("no body"),
        }
        match &r.basic_auth {
            Some(basic) => {
                self.template(&basic.username, lookup);
                match &basic.password {
                    Some(password) => self.template(password, lookup),
                    None => self.add("no password"),
                }
            }
            None => self.add("no basic credentials"),
        }
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
