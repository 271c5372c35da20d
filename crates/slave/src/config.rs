//! The terminal daemon's configuration, parsed into types.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inflight_core::capture::{Site, TerminalCaps};
use inflight_daemon::{ConfigErrors, ConfigReader, LogFormat, LogLevel};
use inflight_net::endpoint::LinkTimers;
use inflight_wire::{Mcc, TerminalId, TerminalType, AMOUNT_MINOR_MAX};

/// Everything `inflight-slave` needs, validated.
#[derive(Debug, Clone)]
pub struct SlaveConfig {
    /// This terminal's id; must match its certificate.
    pub terminal_id: TerminalId,
    /// The sled store's folder.
    pub data_dir: PathBuf,
    /// Key file sealing card data at rest (mode 0600).
    pub card_key_file: PathBuf,
    /// Unix socket of the capture and status API.
    pub capture_socket: PathBuf,
    /// Who may use the capture socket (`[capture]`: `allowed_uids`, `allowed_gids`: the sale
    /// app's user or group). Its ops (capture, status) are all the sale app's: no crew ops.
    pub capture_access: inflight_daemon::local::Access,
    /// The master's UDP address.
    pub master_addr: SocketAddr,
    /// TCP address of the Prometheus `GET /metrics` server; none when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Name on the master's certificate.
    pub master_server_name: String,
    /// CA that signs the master's certificate.
    pub ca_file: PathBuf,
    /// The issuer's Ed25519 public key: a BIN list must carry its signature.
    pub issuer_public_key: [u8; 32],
    /// This terminal's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Revocation list of the aircraft CA (PEM), if any: a revoked aircraft server is refused.
    /// Re-read, with the CA, certificate and key, before each connection attempt.
    pub crl_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// Risk caps of this terminal.
    pub caps: TerminalCaps,
    /// What this terminal is (`terminal_type`: `unattended` seatback or `attended` crew) and the
    /// merchant category of a sale that names none (`merchant_category`, default 5309).
    pub site: Site,
    /// How long a capture waits for the master's verdict before answering `accepted` anyway.
    pub verdict_wait: Duration,
    /// How long, after a restart, a payment whose sale app was never answered may still be
    /// claimed by a retry with its `request_id`; then it is voided (never charged).
    pub claim_grace: Duration,
    /// Most payments in flight to the master at once.
    pub forward_window: usize,
    /// Re-send a payment not acked within this time.
    pub ack_timeout: Duration,
    /// QUIC timers.
    pub timers: LinkTimers,
    /// First reconnect delay; doubles up to `reconnect_max`, with jitter.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// sled page cache size.
    pub cache_bytes: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`log_level`), which wins over `RUST_LOG`; re-read on SIGHUP.
    pub log_level: Option<LogLevel>,
}

impl SlaveConfig {
    /// Reads and checks `file`; every problem is reported.
    pub fn load(file: &Path) -> Result<Self, ConfigErrors> {
        let mut r = ConfigReader::load(file)?;
        let ms = Duration::from_millis;
        let terminal_id = r.parse("terminal_id", TerminalId::parse);
        let data_dir = r.path("data_dir");
        let card_key_file = r.path("card_key_file");
        let capture_socket = r.path("capture_socket");
        let capture_access = inflight_daemon::local::Access::read(&mut r, "capture", false);
        let log_format = r.log_format();
        let log_level = r.log_level();
        let master_addr = r.socket_addr("master.addr");
        let metrics_listen = inflight_daemon::metrics::read_listen(&mut r);
        let master_server_name = r.string("master.server_name");
        let ca_file = r.path("tls.ca_file");
        let issuer_public_key = r.path("issuer_public_key_file").and_then(|p| {
            match std::fs::read_to_string(&p)
                .map_err(|e| e.to_string())
                .and_then(|t| inflight_store::parse_public_key_hex(&t))
            {
                Ok(k) => Some(k),
                Err(e) => {
                    r.error("issuer_public_key_file", format!("{}: {e}", p.display()));
                    None
                }
            }
        });
        let cert_file = r.path("tls.cert_file");
        let crl_file = r.optional_path("tls.crl_file");
        let key_file = r.path("tls.key_file");
        let caps = TerminalCaps {
            stored_payments_max: r.u64_or("limits.stored_payments_max", 10_000, 1, 1_000_000),
            stored_amount_minor_max: r.u64_or("limits.stored_amount_minor_max", 10_000_000, 1, AMOUNT_MINOR_MAX),
            txn_amount_minor_max: r.u64_or("limits.txn_amount_minor_max", 500_000, 1, AMOUNT_MINOR_MAX),
        };
        let site = Site {
            terminal_type: r
                .parse_or("terminal_type", TerminalType::UnattendedOfflineOnly, TerminalType::parse)
                .unwrap_or(TerminalType::UnattendedOfflineOnly),
            mcc: r.parse_or("merchant_category", Mcc::DUTY_FREE, Mcc::parse).unwrap_or(Mcc::DUTY_FREE),
        };
        let verdict_wait = r.millis_or("limits.verdict_wait_ms", ms(500), ms(0), ms(30_000));
        let claim_grace = r.millis_or("limits.claim_grace_ms", ms(60_000), ms(100), ms(86_400_000));
        let forward_window =
            r.u64_or("limits.forward_window", 256, 1, inflight_core::outbox::WINDOW_MAX as u64) as usize;
        let ack_timeout = r.millis_or("limits.ack_timeout_ms", ms(5_000), ms(100), ms(600_000));
        let (keep_alive, idle) = r.link_keep_alive_and_idle();
        let timers = LinkTimers {
            keep_alive,
            idle,
            connect: r.millis_or("timers.connect_timeout_ms", ms(3_000), ms(100), ms(60_000)),
            window_bytes: Some(inflight_net::endpoint::TERMINAL_WINDOW_BYTES),
        };
        let reconnect_min = r.millis_or("timers.reconnect_min_ms", ms(100), ms(10), ms(60_000));
        let reconnect_max = r.millis_or("timers.reconnect_max_ms", ms(5_000), ms(10), ms(600_000));
        let cache_bytes = r.u64_or("store.cache_bytes", 2 << 20, 256 << 10, 1 << 30);
        if reconnect_min > reconnect_max {
            r.error("timers.reconnect_min_ms", "must not exceed timers.reconnect_max_ms");
        }
        r.finish()?;
        // `finish` succeeded, so every required value above is present.
        let missing = "checked by ConfigReader::finish";
        Ok(Self {
            terminal_id: terminal_id.expect(missing),
            data_dir: data_dir.expect(missing),
            card_key_file: card_key_file.expect(missing),
            capture_socket: capture_socket.expect(missing),
            capture_access,
            master_addr: master_addr.expect(missing),
            metrics_listen,
            master_server_name: master_server_name.expect(missing),
            ca_file: ca_file.expect(missing),
            issuer_public_key: issuer_public_key.expect(missing),
            cert_file: cert_file.expect(missing),
            crl_file,
            key_file: key_file.expect(missing),
            caps,
            site,
            verdict_wait,
            claim_grace,
            forward_window,
            ack_timeout,
            timers,
            reconnect_min,
            reconnect_max,
            cache_bytes,
            log_format: log_format.expect(missing),
            log_level,
        })
    }
}
