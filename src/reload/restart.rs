//! The settings a reload reports as "restart required" instead of applying them.

use crate::config::Config;
use secrecy::ExposeSecret;

/// The settings that differ between `running` and `next` but apply only after a restart.
pub(super) fn restart_required(running: &Config, next: &Config) -> Vec<&'static str> {
    let (a, b) = (&running.proxy, &next.proxy);
    let secret =
        |s: &Option<secrecy::SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
    let differs = [
        ("proxy.listen", a.listen != b.listen),
        (
            "proxy.intercept",
            format!("{:?}", a.intercept) != format!("{:?}", b.intercept),
        ),
        ("proxy.worker_threads", a.worker_threads != b.worker_threads),
        (
            "proxy.max_connections",
            a.limits.max_connections != b.limits.max_connections,
        ),
        (
            "proxy.max_buffered_head_bytes",
            a.limits.max_buffered_head_bytes != b.limits.max_buffered_head_bytes,
        ),
        (
            "proxy.connect_timeout",
            a.connect_timeout != b.connect_timeout,
        ),
        (
            "proxy.header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        ("admin.listen", running.admin.listen != next.admin.listen),
        (
            "admin",
            // The rest of `admin` (its listen address is reported above, not twice; its
            // public_url applies at once: `Reloader::public_url`).
            format!("{:?}", running.admin)
                != format!(
                    "{:?}",
                    crate::config::AdminSettings {
                        listen: running.admin.listen,
                        public_url: running.admin.public_url.clone(),
                        ..next.admin.clone()
                    }
                )
                || secret(&running.admin.token) != secret(&next.admin.token),
        ),
        (
            "store",
            format!("{:?}", running.store) != format!("{:?}", next.store)
                || secret(&running.store.key) != secret(&next.store.key)
                || running.store.redis.as_ref().map(|r| r.secrets())
                    != next.store.redis.as_ref().map(|r| r.secrets()),
        ),
        ("tls.ca_file", running.ca_file != next.ca_file),
        (
            "log",
            format!("{:?}", running.log) != format!("{:?}", next.log),
        ),
    ];
    differs
        .into_iter()
        .filter(|(_, d)| *d)
        .map(|(name, _)| name)
        .collect()
}
