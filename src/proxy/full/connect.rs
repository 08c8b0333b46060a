//! `CONNECT`: to a connection's `host:port` with `proxy.intercept` on, an intercepted
//! tunnel ([`crate::proxy::tunnel`]): answered 200, TLS terminated with the host's minted
//! leaf, its requests served as forward mode. A connection's host is never tunnelled
//! untouched: on another port, or without `proxy.intercept`, it is refused with the way
//! out. Any other target is refused unless `host:port` is in `proxy.connect_passthrough`
//! — then a plain tunnel, with no injection (and no interception), closed after
//! `proxy.tunnel_idle_timeout` without a byte ([`super::passthrough`]). Both kinds of
//! tunnel are left in the connection's slot and hold its `proxy.max_connections` permit.

use super::Engine;
use super::ProxyBody;
use crate::instrument::UpstreamError;
use crate::proxy::error::{ProxyError, UpstreamFault};
use crate::proxy::Proxy;
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

/// The port of a `CONNECT` target that names none.
const DEFAULT_TUNNEL_PORT: u16 = 443;

/// `host:port` as `proxy.connect_passthrough` lists it and as the tunnel dials it: the
/// host lower-cased, an IPv6 literal kept in brackets (`[::1]:443`), the port defaulted.
fn tunnel_target(authority: &Authority) -> String {
    let port = authority.port_u16().unwrap_or(DEFAULT_TUNNEL_PORT);
    format!("{}:{port}", authority.host().to_ascii_lowercase())
}

/// Answers a `CONNECT` from `peer` (`in_tunnel`: inside an intercepted tunnel already);
/// the tunnel it opens is left in `slot` for the connection's task.
pub async fn handle(
    proxy: &Proxy,
    engine: &Engine,
    req: Request<Incoming>,
    peer: SocketAddr,
    in_tunnel: bool,
    slot: &crate::proxy::tunnel::Slot,
) -> Result<Response<ProxyBody>, ProxyError> {
    if in_tunnel {
        return Err(ProxyError::BadRequest {
            reason: "CONNECT inside an intercepted tunnel is not allowed".into(),
        });
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return Err(ProxyError::BadRequest {
            reason: "CONNECT needs a host:port target".into(),
        });
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let target = tunnel_target(&authority);
    let port = authority.port_u16().unwrap_or(DEFAULT_TUNNEL_PORT);
    // A token endpoint tokenwarden answers itself (`stub_token_endpoint`) is intercepted.
    let stub = proxy.registry.stubs_at(&host, port);
    if proxy.registry.knows_host(&host) || stub {
        let Some(interceptor) = &proxy.intercept else {
            return Err(ProxyError::Forbidden {
                reason: format!(
                    "{host} is a configured connection: send plain http:// requests through this proxy (e.g. http://{host}/…), or turn on proxy.intercept to keep https:// URLs (docs/local-proxy.md); tokenwarden makes the upstream request itself, over the connection's protocol (https for a SaaS API), and injects the token, which it cannot do inside a plain CONNECT (TLS) tunnel"
                ),
            });
        };
        if proxy.registry.by_tunnel(&host, port).is_none() && !stub {
            let ports: Vec<String> = proxy
                .registry
                .ports_of(&host)
                .iter()
                .map(u16::to_string)
                .collect();
            let configured = if ports.is_empty() {
                "reached by its key only (reverse_only)".to_owned()
            } else {
                format!("configured on port {}, not {port}", ports.join(", "))
            };
            return Err(ProxyError::Forbidden {
                reason: format!(
                    "{host} is {configured}: CONNECT to {target} is refused (a configured host is never tunnelled untouched)"
                ),
            });
        }
        let timeout = engine.header_read_timeout;
        let interceptor = Arc::clone(interceptor);
        crate::proxy::tunnel::open(interceptor, req, peer, host, target, timeout, slot);
        return Ok(established());
    }
    if !proxy.passthrough.contains(&target) {
        return Err(ProxyError::Forbidden {
            reason: format!("CONNECT to {target} is not allowed; tokenwarden is not an open proxy (see proxy.connect_passthrough)"),
        });
    }
    let upstream = match tokio::time::timeout(
        proxy.connect_timeout,
        tokio::net::TcpStream::connect(&target),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamFault::dial(UpstreamError::Connect, &e).on(&target)),
        Err(_) => return Err(UpstreamFault::timeout().on(&target)),
    };
    super::passthrough::open(
        req,
        upstream,
        proxy.limits.tunnel_idle_timeout,
        engine.shutdown.clone(),
        slot,
    );
    Ok(established())
}

/// The 200 that opens a tunnel.
fn established() -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::default()));
    *response.status_mut() = StatusCode::OK;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_targets_keep_ipv6_brackets_and_default_the_port() {
        let t = |a: &str| tunnel_target(&a.parse().unwrap());
        assert_eq!(t("[::1]:8443"), "[::1]:8443");
        assert_eq!(t("[::1]"), "[::1]:443");
        assert_eq!(t("Example.COM"), "example.com:443");
        assert_eq!(t("10.0.0.1:22"), "10.0.0.1:22");
        // What the tunnel dials must parse as a socket address (or host:port).
        assert!(t("[::1]:8443").parse::<std::net::SocketAddr>().is_ok());
    }
}
