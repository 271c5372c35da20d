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
mod error;
mod issuer;
mod master;
mod records;
mod signing;
mod slave;
mod vault;

pub use commit::{Committer, Ticket};
pub use error::StoreError;
pub use issuer::{AccountLine, BatchStart, IssuerStore, LedgerLine};
pub use master::{MasterCounts, MasterStore, MasterView};
pub use records::{BatchDigest, MaskedView};
pub use signing::{parse_public_key_hex, verify_bin_list, BinListError, BinListSigner};
pub use slave::{SlaveCounts, SlaveState, SlaveStore, SlaveView};
pub use vault::{CardVault, KEY_FILE_HEX_LEN};

/// How many times (100 ms apart) to retry a store locked by another process.
const LOCK_RETRIES: u32 = 20;

/// Name of the marker file written next to sled's files once a store is initialised.
const MARKER_FILE: &str = "INFLIGHT_STORE";
/// Key, in sled's default tree, that exists in every initialised store.
const CREATED_KEY: &[u8] = b"__inflight_created";

/// Opens sled at `dir` with the settings every daemon uses.
///
/// sled treats unreadable data as absent and would start empty. A marker file outside sled, and
/// a key inside it, let a corrupted or lost store be told from a new one: if the marker says the
/// store was initialised but the key is gone, opening fails with a clear error and nothing is
/// changed, instead of silently starting an empty store.
fn open_sled(dir: &std::path::Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let err = |detail: String| StoreError::Open { dir: dir.to_owned(), detail };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let marker = dir.join(MARKER_FILE);
    let initialised = marker.exists();
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        // Our own flusher thread is the only one that flushes (see `Committer`).
        .flush_every_ms(None)
        .mode(sled::Mode::LowSpace);
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
    let present = db.get(CREATED_KEY).map_err(|e| err(e.to_string()))?.is_some();
    match (initialised, present) {
        (true, true) => {}
        (true, false) => {
            return Err(err(format!(
                "the store was initialised ({MARKER_FILE} exists) but its data is missing or unreadable; \
                 refusing to start with an empty store. Nothing was deleted: restore the folder from a \
                 backup or move it aside to start afresh"
            )))
        }
        (false, _) => {
            db.insert(CREATED_KEY, b"1".as_slice()).map_err(|e| err(e.to_string()))?;
            db.flush().map_err(|e| err(e.to_string()))?;
            std::fs::File::open(dir.join("db")).and_then(|f| f.sync_all()).map_err(|e| err(e.to_string()))?;
            std::fs::write(&marker, b"inflight store\n").map_err(|e| err(e.to_string()))?;
            std::fs::File::open(&marker).and_then(|f| f.sync_all()).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(db)
}
