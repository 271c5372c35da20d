//! The aircraft daemon's configuration, parsed into types.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inflight_core::deadline::Deadline;
use inflight_daemon::{ConfigErrors, ConfigReader, LogFormat, LogLevel};
use inflight_net::endpoint::LinkTimers;

/// Everything `inflight-master` needs, validated.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// The aircraft's registration or id, sent to terminals in `Hello`.
    pub aircraft_id: String,
    /// The sled store's folder.
    pub data_dir: PathBuf,
    /// Key file sealing card data at rest (mode 0600).
    pub card_key_file: PathBuf,
    /// Unix socket of the admin API (status, report; crew ops: link, flight).
    pub admin_socket: PathBuf,
    /// Who may use the admin socket (`[admin]`: `allowed_uids`, `allowed_gids` for status and
    /// reports, `crew_uids`, `crew_gids` also for the crew ops).
    pub admin_access: inflight_daemon::local::Access,
    /// UDP address terminals connect to.
    pub listen: SocketAddr,
    /// TCP address of the Prometheus `GET /metrics` server; none when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// CA whose certificates terminals must present.
    pub ca_file: PathBuf,
    /// Revocation list of the terminal CA (PEM), if any: a revoked terminal is refused at its
    /// next handshake. Re-read (with the certificate and key) whenever it changes on disk.
    pub crl_file: Option<PathBuf>,
    /// The master's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// Most terminals connected at once; more are refused at once and retry.
    pub terminals_max: usize,
    /// Open payments (stored, not delivered back) one terminal may have here.
    pub terminal_open_payments_max: usize,
    /// Open payments of the aircraft past which only terminals below their fair share
    /// (`aircraft_open_payments_max / terminals_max`) get new payments stored.
    pub aircraft_open_payments_max: usize,
    /// A terminal must send `Hello` within this time of connecting.
    pub hello_timeout: Duration,
    /// QUIC timers; `connect` is the deadline of each terminal's handshake.
    pub timers: LinkTimers,
    /// sled page cache size.
    pub cache_bytes: u64,
    /// Async worker threads (`runtime.worker_threads`; absent: one per core). The payment path
    /// is one actor and one flusher thread, so fewer workers than cores wake each other less:
    /// see BENCHMARKS.md for what it changes.
    pub worker_threads: Option<usize>,
    /// Payments still waiting for the issuer after this long are flagged to the crew (never
    /// dropped).
    pub payment_age_flag: Duration,
    /// The deferred-authorization deadline (`deadline.window_secs` after capture) and the
    /// crew's warning lead time (`deadline.warn_lead_secs`).
    pub deadline: Deadline,
    /// The flight stamped on new payments (the crew may change it).
    pub flight_id: String,
    /// How to reach the issuer.
    pub ground: GroundConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`log_level`), which wins over `RUST_LOG`; re-read on SIGHUP.
    pub log_level: Option<LogLevel>,
}

/// The ground link.
#[derive(Debug, Clone)]
pub struct GroundConfig {
    /// The issuer's UDP address.
    pub issuer_addr: SocketAddr,
    /// Name on the issuer's certificate.
    pub issuer_server_name: String,
    /// CA that signs the issuer's certificate.
    pub issuer_ca_file: PathBuf,
    /// That CA's revocation list (PEM), if any; read at start.
    pub issuer_crl_file: Option<PathBuf>,
    /// The issuer's Ed25519 public key (64 hex digits), which signs the BIN list.
    pub issuer_public_key: [u8; 32],
    /// Time between link probes.
    pub probe_interval: Duration,
    /// Consecutive good probes before the link is called up.
    pub probe_up_after: u32,
    /// Consecutive failed probes before it is called down.
    pub probe_down_after: u32,
    /// Wait before retrying a failed upload.
    pub upload_retry: Duration,
    /// While the link is up, ask the issuer for a newer or renewed BIN list this often.
    pub bin_list_refresh: Duration,
    /// QUIC timers of the ground link.
    pub timers: LinkTimers,
}

impl MasterConfig {
    /// Reads and checks `file`; every problem is reported.
    pub fn load(file: &Path) -> Result<Self, ConfigErrors> {
        let mut r = ConfigReader::load(file)?;
        let ms = Duration::from_millis;
        let aircraft_id = r.parse("aircraft_id", |s| {
            if !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                Ok(s.to_owned())
            } else {
                Err("must be 1-32 characters of letters, digits and '-'")
            }
        });
        let data_dir = r.path("data_dir");
        let card_key_file = r.path("card_key_file");
        let admin_socket = r.path("admin_socket");
        let admin_access = inflight_daemon::local::Access::read(&mut r, "admin", true);
        let log_format = r.log_format();
        let log_level = r.log_level();
        let listen = r.socket_addr("listen");
        let metrics_listen = inflight_daemon::metrics::read_listen(&mut r);
        let ca_file = r.path("tls.ca_file");
        let crl_file = r.optional_path("tls.crl_file");
        let cert_file = r.path("tls.cert_file");
        let key_file = r.path("tls.key_file");
        let terminals_max = r.u64_or("limits.terminals_max", 2_000, 1, 100_000) as usize;
        let terminal_open_payments_max = r.u64_or(
            "limits.terminal_open_payments_max",
            inflight_core::aggregator::TERMINAL_OPEN_MAX as u64,
            1,
            10_000_000,
        ) as usize;
        let aircraft_open_payments_max = r.u64_or(
            "limits.aircraft_open_payments_max",
            inflight_core::aggregator::PAYMENTS_MAX as u64,
            1,
            100_000_000,
        ) as usize;
        let hello_timeout = r.millis_or("timers.hello_timeout_ms", ms(5_000), ms(100), ms(60_000));
        let (keep_alive, idle) = r.link_keep_alive_and_idle();
        let timers = LinkTimers {
            keep_alive,
            idle,
            connect: r.millis_or("timers.handshake_timeout_ms", ms(3_000), ms(100), ms(60_000)),
            window_bytes: Some(inflight_net::endpoint::TERMINAL_WINDOW_BYTES),
        };
        let cache_bytes = r.u64_or("store.cache_bytes", 32 << 20, 1 << 20, 4 << 30);
        let worker_threads = match r.u64_or("runtime.worker_threads", 0, 0, 256) {
            0 => None,
            n => Some(n as usize),
        };
        let flight_id = r.parse("flight_id", parse_flight_id);
        let payment_age_flag = Duration::from_secs(3600 * r.u64_or("report.payment_age_flag_hours", 24, 1, 24 * 365));
        // Seconds, so that a test can run a whole missed deadline in seconds; 24 h by the card
        // schemes' deferred-authorization rules.
        let window_secs =
            r.u64_or("deadline.window_secs", inflight_core::deadline::WINDOW_DEFAULT_MS / 1000, 1, 30 * 24 * 3600);
        let warn_lead_secs = r.u64_or(
            "deadline.warn_lead_secs",
            inflight_core::deadline::WARN_LEAD_DEFAULT_MS / 1000,
            0,
            30 * 24 * 3600,
        );
        let deadline = match Deadline::new(window_secs * 1000, warn_lead_secs * 1000) {
            Ok(d) => d,
            Err(e) => {
                r.error("deadline.warn_lead_secs", e.to_string());
                Deadline::default()
            }
        };
        let issuer_addr = r.socket_addr("ground.issuer_addr");
        let issuer_server_name = r.string("ground.issuer_server_name");
        let issuer_ca_file = r.path("ground.issuer_ca_file");
        let issuer_crl_file = r.optional_path("ground.issuer_crl_file");
        let issuer_public_key =
            r.path("ground.issuer_public_key_file").and_then(|p| match std::fs::read_to_string(&p) {
                Ok(text) => match inflight_store::parse_public_key_hex(&text) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        r.error("ground.issuer_public_key_file", format!("{}: {e}", p.display()));
                        None
                    }
                },
                Err(e) => {
                    r.error("ground.issuer_public_key_file", format!("{}: {e}", p.display()));
                    None
                }
            });
        let probe_interval = r.millis_or("ground.probe_interval_ms", ms(1_000), ms(50), ms(600_000));
        let probe_up_after = r.u64_or("ground.probe_up_after", 2, 1, 100) as u32;
        let probe_down_after = r.u64_or("ground.probe_down_after", 3, 1, 100) as u32;
        let upload_retry = r.millis_or("ground.upload_retry_ms", ms(1_000), ms(10), ms(600_000));
        let bin_list_refresh = r.millis_or("ground.bin_list_refresh_ms", ms(60_000), ms(100), ms(86_400_000));
        let ground_timers = LinkTimers {
            keep_alive: r.millis_or("ground.keep_alive_ms", ms(1_000), ms(100), ms(60_000)),
            idle: r.millis_or("ground.idle_timeout_ms", ms(5_000), ms(500), ms(600_000)),
            connect: r.millis_or("ground.connect_timeout_ms", ms(3_000), ms(100), ms(60_000)),
            window_bytes: None,
        };
        r.finish()?;
        let missing = "checked by ConfigReader::finish";
        Ok(Self {
            aircraft_id: aircraft_id.expect(missing),
            data_dir: data_dir.expect(missing),
            card_key_file: card_key_file.expect(missing),
            admin_socket: admin_socket.expect(missing),
            admin_access,
            listen: listen.expect(missing),
            metrics_listen,
            ca_file: ca_file.expect(missing),
            crl_file,
            cert_file: cert_file.expect(missing),
            key_file: key_file.expect(missing),
            terminals_max,
            terminal_open_payments_max,
            aircraft_open_payments_max,
            hello_timeout,
            timers,
            cache_bytes,
            worker_threads,
            log_format: log_format.expect(missing),
            log_level,
            flight_id: flight_id.expect(missing),
            payment_age_flag,
            deadline,
            ground: GroundConfig {
                issuer_addr: issuer_addr.expect(missing),
                issuer_server_name: issuer_server_name.expect(missing),
                issuer_ca_file: issuer_ca_file.expect(missing),
                issuer_crl_file,
                issuer_public_key: issuer_public_key.expect(missing),
                probe_interval,
                probe_up_after,
                probe_down_after,
                upload_retry,
                bin_list_refresh,
                timers: ground_timers,
            },
        })
    }
}

impl MasterConfig {
    /// What one terminal may hold at the master.
    pub fn limits(&self) -> inflight_core::aggregator::Limits {
        inflight_core::aggregator::Limits::new(
            self.terminal_open_payments_max,
            self.aircraft_open_payments_max,
            self.terminals_max,
        )
    }
}

/// A flight identifier: 1-16 characters of letters, digits and '-'.
pub fn parse_flight_id(s: &str) -> Result<String, &'static str> {
    if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(s.to_owned())
    } else {
        Err("must be 1-16 characters of letters, digits and '-'")
    }
}
