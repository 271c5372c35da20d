//! `inflight-setup`: makes a development CA, certificates, keys and a ready-to-run local
//! deployment (DESIGN.md §8). Everything it writes is for development and tests: the CA key sits
//! next to the certificates, and the test cards are published in clear on purpose.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use inflight_net::identity::terminal_cert_name;
use inflight_store::BinListSigner;
use inflight_wire::{Pan, TerminalId};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;

pub mod provision;
use provision::Role;

/// Name on the issuer's certificate; the master verifies it.
pub const ISSUER_SERVER_NAME: &str = "issuer.inflight";
/// The demo flight.
pub const FLIGHT_ID: &str = "IF100";

/// What to generate.
#[derive(Debug, Clone)]
pub struct LocalPlan {
    /// Output folder.
    pub out: PathBuf,
    /// Number of terminals (slave configs).
    pub terminals: u32,
    /// Aircraft id.
    pub aircraft: String,
    /// First UDP port: the master listens on it.
    pub base_port: u16,
}

/// The id of terminal `k` (1-based).
pub fn terminal_id(k: u32) -> String {
    format!("slave-{k}")
}

/// Writes the deployment. Refuses to overwrite an existing deployment's keys.
pub fn write_local(plan: &LocalPlan) -> anyhow::Result<()> {
    let out = &plan.out;
    if out.join(Role::Terminal.ca_key()).exists() {
        anyhow::bail!(
            "{} already holds a deployment ({} exists); choose another --out",
            out.display(),
            Role::Terminal.ca_key()
        );
    }
    for d in ["config", "pki", "keys", "data", "run", "issuer"] {
        std::fs::create_dir_all(out.join(d))?;
    }
    // Three trust domains (terminals, aircraft, issuer); their keys are kept here so that more
    // terminals can be enrolled and revoked later (and tests can make bad certificates).
    provision::create_cas(out)?;
    // The master is a server to terminals (under its aircraft's own server name) and a client of
    // the issuer (under its aircraft name).
    let server_name = master_server_name(&plan.aircraft);
    let aircraft_name = inflight_net::identity::aircraft_cert_name(&plan.aircraft);
    provision::enroll(out, Role::Aircraft, "master", &[&server_name, &aircraft_name])?;
    write(out, "keys/master.card.key", &random_key_hex()?, true)?;
    write(out, "config/master.toml", &master_toml(plan, ".."), false)?;

    provision::enroll(out, Role::Issuer, "issuer", &[ISSUER_SERVER_NAME])?;
    write(out, "keys/issuer.card.key", &random_key_hex()?, true)?;
    // The issuer master key of the chip test cards: the issuer's alone (never on the aircraft).
    write(out, "keys/issuer.chip.key", &(random_key_hex()?[..32].to_owned() + "\n"), true)?;
    let signing = BinListSigner::generate()?;
    let public = BinListSigner::from_pkcs8(&signing).map_err(|e| anyhow::anyhow!(e))?.public_key();
    write(out, "keys/issuer-signing.key", &(hex(&signing) + "\n"), true)?;
    write(out, "keys/issuer-signing.pub", &(hex(&public) + "\n"), false)?;
    write(out, "issuer/programme.toml", PROGRAMME_TOML, false)?;
    write(out, "issuer/accounts.json", &(serde_json::to_string_pretty(&test_cards())? + "\n"), false)?;
    write(out, "config/issuer.toml", &issuer_toml(plan, ".."), false)?;
    for k in 1..=plan.terminals {
        let id = terminal_id(k);
        let tid = TerminalId::parse(&id).map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        provision::enroll(out, Role::Terminal, &id, &[&terminal_cert_name(&tid)])?;
        write(out, &format!("keys/{id}.card.key"), &random_key_hex()?, true)?;
        write(out, &format!("config/{id}.toml"), &slave_toml(plan, k, ".."), false)?;
    }
    let cards = serde_json::to_string_pretty(&test_cards())?;
    write(out, "test-cards.json", &(cards + "\n"), false)?;
    Ok(())
}

/// One chip test card's transaction, as `inflight-setup chip-data` makes it.
#[derive(Debug, Clone)]
pub struct ChipTap {
    /// The card number.
    pub pan: String,
    /// Its PAN sequence number (test cards: 1).
    pub pan_sequence: u8,
    /// Amount, minor units.
    pub amount_minor: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// The card's transaction counter for this transaction: a new one every time (the issuer
    /// declines a counter it has seen, `atc_replayed`).
    pub atc: u16,
    /// Whether the cardholder's PIN was entered and verified by the chip.
    pub pin: bool,
}

/// The chip data (TLV, hexadecimal) a test card makes for `tap`, under the issuer master key in
/// `chip_key_file`: what a card reader hands the sale app, for `inflight-slave capture --emv`.
pub fn chip_data(chip_key_file: &Path, tap: &ChipTap, unix_ms: u64) -> anyhow::Result<String> {
    let imk = inflight_store::chip_master_key_from_file(chip_key_file)?;
    // Never quote the card number: the error names the check that failed.
    let pan = Pan::parse(&tap.pan).map_err(|e| anyhow::anyhow!("--pan: {e}"))?;
    let currency = inflight_wire::Currency::parse(&tap.currency).map_err(|e| anyhow::anyhow!("--currency: {e}"))?;
    let amount = inflight_wire::Money::new(tap.amount_minor, currency).map_err(|e| anyhow::anyhow!("--amount: {e}"))?;
    let card = inflight_core::chip::ChipCard::new(&imk, &pan, tap.pan_sequence);
    let txn = inflight_core::chip::ChipTxn {
        atc: tap.atc,
        amount,
        unix_ms,
        unpredictable: unpredictable_number()?,
        pin_verified: tap.pin,
    };
    Ok(card.generate_ac(txn).to_hex())
}

/// The terminal's unpredictable number (EMV 9F37): fresh for every transaction.
pub fn unpredictable_number() -> anyhow::Result<[u8; 4]> {
    let mut n = [0u8; 4];
    SystemRandom::new().fill(&mut n).map_err(|_| anyhow::anyhow!("system random source failed"))?;
    Ok(n)
}

/// The name on an aircraft's server certificate, which its terminals verify: one per aircraft,
/// so that one aircraft's server cannot pass for another's.
pub fn master_server_name(aircraft: &str) -> String {
    format!("master.{}", inflight_net::identity::aircraft_cert_name(aircraft))
}

fn write(out: &Path, rel: &str, text: &str, secret: bool) -> anyhow::Result<()> {
    provision::write_file(&out.join(rel), text, secret)
}

fn random_key_hex() -> anyhow::Result<String> {
    let mut k = [0u8; 32];
    SystemRandom::new().fill(&mut k).map_err(|_| anyhow::anyhow!("system random source failed"))?;
    Ok(hex(&k) + "\n")
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The demo issuer's in-flight programme.
pub const PROGRAMME_TOML: &str = r#"# The issuer's in-flight programme: the BINs it enrolls, and its risk rules.
# Published to aircraft as a signed BIN list; bump `version` on every change.
version = 1

[[bin]]
prefix = "400011"
kind = "credit"
# Largest single payment, minor units.
txn_limit_minor = 200000
# Largest total per card per flight, across all terminals of the aircraft.
card_flight_limit_minor = 300000
currencies = ["EUR", "USD"]
# How these cards may be read for an offline payment (default: chip and contactless only; a
# typed number is no evidence the card was there); and whether the cardholder's PIN, verified
# by the chip, is required (default false). The issuer also declines a chip card (accounts
# file: "chip": true) taken any way but its chip, whatever the BIN allows.
entry_modes = ["chip", "contactless", "key_entered"]
cvm_required = false

[[bin]]
# Chip-and-PIN only: a typed number or a tap without PIN is refused at the seat.
prefix = "520077"
kind = "debit"
txn_limit_minor = 100000
card_flight_limit_minor = 150000
currencies = ["EUR"]
entry_modes = ["chip"]
cvm_required = true

[[bin]]
prefix = "510055"
kind = "debit"
txn_limit_minor = 100000
card_flight_limit_minor = 150000
currencies = ["EUR"]
entry_modes = ["chip", "contactless", "key_entered"]

[[bin]]
prefix = "650123"
kind = "check"
txn_limit_minor = 50000
card_flight_limit_minor = 50000
currencies = ["EUR"]
entry_modes = ["chip", "contactless", "key_entered"]
"#;

/// The issuer's config.
pub fn issuer_toml(plan: &LocalPlan, root: &str) -> String {
    format!(
        r#"# inflight-issuer: the card issuer's ground server.
# Relative paths are resolved against this file's folder.

# Appears in the BIN list and in Hello.
issuer_name = "Demo Bank"
# The sled store: accounts (keyed by card hash), batches, decisions (the ledger).
data_dir = "{root}/data/issuer"
# Key of the card hash that keys accounts; 64 hex digits, mode 0600.
card_key_file = "{root}/keys/issuer.card.key"
# Issuer master key of the chip cards (AES-128, 32 hex digits, mode 0600): verifies each chip
# payment's application cryptogram. Absent: chip payments are declined cryptogram_invalid.
chip_key_file = "{root}/keys/issuer.chip.key"
# Local admin API (ledger), JSON lines on a Unix socket.
admin_socket = "{root}/run/issuer.sock"
log_format = "plain"
# Prometheus metrics: GET /metrics (text format) on this TCP address; absent, no metrics
# server. Plain HTTP without TLS: keep it on loopback or a management network.
# metrics_listen = "127.0.0.1:{metrics_port}"
# UDP address aircraft connect to (QUIC, ALPN inflight-ground/1).
listen = "127.0.0.1:{port}"
# Ed25519 key (PKCS#8, hex, mode 0600) that signs the BIN list. Terminals and the master hold
# its public half.
signing_key_file = "{root}/keys/issuer-signing.key"
# The in-flight programme (BINs and rules) and the accounts imported on first start.
programme_file = "{root}/issuer/programme.toml"
accounts_file = "{root}/issuer/accounts.json"
# A published list is valid for this long; the running issuer renews it (same version, new
# window, signed again) every quarter of that, so aircraft that see the ground keep a valid list.
bin_list_validity_hours = 48
# Oldest capture accepted in a batch; older ones are declined capture_time_out_of_bounds (so
# are captures stamped after the batch arrived, beyond a 10-minute clock allowance).
capture_age_max_days = 30

[admin]
# Who may use admin_socket besides root and this daemon's own user (checked per connection
# with SO_PEERCRED: the peer's effective uid and gid; supplementary groups do not count).
# Empty: nobody else, and the socket is mode 0600; otherwise 0660, so others must share its group.
allowed_uids = []
allowed_gids = []

[tls]
# Aircraft must present a certificate from the aircraft CA (only: terminals have their own CA),
# named <aircraft>.aircraft.inflight.
ca_file = "{root}/pki/aircraft-ca.pem"
# Its revocation list: a revoked aircraft is refused at its next handshake. Re-read, with the
# certificate and key, whenever it changes on disk (no restart).
crl_file = "{root}/pki/aircraft-ca.crl.pem"
cert_file = "{root}/pki/issuer.pem"
key_file = "{root}/pki/issuer.key"

[timers]
# An aircraft's TLS handshake must finish this soon after its first packet.
handshake_timeout_ms = 3000
hello_timeout_ms = 5000
# A batch in progress must move (a frame of items in, or of results out) at least this often,
# or it is dropped and gives back its share of the issuer's batch memory (one largest batch in
# all); a batch that cannot get a share within batch_budget_wait_ms is turned away and sent
# again by its aircraft later. No deadline on a whole batch: slow uplinks finish.
batch_frame_idle_ms = 30000
batch_budget_wait_ms = 60000
keep_alive_ms = 1000
idle_timeout_ms = 5000

[store]
cache_bytes = 33554432
"#,
        port = plan.base_port + 1,
        metrics_port = metrics_port(plan, 1),
    )
}

/// The master's config; paths relative to the config file, under `root` (the deployment folder
/// as seen from the config folder).
pub fn master_toml(plan: &LocalPlan, root: &str) -> String {
    format!(
        r#"# inflight-master: the aircraft server.
# Relative paths are resolved against this file's folder.

# Sent to terminals in Hello; appears in logs and reports.
aircraft_id = "{aircraft}"
# The sled store (payments, verdicts). Card data in it is sealed with card_key_file.
data_dir = "{root}/data/master"
# 32 random bytes as 64 hex digits; must be mode 0600.
card_key_file = "{root}/keys/master.card.key"
# Local admin API (status), JSON lines on a Unix socket.
admin_socket = "{root}/run/master.sock"
# "plain" or "json". The level: add log_level = "info" (RUST_LOG's syntax; re-read on SIGHUP),
# else RUST_LOG (default info).
log_format = "plain"
# Prometheus metrics: GET /metrics (text format) on this TCP address; absent, no metrics
# server. Plain HTTP without TLS: keep it on loopback or a management network.
# metrics_listen = "127.0.0.1:{metrics_port}"
# UDP address terminals connect to (QUIC, ALPN inflight-terminal/1).
listen = "127.0.0.1:{port}"
# Stamped on every payment and batch; the crew may change it (admin API).
flight_id = "{flight}"

[admin]
# Who may use admin_socket besides root and this daemon's own user (checked per connection
# with SO_PEERCRED: the peer's effective uid and gid; supplementary groups do not count).
# allowed_*: status and reports. crew_*: also the crew ops, link and flight.
# All empty: nobody else, and the socket is mode 0600; otherwise 0660, so others must share
# its group.
allowed_uids = []
allowed_gids = []
crew_uids = []
crew_gids = []

[tls]
# Terminals must present a certificate from the terminal CA, named <terminal-id>.terminal.inflight.
ca_file = "{root}/pki/terminal-ca.pem"
# Its revocation list: a revoked (stolen) terminal is refused at its next handshake. Re-read,
# with the certificate and key, whenever it changes on disk (no restart).
crl_file = "{root}/pki/terminal-ca.crl.pem"
cert_file = "{root}/pki/master.pem"
key_file = "{root}/pki/master.key"

[limits]
# Most terminals connected at once (authenticated connections: handshakes in progress are
# bounded apart, and a flood of them cannot take these slots); further ones are refused and retry.
terminals_max = 2000
# Open payments (stored, not yet delivered back) one terminal may have here; past it that
# terminal's new payments are refused (terminal_full), not the aircraft's.
terminal_open_payments_max = 20000
# Open payments of the whole aircraft; past it only terminals below their fair share
# (this / terminals_max) get new payments stored, the others' are refused (aircraft_full).
aircraft_open_payments_max = 2000000

[timers]
# A terminal's TLS handshake must finish this soon after its first packet (half-open
# handshakes from a flood are dropped at this deadline).
handshake_timeout_ms = 3000
# A terminal must say Hello this soon after its handshake.
hello_timeout_ms = 5000
keep_alive_ms = 2000
# A terminal silent this long is disconnected (it reconnects and re-sends).
idle_timeout_ms = 10000

[store]
# sled page cache. 8 MiB ingests as fast as 32 MiB here and keeps the master's memory down.
cache_bytes = 8388608

[runtime]
# Async worker threads; 0: one per core. The payment path is one actor and one flusher thread:
# on a small server 1 costs less CPU per payment (BENCHMARKS.md, "Worker threads").
worker_threads = 0

[report]
# Payments still waiting for the issuer after this many hours are counted in status as
# "aged" for the crew. They are never dropped.
payment_age_flag_hours = 24

[deadline]
# Deferred authorizations must reach the issuer within this many seconds of capture (24 h, the
# card schemes' rule). A payment sealed into a batch later is still carried, marked late: true.
window_secs = 86400
# The crew is warned (status deadline_soon, the report, a metric) this long before a payment's
# deadline while it waits for the issuer: time to find a link.
warn_lead_secs = 14400

[ground]
# The issuer (QUIC, ALPN inflight-ground/1). The master presents pki/master.pem, which also
# carries the name <aircraft_id>.aircraft.inflight.
issuer_addr = "127.0.0.1:{issuer_port}"
issuer_server_name = "{issuer_name}"
issuer_ca_file = "{root}/pki/issuer-ca.pem"
# The issuer CA's revocation list (re-read before each connection when it changed).
issuer_crl_file = "{root}/pki/issuer-ca.crl.pem"
# Verifies the signature on the issuer's BIN list.
issuer_public_key_file = "{root}/keys/issuer-signing.pub"
# The link watcher: a real handshake + ping every probe_interval_ms; up after probe_up_after
# good probes in a row, down after probe_down_after failures in a row.
probe_interval_ms = 1000
probe_up_after = 2
probe_down_after = 3
# After a failed upload, wait this long and send the same batch again.
upload_retry_ms = 1000
# While the link is up, ask the issuer for a newer or renewed BIN list this often (also at every
# link-up).
bin_list_refresh_ms = 60000
keep_alive_ms = 1000
idle_timeout_ms = 5000
connect_timeout_ms = 3000
"#,
        aircraft = plan.aircraft,
        port = plan.base_port,
        issuer_port = plan.base_port + 1,
        metrics_port = metrics_port(plan, 0),
        issuer_name = ISSUER_SERVER_NAME,
        flight = FLIGHT_ID,
    )
}

/// Terminal `k`'s config.
pub fn slave_toml(plan: &LocalPlan, k: u32, root: &str) -> String {
    let id = terminal_id(k);
    format!(
        r#"# inflight-slave: one seatback or crew terminal.
# Relative paths are resolved against this file's folder.

# Must match the name on this terminal's certificate ({id}.terminal.inflight).
terminal_id = "{id}"
# The terminal's own sled outbox.
data_dir = "{root}/data/{id}"
# 32 random bytes as 64 hex digits; must be mode 0600.
card_key_file = "{root}/keys/{id}.card.key"
# The sale app's capture and status API: JSON lines on this Unix socket.
capture_socket = "{root}/run/{id}.sock"
# The issuer's Ed25519 public key: BIN lists must carry its signature. Without a valid,
# unexpired list every card is refused (no_valid_bin_list).
issuer_public_key_file = "{root}/keys/issuer-signing.pub"
log_format = "plain"
# Prometheus metrics: GET /metrics (text format) on this TCP address; absent, no metrics
# server. Plain HTTP without TLS: keep it on loopback or a management network.
# metrics_listen = "127.0.0.1:{metrics_port}"

[capture]
# Who may use capture_socket (the sale app) besides root and this daemon's own user (checked
# per connection with SO_PEERCRED: the peer's effective uid and gid; supplementary groups do
# not count). Empty: nobody else, and the socket is mode 0600; otherwise 0660, so others must
# share its group.
allowed_uids = []
allowed_gids = []

[master]
addr = "127.0.0.1:{port}"
# Name on this aircraft's server certificate (each aircraft has its own).
server_name = "{master}"

[tls]
# The aircraft CA, which signs aircraft servers.
ca_file = "{root}/pki/aircraft-ca.pem"
# Its revocation list: a revoked aircraft server is refused. Re-read, with the CA, certificate
# and key, before each connection attempt (a renewed certificate needs no restart either).
crl_file = "{root}/pki/aircraft-ca.crl.pem"
cert_file = "{root}/pki/{id}.pem"
key_file = "{root}/pki/{id}.key"

[limits]
# This terminal's risk caps: what it may hold that the master has not acked.
stored_payments_max = 10000
# Per currency, in minor units.
stored_amount_minor_max = 10000000
# Largest single payment, minor units.
txn_amount_minor_max = 500000
# How long a capture waits for the master's verdict before answering "accepted" anyway
# (the payment is durable here and is forwarded when the master is back).
verdict_wait_ms = 500
# After a restart, how long a payment whose sale app was never answered may still be claimed
# by a retry with the same request_id; then it is voided and never charged.
claim_grace_ms = 60000
# Payments in flight to the master at once (pipelined, acked by id).
forward_window = 256
# Re-send a payment not acked in this time.
ack_timeout_ms = 5000

[timers]
keep_alive_ms = 2000
idle_timeout_ms = 10000
connect_timeout_ms = 3000
# Reconnect backoff: doubles from min to max, with jitter.
reconnect_min_ms = 100
reconnect_max_ms = 5000

[store]
cache_bytes = 2097152
"#,
        port = plan.base_port,
        master = master_server_name(&plan.aircraft),
        metrics_port = metrics_port(plan, 1 + k),
    )
}

/// The TCP port suggested (commented out) for a daemon's `metrics_listen`: 2000 above the
/// base port, the master first, then the issuer, then terminal k at `1 + k`.
fn metrics_port(plan: &LocalPlan, n: u32) -> u32 {
    u32::from(plan.base_port) + 2000 + n
}

/// One published test card (DESIGN.md §8 field names).
#[derive(Debug, Clone, Serialize)]
pub struct TestCard {
    /// Full card number: test data, published on purpose.
    pub pan: String,
    /// `MM/YY`.
    pub expiry: String,
    /// `credit`, `debit` or `check`.
    pub kind: &'static str,
    /// Whether its BIN is on the in-flight list.
    pub enrolled: bool,
    /// Credit available or balance, minor units.
    pub available_minor: u64,
    /// Account currency.
    pub currency: &'static str,
    /// `open`, `blocked`, or `lost` (blocked, and on the issuer's hot-card list from the start).
    pub status: &'static str,
    /// What a capture with it should lead to.
    pub expect: &'static str,
    /// A chip card: its chip data is made by `inflight-setup chip-data` with the issuer's
    /// `keys/issuer.chip.key` (the card's own keys are derived from it); it can still be keyed.
    pub chip: bool,
    /// The card's PAN sequence number (EMV tag 5F34).
    pub pan_sequence: u8,
}

/// A Luhn-valid card number: `prefix`, then `serial` zero-padded, then the check digit.
pub fn luhn_card(prefix: &str, serial: u64, len: usize) -> String {
    let body_len = len - 1 - prefix.len();
    let body = format!("{prefix}{serial:0body_len$}");
    for check in 0..10 {
        let candidate = format!("{body}{check}");
        if Pan::parse(&candidate).is_ok() {
            return candidate;
        }
    }
    unreachable!("exactly one check digit satisfies Luhn")
}

/// The demo cards, covering every outcome (the programme is [`PROGRAMME_TOML`]).
pub fn test_cards() -> Vec<TestCard> {
    let c = |prefix: &str, serial, expiry: &str, kind, enrolled, available_minor, status, expect| TestCard {
        pan: luhn_card(prefix, serial, 16),
        expiry: expiry.into(),
        kind,
        enrolled,
        available_minor,
        currency: "EUR",
        status,
        expect,
        chip: false,
        pan_sequence: 0,
    };
    let chip = |card: TestCard| TestCard { chip: true, pan_sequence: 1, ..card };
    vec![
        c("400011", 1, "12/30", "credit", true, 500_000, "open", "approved"),
        c("400011", 2, "12/30", "credit", true, 2_000_000, "open", "approved"),
        c("510055", 3, "12/30", "debit", true, 100_000, "open", "approved"),
        c("650123", 4, "12/30", "check", true, 30_000, "open", "approved"),
        c("400011", 5, "12/30", "credit", true, 500, "open", "declined:insufficient_funds"),
        c("510055", 6, "12/30", "debit", true, 100_000, "blocked", "declined:account_blocked"),
        c("371449", 7, "12/30", "credit", false, 500_000, "open", "rejected:bin_not_enrolled"),
        c("400011", 8, "12/30", "credit", true, 5_000_000, "open", "rejected:over_txn_limit above 200000"),
        c("400011", 9, "01/24", "credit", true, 500_000, "open", "rejected:expired"),
        c("510055", 10, "12/30", "debit", true, 100_000, "lost", "rejected:hot_card"),
        chip(c(
            "400011",
            11,
            "12/30",
            "credit",
            true,
            500_000,
            "open",
            "approved; altered after the card signed: declined:cryptogram_invalid",
        )),
        chip(c(
            "520077",
            12,
            "12/30",
            "debit",
            true,
            100_000,
            "open",
            "approved with chip and PIN; rejected:cvm_required without PIN, rejected:entry_mode_not_allowed keyed",
        )),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_are_valid_and_distinct() {
        let cards = test_cards();
        let mut pans: Vec<&str> = cards.iter().map(|c| c.pan.as_str()).collect();
        for p in &pans {
            assert!(Pan::parse(p).is_ok(), "{p}");
        }
        pans.sort_unstable();
        pans.dedup();
        assert_eq!(pans.len(), cards.len());
    }

    #[test]
    fn writes_a_deployment_with_private_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = LocalPlan { out: dir.path().to_owned(), terminals: 2, aircraft: "d-abcd".into(), base_port: 7400 };
        write_local(&plan).expect("written");
        for f in [
            "config/master.toml",
            "config/issuer.toml",
            "config/slave-1.toml",
            "config/slave-2.toml",
            "pki/slave-2.pem",
            "keys/issuer-signing.pub",
            "issuer/programme.toml",
            "issuer/accounts.json",
            "test-cards.json",
        ] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                std::fs::metadata(dir.path().join("keys/slave-1.card.key")).expect("exists").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(write_local(&plan).is_err(), "never overwrites a deployment's keys");
    }
}
