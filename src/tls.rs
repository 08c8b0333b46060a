//! The rustls client configuration shared by upstream connections and token requests:
//! the webpki roots plus the extra PEM roots of `tls.ca_file`; the same presenting a
//! connection's client certificate (`tls_client_auth`).

use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("CA file {path} holds no usable PEM certificate")]
    Empty { path: String },
    #[error("CA file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Builds the client config (no ALPN: the connectors add their own) with the webpki roots and `ca_file`'s certificates.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| TlsError::Invalid {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| TlsError::Invalid {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError::Empty { path: shown });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            path: String::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `config` presenting `identity`, a client certificate and its key, to every server that
/// asks for one (`tls_client_auth`: the token endpoint, and the upstream when asked).
pub fn presenting(
    config: &rustls::ClientConfig,
    identity: Arc<rustls::sign::CertifiedKey>,
) -> rustls::ClientConfig {
    let mut config = config.clone();
    config.client_auth_cert_resolver = Arc::new(Presents(identity));
    config
}

/// Presents one client certificate to every server that asks for one.
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _root_hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS failure somewhere in `error`'s chain, in words an operator can act on (rustls
/// names them `UnknownIssuer`, `CaUsedAsEndEntity`, …); None when the chain holds none.
pub fn in_words(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = unwrap_io(e).downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        current = e.source();
    }
    None
}

/// The error inside (possibly nested) `io::Error`s — rustls errors travel in them, and an
/// io::Error's `source` skips the error it wraps — and inside the `Arc`s the redis client
/// keeps its causes in (whose `source` skips them too).
fn unwrap_io<'e>(
    mut e: &'e (dyn std::error::Error + 'static),
) -> &'e (dyn std::error::Error + 'static) {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    loop {
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            e = inner;
        } else if let Some(shared) = e.downcast_ref::<Shared>() {
            e = &**shared;
        } else {
            return e;
        }
    }
}

fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let what = match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => "the server's certificate is not signed by an authority tokenwarden trusts (add that CA with tls.ca_file)".to_owned(),
            C::NotValidForName | C::NotValidForNameContext { .. } => "the server's certificate is not valid for this host name".to_owned(),
            C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".to_owned(),
            C::NotValidYet | C::NotValidYetContext { .. } => "the server's certificate is not valid yet (check this machine's clock)".to_owned(),
            C::Revoked => "the server's certificate has been revoked".to_owned(),
            C::BadSignature => "the server's certificate has a bad signature".to_owned(),
            C::BadEncoding => "the server's certificate cannot be decoded".to_owned(),
            C::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
                "the server presents a CA certificate as its own; it must present a certificate issued by a CA".to_owned()
            }
            other => format!("the server's certificate was refused ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => format!("the server ended the TLS handshake ({alert:?} alert)"),
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".to_owned(),
        rustls::Error::PeerIncompatible(why) => format!("the server's TLS is incompatible ({why:?})"),
        rustls::Error::InvalidMessage(_) | rustls::Error::PeerMisbehaved(_) => {
            "the server does not speak TLS correctly (is it plain http?)".to_owned()
        }
        other => format!("TLS failed: {other}"),
    };
    format!("TLS: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_read_as_words_through_io_errors() {
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown);
        let io = std::io::Error::other(io); // as reqwest nests them
        let words = in_words(&io).unwrap();
        assert!(words.contains("not signed by an authority"), "{words}");
        assert!(!words.contains("UnknownIssuer"), "{words}");
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(in_words(&expired).unwrap().contains("expired"));
        assert_eq!(in_words(&std::io::Error::other("plain")), None);
        // As the redis client keeps its cause: behind an Arc, whose source skips it.
        let shared: std::sync::Arc<dyn std::error::Error + Send + Sync> =
            std::sync::Arc::new(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            ));
        assert!(in_words(&shared)
            .unwrap()
            .contains("not signed by an authority"));
    }
}
