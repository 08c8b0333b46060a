//! Minting the certificates interception serves, off the request path: for each configured
//! host, an intermediate signed by the persisted [`Root`] whose name constraints permit
//! only that host, and one leaf (its own EC P-256 key, `serverAuth`, short validity) signed
//! by it, ready as a rustls `ServerConfig` (ALPN `h2, http/1.1`) that presents the two. One
//! intermediate per host keeps each chain small and lets a host come or go without minting
//! the others again (10,000 runtime connections may bring 10,000 hosts): [`mint_host`].
//! [`mint`] runs at start and again every [`RENEW_EVERY`] (the app's renewal task); nothing
//! here is called for a request, and a host that is not configured never gets a
//! certificate.

use super::{CaError, Root};
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

/// Lifetime of a leaf: short, so a leaked one soon stops working.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of the intermediate (it outlives the leaves it signs).
pub const INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(2 * 24 * 3600);
/// How often the intermediate and leaves are minted again (well before they expire).
pub const RENEW_EVERY: Duration = Duration::from_secs(12 * 3600);
/// How far `notBefore` is set in the past, for clients whose clocks run behind.
pub const BACKDATE: Duration = Duration::from_secs(300);
/// An intermediate's common name.
const INTERMEDIATE_NAME: &str = "tokenwarden interception (one configured host only)";
/// The common name of a leaf for an IP address (not a host name, so no client checks it).
const IP_LEAF_NAME: &str = "tokenwarden interception leaf";
/// The DNS subtree permitted when no configured host is a name: the reserved `.invalid`
/// (RFC 6761), so the intermediate cannot sign a real name either.
const NO_NAME: &str = "invalid";
/// Prefix length of a name constraint for one IPv4 address.
const V4_HOST_PREFIX: u8 = 32;
/// Prefix length of a name constraint for one IPv6 address.
const V6_HOST_PREFIX: u8 = 128;
/// The one application protocol an intercepted client may speak.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// HTTP/2's ALPN name: offered first, so an h2-only client (gRPC) can connect.
pub const ALPN_H2: &[u8] = b"h2";

/// The TLS server configuration for each configured host (lower case). A persistent map:
/// adding or removing one host ([`Minted::with`], [`Minted::without`]) shares the rest.
#[derive(Clone, Default)]
pub struct Minted {
    pub by_host: imbl::HashMap<String, Arc<ServerConfig>>,
}

impl Minted {
    /// With `host`'s own intermediate and leaf, minted now.
    pub fn with(&self, root: &Root, host: &str) -> Result<Minted, CaError> {
        let mut next = self.clone();
        next.by_host
            .insert(host.to_ascii_lowercase(), Arc::new(mint_host(root, host)?));
        Ok(next)
    }

    /// Without `host`'s.
    pub fn without(&self, host: &str) -> Minted {
        let mut next = self.clone();
        next.by_host.remove(&host.to_ascii_lowercase());
        next
    }
}

/// The certificates of every host in `hosts`.
pub fn mint(root: &Root, hosts: &[String]) -> Result<Minted, CaError> {
    let mut by_host = imbl::HashMap::new();
    for host in hosts {
        by_host.insert(host.to_ascii_lowercase(), Arc::new(mint_host(root, host)?));
    }
    Ok(Minted { by_host })
}

/// `host`'s intermediate (signed by the root, permitting only `host`) and leaf, as the
/// server configuration that presents them.
pub fn mint_host(root: &Root, host: &str) -> Result<ServerConfig, CaError> {
    let now = time::OffsetDateTime::now_utc();
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(INTERMEDIATE_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(constraints(&[host.to_owned()]));
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + INTERMEDIATE_VALIDITY;
    let intermediate = params.signed_by(&key, &root.issuer)?.der().clone();
    let issuer = Issuer::new(params, key);
    leaf(&issuer, &intermediate, host, now)
}

/// Permitted: exactly the configured hosts (a DNS name permits its subdomains too, which
/// no client is sent to: only a configured host gets a leaf). Without an IP host, every
/// IP address is excluded; without a host name, only `.invalid` names are permitted.
fn constraints(hosts: &[String]) -> NameConstraints {
    let mut permitted = Vec::new();
    for host in hosts {
        permitted.push(match host.parse::<IpAddr>() {
            Ok(ip @ IpAddr::V4(_)) => {
                GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, V4_HOST_PREFIX))
            }
            Ok(ip @ IpAddr::V6(_)) => {
                GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, V6_HOST_PREFIX))
            }
            Err(_) => GeneralSubtree::DnsName(host.clone()),
        });
    }
    if !permitted
        .iter()
        .any(|s| matches!(s, GeneralSubtree::DnsName(_)))
    {
        permitted.push(GeneralSubtree::DnsName(NO_NAME.to_owned()));
    }
    let mut excluded = Vec::new();
    if !permitted
        .iter()
        .any(|s| matches!(s, GeneralSubtree::IpAddress(_)))
    {
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            0,
        )));
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            0,
        )));
    }
    NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: excluded,
    }
}

/// One host's leaf and the server configuration that presents it with the intermediate.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    intermediate: &CertificateDer<'static>,
    host: &str,
    now: time::OffsetDateTime,
) -> Result<ServerConfig, CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    // An IP address as the common name would be checked against the DNS constraints by
    // OpenSSL (and fail them): the subjectAltName carries the address.
    let (name, san) = match host.parse::<IpAddr>() {
        Ok(ip) => (IP_LEAF_NAME, SanType::IpAddress(ip)),
        Err(_) => (host, SanType::DnsName(host.try_into()?)),
    };
    params.distinguished_name = common_name(name);
    params.subject_alt_names = vec![san];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + LEAF_VALIDITY;
    let cert = params.signed_by(&key, issuer)?;
    let chain = vec![cert.der().clone(), intermediate.clone()];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let invalid = |e: rustls::Error| CaError::Invalid {
        path: host.to_owned(),
        reason: e.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(invalid)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(config)
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leaf_per_configured_host_and_none_other() {
        let dir = tempfile::tempdir().unwrap();
        let files = super::super::init(dir.path()).unwrap();
        let root = Root::load(&files.cert, &files.key).unwrap();
        let hosts = vec!["api.example.com".to_owned(), "10.0.0.7".to_owned()];
        let minted = mint(&root, &hosts).unwrap();
        let mut names: Vec<_> = minted.by_host.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["10.0.0.7", "api.example.com"]);
        for config in minted.by_host.values() {
            assert_eq!(
                config.alpn_protocols,
                [ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
            );
        }
        // A host comes and goes alone; the others keep their certificates.
        let more = minted.with(&root, "Other.example").unwrap();
        assert_eq!(more.by_host.len(), 3);
        let kept = |m: &Minted| Arc::clone(&m.by_host["api.example.com"]);
        assert!(Arc::ptr_eq(&kept(&minted), &kept(&more)));
        let less = more.without("other.example");
        assert_eq!(less.by_host.len(), 2);
        assert!(Arc::ptr_eq(&kept(&minted), &kept(&less)));
    }

    #[test]
    fn the_constraints_permit_only_the_hosts_and_exclude_ips_without_an_ip_host() {
        let c = constraints(&["a.example".to_owned()]);
        assert_eq!(
            c.permitted_subtrees,
            [GeneralSubtree::DnsName("a.example".into())]
        );
        assert_eq!(c.excluded_subtrees.len(), 2);
        let c = constraints(&["127.0.0.1".to_owned()]);
        assert!(c.excluded_subtrees.is_empty());
        assert!(c
            .permitted_subtrees
            .contains(&GeneralSubtree::DnsName(NO_NAME.into())));
        assert!(matches!(
            c.permitted_subtrees[0],
            GeneralSubtree::IpAddress(_)
        ));
    }
}
