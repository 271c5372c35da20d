//! The issuer's hot-card list as a holder keeps it: verified, looked up, updated by deltas.
//!
//! A list is a signed [`HotListHead`] and its entries, each the first 8 bytes of
//! HMAC-SHA256(list key, card digits) ([`entry_for`]). The head commits to the entries by count
//! and SHA-256 ([`entries_digest`]), so the master can apply a delta (a new signed head plus
//! the entries added) and still hand terminals a list whose every byte the issuer vouched for:
//! [`HotSet::verify`] and [`HotSet::apply_delta`] both end by comparing the set they built
//! with the signed digest. Which list to hold follows the BIN list's rule ([`prefer`]).
//!
//! A lookup ignores the list's validity window: an expired list still names cards the issuer
//! blocked, and refusing them is the safe side. A holder without any list accepts on the BIN
//! list alone (the hot list only ever removes cards).

use inflight_wire::{
    decode, encode, HotEntry, HotList, HotListHead, Pan, SignedHotHead, HOT_ENTRIES_MAX, HOT_ENTRY_BYTES,
    HOT_LIST_SIGNING_LABEL,
};
use ring::{digest, hmac, signature};

/// Why a list or a delta was not taken. Nothing here holds card data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HotListError {
    /// The head's signature does not verify under the issuer's public key.
    #[error("hot-card list signature does not verify with the issuer's key")]
    BadSignature,
    /// The signed head is not a valid head.
    #[error("hot-card list head is malformed: {0}")]
    Malformed(String),
    /// More than [`HOT_ENTRIES_MAX`] entries.
    #[error("hot-card list holds {0} entries, more than {HOT_ENTRIES_MAX}")]
    TooManyEntries(usize),
    /// Entries not sorted ascending, or one twice.
    #[error("hot-card list entries are not sorted and unique")]
    NotSorted,
    /// The entries are not the ones the signed head counts and digests.
    #[error("hot-card list entries do not match the signed head (count or digest)")]
    DigestMismatch,
    /// A delta from a version other than the one held.
    #[error("hot-card delta applies to version {base}, the list held is version {held}")]
    WrongBase {
        /// The version the delta starts from.
        base: u64,
        /// The version held.
        held: u64,
    },
    /// A delta whose head is older than the list it applies to.
    #[error("hot-card delta goes back from version {held} to {to}")]
    VersionBackwards {
        /// The version held.
        held: u64,
        /// The delta's version.
        to: u64,
    },
}

/// The list entry of `pan` under `key`: the first [`HOT_ENTRY_BYTES`] of
/// HMAC-SHA256(key, card digits). Keyed, never a plain hash: a plain hash of a card number is
/// brute-forced from its BIN and last 4 in seconds.
pub fn entry_for(key: &[u8; 32], pan: &Pan) -> HotEntry {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), pan.expose_digits().as_bytes());
    let mut out = [0u8; HOT_ENTRY_BYTES];
    out.copy_from_slice(&tag.as_ref()[..HOT_ENTRY_BYTES]);
    HotEntry(out)
}

/// SHA-256 over a domain label and the entries' bytes, in the order given (the head's
/// `entries_digest` is over the sorted, unique entries). Its input is keyed hashes only.
pub fn entries_digest(entries: &[HotEntry]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"inflight/v1/hot-list-entries");
    for e in entries {
        ctx.update(&e.0);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The bytes the issuer signs for a head: a domain label, then the encoded head.
pub fn signing_input(body: &[u8]) -> Vec<u8> {
    [HOT_LIST_SIGNING_LABEL, body].concat()
}

/// The head the issuer signs for `entries` (sorted and de-duplicated here).
pub fn head_for(
    version: u64,
    issuer: &str,
    window_unix_ms: (u64, u64),
    key: [u8; 32],
    entries: &mut Vec<HotEntry>,
) -> HotListHead {
    entries.sort_unstable();
    entries.dedup();
    HotListHead {
        version,
        issuer: issuer.to_owned(),
        valid_from_unix_ms: window_unix_ms.0,
        valid_until_unix_ms: window_unix_ms.1,
        key,
        count: entries.len() as u32,
        entries_digest: entries_digest(entries),
    }
}

/// A verified hot-card list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotSet {
    /// The decoded head (its signature verified).
    head: HotListHead,
    /// The head as signed, handed on unchanged to terminals.
    signed: SignedHotHead,
    /// Sorted ascending, unique; the head's count and digest match them.
    entries: Vec<HotEntry>,
}

impl HotSet {
    /// Verifies a whole list: signature, size, order, then count and digest.
    pub fn verify(public_key: &[u8; 32], list: &HotList) -> Result<Self, HotListError> {
        let head = verify_head(public_key, &list.head)?;
        Self::checked(head, list.head.clone(), list.entries.clone())
    }

    /// This list updated by a delta from the issuer: `head` signed for the new version,
    /// `added` the entries added since `base_version`, which must be the version held.
    pub fn apply_delta(
        &self,
        public_key: &[u8; 32],
        base_version: u64,
        head: &SignedHotHead,
        added: &[HotEntry],
    ) -> Result<Self, HotListError> {
        if base_version != self.head.version {
            return Err(HotListError::WrongBase { base: base_version, held: self.head.version });
        }
        let new_head = verify_head(public_key, head)?;
        if new_head.version < self.head.version {
            return Err(HotListError::VersionBackwards { held: self.head.version, to: new_head.version });
        }
        if self.entries.len() + added.len() > HOT_ENTRIES_MAX {
            return Err(HotListError::TooManyEntries(self.entries.len() + added.len()));
        }
        let mut entries = self.entries.clone();
        entries.extend_from_slice(added);
        entries.sort_unstable();
        entries.dedup();
        Self::checked(new_head, head.clone(), entries)
    }

    fn checked(head: HotListHead, signed: SignedHotHead, entries: Vec<HotEntry>) -> Result<Self, HotListError> {
        if entries.len() > HOT_ENTRIES_MAX {
            return Err(HotListError::TooManyEntries(entries.len()));
        }
        if !entries.windows(2).all(|w| w[0] < w[1]) {
            return Err(HotListError::NotSorted);
        }
        if head.count as usize != entries.len() || head.entries_digest != entries_digest(&entries) {
            return Err(HotListError::DigestMismatch);
        }
        Ok(Self { head, signed, entries })
    }

    /// Whether `pan` is on the list (or, with probability about `len / 2^64`, shares an entry
    /// with a listed card).
    pub fn contains(&self, pan: &Pan) -> bool {
        self.entries.binary_search(&entry_for(&self.head.key, pan)).is_ok()
    }

    /// The verified head.
    pub fn head(&self) -> &HotListHead {
        &self.head
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.head.version
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list names no card.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the list is within its validity window at `unix_ms`.
    pub fn is_valid_at(&self, unix_ms: u64) -> bool {
        (self.head.valid_from_unix_ms..=self.head.valid_until_unix_ms).contains(&unix_ms)
    }

    /// The list as it travels and is stored: the signed head and the entries.
    pub fn to_wire(&self) -> HotList {
        HotList { head: self.signed.clone(), entries: self.entries.clone() }
    }
}

fn verify_head(public_key: &[u8; 32], signed: &SignedHotHead) -> Result<HotListHead, HotListError> {
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(&signing_input(&signed.body), &signed.signature)
        .map_err(|_| HotListError::BadSignature)?;
    decode(&signed.body).map_err(|e| HotListError::Malformed(e.to_string()))
}

/// Whether `incoming` should replace `current` at `now_unix_ms`: the BIN list's rule
/// ([`crate::binlist::prefer`]): a valid list beats an expired or missing one; among valid
/// lists the higher `(version, valid_until)` wins.
pub fn prefer(current: Option<&HotSet>, incoming: &HotSet, now_unix_ms: u64) -> bool {
    if !incoming.is_valid_at(now_unix_ms) {
        return false;
    }
    match current {
        None => true,
        Some(cur) if !cur.is_valid_at(now_unix_ms) => true,
        Some(cur) => {
            (incoming.head.version, incoming.head.valid_until_unix_ms)
                > (cur.head.version, cur.head.valid_until_unix_ms)
        }
    }
}

/// Encodes a head for signing (the issuer's signer signs [`signing_input`] of this).
pub fn encode_head(head: &HotListHead) -> Vec<u8> {
    encode(head)
}

/// A list of `cards` signed by a fresh issuer key, valid at every time: for other modules' tests.
#[cfg(test)]
pub(crate) fn test_set(cards: &[&str]) -> HotSet {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let der = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system random source works in tests");
    let k = Ed25519KeyPair::from_pkcs8(der.as_ref()).expect("a key ring just generated");
    let key = [9; 32];
    let mut entries: Vec<HotEntry> =
        cards.iter().map(|c| entry_for(&key, &Pan::parse(c).expect("a valid test card"))).collect();
    let body = encode_head(&head_for(1, "test", (0, u64::MAX), key, &mut entries));
    let head = SignedHotHead { signature: k.sign(&signing_input(&body)).as_ref().to_vec(), body };
    let public: [u8; 32] = k.public_key().as_ref().try_into().expect("Ed25519 public keys are 32 bytes");
    HotSet::verify(&public, &HotList { head, entries }).expect("a list just signed verifies")
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn issuer_key() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system random source works in tests");
        Ed25519KeyPair::from_pkcs8(der.as_ref()).expect("a key ring just generated")
    }

    fn public(k: &Ed25519KeyPair) -> [u8; 32] {
        k.public_key().as_ref().try_into().expect("Ed25519 public keys are 32 bytes")
    }

    fn sign(k: &Ed25519KeyPair, head: &HotListHead) -> SignedHotHead {
        let body = encode_head(head);
        SignedHotHead { signature: k.sign(&signing_input(&body)).as_ref().to_vec(), body }
    }

    fn pan(s: &str) -> Pan {
        Pan::parse(s).expect("a valid test card")
    }

    /// A list of `cards` at `version`, valid over [0, 1000].
    fn list(k: &Ed25519KeyPair, version: u64, cards: &[&str]) -> HotList {
        let mut entries: Vec<HotEntry> = cards.iter().map(|c| entry_for(&KEY, &pan(c))).collect();
        let head = head_for(version, "bank", (0, 1_000), KEY, &mut entries);
        HotList { head: sign(k, &head), entries }
    }

    const BLOCKED: &str = "4000000000000002";
    const LOST: &str = "4111111111111111";
    const GOOD: &str = "5555555555554444";

    #[test]
    fn a_signed_list_verifies_and_finds_its_cards_only() {
        let k = issuer_key();
        let set = HotSet::verify(&public(&k), &list(&k, 1, &[BLOCKED, LOST])).expect("valid list");
        assert!(set.contains(&pan(BLOCKED)) && set.contains(&pan(LOST)));
        assert!(!set.contains(&pan(GOOD)));
        assert_eq!((set.version(), set.len()), (1, 2));
        // The wire form round-trips through verification unchanged.
        assert_eq!(HotSet::verify(&public(&k), &set.to_wire()), Ok(set));
    }

    #[test]
    fn tampering_or_another_key_is_refused() {
        let k = issuer_key();
        let good = list(&k, 1, &[BLOCKED, LOST]);
        let other = issuer_key();
        assert_eq!(HotSet::verify(&public(&other), &good), Err(HotListError::BadSignature));
        let mut flipped = good.clone();
        flipped.head.body[0] ^= 1;
        assert_eq!(HotSet::verify(&public(&k), &flipped), Err(HotListError::BadSignature));
        // An entry dropped in transit (to let a blocked card through) or added.
        let mut dropped = good.clone();
        dropped.entries.pop();
        assert_eq!(HotSet::verify(&public(&k), &dropped), Err(HotListError::DigestMismatch));
        let mut added = good.clone();
        added.entries.push(HotEntry([0xff; 8]));
        assert_eq!(HotSet::verify(&public(&k), &added), Err(HotListError::DigestMismatch));
        let mut unsorted = good;
        unsorted.entries.reverse();
        assert_eq!(HotSet::verify(&public(&k), &unsorted), Err(HotListError::NotSorted));
    }

    #[test]
    fn a_bin_list_signature_does_not_sign_a_hot_list() {
        // The same issuer key signs both lists: without the label a signature over one body
        // would verify as the other. Signed without the label, it must fail here.
        let k = issuer_key();
        let mut l = list(&k, 1, &[BLOCKED]);
        l.head.signature = k.sign(&l.head.body).as_ref().to_vec();
        assert_eq!(HotSet::verify(&public(&k), &l), Err(HotListError::BadSignature));
    }

    #[test]
    fn a_delta_applies_to_its_base_only_and_must_match_the_signed_head() {
        let k = issuer_key();
        let v1 = HotSet::verify(&public(&k), &list(&k, 1, &[LOST])).expect("valid");
        let v2 = list(&k, 2, &[LOST, BLOCKED]);
        let added = [entry_for(&KEY, &pan(BLOCKED))];
        let applied = v1.apply_delta(&public(&k), 1, &v2.head, &added).expect("delta from v1");
        assert!(applied.contains(&pan(BLOCKED)) && applied.contains(&pan(LOST)));
        assert_eq!(applied, HotSet::verify(&public(&k), &v2).expect("valid"), "delta = full list");
        // From another base: refused, and the held list is unchanged (it is not consumed).
        assert_eq!(v1.apply_delta(&public(&k), 0, &v2.head, &added), Err(HotListError::WrongBase { base: 0, held: 1 }));
        // Missing an addition: the signed digest does not match.
        assert_eq!(v1.apply_delta(&public(&k), 1, &v2.head, &[]), Err(HotListError::DigestMismatch));
        // Going backwards.
        let v3 = HotSet::verify(&public(&k), &list(&k, 3, &[LOST])).expect("valid");
        let v1_head = list(&k, 1, &[LOST]).head;
        assert_eq!(
            v3.apply_delta(&public(&k), 3, &v1_head, &[]),
            Err(HotListError::VersionBackwards { held: 3, to: 1 })
        );
        // An empty delta with a re-signed head (a renewal) keeps the entries.
        let renewed = v1.apply_delta(&public(&k), 1, &list(&k, 1, &[LOST]).head, &[]).expect("renewal");
        assert!(renewed.contains(&pan(LOST)));
    }

    #[test]
    fn entries_are_keyed_and_truncated() {
        let e = entry_for(&KEY, &pan(BLOCKED));
        assert_eq!(e.0.len(), HOT_ENTRY_BYTES);
        // Another key gives another entry: the list names no card without its key.
        assert_ne!(e, entry_for(&[8; 32], &pan(BLOCKED)));
        // The truncation is the HMAC's first 8 bytes: computed independently here.
        let full = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &KEY), BLOCKED.as_bytes());
        assert_eq!(&e.0[..], &full.as_ref()[..HOT_ENTRY_BYTES]);
    }

    #[test]
    fn too_many_entries_are_refused() {
        let k = issuer_key();
        let mut entries: Vec<HotEntry> = (0..=HOT_ENTRIES_MAX as u64).map(|i| HotEntry(i.to_be_bytes())).collect();
        let head = head_for(1, "bank", (0, 1_000), KEY, &mut entries);
        let l = HotList { head: sign(&k, &head), entries };
        assert_eq!(HotSet::verify(&public(&k), &l), Err(HotListError::TooManyEntries(HOT_ENTRIES_MAX + 1)));
    }

    #[test]
    fn which_list_to_hold() {
        let k = issuer_key();
        let v1 = HotSet::verify(&public(&k), &list(&k, 1, &[LOST])).expect("valid");
        let v2 = HotSet::verify(&public(&k), &list(&k, 2, &[LOST, BLOCKED])).expect("valid");
        assert!(prefer(None, &v1, 10));
        assert!(prefer(Some(&v1), &v2, 10));
        assert!(!prefer(Some(&v2), &v1, 10), "a lower version never replaces a higher one");
        assert!(!prefer(Some(&v1), &v2, 2_000), "an expired list is never installed");
    }
}
