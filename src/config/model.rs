//! What a loaded connection is made of: the plain output types of validation
//! ([`Connection`], its [`Auth`], the compiled [`RequestTemplate`]s, its [`Upstream`]) and
//! the run-time filling of a request's pairs. No checking here: the modules that build these
//! (`connection`, `strategy`, `request`, `upstream`) import this one, never the reverse.

use super::rejected::RejectedStatuses;
use crate::template::{Lookup, Params, Template};
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method};

/// A validated connection. Holds secrets (in `params`, header values, and request
/// templates, which may carry expanded `${VAR}`s): its `Debug` output never shows them.
pub struct Connection {
    /// URL prefix in reverse mode and name everywhere else.
    pub key: String,
    /// Fides `name` (or the key for an inline client_config).
    pub name: String,
    pub upstream: Upstream,
    pub auth: Auth,
    pub params: Params,
    pub pkce: bool,
    pub client_auth: ClientAuth,
    /// Expected `iss` on the callback (RFC 9207).
    pub issuer: Option<String>,
    pub allow_private_network: bool,
    /// Whether requests go upstream as HTTP/2 (`upstream_http2`).
    pub upstream_http2: Http2,
    /// What is done with the credential on the way out besides injecting it (`inject:`,
    /// placeholders, the token-endpoint stub, scrubbing).
    pub egress: Egress,
    /// Reached by its key in reverse mode only: forward mode and interception never route
    /// its host to it (another connection may own that host there).
    pub reverse_only: bool,
    /// Upstream statuses that mean the injected token was rejected (refresh, replay).
    pub token_rejected: RejectedStatuses,
    /// `grants: per_user`: one grant per end user, chosen per request (None: the
    /// connection's own single grant).
    pub per_user: Option<PerUser>,
    /// SHA-256 of the entry as written (after `${VAR}` expansion, secrets included) and of
    /// its Fides file: equal fingerprints are the same connection (hot reload keeps its
    /// entry whole). Never shown.
    pub fingerprint: [u8; 32],
    /// What its tokens were obtained under ([`super::identity`]): a reload that changes the
    /// definition but not this keeps the tokens. Never shown.
    pub grant_identity: [u8; 32],
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("upstream", &self.upstream)
            .field("auth", &self.auth)
            .field("params", &self.params)
            .field("pkce", &self.pkce)
            .field("client_auth", &self.client_auth)
            .field("issuer", &self.issuer)
            .field("allow_private_network", &self.allow_private_network)
            .field("upstream_http2", &self.upstream_http2)
            .field("egress", &self.egress)
            .field("reverse_only", &self.reverse_only)
            .field("token_rejected", &self.token_rejected)
            .field("per_user", &self.per_user)
            .finish_non_exhaustive()
    }
}

/// `inject:`: where the credential goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inject {
    /// `Authorization` is always the connection's (the app's is replaced).
    #[default]
    Always,
    /// An `Authorization` the app sent is kept; the connection's goes in when there is none.
    IfAbsent,
    /// Only where the app put the connection's placeholder.
    Placeholder,
}

/// The connection's token endpoint, answered by tokenwarden itself (`stub_token_endpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubEndpoint {
    pub https: bool,
    /// Lower case, without brackets or trailing dot.
    pub host: String,
    pub port: u16,
    /// Without query.
    pub path: String,
}

/// What a connection does with the credential on the way out ([`super::egress`]). The
/// placeholder is not a secret (the app holds it); its `Debug` shows it.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    pub inject: Inject,
    pub placeholder: Option<std::sync::Arc<str>>,
    /// A request without the placeholder is refused.
    pub require_placeholder: bool,
    pub stub: Option<StubEndpoint>,
    /// The credential in a response header is replaced (by the placeholder, or `****`).
    pub scrub_response_headers: bool,
    /// … and in a text response body (by as many `*`).
    pub scrub_response_bodies: bool,
}

/// `upstream_http2`: the HTTP version requests go upstream in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Http2 {
    /// HTTP/2 when the upstream offers it by ALPN (https only), else HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Never,
    /// HTTP/2 only: ALPN `h2` for https, prior knowledge (h2c) for http; an upstream
    /// without it is an error.
    Always,
}

/// The settings of a connection with `grants: per_user` (`crate::grants`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerUser {
    /// Token requests in flight at once for the connection; the others queue.
    pub max_concurrent_token_requests: usize,
    /// Grants kept in this process's memory (least recently used evicted).
    pub cache_size: usize,
}

impl PerUser {
    pub const DEFAULT_MAX_CONCURRENT_TOKEN_REQUESTS: usize = 8;
    pub const DEFAULT_CACHE_SIZE: usize = 10_000;
}

/// How requests on a connection are authenticated.
#[derive(Debug)]
pub enum Auth {
    /// `bearer` or `basic`: one fixed `Authorization` value, built at load.
    Header(HeaderValue),
    ApiKey(ApiKey),
    /// Shared: every runtime connection of one template has the same requests (their
    /// values come from each one's params at run time), kept once (`runtime::Runtime`).
    OAuth2(std::sync::Arc<OAuth2>),
}

/// The OAuth2 strategies, their Fides requests compiled at load. `Debug` leaves out the
/// request templates (they may hold expanded secrets).
#[derive(PartialEq)]
pub struct OAuth2 {
    /// The Fides strategy's name (`oauth2_client_credentials`, `oauth2_jwt_bearer`, …).
    pub strategy: &'static str,
    pub grant: Grant,
    pub token_request: RequestTemplate,
    pub refresh_request: Option<RequestTemplate>,
    /// Authorization code only.
    pub authorization_request: Option<RequestTemplate>,
    /// A configured lifetime wins over the token response's `expires_in` (as in Fides).
    pub expires_in: Option<u64>,
    /// RFC 7009 token revocation, sent when a per-user grant is deleted (a tokenwarden
    /// extension of the Fides format; receives `<refresh_token>` and `<access_token>`).
    pub revoke_request: Option<RequestTemplate>,
    /// The JWT-bearer grant: every token request carries this assertion.
    pub assertion: Option<Assertion>,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("grant", &self.grant)
            .field("refresh_request", &self.refresh_request.is_some())
            .field("expires_in", &self.expires_in)
            .field("assertion", &self.assertion.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    ClientCredentials,
    AuthorizationCode,
}

/// How token and refresh requests present the client's credentials, on top of what the
/// Fides requests themselves carry.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Exactly as the Fides requests say (default).
    AsConfigured,
    /// `Authorization: Basic base64(urlencode(client_id):urlencode(client_secret))` (RFC 6749 §2.3.1).
    Basic,
    /// The same without the form-encoding, for providers that do not decode it.
    BasicUnencoded,
    /// `private_key_jwt` (RFC 7523 §2.2): a signed client assertion in the body.
    PrivateKeyJwt(std::sync::Arc<PrivateKeyJwt>),
    /// `tls_client_auth` (RFC 8705 §2.1): a client certificate on the TLS connection.
    TlsClientAuth(std::sync::Arc<TlsClientAuth>),
}

impl ClientAuth {
    /// Whether the requests go exactly as the Fides templates say.
    pub fn is_as_configured(&self) -> bool {
        matches!(self, ClientAuth::AsConfigured)
    }
}

/// `client_auth: { method: private_key_jwt, … }`.
#[derive(Debug)]
pub struct PrivateKeyJwt {
    pub key: crate::jwt::SigningKey,
    /// The assertion's `aud` (None: the token endpoint's URL, without its query).
    pub audience: Option<String>,
}

/// `client_auth: { method: tls_client_auth, … }`: the certificate and its key (checked to
/// match at load).
pub struct TlsClientAuth {
    pub identity: std::sync::Arc<rustls::sign::CertifiedKey>,
    /// The upstream API is shown the same certificate.
    pub upstream: bool,
}

impl std::fmt::Debug for TlsClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClientAuth")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// The JWT-bearer grant's assertion (RFC 7523 §2.1), its values templates filled from the
/// connection's params when a token request is built (`oauth2_jwt_bearer`,
/// `google_cloud_service_account`).
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    pub issuer: Template,
    pub subject: Option<Template>,
    pub audience: Template,
    pub scope: Option<Template>,
    /// Seconds from `iat` to `exp`.
    pub lifetime: u64,
    /// Extra claims, after the registered ones.
    pub claims: Vec<(String, Claim)>,
    /// A PEM private key or a private JWK.
    pub key: Template,
    /// None: the key's default (RS256 for RSA, ES256 for P-256).
    pub alg: Option<String>,
    pub kid: Option<Template>,
    /// Whether the assertion carries a `jti` (google-auth's does not).
    pub jti: bool,
}

/// An extra claim's value: text (with placeholders) or any other JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    Text(Template),
    Json(serde_json::Value),
}

impl Assertion {
    /// The signed assertion, its values filled from `lookup`; the message says which value
    /// or what about the key is wrong (never a value).
    pub fn sign(&self, lookup: &Lookup<'_>, now: u64) -> Result<String, String> {
        use serde_json::Value;
        let fill = |name: &str, t: &Template| {
            t.fill(lookup)
                .map_err(|_| format!("the assertion's {name} has a placeholder without a value"))
        };
        let key = crate::jwt::PrivateKey::parse(&fill("key", &self.key)?)
            .map_err(|e| format!("assertion key: {e}"))?;
        let kid = self.kid.as_ref().map(|k| fill("kid", k)).transpose()?;
        let signer = crate::jwt::SigningKey::new(&key, self.alg.as_deref(), kid, None)
            .map_err(|e| format!("assertion key: {e}"))?;
        let mut claims = serde_json::Map::new();
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + self.lifetime).into());
        claims.insert("iss".into(), fill("issuer", &self.issuer)?.into());
        if let Some(sub) = &self.subject {
            claims.insert("sub".into(), fill("subject", sub)?.into());
        }
        claims.insert("aud".into(), fill("audience", &self.audience)?.into());
        if let Some(scope) = &self.scope {
            claims.insert("scope".into(), fill("scope", scope)?.into());
        }
        if self.jti {
            claims.insert("jti".into(), crate::jwt::jti().into());
        }
        for (name, value) in &self.claims {
            let value = match value {
                Claim::Text(t) => Value::String(fill(name, t)?),
                Claim::Json(v) => v.clone(),
            };
            claims.insert(name.clone(), value);
        }
        signer
            .sign(&claims)
            .map_err(|e| format!("assertion key: {e}"))
    }
}

/// `api_key`: headers set, query parameters set or replaced, JSON merged into the body.
/// Its values are secrets: `Debug` shows only names.
pub struct ApiKey {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub query_params: Vec<(String, String)>,
    pub body: Option<serde_json::Map<String, serde_json::Value>>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field(
                "query_params",
                &self.query_params.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field(
                "body",
                &self.body.as_ref().map(|b| b.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// Where proxied requests go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    /// `host[:port]` as written (placeholders filled); also the `Host` header.
    pub authority: Authority,
    /// Lower-case host name or IP literal, without brackets or trailing dot.
    pub host: String,
    pub port: u16,
}

/// The header whose value picks the body encoding (matched case-insensitively).
pub const CONTENT_TYPE: &str = "Content-Type";
/// JSON: the body text as is. Also what Fides adds when a request has no Content-Type.
pub const JSON: &str = "application/json";
/// Form: the body text parsed as JSON and form-encoded with sorted keys.
pub const FORM: &str = "application/x-www-form-urlencoded";
/// Plain text: the body text as is.
pub const PLAIN: &str = "text/plain";

/// A Fides request with every part parsed and checked. Holds secrets in its templates
/// (expanded `${VAR}`s); `Debug` shows only placeholder names.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTemplate {
    pub method: Method,
    /// From the request's own client_config, else the root one.
    pub protocol: String,
    /// As `protocol`.
    pub host: Template,
    pub path: Template,
    /// In config order. A pair whose value has a placeholder without a value is left out.
    pub query_params: Vec<Pair>,
    /// As `query_params`.
    pub headers: Vec<Pair>,
    /// None for a request without a body — and for the authorization request, which is
    /// never sent, so its body plays no part (FIDES-BEHAVIOUR.md §3.2).
    pub body: Option<Body>,
    /// The request's own `client_config.authentication` (`basic` is the only one allowed).
    pub basic_auth: Option<BasicAuth>,
}

impl RequestTemplate {
    /// `{protocol}://{host}{path}` filled from `params`, without query or fragment: where
    /// the request goes (None: a placeholder there has no value). The audience of a
    /// `private_key_jwt` assertion, and the token endpoint `stub_token_endpoint` answers.
    pub fn endpoint(&self, params: &Params) -> Option<String> {
        let lookup = Lookup::new(params);
        let host = self.host.fill(&lookup).ok()?;
        let path = self.path.fill(&lookup).ok()?;
        let path = path.split(['?', '#']).next().unwrap_or_default();
        Some(format!("{}://{host}{path}", self.protocol))
    }
}

/// A header or query parameter: a fixed name, a template value.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub name: String,
    pub value: Template,
}

/// A body template and the encoding its Content-Type asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub template: Template,
    pub encoding: Encoding,
}

/// How a filled body goes on the wire (Fides' `format_body`, FIDES-BEHAVIOUR.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No Content-Type header: the text as is, with `Content-Type: application/json` added.
    DefaultJson,
    /// `application/json` or `text/plain`: the text as is.
    AsIs,
    /// `application/x-www-form-urlencoded`: the text parsed as JSON, then form-encoded.
    Form,
}

/// `basic` credentials of one request: `Authorization: Basic base64(username:password)`.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicAuth {
    pub username: Template,
    /// None sends an empty password (Fides turns a None password into `""`).
    pub password: Option<Template>,
}

/// Fills `pairs` in order: a pair with a missing placeholder is left out, and a repeated
/// name keeps its first position and takes the last value (Python dict semantics).
pub fn fill_pairs(pairs: &[Pair], lookup: &Lookup<'_>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in pairs {
        let Ok(value) = pair.value.fill(lookup) else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| *n == pair.name) {
            Some(slot) => slot.1 = value,
            None => out.push((pair.name.clone(), value)),
        }
    }
    out
}
