//! The corpus itself: the files are unchanged copies, the example config lists all eleven
//! and `tokenwarden check` passes on it, and the requests built from each file are the
//! exact strings of FIDES-BEHAVIOUR.md §4 (domain `tenant.example.com`).

use super::*;
use crate::support::golden::{self, Expected, CONNECTORS};
use secrecy::SecretString;
use serde_json::json;
use tokenwarden::config::Grant;
use tokenwarden::oauth::flow::{self, Exchange};
use tokenwarden::oauth::request::{self, BuiltRequest};
use tokenwarden::template::Lookup;

/// `${VAR}` names used in a config file, in order, without repeats.
fn variables(yaml: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = yaml;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').expect("closed ${");
        let name = after[..end].to_owned();
        if !out.contains(&name) {
            out.push(name);
        }
        rest = &after[end..];
    }
    out
}

/// Fake values for the example's variables; each secret is recognisable (`fake-…`).
fn example_value(name: &str) -> String {
    match name {
        "TOKENWARDEN_STORE_KEY" => "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into(),
        "TOKENWARDEN_PUBLIC_URL" => "https://tokenwarden.example".into(),
        n if n.ends_with("_DOMAIN") => "tenant.example.com".into(),
        n => format!("fake-{}", n.to_ascii_lowercase()),
    }
}

/// SHA-256 of each file in `config/fides/`. When they were copied, `git hash-object` of
/// each gave the blob SOURCE.md records for commit 8d478b2; these digests keep them unchanged.
const CORPUS_SHA256: [(&str, &str); 11] = [
    (
        "adobe_sign_config.yml",
        "d16d7497799c3eeb73b88064ef4adbb1a22cc989ab1ecf94ed7fdfd79f0bf911",
    ),
    (
        "auth0_config.yml",
        "742a1e6a364c271d4cd529a9368dbecfe76c84406deefac3a013c3c87e579908",
    ),
    (
        "domo_config.yml",
        "09acf7bf91fd21bf08607584aad542f5d488123c5367793e7192290684dfe8ed",
    ),
    (
        "google_analytics_config.yml",
        "8fcf8702b4538db0a4467340fb3dd0c726911aafbd333c227815828a027a1a88",
    ),
    (
        "microsoft_advertising_config.yml",
        "4f463ebdde40ca7794746ac28e7b64a2bb50e8b89ea98cf004927e1080b8cd50",
    ),
    (
        "outreach_config.yml",
        "183d9cbf5a94173ee24dfc4cdda42358d68fb0df0d256b6e2db220561dd52d9b",
    ),
    (
        "powerreviews_config.yml",
        "ba5bac1e99d25edd2bcbf0302a74e74f8bbea91ca410c19d2c0f474f2924d1da",
    ),
    (
        "salesforce_config.yml",
        "3afb8ba091f8917a60eb74a9e5c180eb60f18cdea2dfe985f4855d505a747cfb",
    ),
    (
        "snap_config.yml",
        "9a847010445bdb5bdc767373e5dc656582590c71d6777fb2442384027bc46701",
    ),
    (
        "unbounce_config.yml",
        "7ea090722c3e1ce3c960b19c2fbfc08489d78a47e5ca418b45fdd82b95e5d936",
    ),
    (
        "universal_analytics_config.yml",
        "dd15feb5fd7c01d5f6364d2a96d677ae78716adb78ca35c08f8c1be9487ef73e",
    ),
];

#[test]
fn the_connector_files_are_unchanged_copies() {
    use sha2::{Digest, Sha256};
    let source = std::fs::read_to_string(repo("config/fides/SOURCE.md")).unwrap();
    assert!(repo("config/fides/LICENSE").is_file());
    for c in CONNECTORS {
        let (_, want) = CORPUS_SHA256
            .iter()
            .find(|(f, _)| *f == c.file)
            .unwrap_or_else(|| panic!("no digest for {}", c.file));
        assert!(source.contains(c.file), "SOURCE.md lists {}", c.file);
        let bytes = std::fs::read(repo(&format!("config/fides/{}", c.file))).unwrap();
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(&got, want, "{} was edited", c.file);
    }
}

#[test]
fn the_example_config_loads_all_eleven_connectors() {
    let path = repo("config/fides-example.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let names = variables(&yaml);
    let env = |name: &str| names.iter().any(|n| n == name).then(|| example_value(name));
    let config = tokenwarden::config::load_with_env(&path, &env)
        .unwrap_or_else(|p| panic!("config/fides-example.yaml is invalid:\n{p}"));

    let mut keys: Vec<&str> = config.connections.iter().map(|c| c.key.as_str()).collect();
    keys.sort_unstable();
    let mut expected: Vec<&str> = CONNECTORS.iter().map(|c| c.key).collect();
    expected.sort_unstable();
    assert_eq!(keys, expected);

    for conn in &config.connections {
        let c = golden::connector(&conn.key);
        let o = oauth(conn);
        let grant = if c.authorization_code {
            Grant::AuthorizationCode
        } else {
            Grant::ClientCredentials
        };
        assert_eq!(o.grant, grant, "{}", conn.key);
        assert_eq!(o.expires_in, c.expires_in, "{}", conn.key);
        assert_eq!(o.refresh_request.is_some(), c.has_refresh_request);
        // every OAuth request of the connection can be built from these secrets alone
        let built = if c.authorization_code {
            assert_eq!(
                conn.params.get("redirect_uri"),
                Some(&json!("https://tokenwarden.example/api/v1/oauth/callback")),
                "{}: redirect_uri defaults from admin.public_url",
                conn.key
            );
            flow::build(
                conn,
                o,
                &Exchange::Code {
                    code: "c",
                    verifier: None,
                },
            )
        } else {
            flow::build(conn, o, &Exchange::ClientCredentials)
        };
        built.unwrap_or_else(|e| panic!("{}: {e}", conn.key));
    }
    let summary = tokenwarden::describe::summary(&config);
    assert!(summary.contains("connections   11"), "{summary}");
    assert!(
        !summary.contains("fake-"),
        "check output shows a secret:\n{summary}"
    );

    // Each variable is needed: leaving one out is a problem that names it.
    let without = |missing: &str| {
        let env = |name: &str| (name != missing).then(|| example_value(name));
        tokenwarden::config::load_with_env(&path, &env)
            .err()
            .map(|p| p.to_string())
    };
    let problem = without("SALESFORCE_DOMAIN").expect("SALESFORCE_DOMAIN is required");
    assert!(problem.contains("SALESFORCE_DOMAIN"), "{problem}");
}

#[test]
fn tokenwarden_check_passes_on_the_example_config() {
    let path = repo("config/fides-example.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"));
    cmd.arg("check").arg("--config").arg(&path);
    for name in variables(&yaml) {
        cmd.env(&name, example_value(&name));
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed:\n{stdout}\n{stderr}");
    for c in CONNECTORS {
        assert!(stdout.contains(&format!("  - {} ", c.key)), "{stdout}");
    }
    assert!(!stdout.contains("fake-") && !stderr.contains("fake-"));

    // and without the variables, it fails listing them
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env_remove("OUTREACH_CLIENT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OUTREACH_CLIENT_SECRET"));
}

fn assert_built(built: &BuiltRequest, expected: &Expected, what: &str) {
    assert_eq!(built.method, expected.method, "{what}: method");
    assert_eq!(built.url, expected.url, "{what}: URL");
    let header = |name: &str| {
        built
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("content-type"),
        Some(expected.content_type),
        "{what}: Content-Type"
    );
    assert_eq!(
        header("authorization"),
        expected.authorization,
        "{what}: Authorization"
    );
    let configured = 1 + usize::from(expected.authorization.is_some());
    assert_eq!(built.headers.len(), configured, "{what}: no other headers");
    let body = built.body.clone().unwrap_or_default();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        expected.body,
        "{what}: body"
    );
}

/// The exact §4 strings (domain `tenant.example.com`), from the built requests.
#[test]
fn every_connector_builds_the_requests_fides_builds() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, golden_yaml(&CONNECTORS, "tenant.example.com")).unwrap();
    let config =
        tokenwarden::config::load_with_env(&file, &|_| None).unwrap_or_else(|p| panic!("{p}"));
    let refresh_token = SecretString::from(golden::REFRESH_TOKEN);
    for conn in &config.connections {
        let key = conn.key.as_str();
        let o = oauth(conn);
        let token = if o.grant == Grant::AuthorizationCode {
            let runtime = [("state", golden::STATE)];
            let lookup = Lookup {
                params: &conn.params,
                runtime: &runtime,
            };
            let url = request::authorization_url(
                &format!("{} OAuth2", conn.name),
                o.authorization_request.as_ref().unwrap(),
                &lookup,
            )
            .unwrap();
            assert_eq!(
                Some(url),
                golden::authorize_url(key, "tenant.example.com"),
                "{key}: authorization URL"
            );
            let code = Exchange::Code {
                code: golden::CODE,
                verifier: None,
            };
            flow::build(conn, o, &code)
        } else {
            flow::build(conn, o, &Exchange::ClientCredentials)
        };
        let refresh = flow::build(
            conn,
            o,
            &Exchange::Refresh {
                refresh_token: Some(&refresh_token),
                access_token: None,
            },
        );
        assert_built(
            &token.unwrap(),
            &golden::token(key, "tenant.example.com"),
            &format!("{key} token"),
        );
        assert_built(
            &refresh.unwrap(),
            &golden::refresh(key, "tenant.example.com"),
            &format!("{key} refresh"),
        );
    }
    assert_eq!(config.connections.len(), CONNECTORS.len());
}

/// `config/fides-example.env` sets exactly the variables the example config needs, and
/// `check` passes with it loaded the way its own comment says.
#[test]
fn the_example_env_file_sets_every_variable_and_check_passes_with_it() {
    let yaml = std::fs::read_to_string(repo("config/fides-example.yaml")).unwrap();
    let env = std::fs::read_to_string(repo("config/fides-example.env")).unwrap();
    let mut set: Vec<&str> = env
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once('=').expect("NAME=value").0)
        .collect();
    let mut needed = variables(&yaml);
    set.sort_unstable();
    needed.sort_unstable();
    assert_eq!(set, needed);

    assert!(env.contains("#   set -a; . config/fides-example.env; set +a\n"));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"set -a; . config/fides-example.env; set +a; "$TW" check --config config/fides-example.yaml"#)
        .current_dir(repo(""))
        .env("TW", env!("CARGO_BIN_EXE_tokenwarden"))
        .env_remove("TOKENWARDEN_STORE_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("connections   11"), "{stdout}");
}
