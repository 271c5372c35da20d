//! Group commit: many writers, one flush + fsync, then every covered writer is answered.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use tokio::sync::oneshot;

use crate::StoreError;

/// A write's place in the commit order: durable once a flush that started after it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

impl Ticket {
    /// A ticket that is already durable (nothing was written).
    pub const NONE: Ticket = Ticket(0);
}

/// The flusher shared by every writer of one sled database.
#[derive(Debug)]
pub struct Committer {
    shared: Arc<Shared>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Sequence of the latest write handed a ticket.
    written: u64,
    /// Every write up to this sequence is flushed and fsynced.
    durable: u64,
    /// Writers waiting for durability, with the sequence they need.
    waiters: Vec<(u64, oneshot::Sender<Result<(), StoreError>>)>,
    /// Set by a failed flush; sticky (see [`StoreError::Poisoned`]).
    poisoned: Option<String>,
    /// Set on close: the thread finishes the last flush and exits.
    closing: bool,
}

impl Committer {
    /// Starts the flusher thread for `db`, whose data file lives in `dir`.
    pub(crate) fn start(db: sled::Db, dir: &Path) -> Result<Self, StoreError> {
        let fail_after = std::env::var(FSYNC_FAIL_AFTER_ENV).ok().and_then(|v| v.parse().ok());
        Self::start_with(db, dir, fail_after)
    }

    /// [`Committer::start`], with every fsync after the first `fail_after` failing (tests).
    fn start_with(db: sled::Db, dir: &Path, fail_after: Option<u64>) -> Result<Self, StoreError> {
        // sled keeps all its pages in one file named `db`; fsync of that file is what makes a
        // flush survive a power cut. Opened read-only: fsync works on any open descriptor.
        let data_file = File::open(dir.join("db"))
            .map_err(|e| StoreError::Open { dir: dir.to_owned(), detail: format!("data file: {e}") })?;
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), wake: Condvar::new() });
        let s = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || {
                let _stopped = StopGuard(&s);
                flusher(&s, &db, &data_file, fail_after);
            })
            .map_err(|e| StoreError::Io(format!("cannot start flusher thread: {e}")))?;
        Ok(Self { shared, thread: Mutex::new(Some(handle)) })
    }

    /// Records that a write was applied to sled and returns its ticket. Call after the write.
    pub(crate) fn note_write(&self) -> Result<Ticket, StoreError> {
        let mut st = lock(&self.shared.state);
        if let Some(p) = &st.poisoned {
            return Err(StoreError::Poisoned(p.clone()));
        }
        if st.closing {
            return Err(StoreError::Closed);
        }
        st.written += 1;
        Ok(Ticket(st.written))
    }

    /// Fails early when the store can no longer promise durability.
    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        let st = lock(&self.shared.state);
        match (&st.poisoned, st.closing) {
            (Some(p), _) => Err(StoreError::Poisoned(p.clone())),
            (None, true) => Err(StoreError::Closed),
            (None, false) => Ok(()),
        }
    }

    /// The ticket of the latest write: waiting on it covers everything written so far.
    pub fn latest(&self) -> Ticket {
        Ticket(lock(&self.shared.state).written)
    }

    /// Resolves when every write up to `ticket` is flushed and fsynced.
    pub async fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        let rx = {
            let mut st = lock(&self.shared.state);
            if let Some(p) = &st.poisoned {
                return Err(StoreError::Poisoned(p.clone()));
            }
            if st.durable >= ticket.0 {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push((ticket.0, tx));
            self.shared.wake.notify_one();
            rx
        };
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Blocking form of [`Committer::wait`], for command-line tools and tests.
    pub fn wait_blocking(&self, ticket: Ticket) -> Result<(), StoreError> {
        let rx = {
            let mut st = lock(&self.shared.state);
            if let Some(p) = &st.poisoned {
                return Err(StoreError::Poisoned(p.clone()));
            }
            if st.durable >= ticket.0 {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push((ticket.0, tx));
            self.shared.wake.notify_one();
            rx
        };
        rx.blocking_recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Flushes what is pending, stops the thread and waits for it.
    pub fn close(&self) {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_one();
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Runs when the flusher thread ends, however it ends (a panic included): writers still
/// waiting would otherwise wait forever, and later writes would be taken that nothing flushes.
struct StopGuard<'a>(&'a Shared);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        if st.waiters.is_empty() && (st.closing || st.poisoned.is_some()) {
            return;
        }
        let why = st.poisoned.get_or_insert_with(|| "the store's flusher thread stopped".to_owned()).clone();
        for (_, tx) in std::mem::take(&mut st.waiters) {
            let _ = tx.send(Err(StoreError::Poisoned(why.clone())));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves plain counters behind; they stay consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Environment variable (tests only) that makes every fsync after the first N fail, as a full
/// or failing disk would. Read once; unset, it costs nothing.
pub const FSYNC_FAIL_AFTER_ENV: &str = "INFLIGHT_STORE_FSYNC_FAIL_AFTER";

fn flusher(shared: &Shared, db: &sled::Db, data_file: &File, fail_after: Option<u64>) {
    let mut fsyncs = 0u64;
    loop {
        let target = {
            let mut st = lock(&shared.state);
            while st.waiters.is_empty() && !st.closing {
                st = shared.wake.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if st.closing && st.waiters.is_empty() && st.durable >= st.written {
                return;
            }
            st.written
        };
        // Everything written before this point is covered by this flush: writers note their
        // write after applying it, so `target` never names a write sled has not seen.
        fsyncs += 1;
        let injected = fail_after.is_some_and(|n| fsyncs > n);
        let result = db.flush().map_err(|e| e.to_string()).and_then(|_| {
            if injected {
                return Err("injected fsync failure (No space left on device)".to_owned());
            }
            data_file.sync_data().map_err(|e| e.to_string())
        });
        let mut st = lock(&shared.state);
        match result {
            Ok(()) => {
                st.durable = st.durable.max(target);
                let durable = st.durable;
                let (done, rest): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut st.waiters).into_iter().partition(|(seq, _)| *seq <= durable);
                st.waiters = rest;
                drop(st);
                for (_, tx) in done {
                    let _ = tx.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store flush failed; refusing further writes");
                st.poisoned = Some(e.clone());
                for (_, tx) in std::mem::take(&mut st.waiters) {
                    let _ = tx.send(Err(StoreError::Poisoned(e.clone())));
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 8, item 15: after a failed flush, waiting again on a ticket it did not cover hung
    /// forever (the flusher had stopped, and `wait_blocking` did not look at the poisoned state).
    #[test]
    fn waiting_on_a_poisoned_committer_fails_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::open_sled(dir.path(), 1 << 20).expect("open");
        let c = Arc::new(Committer::start_with(db.clone(), dir.path(), Some(0)).expect("start"));
        db.insert(b"k", b"v".as_slice()).expect("insert");
        let t = c.note_write().expect("ticket");
        assert!(matches!(c.wait_blocking(t), Err(StoreError::Poisoned(_))), "the first flush fails");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = Arc::clone(&c);
        thread::spawn(move || {
            let _ = tx.send(waiter.wait_blocking(t));
        });
        let again = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("wait_blocking hung on a poisoned store");
        assert!(matches!(again, Err(StoreError::Poisoned(_))));
        assert!(matches!(c.note_write(), Err(StoreError::Poisoned(_))));
    }
}
