//! The aircraft daemon's configuration, parsed into types.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inflight_daemon::{ConfigErrors, ConfigReader, LogFormat};
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
    /// Unix socket of the admin API (status).
    pub admin_socket: PathBuf,
    /// UDP address terminals connect to.
    pub listen: SocketAddr,
    /// CA whose certificates terminals must present.
    pub ca_file: PathBuf,
    /// The master's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// Most terminals connected at once; more are refused at once and retry.
    pub terminals_max: usize,
    /// A terminal must send `Hello` within this time of connecting.
    pub hello_timeout: Duration,
    /// QUIC timers (the connect timer is unused on the server side).
    pub timers: LinkTimers,
    /// sled page cache size.
    pub cache_bytes: u64,
    /// Log format.
    pub log_format: LogFormat,
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
        let log_format = r.parse_or("log_format", LogFormat::Plain, LogFormat::parse);
        let listen = r.socket_addr("listen");
        let ca_file = r.path("tls.ca_file");
        let cert_file = r.path("tls.cert_file");
        let key_file = r.path("tls.key_file");
        let terminals_max = r.u64_or("limits.terminals_max", 2_000, 1, 100_000) as usize;
        let hello_timeout = r.millis_or("timers.hello_timeout_ms", ms(5_000), ms(100), ms(60_000));
        let timers = LinkTimers {
            keep_alive: r.millis_or("timers.keep_alive_ms", ms(2_000), ms(100), ms(60_000)),
            idle: r.millis_or("timers.idle_timeout_ms", ms(10_000), ms(500), ms(600_000)),
            connect: hello_timeout,
        };
        let cache_bytes = r.u64_or("store.cache_bytes", 32 << 20, 1 << 20, 4 << 30);
        if timers.keep_alive >= timers.idle {
            r.error("timers.keep_alive_ms", "must be shorter than timers.idle_timeout_ms");
        }
        r.finish()?;
        let missing = "checked by ConfigReader::finish";
        Ok(Self {
            aircraft_id: aircraft_id.expect(missing),
            data_dir: data_dir.expect(missing),
            card_key_file: card_key_file.expect(missing),
            admin_socket: admin_socket.expect(missing),
            listen: listen.expect(missing),
            ca_file: ca_file.expect(missing),
            cert_file: cert_file.expect(missing),
            key_file: key_file.expect(missing),
            terminals_max,
            hello_timeout,
            timers,
            cache_bytes,
            log_format: log_format.expect(missing),
        })
    }
}
