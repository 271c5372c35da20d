//! The daemon runner: one way to start a daemon from `main`, bound its connections, and shut it
//! down.
//!
//! The shape is mini-redis's `Listener` + `Shutdown` and linkerd2-proxy's drain:
//! - [`main_loop`] runs a daemon's future on the runtime with logging and signal handling, and
//!   maps its error to the documented exit code ([`DaemonError::exit_code`]);
//! - [`Shutdown`] is the daemon's cancel token and the tracker of its tasks: every loop selects
//!   on [`Shutdown::cancelled`], every connection or background task is spawned with
//!   [`Shutdown::spawn`], and [`Shutdown::drain`] waits for them for at most a named grace
//!   ([`SHUTDOWN_GRACE`]), with a warning when it runs out. Only then does the daemon close its
//!   endpoints and, last, its store;
//! - [`Slots`] bounds the connections an accept loop serves at once (a permit per connection,
//!   held by its task).

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::LogFormat;

/// How long a daemon waits, once asked to stop, for its connections and loops to end before it
/// closes its endpoints and store anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A daemon's cancel token and the tasks that must end before its endpoints and store close.
/// Clones share both.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Cancelled once, on the first SIGTERM or SIGINT (or by the caller): every loop selects on it.
    token: CancellationToken,
    /// Every connection and background task of the daemon, so [`Shutdown::drain`] can wait for
    /// them.
    tasks: TaskTracker,
    /// How long [`Shutdown::drain`] waits for them.
    grace: Duration,
}

/// How [`Shutdown::drain`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every task ended within the grace.
    AllDone,
    /// The grace ran out with this many tasks still running (they are left to the runtime).
    GraceOver {
        /// Tasks still running.
        left: usize,
    },
}

impl Shutdown {
    /// A shutdown on `token` with the default grace ([`SHUTDOWN_GRACE`]).
    pub fn new(token: CancellationToken) -> Self {
        Self { token, tasks: TaskTracker::new(), grace: SHUTDOWN_GRACE }
    }

    /// The same shutdown with another grace (tests, a daemon with its own needs).
    pub fn with_grace(self, grace: Duration) -> Self {
        Self { grace, ..self }
    }

    /// The grace [`Shutdown::drain`] gives the tasks.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The cancel token, for code that takes one.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Resolves once the daemon is asked to stop.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Whether the daemon has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Spawns a task that [`Shutdown::drain`] waits for. It must end soon after
    /// [`Shutdown::cancelled`] (select on it), or the drain waits out the grace.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Tasks spawned and not yet ended.
    pub fn tasks_running(&self) -> usize {
        self.tasks.len()
    }

    /// Cancels (if nobody has yet), takes no more tasks, and waits for the tracked ones to end,
    /// at most for the grace; logs a warning when the grace runs out. The caller then closes its
    /// endpoints, then its store.
    pub async fn drain(&self) -> Drained {
        self.token.cancel();
        self.tasks.close();
        match tokio::time::timeout(self.grace, self.tasks.wait()).await {
            Ok(()) => Drained::AllDone,
            Err(_) => {
                let left = self.tasks.len();
                tracing::warn!(
                    grace_ms = self.grace.as_millis() as u64,
                    tasks_left = left,
                    "shutdown grace period over; closing anyway"
                );
                Drained::GraceOver { left }
            }
        }
    }
}

/// At most `max` connections served at once: an accept loop takes a [`Slot`] per connection
/// and the connection's task holds it until it ends.
#[derive(Debug, Clone)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    max: usize,
}

/// One connection's place among [`Slots`]; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slots {
    /// Room for `max` connections.
    pub fn new(max: usize) -> Self {
        Self { semaphore: Arc::new(Semaphore::new(max)), max }
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot if one is free now; `None` when all are taken (the caller refuses the connection).
    pub fn try_take(&self) -> Option<Slot> {
        self.semaphore.clone().try_acquire_owned().ok().map(|p| Slot { _permit: p })
    }

    /// A slot, waiting at most `wait` for one to be given back.
    pub async fn take_within(&self, wait: Duration) -> Option<Slot> {
        match tokio::time::timeout(wait, self.semaphore.clone().acquire_owned()).await {
            Ok(Ok(p)) => Some(Slot { _permit: p }),
            // Never closed; a timeout is the only way to fail.
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

/// Exit classes a daemon's error maps to, with the codes DESIGN.md and the README document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// Invalid configuration, command line, or data files named by the config: 64.
    Config,
    /// Something the daemon needs could not be set up or reached (TLS material, a socket): 69.
    Unavailable,
    /// A store or file that cannot be opened or read: 74.
    Io,
    /// An unexpected internal failure: 70.
    Software,
}

impl ExitClass {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            ExitClass::Config => crate::EXIT_CONFIG,
            ExitClass::Unavailable => crate::EXIT_UNAVAILABLE,
            ExitClass::Io => crate::EXIT_IO,
            ExitClass::Software => crate::EXIT_SOFTWARE,
        }
    }
}

/// An error that ends a daemon: it says which exit class it belongs to.
pub trait DaemonError: std::fmt::Display {
    /// How the process exits because of it.
    fn exit_class(&self) -> ExitClass;
}

/// The exit status of a daemon that ended with `result`; an error is logged and printed to
/// stderr first, prefixed with the daemon's `name`.
pub fn exit_status<E: DaemonError>(name: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} failed");
            eprintln!("{name}: {e}");
            crate::exit(e.exit_class().code())
        }
    }
}

/// How a daemon logs, and how it reads its `log_level` again on SIGHUP.
pub struct Logging {
    /// `log_format` (read once: a change needs a restart).
    pub format: LogFormat,
    /// `log_level` at start (absent: `RUST_LOG`, else `info`).
    pub level: Option<crate::LogLevel>,
    /// Reads the whole config file again (every check, as at start) and gives its
    /// `log_level`; on SIGHUP. A config that no longer loads keeps the level in force.
    pub reread: Box<dyn Fn() -> Result<Option<crate::LogLevel>, crate::ConfigErrors> + Send + Sync>,
}

impl std::fmt::Debug for Logging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logging").field("format", &self.format).field("level", &self.level).finish_non_exhaustive()
    }
}

impl Logging {
    /// `format` and `level` from the config at start; `reread` loads the config file again.
    pub fn new(
        format: LogFormat,
        level: Option<crate::LogLevel>,
        reread: impl Fn() -> Result<Option<crate::LogLevel>, crate::ConfigErrors> + Send + Sync + 'static,
    ) -> Self {
        Self { format, level, reread: Box::new(reread) }
    }

    /// Logging that never changes (tests, tools): `reread` gives the same level.
    pub fn fixed(format: LogFormat) -> Self {
        Self::new(format, None, || Ok(None))
    }
}

/// What `main` does for `<daemon> run`: installs logging, runs `daemon` on `rt` with a token
/// cancelled on SIGTERM or SIGINT, reloads on SIGHUP ([`on_hangup`]), tells systemd
/// `STOPPING=1` once asked to stop (the daemon itself says [`notify_ready`] once it listens),
/// and maps its end to the exit status ([`exit_status`]).
pub fn main_loop<E, F, Fut>(rt: &tokio::runtime::Runtime, name: &str, logging: Logging, daemon: F) -> ExitCode
where
    E: DaemonError,
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    crate::init_logging_with(logging.format, logging.level.as_ref());
    rt.block_on(async {
        // Before anything else: SIGHUP's default action ends the process.
        install_hangup(logging.reread);
        let cancel = crate::shutdown_on_signals();
        {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                notify(&[sd_notify::NotifyState::Stopping]);
            });
        }
        exit_status(name, daemon(cancel).await)
    })
}

/// Tells the service manager the daemon is ready: it listens on every socket it serves
/// (`Type=notify` units wait for this). Without `NOTIFY_SOCKET` (not under systemd) it does
/// nothing.
pub fn notify_ready() {
    notify(&[sd_notify::NotifyState::Ready]);
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// The SIGHUP counter every reloadable part watches: it goes up by one on each SIGHUP, after
/// the log level is re-read. Signals are process-wide, and so is this (a daemon run in-process
/// by the simulator, which installs no SIGHUP handler, never sees it move).
static HANGUPS: std::sync::OnceLock<tokio::sync::watch::Sender<u64>> = std::sync::OnceLock::new();

fn hangups_sender() -> &'static tokio::sync::watch::Sender<u64> {
    HANGUPS.get_or_init(|| tokio::sync::watch::channel(0).0)
}

/// A receiver that sees each later SIGHUP (`changed()` resolves once per SIGHUP or more; none is
/// missed between two looks). What a daemon reloads on it: its TLS files at once (the revocation
/// lists, certificates and keys its servers use), besides the log level `main_loop` handles.
pub fn on_hangup() -> tokio::sync::watch::Receiver<u64> {
    hangups_sender().subscribe()
}

/// What one SIGHUP does: the config's `log_level` read again and put in force (a config that no
/// longer loads is logged, with every problem, and the level kept), then every [`on_hangup`]
/// receiver told. Logs what was reloaded. Never stops the daemon.
pub fn hangup(reread: &(dyn Fn() -> Result<Option<crate::LogLevel>, crate::ConfigErrors> + Send + Sync)) {
    match reread() {
        Ok(level) => match crate::set_log_level(level.as_ref()) {
            Ok(filter) => tracing::info!(log_filter = %filter, "SIGHUP: config re-read; log level in force"),
            Err(e) => tracing::warn!(error = %e, "SIGHUP: log level not changed"),
        },
        Err(e) => tracing::error!(
            problems = %e.errors.join("; "),
            "SIGHUP: the config no longer loads; log level kept (fix it before the next restart)"
        ),
    }
    hangups_sender().send_modify(|n| *n += 1);
}

/// On SIGHUP, after the config was read again: whether keys other than `log_level` changed
/// (`started`, `now`: the config at start and now, each rendered with its `log_level` left out);
/// if so, a warning says they take effect only at the next restart (found by review: an access
/// list edited and "reloaded" silently kept the old one).
pub fn restart_needed(started: &str, now: &str) -> bool {
    let changed = started != now;
    if changed {
        tracing::warn!(
            "SIGHUP: config keys other than log_level changed; they take effect at the next restart \
             (only log_level and the TLS files are reloaded)"
        );
    }
    changed
}

/// Handles SIGHUP for the rest of the process's life (see [`hangup`]).
fn install_hangup(reread: Box<dyn Fn() -> Result<Option<crate::LogLevel>, crate::ConfigErrors> + Send + Sync>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the log level and TLS files");
                        hangup(reread.as_ref());
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP; reload by restarting"),
        }
    }
    #[cfg(not(unix))]
    drop(reread);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn drain_returns_at_once_when_the_tasks_end() {
        let s = Shutdown::new(CancellationToken::new());
        let t = s.clone();
        s.spawn(async move {
            t.cancelled().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        });
        let start = Instant::now();
        assert_eq!(s.drain().await, Drained::AllDone);
        assert_eq!(start.elapsed(), Duration::from_millis(10), "waited for the task, not for the grace");
        assert!(s.is_cancelled(), "drain cancels");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_the_grace_with_a_warning() {
        let logs = Logs::default();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).finish(),
        );
        let grace = Duration::from_millis(300);
        let s = Shutdown::new(CancellationToken::new()).with_grace(grace);
        s.spawn(std::future::pending::<()>());
        s.spawn(std::future::pending::<()>());
        let start = Instant::now();
        assert_eq!(s.drain().await, Drained::GraceOver { left: 2 });
        assert_eq!(start.elapsed(), grace);
        let text = logs.text();
        assert!(text.contains("WARN") && text.contains("grace period over") && text.contains("tasks_left=2"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_grace_is_the_named_one() {
        let s = Shutdown::new(CancellationToken::new());
        assert_eq!(s.grace(), SHUTDOWN_GRACE);
        s.spawn(std::future::pending::<()>());
        let start = Instant::now();
        assert_eq!(s.drain().await, Drained::GraceOver { left: 1 });
        assert_eq!(start.elapsed(), SHUTDOWN_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_bounded_and_given_back() {
        let slots = Slots::new(2);
        let a = slots.try_take().expect("first");
        let _b = slots.try_take().expect("second");
        assert!(slots.try_take().is_none(), "over the bound");
        assert!(slots.take_within(Duration::from_millis(50)).await.is_none(), "none given back in time");
        let waiting = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.take_within(Duration::from_secs(1)).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a);
        assert!(waiting.await.expect("task"), "a slot given back is taken by the waiter");
    }

    #[derive(Debug)]
    struct Failed(ExitClass);

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failed: {:?}", self.0)
        }
    }

    impl DaemonError for Failed {
        fn exit_class(&self) -> ExitClass {
            self.0
        }
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(ExitClass::Config.code(), 64);
        assert_eq!(ExitClass::Unavailable.code(), 69);
        assert_eq!(ExitClass::Software.code(), 70);
        assert_eq!(ExitClass::Io.code(), 74);
        assert_eq!(exit_status::<Failed>("d", Ok(())), ExitCode::SUCCESS);
        for class in [ExitClass::Config, ExitClass::Unavailable, ExitClass::Io, ExitClass::Software] {
            assert_eq!(exit_status("d", Err(Failed(class))), crate::exit(class.code()), "{class:?}");
        }
    }

    #[test]
    fn main_loop_runs_the_daemon_and_maps_its_end() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let code = main_loop(&rt, "d", Logging::fixed(LogFormat::Plain), |cancel| async move {
            assert!(!cancel.is_cancelled(), "no signal yet");
            Err(Failed(ExitClass::Io))
        });
        assert_eq!(code, crate::exit(74));
        let ok = main_loop(&rt, "d", Logging::fixed(LogFormat::Plain), |_| async { Ok::<(), Failed>(()) });
        assert_eq!(ok, ExitCode::SUCCESS);
    }

    #[tokio::test]
    async fn a_hangup_reaches_every_receiver_even_when_the_config_no_longer_loads() {
        let mut tls = on_hangup();
        let mut other = on_hangup();
        let broken =
            || Err(crate::ConfigErrors { file: "c.toml".into(), errors: vec!["log_level: not a log filter".into()] });
        hangup(&broken);
        for rx in [&mut tls, &mut other] {
            tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.expect("told").expect("sender kept");
        }
        hangup(&|| Ok(None));
        tokio::time::timeout(Duration::from_secs(10), tls.changed()).await.expect("told again").expect("sender kept");
    }

    /// Log output captured for one test.
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
        }
    }

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
        type Writer = Logs;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }
}
