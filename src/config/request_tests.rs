use super::*;
use crate::config::testing::load_text;
use crate::config::{Auth, OAuth2};

/// An authorization-code connection whose `configuration:` is `conf` (indented 10).
fn yaml(conf: &str) -> String {
    format!(
        "connections:\n  - key: api\n    secrets: {{ client_id: cid, client_secret: sec, domain: as.example }}\n    client_config:\n      protocol: https\n      host: api.example\n      authentication:\n        strategy: oauth2_authorization_code\n        configuration:\n{conf}"
    )
}

const AUTHORIZE: &str = "          authorization_request:\n            method: GET\n            path: /authorize\n            query_params: [{ name: client_id, value: <client_id> }, { name: state, value: <state> }]\n";

fn oauth(conf: &str) -> OAuth2 {
    let config = load_text(&yaml(conf)).unwrap_or_else(|p| panic!("{p}"));
    let conn = config.connections.into_iter().next().unwrap();
    match std::sync::Arc::try_unwrap(conn).unwrap().auth {
        Auth::OAuth2(o) => std::sync::Arc::try_unwrap(o).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn problems(conf: &str) -> String {
    load_text(&yaml(conf)).expect_err("a problem").to_string()
}

#[test]
fn each_part_is_compiled_with_its_names() {
    let o = oauth(&format!(
        "{AUTHORIZE}          token_request:\n            method: post\n            path: /token\n            headers: [{{ name: content-type, value: application/x-www-form-urlencoded }}]\n            query_params: [{{ name: q, value: \"<client_id>-<code>\" }}]\n            body: '{{\"code\": \"<code>\"}}'\n          refresh_request:\n            method: PUT\n            path: /refresh\n            client_config:\n              protocol: http\n              host: <domain>\n              authentication: {{ strategy: basic, configuration: {{ username: <client_id> }} }}\n            body: '{{\"r\": \"<refresh_token>\"}}'\n"
    ));
    let token = &o.token_request;
    assert_eq!(token.method, Method::POST, "methods are upper-cased");
    assert_eq!(token.protocol, "https", "the root client_config");
    assert_eq!(token.host, Template::parse("api.example"));
    assert_eq!(token.query_params[0].name, "q");
    assert!(token.query_params[0].value.uses(&["code"]));
    assert!(token.query_params[0].value.uses(&["client_id"]));
    let body = token.body.as_ref().unwrap();
    assert_eq!(
        body.encoding,
        Encoding::Form,
        "Content-Type matched in any case"
    );
    assert!(body.template.uses(&["code"]));
    assert!(token.basic_auth.is_none());

    let refresh = o.refresh_request.as_ref().unwrap();
    assert_eq!(refresh.method, Method::PUT);
    assert_eq!(refresh.protocol, "http", "the request's own client_config");
    assert!(refresh.host.uses(&["domain"]));
    let body = refresh.body.as_ref().unwrap();
    assert_eq!(body.encoding, Encoding::DefaultJson);
    let basic = refresh.basic_auth.as_ref().unwrap();
    assert!(basic.username.uses(&["client_id"]) && basic.password.is_none());

    let authorize = o.authorization_request.as_ref().unwrap();
    assert_eq!(authorize.path, Template::parse("/authorize"));
    assert_eq!(authorize.query_params.len(), 2);
}

#[test]
fn the_content_type_of_a_body_is_settled_at_load() {
    let token = |headers: &str, body: &str| {
        format!("{AUTHORIZE}          token_request:\n            method: POST\n            path: /token\n            headers: [{headers}]\n{body}")
    };
    let body = "            body: '{\"code\": \"<code>\"}'\n";
    for (header, want) in [
        ("{ name: Content-Type, value: application/json }", Encoding::AsIs),
        ("{ name: Content-Type, value: text/plain }", Encoding::AsIs),
        // a repeated name keeps its last value
        ("{ name: Content-Type, value: text/csv }, { name: Content-Type, value: application/x-www-form-urlencoded }", Encoding::Form),
    ] {
        let o = oauth(&token(header, body));
        assert_eq!(o.token_request.body.unwrap().encoding, want, "{header}");
    }

    let charset = "{ name: Content-Type, value: application/x-www-form-urlencoded; charset=utf-8 }";
    let p = problems(&token(charset, body));
    assert!(
        p.contains("token_request.headers[0].value: connection `api`: unsupported Content-Type"),
        "{p}"
    );
    // without a body Fides sends any Content-Type as is
    assert!(oauth(&token(charset, "")).token_request.body.is_none());

    let runtime = "{ name: Content-Type, value: <code> }";
    let p = problems(&token(runtime, body));
    assert!(p.contains("cannot use a run-time placeholder"), "{p}");
}

#[test]
fn the_authorization_request_keeps_no_body() {
    let conf = "          authorization_request:\n            method: GET\n            path: /authorize\n            headers: [{ name: Content-Type, value: text/csv }]\n            body: '<state>'\n          token_request: { method: POST, path: /token }\n";
    assert!(oauth(conf).authorization_request.unwrap().body.is_none());
    // its placeholders are still checked
    let p = problems(&conf.replace("'<state>'", "'<nope>'"));
    assert!(
        p.contains(
            "authorization_request.body: connection `api`: placeholder <nope> is not resolved"
        ),
        "{p}"
    );
}

#[test]
fn request_basic_auth_is_checked_at_load() {
    let token = |auth: &str| {
        format!("{AUTHORIZE}          token_request:\n            method: POST\n            path: /token\n            client_config: {{ protocol: https, host: as.example, authentication: {auth} }}\n")
    };
    let o = oauth(&token(
        "{ strategy: basic, configuration: { username: <client_id>, password: <client_secret> } }",
    ));
    let basic = o.token_request.basic_auth.unwrap();
    assert!(basic.password.unwrap().uses(&["client_secret"]));
    let p = problems(&token("{ strategy: basic }"));
    assert!(
        p.contains("token_request.client_config.authentication.configuration"),
        "{p}"
    );
    let p = problems(&token("{ strategy: bearer, configuration: { token: x } }"));
    assert!(
        p.contains("only `basic` authentication is supported"),
        "{p}"
    );
}
