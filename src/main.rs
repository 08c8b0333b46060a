//! The `tokenwarden` command: `run`, `check` and `demo`. All logic lives in the library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokenwarden::config;

/// Exit status for an invalid configuration (EX_USAGE... EX_DATAERR is 65; 64 is what the contract names).
const EXIT_INVALID_CONFIG: u8 = 64;
/// Threads of the control runtime (admin listener, refreshers); the proxy runs on its own
/// worker threads (`proxy.worker_threads`).
const CONTROL_THREADS: usize = 1;
/// Exit status when the sidecar cannot start or fails while running.
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "tokenwarden",
    version,
    about = "OAuth2 token-injecting sidecar proxy (Fides SaaS-connector config)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and print its connections (without secrets).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a self-contained demo on loopback: an authorization server, an echo API and the sidecar.
    Demo,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
                print!("{}", tokenwarden::describe::summary(&c));
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                let problems = tokenwarden::app::preflight(&c);
                if problems.is_empty() {
                    return ExitCode::SUCCESS;
                }
                for p in &problems {
                    eprintln!("{p}");
                }
                eprintln!(
                    "{} problem(s); tokenwarden would not start.",
                    problems.len()
                );
                ExitCode::from(EXIT_INVALID_CONFIG)
            }
            Err(problems) => invalid(&problems),
        },
        Command::Run { config } => {
            let config = match config::load(&config) {
                Ok(c) => c,
                Err(problems) => return invalid(&problems),
            };
            tokenwarden::telemetry::init(&config.log);
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            report(runtime(Some(CONTROL_THREADS)).block_on(tokenwarden::run(config)))
        }
        Command::Demo => report(runtime(None).block_on(tokenwarden::demo::run())),
    }
}

fn invalid(problems: &config::Problems) -> ExitCode {
    eprint!("{problems}");
    eprintln!(
        "{} problem(s); tokenwarden did not start.",
        problems.0.len()
    );
    ExitCode::from(EXIT_INVALID_CONFIG)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenwarden: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn runtime(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all().build().expect("tokio runtime")
}
