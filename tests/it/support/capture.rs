//! A TLS capture server on loopback: it records every request exactly as it arrived
//! (method, request target, headers in order, body bytes, and the SNI name the client
//! asked for) and answers each with a scripted JSON body, or the default one. Its
//! certificate comes from the committed test CA in `tests/fixtures/tls/` (see
//! `generate.sh` there), which covers 127.0.0.1 and every host name the Fides connector
//! files in `config/fides/` use, so the sidecar trusts it through `tls.ca_file` and the
//! real host names reach it through DNS overrides.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The test CA that signed the capture server's certificate (give it to `tls.ca_file`).
pub fn ca_file() -> PathBuf {
    fixtures().join("ca.pem")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

/// One request as the server received it (with its `sni`).
pub type Captured = super::serve::Received;

#[derive(Default)]
struct Inner {
    script: VecDeque<serde_json::Value>,
    default: serde_json::Value,
    requests: Vec<Captured>,
    /// How long each answer waits (so concurrent requests overlap).
    delay: Duration,
}

#[derive(Clone)]
pub struct Capture {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Capture {
    /// Starts a server answering `default` (status 200, JSON) to every request.
    pub async fn start(default: serde_json::Value) -> Capture {
        Capture::serve(default, server_config(None)).await
    }

    /// [`Capture::start`] that also speaks HTTP/2 (offered first by ALPN): each request
    /// records its `version` (`HTTP/2` or `HTTP/1.1`), the `connection` it came on (0, 1,
    /// … in accept order), and, for HTTP/2, its `:authority` as a first header.
    pub async fn start_h2(default: serde_json::Value) -> Capture {
        let mut config = server_config(None);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Capture::serve(default, config).await
    }

    /// Each answer from now on waits `delay` first.
    pub fn delay(&self, delay: Duration) {
        self.inner.lock().unwrap().delay = delay;
    }

    /// [`Capture::start`] that completes a TLS handshake only with a client certificate
    /// signed by `client_ca` (PEM file): every request it records came with one.
    pub async fn start_requiring_client_cert(
        default: serde_json::Value,
        client_ca: &std::path::Path,
    ) -> Capture {
        Capture::serve(default, server_config(Some(client_ca))).await
    }

    async fn serve(default: serde_json::Value, config: rustls::ServerConfig) -> Capture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            default,
            ..Inner::default()
        }));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let state = Arc::clone(&inner);
        tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = Arc::clone(&state);
                let connection = accepted;
                accepted += 1;
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        let sni = sni.clone();
                        async move {
                            let response = handle(state, sni, connection, req).await;
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = if h2 {
                        let executor = hyper_util::rt::TokioExecutor::new();
                        hyper::server::conn::http2::Builder::new(executor)
                            .serve_connection(TokioIo::new(tls), service)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await
                    };
                });
            }
        });
        Capture { addr, inner }
    }

    /// Queues bodies answered before the default one.
    pub fn script(&self, replies: impl IntoIterator<Item = serde_json::Value>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }

    /// Waits until at least `n` requests have arrived, and returns request `n - 1`.
    pub async fn nth(&self, n: usize) -> Captured {
        let deadline = tokio::time::Instant::now() + super::WAIT;
        while self.count() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the capture server saw {} requests, expected {n}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.requests()[n - 1].clone()
    }
}

async fn handle(
    inner: Arc<Mutex<Inner>>,
    sni: Option<String>,
    connection: usize,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let version = format!("{:?}", req.version());
    let authority = (req.version() == http::Version::HTTP_2)
        .then(|| req.uri().authority().map(|a| a.to_string()))
        .flatten();
    let mut r = super::serve::receive(req).await;
    if let Some(authority) = authority {
        r.headers.insert(0, (":authority".to_owned(), authority));
    }
    let (reply, delay) = {
        let mut i = inner.lock().unwrap();
        i.requests.push(Captured {
            sni,
            version,
            connection,
            ..r
        });
        let default = i.default.clone();
        (i.script.pop_front().unwrap_or(default), i.delay)
    };
    tokio::time::sleep(delay).await;
    super::serve::json_response(200, reply.to_string())
}

/// The server certificate of the committed test CA; with `client_ca`, client
/// certificates it signed are required.
fn server_config(client_ca: Option<&std::path::Path>) -> rustls::ServerConfig {
    let pem = std::fs::read(fixtures().join("server.pem")).expect("server.pem");
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key_pem = std::fs::read(fixtures().join("server.key")).expect("server.key");
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .expect("key")
        .expect("a private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(ca).expect("client CA");
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots.add(cert.expect("client CA certificate")).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}
