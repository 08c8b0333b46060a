//! `tokenwarden demo` as a child process (the real binary): what it prints, its admin
//! address, and SIGTERM on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The last line of the demo's printout (everything before it is the quick start).
const LAST_LINE: &str = "Ctrl-C (or SIGTERM) stops the demo";

pub struct Demo {
    child: Child,
    pub admin: SocketAddr,
    /// Every line the demo printed, up to and including the one about stopping it.
    pub printed: Vec<String>,
    /// What it has logged (standard error) so far.
    log: Arc<Mutex<String>>,
}

impl Demo {
    /// Starts the demo and reads its printout up to its last line.
    pub fn start() -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
            .arg("demo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tokenwarden demo");
        let log = Arc::new(Mutex::new(String::new()));
        let (mut stderr, into) = (child.stderr.take().unwrap(), Arc::clone(&log));
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut stderr = BufReader::new(&mut stderr);
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                into.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut admin, mut printed) = (None, Vec::new());
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 {
            let text = line.trim_end().to_owned();
            line.clear();
            if let Some((_, rest)) = text.split_once("admin     http://") {
                admin = rest.split_whitespace().next().map(|a| a.parse().unwrap());
            }
            let last = text.contains(LAST_LINE);
            printed.push(text);
            if last {
                break;
            }
        }
        // Keep reading: a closed pipe would make the demo fail.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Demo {
            admin: admin.expect("the demo prints its admin address"),
            child,
            printed,
            log,
        }
    }

    /// The lines logged so far at WARN or ERROR.
    pub fn warnings(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// SIGTERM and wait; true when the demo exited cleanly.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}
