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
pub use issuer::{BatchStart, IssuerStore, LedgerLine};
pub use master::{MasterCounts, MasterStore, MasterView};
pub use records::{content_digest, BatchDigest, MaskedView};
pub use signing::{parse_public_key_hex, verify_bin_list, BinListError, BinListSigner};
pub use slave::{SlaveCounts, SlaveState, SlaveStore, SlaveView};
pub use vault::{CardVault, KEY_FILE_HEX_LEN};

/// Opens sled at `dir` with the settings every daemon uses.
fn open_sled(dir: &std::path::Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Open { dir: dir.to_owned(), detail: e.to_string() })?;
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        // Our own flusher thread is the only one that flushes (see `Committer`).
        .flush_every_ms(None)
        .mode(sled::Mode::LowSpace)
        .open()
        .map_err(|e| StoreError::Open { dir: dir.to_owned(), detail: e.to_string() })
}
