//! `inflight-master`: see the crate docs and the README.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inflight_daemon::{EXIT_CONFIG, EXIT_UNAVAILABLE};
use inflight_master::{AdminRequest, MasterConfig};

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
    /// Print the crew's report of a flight: totals per currency and terminal, flagged payments.
    Report {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// The flight (default: the current one).
        #[arg(long)]
        flight: Option<String>,
        /// json (the stable form), csv or html (one self-contained page).
        #[arg(long, default_value = "json", value_parser = ["json", "csv", "html"])]
        format: String,
    },
    /// Close a flight: print its manifest as JSON (books per terminal and currency, every
    /// payment's standing, a keyed chain over the payment ids, a seal). Refused (exit 75) while
    /// payments of the flight are pending, unless --force.
    CloseFlight {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// The flight (default: the current one).
        #[arg(long)]
        flight: Option<String>,
        /// Close even with payments pending: they are listed, and counted as pending.
        #[arg(long)]
        force: bool,
        /// Queue the manifest for the issuer: sent over the ground link until the issuer
        /// acknowledges it (its signed findings then show as `issuer_ack`). Not with --force.
        #[arg(long, conflicts_with = "force")]
        send: bool,
    },
    /// Check the config and every file it names (keys, certificates, revocation lists, folders):
    /// every problem on stderr, one per line, then a summary; exit 64 on any problem, 0 when
    /// the daemon would start.
    Check {
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
    let cli: Cli = match inflight_daemon::parse_cli() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let config = match &cli.cmd {
        Cmd::Check { config } => return inflight_master::check::check(config).finish("inflight-master"),
        Cmd::Run { config }
        | Cmd::Status { config, .. }
        | Cmd::Link { config, .. }
        | Cmd::Flight { config, .. }
        | Cmd::Report { config, .. }
        | Cmd::CloseFlight { config, .. } => config,
    };
    let cfg = match inflight_daemon::config_or_exit(MasterConfig::load(config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match inflight_daemon::runtime_with(cfg.worker_threads) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match cli.cmd {
        Cmd::Run { config } => {
            // What SIGHUP cannot reload is compared, so that a change to it is not silently ignored.
            let fingerprint = |c: &MasterConfig| format!("{:?}", MasterConfig { log_level: None, ..c.clone() });
            let started = fingerprint(&cfg);
            let logging = inflight_daemon::Logging::new(cfg.log_format, cfg.log_level.clone(), move || {
                MasterConfig::load(&config).map(|c| {
                    inflight_daemon::runner::restart_needed(&started, &fingerprint(&c));
                    c.log_level
                })
            });
            inflight_daemon::runner::main_loop(&rt, "inflight-master", logging, |cancel| {
                inflight_master::run(cfg, cancel)
            })
        }
        Cmd::Link { mode, .. } => admin(&rt, &cfg, AdminRequest::Link { mode }),
        Cmd::Flight { flight, .. } => admin(&rt, &cfg, AdminRequest::Flight { flight }),
        Cmd::Report { flight, format, .. } => {
            // clap has checked the name against the same three.
            let Ok(format) = inflight_master::report::Format::parse(&format) else {
                return inflight_daemon::exit(EXIT_CONFIG);
            };
            match rt.block_on(inflight_master::report(&cfg, flight)) {
                Ok(r) => {
                    print!("{}", format.render(&r));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inflight-master: {e}");
                    inflight_daemon::exit(e.exit_code())
                }
            }
        }
        Cmd::CloseFlight { flight, force, send, .. } => {
            match rt.block_on(inflight_master::close_flight(&cfg, flight, force, send)) {
                Ok(m) => {
                    println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inflight-master: {e}");
                    inflight_daemon::exit(e.exit_code())
                }
            }
        }
        Cmd::Check { .. } => unreachable!("answered before the config is loaded"),
        Cmd::Status { payment, .. } => match rt.block_on(inflight_master::status(&cfg, payment)) {
            Ok(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("inflight-master: {e}");
                inflight_daemon::exit(EXIT_UNAVAILABLE)
            }
        },
    }
}

/// Sends one admin request to the running daemon and prints the answer.
fn admin(rt: &tokio::runtime::Runtime, cfg: &MasterConfig, req: AdminRequest) -> ExitCode {
    match rt.block_on(inflight_master::admin_request(cfg, &req)) {
        Ok(v) if v.get("error").is_none() => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            eprintln!("inflight-master: {v}");
            inflight_daemon::exit(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("inflight-master: cannot reach the daemon at {}: {e}", cfg.admin_socket.display());
            inflight_daemon::exit(EXIT_UNAVAILABLE)
        }
    }
}
