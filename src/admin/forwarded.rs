//! Whether an admin caller is on loopback when a reverse proxy may stand in between
//! (issue 20.8).
//!
//! A proxy on the same host connects from loopback, so its peer address says nothing about
//! the client. A request that carries a header only proxies add (`Forwarded`,
//! `X-Forwarded-*`, `X-Real-IP`, `Via`) was forwarded, so by default it is not a loopback
//! caller at all, whatever the headers say (it needs the admin token). When
//! `admin.trusted_proxies` names its peer, the client is the one the headers name: in each of
//! `Forwarded`, `X-Forwarded-For` and `X-Real-IP` the rightmost address that is not a trusted
//! proxy (the leftmost when all are), as a proxy that appends to the header leaves it. Every
//! such header present must name a loopback client: the most cautious reading, so a header
//! the proxy passes through untouched from the client cannot override one the proxy set. A
//! trusted proxy's request that names no client is judged by the proxy's own address.

use http::{header, HeaderMap};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The headers by which proxies name the client they forward for.
const FORWARDING: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];
/// The prefix of the other headers proxies add (`X-Forwarded-Proto`, `-Host`, …).
const X_FORWARDED: &str = "x-forwarded-";

/// Whether the caller of a request from `peer` with `headers` is on loopback, given the
/// `proxies` whose forwarding headers are believed.
pub(super) fn loopback_caller(proxies: &[IpNet], headers: &HeaderMap, peer: SocketAddr) -> bool {
    // `to_canonical`: a v4 peer on a dual-stack listener shows as ::ffff:127.0.0.1.
    let peer = peer.ip().to_canonical();
    if !was_forwarded(headers) {
        return peer.is_loopback();
    }
    is_trusted(proxies, peer)
        && FORWARDING
            .into_iter()
            .filter(|name| headers.contains_key(*name))
            .all(|name| client(name, headers, proxies).is_some_and(|ip| ip.is_loopback()))
}

/// Whether `headers` hold one that only a proxy adds.
fn was_forwarded(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        FORWARDING.contains(&name.as_str())
            || name.as_str().starts_with(X_FORWARDED)
            || name == header::VIA
    })
}

fn is_trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// The client header `name` names: the rightmost hop that is not a trusted proxy, or the
/// leftmost when all are. None when it names no hop, or a hop up to that one is not an
/// address (`unknown`, an obfuscated identifier, a `Forwarded` element without `for`).
fn client(name: &str, headers: &HeaderMap, proxies: &[IpNet]) -> Option<IpAddr> {
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        for element in value.to_str().ok()?.split(',') {
            let hop = if name == "forwarded" {
                for_parameter(element)
            } else {
                Some(element)
            };
            hops.push(hop.and_then(address));
        }
    }
    let mut leftmost = None;
    for hop in hops.into_iter().rev() {
        let ip = hop?.to_canonical();
        if !is_trusted(proxies, ip) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    leftmost
}

/// The `for` parameter of one `Forwarded` element (RFC 7239 §4).
fn for_parameter(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then_some(value)
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`, possibly quoted.
fn address(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    let v6 = text.strip_prefix('[')?.strip_suffix(']')?;
    v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    const LOOPBACK: &str = "127.0.0.1:40000";
    const PUBLIC: &str = "203.0.113.7:40000";

    #[test]
    fn without_forwarding_headers_the_peer_decides() {
        let none = HeaderMap::new();
        assert!(loopback_caller(&[], &none, LOOPBACK.parse().unwrap()));
        assert!(loopback_caller(
            &[],
            &none,
            "[::ffff:127.0.0.1]:1".parse().unwrap()
        ));
        assert!(!loopback_caller(&[], &none, PUBLIC.parse().unwrap()));
    }

    #[test]
    fn a_forwarded_request_from_an_untrusted_peer_is_never_loopback() {
        let peer = LOOPBACK.parse().unwrap();
        for name in FORWARDING {
            let h = headers(&[(name, "127.0.0.1")]);
            assert!(!loopback_caller(&[], &h, peer), "{name}");
            assert!(!loopback_caller(&nets(&["10.0.0.0/8"]), &h, peer), "{name}");
        }
        // Other headers only a proxy adds mark a forwarded request too.
        for (name, value) in [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "tw.example"),
            ("via", "1.1 nginx"),
        ] {
            let h = headers(&[(name, value)]);
            assert!(!loopback_caller(&[], &h, peer), "{name}");
            // From a trusted proxy that names no client: the proxy's own address decides.
            assert!(
                loopback_caller(&nets(&["127.0.0.1/32"]), &h, peer),
                "{name}"
            );
        }
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let proxies = nets(&["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
        let peer: SocketAddr = LOOPBACK.parse().unwrap();
        let loopback =
            |pairs: &[(&'static str, &str)]| loopback_caller(&proxies, &headers(pairs), peer);
        assert!(loopback(&[("x-forwarded-for", "127.0.0.1")]));
        assert!(loopback(&[("x-forwarded-for", "127.0.0.1, 10.0.0.5")]));
        assert!(loopback(&[
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-for", "10.0.0.5")
        ]));
        assert!(loopback(&[("x-real-ip", "::1")]));
        assert!(loopback(&[(
            "forwarded",
            "for=\"[::1]:4711\";proto=https, for=10.0.0.5"
        )]));
        assert!(loopback(&[("forwarded", "For=127.0.0.1:80")]));
        // The rightmost untrusted hop is the client, not what the client wrote before it.
        assert!(!loopback(&[("x-forwarded-for", "127.0.0.1, 203.0.113.7")]));
        assert!(!loopback(&[("x-forwarded-for", "203.0.113.7, 127.0.0.1")]));
        assert!(!loopback(&[(
            "forwarded",
            "for=127.0.0.1, for=203.0.113.7"
        )]));
        // Every header must agree.
        assert!(!loopback(&[
            ("x-forwarded-for", "127.0.0.1"),
            ("x-real-ip", "203.0.113.7")
        ]));
        // Unknown or unreadable: not loopback.
        for value in [
            "unknown",
            "_hidden",
            "",
            "127.0.0.1 203.0.113.7",
            "127.0.0.1:x",
        ] {
            assert!(!loopback(&[("x-forwarded-for", value)]), "{value:?}");
        }
        assert!(!loopback(&[("forwarded", "proto=https")]));
        assert!(!loopback(&[("forwarded", "for=unknown")]));
        // A trusted proxy on another host forwarding for a public client.
        let far: SocketAddr = "10.0.0.5:1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert!(!loopback_caller(&proxies, &h, far));
    }

    #[test]
    fn addresses_as_proxies_write_them() {
        for (text, ip) in [
            ("192.0.2.1", "192.0.2.1"),
            (" 192.0.2.1:4711", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("\"[2001:db8::1]:4711\"", "2001:db8::1"),
        ] {
            assert_eq!(address(text), Some(ip.parse().unwrap()), "{text}");
        }
        assert_eq!(address("unknown"), None);
    }
}
