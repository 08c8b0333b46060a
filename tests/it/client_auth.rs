//! Client authentication without a shared secret (issue 26, docs: /work/spec §2), against the
//! real oidc-provider (tests/oidc/server.mjs): `private_key_jwt` (RFC 7523 §2.2) with an RSA
//! and an EC P-256 key, and `tls_client_auth` (RFC 8705 §2.1) over HTTPS with a client
//! certificate, each for client credentials and for an authorization code with a refresh;
//! a key or certificate the provider does not accept fails the connection once, shown and
//! logged, never retried in a loop; and `tokenwarden check` refuses a key that cannot sign
//! with its algorithm and a certificate that is not its key's, placed at the field.
//!
//! Keys and certificates are minted at test time: the certificates with rcgen (the Redis
//! tests' [`Pki`]: a CA, a certificate for 127.0.0.1, a client certificate), the RSA keys by
//! Node (ring cannot generate RSA keys), all written mode 0600 (tokenwarden refuses a
//! `${file:}` others may read). Needs Node.js and `npm ci --prefix tests/oidc`.

use crate::cli::EXIT_INVALID_CONFIG;
use crate::oidc::{PUBLIC_URL, REDIRECT_URI};
use crate::support::authz::{authorize, callback};
use crate::support::logs::Logs;
use crate::support::oidc::{login, stat, Provider, ProviderTls};
use crate::support::redis_topology::Pki;
use crate::support::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Access-token lifetime at the provider: the authorization-code flows see a refresh soon.
const ACCESS_TTL: u64 = 3;
/// The `kid` of the RSA client's registered key (server.mjs's default).
const RSA_KID: &str = "rsa-1";
/// The subject DN of [`Pki::client_cert`], registered for the `mtls` client.
const CLIENT_DN: &str = "CN=tokenwarden test client";
/// The subject DN of [`Pki::server_cert`] (same CA, `clientAuth` too): the wrong client.
const SERVER_DN: &str = "CN=localhost";
/// A client assertion's `client_assertion_type`.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a terminal failure is watched for a retry.
const NO_RETRY_WATCH: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// One test's key material in a temp dir, every file mode 0600: the [`Pki`]'s client and
/// server certificates and keys (`client.pem`, `client.key` — EC P-256, PKCS#8 —,
/// `server.pem`, `server.key`), and two RSA keys made by Node: `rsa.pem` (PKCS#8),
/// `rsa-pkcs1.pem` and `rsa.jwk` (the same key as PKCS#1 and as a private JWK with kid
/// [`RSA_KID`]), and `other-rsa.pem` (a key no client registered).
struct Keys {
    dir: tempfile::TempDir,
    pki: Arc<Pki>,
}

impl Keys {
    fn mint() -> Keys {
        let dir = tempfile::tempdir().expect("tempdir for the keys");
        let pki = Pki::mint();
        for (name, from) in [
            ("client.pem", pki.client_cert()),
            ("client.key", pki.client_key()),
            ("server.pem", pki.server_cert()),
            ("server.key", pki.server_key()),
        ] {
            std::fs::copy(&from, dir.path().join(name)).unwrap();
        }
        let script = format!(
            r#"import {{ generateKeyPairSync }} from 'node:crypto';
import {{ writeFileSync }} from 'node:fs';
const dir = {dir:?};
const rsa = () => generateKeyPairSync('rsa', {{ modulusLength: 2048 }}).privateKey;
const key = rsa();
writeFileSync(`${{dir}}/rsa.pem`, key.export({{ type: 'pkcs8', format: 'pem' }}));
writeFileSync(`${{dir}}/rsa-pkcs1.pem`, key.export({{ type: 'pkcs1', format: 'pem' }}));
writeFileSync(`${{dir}}/rsa.jwk`, JSON.stringify({{ ...key.export({{ format: 'jwk' }}), kid: '{RSA_KID}' }}));
writeFileSync(`${{dir}}/other-rsa.pem`, rsa().export({{ type: 'pkcs8', format: 'pem' }}));
"#,
            dir = dir.path().display().to_string()
        );
        let out = std::process::Command::new("node")
            .args(["--input-type=module", "-e", &script])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `node` ({e}): install Node.js"));
        assert!(
            out.status.success(),
            "node could not make the RSA keys: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Keys { dir, pki }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `${file:<absolute path of name>}`.
    fn file(&self, name: &str) -> String {
        format!("${{file:{}}}", self.path(name).display())
    }

    /// The provider over HTTPS with the test PKI (server certificate for 127.0.0.1; client
    /// certificates must chain to its CA).
    fn provider_tls(&self) -> ProviderTls {
        ProviderTls {
            cert: self.pki.server_cert(),
            key: self.pki.server_key(),
            ca: self.pki.ca_pem(),
        }
    }
}

/// The provider with the `pkjwt-rsa` client on `rsa.pem` and `pkjwt-ec` on `client.key`
/// (its certificate `client.pem`), over plain HTTP.
async fn pkjwt_provider(keys: &Keys) -> Provider {
    let (rsa, ec, ec_cert) = (
        keys.path("rsa.pem"),
        keys.path("client.key"),
        keys.path("client.pem"),
    );
    Provider::start_with(
        REDIRECT_URI,
        ACCESS_TTL,
        None,
        &[
            ("OIDC_PKJWT_RSA_KEY", rsa.to_str().unwrap()),
            ("OIDC_PKJWT_EC_KEY", ec.to_str().unwrap()),
            ("OIDC_PKJWT_EC_CERT", ec_cert.to_str().unwrap()),
        ],
    )
    .await
}

/// The provider over HTTPS with the `mtls` client registered for [`CLIENT_DN`].
async fn mtls_provider(keys: &Keys) -> Provider {
    Provider::start_with(
        REDIRECT_URI,
        ACCESS_TTL,
        Some(keys.provider_tls()),
        &[("OIDC_TLS_CLIENT_DN", CLIENT_DN)],
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------

/// A connection's grant.
#[derive(Clone, Copy)]
enum Flow {
    ClientCredentials,
    AuthorizationCode,
}

/// A connection `key` from the echo upstream `upstream` to the provider's `/token` (and
/// `/auth`), as client `client_id` (its only secret) authenticating with `client_auth` (the
/// lines of the `client_auth:` mapping, indented six spaces). No body carries `client_id`
/// or a secret.
fn connection(
    key: &str,
    upstream: SocketAddr,
    provider: &Provider,
    client_id: &str,
    client_auth: &str,
    flow: Flow,
) -> String {
    let (scheme, host, issuer) = (provider.scheme(), provider.authority(), &provider.issuer);
    let at_provider =
        format!("            client_config: {{ protocol: {scheme}, host: \"{host}\" }}\n");
    let form =
        "            headers: [{ name: Content-Type, value: application/x-www-form-urlencoded }]\n";
    let (strategy, fields, requests) = match flow {
        Flow::ClientCredentials => (
            CLIENT_CREDENTIALS,
            String::new(),
            format!(
                "          token_request:\n            method: POST\n            path: /token\n{at_provider}{form}            body: '{{\"grant_type\": \"client_credentials\", \"scope\": \"api:read\"}}'\n"
            ),
        ),
        Flow::AuthorizationCode => (
            AUTHORIZATION_CODE,
            format!("    pkce: true\n    issuer: \"{issuer}\"\n"),
            format!(
                r#"          authorization_request:
            method: GET
            path: /auth
{at_provider}            query_params:
              - {{ name: client_id, value: <client_id> }}
              - {{ name: redirect_uri, value: <redirect_uri> }}
              - {{ name: response_type, value: code }}
              - {{ name: scope, value: "openid offline_access api:read" }}
              - {{ name: state, value: <state> }}
              - {{ name: prompt, value: consent }}
          token_request:
            method: POST
            path: /token
{at_provider}{form}            body: '{{"grant_type": "authorization_code", "code": "<code>", "redirect_uri": "<redirect_uri>"}}'
          refresh_request:
            method: POST
            path: /token
{at_provider}{form}            body: '{{"grant_type": "refresh_token", "refresh_token": "<refresh_token>"}}'
"#
            ),
        ),
    };
    format!(
        "  - key: {key}\n{fields}    client_auth:\n{client_auth}    secrets: {{ client_id: {client_id} }}\n    client_config:\n      protocol: http\n      host: \"{upstream}\"\n      authentication:\n        strategy: {strategy}\n        configuration:\n{requests}"
    )
}

/// A whole config: the admin's public URL (the provider's redirect URI), `tls.ca_file` when
/// given, and `connections`.
fn config(ca_file: Option<&Path>, connections: &[String]) -> String {
    let tls = ca_file
        .map(|ca| format!("tls:\n  ca_file: \"{}\"\n", ca.display()))
        .unwrap_or_default();
    format!(
        "admin:\n  listen: 127.0.0.1:0\n  public_url: {PUBLIC_URL}\n{tls}connections:\n{}",
        connections.concat()
    )
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// A request through the proxy to connection `key`: the `Authorization` the echo upstream
/// received, which must be `Bearer <a token the provider issued>`; returns the token.
async fn injected(sc: &Sidecar, provider: &Provider, key: &str) -> String {
    let (status, body) = sc.get(&format!("/{key}/resource")).await;
    assert_eq!(status, 200, "{body}; status {}", sc.status(key).await);
    let auth = echoed_authorization(&body)
        .unwrap_or_else(|| panic!("no Authorization reached the upstream: {body}"));
    let token = auth
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer token: {auth}"))
        .to_owned();
    let issued = provider.issued().await.access_tokens;
    assert!(
        issued.contains(&token),
        "the upstream saw {auth}, not a token the provider issued ({issued:?})"
    );
    token
}

/// Authorizes connection `key` as alice through the provider's login and consent pages;
/// the sidecar's callback must answer 200 and the connection become ready with a refresh
/// token.
async fn authorize_as_alice(sc: &Sidecar, provider: &Provider, key: &str) {
    let a = authorize(sc, key).await;
    assert!(
        a.url.starts_with(&format!("{}/auth?", provider.issuer)),
        "{}",
        a.url
    );
    let back = login(provider, &a.url, "alice").await;
    let page = callback(sc, back.query().unwrap()).await;
    assert_eq!(
        page.status,
        200,
        "{}; status {}",
        page.body,
        sc.status(key).await
    );
    let st = sc.wait_state(key, "ready").await;
    assert_eq!(st["has_refresh_token"], true, "offline_access: {st}");
}

/// Keeps requesting through connection `key` until the provider has answered a refresh
/// grant and the upstream sees the token it issued last (a new one).
async fn injected_after_a_refresh(sc: &Sidecar, provider: &Provider, key: &str) {
    let first = injected(sc, provider, key).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(ACCESS_TTL * 3 + 5);
    loop {
        let stats = provider.stats().await;
        let last = provider.issued().await.access_tokens.last().cloned();
        let now = injected(sc, provider, key).await;
        if stat(&stats, "grants", "refresh_token") >= 1
            && now != first
            && Some(&now) == last.as_ref()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refreshed token upstream; provider {stats}; status {}",
            sc.status(key).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every token request the provider saw authenticated with `method` only: no Basic header,
/// no `client_secret` (server.mjs names the first it finds, a secret before an assertion or
/// a certificate), and none failed.
fn only_method(stats: &Value, method: &str) {
    let methods: Vec<&String> = stats["auth_methods"].as_object().unwrap().keys().collect();
    assert_eq!(methods, [method], "{stats}");
    assert_eq!(
        stat(stats, "auth_methods", method),
        stats["token_requests"].as_u64().unwrap(),
        "{stats}"
    );
    assert_eq!(stats["errors"], json!({}), "{stats}");
}

/// The assertions of `client_id` as RFC 7523 §3 and the spec §2 want them: type
/// jwt-bearer, header `alg` and `kid` as given, iss = sub = client id, aud the token
/// endpoint, a 60-second lifetime, a `jti` never seen before. Returns how many there were.
fn check_assertions(
    assertions: &[Value],
    seen_jti: &mut HashSet<String>,
    token_endpoint: &str,
    client_id: &str,
    alg: &str,
    kid: Option<&str>,
) -> usize {
    let mine: Vec<&Value> = assertions
        .iter()
        .filter(|a| a["client_id"] == client_id)
        .collect();
    for a in &mine {
        assert_eq!(a["assertion_type"], JWT_BEARER, "{a}");
        let (header, claims) = (&a["header"], &a["claims"]);
        assert_eq!(header["alg"], alg, "{a}");
        assert_eq!(header.get("kid").and_then(Value::as_str), kid, "{a}");
        assert_eq!(claims["iss"], client_id, "{a}");
        assert_eq!(claims["sub"], client_id, "{a}");
        assert_eq!(claims["aud"], token_endpoint, "{a}");
        let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
        assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(60), "{a}");
        let jti = claims["jti"]
            .as_str()
            .unwrap_or_else(|| panic!("no jti: {a}"));
        assert!(seen_jti.insert(jti.to_owned()), "jti {jti} used twice: {a}");
    }
    mine.len()
}

// ---------------------------------------------------------------------------------------
// private_key_jwt
// ---------------------------------------------------------------------------------------

/// Client credentials with an RSA key (PKCS#8 PEM, alg by default RS256, kid given) and
/// with an EC P-256 key (alg by default ES256, no kid, its certificate's x5t); an
/// authorization code with the RSA key as a private JWK (kid from the JWK), alg PS256,
/// through the code exchange and a refresh. Every token reaches the upstream; every token
/// request carries a fresh assertion and no secret.
#[tokio::test]
async fn private_key_jwt_client_credentials_and_authorization_code() {
    let keys = Keys::mint();
    let provider = pkjwt_provider(&keys).await;
    let (rsa_echo, ec_echo, code_echo) = (
        Echo::start().await,
        Echo::start().await,
        Echo::start().await,
    );
    let yaml = config(
        None,
        &[
            connection(
                "rsa",
                rsa_echo.addr,
                &provider,
                "pkjwt-rsa",
                &format!(
                    "      method: private_key_jwt\n      key: {}\n      kid: {RSA_KID}\n",
                    keys.file("rsa.pem")
                ),
                Flow::ClientCredentials,
            ),
            connection(
                "ec",
                ec_echo.addr,
                &provider,
                "pkjwt-ec",
                &format!(
                    "      method: private_key_jwt\n      key: {}\n      certificate: {}\n",
                    keys.file("client.key"),
                    keys.file("client.pem")
                ),
                Flow::ClientCredentials,
            ),
            connection(
                "idp",
                code_echo.addr,
                &provider,
                "pkjwt-rsa",
                &format!(
                    "      method: private_key_jwt\n      key: {}\n      alg: PS256\n",
                    keys.file("rsa.jwk")
                ),
                Flow::AuthorizationCode,
            ),
        ],
    );
    let sc = Sidecar::start(&yaml).await;
    sc.wait_state("rsa", "ready").await;
    sc.wait_state("ec", "ready").await;
    injected(&sc, &provider, "rsa").await;
    injected(&sc, &provider, "ec").await;

    let cc = provider.assertions().await;
    let token_endpoint = format!("{}/token", provider.issuer);
    let mut jti = HashSet::new();
    assert_eq!(
        check_assertions(
            &cc,
            &mut jti,
            &token_endpoint,
            "pkjwt-rsa",
            "RS256",
            Some(RSA_KID)
        ),
        1,
        "{cc:?}"
    );
    assert_eq!(
        check_assertions(&cc, &mut jti, &token_endpoint, "pkjwt-ec", "ES256", None),
        1,
        "{cc:?}"
    );
    let ec = cc.iter().find(|a| a["client_id"] == "pkjwt-ec").unwrap();
    assert_eq!(ec["x5t_matches"], true, "x5t of client.pem: {ec}");

    authorize_as_alice(&sc, &provider, "idp").await;
    injected_after_a_refresh(&sc, &provider, "idp").await;
    // Stopped, so that no refresh runs between the counts compared below.
    sc.stop().await;
    let stats = provider.stats().await;
    only_method(&stats, "private_key_jwt");
    assert_eq!(stat(&stats, "grants", "authorization_code"), 1, "{stats}");
    assert_eq!(stat(&stats, "grants", "client_credentials"), 2, "{stats}");
    let code: Vec<Value> = provider.assertions().await.split_off(cc.len());
    let n = check_assertions(
        &code,
        &mut jti,
        &token_endpoint,
        "pkjwt-rsa",
        "PS256",
        Some(RSA_KID),
    );
    assert_eq!(
        n as u64,
        1 + stat(&stats, "grants", "refresh_token"),
        "one assertion per code exchange and refresh: {stats}"
    );
}

/// The same key as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`) signs too.
#[tokio::test]
async fn private_key_jwt_reads_a_pkcs1_rsa_key() {
    let keys = Keys::mint();
    let provider = pkjwt_provider(&keys).await;
    let echo = Echo::start().await;
    let yaml = config(
        None,
        &[connection(
            "rsa",
            echo.addr,
            &provider,
            "pkjwt-rsa",
            &format!(
                "      method: private_key_jwt\n      key: {}\n      alg: RS256\n      kid: {RSA_KID}\n",
                keys.file("rsa-pkcs1.pem")
            ),
            Flow::ClientCredentials,
        )],
    );
    let sc = Sidecar::start(&yaml).await;
    sc.wait_state("rsa", "ready").await;
    injected(&sc, &provider, "rsa").await;
    only_method(&provider.stats().await, "private_key_jwt");
    sc.stop().await;
}

/// Signed with a key the client never registered: the provider's `invalid_client` fails the
/// connection — on its status and in the log — and the token endpoint is not asked again.
#[tokio::test]
async fn private_key_jwt_with_a_wrong_key_fails_once_without_retrying() {
    let (logs, _capture) = Logs::capture();
    let keys = Keys::mint();
    let provider = pkjwt_provider(&keys).await;
    let echo = Echo::start().await;
    let yaml = config(
        None,
        &[connection(
            "api",
            echo.addr,
            &provider,
            "pkjwt-rsa",
            &format!(
                "      method: private_key_jwt\n      key: {}\n      kid: {RSA_KID}\n",
                keys.file("other-rsa.pem")
            ),
            Flow::ClientCredentials,
        )],
    );
    let sc = Sidecar::start(&yaml).await;
    terminal_invalid_client(&sc, &provider, &echo, &logs, "pkjwt-rsa").await;
    let stats = provider.stats().await;
    assert_eq!(
        stat(&stats, "auth_methods", "private_key_jwt"),
        1,
        "{stats}"
    );
    sc.stop().await;
}

/// Connection `api` (client `client_id`) fails with the provider's `invalid_client`: state
/// `failed`, the error in its status and in the log, a 503 to the app with nothing sent
/// upstream, and one token request only, also [`NO_RETRY_WATCH`] later.
async fn terminal_invalid_client(
    sc: &Sidecar,
    provider: &Provider,
    echo: &Echo,
    logs: &Logs,
    client_id: &str,
) {
    let st = sc.wait_state("api", "failed").await;
    let error = st["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("invalid_client"), "{st}");
    assert_eq!(st["has_token"], false, "{st}");
    let (status, body) = sc.get("/api/resource").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "no_token", "{body}");
    assert_eq!(echo.hits(), 0, "a request without a token went upstream");
    let stats = provider.stats().await;
    assert_eq!(stat(&stats, "clients", client_id), 1, "{stats}");
    assert_eq!(stat(&stats, "errors", "invalid_client"), 1, "{stats}");
    tokio::time::sleep(NO_RETRY_WATCH).await;
    let stats = provider.stats().await;
    assert_eq!(
        stats["token_requests"], 1,
        "the token endpoint was asked again after invalid_client: {stats}"
    );
    assert_eq!(sc.status("api").await["state"], "failed");
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("invalid_client") && l.contains("api")),
        "no log line names the connection and invalid_client:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------
// tls_client_auth
// ---------------------------------------------------------------------------------------

/// Over HTTPS (the provider's certificate trusted through `tls.ca_file`), client credentials
/// and an authorization code with a refresh, each token request presenting the client
/// certificate and no secret; tokenwarden adds `client_id` to bodies that lack it.
#[tokio::test]
async fn tls_client_auth_client_credentials_and_authorization_code() {
    let keys = Keys::mint();
    let provider = mtls_provider(&keys).await;
    assert!(
        provider.issuer.starts_with("https://"),
        "{}",
        provider.issuer
    );
    let (cc_echo, code_echo) = (Echo::start().await, Echo::start().await);
    let client_auth = format!(
        "      method: tls_client_auth\n      cert: {}\n      key: {}\n",
        keys.file("client.pem"),
        keys.file("client.key")
    );
    let yaml = config(
        Some(&keys.pki.ca_pem()),
        &[
            connection(
                "cc",
                cc_echo.addr,
                &provider,
                "mtls",
                &client_auth,
                Flow::ClientCredentials,
            ),
            connection(
                "idp",
                code_echo.addr,
                &provider,
                "mtls",
                &client_auth,
                Flow::AuthorizationCode,
            ),
        ],
    );
    let sc = Sidecar::start(&yaml).await;
    sc.wait_state("cc", "ready").await;
    injected(&sc, &provider, "cc").await;

    authorize_as_alice(&sc, &provider, "idp").await;
    injected_after_a_refresh(&sc, &provider, "idp").await;
    sc.stop().await;
    let stats = provider.stats().await;
    only_method(&stats, "tls_client_auth");
    let requests = stats["token_requests"].as_u64().unwrap();
    assert_eq!(
        stats["client_certificates"],
        json!({ CLIENT_DN: requests }),
        "every token request presented the client certificate: {stats}"
    );
    assert_eq!(stats["clients"], json!({ "mtls": requests }), "{stats}");
    assert_eq!(stat(&stats, "grants", "client_credentials"), 1, "{stats}");
    assert_eq!(stat(&stats, "grants", "authorization_code"), 1, "{stats}");
    assert!(stat(&stats, "grants", "refresh_token") >= 1, "{stats}");
    assert!(provider.assertions().await.is_empty());
}

/// A certificate from the right CA but for another subject: `invalid_client`, terminal, not
/// retried.
#[tokio::test]
async fn tls_client_auth_with_a_wrong_certificate_fails_once_without_retrying() {
    let (logs, _capture) = Logs::capture();
    let keys = Keys::mint();
    let provider = mtls_provider(&keys).await;
    let echo = Echo::start().await;
    let yaml = config(
        Some(&keys.pki.ca_pem()),
        &[connection(
            "api",
            echo.addr,
            &provider,
            "mtls",
            &format!(
                "      method: tls_client_auth\n      cert: {}\n      key: {}\n",
                keys.file("server.pem"),
                keys.file("server.key")
            ),
            Flow::ClientCredentials,
        )],
    );
    let sc = Sidecar::start(&yaml).await;
    terminal_invalid_client(&sc, &provider, &echo, &logs, "mtls").await;
    let stats = provider.stats().await;
    assert_eq!(
        stats["client_certificates"],
        json!({ SERVER_DN: 1 }),
        "{stats}"
    );
    sc.stop().await;
}

// ---------------------------------------------------------------------------------------
// Load-time checks (`tokenwarden check`)
// ---------------------------------------------------------------------------------------

/// A config with one client-credentials connection whose `client_auth` is `client_auth`
/// (six-space lines, starting on line 6).
fn check_config(client_auth: &str) -> String {
    format!(
        r#"store:
  key: "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
connections:
  - key: api
    client_auth:
{client_auth}    secrets: {{ client_id: the-client }}
    client_config:
      protocol: https
      host: api.example
      authentication:
        strategy: oauth2_client_credentials
        configuration:
          token_request:
            method: POST
            path: /token
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"grant_type": "client_credentials"}}'
"#
    )
}

/// `tokenwarden check` on `yaml` in `dir` → (exit code, stderr).
fn check(dir: &Path, yaml: &str) -> (Option<i32>, String) {
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (code, _, stderr) = crate::cli::run_check(&config, None);
    (code, stderr)
}

/// One refused `client_auth`, and the same one fixed.
struct Refusal {
    what: &'static str,
    bad: String,
    fixed: String,
    /// The fields the problem may be placed at, with their (line, column) in the file.
    at: &'static [(&'static str, u32, u32)],
    /// Words the message must contain (case-insensitive).
    says: &'static [&'static str],
}

/// A key that cannot sign with its `alg`, and a certificate that is not its key's (for the
/// `certificate` of private_key_jwt and the `cert`/`key` of tls_client_auth): `check` exits
/// 64 with exactly that one problem, placed at the file, line and field; the same config with
/// matching files passes.
#[test]
fn check_refuses_a_key_that_cannot_sign_and_a_certificate_of_another_key() {
    let keys = Keys::mint();
    let pkjwt = |key: &str, extra: &str| {
        format!(
            "      method: private_key_jwt\n      key: {}\n{extra}",
            keys.file(key)
        )
    };
    let mtls = |cert: &str, key: &str| {
        format!(
            "      method: tls_client_auth\n      cert: {}\n      key: {}\n",
            keys.file(cert),
            keys.file(key)
        )
    };
    let refusals = [
        Refusal {
            what: "an EC P-256 key with alg RS256",
            bad: pkjwt("client.key", "      alg: RS256\n"),
            fixed: pkjwt("client.key", "      alg: ES256\n"),
            at: &[("alg", 8, 7), ("key", 7, 7)],
            says: &["RS256"],
        },
        Refusal {
            what: "an RSA key with alg ES256",
            bad: pkjwt("rsa.pem", "      alg: ES256\n"),
            fixed: pkjwt("rsa.pem", "      alg: PS256\n"),
            at: &[("alg", 8, 7), ("key", 7, 7)],
            says: &["ES256"],
        },
        Refusal {
            what: "private_key_jwt with the certificate of another key",
            bad: pkjwt(
                "client.key",
                &format!("      certificate: {}\n", keys.file("server.pem")),
            ),
            fixed: pkjwt(
                "client.key",
                &format!("      certificate: {}\n", keys.file("client.pem")),
            ),
            at: &[("certificate", 8, 7), ("key", 7, 7)],
            says: &["match"],
        },
        Refusal {
            what: "tls_client_auth with the key of another certificate",
            bad: mtls("client.pem", "server.key"),
            fixed: mtls("client.pem", "client.key"),
            at: &[("cert", 7, 7), ("key", 8, 7)],
            says: &["match"],
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    let mut failures = Vec::new();
    for r in &refusals {
        let (code, stderr) = check(dir.path(), &check_config(&r.fixed));
        if code != Some(0) {
            failures.push(format!(
                "{}, fixed: exit {code:?}, expected 0:\n{stderr}",
                r.what
            ));
        }
        let (code, stderr) = check(dir.path(), &check_config(&r.bad));
        let lines: Vec<&str> = stderr.lines().collect();
        let placed = lines.first().is_some_and(|line| {
            r.at.iter().any(|(field, l, c)| {
                line.starts_with(&format!(
                    "{}:{l}:{c}: connections[0].client_auth.{field}: ",
                    file.display()
                ))
            })
        });
        let says = lines.first().is_some_and(|line| {
            r.says
                .iter()
                .all(|w| line.to_lowercase().contains(&w.to_lowercase()))
        });
        if code != Some(EXIT_INVALID_CONFIG)
            || lines.len() != 2
            || !placed
            || !says
            || lines[1] != "1 problem(s); tokenwarden would not start."
        {
            failures.push(format!(
                "{}: exit {code:?} (expected {EXIT_INVALID_CONFIG}), expected one problem at {} saying {:?}, got:\n{stderr}",
                r.what,
                r.at
                    .iter()
                    .map(|(f, l, c)| format!("{l}:{c} client_auth.{f}"))
                    .collect::<Vec<_>>()
                    .join(" or "),
                r.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
