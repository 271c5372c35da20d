//! `inflight-issuer`: see the crate docs and the README.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inflight_daemon::EXIT_UNAVAILABLE;
use inflight_issuer::IssuerConfig;

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
    /// Check the config and every file it names (keys, certificates, revocation lists, the
    /// programme and accounts, folders): every problem on stderr, one per line, then a summary;
    /// exit 64 on any problem, 0 when the issuer would start.
    Check {
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
    /// Compare a closed flight's manifest (the JSON of `inflight-master close-flight`) with what
    /// this issuer decided: prints JSON with every mismatch; exit 0 when there is none, 1 when
    /// there are (listed, never fixed), 64 for a file that is not a manifest.
    Reconcile {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// The manifest file.
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Print every account as JSON lines: masked card, currency, opening and available amounts
    /// (works while the daemon is stopped). Money is checked with it: available = opening −
    /// approved.
    Accounts {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli: Cli = match inflight_daemon::parse_cli() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let config = match &cli.cmd {
        Cmd::Check { config } => return inflight_issuer::check::check(config).finish("inflight-issuer"),
        Cmd::Run { config } | Cmd::Ledger { config } | Cmd::Accounts { config } | Cmd::Reconcile { config, .. } => {
            config
        }
    };
    let cfg = match inflight_daemon::config_or_exit(IssuerConfig::load(config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match inflight_daemon::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match cli.cmd {
        Cmd::Run { config } => {
            // What SIGHUP cannot reload is compared, so that a change to it is not silently ignored.
            let fingerprint = |c: &IssuerConfig| format!("{:?}", IssuerConfig { log_level: None, ..c.clone() });
            let started = fingerprint(&cfg);
            let logging = inflight_daemon::Logging::new(cfg.log_format, cfg.log_level.clone(), move || {
                IssuerConfig::load(&config).map(|c| {
                    inflight_daemon::runner::restart_needed(&started, &fingerprint(&c));
                    c.log_level
                })
            });
            inflight_daemon::runner::main_loop(&rt, "inflight-issuer", logging, |cancel| {
                inflight_issuer::run(cfg, cancel)
            })
        }
        Cmd::Check { .. } => unreachable!("answered before the config is loaded"),
        Cmd::Ledger { .. } => print_lines(rt.block_on(inflight_issuer::ledger(&cfg))),
        Cmd::Accounts { .. } => print_lines(rt.block_on(inflight_issuer::accounts(&cfg))),
        Cmd::Reconcile { manifest, .. } => match rt.block_on(inflight_issuer::reconcile(&cfg, &manifest)) {
            Ok(v) => {
                println!("{v}");
                let clean = v["mismatches"].as_array().is_some_and(Vec::is_empty);
                // Like diff(1): 1 says "they differ", not "it failed".
                if clean {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("inflight-issuer: {e}");
                inflight_daemon::exit(e.exit_code())
            }
        },
    }
}

fn print_lines(lines: Result<Vec<serde_json::Value>, String>) -> ExitCode {
    match lines {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("inflight-issuer: {e}");
            inflight_daemon::exit(EXIT_UNAVAILABLE)
        }
    }
}
