use std::path::PathBuf;

/// Everything that can go wrong in storage. Messages never contain card data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened (missing permissions, corruption, held by another process).
    /// Nothing is deleted or repaired automatically.
    #[error("cannot open store at {dir}: {detail}")]
    Open {
        /// The store's directory.
        dir: PathBuf,
        /// What sled or the OS said.
        detail: String,
    },
    /// The store holds less than it acknowledged, or its files changed while it was stopped:
    /// damaged on disk. It is refused before sled rewrites anything; nothing is deleted. Daemons
    /// exit 74 (`EX_IOERR`).
    #[error(
        "store at {dir} is damaged and was not started: {detail}. Nothing was deleted and nothing was \
         changed: restore the folder from a backup, or move it aside (keep it for analysis) to start \
         afresh"
    )]
    Damaged {
        /// The store's directory.
        dir: PathBuf,
        /// What the check found.
        detail: String,
    },
    /// A read or write failed (disk full, I/O error).
    #[error("storage I/O error: {0}")]
    Io(String),
    /// A flush or fsync failed earlier. After a failed fsync the kernel may have dropped dirty
    /// pages, so nothing written since can be called durable: the store refuses further writes
    /// until the daemon restarts and re-reads what is really on disk.
    #[error("store is poisoned by an earlier failed flush: {0}")]
    Poisoned(String),
    /// The write was applied (sled holds it in memory and may still write it to disk), but the
    /// store can no longer promise it durable: a flush failed meanwhile, or the store is
    /// closing. Not "nothing was written": whoever waits on it must treat its outcome as
    /// unknown.
    #[error("write applied but not confirmed durable: {0}")]
    Unconfirmed(String),
    /// The key file is missing, malformed, or readable by others.
    #[error("key file {path}: {detail}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A stored record did not decode or decrypt: corruption or the wrong key file.
    #[error("corrupt record {key}: {detail}")]
    Corrupt {
        /// Hex of the record's key.
        key: String,
        /// What failed.
        detail: String,
    },
    /// A payment id already decided arrived again with other content (another card, amount or
    /// capture time): an id re-used, by a bug or an attack. Nothing is decided or merged.
    #[error("payment {payment} was already decided with other content; refusing to merge")]
    ContentConflict {
        /// The payment id.
        payment: String,
    },
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}
