//! YAML builders for test configs: one `connections:` entry ([`Conn`]), the request blocks
//! under its `configuration:` (form-encoded ones on the scriptable token endpoint, the
//! query-string ones of the Fides test fixture), and the connections most tests use —
//! client credentials ([`cc_connection`]) and the Fides fixture's authorization code
//! ([`fixture_authcode`]).

use std::fmt;
use std::net::SocketAddr;

/// The client secret of [`CC_SECRETS`].
pub const CLIENT_SECRET: &str = "s3cret-VALUE";
/// The secrets of a client-credentials test connection.
pub const CC_SECRETS: &str = r#"client_id: the-client, client_secret: "s3cret-VALUE""#;
/// The secrets of the Fides test fixture (FIDES-BEHAVIOUR.md §5.1).
pub const FIXTURE_SECRETS: &str = r#"domain: localhost, client_id: client, client_secret: secret, redirect_uri: "https://localhost/callback""#;

pub const CLIENT_CREDENTIALS: &str = "oauth2_client_credentials";
pub const AUTHORIZATION_CODE: &str = "oauth2_authorization_code";

/// The client-credentials form body, as the Fides templates write it.
const CC_BODY: &str = r#"{"grant_type": "client_credentials", "client_id": "<client_id>", "client_secret": "<client_secret>"}"#;

/// One entry of `connections:` with an inline `client_config`; its `Display` is the YAML.
#[derive(Clone, Debug)]
pub struct Conn {
    key: String,
    fields: String,
    secrets: Option<String>,
    protocol: String,
    host: String,
    strategy: String,
    configuration: String,
}

impl Conn {
    /// Connection `key` to `http://{host}`, authenticating with `strategy`.
    pub fn new(key: &str, host: impl fmt::Display, strategy: &str) -> Conn {
        Conn {
            key: key.to_owned(),
            fields: String::new(),
            secrets: None,
            protocol: "http".to_owned(),
            host: host.to_string(),
            strategy: strategy.to_owned(),
            configuration: String::new(),
        }
    }

    /// The upstream's protocol (default `http`).
    pub fn protocol(mut self, protocol: &str) -> Conn {
        self.protocol = protocol.to_owned();
        self
    }

    /// One more field of the entry, e.g. `pkce: true`.
    pub fn field(mut self, line: &str) -> Conn {
        self.fields.push_str(&format!("    {line}\n"));
        self
    }

    /// The inside of the `secrets: { … }` flow mapping.
    pub fn secrets(mut self, secrets: &str) -> Conn {
        self.secrets = Some(secrets.to_owned());
        self
    }

    /// Appends lines under `configuration:` (indented ten spaces, each ending in `\n`).
    pub fn configure(mut self, lines: &str) -> Conn {
        self.configuration.push_str(lines);
        self
    }
}

impl fmt::Display for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "  - key: {}\n{}", self.key, self.fields)?;
        if let Some(secrets) = &self.secrets {
            writeln!(f, "    secrets: {{ {secrets} }}")?;
        }
        write!(
            f,
            "    client_config:\n      protocol: {}\n      host: \"{}\"\n      authentication:\n        strategy: {}\n        configuration:\n{}",
            self.protocol, self.host, self.strategy, self.configuration
        )
    }
}

/// `connections:` and the given entries.
pub fn connections<C: fmt::Display>(entries: &[C]) -> String {
    let mut yaml = "connections:\n".to_owned();
    for c in entries {
        yaml.push_str(&c.to_string());
    }
    yaml
}

/// A `{name}:` request block (`token_request`, `refresh_request`) POSTing the form `body`
/// to `http://{token}{path}`.
pub fn form_request(name: &str, path: &str, token: SocketAddr, body: &str) -> String {
    format!(
        r#"          {name}:
            method: POST
            path: {path}
            client_config: {{ protocol: http, host: "{token}" }}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{body}'
"#
    )
}

/// A `{name}:` request block POSTing to `path` with every value in the query string and
/// an empty form body, as the Fides test fixture's; sent to `token` over plain http, or
/// (None) to the connection's own host.
pub fn query_request(
    name: &str,
    path: &str,
    token: Option<SocketAddr>,
    params: &[(&str, &str)],
) -> String {
    let client_config = token
        .map(|t| format!("            client_config: {{ protocol: http, host: \"{t}\" }}\n"))
        .unwrap_or_default();
    format!(
        "          {name}:\n            method: POST\n            path: {path}\n{client_config}            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]\n{}",
        query_params(params)
    )
}

/// A GET `authorization_request` to `path` with `params` in its query string, on the
/// connection's host or (Some) on `https://{host}`.
pub fn authorization_request(path: &str, host: Option<&str>, params: &[(&str, &str)]) -> String {
    let client_config = host
        .map(|h| format!("            client_config: {{ protocol: https, host: {h} }}\n"))
        .unwrap_or_default();
    format!(
        "          authorization_request:\n            method: GET\n            path: {path}\n{client_config}{}",
        query_params(params)
    )
}

fn query_params(params: &[(&str, &str)]) -> String {
    let mut yaml = "            query_params:\n".to_owned();
    for (name, value) in params {
        yaml.push_str(&format!(
            "              - {{ name: {name}, value: \"{value}\" }}\n"
        ));
    }
    yaml
}

/// The client-credentials token request of the test connections: a form POST to
/// `http://{token}/oauth/token` with the client id and secret in the body.
pub fn cc_token_request(token: SocketAddr) -> String {
    form_request("token_request", "/oauth/token", token, CC_BODY)
}

/// A client-credentials connection `key` from `upstream` (plain http) with
/// [`CC_SECRETS`] and [`cc_token_request`] on `token`.
pub fn cc_conn(key: &str, upstream: impl fmt::Display, token: SocketAddr) -> Conn {
    Conn::new(key, upstream, CLIENT_CREDENTIALS)
        .secrets(CC_SECRETS)
        .configure(&cc_token_request(token))
}

/// [`cc_conn`] as YAML, with `extra` lines under `configuration:`.
pub fn cc_connection(key: &str, upstream: SocketAddr, token: SocketAddr, extra: &str) -> String {
    cc_conn(key, upstream, token).configure(extra).to_string()
}

/// The Fides test fixture's authorization request (§5.1, §5.2 case 8).
pub const FIXTURE_AUTHORIZE: [(&str, &str); 5] = [
    ("client_id", "<client_id>"),
    ("redirect_uri", "<redirect_uri>"),
    ("response_type", "code"),
    ("scope", "admin.read admin.write"),
    ("state", "<state>"),
];

/// The Fides test fixture's authorization-code connection (§5.1) to `http://{host}`:
/// authorize GET `/auth/authorize` on that host; token and (if `refresh`) refresh requests
/// with every value in the query string and an empty form body, sent to `token` over plain
/// http (None: to the connection's own host).
pub fn fixture_authcode(
    key: &str,
    host: impl fmt::Display,
    token: Option<SocketAddr>,
    refresh: bool,
) -> Conn {
    let conn = Conn::new(key, host, AUTHORIZATION_CODE)
        .secrets(FIXTURE_SECRETS)
        .configure(&authorization_request(
            "/auth/authorize",
            None,
            &FIXTURE_AUTHORIZE,
        ))
        .configure(&query_request(
            "token_request",
            "/oauth/token",
            token,
            &[
                ("client_id", "<client_id>"),
                ("client_secret", "<client_secret>"),
                ("grant_type", "authorization_code"),
                ("code", "<code>"),
                ("redirect_uri", "<redirect_uri>"),
            ],
        ));
    if !refresh {
        return conn;
    }
    conn.configure(&query_request(
        "refresh_request",
        "/oauth/token",
        token,
        &[
            ("client_id", "<client_id>"),
            ("client_secret", "<client_secret>"),
            ("redirect_uri", "<redirect_uri>"),
            ("grant_type", "refresh_token"),
            ("refresh_token", "<refresh_token>"),
        ],
    ))
}
