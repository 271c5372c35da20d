//! The terminal's store: its outbox of captured payments and their states.
//!
//! Key layout: tree `payments`, key = payment id (16 bytes, capture-time order) → record;
//! tree `requests`, key = the sale app's request id → payment id; tree `meta`: the BIN list and the hot-card list.

use std::path::Path;

use bincode::{Decode, Encode};
use inflight_wire::{AuthOutcome, HotList, Payment, PaymentId, SignedBinList};
use sled::Transactional;

use crate::records::{decode_record, encode_record, PaymentRecord};
use crate::{open_sled, CardVault, Committer, MaskedView, StoreError, Ticket};

use inflight_core::terminal::moves_forward;
pub use inflight_core::terminal::SlaveState;

#[derive(Debug, Clone, Encode, Decode)]
struct SlaveRecord {
    payment: PaymentRecord,
    state: SlaveState,
    /// The issuer's decision, once the master has delivered it; card data is then erased.
    outcome: Option<AuthOutcome>,
}

const BIN_LIST: &[u8] = b"bin_list";
const HOT_LIST: &[u8] = b"hot_list";

/// A payment as the terminal's status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveView {
    /// The masked payment.
    pub payment: MaskedView,
    /// Its state.
    pub state: SlaveState,
    /// The issuer's decision, once delivered.
    pub outcome: Option<AuthOutcome>,
}

/// Counts of payments by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlaveCounts {
    /// Captured, not yet acked by the master.
    pub captured: u64,
    /// Acked by the master.
    pub forwarded: u64,
    /// Refused by the master.
    pub refused: u64,
    /// Voided: the sale app was never told `accepted`.
    pub voided: u64,
    /// Voided by the sale app after it was told `accepted` (the master told, or being told).
    pub cancelled: u64,
    /// With the issuer's decision.
    pub decided: u64,
}

/// The terminal's durable outbox.
#[derive(Debug)]
pub struct SlaveStore {
    payments: sled::Tree,
    /// Sale-app request id → payment id: a retried capture finds its first answer.
    requests: sled::Tree,
    meta: sled::Tree,
    vault: CardVault,
    committer: Committer,
}

impl SlaveStore {
    /// Opens (or creates) the store in `dir`, sealing card data with `vault`.
    pub fn open(dir: &Path, vault: CardVault, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = open_sled(dir, cache_bytes)?;
        let payments = db.open_tree("payments")?;
        let meta = db.open_tree("meta")?;
        let requests = db.open_tree("requests")?;
        let committer = Committer::start(db, dir)?;
        Ok(Self { payments, requests, meta, vault, committer })
    }

    /// The vault (for minting ids from its random source).
    pub fn vault(&self) -> &CardVault {
        &self.vault
    }

    /// Stores a newly captured payment. Durable once the ticket is waited on.
    pub fn put_captured(&self, p: &Payment, request_id: Option<&str>) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let rec = SlaveRecord {
            payment: PaymentRecord::seal(&self.vault, p)?,
            state: SlaveState::Captured { answered: false },
            outcome: None,
        };
        let value = encode_record(&rec);
        match request_id {
            None => {
                self.payments.insert(p.id.to_bytes(), value)?;
            }
            // The payment and its request id are written together, or not at all.
            Some(rid) => (&self.payments, &self.requests)
                .transaction(|(payments, requests)| {
                    payments.insert(p.id.to_bytes().to_vec(), value.clone())?;
                    requests.insert(rid.as_bytes(), p.id.to_bytes().to_vec())?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| StoreError::Io(format!("{e:?}")))?,
        }
        self.committer.note_write()
    }

    /// The payment a sale app's request id was captured as, if any.
    pub fn request(&self, request_id: &str) -> Result<Option<PaymentId>, StoreError> {
        match self.requests.get(request_id.as_bytes())? {
            None => Ok(None),
            Some(v) => {
                let b: [u8; 16] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt { key: request_id.to_owned(), detail: "payment id".into() })?;
                Ok(Some(PaymentId::from_bytes(b)))
            }
        }
    }

    /// The ticket of the latest write: waiting on it covers everything written so far.
    pub fn latest(&self) -> Ticket {
        self.committer.latest()
    }

    /// Moves a payment to `state`. Moving to `Refused` erases its card data. Moving backwards
    /// is ignored (states only move forward), as is an unknown id.
    pub fn set_state(&self, id: PaymentId, state: SlaveState) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let key = id.to_bytes();
        let Some(bytes) = self.payments.get(key)? else {
            return Ok(Ticket::NONE);
        };
        let mut rec: SlaveRecord = decode_record(&key, &bytes)?;
        if !moves_forward(rec.state, state) {
            return Ok(Ticket::NONE);
        }
        rec.state = state;
        if matches!(state, SlaveState::Refused(_) | SlaveState::Voided { .. } | SlaveState::Cancelled { .. }) {
            rec.payment.card = None;
        }
        self.payments.insert(key, encode_record(&rec))?;
        self.committer.note_write()
    }

    /// Stores the issuer's decision delivered by the master and erases the card data. A payment
    /// still marked captured is forwarded (the master had it: the ack was lost). Idempotent.
    pub fn store_result(&self, id: PaymentId, outcome: &AuthOutcome) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        let key = id.to_bytes();
        let Some(bytes) = self.payments.get(key)? else { return Ok(Ticket::NONE) };
        let mut rec: SlaveRecord = decode_record(&key, &bytes)?;
        if rec.outcome.is_some() {
            return Ok(self.committer.latest());
        }
        rec.outcome = Some(outcome.clone());
        rec.payment.card = None;
        if matches!(rec.state, SlaveState::Captured { answered: true }) {
            rec.state = SlaveState::Forwarded;
        }
        self.payments.insert(key, encode_record(&rec))?;
        self.committer.note_write()
    }

    /// The signed BIN list last received from the master (verified before it was stored).
    pub fn bin_list(&self) -> Result<Option<SignedBinList>, StoreError> {
        match self.meta.get(BIN_LIST)? {
            None => Ok(None),
            Some(b) => decode_record(BIN_LIST, &b).map(Some),
        }
    }

    /// Stores the signed BIN list.
    pub fn set_bin_list(&self, list: &SignedBinList) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        self.meta.insert(BIN_LIST, encode_record(list))?;
        self.committer.note_write()
    }

    /// The hot-card list last received from the master (verified before it was stored). Its
    /// entries are keyed, truncated hashes: no card number is on this disk because of it.
    pub fn hot_list(&self) -> Result<Option<HotList>, StoreError> {
        match self.meta.get(HOT_LIST)? {
            None => Ok(None),
            Some(b) => decode_record(HOT_LIST, &b).map(Some),
        }
    }

    /// Stores the hot-card list.
    pub fn set_hot_list(&self, list: &HotList) -> Result<Ticket, StoreError> {
        self.committer.check_writable()?;
        self.meta.insert(HOT_LIST, encode_record(list))?;
        self.committer.note_write()
    }

    /// Every payment id this terminal ever stored (captured, forwarded or refused).
    pub fn ids(&self) -> Result<Vec<PaymentId>, StoreError> {
        self.payments
            .iter()
            .keys()
            .map(|k| {
                let k = k?;
                let b: [u8; 16] = k
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt { key: crate::vault::hex(&k), detail: "payment id".into() })?;
                Ok(PaymentId::from_bytes(b))
            })
            .collect()
    }

    /// Payments whose sealed card data is still on disk.
    pub fn with_card_data(&self) -> Result<Vec<PaymentId>, StoreError> {
        let mut out = Vec::new();
        for kv in self.payments.iter() {
            let (k, v) = kv?;
            let rec: SlaveRecord = decode_record(&k, &v)?;
            if rec.payment.card.is_some() {
                out.push(rec.payment.id);
            }
        }
        Ok(out)
    }

    /// The full payment, for forwarding; `None` if unknown or its card data is erased.
    pub fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        let key = id.to_bytes();
        match self.payments.get(key)? {
            None => Ok(None),
            Some(bytes) => decode_record::<SlaveRecord>(&key, &bytes)?.payment.open(&self.vault),
        }
    }

    /// A payment as status shows it.
    pub fn view(&self, id: PaymentId) -> Result<Option<SlaveView>, StoreError> {
        let key = id.to_bytes();
        match self.payments.get(key)? {
            None => Ok(None),
            Some(bytes) => {
                let rec: SlaveRecord = decode_record(&key, &bytes)?;
                Ok(Some(SlaveView { payment: rec.payment.view(), state: rec.state, outcome: rec.outcome }))
            }
        }
    }

    /// Every payment not yet settled with the master, in capture order, with its state:
    /// captured (answered or not), voided without the master's confirmation, or voided by its
    /// sale app and not yet answered by the master.
    pub fn unacked(&self) -> Result<Vec<(MaskedView, SlaveState)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.payments.iter() {
            let (k, v) = kv?;
            let rec: SlaveRecord = decode_record(&k, &v)?;
            if matches!(
                rec.state,
                SlaveState::Captured { .. } | SlaveState::Voided { master_acked: false } | SlaveState::Cancelling
            ) {
                out.push((rec.payment.view(), rec.state));
            }
        }
        Ok(out)
    }

    /// Counts by state (a full scan: for status, not the hot path).
    pub fn counts(&self) -> Result<SlaveCounts, StoreError> {
        let mut c = SlaveCounts::default();
        for kv in self.payments.iter() {
            let (k, v) = kv?;
            let rec = decode_record::<SlaveRecord>(&k, &v)?;
            match rec.state {
                SlaveState::Captured { .. } => c.captured += 1,
                SlaveState::Forwarded => c.forwarded += 1,
                SlaveState::Refused(_) => c.refused += 1,
                SlaveState::Voided { .. } => c.voided += 1,
                SlaveState::Cancelling | SlaveState::Cancelled { .. } => c.cancelled += 1,
            }
            c.decided += u64::from(rec.outcome.is_some());
        }
        Ok(c)
    }

    /// Waits until every write up to `ticket` is durable.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.committer.wait(ticket).await
    }

    /// Blocking form of [`SlaveStore::durable`].
    pub fn durable_blocking(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.committer.wait_blocking(ticket)
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
