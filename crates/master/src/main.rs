//! `inflight-master`: see the crate docs and the README.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inflight_daemon::{EXIT_CONFIG, EXIT_IO, EXIT_SOFTWARE, EXIT_UNAVAILABLE};
use inflight_master::{MasterConfig, MasterError};

/// The aircraft server daemon: collects every terminal's payments, durably, exactly once.
#[derive(Parser, Debug)]
#[command(name = "inflight-master", version)]
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
    /// Set the crew's override of the ground link: auto (follow probes), up, or down.
    Link {
        /// auto, up or down.
        #[arg(value_parser = ["auto", "up", "down"])]
        mode: String,
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Set the flight stamped on new payments.
    Flight {
        /// Flight identifier (1-16 letters, digits, '-').
        flight: String,
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the master's status, or one payment's, as JSON.
    Status {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// A payment id.
        #[arg(long)]
        payment: Option<String>,
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
    let (Cmd::Run { config } | Cmd::Status { config, .. } | Cmd::Link { config, .. } | Cmd::Flight { config, .. }) =
        &cli.cmd;
    let cfg = match MasterConfig::load(config) {
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
                match inflight_master::run(cfg, cancel).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, "inflight-master failed");
                        eprintln!("inflight-master: {e}");
                        ExitCode::from(match e {
                            MasterError::Store(_) => EXIT_IO,
                            MasterError::Net(_) | MasterError::Socket { .. } => EXIT_UNAVAILABLE,
                        } as u8)
                    }
                }
            })
        }
        Cmd::Link { mode, .. } => admin(&rt, &cfg, serde_json::json!({ "op": "link", "mode": mode })),
        Cmd::Flight { flight, .. } => admin(&rt, &cfg, serde_json::json!({ "op": "flight", "flight": flight })),
        Cmd::Status { payment, .. } => match rt.block_on(inflight_master::status(&cfg, payment)) {
            Ok(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("inflight-master: {e}");
                ExitCode::from(EXIT_UNAVAILABLE as u8)
            }
        },
    }
}

/// Sends one admin request to the running daemon and prints the answer.
fn admin(rt: &tokio::runtime::Runtime, cfg: &MasterConfig, req: serde_json::Value) -> ExitCode {
    match rt.block_on(inflight_master::admin_request(cfg, &req)) {
        Ok(v) if v.get("error").is_none() => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            eprintln!("inflight-master: {v}");
            ExitCode::from(EXIT_CONFIG as u8)
        }
        Err(e) => {
            eprintln!("inflight-master: cannot reach the daemon at {}: {e}", cfg.admin_socket.display());
            ExitCode::from(EXIT_UNAVAILABLE as u8)
        }
    }
}
