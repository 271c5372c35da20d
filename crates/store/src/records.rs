//! The stored form of a payment, shared by the terminal and the aircraft stores.

use bincode::{Decode, Encode};
use inflight_wire::{
    decode, encode, BatchId, BatchItem, EmvData, Expiry, LineItem, MaskedPan, Money, Pan, Payment, PaymentId,
    PointOfSale, TerminalId,
};

use crate::vault::{hex, Sealed};
use crate::{CardVault, StoreError};

/// A payment at rest: everything in clear except the card, which is sealed until erased.
#[derive(Debug, Clone, Encode, Decode)]
pub(crate) struct PaymentRecord {
    pub id: PaymentId,
    pub terminal: TerminalId,
    /// BIN + last 4: what remains for the crew's report after the card data is erased.
    pub masked: MaskedPan,
    /// PAN, expiry and chip data, sealed; `None` once erased.
    pub card: Option<Sealed>,
    pub amount: Money,
    pub seat: String,
    pub captured_unix_ms: u64,
    pub items: Vec<LineItem>,
    /// How and where it was taken: not card data, kept after erasure for the books.
    pub pos: PointOfSale,
}

/// The sealed plaintext: the card number, its expiry, and the chip's data (its cryptogram and
/// counters are card data too: erased with the number).
#[derive(Encode, Decode)]
struct CardPlain {
    pan: Pan,
    expiry: Expiry,
    emv: Option<EmvData>,
}

impl PaymentRecord {
    pub fn seal(vault: &CardVault, p: &Payment) -> Result<Self, StoreError> {
        let plain = encode(&CardPlain { pan: p.pan.clone(), expiry: p.expiry, emv: p.emv.clone() });
        Ok(Self {
            id: p.id,
            terminal: p.terminal.clone(),
            masked: p.pan.masked(),
            card: Some(vault.seal(&p.id.to_bytes(), &plain)?),
            amount: p.amount,
            seat: p.seat.clone(),
            captured_unix_ms: p.captured_unix_ms,
            items: p.items.clone(),
            pos: p.pos,
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
            pos: self.pos,
            emv: card.emv,
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
            pos: self.pos,
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
    /// How and where it was taken.
    pub pos: PointOfSale,
}

/// Keyed digest (HMAC-SHA256 under the vault's content key) of a payment's encoding: equal for
/// an honest re-send, different for another payment that re-uses the id. Never a plain hash: the
/// encoding holds the card number, which a plain hash would give away (see [`CardVault`]).
pub fn content_digest(vault: &CardVault, p: &Payment) -> [u8; 32] {
    vault.content_digest(&encode(p))
}

/// Keyed digest of one batch item (card number included), under the vault's content key: what
/// the issuer keeps per payment id to tell an honest re-send from an id re-used.
///
/// It covers the payment (id, card, expiry, amount, capture time, point of sale, chip data), not
/// `late` nor `deferred`: they say how the batch was delivered, and a payment re-sent in another
/// batch is the same payment.
pub fn item_digest(vault: &CardVault, item: &BatchItem) -> [u8; 32] {
    vault.content_digest(&encode(&(
        &item.id,
        &item.pan,
        &item.expiry,
        &item.amount,
        item.captured_unix_ms,
        &item.pos,
        &item.emv,
    )))
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

/// Payment ids written in one value of a batch's id list: a sled write per id made sealing
/// 100,000 payments cost 100,000 tree inserts; 256 ids (4 KiB) per value cost 391. Kept small
/// because sled moves a node over 128 KiB (a 512 KiB segment / 4) to a blob file of its own,
/// and a leaf holds up to 17 values.
pub(crate) const BATCH_IDS_PER_VALUE: usize = 256;

// The issuer decides in chunks of `BATCH_CHUNK_MAX` from position 0: every chunk's values start
// at a multiple of the grouping, so a batch decided again writes the same keys.
const _: () = assert!(inflight_wire::BATCH_CHUNK_MAX % BATCH_IDS_PER_VALUE == 0);

/// The values of a batch's id list, `ids` from position `first_seq` on, each keyed by the
/// position of its first id (see [`batch_ids`]).
pub(crate) fn batch_id_values(batch: BatchId, first_seq: u32, ids: &[PaymentId]) -> Vec<([u8; 20], Vec<u8>)> {
    ids.chunks(BATCH_IDS_PER_VALUE)
        .enumerate()
        .map(|(n, chunk)| {
            let seq = first_seq + (n * BATCH_IDS_PER_VALUE) as u32;
            (batch_item_key(batch, seq), chunk.iter().flat_map(|id| id.to_bytes()).collect())
        })
        .collect()
}

/// The payment ids of a batch, in order, from a tree of its id list. A value holds one id (the
/// layout before ids were grouped, [`BATCH_IDS_PER_VALUE`]) or several, in order: both read the
/// same.
pub(crate) fn batch_ids(items: &sled::Tree, batch: BatchId) -> Result<Vec<PaymentId>, StoreError> {
    let mut out = Vec::new();
    for kv in items.scan_prefix(batch.0) {
        let (k, v) = kv?;
        if v.is_empty() || v.len() % 16 != 0 {
            return Err(StoreError::Corrupt { key: hex(&k), detail: format!("{} bytes of payment ids", v.len()) });
        }
        // Each value starts where the list so far ends: a value left by another grouping (a
        // crash under another version) would otherwise read back as duplicate or missing ids.
        let seq = u32::from_be_bytes(
            k[16..20].try_into().map_err(|_| StoreError::Corrupt { key: hex(&k), detail: "key".into() })?,
        );
        if seq as usize != out.len() {
            return Err(StoreError::Corrupt {
                key: hex(&k),
                detail: format!("ids from position {seq}, but {} ids precede it", out.len()),
            });
        }
        for id in v.chunks_exact(16) {
            let b: [u8; 16] =
                id.try_into().map_err(|_| StoreError::Corrupt { key: hex(&k), detail: "payment id".into() })?;
            out.push(PaymentId::from_bytes(b));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use ring::digest;

    use super::*;
    use inflight_wire::{Currency, Expiry, Money, Pan, PaymentId, TerminalId};

    fn payment(pan: &str) -> Payment {
        Payment {
            id: PaymentId::from_bytes([1; 16]),
            terminal: TerminalId::parse("t-1").expect("terminal id"),
            pan: Pan::parse(pan).expect("pan"),
            expiry: Expiry::new(2030, 12).expect("expiry"),
            amount: Money::new(1_250, Currency::parse("EUR").expect("currency")).expect("money"),
            seat: "12A".into(),
            captured_unix_ms: 1_700_000_000_000,
            items: vec![],
            emv: None,
            pos: inflight_wire::PointOfSale::LEGACY,
        }
    }

    #[test]
    fn content_digest_is_keyed_and_tells_content_apart() {
        let (a, b) = (CardVault::from_key(&[1; 32]), CardVault::from_key(&[2; 32]));
        let p = payment("4111111111111111");
        let q = payment("4000056655665556");
        assert_eq!(content_digest(&a, &p), content_digest(&a, &p));
        assert_ne!(content_digest(&a, &p), content_digest(&a, &q), "another card, another digest");
        assert_ne!(content_digest(&a, &p), content_digest(&b, &p), "another key, another digest");
        let plain = digest::digest(&digest::SHA256, &encode(&p));
        assert_ne!(content_digest(&a, &p).as_slice(), plain.as_ref(), "not the unkeyed hash");
    }

    #[test]
    fn batch_digest_ignores_card_data_and_sees_everything_else() {
        let item = |pan: &str, amount: u64| {
            let p = payment(pan);
            BatchItem {
                id: p.id,
                pan: p.pan,
                expiry: p.expiry,
                amount: Money::new(amount, p.amount.currency()).expect("money"),
                captured_unix_ms: p.captured_unix_ms,
                late: false,
                deferred: true,
                emv: None,
                pos: inflight_wire::PointOfSale::LEGACY,
            }
        };
        let of = |items: &[BatchItem]| {
            let mut d = inflight_core::batch::BatchDigest::default();
            items.iter().for_each(|i| d.update(i));
            d.finish()
        };
        let a = item("4111111111111111", 100);
        // Only the card differs: the digest is the same, so it cannot confirm a guessed card.
        assert_eq!(of(std::slice::from_ref(&a)), of(&[item("4000056655665556", 100)]));
        assert_ne!(of(std::slice::from_ref(&a)), of(&[item("4111111111111111", 101)]));
        let mut later = a.clone();
        later.captured_unix_ms += 1;
        assert_ne!(of(std::slice::from_ref(&a)), of(&[later]));
    }

    /// A batch's ids read back in order whether a value holds one id (the issuer, and master
    /// stores written before ids were grouped) or many; a value that is not whole ids is named
    /// as corrupt.
    #[test]
    fn batch_ids_read_back_in_order_one_or_many_per_value() {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let items = db.open_tree("batch_items").expect("tree");
        let ids: Vec<PaymentId> =
            (0..2_500u32).map(|n| PaymentId::mint(1_700_000_000_000 + u64::from(n), [n as u8; 10])).collect();
        let (grouped, single, other) = (BatchId([1; 16]), BatchId([2; 16]), BatchId([3; 16]));
        let write = |batch, ids: &[PaymentId]| {
            for (k, v) in batch_id_values(batch, 0, ids) {
                items.insert(k, v).expect("write");
            }
        };
        write(grouped, &ids);
        assert_eq!(items.scan_prefix(grouped.0).count(), 10, "256 ids per value");
        for (seq, id) in ids.iter().enumerate() {
            items.insert(batch_item_key(single, seq as u32), &id.to_bytes()).expect("write");
        }
        write(other, &ids[..5]);
        assert_eq!(batch_ids(&items, grouped).expect("read"), ids);
        assert_eq!(batch_ids(&items, single).expect("read"), ids);
        assert_eq!(batch_ids(&items, other).expect("read"), ids[..5].to_vec());
        let gap = BatchId([4; 16]);
        items.insert(batch_item_key(gap, 0), &ids[0].to_bytes()).expect("write");
        items.insert(batch_item_key(gap, 2), &ids[2].to_bytes()).expect("write");
        assert!(matches!(batch_ids(&items, gap), Err(StoreError::Corrupt { .. })), "a gap in the list");
        let overlap = BatchId([5; 16]);
        for (k, v) in batch_id_values(overlap, 0, &ids[..300]) {
            items.insert(k, v).expect("write");
        }
        items.insert(batch_item_key(overlap, 299), &ids[299].to_bytes()).expect("write");
        assert!(matches!(batch_ids(&items, overlap), Err(StoreError::Corrupt { .. })), "ids listed twice");
        items.insert(batch_item_key(other, 1), &[7u8; 20]).expect("write");
        assert!(matches!(batch_ids(&items, other), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn item_digest_covers_the_payment_and_not_its_late_mark() {
        let vault = CardVault::from_key(&[1; 32]);
        let p = payment("4111111111111111");
        let item = BatchItem {
            id: p.id,
            pan: p.pan.clone(),
            expiry: p.expiry,
            amount: p.amount,
            captured_unix_ms: p.captured_unix_ms,
            late: false,
            deferred: true,
            emv: None,
            pos: inflight_wire::PointOfSale::LEGACY,
        };
        let late = BatchItem { late: true, ..item.clone() };
        assert_eq!(item_digest(&vault, &item), item_digest(&vault, &late), "the same payment, sealed later");
        let other = BatchItem { amount: Money::new(1_251, p.amount.currency()).expect("money"), ..item.clone() };
        assert_ne!(item_digest(&vault, &item), item_digest(&vault, &other));
        let other_card = BatchItem { pan: Pan::parse("4000056655665556").expect("pan"), ..item.clone() };
        assert_ne!(item_digest(&vault, &item), item_digest(&vault, &other_card));
    }
}
