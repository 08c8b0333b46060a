//! `tokenwarden check` output: the resolved connections, with secret names but never values.

use crate::config::{Auth, Config, Grant};
use std::fmt::Write as _;

pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config {} is valid", config.file.display());
    let _ = writeln!(out, "proxy listen  {}", config.proxy.listen);
    let _ = writeln!(out, "admin listen  {}", config.admin.listen);
    match &config.store.redis {
        // The endpoint only: the URL may carry a password.
        Some(redis) => {
            let _ = writeln!(
                out,
                "token store   redis at {} (prefix {}, lease {} ms, poll {} ms, key configured)",
                redis.endpoint,
                redis.key_prefix,
                redis.lease_ttl.as_millis(),
                redis.poll_interval.as_millis()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "token store   {}{}",
                config.store.path.display(),
                if config.store.key.is_some() {
                    " (key configured)"
                } else {
                    " (generated key beside it)"
                }
            );
        }
    }
    let _ = writeln!(out, "connections   {}", config.connections.len());
    for c in &config.connections {
        let strategy = match &c.auth {
            Auth::OAuth2(o) if o.grant == Grant::AuthorizationCode => "oauth2_authorization_code",
            Auth::OAuth2(_) => "oauth2_client_credentials",
            Auth::Header(_) => "bearer/basic",
            Auth::ApiKey(_) => "api_key",
        };
        let names: Vec<&str> = c.params.names().collect();
        let _ = writeln!(out, "  - {}  ({})", c.key, c.name);
        let _ = writeln!(
            out,
            "      upstream  {}://{}",
            c.upstream.scheme, c.upstream.authority
        );
        let _ = writeln!(
            out,
            "      strategy  {strategy}{}",
            if c.pkce { " + PKCE" } else { "" }
        );
        let _ = writeln!(out, "      params    {} (values hidden)", names.join(", "));
        let _ = writeln!(
            out,
            "      reverse   http://{}/{}/…",
            config.proxy.listen, c.key
        );
    }
    out
}
