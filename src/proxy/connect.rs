//! `CONNECT`: refused, with a reason, unless `host:port` is in `proxy.connect_passthrough`
//! — then a plain tunnel, with no injection. A tunnel to a connection's own host is always
//! refused: inside TLS tokenwarden cannot inject, so the app must use `http://` through
//! the proxy instead.

use super::error::ProxyError;
use super::{Proxy, ProxyBody};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

pub async fn handle(
    proxy: &Proxy,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
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
    let port = authority.port_u16().unwrap_or(443);
    if proxy.registry.knows_host(&host) {
        return Err(ProxyError::Forbidden {
            reason: format!(
                "{host} is a configured connection: send plain http:// requests through this proxy (e.g. http://{host}/…) and tokenwarden will use https upstream and inject the token; a CONNECT tunnel would bypass it"
            ),
        });
    }
    let target = format!("{host}:{port}");
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
        Ok(Err(e)) => {
            return Err(ProxyError::UpstreamUnreachable {
                connection: target,
                reason: e.to_string(),
            })
        }
        Err(_) => return Err(ProxyError::UpstreamTimeout { connection: target }),
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    let mut response = Response::new(Either::Right(Full::default()));
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}
