//! Logging setup. Redaction is structural: secrets live in `SecretString`s and sensitive
//! `HeaderValue`s whose `Debug` prints nothing, URLs that may carry secrets are never
//! logged, and the HTTP libraries are capped at `info` (their trace output could show
//! request lines), whatever `RUST_LOG` says.

use crate::config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Targets whose debug/trace output could include request lines or headers.
const CAPPED_TARGETS: [&str; 6] = [
    "reqwest",
    "hyper",
    "hyper_util",
    "rustls",
    "h2",
    "tokio_rustls",
];

/// Installs the global subscriber (stderr). `RUST_LOG`, when set, replaces the config level.
pub fn init(settings: &LogSettings) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    for target in CAPPED_TARGETS {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only on a terminal: a log file or a container log gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A monotonically increasing event count for `/metrics`: one relaxed atomic add per event,
/// no lock, safe on the request path.
#[derive(Debug, Default)]
pub struct Counter(std::sync::atomic::AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}
