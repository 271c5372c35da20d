//! The issuer's hot-card list: cards not to accept offline (blocked, lost, recently declined
//! `account_blocked`), as keyed, truncated hashes that name no card number.
//!
//! What is signed is the list's [`HotListHead`]: its version, validity window, hashing key, entry
//! count and a SHA-256 over the encoded, sorted entries. A full list ([`HotList`]) is a signed
//! head and its entries; a delta ([`HotListUpdate::Delta`]) is a new signed head and the entries
//! added since the version the master holds. Either way the receiver checks the signature (in
//! `inflight-core::hotlist`), builds the entry set and compares its digest with the signed one,
//! so a delta applied to the wrong base, or an entry dropped or added in transit, is refused.
//! The SHA-256 runs over keyed hashes, never over card data.

use bincode::{Decode, Encode};

/// Most entries in one list. A full list must fit one terminal-link frame (16 KiB): 1 500 ×
/// 8 bytes is 12 KB. An issuer lists the cards that matter offline (recent blocks, losses,
/// declines), not its whole blocked book; past this it stops adding and says so in its log.
pub const HOT_ENTRIES_MAX: usize = 1_500;

/// Bytes kept of the HMAC-SHA256 of a card number: 64 bits. A card not on a list of `n`
/// entries matches one by chance with probability about `n / 2^64` (1 500 entries: ~8e-17).
pub const HOT_ENTRY_BYTES: usize = 8;

/// One listed card: the first [`HOT_ENTRY_BYTES`] of HMAC-SHA256(list key, card digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct HotEntry(pub [u8; HOT_ENTRY_BYTES]);

/// What the issuer signs. Every field is covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct HotListHead {
    /// Increases whenever an entry is added; a delta names the version it applies to.
    pub version: u64,
    /// Issuer name, for logs.
    pub issuer: String,
    /// Not valid before, milliseconds since the Unix epoch.
    pub valid_from_unix_ms: u64,
    /// Not valid after, milliseconds since the Unix epoch.
    pub valid_until_unix_ms: u64,
    /// The HMAC key the entries are computed under. It travels with the list because a terminal
    /// must hash the card it is given; see README "What a stolen terminal reveals".
    pub key: [u8; 32],
    /// Number of entries.
    pub count: u32,
    /// SHA-256 over a domain label and the entries' bytes, sorted ascending without duplicates
    /// (`inflight_core::hotlist::entries_digest`).
    pub entries_digest: [u8; 32],
}

/// A head as signed by the issuer: `body` is the encoded [`HotListHead`], `signature` an
/// Ed25519 signature over a domain label followed by `body` (the same key signs the BIN list).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedHotHead {
    /// Encoded `HotListHead`.
    pub body: Vec<u8>,
    /// Ed25519 signature over `HOT_LIST_SIGNING_LABEL ++ body`.
    pub signature: Vec<u8>,
}

/// Prefixed to the head before signing, so a signed head can never pass for a signed BIN list
/// (or the reverse) under the issuer's one key.
pub const HOT_LIST_SIGNING_LABEL: &[u8] = b"inflight/v1/hot-list-head\0";

/// A whole list: what the master keeps and hands to terminals.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct HotList {
    /// The signed head.
    pub head: SignedHotHead,
    /// Its entries, sorted ascending, at most [`HOT_ENTRIES_MAX`].
    pub entries: Vec<HotEntry>,
}

/// The issuer's answer to `FetchHotList`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum HotListUpdate {
    /// The whole list (the master holds none, or a version the issuer cannot build a delta from).
    Full(HotList),
    /// What changed since `base_version`: a new signed head and the entries added since.
    Delta {
        /// The version the master said it holds.
        base_version: u64,
        /// The new head (it also renews the validity window when nothing was added).
        head: SignedHotHead,
        /// Entries added since `base_version`.
        added: Vec<HotEntry>,
    },
}
