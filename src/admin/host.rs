//! The names the admin listener answers to (issue 20.3, DNS rebinding) and the origins
//! that may act through it (20.4).
//!
//! A page whose name an attacker re-points at 127.0.0.1 (DNS rebinding) is, to the browser,
//! same-origin with this listener: Fetch Metadata says `same-origin` and `Origin` is the
//! attacker's own name. What gives it away is `Host`, which carries that name. So every route
//! but the probes answers 421 unless `Host` (or an absolute-form target's authority, which
//! takes precedence, RFC 9112 §3.2.2) names the listener: its IP literal (any IP literal when
//! it listens on 0.0.0.0 or `[::]`: a browser sends one only when the user typed it, never
//! for a resolved name), `localhost`, or `admin.public_url`'s host; any port, since a
//! port-forward may change it. The probes (`/healthz`, `/readyz`, `/metrics`) only read what
//! is no secret and answer whatever name a kubelet or Prometheus uses.
//!
//! A present `Origin` on a route that acts must be the listener's own: `http://` or
//! `https://` with the request's `Host`, or `admin.public_url`'s origin.

use super::{json, AdminBody};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The listener's own names: its bound address and `admin.public_url`'s origin (built per
/// request from the running config, since a reload may change `public_url`).
#[derive(Debug, Clone)]
pub struct OwnNames {
    /// The address the listener is bound to; unspecified: any IP literal is its own.
    listen: IpAddr,
    /// `admin.public_url`'s origin.
    public: Option<Origin>,
}

/// A web origin: scheme and host in lower case (an IPv6 host in brackets), and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an absolute `http(s)://` URL; None for anything else.
    fn of(text: &str) -> Option<Origin> {
        let uri: Uri = text.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = uri.authority()?;
        Some(Origin {
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default),
            scheme,
        })
    }
}

impl OwnNames {
    /// The names of a listener bound to `listen`, with `admin.public_url` `public_url`.
    pub fn new(listen: IpAddr, public_url: Option<&str>) -> OwnNames {
        OwnNames {
            listen: listen.to_canonical(),
            public: public_url.and_then(Origin::of),
        }
    }

    /// Whether `host`, a `Host` value (`name[:port]`, `[v6][:port]`), names this listener.
    pub fn is_own_host(&self, host: &str) -> bool {
        let Some(name) = hostname(host) else {
            return false;
        };
        if name.eq_ignore_ascii_case("localhost")
            || self
                .public
                .as_ref()
                .is_some_and(|p| name.eq_ignore_ascii_case(&p.host))
        {
            return true;
        }
        ip_literal(name)
            .is_some_and(|ip| self.listen.is_unspecified() || ip.to_canonical() == self.listen)
    }

    /// Whether a request's `Origin` is the listener's own: its scheme http or https and
    /// its authority the request's `host`, or `admin.public_url`'s origin. `null` and
    /// anything that is not an origin are not.
    pub fn is_own_origin(&self, origin: &HeaderValue, host: Option<&str>) -> bool {
        let Some(text) = origin.to_str().ok() else {
            return false;
        };
        let Some(parsed) = Origin::of(text) else {
            return false;
        };
        let authority = text.split_once("://").map_or("", |(_, a)| a);
        host.is_some_and(|h| authority.eq_ignore_ascii_case(h))
            || self.public.as_ref() == Some(&parsed)
    }
}

/// The authority a request is addressed to: an absolute-form target's (without userinfo),
/// else the one `Host` header. None without one, or with several.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    if let Some(authority) = req.uri().authority() {
        return authority.as_str().rsplit('@').next();
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().ok(),
        _ => None,
    }
}

/// 421 Misdirected Request, for a `Host` that is not one of the listener's own names. The
/// body does not repeat the name.
pub fn misdirected() -> Response<AdminBody> {
    json(
        StatusCode::MISDIRECTED_REQUEST,
        &json!({"error": "misdirected_request",
        "message": "this listener answers only to its own IP address, localhost and admin.public_url's host (DNS rebinding protection): use one of those, or set admin.public_url to the name you reach it by"}),
    )
}

/// The host of a `Host` value without its port (an IPv6 literal keeps its brackets); None
/// when the port is not a number or a bare IPv6 literal lacks brackets.
fn hostname(host: &str) -> Option<&str> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        let port = if rest.is_empty() {
            None
        } else {
            Some(rest.strip_prefix(':')?)
        };
        (&host[..=end], port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let digits = port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()));
    (digits && !name.is_empty()).then_some(name)
}

/// An IPv4 literal, or an IPv6 literal in brackets.
fn ip_literal(name: &str) -> Option<IpAddr> {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => name.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(listen: &str, public: Option<&str>) -> OwnNames {
        OwnNames::new(listen.parse().unwrap(), public)
    }

    #[test]
    fn own_hosts_are_the_listen_address_localhost_and_the_public_host() {
        let n = names("127.0.0.1", Some("https://TW.example/base"));
        for own in [
            "127.0.0.1",
            "127.0.0.1:9090",
            "localhost",
            "LOCALHOST:1",
            "tw.example",
            "tw.example:8443",
            "[::ffff:127.0.0.1]:9090",
        ] {
            assert!(n.is_own_host(own), "{own}");
        }
        for other in [
            "rebind.example",
            "localhost.rebind.example",
            "127.0.0.1.nip.io:9090",
            "127.0.0.2",
            "[::1]",
            "::1",
            "127.0.0.1:90x",
            "127.1",
            "2130706433",
            "localhost.",
            "",
            ":9090",
            "[::1",
            "[::1]x",
        ] {
            assert!(!n.is_own_host(other), "{other}");
        }
    }

    #[test]
    fn an_unspecified_listener_owns_every_ip_literal_but_no_other_name() {
        for listen in ["0.0.0.0", "::"] {
            let n = names(listen, None);
            for own in ["10.1.2.3:9090", "[fd00::1]:9090", "[::1]", "localhost:9090"] {
                assert!(n.is_own_host(own), "{listen}: {own}");
            }
            for other in ["pod.example:9090", "10.1.2.3.nip.io", "tw.example"] {
                assert!(!n.is_own_host(other), "{listen}: {other}");
            }
        }
        let v6 = names("::1", Some("http://[FD00::7]:9000"));
        assert!(v6.is_own_host("[::1]:9090") && v6.is_own_host("[fd00::7]"));
        assert!(!v6.is_own_host("127.0.0.1"));
    }

    #[test]
    fn own_origins_are_the_hosts_own_or_the_public_urls() {
        let n = names("127.0.0.1", Some("https://tw.example/"));
        let own = |origin: &str, host: Option<&str>| {
            n.is_own_origin(&HeaderValue::from_str(origin).unwrap(), host)
        };
        let host = Some("127.0.0.1:9090");
        assert!(own("http://127.0.0.1:9090", host));
        assert!(own("https://127.0.0.1:9090", host), "TLS ended before us");
        assert!(own("https://tw.example", host));
        assert!(own("HTTPS://TW.EXAMPLE:443", host));
        for other in [
            "http://127.0.0.1:9091",
            "http://localhost:9090",
            "http://tw.example",
            "https://tw.example:8443",
            "https://evil.example",
            "null",
            "ftp://127.0.0.1:9090",
            "",
        ] {
            assert!(!own(other, host), "{other}");
        }
        assert!(!own("http://127.0.0.1:9090", None));
    }
}
