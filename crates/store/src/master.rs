//! The aircraft server's store: every payment terminals submitted, with the master's verdict,
//! the batches sealed for the issuer, the issuer's results, and the crew's settings.
//!
//! Key layout:
//! - `payments`: payment id (16 bytes) → payment record (verdict, outcome, delivered).
//! - `batches`: batch id (16 bytes) → batch header and whether its results are stored.
//! - `batch_items`: batch id ++ position (u32 BE) → the payment ids from there on, up to 256 (one
//!   in stores written before ids were grouped), in batch order.
//! - `meta`: `open_batch` → batch id; `bin_list` → signed list; `hot_list` → hot-card list (signed head, entries); `link_override`; `flight`.
//! - `reversals`: payment id → a sale app's void of a payment already sealed into a batch: the
//!   reversal asked of the issuer, and its answer once stored.
//!
//! A payment's phase is derived, not stored: delivered if marked so; in a batch if it belongs to
//! the open batch; decided if an outcome is stored; otherwise pending. Sealing therefore writes
//! the batch's item list and then its header (the commit point) without touching every payment.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use bincode::{Decode, Encode};
use inflight_core::aggregator::{IndexEntry, Phase, Reversal};
use inflight_wire::{
    AuthOutcome, AuthResult, BatchHeader, BatchId, BatchItem, HotList, Payment, PaymentId, RefusalReason,
    ReversalOutcome, ReversalResult, SignedBinList, SignedManifestAck, Verdict,
};

use crate::records::{decode_record, encode_record, PaymentRecord};
use crate::vault::hex;
use crate::{open_sled, CardVault, Committer, MaskedView, StoreError, Ticket};

#[derive(Debug, Clone, Encode, Decode)]
struct MasterRecord {
    payment: PaymentRecord,
    /// Keyed digest (HMAC under the card key file) of the payment as first received: tells a
    /// re-send from an id re-used, and confirms no guess about the card to anyone without the key.
    digest: [u8; 32],
    /// Keyed hash of the card, for aircraft-wide per-card checks.
    card_hash: [u8; 32],
    verdict: Verdict,
    /// Checks that failed for a payment carried anyway (the terminal had already answered
    /// `accepted`); shown to the crew.
    flags: Vec<RefusalReason>,
    /// The flight it was captured on.
    flight: String,
    /// The issuer's decision, once stored.
    outcome: Option<AuthOutcome>,
    /// The terminal has stored the outcome; card data is erased.
    delivered: bool,
    /// The terminal confirmed its sale app was told `accepted`: only then may it be sealed.
    answered: bool,
}

/// A reversal asked of the issuer; `outcome` once it answered.
#[derive(Debug, Clone, Copy, Encode, Decode)]
struct ReversalRecord {
    outcome: Option<ReversalOutcome>,
}

#[derive(Debug, Clone, Encode, Decode)]
struct BatchRecord {
    header: BatchHeader,
    /// Every result of the batch is stored.
    done: bool,
    /// The issuer refused the batch, with its reason: set aside, never re-sent automatically.
    refused: Option<String>,
}

/// A payment as the crew's report shows it.
#[derive(Debug, Clone)]
pub struct MasterView {
    /// Masked payment.
    pub payment: MaskedView,
    /// The master's verdict.
    pub verdict: Verdict,
    /// Checks that failed on a payment carried anyway.
    pub flags: Vec<RefusalReason>,
    /// The flight.
    pub flight: String,
    /// The issuer's decision.
    pub outcome: Option<AuthOutcome>,
    /// Whether the terminal has the outcome.
    pub delivered: bool,
}

impl From<MasterRecord> for MasterView {
    fn from(rec: MasterRecord) -> Self {
        MasterView {
            payment: rec.payment.view(),
            verdict: rec.verdict,
            flags: rec.flags,
            flight: rec.flight,
            outcome: rec.outcome,
            delivered: rec.delivered,
        }
    }
}

/// A payment as the crew's flight report counts it: the masked view, whether its terminal
/// confirmed the sale app was told `accepted`, and where it is on its way to the issuer.
#[derive(Debug, Clone)]
pub struct ReportRow {
    /// The masked payment, verdict, flags and outcome.
    pub view: MasterView,
    /// The terminal confirmed its sale app was told `accepted` (only then is it carried).
    pub answered: bool,
    /// Derived as at start-up ([`MasterStore::index`]).
    pub phase: Phase,
    /// Its sale app voided it after it was sealed: the reversal asked of the issuer, answered or
    /// not.
    pub reversal: Option<Reversal>,
    /// When the batch that carries it was sealed, once sealed: its deadline is judged against it.
    pub sealed_unix_ms: Option<u64>,
}

/// The batch memberships a payment's phase is derived from.
struct Phases {
    in_open: HashSet<PaymentId>,
    quarantined: HashSet<PaymentId>,
}

impl Phases {
    fn of(&self, rec: &MasterRecord) -> Phase {
        let id = rec.payment.id;
        if rec.delivered {
            Phase::Delivered
        } else if self.in_open.contains(&id) {
            Phase::InBatch
        } else if self.quarantined.contains(&id) && rec.outcome.is_none() {
            Phase::Quarantined
        } else if rec.outcome.is_some() {
            Phase::Decided
        } else {
            Phase::Pending
        }
    }
}

/// Counts by verdict (for status when the daemon is stopped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MasterCounts {
    /// Payments to carry to the issuer.
    pub stored: u64,
    /// Payments refused at capture.
    pub refused: u64,
}

const OPEN_BATCH: &[u8] = b"open_batch";
/// Results written per sled batch.
const RESULTS_WRITE_CHUNK: usize = 4096;
const BIN_LIST: &[u8] = b"bin_list";
const HOT_LIST: &[u8] = b"hot_list";
/// `meta` keys of a closed flight's manifest waiting for the issuer, and of its acknowledgement
/// (each followed by the flight id).
const MANIFEST_OUT: &str = "manifest_out/";
const MANIFEST_ACK: &str = "manifest_ack/";

/// The aircraft server's durable store.
#[derive(Debug)]
pub struct MasterStore {
    payments: sled::Tree,
    batches: sled::Tree,
    batch_items: sled::Tree,
    meta: sled::Tree,
    reversals: sled::Tree,
    vault: CardVault,
    committer: Committer,
}

impl MasterStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, vault: CardVault, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = open_sled(dir, cache_bytes)?;
        let payments = db.open_tree("payments")?;
        let batches = db.open_tree("batches")?;
        let batch_items = db.open_tree("batch_items")?;
        let meta = db.open_tree("meta")?;
        let reversals = db.open_tree("reversals")?;
        let committer = Committer::start(db, dir)?;
        Ok(Self { payments, batches, batch_items, meta, reversals, vault, committer })
    }

    /// The keyed hash of a card number.
    pub fn card_hash(&self, p: &Payment) -> [u8; 32] {
        self.vault.card_hash(p.pan.expose_digits())
    }

    /// The keyed digest of a payment's content: tells a re-send from an id re-used.
    pub fn content_digest(&self, p: &Payment) -> [u8; 32] {
        crate::records::content_digest(&self.vault, p)
    }

    /// The key of a closed flight's manifest (chain and seal), derived from the card key file.
    pub fn manifest_key(&self) -> [u8; 32] {
        self.vault.manifest_key()
    }

    /// Fills `buf` with secure random bytes (for batch ids).
    pub fn random(&self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.vault.random(buf)
    }

    /// Records a payment with its verdict, unless the id is already stored (then nothing
    /// changes). Durable once the ticket is waited on.
    pub fn put(
        &self,
        p: &Payment,
        digest: [u8; 32],
        verdict: Verdict,
        flag: Option<RefusalReason>,
        flight: &str,
        answered: bool,
    ) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let mut payment = PaymentRecord::seal(&self.vault, p)?;
        if matches!(verdict, Verdict::Refused(_)) {
            // A refused payment is never carried: its card data is not kept.
            payment.card = None;
        }
        let rec = MasterRecord {
            payment,
            digest,
            card_hash: self.card_hash(p),
            verdict,
            flags: flag.into_iter().collect(),
            flight: flight.to_owned(),
            outcome: None,
            delivered: false,
            answered,
        };
        let inserted = self.payments.compare_and_swap(p.id.to_bytes(), None::<&[u8]>, Some(encode_record(&rec)))?;
        match inserted {
            Ok(()) => self.committer.note_write(),
            // Already there: whatever wrote it holds a ticket; the caller waits for all writes.
            Err(_) => Ok(self.committer.latest()),
        }
    }

    /// Turns a refused payment into a stored one, flagged with its refusal: the terminal had
    /// already answered `accepted`, so it must be carried.
    pub fn carry_refused(&self, p: &Payment, reason: RefusalReason) -> Result<Ticket, StoreError> {
        self.update(p.id, |rec| {
            if rec.verdict == Verdict::Stored {
                return Ok(false);
            }
            rec.payment = PaymentRecord::seal(&self.vault, p)?;
            rec.verdict = Verdict::Stored;
            rec.flags.push(reason);
            rec.answered = true;
            Ok(true)
        })
    }

    /// Records that the terminal confirmed its sale app was told `accepted`: the payment may now
    /// be sealed into a batch.
    pub fn confirm_answered(&self, id: PaymentId) -> Result<Ticket, StoreError> {
        self.update(id, |rec| Ok(!std::mem::replace(&mut rec.answered, true)))
    }

    /// Records a terminal's void of a payment never confirmed answered, and erases its card
    /// data: it is never carried.
    pub fn void(&self, id: PaymentId) -> Result<Ticket, StoreError> {
        self.update(id, |rec| {
            if rec.answered || rec.verdict != Verdict::Stored {
                return Ok(false);
            }
            rec.verdict = Verdict::Refused(RefusalReason::Voided);
            rec.payment.card = None;
            Ok(true)
        })
    }

    /// Records a sale app's void of a payment not yet sealed into a batch (answered or not),
    /// and erases its card data: it is never carried.
    pub fn cancel(&self, id: PaymentId) -> Result<Ticket, StoreError> {
        self.update(id, |rec| {
            if rec.verdict != Verdict::Stored || rec.outcome.is_some() {
                return Ok(false);
            }
            rec.verdict = Verdict::Refused(RefusalReason::Voided);
            rec.payment.card = None;
            Ok(true)
        })
    }

    /// Records that the issuer is to reverse `id` (its sale app voided it after it was sealed).
    pub fn request_reversal(&self, id: PaymentId) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let rec = encode_record(&ReversalRecord { outcome: None });
        match self.reversals.compare_and_swap(id.to_bytes(), None::<&[u8]>, Some(rec))? {
            Ok(()) => self.committer.note_write(),
            Err(_) => Ok(self.committer.latest()),
        }
    }

    /// Stores the issuer's answers to reversals (`Unknown` ones are left requested).
    pub fn store_reversals(&self, results: &[ReversalResult]) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let mut batch = sled::Batch::default();
        for r in results.iter().filter(|r| r.outcome != ReversalOutcome::Unknown) {
            batch.insert(r.id.to_bytes().to_vec(), encode_record(&ReversalRecord { outcome: Some(r.outcome) }));
        }
        self.reversals.apply_batch(batch)?;
        self.committer.note_write()
    }

    /// Every reversal, to restore the aggregator at start.
    pub fn reversals(&self) -> Result<Vec<(PaymentId, Reversal)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.reversals.iter() {
            let (k, v) = kv?;
            let b: [u8; 16] =
                k.as_ref().try_into().map_err(|_| StoreError::Corrupt { key: hex(&k), detail: "payment id".into() })?;
            let rec: ReversalRecord = decode_record(&k, &v)?;
            let r = rec.outcome.map_or(Reversal::Requested, Reversal::Done);
            out.push((PaymentId::from_bytes(b), r));
        }
        Ok(out)
    }

    /// The reversal of one payment, if a sale app voided it after it was sealed.
    pub fn reversal(&self, id: PaymentId) -> Result<Option<Reversal>, StoreError> {
        let key = id.to_bytes();
        match self.reversals.get(key)? {
            None => Ok(None),
            Some(v) => {
                let rec: ReversalRecord = decode_record(&key, &v)?;
                Ok(Some(rec.outcome.map_or(Reversal::Requested, Reversal::Done)))
            }
        }
    }

    /// Reads, changes and writes one record; `change` returns whether it changed anything.
    fn update(
        &self,
        id: PaymentId,
        change: impl FnOnce(&mut MasterRecord) -> Result<bool, StoreError>,
    ) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let key = id.to_bytes();
        let Some(bytes) = self.payments.get(key)? else { return Ok(Ticket::NONE) };
        let mut rec: MasterRecord = decode_record(&key, &bytes)?;
        if !change(&mut rec)? {
            return Ok(self.committer.latest());
        }
        self.payments.insert(key, encode_record(&rec))?;
        self.committer.note_write()
    }

    /// Every payment's index entry, in capture order, with phases derived (to rebuild the
    /// aggregator at start).
    pub fn index(&self) -> Result<Vec<(PaymentId, IndexEntry)>, StoreError> {
        let phases = self.phases()?;
        let sealed = self.sealed_at()?;
        let mut out = Vec::new();
        for kv in self.payments.iter() {
            let (k, v) = kv?;
            let rec: MasterRecord = decode_record(&k, &v)?;
            let id = rec.payment.id;
            let phase = phases.of(&rec);
            out.push((
                id,
                IndexEntry {
                    digest: inflight_core::aggregator::index_key(&rec.digest),
                    verdict: rec.verdict,
                    phase,
                    terminal: std::sync::Arc::new(rec.payment.terminal),
                    card: inflight_core::aggregator::index_key(&rec.card_hash),
                    amount: rec.payment.amount,
                    captured_unix_ms: rec.payment.captured_unix_ms,
                    answered: rec.answered,
                    sealed_unix_ms: sealed.get(&id).copied(),
                },
            ));
        }
        Ok(out)
    }

    /// When each payment in a batch was sealed (the batch id's time prefix): what its
    /// deferred-authorization deadline is judged against. A full scan of the batch item lists,
    /// at start and for the report. Items without a header (a seal that crashed half-way) are
    /// not sealed. A payment is in one batch at most (a quarantined batch's payments are never
    /// offered again); were it in two, the first seal counts, as the issuer decides it once.
    fn sealed_at(&self) -> Result<HashMap<PaymentId, u64>, StoreError> {
        let mut out = HashMap::new();
        for kv in self.batches.iter() {
            let (k, _) = kv?;
            let b: [u8; 16] =
                k.as_ref().try_into().map_err(|_| StoreError::Corrupt { key: hex(&k), detail: "batch id".into() })?;
            let batch = BatchId(b);
            for id in self.batch_ids(batch)? {
                let at = out.entry(id).or_insert(batch.sealed_unix_ms());
                *at = (*at).min(batch.sealed_unix_ms());
            }
        }
        Ok(out)
    }

    /// Which payments are in the open batch and in quarantined ones: what a payment's phase is
    /// derived from.
    fn phases(&self) -> Result<Phases, StoreError> {
        let in_open: HashSet<PaymentId> = match self.open_batch()? {
            Some(h) => self.batch_ids(h.id)?.into_iter().collect(),
            None => HashSet::new(),
        };
        let mut quarantined: HashSet<PaymentId> = HashSet::new();
        for (h, _) in self.quarantined_batches()? {
            quarantined.extend(self.batch_ids(h.id)?);
        }
        Ok(Phases { in_open, quarantined })
    }

    /// Every payment stamped with `flight`, masked (the sealed card data is never opened), with
    /// its phase, in payment id order; and every flight the store holds payments of. A full scan:
    /// for the crew's flight report.
    pub fn report_rows(&self, flight: &str) -> Result<(Vec<ReportRow>, BTreeSet<String>), StoreError> {
        let phases = self.phases()?;
        let reversals: HashMap<PaymentId, Reversal> = self.reversals()?.into_iter().collect();
        let sealed = self.sealed_at()?;
        let (mut rows, mut flights) = (Vec::new(), BTreeSet::new());
        for kv in self.payments.iter() {
            let (k, v) = kv?;
            let rec: MasterRecord = decode_record(&k, &v)?;
            if !flights.contains(&rec.flight) {
                flights.insert(rec.flight.clone());
            }
            if rec.flight != flight {
                continue;
            }
            let (phase, answered, reversal) = (phases.of(&rec), rec.answered, reversals.get(&rec.payment.id).copied());
            let sealed_unix_ms = sealed.get(&rec.payment.id).copied();
            rows.push(ReportRow { view: MasterView::from(rec), answered, phase, reversal, sealed_unix_ms });
        }
        Ok((rows, flights))
    }

    /// The full payment, `None` if unknown or its card data is erased.
    pub fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        let key = id.to_bytes();
        match self.payments.get(key)? {
            None => Ok(None),
            Some(bytes) => decode_record::<MasterRecord>(&key, &bytes)?.payment.open(&self.vault),
        }
    }

    /// What the issuer needs of a payment, for the batch.
    pub fn batch_item(&self, id: PaymentId) -> Result<Option<BatchItem>, StoreError> {
        Ok(self.payment(id)?.map(|p| BatchItem {
            id: p.id,
            pan: p.pan,
            expiry: p.expiry,
            amount: p.amount,
            captured_unix_ms: p.captured_unix_ms,
            late: false,
            pos: p.pos,
            deferred: true,
            emv: p.emv,
        }))
    }

    /// A payment as the crew's report shows it.
    pub fn view(&self, id: PaymentId) -> Result<Option<MasterView>, StoreError> {
        let key = id.to_bytes();
        match self.payments.get(key)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(MasterView::from(decode_record::<MasterRecord>(&key, &bytes)?))),
        }
    }

    /// The stored outcome of a payment.
    pub fn outcome(&self, id: PaymentId) -> Result<Option<AuthOutcome>, StoreError> {
        Ok(self.view(id)?.and_then(|v| v.outcome))
    }

    /// Seals a batch: its item list, then its header, then marks it open. Durable once the
    /// ticket is waited on; nothing may be sent before. `between` runs after the item list is
    /// written and before the header (a crash point for tests).
    pub fn seal_batch(
        &self,
        header: &BatchHeader,
        ids: &[PaymentId],
        between: impl FnOnce(),
    ) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let mut items = sled::Batch::default();
        for (k, v) in crate::records::batch_id_values(header.id, 0, ids) {
            items.insert(k.to_vec(), v);
        }
        self.batch_items.apply_batch(items)?;
        between();
        // The header is the commit point: items without a header are ignored (a new batch never reuses an id).
        self.batches
            .insert(header.id.0, encode_record(&BatchRecord { header: header.clone(), done: false, refused: None }))?;
        self.meta.insert(OPEN_BATCH, &header.id.0)?;
        self.committer.note_write()
    }

    /// The batch sealed and not yet answered, if any.
    pub fn open_batch(&self) -> Result<Option<BatchHeader>, StoreError> {
        let Some(id) = self.meta.get(OPEN_BATCH)? else { return Ok(None) };
        let Some(bytes) = self.batches.get(&id)? else { return Ok(None) };
        let rec: BatchRecord = decode_record(&id, &bytes)?;
        Ok((!rec.done && rec.refused.is_none()).then_some(rec.header))
    }

    /// The payment ids of a batch, in order.
    pub fn batch_ids(&self, batch: BatchId) -> Result<Vec<PaymentId>, StoreError> {
        crate::records::batch_ids(&self.batch_items, batch)
    }

    /// Stores a chunk of results (idempotent: a stored outcome is never replaced).
    pub fn store_results(&self, results: &[AuthResult]) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        // One sled batch per chunk: applied atomically, far cheaper than a write per result.
        for chunk in results.chunks(RESULTS_WRITE_CHUNK) {
            let mut batch = sled::Batch::default();
            for r in chunk {
                let key = r.id.to_bytes();
                let Some(bytes) = self.payments.get(key)? else { continue };
                let mut rec: MasterRecord = decode_record(&key, &bytes)?;
                if rec.outcome.is_some() {
                    continue;
                }
                rec.outcome = Some(r.outcome.clone());
                batch.insert(key.to_vec(), encode_record(&rec));
            }
            self.payments.apply_batch(batch)?;
        }
        self.committer.note_write()
    }

    /// Marks a batch answered: every result is stored. Its payments become decided.
    pub fn finish_batch(&self, batch: BatchId) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let Some(bytes) = self.batches.get(batch.0)? else { return Ok(Ticket::NONE) };
        let mut rec: BatchRecord = decode_record(&batch.0, &bytes)?;
        rec.done = true;
        self.batches.insert(batch.0, encode_record(&rec))?;
        self.meta.remove(OPEN_BATCH)?;
        self.committer.note_write()
    }

    /// The issuer refused the open batch: record why, and close it so that later payments go in
    /// new batches. Its payments stay stored, with their card data, for the crew and the
    /// issuer's operations to resolve.
    pub fn quarantine_batch(&self, batch: BatchId, reason: &str) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let Some(bytes) = self.batches.get(batch.0)? else { return Ok(Ticket::NONE) };
        let mut rec: BatchRecord = decode_record(&batch.0, &bytes)?;
        rec.refused = Some(reason.to_owned());
        self.batches.insert(batch.0, encode_record(&rec))?;
        if self.meta.get(OPEN_BATCH)?.as_deref() == Some(batch.0.as_slice()) {
            self.meta.remove(OPEN_BATCH)?;
        }
        self.committer.note_write()
    }

    /// Every batch the issuer refused, with its reason.
    pub fn quarantined_batches(&self) -> Result<Vec<(BatchHeader, String)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.batches.iter() {
            let (k, v) = kv?;
            let rec: BatchRecord = decode_record(&k, &v)?;
            if let Some(reason) = rec.refused {
                out.push((rec.header, reason));
            }
        }
        Ok(out)
    }

    /// The terminal has the outcome: mark delivered and erase the card data, keeping the
    /// masked record for the crew's report.
    pub fn mark_delivered(&self, id: PaymentId) -> Result<Ticket, StoreError> {
        self.update(id, |rec| {
            if rec.delivered || rec.outcome.is_none() {
                return Ok(false);
            }
            rec.delivered = true;
            rec.payment.card = None;
            Ok(true)
        })
    }

    /// The signed BIN list last fetched.
    pub fn bin_list(&self) -> Result<Option<SignedBinList>, StoreError> {
        match self.meta.get(BIN_LIST)? {
            None => Ok(None),
            Some(b) => decode_record(BIN_LIST, &b).map(Some),
        }
    }

    /// Stores the signed BIN list.
    pub fn set_bin_list(&self, list: &SignedBinList) -> Result<Ticket, StoreError> {
        self.set_meta(BIN_LIST, &encode_record(list))
    }

    /// The hot-card list last fetched (whole, after any delta was applied and verified).
    pub fn hot_list(&self) -> Result<Option<HotList>, StoreError> {
        match self.meta.get(HOT_LIST)? {
            None => Ok(None),
            Some(b) => decode_record(HOT_LIST, &b).map(Some),
        }
    }

    /// Stores the hot-card list.
    pub fn set_hot_list(&self, list: &HotList) -> Result<Ticket, StoreError> {
        self.set_meta(HOT_LIST, &encode_record(list))
    }

    /// A small setting (`link_override`, `flight`).
    pub fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.meta.get(name.as_bytes())?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Stores a small setting.
    pub fn set_setting(&self, name: &str, value: &str) -> Result<Ticket, StoreError> {
        self.set_meta(name.as_bytes(), value.as_bytes())
    }

    /// Queues a closed flight's manifest (its JSON) for the issuer: sent over the ground link
    /// until the issuer acknowledges it. Queued again, it replaces the earlier one.
    pub fn queue_manifest(&self, flight: &str, json: &[u8]) -> Result<Ticket, StoreError> {
        self.set_meta(format!("{MANIFEST_OUT}{flight}").as_bytes(), json)
    }

    /// The manifests queued for the issuer: flight and JSON.
    pub fn manifests_to_send(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.meta.scan_prefix(MANIFEST_OUT.as_bytes()) {
            let (k, v) = kv?;
            let flight = String::from_utf8_lossy(&k[MANIFEST_OUT.len()..]).into_owned();
            out.push((flight, v.to_vec()));
        }
        Ok(out)
    }

    /// Stores the issuer's acknowledgement of `flight`'s manifest and takes the manifest off the
    /// queue, in one batch.
    pub fn store_manifest_ack(&self, flight: &str, ack: &SignedManifestAck) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let mut b = sled::Batch::default();
        b.insert(format!("{MANIFEST_ACK}{flight}").as_bytes(), encode_record(ack));
        b.remove(format!("{MANIFEST_OUT}{flight}").as_bytes());
        self.meta.apply_batch(b)?;
        self.committer.note_write()
    }

    /// The issuer's acknowledgement of `flight`'s manifest, if it came.
    pub fn manifest_ack(&self, flight: &str) -> Result<Option<SignedManifestAck>, StoreError> {
        let key = format!("{MANIFEST_ACK}{flight}");
        match self.meta.get(key.as_bytes())? {
            Some(v) => Ok(Some(decode_record(key.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Whether `flight`'s manifest is queued for the issuer.
    pub fn manifest_queued(&self, flight: &str) -> Result<bool, StoreError> {
        Ok(self.meta.contains_key(format!("{MANIFEST_OUT}{flight}").as_bytes())?)
    }

    fn set_meta(&self, key: &[u8], value: &[u8]) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        self.meta.insert(key, value)?;
        self.committer.note_write()
    }

    /// Payments whose sealed card data is still on disk (for tests and the purge report).
    pub fn with_card_data(&self) -> Result<Vec<PaymentId>, StoreError> {
        let mut out = Vec::new();
        for kv in self.payments.iter() {
            let (k, v) = kv?;
            let rec: MasterRecord = decode_record(&k, &v)?;
            if rec.payment.card.is_some() {
                out.push(rec.payment.id);
            }
        }
        Ok(out)
    }

    /// Counts by verdict (a full scan: for status when the daemon is stopped).
    pub fn counts(&self) -> Result<MasterCounts, StoreError> {
        let mut c = MasterCounts::default();
        for kv in self.payments.iter() {
            let (k, v) = kv?;
            match decode_record::<MasterRecord>(&k, &v)?.verdict {
                Verdict::Stored | Verdict::Held => c.stored += 1,
                Verdict::Refused(_) => c.refused += 1,
            }
        }
        Ok(c)
    }

    /// Waits until every write up to `ticket` is durable.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.committer.wait(ticket).await
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
