//! Plumbing shared by the inflight daemons and their command-line tools: configuration files
//! read into types with every error reported at once, logging, shutdown signals, process exit
//! codes, the JSON-lines protocol of local Unix sockets, the runner every daemon starts
//! and stops through ([`runner`]: `main_loop`, `Shutdown`, `Slots`, SIGHUP and sd_notify), the
//! file checks of `<daemon> check` ([`check`]), and the Prometheus metrics server and registry
//! ([`metrics`]).
//!
//! It makes no payment decisions and knows nothing of QUIC or sled.

pub mod check;
mod config;
pub mod local;
pub mod metrics;
pub mod runner;

pub use config::{ConfigErrors, ConfigReader};
pub use runner::{DaemonError, ExitClass, Logging, Shutdown, Slots, SHUTDOWN_GRACE};

use tokio_util::sync::CancellationToken;

/// Exit code for an invalid configuration or command line (sysexits `EX_USAGE`... `EX_CONFIG`
/// would be 78; DESIGN.md fixes 64 for invalid config).
pub const EXIT_CONFIG: i32 = 64;
/// Exit code when the daemon could not be reached (sysexits `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code for a store or file that cannot be opened (sysexits `EX_IOERR`).
pub const EXIT_IO: i32 = 74;
/// Exit code for an unexpected internal failure (sysexits `EX_SOFTWARE`).
pub const EXIT_SOFTWARE: i32 = 70;
/// Exit code for a request that cannot be done yet but may later (sysexits `EX_TEMPFAIL`): a
/// flight closed while payments of it are still pending.
pub const EXIT_TEMPFAIL: i32 = 75;

/// The process exit status for one of the codes above.
pub fn exit(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Parses the command line; on error prints clap's message and gives exit 64 (0 for `--help`
/// and `--version`). clap's errors quote the arguments they refuse (an unexpected argument, an
/// invalid value), and a card number typed into the wrong place would come back on the
/// terminal and in logs that capture stderr: errors are printed through [`redact_digit_runs`].
pub fn parse_cli<C: clap::Parser>() -> Result<C, std::process::ExitCode> {
    C::try_parse().map_err(|e| {
        if e.use_stderr() {
            eprint!("{}", redact_digit_runs(&e.render().to_string()));
            exit(EXIT_CONFIG)
        } else {
            // Help and version: our own text, no user input.
            let _ = e.print();
            std::process::ExitCode::SUCCESS
        }
    })
}

/// Most digits in a row that [`redact_digit_runs`] lets through. A card number has 12 to 19;
/// six would be a BIN, so anything from six on is hidden.
pub const CLI_DIGITS_SHOWN_MAX: usize = 5;

/// What replaces a redacted run of digits.
pub const REDACTED: &str = "[digits hidden]";

/// `text` with every run of more than [`CLI_DIGITS_SHOWN_MAX`] digits replaced by [`REDACTED`].
/// A run may have single spaces or dashes between its digits (`4111 1111 1111 1111`), as a
/// card number is often typed; separators around a run are kept.
pub fn redact_digit_runs(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits, and single separators each followed by a digit.
        let start = i;
        let mut digits = 0;
        while i < chars.len() {
            if chars[i].is_ascii_digit() {
                digits += 1;
                i += 1;
            } else if matches!(chars[i], ' ' | '-') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
            } else {
                break;
            }
        }
        if digits > CLI_DIGITS_SHOWN_MAX {
            out.push_str(REDACTED);
        } else {
            out.extend(&chars[start..i]);
        }
    }
    out
}

/// A loaded config, or every problem printed and exit 64.
pub fn config_or_exit<T>(loaded: Result<T, ConfigErrors>) -> Result<T, std::process::ExitCode> {
    loaded.map_err(|e| {
        eprint!("{e}");
        exit(EXIT_CONFIG)
    })
}

/// The multi-threaded runtime every binary runs on, one worker thread per core.
pub fn runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    runtime_with(None)
}

/// [`runtime`] with `workers` worker threads (`None`: one per core).
pub fn runtime_with(workers: Option<usize>) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all().build().map_err(|e| {
        eprintln!("cannot start the async runtime: {e}");
        exit(EXIT_SOFTWARE)
    })
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `plain` or `json`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "plain" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format must be \"plain\" or \"json\", not {other:?}")),
        }
    }
}

/// The `log_level` config key: a `tracing` filter (`info`, `warn,inflight_master=debug`: the
/// syntax of `RUST_LOG`), checked when the config is read. When a config has it, it wins over
/// `RUST_LOG`; it is re-read on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(String);

impl LogLevel {
    /// Parses a filter; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("must not be empty (e.g. \"info\" or \"warn,inflight_master=debug\")".into());
        }
        tracing_subscriber::EnvFilter::try_new(s).map_err(|e| format!("not a log filter: {e}"))?;
        Ok(Self(s.to_owned()))
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The filter in force: the config's `log_level`, else `RUST_LOG`, else `info`.
fn log_filter(level: Option<&LogLevel>) -> tracing_subscriber::EnvFilter {
    level
        .and_then(|l| tracing_subscriber::EnvFilter::try_new(l.as_str()).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"))
}

/// The handle that swaps the filter of the subscriber [`init_logging_with`] installed.
type FilterHandle = tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Set once, by the first [`init_logging_with`] of the process (the one that installed the
/// global subscriber); [`set_log_level`] uses it.
static LOG_FILTER: std::sync::OnceLock<FilterHandle> = std::sync::OnceLock::new();

/// Installs the global tracing subscriber: filter from `RUST_LOG` (default `info`), to stderr.
pub fn init_logging(format: LogFormat) {
    init_logging_with(format, None);
}

/// Installs the global tracing subscriber, to stderr, with its filter from `level` (the
/// config's `log_level`), else `RUST_LOG`, else `info`; the filter can be swapped later by
/// [`set_log_level`] (SIGHUP).
pub fn init_logging_with(format: LogFormat, level: Option<&LogLevel>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Plain => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json()).try_init(),
    };
    if installed.is_ok() {
        let _ = LOG_FILTER.set(handle);
    }
}

/// Swaps the filter of the subscriber [`init_logging_with`] installed for the one `level`
/// gives (absent: `RUST_LOG`, else `info`). Returns the filter now in force, as text.
pub fn set_log_level(level: Option<&LogLevel>) -> Result<String, String> {
    let handle = LOG_FILTER.get().ok_or("logging was not installed by init_logging_with")?;
    let filter = log_filter(level);
    let shown = filter.to_string();
    handle.reload(filter).map_err(|e| e.to_string())?;
    Ok(shown)
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        t.cancel();
    });
    token
}

/// Longest text from a peer that one log field shows, in characters; the rest is cut (and the
/// cut marked) so that a peer cannot fill the log through one field.
pub const LOG_FIELD_CHARS_MAX: usize = 128;

/// Text from a peer (a name it claims, a message it sends) made safe to put in a log line or an
/// error: control characters (newline, carriage return, escape...), invisible format characters
/// (bidi overrides) and quotes are escaped as Rust does in `{:?}`, so a peer cannot forge a log
/// line or hide text; at most [`LOG_FIELD_CHARS_MAX`] characters are shown. Not for card data.
pub fn log_escape(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == LOG_FIELD_CHARS_MAX {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// Environment variable that arms one named crash point (tests only, and only in builds with
/// the `test-hooks` feature; see [`crash_point`]).
pub const CRASH_ENV: &str = "INFLIGHT_CRASH_AT";

/// A named point where a test may make the process die as if by `kill -9` (abort: no
/// destructors, no flush). Inert unless `INFLIGHT_CRASH_AT` names this point; the variable is
/// read once, so an unarmed point costs one comparison of a cached `None`.
pub fn crash_point(name: &str) {
    if let Some(observe) = POINT_OBSERVER.get() {
        observe(name);
    }
    if crash_armed(name) {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort();
    }
}

/// A process-wide observer of named points, for the in-process simulator: it may act on the
/// world at the exact moment a daemon passes a point (e.g. cut the ground link's downlink once
/// the issuer has made its decisions durable, before it answers). Unset, a point costs one read.
static POINT_OBSERVER: std::sync::OnceLock<PointObserver> = std::sync::OnceLock::new();

/// What [`observe_points`] installs.
type PointObserver = Box<dyn Fn(&str) + Send + Sync>;

/// Installs the point observer (once per process; later calls are ignored and return false).
pub fn observe_points(f: impl Fn(&str) + Send + Sync + 'static) -> bool {
    POINT_OBSERVER.set(Box::new(f)).is_ok()
}

/// Whether `INFLIGHT_CRASH_AT` names this point: lets a driver put its state where the crash
/// point is meant to find it (e.g. make a first chunk durable) before dying there.
pub fn crash_armed(name: &str) -> bool {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ARMED.get_or_init(|| test_hook_var(CRASH_ENV)).as_deref() == Some(name)
}

/// A test hook's environment variable, read only in builds with the `test-hooks` feature: a
/// shipped daemon (built without it) must not crash or shift its clock because of a stray
/// variable in its environment. See the root Cargo.toml for which builds have the feature.
pub fn test_hook_var(name: &str) -> Option<String> {
    if cfg!(feature = "test-hooks") {
        std::env::var(name).ok()
    } else {
        None
    }
}

/// Wall-clock time in milliseconds since the Unix epoch: the only clock read that decides
/// anything (card expiry), done here at the edge and passed into the pure code.
pub fn unix_ms_now() -> u64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let skew = *SKEW.get_or_init(|| test_hook_var(CLOCK_SKEW_ENV).and_then(|v| v.parse().ok()).unwrap_or(0));
    let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    (real + skew).max(0) as u64
}

/// Environment variable (tests only, and only in builds with the `test-hooks` feature): how
/// often, in milliseconds, a server looks at its TLS files (`inflight_net::reload::TLS_RELOAD_POLL`
/// otherwise). A test sets it to an hour to show that SIGHUP alone reloads them.
pub const TLS_RELOAD_POLL_ENV: &str = "INFLIGHT_TLS_RELOAD_POLL_MS";

/// The TLS poll interval [`TLS_RELOAD_POLL_ENV`] sets, if it does (test-hooks builds only).
pub fn tls_reload_poll_hook() -> Option<std::time::Duration> {
    test_hook_var(TLS_RELOAD_POLL_ENV).and_then(|v| v.parse().ok()).map(std::time::Duration::from_millis)
}

/// Environment variable (tests only, and only in builds with the `test-hooks` feature) that
/// shifts this process's wall clock by a signed number of milliseconds, to play a terminal whose
/// clock is off. Read once; unset, it costs nothing.
pub const CLOCK_SKEW_ENV: &str = "INFLIGHT_CLOCK_SKEW_MS";

#[cfg(test)]
mod tests {
    use super::*;

    /// A build without `test-hooks` (what `cargo build --release -p inflight-master` makes, and
    /// what `cargo test -p inflight-daemon` tests) ignores the hook variables. Under
    /// `cargo test --workspace` the e2e crate turns the feature on and the next test runs instead.
    #[cfg(not(feature = "test-hooks"))]
    #[test]
    fn hooks_are_inert_without_the_feature() {
        // Set before the first read (both are read once per process); nothing else in this
        // test binary reads them.
        std::env::set_var(CRASH_ENV, "daemon.test_point");
        std::env::set_var(CLOCK_SKEW_ENV, "86400000");
        assert!(!crash_armed("daemon.test_point"), "INFLIGHT_CRASH_AT armed a crash point");
        crash_point("daemon.test_point");
        let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
        let skewed = u128::from(unix_ms_now()).abs_diff(real);
        assert!(skewed < 60_000, "INFLIGHT_CLOCK_SKEW_MS moved the clock by {skewed} ms");
    }

    /// With the feature (the e2e build), the hooks work.
    #[cfg(feature = "test-hooks")]
    #[test]
    fn hooks_work_with_the_feature() {
        std::env::set_var(CRASH_ENV, "daemon.test_point");
        std::env::set_var(CLOCK_SKEW_ENV, "86400000");
        assert!(crash_armed("daemon.test_point"));
        assert!(!crash_armed("daemon.other_point"));
        let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
        let skew = u128::from(unix_ms_now()).abs_diff(real);
        assert!(skew.abs_diff(86_400_000) < 60_000, "skew {skew}");
    }

    #[test]
    fn digit_runs_that_could_be_card_numbers_are_hidden() {
        let h = REDACTED;
        assert_eq!(
            redact_digit_runs("unexpected argument '4111111111111111' found"),
            format!("unexpected argument '{h}' found")
        );
        assert_eq!(redact_digit_runs("'4111 1111 1111 1111'"), format!("'{h}'"));
        assert_eq!(redact_digit_runs("'4111-1111-1111-1111x'"), format!("'{h}x'"));
        assert_eq!(redact_digit_runs("41111x1111111111"), format!("41111x{h}"));
        assert_eq!(redact_digit_runs("411111"), h);
        // Short numbers (ports, counts, versions, dates) stay readable.
        assert_eq!(redact_digit_runs("port 7400, 12/30, v0.1.0, 1 2 - 3"), "port 7400, 12/30, v0.1.0, 1 2 - 3");
        assert_eq!(redact_digit_runs("ab 12345 cd"), "ab 12345 cd");
    }

    #[test]
    fn log_escape_cannot_forge_lines_or_grow_without_bound() {
        assert_eq!(log_escape("A320-F-WXYZ"), "A320-F-WXYZ");
        let forged = "x\n2026-01-01T00:00:00Z  INFO inflight-issuer: batch decided\r\x1b[2K\u{202e}";
        let shown = log_escape(forged);
        assert!(!shown.chars().any(|c| c.is_control() || c == '\u{202e}'), "{shown}");
        assert_eq!(shown, "x\\n2026-01-01T00:00:00Z  INFO inflight-issuer: batch decided\\r\\u{1b}[2K\\u{202e}");
        let long = "a".repeat(LOG_FIELD_CHARS_MAX * 4);
        assert_eq!(log_escape(&long), format!("{}...", "a".repeat(LOG_FIELD_CHARS_MAX)));
    }
}
