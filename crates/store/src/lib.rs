//! Durable storage for inflight: the only crate that talks to sled or knows the key layout.
//!
//! - [`Committer`]: group commit. Writers insert into sled (in memory, fast), take a
//!   [`Ticket`], and wait on it; one flusher thread flushes sled and then `fsync`s its data file
//!   (sled 0.34's own flush uses `sync_file_range` on Linux, which does not survive a power cut),
//!   and answers every ticket the flush covered. One flusher also sidesteps sled #1308
//!   (concurrent `flush_async` calls hang).
//! - [`CardVault`]: card data sealed with ChaCha20-Poly1305 under a key file; a keyed hash
//!   (HMAC-SHA256) for look-ups by card. No full card number is ever written in clear.
//! - [`SlaveStore`], [`MasterStore`] and [`IssuerStore`]: each daemon's records and the
//!   operations on them.
//! - [`BinListSigner`] and [`verify_bin_list`]: Ed25519 signatures on the issuer's BIN list.
//!
//! What this crate is not: it makes no decisions (that is `inflight-core`) and knows no network.

mod commit;
mod durable;
mod error;
mod issuer;
mod master;
mod records;
mod signing;
mod slave;
mod vault;

pub use commit::{CommitObserver, Committer, Ticket};
pub use error::StoreError;
pub use inflight_core::batch::BatchDigest;
pub use issuer::{AccountLine, BatchStart, HotCards, IssuerStore, LedgerLine};
pub use master::{MasterCounts, MasterStore, MasterView, ReportRow};
pub use records::MaskedView;
pub use signing::{parse_public_key_hex, verify_bin_list, verify_manifest_ack, BinListError, BinListSigner};
pub use slave::{SlaveCounts, SlaveState, SlaveStore, SlaveView};
pub use vault::{chip_master_key_from_file, CardVault, KEY_FILE_HEX_LEN};

/// How many times (100 ms apart) to retry a store locked by another process.
const LOCK_RETRIES: u32 = 20;

/// Name of the marker file written next to sled's files once a store is initialised.
const MARKER_FILE: &str = "INFLIGHT_STORE";
/// Key, in sled's default tree, that exists in every initialised store; its value is the store
/// format.
const CREATED_KEY: &[u8] = b"__inflight_created";
/// The record layout this version reads and writes. 2 (2026-11-27): keyed content digests,
/// the terminal's answered confirmation on the master, voids, issuer accounts with opening
/// amounts and per-payment keyed content. Format 1 stores hold unkeyed digests of card data
/// and records this version cannot decode: refused, never half-read. 3 (2026-11-28): payments
/// carry their point of sale, and chip data sealed with the card; the issuer keeps each card's
/// chip transaction counters. Format 2 records do not decode as format 3 ones: refused the same
/// way, and a format 2 binary refuses a format 3 store by the same check.
const STORE_FORMAT: &[u8] = b"3";

/// Opens sled at `dir` with the settings every daemon uses, refusing a damaged store.
///
/// sled 0.34 treats unreadable data as absent: a bad record ends its log, and on open it drops
/// what follows, zeroes the rest of that segment and writes a new snapshot. So every check runs
/// *before* sled is handed the files, while holding sled's own lock on its data file, and a store
/// that fails one is refused with [`StoreError::Damaged`] with nothing changed or deleted:
///
/// - a marker file outside sled (`INFLIGHT_STORE`), and a key inside it, tell a lost store from a
///   new one instead of silently starting an empty store;
/// - the durable mark (`INFLIGHT_DURABLE`, see the `durable` module) tells whether the store
///   holds every write it acknowledged: after a clean stop, sled's files must match the
///   fingerprint taken when they were closed (cost: one read of the files at start); after an
///   unclean stop, a copy of them (in `DIR/inflight-verify.tmp/`, deleted afterwards) must
///   recover at least the last acknowledged group commit and read back without error (cost: a
///   copy and a full read, only after a crash). A store with more than the mark (writes after the
///   last mark, before a crash) is normal and opens.
///
/// A store initialised before the mark existed has none: it opens as before, and gets one.
fn open_sled(dir: &std::path::Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let err = |detail: String| StoreError::Open { dir: dir.to_owned(), detail };
    let damaged = |detail: String| StoreError::Damaged { dir: dir.to_owned(), detail };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let marker = dir.join(MARKER_FILE);
    let initialised = marker.exists();
    let mark = {
        // Held while checking, so that no other process changes the files under the check.
        let _lock = lock_data_file(dir)?;
        check_before_open(dir, initialised, cache_bytes)?
    };
    if let Some(r) = mark.filter(|r| r.clean.is_some()) {
        // sled is about to change its files: the clean fingerprint will no longer describe them.
        durable::Mark::open(dir).and_then(|mut m| m.write(r.seq, None)).map_err(err)?;
    }
    let config = sled_config(dir, cache_bytes);
    // Another process may hold the store for a moment (a `status` command reading a stopped
    // daemon's store while it restarts): wait a little before calling it an error.
    let mut attempts = 0;
    let db = loop {
        match config.open() {
            Ok(db) => break db,
            // sled reports a held lock as ErrorKind::Other with this message.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && attempts < LOCK_RETRIES => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(err(e.to_string())),
        }
    };
    let held = durable::sled_seq(&db).map_err(damaged)?;
    if let Some(r) = mark.filter(|r| held < r.seq) {
        return Err(damaged(format!(
            "it holds group commits up to {held} but acknowledged up to {}: sled lost the end of its log",
            r.seq
        )));
    }
    let format = db.get(CREATED_KEY).map_err(|e| err(e.to_string()))?;
    let present = format.is_some();
    match (initialised, present) {
        (true, true) if format.as_deref() == Some(STORE_FORMAT) => {}
        (true, true) => {
            let found = String::from_utf8_lossy(format.as_deref().unwrap_or_default()).into_owned();
            return Err(err(format!(
                "store format {found}, written by an older inflight; this version reads format {}. \
                 Land the flight and let the version that wrote it deliver every payment, then move \
                 the folder aside. Nothing was changed",
                String::from_utf8_lossy(STORE_FORMAT)
            )));
        }
        (true, false) => {
            return Err(damaged(format!(
                "the store was initialised ({MARKER_FILE} exists) but its data is missing or unreadable"
            )))
        }
        (false, _) => {
            db.insert(CREATED_KEY, STORE_FORMAT).map_err(|e| err(e.to_string()))?;
            db.flush().map_err(|e| err(e.to_string()))?;
            std::fs::File::open(dir.join("db")).and_then(|f| f.sync_all()).map_err(|e| err(e.to_string()))?;
            std::fs::write(&marker, b"inflight store\n").map_err(|e| err(e.to_string()))?;
            std::fs::File::open(&marker).and_then(|f| f.sync_all()).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(db)
}

fn sled_config(dir: &std::path::Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        // Our own flusher thread is the only one that flushes (see `Committer`).
        .flush_every_ms(None)
        .mode(sled::Mode::LowSpace)
}

/// Takes sled's lock on its data file (if there is one yet), waiting a little if it is held.
fn lock_data_file(dir: &std::path::Path) -> Result<Option<std::fs::File>, StoreError> {
    let err = |detail: String| StoreError::Open { dir: dir.to_owned(), detail };
    let file = match std::fs::File::open(dir.join("db")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("data file: {e}"))),
    };
    let mut attempts = 0;
    loop {
        match fs2::FileExt::try_lock_exclusive(&file) {
            Ok(()) => return Ok(Some(file)),
            Err(_) if attempts < LOCK_RETRIES => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                return Err(err(format!("could not acquire lock on the data file (another process holds it): {e}")))
            }
        }
    }
}

/// The checks made before sled sees the files (see [`open_sled`]); returns the mark, if any.
fn check_before_open(
    dir: &std::path::Path,
    initialised: bool,
    cache_bytes: u64,
) -> Result<Option<durable::Record>, StoreError> {
    let damaged = |detail: String| StoreError::Damaged { dir: dir.to_owned(), detail };
    let Some(mark) = durable::read(dir).map_err(damaged)? else {
        if initialised {
            tracing::warn!(dir = %dir.display(), "store has no {} yet (older version): not checked this time", durable::MARK_FILE);
        }
        return Ok(None);
    };
    if !initialised {
        return Err(damaged(format!("{} exists but {MARKER_FILE} is missing", durable::MARK_FILE)));
    }
    match mark.clean {
        Some(recorded) => {
            let now = durable::fingerprint(dir).map_err(|e| damaged(format!("cannot read sled's files: {e}")))?;
            if now != recorded {
                return Err(damaged(format!(
                    "sled's files changed while the store was stopped ({} bytes, CRC-32 {:08x}; at the clean \
                     stop {} bytes, CRC-32 {:08x})",
                    now.len, now.crc, recorded.len, recorded.crc
                )));
            }
        }
        None => verify_copy(dir, mark.seq, cache_bytes)?,
    }
    Ok(Some(mark))
}

/// After an unclean stop: recovers a copy of sled's files (sled rewrites what it opens) and
/// checks that it holds group commit `seq` and that every record reads back.
fn verify_copy(dir: &std::path::Path, seq: u64, cache_bytes: u64) -> Result<(), StoreError> {
    let err = |detail: String| StoreError::Open { dir: dir.to_owned(), detail };
    let copy = dir.join(durable::VERIFY_DIR);
    if copy.exists() {
        // Left by a check that was interrupted; it is only ever a copy.
        std::fs::remove_dir_all(&copy).map_err(|e| err(format!("cannot remove {}: {e}", copy.display())))?;
    }
    durable::copy_sled_files(dir, &copy).map_err(|e| err(format!("cannot copy the store to check it: {e}")))?;
    let verify = || -> Result<(), String> {
        let db = sled_config(&copy, cache_bytes).open().map_err(|e| format!("sled cannot recover it: {e}"))?;
        let held = durable::sled_seq(&db)?;
        if held < seq {
            return Err(format!(
                "it holds group commits up to {held} but acknowledged up to {seq}: sled lost the end of its log"
            ));
        }
        for name in db.tree_names() {
            let tree = db.open_tree(&name).map_err(|e| format!("cannot open a tree: {e}"))?;
            for kv in tree.iter() {
                kv.map_err(|e| format!("a record does not read back: {e}"))?;
            }
        }
        Ok(())
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(verify));
    if let Err(e) = std::fs::remove_dir_all(&copy) {
        tracing::warn!(error = %e, dir = %copy.display(), "cannot remove the checked copy");
    }
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(detail)) => Err(StoreError::Damaged { dir: dir.to_owned(), detail }),
        Err(_) => {
            Err(StoreError::Damaged { dir: dir.to_owned(), detail: "sled panicked recovering a copy of it".into() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store written by an older version (format 1: unkeyed digests, other records) is
    /// refused with what to do, not half-read.
    #[test]
    fn a_store_of_an_older_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open_sled(dir.path(), 1 << 20).expect("new store");
            db.insert(CREATED_KEY, b"1".as_slice()).expect("insert");
            db.flush().expect("flush");
        }
        let e = open_sled(dir.path(), 1 << 20).expect_err("older format refused");
        assert!(e.to_string().contains("store format 1"), "{e}");
        assert!(open_sled(tempfile::tempdir().expect("tempdir").path(), 1 << 20).is_ok(), "a new store opens");
    }
}
