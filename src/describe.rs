//! `tokenwarden check` output: the resolved connections, with secret names but never values.

use crate::config::{Auth, ClientAuth, Config, RedisSettings, RedisTarget};
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
                "token store   redis at {} ({}prefix {}, lease {} ms, poll {} ms, key configured)",
                redis.endpoint,
                redis_access(redis),
                redis.key_prefix,
                redis.lease_ttl.as_millis(),
                redis.poll_interval.as_millis()
            );
            if let Some(line) = redis_mode(redis) {
                let _ = writeln!(out, "              {line}");
            }
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
            Auth::OAuth2(o) => o.strategy,
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
        let client_auth = match &c.client_auth {
            ClientAuth::AsConfigured => "",
            ClientAuth::Basic => " + client_secret_basic",
            ClientAuth::BasicUnencoded => " + client_secret_basic_unencoded",
            ClientAuth::PrivateKeyJwt(_) => " + private_key_jwt",
            ClientAuth::TlsClientAuth(_) => " + tls_client_auth",
        };
        let _ = writeln!(
            out,
            "      strategy  {strategy}{}{client_auth}",
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

/// How tokenwarden reaches the Redis data nodes, for `check`: TLS (and with what), the ACL
/// user, and the replicas a rotated token waits for. Never a password.
/// The line under the store's for sentinels (where they are, how they are reached) and for
/// a cluster (its seed nodes are in the endpoint).
fn redis_mode(redis: &RedisSettings) -> Option<String> {
    match &redis.target {
        RedisTarget::Url(_) => None,
        RedisTarget::Sentinel(s) => {
            let nodes: Vec<String> = s.nodes.iter().map(|(h, p)| format!("{h}:{p}")).collect();
            let access = match (s.tls, &s.username, &s.password) {
                (tls, Some(user), _) => format!(" ({}user {user})", if tls { "TLS, " } else { "" }),
                (true, None, Some(_)) => " (TLS, password)".into(),
                (true, None, None) => " (TLS)".into(),
                (false, None, Some(_)) => " (password)".into(),
                (false, None, None) => String::new(),
            };
            Some(format!("sentinels {}{access}", nodes.join(", ")))
        }
        RedisTarget::Cluster(c) => Some(format!(
            "cluster: {} seed node{}, each key on its slot's master; runtime connections under \
             the hash tag {}",
            c.nodes.len(),
            if c.nodes.len() == 1 { "" } else { "s" },
            crate::token::store::redis::RUNTIME_TAG
        )),
    }
}

fn redis_access(redis: &RedisSettings) -> String {
    let mut parts = Vec::new();
    if let Some(tls) = &redis.tls {
        let ca = if tls.ca_pem.is_some() {
            "CA file"
        } else {
            "web PKI roots"
        };
        let client = if tls.client.is_some() {
            ", client certificate"
        } else {
            ""
        };
        let name = tls
            .server_name
            .as_ref()
            .map_or(String::new(), |n| format!(", server name {n}"));
        parts.push(format!("TLS with {ca}{client}{name}"));
    }
    match (&redis.username, &redis.password) {
        (Some(user), _) => parts.push(format!("user {user}")),
        (None, Some(_)) => parts.push("password".into()),
        (None, None) => {}
    }
    if redis.min_replicas_acked > 0 {
        parts.push(format!(
            "rotated tokens wait for {} replica{}",
            redis.min_replicas_acked,
            if redis.min_replicas_acked == 1 {
                ""
            } else {
                "s"
            }
        ));
    }
    parts.iter().map(|p| format!("{p}, ")).collect()
}
