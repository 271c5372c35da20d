//! `inflight-slave`: see the crate docs and the README.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inflight_daemon::EXIT_UNAVAILABLE;
use inflight_slave::api::CaptureBody;
use inflight_slave::{SlaveConfig, SlaveError};

/// The terminal daemon: takes card payments in flight, stores them durably, forwards them to the
/// aircraft server.
#[derive(Parser, Debug)]
#[command(name = "inflight-slave", version)]
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
    /// Ask the running daemon to take a payment; prints the JSON answer.
    Capture {
        /// Config file (names the daemon's socket).
        #[arg(long)]
        config: PathBuf,
        /// Card number, digits only, or `-` to read it from standard input (one line). A
        /// number given here is visible to other local users (`ps`, /proc) and kept in shell
        /// history: use `-`.
        #[arg(long, value_parser = PanArg::parse)]
        pan: PanArg,
        /// Expiry, MM/YY.
        #[arg(long)]
        expiry: String,
        /// Amount in minor units (cents).
        #[arg(long)]
        amount: u64,
        /// ISO 4217 currency code.
        #[arg(long)]
        currency: String,
        /// Seat or crew position.
        #[arg(long, default_value = "crew")]
        seat: String,
        /// The sale's own id: a retry with the same id never makes a second payment.
        #[arg(long)]
        request_id: Option<String>,
        /// The card reader's chip data: BER-TLV as hexadecimal (makes a chip payment), or `-`
        /// to read it from standard input (after the card number's line with `--pan -`): on the
        /// command line it is visible to other local users, like a card number.
        #[arg(long, value_name = "TLV_HEX", value_parser = PanArg::parse)]
        emv: Option<PanArg>,
        /// How the card was read: chip, contactless or key_entered (default: chip with --emv,
        /// else key_entered).
        #[arg(long)]
        entry_mode: Option<String>,
        /// Merchant category code of what was sold (default: the terminal's merchant_category).
        #[arg(long)]
        mcc: Option<String>,
    },
    /// Void a payment (the passenger changed their mind; the sale was not completed). JSON:
    /// `payment_id`, `outcome` (voided, reversal_pending, unknown_payment, already_voided).
    Void {
        /// Config file (names the daemon's socket).
        #[arg(long)]
        config: PathBuf,
        /// The payment's id.
        #[arg(long, conflicts_with = "request_id", required_unless_present = "request_id")]
        payment: Option<String>,
        /// The sale's request id, as given at capture.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Check the config and every file it names (keys, certificates, revocation lists, folders):
    /// every problem on stderr, one per line, then a summary; exit 64 on any problem, 0 when
    /// the terminal would start.
    Check {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the terminal's status, or one payment's, as JSON.
    Status {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// A payment id.
        #[arg(long)]
        payment: Option<String>,
    },
}

/// `--pan` (and `--emv`): card data, or `-` for standard input. Parsing never fails (so clap has
/// no error that would quote it); the daemon checks it. `Debug` never shows it, so the derived
/// `Debug` of the command line is safe to print.
#[derive(Clone)]
enum PanArg {
    /// `--pan -`: read one line from standard input.
    Stdin,
    /// `--pan P`.
    Given(String),
}

impl PanArg {
    fn parse(s: &str) -> Result<Self, std::convert::Infallible> {
        Ok(if s == "-" { PanArg::Stdin } else { PanArg::Given(s.to_owned()) })
    }
}

impl std::fmt::Debug for PanArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PanArg::Stdin => f.write_str("PanArg(stdin)"),
            PanArg::Given(_) => f.write_str("PanArg(hidden)"),
        }
    }
}

fn load(path: &std::path::Path) -> Result<SlaveConfig, ExitCode> {
    inflight_daemon::config_or_exit(SlaveConfig::load(path))
}

fn main() -> ExitCode {
    let cli: Cli = match inflight_daemon::parse_cli() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match inflight_daemon::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // What SIGHUP cannot reload is compared, so that a change to it is not silently ignored.
            let fingerprint = |c: &SlaveConfig| format!("{:?}", SlaveConfig { log_level: None, ..c.clone() });
            let started = fingerprint(&cfg);
            let logging = inflight_daemon::Logging::new(cfg.log_format, cfg.log_level.clone(), move || {
                SlaveConfig::load(&config).map(|c| {
                    inflight_daemon::runner::restart_needed(&started, &fingerprint(&c));
                    c.log_level
                })
            });
            inflight_daemon::runner::main_loop(&rt, "inflight-slave", logging, |cancel| {
                inflight_slave::run(cfg, cancel)
            })
        }
        Cmd::Check { config } => inflight_slave::check::check(&config).finish("inflight-slave"),
        Cmd::Capture { config, pan, expiry, amount, currency, seat, request_id, emv, entry_mode, mcc } => {
            // One standard input for both: the card number's line first, then the chip data's.
            let mut stdin = std::io::stdin().lock();
            let read = (|| {
                let pan = match pan {
                    PanArg::Given(p) => p,
                    PanArg::Stdin => inflight_slave::read_pan_line(&mut stdin)?,
                };
                let emv = match emv {
                    None => None,
                    Some(PanArg::Given(e)) => Some(e),
                    Some(PanArg::Stdin) => Some(inflight_slave::read_emv_line(&mut stdin)?),
                };
                Ok::<_, SlaveError>((pan, emv))
            })();
            let (pan, emv) = match read {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("inflight-slave: {e}");
                    return inflight_daemon::exit(inflight_daemon::EXIT_CONFIG);
                }
            };
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let body = CaptureBody {
                pan,
                expiry,
                amount_minor: amount,
                currency,
                seat,
                items: vec![],
                request_id,
                entry_mode,
                emv,
                mcc,
            };
            match rt.block_on(inflight_slave::capture_via_socket(&cfg.capture_socket, body)) {
                Ok(answer) => {
                    println!("{}", serde_json::to_string(&answer).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inflight-slave: cannot ask the daemon at {}: {e}", cfg.capture_socket.display());
                    inflight_daemon::exit(EXIT_UNAVAILABLE)
                }
            }
        }
        Cmd::Void { config, payment, request_id } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match rt.block_on(inflight_slave::void_via_socket(&cfg.capture_socket, payment, request_id)) {
                Ok(answer) => {
                    println!("{answer}");
                    if answer.get("error").and_then(|e| e.as_str()) == Some("bad_request") {
                        return inflight_daemon::exit(inflight_daemon::EXIT_CONFIG);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inflight-slave: cannot ask the daemon at {}: {e}", cfg.capture_socket.display());
                    inflight_daemon::exit(EXIT_UNAVAILABLE)
                }
            }
        }
        Cmd::Status { config, payment } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match rt.block_on(inflight_slave::status(&cfg, payment)) {
                Ok(v) => {
                    println!("{v}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inflight-slave: {e}");
                    inflight_daemon::exit(EXIT_UNAVAILABLE)
                }
            }
        }
    }
}
