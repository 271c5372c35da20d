//! The aircraft server's store: every payment terminals submitted, with the master's verdict.
//!
//! Key layout: tree `payments`, key = payment id (16 bytes, capture-time order) → record.

use std::path::Path;

use bincode::{Decode, Encode};
use inflight_wire::{Payment, PaymentId, RefusalReason, Verdict};

use crate::records::{decode_record, encode_record, PaymentRecord};
use crate::{open_sled, CardVault, Committer, MaskedView, StoreError, Ticket};

#[derive(Debug, Clone, Encode, Decode)]
struct MasterRecord {
    payment: PaymentRecord,
    /// SHA-256 of the payment as first received: tells a re-send from an id re-used.
    digest: [u8; 32],
    /// Keyed hash of the card, for aircraft-wide per-card checks.
    card_hash: [u8; 32],
    verdict: Verdict,
    /// Checks that failed for a payment carried anyway (the terminal had already answered
    /// `accepted`); shown to the crew.
    flags: Vec<RefusalReason>,
}

/// Counts by verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MasterCounts {
    /// Payments to carry to the issuer.
    pub stored: u64,
    /// Payments refused at capture.
    pub refused: u64,
}

/// The aircraft server's durable payment store.
#[derive(Debug)]
pub struct MasterStore {
    payments: sled::Tree,
    vault: CardVault,
    committer: Committer,
}

impl MasterStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, vault: CardVault, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = open_sled(dir, cache_bytes)?;
        let payments = db.open_tree("payments")?;
        let committer = Committer::start(db, dir)?;
        Ok(Self {
            payments,
            vault,
            committer,
        })
    }

    /// Records a payment with its verdict, unless the id is already stored (then nothing
    /// changes). Durable once the ticket is waited on.
    pub fn put(
        &self,
        p: &Payment,
        digest: [u8; 32],
        verdict: Verdict,
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
            card_hash: self.vault.card_hash(p.pan.expose_digits()),
            verdict,
            flags: vec![],
        };
        let inserted = self.payments.compare_and_swap(
            p.id.to_bytes(),
            None::<&[u8]>,
            Some(encode_record(&rec)),
        )?;
        match inserted {
            Ok(()) => self.committer.note_write(),
            // Already there: whatever wrote it holds a ticket; the caller waits for all writes.
            Err(_) => Ok(self.committer.latest()),
        }
    }

    /// Turns a refused payment into a stored one, flagged with its refusal: the terminal had
    /// already answered `accepted`, so it must be carried. Needs the payment again (its card
    /// data was not kept at refusal).
    pub fn carry_refused(&self, p: &Payment, reason: RefusalReason) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let key = p.id.to_bytes();
        let Some(bytes) = self.payments.get(key)? else {
            return Ok(Ticket::NONE);
        };
        let mut rec: MasterRecord = decode_record(&key, &bytes)?;
        if rec.verdict == Verdict::Stored {
            return Ok(self.committer.latest());
        }
        rec.payment = PaymentRecord::seal(&self.vault, p)?;
        rec.verdict = Verdict::Stored;
        rec.flags.push(reason);
        self.payments.insert(key, encode_record(&rec))?;
        self.committer.note_write()
    }

    /// Every stored id with its digest and verdict, in capture order (to rebuild the index).
    pub fn index(
        &self,
    ) -> impl Iterator<Item = Result<(PaymentId, [u8; 32], Verdict), StoreError>> + '_ {
        self.payments.iter().map(|kv| {
            let (k, v) = kv?;
            let rec: MasterRecord = decode_record(&k, &v)?;
            Ok((rec.payment.id, rec.digest, rec.verdict))
        })
    }

    /// The full payment (for the upload), `None` if unknown or erased.
    pub fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        let key = id.to_bytes();
        match self.payments.get(key)? {
            None => Ok(None),
            Some(bytes) => decode_record::<MasterRecord>(&key, &bytes)?
                .payment
                .open(&self.vault),
        }
    }

    /// A payment as the crew's report shows it, with its verdict and flags.
    pub fn view(
        &self,
        id: PaymentId,
    ) -> Result<Option<(MaskedView, Verdict, Vec<RefusalReason>)>, StoreError> {
        let key = id.to_bytes();
        match self.payments.get(key)? {
            None => Ok(None),
            Some(bytes) => {
                let rec: MasterRecord = decode_record(&key, &bytes)?;
                Ok(Some((rec.payment.view(), rec.verdict, rec.flags)))
            }
        }
    }

    /// Counts by verdict (a full scan: for status, not the hot path).
    pub fn counts(&self) -> Result<MasterCounts, StoreError> {
        let mut c = MasterCounts::default();
        for r in self.index() {
            match r?.2 {
                Verdict::Stored => c.stored += 1,
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

    /// Flushes everything and stops the flusher.
    pub fn close(&self) {
        self.committer.close();
    }
}
