//! The issuer's store: accounts (keyed by card hash), batches, and every decision (the ledger).
//!
//! Key layout:
//! - `accounts`: card hash (32 bytes) → account (masked card, kind, expiry, opening and available
//!   amounts, currency, open).
//! - `decisions`: payment id (16 bytes) → the decision, with its batch, masked card and the keyed
//!   digest of the item it decided (an id re-used with other content is refused by it).
//! - `batches`: batch id (16 bytes) → header and whether every decision is stored.
//! - `batch_chunks`: batch id ++ position (u32 BE) → the payment ids from there on, up to 256.
//! - `batch_items`: batch id ++ position (u32 BE) → payment id: batches decided before ids were
//!   grouped (read when a batch has no `batch_chunks`).
//! - `meta`: `accounts_imported`.
//! - `charged`: payment id → card hash of the account an approval charged (what a reversal
//!   gives back to).
//! - `reversals`: payment id → what its reversal did (released amount, or nothing charged).
//! - `late`: payment id → nothing: the item it was decided from was marked `late` (sealed after
//!   its deferred-authorization deadline). A tree of its own so that decisions stored before it
//!   existed read as they did.
//! - `atc`: keyed hash of card number and PAN sequence number (32 bytes) → the chip transaction
//!   counters seen of that card
//!   (`inflight_core::chip::AtcWindow`), written with the decision that used one.
//! - `hot_cards`: hot-list entry (8 bytes, keyed and truncated: no card number) → the list
//!   version that added it (u64 BE); `meta` `hot_version` → the list's version (u64 BE).
//!
//! A chunk of decisions and the account changes they cause are written in one transaction, so
//! an account is never charged without its decision being recorded, nor the reverse. A payment id
//! already decided is never decided again, whichever batch it arrives in: the transaction reads
//! the earlier decision and the account and applies what `inflight_core::issuer::decide` says
//! (this crate makes no decision of its own).

use std::path::Path;

use bincode::{Decode, Encode};
use std::collections::HashMap;

use inflight_core::authorize::{Account, CardFile, Rules};
use inflight_core::chip::AtcWindow;
pub use inflight_core::issuer::BatchStart;
use inflight_core::issuer::{decide, reverse, start_of, ItemDecision, ReversalDecision};
use inflight_wire::{
    AuthOutcome, AuthResult, BatchHeader, BatchId, BatchItem, CardKind, Currency, EmvData, Expiry, HotEntry, MaskedPan,
    Money, Pan, PaymentId, ReversalOutcome, ReversalResult, HOT_ENTRIES_MAX, HOT_ENTRY_BYTES,
};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::records::{decode_record, encode_record};
use crate::vault::hex;
use crate::{open_sled, CardVault, Committer, StoreError, Ticket};

#[derive(Debug, Clone, Encode, Decode)]
struct AccountRecord {
    /// BIN + last 4: how `accounts` names the account without the card number.
    card: MaskedPan,
    /// What was available when the account was imported: the checkers' reference for
    /// `available = opening − approved`.
    opening_minor: u64,
    kind: CardKind,
    expiry: Expiry,
    available_minor: u64,
    currency: Currency,
    open: bool,
    /// A chip card (never taken keyed offline).
    chip: bool,
}

impl From<&AccountRecord> for Account {
    fn from(r: &AccountRecord) -> Self {
        Account {
            kind: r.kind,
            expiry: r.expiry,
            available_minor: r.available_minor,
            currency: r.currency,
            open: r.open,
            chip: r.chip,
        }
    }
}

impl AccountRecord {
    fn imported(pan: &Pan, a: &Account) -> Self {
        AccountRecord {
            card: pan.masked(),
            opening_minor: a.available_minor,
            kind: a.kind,
            expiry: a.expiry,
            available_minor: a.available_minor,
            currency: a.currency,
            open: a.open,
            chip: a.chip,
        }
    }

    /// This record after an authorization changed the account.
    fn after(&self, a: &Account) -> Self {
        AccountRecord { available_minor: a.available_minor, open: a.open, ..self.clone() }
    }
}

/// One account as `inflight-issuer accounts` shows it: no card number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountLine {
    /// BIN + last 4.
    pub card: MaskedPan,
    /// Account currency.
    pub currency: Currency,
    /// Available when imported, minor units.
    pub opening_minor: u64,
    /// Available now, minor units.
    pub available_minor: u64,
}

#[derive(Debug, Clone, Encode, Decode)]
struct DecisionRecord {
    batch: BatchId,
    card: MaskedPan,
    amount: Money,
    outcome: AuthOutcome,
    /// Keyed digest (HMAC under this issuer's card key) of the item decided: a later item with
    /// this payment id must carry the same content, or it is refused, never given this decision.
    content: [u8; 32],
}

#[derive(Debug, Clone, Encode, Decode)]
struct IssuerBatch {
    header: BatchHeader,
    done: bool,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    /// The payment.
    pub payment_id: PaymentId,
    /// The batch that first carried it.
    pub batch_id: BatchId,
    /// BIN + last 4.
    pub card: MaskedPan,
    /// Amount.
    pub amount: Money,
    /// Approved or declined.
    pub outcome: AuthOutcome,
    /// Reversed since (its sale app voided it): the amount released, if it was approved.
    pub reversed: Option<ReversalOutcome>,
    /// The item decided was marked `late`: sealed by the aircraft after its
    /// deferred-authorization deadline.
    pub late: bool,
}

#[derive(Debug, Clone, Copy, Encode, Decode)]
struct ReversalRecord {
    outcome: ReversalOutcome,
}

const ACCOUNTS_IMPORTED: &[u8] = b"accounts_imported";
const HOT_VERSION: &[u8] = b"hot_version";

/// The issuer's hot-card list as stored: its version and every entry with the version that
/// added it (what a delta from an older version carries).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HotCards {
    /// The list's version: 0 before any card was listed.
    pub version: u64,
    /// Every entry and the version that added it, in entry order.
    pub entries: Vec<(HotEntry, u64)>,
}

/// The issuer's durable store.
#[derive(Debug)]
pub struct IssuerStore {
    accounts: sled::Tree,
    decisions: sled::Tree,
    batches: sled::Tree,
    batch_items: sled::Tree,
    batch_chunks: sled::Tree,
    meta: sled::Tree,
    charged: sled::Tree,
    reversals: sled::Tree,
    late: sled::Tree,
    atc: sled::Tree,
    hot_cards: sled::Tree,
    vault: CardVault,
    committer: Committer,
}

impl IssuerStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, vault: CardVault, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = open_sled(dir, cache_bytes)?;
        let s = Self {
            accounts: db.open_tree("accounts")?,
            decisions: db.open_tree("decisions")?,
            batches: db.open_tree("batches")?,
            batch_items: db.open_tree("batch_items")?,
            batch_chunks: db.open_tree("batch_chunks")?,
            meta: db.open_tree("meta")?,
            charged: db.open_tree("charged")?,
            reversals: db.open_tree("reversals")?,
            late: db.open_tree("late")?,
            atc: db.open_tree("atc")?,
            hot_cards: db.open_tree("hot_cards")?,
            vault,
            committer: Committer::start(db.clone(), dir)?,
        };
        Ok(s)
    }

    /// Whether the accounts file has been imported (it is imported once; afterwards the store's
    /// available amounts are the truth).
    pub fn accounts_imported(&self) -> Result<bool, StoreError> {
        Ok(self.meta.get(ACCOUNTS_IMPORTED)?.is_some())
    }

    /// Imports accounts, keyed by the card's keyed hash (no card number is stored).
    pub fn import_accounts(&self, accounts: &[(Pan, Account)]) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let mut b = sled::Batch::default();
        for (pan, acct) in accounts {
            b.insert(
                self.vault.card_hash(pan.expose_digits()).to_vec(),
                encode_record(&AccountRecord::imported(pan, acct)),
            );
        }
        self.accounts.apply_batch(b)?;
        self.meta.insert(ACCOUNTS_IMPORTED, b"1".as_slice())?;
        self.committer.note_write()
    }

    /// The hot-card list's HMAC key (published with the list; see [`CardVault::hot_list_key`]).
    pub fn hot_list_key(&self) -> [u8; 32] {
        self.vault.hot_list_key()
    }

    /// The hot-card list as stored.
    pub fn hot_cards(&self) -> Result<HotCards, StoreError> {
        let version = match self.meta.get(HOT_VERSION)? {
            Some(b) => u64_be(HOT_VERSION, &b)?,
            None => 0,
        };
        let mut entries = Vec::new();
        for kv in self.hot_cards.iter() {
            let (k, v) = kv?;
            let entry: [u8; HOT_ENTRY_BYTES] = k
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt { key: hex(&k), detail: "hot-card entry of wrong length".into() })?;
            entries.push((HotEntry(entry), u64_be(&k, &v)?));
        }
        Ok(HotCards { version, entries })
    }

    /// Lists `pans` as hot (under the list key; no card number is stored), as one new list
    /// version if any of them is not listed yet. Stops at [`HOT_ENTRIES_MAX`]. Returns the
    /// write's ticket and how many cards could not be listed because the list is full.
    pub fn add_hot_cards(&self, pans: &[&Pan]) -> Result<(Ticket, usize), StoreError> {
        self.committer.check_writable()?;
        let key = self.vault.hot_list_key();
        let mut fresh: Vec<HotEntry> = pans.iter().map(|p| inflight_core::hotlist::entry_for(&key, p)).collect();
        fresh.sort_unstable();
        fresh.dedup();
        let mut new = Vec::new();
        for e in fresh {
            if !self.hot_cards.contains_key(e.0)? {
                new.push(e);
            }
        }
        if new.is_empty() {
            return Ok((Ticket::NONE, 0));
        }
        let room = HOT_ENTRIES_MAX.saturating_sub(self.hot_cards.len());
        let full = new.len().saturating_sub(room);
        new.truncate(room);
        if new.is_empty() {
            return Ok((Ticket::NONE, full));
        }
        let version = self.hot_cards()?.version + 1;
        let mut b = sled::Batch::default();
        for e in &new {
            b.insert(e.0.to_vec(), version.to_be_bytes().to_vec());
        }
        // Entries first, then the version: a crash between the two leaves entries the next
        // version (re-)announces, never a version without its entries.
        self.hot_cards.apply_batch(b)?;
        self.meta.insert(HOT_VERSION, version.to_be_bytes().as_slice())?;
        Ok((self.committer.note_write()?, full))
    }

    /// Records the start of a batch and says how to treat it ([`start_of`]): a batch id never
    /// seen is recorded, unfinished.
    pub fn begin_batch(&self, header: &BatchHeader) -> Result<(BatchStart, Ticket), StoreError> {
        self.committer.check_writable()?;
        let known: Option<IssuerBatch> = match self.batches.get(header.id.0)? {
            Some(bytes) => Some(decode_record(&header.id.0, &bytes)?),
            None => None,
        };
        let start = start_of(known.as_ref().map(|k| (&k.header, k.done)), header);
        if start != BatchStart::New {
            return Ok((start, Ticket::NONE));
        }
        self.batches.insert(header.id.0, encode_record(&IssuerBatch { header: header.clone(), done: false }))?;
        Ok((start, self.committer.note_write()?))
    }

    /// The keyed content digests stored with earlier decisions of these items' payment ids
    /// (only the ids decided before), for
    /// [`AcceptedBatch::first_conflict`](inflight_core::issuer::AcceptedBatch::first_conflict).
    pub fn prior_contents(&self, items: &[BatchItem]) -> Result<HashMap<PaymentId, [u8; 32]>, StoreError> {
        let mut out = HashMap::new();
        for item in items {
            let key = item.id.to_bytes();
            if let Some(bytes) = self.decisions.get(key)? {
                let rec: DecisionRecord = decode_record(&key, &bytes)?;
                out.insert(item.id, rec.content);
            }
        }
        Ok(out)
    }

    /// The keyed digest of an item's whole content (card included), under this issuer's key:
    /// what a decision is stored with and compared by.
    pub fn content_digest(&self, item: &BatchItem) -> [u8; 32] {
        crate::records::item_digest(&self.vault, item)
    }

    /// Decides a chunk of items (positions `first_seq..`) in one transaction with the account
    /// changes: each item through [`decide`], which keeps an earlier decision of its payment id.
    /// An item whose id was decided with other content fails the whole chunk with
    /// [`StoreError::ContentConflict`] (the driver checks the batch for those first; this
    /// catches one decided by another connection meanwhile).
    pub fn decide_chunk(
        &self,
        batch: BatchId,
        first_seq: u32,
        items: &[BatchItem],
        rules: &Rules<'_>,
    ) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let hashes: Vec<[u8; 32]> = items.iter().map(|i| self.vault.card_hash(i.pan.expose_digits())).collect();
        let contents: Vec<[u8; 32]> = items.iter().map(|i| self.content_digest(i)).collect();
        // A chip's counters belong to the card, number and sequence number together: a card
        // re-issued under the same number (a new PSN) starts its counter again.
        let atc_keys: Vec<[u8; 32]> = items
            .iter()
            .map(|i| {
                let psn = i.emv.as_ref().map_or(0, EmvData::pan_sequence);
                self.vault.card_hash(&format!("{}/{psn:02}", i.pan.expose_digits()))
            })
            .collect();
        let abort = ConflictableTransactionError::Abort;
        let ids: Vec<PaymentId> = items.iter().map(|i| i.id).collect();
        let positions_of = crate::records::batch_id_values(batch, first_seq, &ids);
        let trees = (&self.accounts, &self.decisions, &self.batch_chunks, &self.charged, &self.late, &self.atc);
        let result = trees.transaction(|(accts, decs, positions, charged, late, atcs)| {
            // Rewritten whole each time the chunk is decided (a batch resumed after a crash):
            // every chunk of a batch is decided again before it is finished.
            for (k, v) in &positions_of {
                positions.insert(k.to_vec(), v.clone())?;
            }
            for (((item, hash), content), atc_key) in items.iter().zip(&hashes).zip(&contents).zip(&atc_keys) {
                let key = item.id.to_bytes();
                let prior = match decs.get(key)? {
                    Some(b) => Some(decode_record::<DecisionRecord>(&key, &b).map_err(abort)?.content),
                    None => None,
                };
                let acct = match accts.get(hash)? {
                    Some(b) => Some(decode_record::<AccountRecord>(hash, &b).map_err(abort)?),
                    None => None,
                };
                let account = acct.as_ref().map(Account::from);
                let atc = match atcs.get(atc_key)? {
                    Some(b) => Some(decode_record::<AtcWindow>(atc_key, &b).map_err(abort)?),
                    None => None,
                };
                match decide(item, content, prior.as_ref(), CardFile { account: account.as_ref(), atc }, rules) {
                    ItemDecision::Keep => {}
                    ItemDecision::Conflict => {
                        return Err(abort(StoreError::ContentConflict { payment: item.id.to_string() }));
                    }
                    ItemDecision::Decide { outcome, account_after, atc_after } => {
                        if let (Some(after), Some(before)) = (account_after, &acct) {
                            accts.insert(hash.to_vec(), encode_record(&before.after(&after)))?;
                        }
                        // The counters this chip has used, with the decision that used one: a
                        // later copy of its cryptogram finds it (replay), whatever batch or
                        // flight carries it.
                        if let Some(w) = atc_after {
                            atcs.insert(atc_key.to_vec(), encode_record(&w))?;
                        }
                        if matches!(outcome, AuthOutcome::Approved { .. }) {
                            charged.insert(key.to_vec(), hash.to_vec())?;
                        }
                        // Recorded with the decision it describes, from the item decided: a
                        // later copy (a re-send, another batch) is never decided, nor re-marked.
                        if item.late {
                            late.insert(key.to_vec(), Vec::<u8>::new())?;
                        }
                        let rec = DecisionRecord {
                            batch,
                            card: item.pan.masked(),
                            amount: item.amount,
                            outcome,
                            content: *content,
                        };
                        decs.insert(key.to_vec(), encode_record(&rec))?;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => self.committer.note_write(),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Reverses payments (voided by their sale apps after they were sealed) for `aircraft`, each
    /// through [`reverse`], in one transaction with the account changes: an approved payment's
    /// amount is released to its account exactly once, however often its reversal comes. A
    /// payment another aircraft sent is not this one's to reverse: it is answered `Unknown`, as
    /// is an approval whose account cannot be found (never an error that would stop the
    /// aircraft's uploads).
    pub fn reverse(&self, ids: &[PaymentId], aircraft: &str) -> Result<(Vec<ReversalResult>, Ticket), StoreError> {
        self.committer.check_writable()?;
        // Batch headers never change once written: read outside the transaction.
        let mut theirs = std::collections::HashSet::new();
        for id in ids {
            let key = id.to_bytes();
            if let Some(b) = self.decisions.get(key)? {
                let batch = decode_record::<DecisionRecord>(&key, &b)?.batch;
                let sender = match self.batches.get(batch.0)? {
                    Some(h) => Some(decode_record::<IssuerBatch>(&batch.0, &h)?.header.aircraft),
                    None => None,
                };
                if sender.as_deref() != Some(aircraft) {
                    theirs.insert(*id);
                }
            }
        }
        let abort = ConflictableTransactionError::Abort;
        let trees = (&self.accounts, &self.decisions, &self.charged, &self.reversals);
        let results = trees.transaction(|(accts, decs, charged, revs)| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let key = id.to_bytes();
                let prior = match revs.get(key)? {
                    Some(b) => Some(decode_record::<ReversalRecord>(&key, &b).map_err(abort)?.outcome),
                    None => None,
                };
                let decided = match decs.get(key)? {
                    Some(b) if !theirs.contains(id) => Some(decode_record::<DecisionRecord>(&key, &b).map_err(abort)?),
                    _ => None,
                };
                let mut decision = reverse(decided.as_ref().map(|d| (&d.outcome, d.amount)), prior);
                if let ReversalDecision::Release { amount_minor } = decision {
                    let account = match charged.get(key)? {
                        Some(hash) => accts.get(&hash)?.map(|b| (hash, b)),
                        None => None,
                    };
                    match account {
                        Some((hash, bytes)) => {
                            let mut acct: AccountRecord = decode_record(&hash, &bytes).map_err(abort)?;
                            acct.available_minor = acct.available_minor.saturating_add(amount_minor);
                            accts.insert(hash.to_vec(), encode_record(&acct))?;
                        }
                        None => {
                            tracing::error!(payment = %id, "an approval to reverse has no charged account on record; left for operations");
                            decision = ReversalDecision::Unknown;
                        }
                    }
                }
                if matches!(decision, ReversalDecision::NotCharged | ReversalDecision::Release { .. }) {
                    revs.insert(key.to_vec(), encode_record(&ReversalRecord { outcome: decision.outcome() }))?;
                }
                out.push(ReversalResult { id: *id, outcome: decision.outcome() });
            }
            Ok(out)
        });
        match results {
            Ok(out) => Ok((out, self.committer.note_write()?)),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Marks a batch finished once all `header.count` items are decided.
    pub fn finish_batch(&self, header: &BatchHeader) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let ids = self.batch_ids(header.id)?;
        if ids.len() != header.count as usize {
            return Err(StoreError::Io(format!(
                "batch {} holds {} items, header says {}",
                header.id,
                ids.len(),
                header.count
            )));
        }
        self.batches.insert(header.id.0, encode_record(&IssuerBatch { header: header.clone(), done: true }))?;
        self.committer.note_write()
    }

    fn batch_ids(&self, batch: BatchId) -> Result<Vec<PaymentId>, StoreError> {
        let grouped = crate::records::batch_ids(&self.batch_chunks, batch)?;
        if grouped.is_empty() {
            // Decided before ids were grouped.
            return crate::records::batch_ids(&self.batch_items, batch);
        }
        Ok(grouped)
    }

    /// The results of a batch, in batch order.
    pub fn results(&self, batch: BatchId) -> Result<Vec<AuthResult>, StoreError> {
        let mut out = Vec::new();
        for id in self.batch_ids(batch)? {
            let key = id.to_bytes();
            let bytes = self.decisions.get(key)?.ok_or_else(|| StoreError::Corrupt {
                key: hex(&key),
                detail: "batch item without a decision".into(),
            })?;
            let rec: DecisionRecord = decode_record(&key, &bytes)?;
            out.push(AuthResult { id, outcome: rec.outcome });
        }
        Ok(out)
    }

    /// Every decision, in payment-id order.
    pub fn ledger(&self) -> Result<Vec<LedgerLine>, StoreError> {
        let mut out = Vec::new();
        for kv in self.decisions.iter() {
            let (k, v) = kv?;
            let rec: DecisionRecord = decode_record(&k, &v)?;
            let b: [u8; 16] =
                k.as_ref().try_into().map_err(|_| StoreError::Corrupt { key: hex(&k), detail: "payment id".into() })?;
            let reversed = match self.reversals.get(&k)? {
                Some(r) => Some(decode_record::<ReversalRecord>(&k, &r)?.outcome),
                None => None,
            };
            out.push(LedgerLine {
                payment_id: PaymentId::from_bytes(b),
                batch_id: rec.batch,
                card: rec.card,
                amount: rec.amount,
                outcome: rec.outcome,
                reversed,
                late: self.late.contains_key(&k)?,
            });
        }
        Ok(out)
    }

    /// Every account, in card-hash order (an order that says nothing about the card numbers).
    pub fn accounts(&self) -> Result<Vec<AccountLine>, StoreError> {
        let mut out = Vec::new();
        for kv in self.accounts.iter() {
            let (k, v) = kv?;
            let rec: AccountRecord = decode_record(&k, &v)?;
            out.push(AccountLine {
                card: rec.card,
                currency: rec.currency,
                opening_minor: rec.opening_minor,
                available_minor: rec.available_minor,
            });
        }
        Ok(out)
    }

    /// Waits until every write up to `ticket` is durable.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.committer.wait(ticket).await
    }

    /// Blocking form of [`IssuerStore::durable`].
    pub fn durable_blocking(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.committer.wait_blocking(ticket)
    }

    /// The ticket of the latest write.
    pub fn latest(&self) -> Ticket {
        self.committer.latest()
    }

    /// Has `observer` told about every group commit (a daemon's metrics).
    pub fn observe_commits(&self, observer: crate::CommitObserver) {
        self.committer.observe(observer);
    }

    /// Flushes everything and stops the flusher.
    pub fn close(&self) {
        self.committer.close();
    }
}

/// A stored u64 (big-endian, 8 bytes) under `key`.
fn u64_be(key: &[u8], bytes: &[u8]) -> Result<u64, StoreError> {
    let b: [u8; 8] =
        bytes.try_into().map_err(|_| StoreError::Corrupt { key: hex(key), detail: "not an 8-byte number".into() })?;
    Ok(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pan(serial: u64) -> Pan {
        // Luhn-valid numbers of one BIN: the check digit found by trying all ten.
        let body = format!("510055{serial:09}");
        (0..10).find_map(|c| Pan::parse(&format!("{body}{c}")).ok()).expect("one check digit fits")
    }

    #[test]
    fn hot_cards_are_versioned_idempotent_survive_a_restart_and_store_no_card_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = [3; 32];
        let s = IssuerStore::open(dir.path(), CardVault::from_key(&key), 4 << 20).expect("open");
        assert_eq!(s.hot_cards().expect("read"), HotCards::default());
        let (t, full) = s.add_hot_cards(&[&pan(1)]).expect("add");
        s.durable_blocking(t).expect("durable");
        assert_eq!(full, 0);
        // Listed again: no new version (a replayed batch adds nothing).
        let (t, _) = s.add_hot_cards(&[&pan(1)]).expect("add again");
        assert_eq!(t, Ticket::NONE);
        let (t, _) = s.add_hot_cards(&[&pan(2), &pan(1)]).expect("add one more");
        s.durable_blocking(t).expect("durable");
        let cards = s.hot_cards().expect("read");
        assert_eq!(cards.version, 2);
        let hot_key = s.hot_list_key();
        let mut want = vec![
            (inflight_core::hotlist::entry_for(&hot_key, &pan(1)), 1),
            (inflight_core::hotlist::entry_for(&hot_key, &pan(2)), 2),
        ];
        want.sort_unstable();
        assert_eq!(cards.entries, want, "each entry with the version that added it");
        s.close();
        drop(s);
        // After a restart: the same list, and the same key (deltas stay possible).
        let s = IssuerStore::open(dir.path(), CardVault::from_key(&key), 4 << 20).expect("reopen");
        assert_eq!(s.hot_cards().expect("read"), cards);
        assert_eq!(s.hot_list_key(), hot_key);
        s.close();
        drop(s);
        // No card number on disk: neither its digits nor its bytes in any file of the store.
        for f in std::fs::read_dir(dir.path()).expect("dir").flatten() {
            if f.path().is_file() {
                let bytes = std::fs::read(f.path()).expect("read");
                for p in [pan(1), pan(2)] {
                    let digits = p.expose_digits().as_bytes();
                    assert!(!bytes.windows(digits.len()).any(|w| w == digits), "{}", f.path().display());
                }
            }
        }
    }

    #[test]
    fn the_hot_list_stops_at_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = IssuerStore::open(dir.path(), CardVault::from_key(&[4; 32]), 4 << 20).expect("open");
        let pans: Vec<Pan> = (0..HOT_ENTRIES_MAX as u64 + 3).map(pan).collect();
        let refs: Vec<&Pan> = pans.iter().collect();
        let (_, full) = s.add_hot_cards(&refs).expect("add");
        assert_eq!(full, 3, "three cards past the limit are reported, not listed");
        assert_eq!(s.hot_cards().expect("read").entries.len(), HOT_ENTRIES_MAX);
        let (t, full) = s.add_hot_cards(&[&pan(1_000_000)]).expect("add to a full list");
        assert_eq!((t, full), (Ticket::NONE, 1));
        s.close();
    }

    /// A batch decided in chunks reads back whole and in order (ids grouped 256 per value, from
    /// each chunk's own position), and a batch decided before ids were grouped (one id per value
    /// in `batch_items`) still reads back.
    #[test]
    fn a_batch_s_results_read_back_in_order_grouped_or_one_id_per_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = IssuerStore::open(dir.path(), CardVault::from_key(&[3; 32]), 4 << 20).expect("open");
        let eur = Currency::parse("EUR").expect("known");
        let items: Vec<BatchItem> = (0..600u32)
            .map(|n| BatchItem {
                id: PaymentId::mint(1_790_000_000_000 + u64::from(n), [n as u8; 10]),
                pan: pan(u64::from(n)),
                expiry: Expiry::parse("12/30").expect("valid"),
                amount: Money::new(100, eur).expect("valid"),
                captured_unix_ms: 1_790_000_000_000,
                late: false,
                deferred: true,
                emv: None,
                pos: inflight_wire::PointOfSale::LEGACY,
            })
            .collect();
        let programme = inflight_wire::BinList {
            version: 1,
            issuer: "bank".into(),
            valid_from_unix_ms: 0,
            valid_until_unix_ms: u64::MAX,
            rules: vec![],
        };
        let batch = BatchId([5; 16]);
        for (k, chunk) in items.chunks(512).enumerate() {
            let first_seq = (k * 512) as u32;
            s.decide_chunk(
                batch,
                first_seq,
                chunk,
                &Rules { programme: &programme, bounds: inflight_core::authorize::CaptureBounds::ANY, chip_key: None },
            )
            .expect("decide");
        }
        let ids = |r: Vec<AuthResult>| r.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let want: Vec<PaymentId> = items.iter().map(|i| i.id).collect();
        assert_eq!(ids(s.results(batch).expect("results")), want);

        let before = BatchId([6; 16]);
        for (seq, id) in want.iter().enumerate().take(3) {
            s.batch_items
                .insert(crate::records::batch_item_key(before, seq as u32), &id.to_bytes())
                .expect("write the old layout");
        }
        assert_eq!(ids(s.results(before).expect("results")), want[..3].to_vec());
    }
}
