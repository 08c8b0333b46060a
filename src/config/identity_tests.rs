use super::grant_identity;
use crate::config::testing::load_text;

/// An authorization-code connection (`{extra}` lines in the entry) whose requests go to
/// `{token_path}` with client id `{client_id}`, asking for `{scope}`.
fn authcode(extra: &str, token_path: &str, client_id: &str, scope: &str) -> String {
    format!(
        r#"connections:
  - key: api
{extra}    secrets: {{ client_id: {client_id}, client_secret: s3cret, redirect_uri: "https://cb.example/cb" }}
    client_config:
      protocol: https
      host: api.example
      authentication:
        strategy: oauth2_authorization_code
        configuration:
          expires_in: 3600
          authorization_request:
            method: GET
            path: /authorize
            query_params:
              - {{ name: client_id, value: "<client_id>" }}
              - {{ name: redirect_uri, value: "<redirect_uri>" }}
              - {{ name: scope, value: "{scope}" }}
              - {{ name: state, value: "<state>" }}
          token_request:
            method: POST
            path: {token_path}
            headers: [{{ name: Content-Type, value: application/x-www-form-urlencoded }}]
            body: '{{"client_id": "<client_id>", "client_secret": "<client_secret>", "code": "<code>", "redirect_uri": "<redirect_uri>"}}'
"#
    )
}

fn identity(yaml: &str) -> [u8; 32] {
    let config = load_text(yaml).unwrap_or_else(|p| panic!("{p}"));
    grant_identity(&config.connections[0])
}

const BASE: (&str, &str, &str) = ("/oauth/token", "the-client", "read write");

fn base(extra: &str) -> String {
    authcode(extra, BASE.0, BASE.1, BASE.2)
}

#[test]
fn what_leaves_a_token_valid_keeps_the_identity() {
    let before = identity(&base(""));
    for (what, yaml) in [
        ("a comment", format!("# edited\n{}", base(""))),
        ("pkce", base("    pkce: true\n")),
        (
            "client_auth",
            base("    client_auth: client_secret_basic\n"),
        ),
        ("issuer", base("    issuer: https://id.example\n")),
        (
            "expires_in",
            base("").replace("expires_in: 3600", "expires_in: 60"),
        ),
        (
            "redirect_uri",
            base("").replace("https://cb.example/cb", "https://other.example/cb"),
        ),
        (
            "the body's layout",
            base("").replace(r#"{"client_id": "#, r#"{ "client_id":   "#),
        ),
    ] {
        assert_eq!(identity(&yaml), before, "{what} changed the identity");
    }
}

#[test]
fn what_invalidates_a_token_changes_the_identity() {
    let before = identity(&base(""));
    for (what, yaml) in [
        ("token endpoint", authcode("", "/v2/token", BASE.1, BASE.2)),
        ("client id", authcode("", BASE.0, "another-client", BASE.2)),
        ("scope", authcode("", BASE.0, BASE.1, "read")),
        ("client secret", base("").replace("s3cret", "rotated")),
        (
            "upstream host",
            base("").replace("host: api.example", "host: api2.example"),
        ),
        (
            "upstream scheme",
            base("").replace("protocol: https", "protocol: http"),
        ),
    ] {
        assert_ne!(identity(&yaml), before, "{what} kept the identity");
    }
}
