//! The quick start as a newcomer runs it: `tokenwarden demo` (the binary), then every command
//! line it prints, exactly as printed, through `sh -c` and the real curl, in the printed order —
//! with the authorization URL it prints opened as a browser would (following redirects) —
//! and a log with no warning in it.

use crate::support::demo::Demo;
use crate::support::external::PROXY_VARS;
use crate::support::wait_state_at;
use std::process::Command;

/// Runs `line` as a shell would, with no proxy variables of ours leaking in: its exit status
/// and standard output.
fn shell(line: &str) -> (bool, String) {
    let mut command = Command::new("sh");
    command.arg("-c").arg(line);
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    let out = command.output().expect("run sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A printed line that is a shell command: `curl …`, or `curl …` after variable assignments.
fn is_command(line: &str) -> bool {
    let words = line.split_whitespace();
    let mut words = words.skip_while(|w| {
        w.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    });
    words.next() == Some("curl")
}

/// What the answer to a printed command must contain, by a part of the command.
fn expectation(command: &str) -> &'static str {
    match command {
        c if c.contains("Bearer mine") => "Bearer demo-token-",
        c if c.contains("subject=alice&format=redirect") => "is authorized for user alice",
        c if c.contains("subject=bob&format=redirect") => "is authorized for user bob",
        c if c.contains("subject: carol") => {
            "/api/v1/connection/echo-users/authorize?subject=carol"
        }
        c if c.contains("subject: ") => "\"authorization\":\"Bearer demo-",
        c if c.ends_with("/echo-users/grants") => "\"subject\":\"bob\"",
        c if c.contains("/authorize") => "http",
        c if c.ends_with("/api/v1/connections") => "\"echo-user\"",
        c if c.ends_with("/metrics") => "# EOF",
        _ => "",
    }
}

#[tokio::test]
async fn every_line_the_demo_prints_runs_as_printed() {
    let mut demo = Demo::start();
    wait_state_at(demo.admin, "echo", "ready").await;
    let commands: Vec<&str> = demo
        .printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| is_command(l))
        .collect();
    assert!(
        commands.len() >= 8,
        "the demo prints its commands: {:#?}",
        demo.printed
    );

    let mut authorized = false;
    let mut user_answers = std::collections::HashMap::new();
    for command in &commands {
        let (ok, out) = shell(command);
        for subject in ["alice", "bob"] {
            if command.contains(&format!("subject: {subject}")) {
                user_answers.insert(subject, out.clone());
            }
        }
        assert!(ok, "`{command}` failed as printed; it printed: {out}");
        assert!(!out.is_empty(), "`{command}` printed nothing");
        assert!(
            out.contains(expectation(command)),
            "`{command}` printed: {out}"
        );
        if command.contains("/echo/") || command.contains("/hello") {
            assert!(
                out.contains("\"authorization\":\"Bearer demo-token-"),
                "`{command}`: {out}"
            );
        }
        if command.ends_with("/echo-user/me") {
            let expected = if authorized {
                "Bearer demo-"
            } else {
                "needs_authorization"
            };
            assert!(out.contains(expected), "`{command}` printed: {out}");
        }
        if command.contains("/authorize") && !command.contains("format=redirect") {
            // "Open the authorization URL in a browser": the demo's login approves at once.
            let url = out.trim();
            let (ok, page) = shell(&format!("curl -sfL '{url}'"));
            assert!(
                ok && page.contains("Connection echo-user is authorized"),
                "{page}"
            );
            authorized = true;
        }
    }
    assert!(authorized, "the demo prints the authorize command");
    // Each user's request carried that user's token, and never the subject header.
    let [alice, bob] = ["alice", "bob"].map(|subject| {
        let out = &user_answers[subject];
        assert!(!out.contains("tokenwarden-subject"), "{out}");
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["headers"]["authorization"].as_str().unwrap().to_owned()
    });
    assert_ne!(alice, bob);

    // The one printed URL that is not a command: the status page.
    let page_line = demo
        .printed
        .iter()
        .find(|l| l.contains("open it in a browser"))
        .unwrap();
    let url = page_line.split_whitespace().next().unwrap();
    assert_eq!(url, demo.url("/"));
    let (ok, page) = shell(&format!("curl -sf {url}"));
    assert!(ok && page.contains("<h1>tokenwarden</h1>"), "{page}");
    // A newcomer's run of the demo is a normal run: nothing in its log calls for action.
    assert_eq!(demo.warnings(), Vec::<String>::new());
    assert!(demo.stop(), "the demo exits cleanly on SIGTERM");
}
