//! A connection's upstream: the client_config's protocol and host, filled from the params,
//! as the proxy dials it. A problem quotes the host as written, never a filled-in value.

use super::hidden::HIDDEN;
use super::model::Upstream;
use super::request::Checker;
use super::source::Problems;
use crate::template::{Lookup, Template};
use http::uri::{Authority, Scheme};

/// The upstream from the client_config's protocol and its checked host (`written`, with
/// its placeholders), filled. A problem quotes the host as written, never a value filled in
/// from the params.
pub(super) fn upstream(
    protocol: &str,
    written: &str,
    host: &Template,
    check: &Checker<'_>,
    problems: &mut Problems,
) -> Option<Upstream> {
    let filled = host.fill(&Lookup::new(check.params)).ok()?;
    let origin = check.origin;
    parse_upstream(protocol, &filled)
        .map_err(|bad| {
            let host = match filled == written {
                true => origin.quote("host", written),
                false => format!("{} (filled in: {HIDDEN})", origin.quote("host", written)),
            };
            let message = match bad {
                BadUpstream::Protocol => format!(
                    "protocol {} is not http or https",
                    origin.quote("protocol", protocol)
                ),
                BadUpstream::NotHostPort => format!("host {host} is not a valid host[:port]"),
                BadUpstream::NotBare => format!("host {host} must be a bare host[:port]"),
            };
            problems.push(origin.problem("host", message));
        })
        .ok()
}

/// Why a protocol and host are no upstream.
enum BadUpstream {
    Protocol,
    NotHostPort,
    NotBare,
}

/// `protocol` + `host[:port]` → an upstream; the port defaults from the protocol.
fn parse_upstream(protocol: &str, host: &str) -> Result<Upstream, BadUpstream> {
    let (scheme, default_port) = match protocol {
        "https" => (Scheme::HTTPS, 443),
        "http" => (Scheme::HTTP, 80),
        _ => return Err(BadUpstream::Protocol),
    };
    let authority: Authority = host.parse().map_err(|_| BadUpstream::NotHostPort)?;
    if authority.as_str().contains('@') || host.contains('/') {
        return Err(BadUpstream::NotBare);
    }
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Ok(Upstream {
        scheme,
        host: name.trim_end_matches('.').to_ascii_lowercase(),
        port: authority.port_u16().unwrap_or(default_port),
        authority,
    })
}
