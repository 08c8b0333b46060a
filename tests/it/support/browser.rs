//! Debian's `chromium`, headless, one page per run: `--dump-dom` loads a URL (following
//! redirects, as a browser does), runs the page and prints its DOM; the browser's console
//! (where it reports Content-Security-Policy violations) goes to stderr. A missing
//! chromium fails the test with an install hint; every run is bounded in time.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Longest one page load may take (chromium starts in well under a second here).
pub const BROWSER_WAIT: Duration = Duration::from_secs(60);

/// Flags for a machine without internet: without them chromium stalls on network lookups
/// (component updates, sync, QUIC probes) and first-run chores.
const FLAGS: [&str; 11] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--enable-logging=stderr",
    "--v=0",
];

/// What chromium made of one URL.
#[derive(Debug)]
pub struct Loaded {
    /// The DOM after loading (and after following redirects).
    pub dom: String,
    /// The browser's stderr, console messages included.
    pub log: String,
}

impl Loaded {
    /// Console messages about a Content-Security-Policy violation.
    pub fn csp_violations(&self) -> Vec<&str> {
        self.log
            .lines()
            .filter(|l| l.contains("CONSOLE") && l.contains("Content Security Policy"))
            .collect()
    }
}

/// The chromium binary on `PATH`; panics with an install hint when there is none.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the browser test needs Debian's chromium on PATH: \
                 `apt-get update && apt-get install -y chromium` (.ci/run installs it)"
            )
        })
}

/// Loads `url` in a fresh headless chromium (its own profile directory) and returns the DOM.
pub async fn load(url: &str) -> Loaded {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(chromium());
    command
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can end the renderer and GPU processes too.
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().expect("start chromium");
    let pid = child.id();
    match tokio::time::timeout(BROWSER_WAIT, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.expect("chromium output");
            let loaded = Loaded {
                dom: String::from_utf8_lossy(&out.stdout).into_owned(),
                log: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
            assert!(
                out.status.success(),
                "chromium on {url}: {}\n{}",
                out.status,
                loaded.log
            );
            loaded
        }
        Err(_) => {
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .arg("-KILL")
                    .arg(format!("-{pid}"))
                    .status();
            }
            panic!("chromium did not load {url} within {BROWSER_WAIT:?}");
        }
    }
}
