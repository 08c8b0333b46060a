//! The one plan of a request, shared by both request paths: [`Proxy::plan`] decides the
//! routing (reverse `/{key}/…` or forward absolute-form, and among several connections on
//! a host by `tokenwarden-connection`: [`super::choice`]), every refusal (`TRACE`, a loop,
//! an open-proxy request, an unusable target), the credential and the `no_token` error
//! (counted here), and the headers the proxy sets; [`sent`] counts the request as
//! proxied. The fast path ([`super::fast`]) serialises a plan as bytes, the hyper path
//! ([`super::full`]) into a `HeaderMap`. This file imports neither.
//!
//! [`may_retry`] is the one retry rule both upstream pools follow.

use super::choice::{self, Misdirection, Named};
use super::error::ProxyError;
use super::Proxy;
use crate::config::{ApiKey, Auth, Grant};
use crate::grants::subject::Said;
use crate::grants::{self, Grants};
use crate::registry::Entry;
use crate::token::TokenSet;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use std::sync::Arc;
use tokio::time::Instant;

/// The port of an absolute-form `http://` target that names none.
const HTTP_DEFAULT_PORT: u16 = 80;

/// What the app's request head says, as either parser read it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'r> {
    pub method: &'r str,
    /// Absolute-form target: `Some((scheme, authority))`; origin-form: `None`.
    pub origin: Option<(&'r str, &'r str)>,
    /// The path and query (origin-form: the whole target).
    pub path_and_query: &'r str,
    /// A `Via` header names this proxy ([`super::headers::via_names`]).
    pub looped: bool,
    /// The request arrived inside an intercepted `CONNECT` tunnel to this `host:port`
    /// ([`super::tunnel`]): routed as a forward-mode request to `https://host:port`.
    pub tunnel: Option<&'r str>,
    /// The `tokenwarden-connection` header ([`super::choice`]), which is never forwarded.
    pub connection: Named<'r>,
    /// The `tokenwarden-subject` header ([`crate::grants::subject`]), never forwarded.
    pub subject: Said<'r>,
    /// The `Proxy-Authorization` header (hop-by-hop): in forward mode its Basic user name
    /// names a per-user grant's subject.
    pub proxy_authorization: Option<&'r [u8]>,
}

/// How a request is forwarded: decided once by [`Proxy::plan`].
pub struct Plan<'p, 'r> {
    pub entry: &'p Arc<Entry>,
    /// The end user's grant whose token it injects (a per-user connection).
    pub grant: Option<Arc<grants::Grant>>,
    /// The origin-form target sent upstream.
    pub target: Target<'r>,
    pub credential: Credential<'p>,
    /// Safe to send again after a failure ([`may_retry`]).
    pub idempotent: bool,
    /// HEAD: the response has no body whatever its headers say.
    pub is_head: bool,
    /// The app's own `Authorization` goes upstream, not the credential (`inject:
    /// if_absent` or `placeholder`: [`super::placeholder::sets_authorization`]).
    pub keeps_authorization: bool,
}

/// What the request's life keeps of its plan ([`Plan::prepared`]; the plan itself borrows
/// the token and ends before anything awaits).
#[derive(Clone)]
pub(crate) struct Prepared<'p> {
    pub entry: &'p Arc<Entry>,
    /// The end user's grant whose token was injected (a per-user connection).
    pub grant: Option<Arc<grants::Grant>>,
    /// Safe to send again by the shared retry rule.
    pub idempotent: bool,
    /// The serial of the token injected (0: none), for [`Proxy::unauthorized`].
    pub token: u64,
}

impl<'p> Plan<'p, '_> {
    /// What the request's life keeps of this plan.
    pub(crate) fn prepared(&self) -> Prepared<'p> {
        Prepared {
            entry: self.entry,
            grant: self.grant.clone(),
            idempotent: self.idempotent,
            token: self.credential.token_serial(),
        }
    }
}

/// The credential a plan injects.
pub enum Credential<'p> {
    /// An OAuth2 token usable at the plan's clock reading, borrowed from the cache (no
    /// reference count taken; drop the plan before awaiting).
    Token(CurrentToken, Instant),
    /// A static `Authorization` value (bearer, basic).
    Static(&'p HeaderValue),
    /// Headers, query parameters and body fields of an `api_key` connection (the hyper
    /// path applies them: they rewrite the target and may rewrite the body).
    ApiKey(&'p ApiKey),
}

impl Credential<'_> {
    /// The serial of the OAuth2 token injected (0: not a token), for matching an
    /// upstream's 401 to it ([`super::unauthorized`]).
    pub fn token_serial(&self) -> u64 {
        match self {
            Credential::Token(token, _) => token.as_deref().map_or(0, TokenSet::serial),
            _ => 0,
        }
    }

    /// The `Authorization` value to set, if the credential is one.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        match self {
            Credential::Token(token, now) => token.as_deref().and_then(|t| t.header_at(*now)),
            Credential::Static(value) => Some(value),
            Credential::ApiKey(_) => None,
        }
    }
}

/// The names of the headers a plan sets, replacing the app's ([`Plan::set_headers`]).
static SET_NAMES: [HeaderName; 2] = [header::HOST, header::AUTHORIZATION];

/// Methods whose request may be sent twice (RFC 9110 §9.2.2, without TRACE, which is refused).
const IDEMPOTENT: [&str; 5] = ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"];

impl<'p> Plan<'p, '_> {
    /// The headers the proxy sets upstream after hop-by-hop hygiene, replacing any the app
    /// sent: `Host` (the upstream authority), then `Authorization` (the credential). The
    /// proxy's `Via` ([`Proxy::via`]) is appended after them. Hygiene runs first, so no
    /// `Connection`-named header can remove these.
    pub fn set_headers(&self) -> impl Iterator<Item = (&'static HeaderName, &HeaderValue)> {
        let values = [
            Some(&self.entry.host_header),
            self.credential
                .authorization()
                .filter(|_| !self.keeps_authorization),
        ];
        SET_NAMES
            .iter()
            .zip(values)
            .filter_map(|(name, value)| Some((name, value?)))
    }

    /// Counts the request as proxied ([`sent`]).
    pub fn sent(&self) {
        sent(self.entry);
    }
}

impl Proxy {
    /// Decides how to forward a request, at clock reading `now`: refusals first (a loop,
    /// `TRACE` in any case, routing), then the credential; a connection without a usable
    /// token is the `no_token` error, counted here. Pure otherwise: a path may plan a
    /// request it then hands to the other path, which plans it again.
    #[inline]
    pub fn plan<'p, 'r>(&'p self, ask: &Ask<'r>, now: Instant) -> Result<Plan<'p, 'r>, ProxyError> {
        if ask.looped {
            return Err(ProxyError::Loop);
        }
        // In any case: an upstream may not care about a method's case.
        if ask.method.eq_ignore_ascii_case("TRACE") {
            return Err(ProxyError::Forbidden {
                reason: "TRACE is refused: the upstream would echo the injected credential back"
                    .into(),
            });
        }
        let (entry, target) = self.route(ask)?;
        let mut grant = None;
        let credential = match &entry.conn.auth {
            Auth::OAuth2(_) if entry.grants.is_some() => {
                let (token, user) = user_token(entry, ask, now)?;
                grant = Some(user);
                Credential::Token(token, now)
            }
            Auth::OAuth2(_) => {
                let token = entry.tokens.current();
                if token.as_deref().and_then(|t| t.header_at(now)).is_none() {
                    let refusal = no_token(entry);
                    // Not final while a token is being fetched (`token_arrives` counts it).
                    if let ProxyError::NoToken {
                        fetching: false,
                        state,
                        ..
                    } = refusal
                    {
                        entry.counters.requests.no_token(state as usize);
                    }
                    return Err(refusal);
                }
                Credential::Token(token, now)
            }
            Auth::Header(value) => Credential::Static(value),
            Auth::ApiKey(key) => Credential::ApiKey(key),
        };
        Ok(Plan {
            entry,
            grant,
            target,
            credential,
            idempotent: IDEMPOTENT.contains(&ask.method),
            is_head: ask.method == "HEAD",
            keeps_authorization: false,
        })
    }

    /// Reverse mode (`/{key}/rest?query`) or forward mode (`http://host/rest?query`, given
    /// as `origin = Some((scheme, authority))`): the connection and the origin-form target
    /// to send upstream. Inside an intercepted tunnel to `tunnel` (`host:port`), an
    /// origin-form request is a forward-mode request to `https://{tunnel}`. Works on the
    /// raw target, so both request paths share it. The connection the request names
    /// ([`Ask::connection`]) must be the path's in reverse mode, and one on the host in
    /// forward mode, where it chooses among several ([`super::choice`]).
    pub fn route<'t>(&self, ask: &Ask<'t>) -> Result<(&Arc<Entry>, Target<'t>), ProxyError> {
        let (origin, path_and_query, tunnel) = (ask.origin, ask.path_and_query, ask.tunnel);
        let named = match ask.connection {
            Named::Absent => None,
            Named::Key(key) => Some(key),
            Named::Invalid => return Err(choice::invalid()),
        };
        let origin = match (tunnel, origin) {
            (Some(authority), None) => Some(("https", authority)),
            (Some(_), Some(_)) => {
                return Err(ProxyError::BadRequest {
                    reason: "inside an intercepted https tunnel, send origin-form targets (/path)"
                        .into(),
                })
            }
            (None, origin) => origin,
        };
        if let Some((scheme, authority)) = origin {
            if tunnel.is_none() && !scheme.eq_ignore_ascii_case("http") {
                return Err(ProxyError::Forbidden {
                    reason: "only http:// requests can go through this proxy as absolute-form targets (tokenwarden talks https upstream); https:// URLs need HTTPS_PROXY and proxy.intercept".into(),
                });
            }
            if authority.contains('@') {
                return Err(ProxyError::BadRequest {
                    reason: "userinfo is not allowed in the request target".into(),
                });
            }
            let (host, port) = split_authority(authority)?;
            if self.targets_self(host, port.unwrap_or(HTTP_DEFAULT_PORT)) {
                return Err(ProxyError::Loop);
            }
            let default = if tunnel.is_some() {
                443
            } else {
                HTTP_DEFAULT_PORT
            };
            let path = path_and_query.split('?').next().unwrap_or("/");
            if let Some(stub) = self.registry.stub_at(host, port.unwrap_or(default), path) {
                return Err(stub_token(stub));
            }
            let state = self.registry.by_authority(host, port, named);
            let state = state.map_err(|why| choice::unchosen(why, host, named))?;
            return Ok((state, Target::after(path_and_query)));
        }
        let rest = path_and_query.strip_prefix('/').unwrap_or(path_and_query);
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (key, tail) = rest.split_at(end);
        let state = self
            .registry
            .get(key)
            .ok_or_else(|| ProxyError::UnknownConnection {
                key: key.to_owned(),
            })?;
        if let Some(named) = named.filter(|&named| named != key) {
            return Err(ProxyError::Misdirected(Misdirection::NotThePath {
                path: key.to_owned(),
                named: named.to_owned(),
            }));
        }
        Ok((state, Target::after(tail)))
    }

    /// Whether `authority` (`host[:port]`, port 80 if none) is one of this process's
    /// listeners.
    pub(crate) fn is_own_authority(&self, authority: &str) -> bool {
        split_authority(authority)
            .is_ok_and(|(host, port)| self.targets_self(host, port.unwrap_or(HTTP_DEFAULT_PORT)))
    }

    /// Whether `host:port` is one of this process's listeners.
    fn targets_self(&self, host: &str, port: u16) -> bool {
        let Ok(ip) = host.parse::<std::net::IpAddr>() else {
            return host.eq_ignore_ascii_case("localhost")
                && self.own_addrs.iter().any(|a| a.port() == port);
        };
        self.own_addrs.iter().any(|a| {
            a.port() == port
                && (a.ip() == ip
                    || (a.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        })
    }
}

/// The answer to an app's own token request to `entry`'s token endpoint
/// (`stub_token_endpoint`): its placeholder as an access token, valid as long as the real
/// token (an hour when that is not known). The app's request, and the refresh token or
/// client secret it carries, go nowhere.
fn stub_token(entry: &Entry) -> ProxyError {
    const UNKNOWN_LIFETIME: u64 = 3600;
    let expires_in = entry
        .tokens
        .current()
        .as_deref()
        .and_then(|t| t.expires_at)
        .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
        .map_or(UNKNOWN_LIFETIME, |left| left.as_secs().max(1));
    let placeholder = entry.conn.egress.placeholder.as_deref().unwrap_or_default();
    ProxyError::StubToken {
        connection: entry.conn.key.clone(),
        body: serde_json::json!({
            "access_token": placeholder,
            "token_type": "Bearer",
            "expires_in": expires_in,
        }),
    }
}

/// Counts a request to `entry` as proxied: call once per request, when it is sent upstream.
pub fn sent(entry: &Entry) {
    entry.counters.proxied.inc();
}

/// How a request on a pooled upstream connection failed before any byte of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// It provably never left (the connection was found closed first).
    Unsent,
    /// It was written, or may have been in part.
    Sent,
}

/// The retry rule of both pools: a request goes once more, on a new connection, only when
/// it failed on a *reused* pooled connection (which the upstream may have closed while
/// idle) before any byte of a response arrived, and it either never left or its method is
/// idempotent. A new connection that fails is an error at once, and so is any failure
/// after a response started.
pub fn may_retry(reused: bool, idempotent: bool, how: Unanswered) -> bool {
    reused && (how == Unanswered::Unsent || idempotent)
}

/// The origin-form target sent upstream: `/` (when `slash`) followed by `rest`, so that
/// routing can cut it out of the app's target without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'t> {
    pub slash: bool,
    pub rest: &'t str,
}

impl<'t> Target<'t> {
    /// The target for what follows the routing part: a path (`/v1?x`), a bare query
    /// (`?x` → `/?x`) or nothing (`/`).
    fn after(tail: &'t str) -> Target<'t> {
        Target {
            slash: !tail.starts_with('/'),
            rest: tail,
        }
    }

    pub fn len(self) -> usize {
        usize::from(self.slash) + self.rest.len()
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub fn write_to(self, out: &mut Vec<u8>) {
        if self.slash {
            out.push(b'/');
        }
        out.extend_from_slice(self.rest.as_bytes());
    }

    /// Writes the target into `out`, which is exactly [`Target::len`] bytes long.
    pub fn write_into(self, out: &mut [u8]) {
        let (slash, rest) = out.split_at_mut(usize::from(self.slash));
        if let [b] = slash {
            *b = b'/';
        }
        rest.copy_from_slice(self.rest.as_bytes());
    }

    /// As a `PathAndQuery` (one allocation of exactly its length).
    pub fn to_path_and_query(self) -> Result<PathAndQuery, ProxyError> {
        let mut target = Vec::with_capacity(self.len());
        self.write_to(&mut target);
        PathAndQuery::from_maybe_shared(Bytes::from(target)).map_err(|_| ProxyError::BadRequest {
            reason: "the request path cannot be forwarded".into(),
        })
    }
}

/// `host[:port]` or `[v6][:port]` → the host (without brackets) and the port, if written.
fn split_authority(authority: &str) -> Result<(&str, Option<u16>), ProxyError> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let end = v6.find(']').ok_or_else(|| bad_authority(authority))?;
            (&v6[..end], v6[end + 1..].strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse().map_err(|_| bad_authority(authority))?),
    };
    Ok((host, port))
}

fn bad_authority(authority: &str) -> ProxyError {
    ProxyError::BadRequest {
        reason: format!("{authority} is not a valid host[:port]"),
    }
}

/// The 503 for a connection without a usable token.
fn no_token(state: &Entry) -> ProxyError {
    let authorize = match &state.conn.auth {
        Auth::OAuth2(o) if o.grant == Grant::AuthorizationCode => {
            Some(super::authorize_route(&state.conn.key))
        }
        _ => None,
    };
    ProxyError::NoToken {
        connection: state.conn.key.clone(),
        state: state.tokens.state(),
        authorize,
        fetching: state.tokens.fetching(),
        subject: None,
    }
}

/// A token as the cache holds it (the guard keeps it alive while the request is built).
type CurrentToken = arc_swap::Guard<Option<Arc<TokenSet>>>;

/// The token of the end user a request to a per-user connection names, if usable at
/// `now`: a token past its refresh time is used while a renewal starts in the background;
/// without a usable one the request is refused with `no_token` for that subject — to wait
/// for the grant's first read from the store or its renewal ([`Proxy::token_arrives`]) when
/// one is under way, else with the link that authorizes the subject.
fn user_token(
    entry: &Arc<Entry>,
    ask: &Ask<'_>,
    now: Instant,
) -> Result<(CurrentToken, Arc<grants::Grant>), ProxyError> {
    let users = entry.grants.as_ref().expect("a per-user connection");
    // Forward mode (and intercepted tunnels) only: a reverse-mode request has no proxy to
    // authenticate to.
    let forward = ask.origin.is_some() || ask.tunnel.is_some();
    let proxy_authorization = ask.proxy_authorization.filter(|_| forward);
    let subject = grants::subject::choose(ask.subject, proxy_authorization).map_err(|refused| {
        ProxyError::BadRequest {
            reason: refused.to_string(),
        }
    })?;
    let grant = users.get(&subject);
    let token = grant.tokens.current();
    let due = grants::due(&entry.conn, token.as_deref(), now);
    if token.as_deref().and_then(|t| t.header_at(now)).is_some() {
        if due {
            users.renew(entry, &grant);
        }
        return Ok((token, grant));
    }
    let fetching =
        !grant.loaded() || (due && users.renew(entry, &grant)) || grant.tokens.fetching();
    let state = grant.tokens.state();
    if !fetching {
        entry.counters.requests.no_token(state as usize);
    }
    Err(ProxyError::NoToken {
        connection: entry.conn.key.clone(),
        state,
        authorize: Some(super::authorize_route_for(&entry.conn.key, &subject)),
        fetching,
        subject: Some(subject.into_owned()),
    })
}

/// How long a request without a usable token waits for one that is being fetched (the
/// first token, or the refresh of an expired one) before its 503.
pub const TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Proxy {
    /// After a `no_token` refusal of a connection that was fetching a token: waits for it,
    /// at most [`TOKEN_WAIT`]. True: a usable token arrived, plan the request again. False:
    /// answer the refusal — counted here, since the plan left a refusal that might not be
    /// final uncounted.
    pub async fn token_arrives(&self, error: &ProxyError) -> bool {
        let ProxyError::NoToken {
            connection,
            state,
            fetching: true,
            subject,
            ..
        } = error
        else {
            return false;
        };
        let Some(entry) = self.registry.get(connection) else {
            return false;
        };
        let arrived = match (subject, &entry.grants) {
            (Some(subject), Some(grants)) => user_token_arrives(entry, grants, subject).await,
            _ => entry.tokens.usable_within(TOKEN_WAIT).await,
        };
        if !arrived {
            entry.counters.requests.no_token(*state as usize);
        }
        arrived
    }
}

/// [`Proxy::token_arrives`] for an end user's grant: its first read from the store, then,
/// if its token is expired, its renewal; true when a usable token is held within
/// [`TOKEN_WAIT`].
async fn user_token_arrives(entry: &Arc<Entry>, grants: &Grants, subject: &str) -> bool {
    let deadline = Instant::now() + TOKEN_WAIT;
    let grant = grants.get(subject);
    let read = tokio::time::timeout_at(deadline, grants.load(&entry.conn, &grant)).await;
    match read {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(connection = %entry.conn.key, error = %e, "cannot read a user's grant from the store");
            return false;
        }
        Err(_) => return false,
    }
    let tokens = &grant.tokens;
    if tokens.header().is_some() {
        return true;
    }
    if crate::grants::due(&entry.conn, tokens.token().as_deref(), Instant::now()) {
        grants.renew(entry, &grant);
    }
    tokens
        .usable_within(deadline.saturating_duration_since(Instant::now()))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_rule() {
        use Unanswered::{Sent, Unsent};
        // (reused, idempotent, how) → retried
        for (reused, idempotent, how, retried) in [
            (true, true, Sent, true),
            (true, false, Sent, false),
            (true, false, Unsent, true),
            (true, true, Unsent, true),
            (false, true, Sent, false),
            (false, true, Unsent, false),
            (false, false, Unsent, false),
        ] {
            assert_eq!(
                may_retry(reused, idempotent, how),
                retried,
                "{reused} {idempotent} {how:?}"
            );
        }
    }

    #[test]
    fn authorities_split_with_ipv6_brackets_and_optional_ports() {
        assert_eq!(split_authority("a.example").unwrap(), ("a.example", None));
        assert_eq!(
            split_authority("a.example:81").unwrap(),
            ("a.example", Some(81))
        );
        assert_eq!(split_authority("a.example:").unwrap(), ("a.example", None));
        assert_eq!(split_authority("[::1]:8443").unwrap(), ("::1", Some(8443)));
        assert_eq!(split_authority("[::1]").unwrap(), ("::1", None));
        for bad in ["a.example:x", "[::1", "a:99999"] {
            assert!(split_authority(bad).is_err(), "{bad}");
        }
    }
}
