//! `inflight-setup`: see the crate docs and the README.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inflight_setup::LocalPlan;

/// Makes development certificates, keys and a ready-to-run local deployment.
#[derive(Parser, Debug)]
#[command(name = "inflight-setup", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// A complete deployment on loopback: configs, CA, certificates, keys, test cards.
    Local {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Number of terminals.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        terminals: u32,
        /// Aircraft id.
        #[arg(long, default_value = "d-aixa")]
        aircraft: String,
        /// First UDP port (the master's).
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                inflight_daemon::exit(inflight_daemon::EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.cmd {
        Cmd::Local { out, terminals, aircraft, base_port } => {
            let plan = LocalPlan { out: out.clone(), terminals, aircraft, base_port };
            match inflight_setup::write_local(&plan) {
                Ok(()) => {
                    println!("wrote a local deployment for {terminals} terminal(s) to {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inflight-setup: {e:#}");
                    inflight_daemon::exit(inflight_daemon::EXIT_IO)
                }
            }
        }
    }
}
