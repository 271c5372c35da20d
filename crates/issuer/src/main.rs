//! `inflight-issuer`: see the crate docs and the README.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inflight_daemon::{EXIT_CONFIG, EXIT_IO, EXIT_SOFTWARE, EXIT_UNAVAILABLE};
use inflight_issuer::{IssuerConfig, IssuerError};

/// The card issuer's ground server: publishes the signed BIN list, authorizes batches once.
#[derive(Parser, Debug)]
#[command(name = "inflight-issuer", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon.
    Run {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print every decided payment as JSON lines (works while the daemon is stopped).
    Ledger {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_CONFIG as u8) } else { ExitCode::SUCCESS };
        }
    };
    let (Cmd::Run { config } | Cmd::Ledger { config }) = &cli.cmd;
    let cfg = match IssuerConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SOFTWARE as u8);
        }
    };
    match cli.cmd {
        Cmd::Run { .. } => {
            inflight_daemon::init_logging(cfg.log_format);
            rt.block_on(async {
                let cancel = inflight_daemon::shutdown_on_signals();
                match inflight_issuer::run(cfg, cancel).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, "inflight-issuer failed");
                        eprintln!("inflight-issuer: {e}");
                        ExitCode::from(match e {
                            IssuerError::Store(_) => EXIT_IO,
                            IssuerError::Data(_) => EXIT_CONFIG,
                            IssuerError::Net(_) | IssuerError::Socket { .. } => EXIT_UNAVAILABLE,
                        } as u8)
                    }
                }
            })
        }
        Cmd::Ledger { .. } => match rt.block_on(inflight_issuer::ledger(&cfg)) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("inflight-issuer: {e}");
                ExitCode::from(EXIT_UNAVAILABLE as u8)
            }
        },
    }
}
