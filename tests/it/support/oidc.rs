//! panva's oidc-provider on loopback (`tests/oidc/server.mjs`, see its README), and a
//! "browser" that walks its development login and consent forms with plain HTTP and a
//! hand-kept cookie jar.
//!
//! The provider needs Node.js and `tests/oidc/node_modules`; when either is missing the
//! test fails (never skips) and says to run `npm ci --prefix tests/oidc`.

use super::child::Listening;
use super::WAIT;
use std::path::PathBuf;
use tokio::process::Command;

/// What to run when the provider cannot start.
pub const INSTALL_HINT: &str = "run `npm ci --prefix tests/oidc` (needs Node.js ≥ 18 and npm)";

/// Most redirects and form posts one login may take (the recipe needs 7).
const MAX_STEPS: usize = 12;

/// A running provider. Dropping it closes its stdin (it exits) and kills it.
pub struct Provider {
    /// `http://127.0.0.1:<port>` (`https://` with [`ProviderTls`]), also the base of every
    /// endpoint.
    pub issuer: String,
    pub redirect_uri: String,
    /// The tests' own client to it (trusting its CA when it serves HTTPS).
    http: reqwest::Client,
    _server: Listening,
}

/// HTTPS for the provider (`OIDC_TLS_*`): its certificate and key, and the CA its clients'
/// certificates must chain to (also the CA the tests' own client trusts).
pub struct ProviderTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Provider {
    /// Starts `server.mjs` with `OIDC_REDIRECT_URI` and `OIDC_ACCESS_TTL` and waits for its
    /// `LISTENING <issuer>` line.
    pub async fn start(redirect_uri: &str, access_ttl_secs: u64) -> Provider {
        Provider::start_with(redirect_uri, access_ttl_secs, None, &[]).await
    }

    /// [`Provider::start`] over HTTPS when `tls` is given, with more environment `env` (the
    /// clients without a secret: see tests/oidc/README.md).
    pub async fn start_with(
        redirect_uri: &str,
        access_ttl_secs: u64,
        tls: Option<ProviderTls>,
        env: &[(&str, &str)],
    ) -> Provider {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider/package.json")
                .is_file(),
            "{} has no oidc-provider installed: {INSTALL_HINT}",
            dir.join("node_modules").display()
        );
        let mut command = Command::new("node");
        command
            .arg("server.mjs")
            .current_dir(&dir)
            .env("OIDC_REDIRECT_URI", redirect_uri)
            .env("OIDC_ACCESS_TTL", access_ttl_secs.to_string())
            .envs(env.iter().copied())
            .envs(tls.iter().flat_map(|t| {
                [
                    ("OIDC_TLS_CERT", t.cert.as_path()),
                    ("OIDC_TLS_KEY", t.key.as_path()),
                    ("OIDC_TLS_CA", t.ca.as_path()),
                ]
            }));
        let hint = format!("install Node.js, then {INSTALL_HINT}");
        let server = Listening::start(command, "oidc-provider", &hint).await;
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(WAIT);
        if let Some(t) = &tls {
            let pem = std::fs::read(&t.ca).expect("the provider's CA");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        Provider {
            issuer: server.base.clone(),
            redirect_uri: redirect_uri.to_owned(),
            http: http.build().unwrap(),
            _server: server,
        }
    }

    /// `host:port` of the provider (for a connection's `host`).
    pub fn authority(&self) -> &str {
        let (_, authority) = self.issuer.split_once("://").unwrap();
        authority
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        let (scheme, _) = self.issuer.split_once("://").unwrap();
        scheme
    }

    /// Holds the next token request `ms` before the provider sees it, and drops it
    /// unprocessed if its client goes away meanwhile (`POST /__hold`).
    pub async fn hold_next(&self, ms: u64) {
        let r = self
            .http
            .post(format!("{}/__hold?ms={ms}", self.issuer))
            .send()
            .await
            .expect("hold");
        assert_eq!(r.status(), 204);
    }

    /// The provider's token-endpoint counters (`GET /__stats`).
    pub async fn stats(&self) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}/__stats", self.issuer))
            .send()
            .await
            .expect("stats");
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }
}

impl Provider {
    /// Every client assertion its token endpoint received, decoded (`GET /__assertions`).
    pub async fn assertions(&self) -> Vec<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}/__assertions", self.issuer))
            .send()
            .await
            .expect("assertions");
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }
}

/// Every access and refresh token the provider issued so far (`GET /__issued`).
pub struct Issued {
    pub access_tokens: Vec<String>,
    pub refresh_tokens: Vec<String>,
}

impl Provider {
    /// The tokens its token endpoint issued so far.
    pub async fn issued(&self) -> Issued {
        let r = self
            .http
            .get(format!("{}/__issued", self.issuer))
            .send()
            .await
            .expect("issued");
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let list = |name: &str| -> Vec<String> {
            v[name]
                .as_array()
                .unwrap_or_else(|| panic!("no {name} in /__issued"))
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect()
        };
        Issued {
            access_tokens: list("access_tokens"),
            refresh_tokens: list("refresh_tokens"),
        }
    }
}

/// A counter from `/__stats`, 0 when absent.
pub fn stat(stats: &serde_json::Value, group: &str, name: &str) -> u64 {
    stats[group][name].as_u64().unwrap_or(0)
}

/// Cookies by (path, name); path-prefix matching, expired ones dropped.
#[derive(Default)]
struct Jar {
    cookies: Vec<(String, String, String)>,
}

impl Jar {
    fn store(&mut self, response: &reqwest::Response) {
        let default_path = {
            let p = response.url().path();
            match p.rfind('/') {
                Some(0) | None => "/".to_owned(),
                Some(i) => p[..i].to_owned(),
            }
        };
        for header in response.headers().get_all("set-cookie") {
            let Ok(text) = header.to_str() else { continue };
            let mut parts = text.split(';').map(str::trim);
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let mut path = default_path.clone();
            let mut expired = false;
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.to_ascii_lowercase().as_str() {
                    "path" => path = v.to_owned(),
                    "max-age" => expired |= v.parse::<i64>().is_ok_and(|n| n <= 0),
                    // Deleted cookies come back dated 1970.
                    "expires" => expired |= v.contains("1970"),
                    _ => {}
                }
            }
            self.cookies.retain(|(p, n, _)| !(*p == path && n == name));
            if !expired {
                self.cookies.push((path, name.to_owned(), value.to_owned()));
            }
        }
    }

    fn header(&self, url: &reqwest::Url) -> String {
        let path = url.path();
        self.cookies
            .iter()
            .filter(|(p, _, _)| {
                path == p || path.starts_with(&format!("{}/", p.trim_end_matches('/')))
            })
            .map(|(_, n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The hidden `prompt` field of a dev interaction form (`login` or `consent`).
fn prompt_of(html: &str) -> Option<&str> {
    let at = html.find("name=\"prompt\"")?;
    let input_start = html[..at].rfind('<')?;
    let input_end = at + html[at..].find('>')?;
    let input = &html[input_start..input_end];
    let v = input.find("value=\"")? + "value=\"".len();
    let len = input[v..].find('"')?;
    Some(&input[v..v + len])
}

/// Logs in as `user` and consents, starting at `authorization_url`; returns the final
/// redirect to the redirect URI (with `code`, `state` and `iss`), which it does not follow.
pub async fn login(provider: &Provider, authorization_url: &str, user: &str) -> reqwest::Url {
    let http = &provider.http;
    let mut jar = Jar::default();
    let mut url = reqwest::Url::parse(authorization_url).unwrap();
    let mut form: Option<Vec<(&str, &str)>> = None;
    let mut trail = Vec::new();
    for _ in 0..MAX_STEPS {
        trail.push(format!(
            "{} {}",
            if form.is_some() { "POST" } else { "GET" },
            url.path()
        ));
        let mut req = match &form {
            Some(fields) => http.post(url.clone()).form(fields),
            None => http.get(url.clone()),
        };
        let cookie = jar.header(&url);
        if !cookie.is_empty() {
            req = req.header("cookie", cookie);
        }
        let r = req.send().await.expect("provider request");
        jar.store(&r);
        let status = r.status().as_u16();
        if status == 303 || status == 302 {
            let location = r.headers()["location"].to_str().unwrap().to_owned();
            let next = url.join(&location).unwrap();
            if next.as_str().starts_with(&provider.redirect_uri) {
                return next;
            }
            url = next;
            form = None;
            continue;
        }
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{trail:?}: {body}");
        // An interaction page: post its form back to the same URL.
        form = match prompt_of(&body) {
            Some("login") => Some(vec![
                ("prompt", "login"),
                ("login", user),
                ("password", "anything"),
            ]),
            Some("consent") => Some(vec![("prompt", "consent")]),
            other => panic!("unexpected page {other:?} after {trail:?}: {body}"),
        };
    }
    panic!("no redirect to the redirect URI after {trail:?}");
}

#[cfg(test)]
mod tests {
    use super::prompt_of;

    #[test]
    fn reads_the_prompt_field() {
        let html = r#"<form method="post"><input type="hidden" name="prompt" value="consent"/><button>Go</button></form>"#;
        assert_eq!(prompt_of(html), Some("consent"));
        assert_eq!(prompt_of("<p>nothing</p>"), None);
    }
}
