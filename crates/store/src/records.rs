//! The stored form of a payment, shared by the terminal and the aircraft stores.

use bincode::{Decode, Encode};
use inflight_wire::{
    decode, encode, BatchId, BatchItem, Expiry, LineItem, MaskedPan, Money, Pan, Payment, PaymentId, TerminalId,
};
use ring::digest;

use crate::vault::{hex, Sealed};
use crate::{CardVault, StoreError};

/// A payment at rest: everything in clear except the card, which is sealed until erased.
#[derive(Debug, Clone, Encode, Decode)]
pub(crate) struct PaymentRecord {
    pub id: PaymentId,
    pub terminal: TerminalId,
    /// BIN + last 4: what remains for the crew's report after the card data is erased.
    pub masked: MaskedPan,
    /// PAN and expiry, sealed; `None` once erased.
    pub card: Option<Sealed>,
    pub amount: Money,
    pub seat: String,
    pub captured_unix_ms: u64,
    pub items: Vec<LineItem>,
}

/// The sealed plaintext: the card number and its expiry.
#[derive(Encode, Decode)]
struct CardPlain {
    pan: Pan,
    expiry: Expiry,
}

impl PaymentRecord {
    pub fn seal(vault: &CardVault, p: &Payment) -> Result<Self, StoreError> {
        let plain = encode(&CardPlain { pan: p.pan.clone(), expiry: p.expiry });
        Ok(Self {
            id: p.id,
            terminal: p.terminal.clone(),
            masked: p.pan.masked(),
            card: Some(vault.seal(&p.id.to_bytes(), &plain)?),
            amount: p.amount,
            seat: p.seat.clone(),
            captured_unix_ms: p.captured_unix_ms,
            items: p.items.clone(),
        })
    }

    /// The full payment, or `None` when its card data has been erased.
    pub fn open(&self, vault: &CardVault) -> Result<Option<Payment>, StoreError> {
        let Some(sealed) = &self.card else {
            return Ok(None);
        };
        let key = self.id.to_bytes();
        let plain = vault.open(&key, sealed)?;
        let card: CardPlain =
            decode(&plain).map_err(|e| StoreError::Corrupt { key: hex(&key), detail: e.to_string() })?;
        Ok(Some(Payment {
            id: self.id,
            terminal: self.terminal.clone(),
            pan: card.pan,
            expiry: card.expiry,
            amount: self.amount,
            seat: self.seat.clone(),
            captured_unix_ms: self.captured_unix_ms,
            items: self.items.clone(),
        }))
    }

    pub fn view(&self) -> MaskedView {
        MaskedView {
            id: self.id,
            terminal: self.terminal.clone(),
            card: self.masked.clone(),
            amount: self.amount,
            seat: self.seat.clone(),
            captured_unix_ms: self.captured_unix_ms,
            card_data_erased: self.card.is_none(),
        }
    }
}

/// What may be shown of a stored payment: no card data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedView {
    /// The payment.
    pub id: PaymentId,
    /// Its terminal.
    pub terminal: TerminalId,
    /// BIN + last 4.
    pub card: MaskedPan,
    /// Amount.
    pub amount: Money,
    /// Seat or crew position.
    pub seat: String,
    /// Capture time on the terminal's clock.
    pub captured_unix_ms: u64,
    /// True once the sealed card data has been erased.
    pub card_data_erased: bool,
}

/// SHA-256 of a payment's encoding: equal for an honest re-send, different for another payment
/// that re-uses the id.
pub fn content_digest(p: &Payment) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, &encode(p));
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(crate) fn encode_record<T: Encode>(r: &T) -> Vec<u8> {
    encode(r)
}

pub(crate) fn decode_record<T: Decode<()>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    decode(bytes).map_err(|e| StoreError::Corrupt { key: hex(key), detail: e.to_string() })
}

/// Key of a batch's item at `seq`: batch id ++ position (big-endian, so a prefix scan returns the
/// batch in order).
pub(crate) fn batch_item_key(batch: BatchId, seq: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&batch.0);
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The payment ids of a batch, in order, from a `batch_items` tree.
pub(crate) fn batch_ids(items: &sled::Tree, batch: BatchId) -> Result<Vec<PaymentId>, StoreError> {
    let mut out = Vec::new();
    for kv in items.scan_prefix(batch.0) {
        let (k, v) = kv?;
        let b: [u8; 16] =
            v.as_ref().try_into().map_err(|_| StoreError::Corrupt { key: hex(&k), detail: "payment id".into() })?;
        out.push(PaymentId::from_bytes(b));
    }
    Ok(out)
}

/// SHA-256 over a batch's encoded items, in order: the content a batch id stands for.
#[derive(Clone)]
pub struct BatchDigest(digest::Context);

impl std::fmt::Debug for BatchDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchDigest")
    }
}

impl Default for BatchDigest {
    fn default() -> Self {
        Self(digest::Context::new(&digest::SHA256))
    }
}

impl BatchDigest {
    /// Adds the next item.
    pub fn update(&mut self, item: &BatchItem) {
        self.0.update(&encode(item));
    }

    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}
