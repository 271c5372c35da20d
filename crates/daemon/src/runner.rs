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

/// What `main` does for `<daemon> run`: installs logging, runs `daemon` on `rt` with a token
/// cancelled on SIGTERM or SIGINT, and maps its end to the exit status ([`exit_status`]).
pub fn main_loop<E, F, Fut>(rt: &tokio::runtime::Runtime, name: &str, log_format: LogFormat, daemon: F) -> ExitCode
where
    E: DaemonError,
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    crate::init_logging(log_format);
    rt.block_on(async {
        let cancel = crate::shutdown_on_signals();
        exit_status(name, daemon(cancel).await)
    })
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
        let code = main_loop(&rt, "d", LogFormat::Plain, |cancel| async move {
            assert!(!cancel.is_cancelled(), "no signal yet");
            Err(Failed(ExitClass::Io))
        });
        assert_eq!(code, crate::exit(74));
        let ok = main_loop(&rt, "d", LogFormat::Plain, |_| async { Ok::<(), Failed>(()) });
        assert_eq!(ok, ExitCode::SUCCESS);
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
