//! The issuer daemon's configuration, and its programme and accounts files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inflight_core::authorize::Account;
use inflight_daemon::{ConfigErrors, ConfigReader, LogFormat, LogLevel};
use inflight_net::endpoint::LinkTimers;
use inflight_wire::{BinPrefix, BinRule, CardKind, Currency, EntryMode, Expiry, Pan, BIN_RULES_MAX};
use serde::Deserialize;

/// Everything `inflight-issuer` needs, validated.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The issuer's name, in its BIN list and `Hello`.
    pub issuer_name: String,
    /// The sled store's folder.
    pub data_dir: PathBuf,
    /// Key for the card hash that keys accounts (mode 0600).
    pub card_key_file: PathBuf,
    /// The issuer master key for chip cryptograms (AES-128, 32 hex digits, mode 0600); without
    /// it chip and contactless payments cannot be verified and are declined `cryptogram_invalid`.
    pub chip_key_file: Option<PathBuf>,
    /// Unix socket of the admin API (ledger).
    pub admin_socket: PathBuf,
    /// Who may use the admin socket (`[admin]`: `allowed_uids`, `allowed_gids`). Its ops
    /// (ledger, accounts) only read.
    pub admin_access: inflight_daemon::local::Access,
    /// UDP address aircraft connect to.
    pub listen: SocketAddr,
    /// TCP address of the Prometheus `GET /metrics` server; none when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Ed25519 key signing the BIN list (PKCS#8 as hex, mode 0600).
    pub signing_key_file: PathBuf,
    /// The BIN programme (TOML).
    pub programme_file: PathBuf,
    /// Accounts imported on first start (JSON).
    pub accounts_file: PathBuf,
    /// How long a published list stays valid.
    pub bin_list_validity: Duration,
    /// Oldest capture accepted in a batch (older ones are declined `capture_time_out_of_bounds`).
    pub capture_age_max: Duration,
    /// CA whose aircraft certificates are accepted.
    pub ca_file: PathBuf,
    /// Revocation list of the aircraft CA (PEM), if any: a revoked aircraft is refused at its
    /// next handshake. Re-read (with the certificate and key) whenever it changes on disk.
    pub crl_file: Option<PathBuf>,
    /// The issuer's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its key (PEM).
    pub key_file: PathBuf,
    /// An aircraft must say `Hello` this soon.
    pub hello_timeout: Duration,
    /// Longest gap between two frames of a batch (items in, results out): a batch that stops
    /// moving gives its memory share back.
    pub batch_frame_idle: Duration,
    /// Longest a batch waits for its memory share before it is turned away (sent again later).
    pub batch_budget_wait: Duration,
    /// QUIC timers.
    pub timers: LinkTimers,
    /// sled page cache.
    pub cache_bytes: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`log_level`), which wins over `RUST_LOG`; re-read on SIGHUP.
    pub log_level: Option<LogLevel>,
}

impl IssuerConfig {
    /// Reads and checks `file`; every problem is reported.
    pub fn load(file: &Path) -> Result<Self, ConfigErrors> {
        let mut r = ConfigReader::load(file)?;
        let ms = Duration::from_millis;
        let issuer_name = r.parse("issuer_name", |s| {
            if s.is_empty() || s.len() > 64 {
                Err("must be 1-64 characters")
            } else {
                Ok(s.to_owned())
            }
        });
        let data_dir = r.path("data_dir");
        let card_key_file = r.path("card_key_file");
        let chip_key_file = r.optional_path("chip_key_file");
        let admin_socket = r.path("admin_socket");
        let admin_access = inflight_daemon::local::Access::read(&mut r, "admin", false);
        let log_format = r.log_format();
        let log_level = r.log_level();
        let listen = r.socket_addr("listen");
        let metrics_listen = inflight_daemon::metrics::read_listen(&mut r);
        let signing_key_file = r.path("signing_key_file");
        let programme_file = r.path("programme_file");
        let accounts_file = r.path("accounts_file");
        let validity_h = r.u64_or("bin_list_validity_hours", 48, 1, 24 * 365);
        // Finer-grained, for tests and drills; 0 (the default) means: use the hours.
        let validity_s = r.u64_or("bin_list_validity_seconds", 0, 0, 24 * 365 * 3600);
        let capture_age_max_days = r.u64_or("capture_age_max_days", 30, 1, 400);
        let ca_file = r.path("tls.ca_file");
        let crl_file = r.optional_path("tls.crl_file");
        let cert_file = r.path("tls.cert_file");
        let key_file = r.path("tls.key_file");
        let hello_timeout = r.millis_or("timers.hello_timeout_ms", ms(5_000), ms(100), ms(60_000));
        let batch_frame_idle = r.millis_or("timers.batch_frame_idle_ms", ms(30_000), ms(100), ms(3_600_000));
        let batch_budget_wait = r.millis_or("timers.batch_budget_wait_ms", ms(60_000), ms(100), ms(3_600_000));
        let (keep_alive, idle) = r.link_keep_alive_and_idle();
        let timers = LinkTimers {
            keep_alive,
            idle,
            // On a server: the deadline of each incoming handshake.
            connect: r.millis_or("timers.handshake_timeout_ms", ms(3_000), ms(100), ms(60_000)),
            window_bytes: None,
        };
        let cache_bytes = r.u64_or("store.cache_bytes", 32 << 20, 1 << 20, 4 << 30);
        r.finish()?;
        let missing = "checked by ConfigReader::finish";
        Ok(Self {
            issuer_name: issuer_name.expect(missing),
            data_dir: data_dir.expect(missing),
            card_key_file: card_key_file.expect(missing),
            chip_key_file,
            admin_socket: admin_socket.expect(missing),
            admin_access,
            listen: listen.expect(missing),
            metrics_listen,
            signing_key_file: signing_key_file.expect(missing),
            programme_file: programme_file.expect(missing),
            accounts_file: accounts_file.expect(missing),
            bin_list_validity: Duration::from_secs(if validity_s > 0 { validity_s } else { validity_h * 3600 }),
            capture_age_max: Duration::from_secs(capture_age_max_days * 86_400),
            ca_file: ca_file.expect(missing),
            crl_file,
            cert_file: cert_file.expect(missing),
            key_file: key_file.expect(missing),
            hello_timeout,
            batch_frame_idle,
            batch_budget_wait,
            timers,
            cache_bytes,
            log_format: log_format.expect(missing),
            log_level,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgrammeFile {
    version: u64,
    #[serde(rename = "bin", default)]
    bins: Vec<BinEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BinEntry {
    prefix: String,
    kind: String,
    txn_limit_minor: u64,
    card_flight_limit_minor: u64,
    currencies: Vec<String>,
    /// Absent: chip and contactless only. A programme that takes typed card numbers offline (no
    /// evidence the card was there) says so.
    entry_modes: Option<Vec<String>>,
    #[serde(default)]
    cvm_required: bool,
}

/// The BIN programme: its version and rules. Every bad entry is reported.
pub fn load_programme(path: &Path) -> Result<(u64, Vec<BinRule>), Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let file: ProgrammeFile =
        toml::from_str(&text).map_err(|e| vec![format!("{}: {}", path.display(), e.message())])?;
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    if file.bins.is_empty() || file.bins.len() > BIN_RULES_MAX {
        errors.push(format!("{}: must list 1-{BIN_RULES_MAX} [[bin]] entries", path.display()));
    }
    for (i, b) in file.bins.iter().enumerate() {
        let at = |what: String| format!("{} bin #{}: {what}", path.display(), i + 1);
        let prefix = BinPrefix::parse(&b.prefix).map_err(|e| errors.push(at(e))).ok();
        let kind = CardKind::parse(&b.kind).map_err(|e| errors.push(at(e))).ok();
        let currencies: Vec<Currency> = b
            .currencies
            .iter()
            .filter_map(|c| Currency::parse(c).map_err(|e| errors.push(at(format!("{c}: {e}")))).ok())
            .collect();
        let entry_modes: Vec<EntryMode> = match &b.entry_modes {
            None => vec![EntryMode::Chip, EntryMode::Contactless],
            Some(modes) => {
                let parsed: Vec<EntryMode> = modes
                    .iter()
                    .filter_map(|m| EntryMode::parse(m).map_err(|e| errors.push(at(format!("{m}: {e}")))).ok())
                    .collect();
                if modes.is_empty() || (1..parsed.len()).any(|i| parsed[..i].contains(&parsed[i])) {
                    errors.push(at(
                        "entry_modes must list one or more of chip, contactless, key_entered, once each".into()
                    ));
                }
                parsed
            }
        };
        if b.cvm_required && entry_modes.contains(&EntryMode::KeyEntered) {
            errors.push(at(
                "cvm_required takes no key_entered payment (no chip verifies a PIN): remove it from entry_modes".into(),
            ));
        }
        if b.txn_limit_minor == 0 || b.card_flight_limit_minor < b.txn_limit_minor {
            errors.push(at("limits must be positive, with card_flight_limit_minor >= txn_limit_minor".into()));
        }
        if let (Some(prefix), Some(kind)) = (prefix, kind) {
            rules.push(BinRule {
                prefix,
                kind,
                txn_limit_minor: b.txn_limit_minor,
                card_flight_limit_minor: b.card_flight_limit_minor,
                currencies,
                entry_modes,
                cvm_required: b.cvm_required,
            });
        }
    }
    if errors.is_empty() {
        Ok((file.version, rules))
    } else {
        Err(errors)
    }
}

#[derive(Deserialize)]
struct AccountEntry {
    pan: String,
    kind: String,
    expiry: String,
    available_minor: u64,
    currency: String,
    status: String,
    /// A chip card (`test-cards.json` marks them): never taken keyed offline.
    #[serde(default)]
    chip: bool,
}

/// The accounts of the accounts file, and the cards among them reported lost (status `lost`:
/// blocked, and on the hot-card list from the first start).
#[derive(Debug)]
pub struct Accounts {
    /// Every account.
    pub accounts: Vec<(Pan, Account)>,
    /// The cards to list hot when the accounts are imported.
    pub lost: Vec<Pan>,
}

/// The accounts file: a JSON array of `{pan, kind, expiry, available_minor, currency, status}`
/// and optionally `chip` (the same fields as `test-cards.json`; other fields are ignored). `status` is `open`,
/// `blocked`, or `lost` (blocked and listed hot). Errors never quote a PAN.
pub fn load_accounts(path: &Path) -> Result<Accounts, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let entries: Vec<AccountEntry> = serde_json::from_str(&text)
        .map_err(|e| vec![format!("{}: not a JSON array of accounts (line {})", path.display(), e.line())])?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut lost = Vec::new();
    for (i, a) in entries.iter().enumerate() {
        let at = |what: String| format!("{} account #{}: {what}", path.display(), i + 1);
        let pan = Pan::parse(&a.pan).map_err(|e| errors.push(at(e.to_string()))).ok();
        // Never quote a field's value: in a file with shifted columns it may be a card number
        // (found by review).
        let kind = CardKind::parse(&a.kind).map_err(|e| errors.push(at(e))).ok();
        let expiry = Expiry::parse(&a.expiry).map_err(|e| errors.push(at(e.to_string()))).ok();
        let currency = Currency::parse(&a.currency).map_err(|e| errors.push(at(e.to_string()))).ok();
        let open = match a.status.as_str() {
            "open" => Some(true),
            "blocked" | "lost" => Some(false),
            other => {
                let _ = other;
                errors.push(at("status must be open, blocked or lost".into()));
                None
            }
        };
        if let (Some(pan), Some(kind), Some(expiry), Some(currency), Some(open)) = (pan, kind, expiry, currency, open) {
            if a.status == "lost" {
                lost.push(pan.clone());
            }
            out.push((pan, Account { kind, expiry, available_minor: a.available_minor, currency, open, chip: a.chip }));
        }
    }
    if errors.is_empty() {
        Ok(Accounts { accounts: out, lost })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programme(rules: &str) -> Result<(u64, Vec<BinRule>), Vec<String>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("programme.toml");
        let head = "version = 3\n[[bin]]\nprefix = \"400011\"\nkind = \"credit\"\ntxn_limit_minor = 100\ncard_flight_limit_minor = 100\ncurrencies = [\"EUR\"]\n";
        std::fs::write(&path, format!("{head}{rules}")).expect("write");
        load_programme(&path)
    }

    /// A programme that names no entry modes takes the chip only (chip and contactless): typed
    /// numbers are taken only where the issuer says so.
    #[test]
    fn entry_modes_default_to_the_chip_and_are_checked() {
        let (_, rules) = programme("").expect("valid");
        assert_eq!(
            (rules[0].entry_modes.clone(), rules[0].cvm_required),
            (vec![EntryMode::Chip, EntryMode::Contactless], false)
        );
        let (_, rules) = programme("entry_modes = [\"key_entered\"]\n").expect("valid");
        assert_eq!(rules[0].entry_modes, vec![EntryMode::KeyEntered]);
        for (bad, says) in [
            ("entry_modes = [\"swipe\"]\n", "entry mode must be"),
            ("entry_modes = []\n", "once each"),
            ("entry_modes = [\"chip\", \"chip\"]\n", "once each"),
            ("entry_modes = [\"chip\", \"key_entered\"]\ncvm_required = true\n", "cvm_required takes no key_entered"),
        ] {
            let errors = programme(bad).expect_err(bad);
            assert!(errors.iter().any(|e| e.contains(says)), "{bad}: {errors:?}");
        }
    }
}
