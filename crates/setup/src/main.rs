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
    /// A chip test card's chip data for one transaction (TLV as hexadecimal, for
    /// `inflight-slave capture --emv`): what a card reader would read from the card. Needs the
    /// issuer's chip master key: a test tool, never run on an aircraft.
    ChipData {
        /// The issuer's `keys/issuer.chip.key`.
        #[arg(long)]
        chip_key: PathBuf,
        /// A chip test card's number (test-cards.json, `"chip": true`).
        #[arg(long)]
        pan: String,
        /// Its PAN sequence number.
        #[arg(long, default_value_t = 1)]
        pan_sequence: u8,
        /// Amount in minor units.
        #[arg(long)]
        amount: u64,
        /// ISO 4217 code.
        #[arg(long)]
        currency: String,
        /// The card's transaction counter: a new one each time.
        #[arg(long)]
        atc: u16,
        /// The cardholder entered their PIN and the chip verified it.
        #[arg(long)]
        pin: bool,
    },
    /// Creates the three CAs in DIR/pki (terminal, aircraft, issuer), each with an empty
    /// revocation list. Never overwrites a CA.
    Ca {
        /// The PKI folder's parent (certificates go to DIR/pki).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issues a certificate and key (30 days), or renews one by issuing it again: a terminal
    /// (`--role terminal --id seat-12a`), an aircraft server (`--role aircraft --id d-aixa`) or
    /// the issuer (`--role issuer --id issuer`).
    Enroll {
        /// The PKI folder's parent.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        who: Subject,
        /// File stem under DIR/pki (default: the id; `master-<id>` for an aircraft).
        #[arg(long)]
        name: Option<String>,
    },
    /// On the device: makes a private key (DIR/pki/<name>.key, mode 0600, it never leaves the
    /// device) and a certificate signing request (DIR/pki/<name>.csr.pem) for the CA.
    Request {
        /// Where the device keeps `pki/`.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        who: Subject,
        /// File stem under DIR/pki (default: the id; `master-<id>` for an aircraft).
        #[arg(long)]
        name: Option<String>,
    },
    /// At the CA: signs a device's request (30 days). The names come from --role and --id,
    /// never from the request; the request must be signed by the key it carries.
    Sign {
        /// The CA's folder (holding pki/<role>-ca.key).
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        who: Subject,
        /// The device's request.
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Revokes every certificate issued to NAME (a file stem under DIR/pki) and publishes its
    /// CA's new revocation list; running daemons refuse it at the next handshake.
    Revoke {
        /// The PKI folder's parent.
        #[arg(long)]
        dir: PathBuf,
        /// terminal, aircraft or issuer (the same name in another role is not touched).
        #[arg(long, value_parser = inflight_setup::provision::Role::parse)]
        role: inflight_setup::provision::Role,
        /// The certificate's file stem, e.g. `slave-7`.
        #[arg(long)]
        name: String,
    },
    /// Publishes a CA's revocation list again (a fresh `nextUpdate`).
    Crl {
        /// The PKI folder's parent.
        #[arg(long)]
        dir: PathBuf,
        /// terminal, aircraft or issuer.
        #[arg(long, value_parser = inflight_setup::provision::Role::parse)]
        role: inflight_setup::provision::Role,
    },
}

/// Whom a certificate is for.
#[derive(clap::Args, Debug)]
struct Subject {
    /// terminal, aircraft or issuer.
    #[arg(long, value_parser = inflight_setup::provision::Role::parse)]
    role: inflight_setup::provision::Role,
    /// Terminal id, aircraft id, or (issuer) a file name.
    #[arg(long)]
    id: String,
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
    let done = |r: anyhow::Result<String>| match r {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("inflight-setup: {e:#}");
            inflight_daemon::exit(inflight_daemon::EXIT_IO)
        }
    };
    use inflight_setup::provision;
    match cli.cmd {
        Cmd::ChipData { chip_key, pan, pan_sequence, amount, currency, atc, pin } => {
            let tap = inflight_setup::ChipTap { pan, pan_sequence, amount_minor: amount, currency, atc, pin };
            match inflight_setup::chip_data(&chip_key, &tap, inflight_daemon::unix_ms_now()) {
                Ok(tlv) => {
                    println!("{tlv}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inflight-setup: {e:#}");
                    inflight_daemon::exit(inflight_daemon::EXIT_CONFIG)
                }
            }
        }
        Cmd::Ca { dir } => {
            done(provision::create_cas(&dir).map(|()| format!("created three CAs in {}", dir.join("pki").display())))
        }
        Cmd::Request { dir, who: Subject { role, id }, name } => {
            done(provision::request(&dir, role, &id, name.as_deref()).map(|p| {
                format!("made a private key (mode 0600) and a signing request: send {} to the CA", p.display())
            }))
        }
        Cmd::Sign { dir, who: Subject { role, id }, csr, out } => {
            done(provision::sign(&dir, role, &id, &csr, &out).map(|()| format!("signed: {}", out.display())))
        }
        Cmd::Enroll { dir, who: Subject { role, id }, name } => done((|| {
            let (stem, names) = provision::names_for(role, &id)?;
            let stem = name.unwrap_or(stem);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            provision::enroll(&dir, role, &stem, &refs)?;
            Ok(format!(
                "enrolled {} as {}: pki/{stem}.pem and pki/{stem}.key (mode 0600)",
                role.as_str(),
                names.join(", ")
            ))
        })()),
        Cmd::Revoke { dir, role, name } => done(
            provision::revoke(&dir, role, &name)
                .map(|n| format!("revoked {n} certificate(s) of {name}; revocation list published")),
        ),
        Cmd::Crl { dir, role } => {
            done(provision::publish_crl(&dir, role).map(|p| format!("published {}", p.display())))
        }
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
