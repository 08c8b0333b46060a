//! A loopback server run as a child process (the oidc-provider, the Python servers of
//! `tests/py`): once bound it prints one stdout line, `LISTENING <base>`, writes everything
//! else to stderr, and exits when its stdin closes. [`Listening`] keeps that pipe open
//! while it lives and kills the process by pid when dropped.

use super::WAIT;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A started child server.
pub struct Listening {
    /// What followed `LISTENING ` (`http://127.0.0.1:<port>`, say).
    pub base: String,
    /// Everything it wrote to stderr so far.
    pub stderr: Arc<Mutex<String>>,
    _child: Child,
    _stdin: ChildStdin,
    _stdout: BufReader<ChildStdout>,
}

impl Listening {
    /// Spawns `command` (its stdio piped here) and waits up to [`WAIT`] for its `LISTENING`
    /// line. Panics naming `what`, the exit status, its stderr and `hint` (what to install)
    /// when it cannot be run or does not start.
    pub async fn start(mut command: Command, what: &str, hint: &str) -> Listening {
        let program = command
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): {hint}"));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr_text = collect_stderr(child.stderr.take().unwrap());
        let mut line = String::new();
        let read = tokio::time::timeout(WAIT, stdout.read_line(&mut line)).await;
        let base = match read {
            Ok(Ok(n)) if n > 0 => line
                .trim_end()
                .strip_prefix("LISTENING ")
                .map(str::to_owned),
            _ => None,
        };
        let Some(base) = base else {
            let status = child.try_wait().ok().flatten();
            // Give the reader a moment to collect the traceback.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            panic!(
                "{what} did not start (first line {line:?}, exit {status:?}); if something is missing, {hint}\nstderr:\n{}",
                stderr_text.lock().unwrap()
            );
        };
        Listening {
            base,
            stderr: stderr_text,
            _child: child,
            _stdin: stdin,
            _stdout: stdout,
        }
    }
}

/// Copies what `stderr` gives into a string, as it comes (for failure messages).
pub fn collect_stderr(mut stderr: tokio::process::ChildStderr) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}
