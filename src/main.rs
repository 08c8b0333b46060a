//! The `tokenwarden` command: `run`, `check`, `demo` and `ca init` / `ca bundle`. All logic lives in the library.

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
    /// Print a new placeholder for connection NAME: the string its app holds instead of
    /// the credential (`placeholder:`, see docs/placeholders.md).
    Placeholder { name: String },
    /// The local CA for https:// through HTTPS_PROXY (`proxy.intercept`).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a CA: DIR/ca.key (mode 600) and DIR/ca.pem; prints how to trust it.
    Init {
        #[arg(long, default_value = tokenwarden::ca::DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Write a trust bundle (the system roots + DIR/ca.pem), for clients that replace
    /// their roots (SSL_CERT_FILE, REQUESTS_CA_BUNDLE).
    Bundle {
        #[arg(long, default_value = tokenwarden::ca::DEFAULT_DIR)]
        dir: PathBuf,
        /// Where to write it (default DIR/bundle.pem).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The system bundle to start from (default: the first well-known one found).
        #[arg(long)]
        system: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
                // What `run` would refuse beyond the file, placed in it like the rest.
                let problems: Vec<config::Problem> = tokenwarden::app::preflight(&c)
                    .into_iter()
                    .map(|(at, message)| config::locate(&c.file, at, message))
                    .collect();
                if !problems.is_empty() {
                    let problems = config::Problems(problems, c.warnings);
                    return invalid(&problems, "tokenwarden would not start");
                }
                print!("{}", tokenwarden::describe::summary(&c));
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(problems) => invalid(&problems, "tokenwarden would not start"),
        },
        Command::Run { config } => {
            let config = match config::load(&config) {
                Ok(c) => c,
                Err(problems) => return invalid(&problems, "tokenwarden did not start"),
            };
            tokenwarden::telemetry::init(&config.log);
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            report(runtime(Some(CONTROL_THREADS)).block_on(tokenwarden::run(config)))
        }
        Command::Demo => report(runtime(None).block_on(tokenwarden::demo::run())),
        Command::Ca { command } => ca(command),
        Command::Placeholder { name } => {
            println!("{}", config::egress::new_placeholder(&name));
            ExitCode::SUCCESS
        }
    }
}

fn ca(command: CaCommand) -> ExitCode {
    use tokenwarden::ca;
    let result = match command {
        CaCommand::Init { dir } => {
            ca::init(&dir).map(|files| print!("{}", ca::trust_instructions(&files)))
        }
        CaCommand::Bundle { dir, out, system } => {
            let out = out.unwrap_or_else(|| dir.join(ca::BUNDLE_FILE));
            ca::bundle(&dir.join(ca::CA_CERT_FILE), system.as_deref(), &out).map(|from| {
                println!("Wrote {} ({} + {}).", out.display(), from.display(), dir.join(ca::CA_CERT_FILE).display());
                println!("Use it as REQUESTS_CA_BUNDLE or SSL_CERT_FILE; write it again when the system roots change.");
            })
        }
    };
    report(result.map_err(anyhow::Error::from))
}

/// Prints every problem (and warning), then how many and `verdict`; exit 64.
fn invalid(problems: &config::Problems, verdict: &str) -> ExitCode {
    eprint!("{problems}");
    eprintln!("{} problem(s); {verdict}.", problems.0.len());
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
