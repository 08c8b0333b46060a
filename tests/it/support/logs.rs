//! Captures everything the sidecar logs (every level, every target) during one test, to
//! check that no code, state, verifier, token or secret ever reaches a log line.
//!
//! The capture is a thread-scoped default subscriber, so it sees what runs on the test's
//! thread: with `#[tokio::test]` (a current-thread runtime) that is the whole in-process
//! sidecar — listeners, refreshers, admin routes.
//!
//! tracing caches each callsite's interest process-wide, computed when the callsite is
//! first hit. While only one dispatcher exists it is computed against the *hitting*
//! thread's default, so a parallel test without a subscriber would cache `never` and
//! blind this capture. Holding a second (inert) dispatcher makes tracing combine every
//! live dispatcher instead, this capture included.

use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing::subscriber::DefaultGuard;
use tracing::Dispatch;
use tracing_subscriber::fmt::MakeWriter;

/// The captured log text; cheap to clone.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Starts capturing at TRACE on this thread until the guard is dropped.
    pub fn capture() -> (Logs, Capture) {
        let anchor = Dispatch::new(tracing_subscriber::registry());
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (
            logs,
            Capture {
                _guard: guard,
                _anchor: anchor,
            },
        )
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Panics (naming which) if any of `secrets` appears in the captured logs.
    pub fn assert_free_of(&self, secrets: &[(&str, &str)]) {
        let text = self.text();
        for (what, value) in secrets {
            assert!(!value.is_empty(), "empty {what}");
            assert!(
                !text.contains(value),
                "the {what} appears in the logs:\n{text}"
            );
        }
    }
}

/// Keeps the capture installed (and the anchor dispatcher alive) until dropped.
pub struct Capture {
    _guard: DefaultGuard,
    _anchor: Dispatch,
}

pub struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter(Arc::clone(&self.0))
    }
}
