//! The issuer's acceptance of a batch and its "already decided" guard, with no I/O.
//!
//! A batch arrives as a header, chunks of items and an end mark. [`start_of`] says how a batch
//! id is treated given what the issuer stored of it; [`IssuerBatch`] receives the items and
//! checks them against the header (order, count, digest, no payment id twice), refusing with a
//! typed [`BatchRefusal`]; [`AcceptedBatch::first_conflict`] finds, before anything is decided,
//! a payment id already decided with other content. [`decide`] is what the store's transaction
//! applies to each item: keep an earlier decision, decide afresh, or refuse a conflict.
//!
//! The driver (`inflight-issuer`'s server) only moves frames, holds the memory budget, runs the
//! timers and writes to the store; the store (`inflight_store::IssuerStore`) only reads and
//! writes records. The same code runs in a unit test, the simulator and the daemon.

use std::collections::HashSet;

use inflight_wire::{
    AuthOutcome, BatchHeader, BatchItem, Money, PaymentId, ReversalOutcome, BATCH_CHUNK_MAX, BATCH_PAYMENTS_MAX,
};

use crate::authorize::{authorize, Account, CardFile, Rules};
use crate::batch::BatchDigest;
use crate::chip::AtcWindow;

/// How the issuer treats a batch id when its header arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStart {
    /// Never seen: decide its items.
    New,
    /// Seen with the same header, not finished: decide its items (decided payments keep their
    /// decisions).
    Resume,
    /// Seen with the same header and finished: answer from the stored results.
    Done,
    /// Seen with a different header: refuse.
    Conflict,
}

/// How to treat `header`, given the stored header of its batch id and whether that batch is
/// finished (`known`, `None` when the id was never seen).
pub fn start_of(known: Option<(&BatchHeader, bool)>, header: &BatchHeader) -> BatchStart {
    match known {
        None => BatchStart::New,
        Some((stored, _)) if stored != header => BatchStart::Conflict,
        Some((_, true)) => BatchStart::Done,
        Some((_, false)) => BatchStart::Resume,
    }
}

/// Why a batch is refused. Sent to the aircraft as `IssuerMsg::BatchRefused { reason }` with
/// [`BatchRefusal::reason`], a stable text; the aircraft quarantines the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchRefusal {
    /// The header's count is 0 or over [`BATCH_PAYMENTS_MAX`], or it names another aircraft
    /// than the connection's certificate.
    #[error("header count or aircraft is invalid")]
    InvalidHeader,
    /// The batch id was seen before with another header.
    #[error("batch id already used with different content")]
    IdReused,
    /// A chunk does not start where the previous one ended, is over [`BATCH_CHUNK_MAX`], or
    /// goes beyond the header's count.
    #[error("items out of order or beyond the header's count")]
    ItemsOutOfOrder,
    /// At the end, the items are not the header's count, or not its digest.
    #[error("items do not match the header's count and digest")]
    DigestMismatch,
    /// A payment id appears twice in the batch (it would be decided in one chunk and refused in
    /// another).
    #[error("payment {0} appears twice in the batch")]
    DuplicatePayment(PaymentId),
    /// A payment id was already decided, in this or another batch, with other content (card,
    /// expiry, amount or capture time): an id re-used, never merged.
    #[error("payment {0} was already decided with other content")]
    AlreadyDecidedOtherContent(PaymentId),
}

impl BatchRefusal {
    /// The text sent to the aircraft and kept with its quarantined batch. Holds no card data
    /// (at most a payment id).
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// Checks a header before anything is stored of it: a count the issuer can hold, and the
/// aircraft of the connection. [`IssuerBatch::begin`] checks it again.
pub fn check_header(header: &BatchHeader, aircraft: &str) -> Result<(), BatchRefusal> {
    if header.count == 0 || header.count > BATCH_PAYMENTS_MAX || header.aircraft != aircraft {
        return Err(BatchRefusal::InvalidHeader);
    }
    Ok(())
}

/// One batch being received: its items are held until the whole batch has been checked against
/// its header, so a batch that does not match is refused with nothing decided under its id.
#[derive(Debug)]
pub struct IssuerBatch {
    header: BatchHeader,
    start: BatchStart,
    items: Vec<BatchItem>,
    digest: BatchDigest,
}

impl IssuerBatch {
    /// Starts receiving `header` on a connection authenticated as `aircraft`, treated as `start`
    /// ([`start_of`]). Refused: an invalid header ([`check_header`]), or a batch id re-used.
    pub fn begin(header: BatchHeader, aircraft: &str, start: BatchStart) -> Result<Self, BatchRefusal> {
        check_header(&header, aircraft)?;
        if start == BatchStart::Conflict {
            return Err(BatchRefusal::IdReused);
        }
        // Capacity grows with what arrives: the header's count is the peer's word.
        let items = Vec::with_capacity(header.count.min(65_536) as usize);
        Ok(Self { header, start, items, digest: BatchDigest::default() })
    }

    /// The header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// How the batch id was treated at the start.
    pub fn start(&self) -> BatchStart {
        self.start
    }

    /// A chunk of items from position `first_seq`: it must follow the items received so far,
    /// hold at most [`BATCH_CHUNK_MAX`] items and stay within the header's count.
    pub fn on_items(&mut self, first_seq: u32, items: Vec<BatchItem>) -> Result<(), BatchRefusal> {
        if first_seq as usize != self.items.len()
            || items.len() > BATCH_CHUNK_MAX
            || self.items.len() + items.len() > self.header.count as usize
        {
            return Err(BatchRefusal::ItemsOutOfOrder);
        }
        for item in &items {
            self.digest.update(item);
        }
        self.items.extend(items);
        Ok(())
    }

    /// Items received so far.
    pub fn received(&self) -> usize {
        self.items.len()
    }

    /// The end of the batch: the items must be the header's count and digest, and carry no
    /// payment id twice.
    pub fn on_end(self) -> Result<AcceptedBatch, BatchRefusal> {
        if self.items.len() != self.header.count as usize || self.digest.finish() != self.header.digest {
            return Err(BatchRefusal::DigestMismatch);
        }
        let mut ids = HashSet::with_capacity(self.items.len());
        if let Some(twice) = self.items.iter().find(|i| !ids.insert(i.id)) {
            return Err(BatchRefusal::DuplicatePayment(twice.id));
        }
        Ok(AcceptedBatch { header: self.header, start: self.start, items: self.items })
    }
}

/// A batch that matches its header, ready to be decided (in chunks of [`BATCH_CHUNK_MAX`], one
/// store transaction each, each item through [`decide`]) or answered from stored results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedBatch {
    /// The header.
    pub header: BatchHeader,
    /// How the batch id was treated at the start.
    pub start: BatchStart,
    /// The items, in batch order.
    pub items: Vec<BatchItem>,
}

impl AcceptedBatch {
    /// Whether its items are to be decided: every start but [`BatchStart::Done`], which is
    /// answered from the stored results.
    pub fn needs_deciding(&self) -> bool {
        self.start != BatchStart::Done
    }

    /// Checked before anything is decided: the first item whose id was decided with other
    /// content. `prior(id)` returns the keyed content digest stored with an earlier decision of
    /// `id`; `content(item)` the keyed digest of this item (asked only for ids decided before).
    /// The header's digest covers no card data: card content is compared here, per payment id,
    /// under the issuer's own key.
    pub fn first_conflict(
        &self,
        mut prior: impl FnMut(&PaymentId) -> Option<[u8; 32]>,
        mut content: impl FnMut(&BatchItem) -> [u8; 32],
    ) -> Option<PaymentId> {
        self.items.iter().find(|item| prior(&item.id).is_some_and(|p| p != content(item))).map(|item| item.id)
    }

    /// [`AcceptedBatch::first_conflict`] as a refusal.
    pub fn check_prior(
        &self,
        prior: impl FnMut(&PaymentId) -> Option<[u8; 32]>,
        content: impl FnMut(&BatchItem) -> [u8; 32],
    ) -> Result<(), BatchRefusal> {
        match self.first_conflict(prior, content) {
            Some(id) => Err(BatchRefusal::AlreadyDecidedOtherContent(id)),
            None => Ok(()),
        }
    }
}

/// What the store's transaction does with one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemDecision {
    /// Already decided with the same content: its decision stands, nothing changes.
    Keep,
    /// Decided now.
    Decide {
        /// The decision, to be recorded with the item's content digest.
        outcome: AuthOutcome,
        /// The account after the decision: `Some` when it changed (to be written in the same
        /// transaction as the decision).
        account_after: Option<Account>,
        /// The card's chip counters after: `Some` when they changed (same transaction).
        atc_after: Option<AtcWindow>,
    },
    /// Already decided with other content: nothing is decided, the chunk is refused.
    Conflict,
}

/// The "already decided" guard and the authorization of one item. `content` is the keyed digest
/// of `item`; `prior` the one stored with an earlier decision of its payment id, if any;
/// `card` what the issuer holds of the card. A payment id is decided at most once, whatever
/// batch carries it.
pub fn decide(
    item: &BatchItem,
    content: &[u8; 32],
    prior: Option<&[u8; 32]>,
    card: CardFile<'_>,
    rules: &Rules<'_>,
) -> ItemDecision {
    match prior {
        Some(p) if p == content => ItemDecision::Keep,
        Some(_) => ItemDecision::Conflict,
        None => {
            let a = authorize(item, card, rules);
            let account_after = a.account_after.filter(|a| Some(a) != card.account);
            let atc_after = a.atc_after.filter(|w| Some(*w) != card.atc);
            ItemDecision::Decide { outcome: a.outcome, account_after, atc_after }
        }
    }
}

/// What the store's transaction does with one reversal (a sale app's void of a payment the
/// issuer has decided). Exactly once in money: the amount is released only the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalDecision {
    /// Reversed before: answer what was recorded, change nothing.
    Repeat(ReversalOutcome),
    /// Not decided here: record nothing.
    Unknown,
    /// Declined: nothing was charged; record that it was reversed, release nothing.
    NotCharged,
    /// Approved: release `amount_minor` to the account and record the reversal, in one
    /// transaction.
    Release {
        /// The amount to give back.
        amount_minor: u64,
    },
}

/// The reversal of a payment whose decision here is `decided` (`None`: never decided) and
/// whose earlier reversal, if any, is `prior`.
pub fn reverse(decided: Option<(&AuthOutcome, Money)>, prior: Option<ReversalOutcome>) -> ReversalDecision {
    match (prior, decided) {
        (Some(p), _) => ReversalDecision::Repeat(p),
        (None, None) => ReversalDecision::Unknown,
        (None, Some((AuthOutcome::Declined(_), _))) => ReversalDecision::NotCharged,
        (None, Some((AuthOutcome::Approved { .. }, amount))) => {
            ReversalDecision::Release { amount_minor: amount.amount_minor() }
        }
    }
}

impl ReversalDecision {
    /// What the master is told.
    pub fn outcome(self) -> ReversalOutcome {
        match self {
            ReversalDecision::Repeat(o) => o,
            ReversalDecision::Unknown => ReversalOutcome::Unknown,
            ReversalDecision::NotCharged => ReversalOutcome::NotCharged,
            ReversalDecision::Release { amount_minor } => ReversalOutcome::Reversed { released_minor: amount_minor },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::authorize::CaptureBounds;
    use inflight_wire::BinList;
    use inflight_wire::{
        BinPrefix, BinRule, CardKind, Currency, DeclineReason, EntryMode, Expiry, Money, Pan, PointOfSale,
    };
    use proptest::prelude::*;

    use super::*;

    const CAPTURED: u64 = 1_795_564_800_000; // 2026-11-25
    const AIRCRAFT: &str = "F-GZNA";

    fn eur() -> Currency {
        Currency::parse("EUR").expect("known")
    }

    fn programme() -> BinList {
        BinList {
            version: 1,
            issuer: "test".into(),
            valid_from_unix_ms: 0,
            valid_until_unix_ms: u64::MAX,
            rules: vec![BinRule {
                prefix: BinPrefix::parse("411111").expect("valid"),
                kind: CardKind::Credit,
                txn_limit_minor: 10_000,
                card_flight_limit_minor: 20_000,
                currencies: vec![eur()],
                entry_modes: EntryMode::ALL.to_vec(),
                cvm_required: false,
            }],
        }
    }

    fn card(account: Option<&Account>) -> CardFile<'_> {
        CardFile { account, atc: None }
    }

    fn rules(programme: &BinList) -> Rules<'_> {
        Rules { programme, bounds: CaptureBounds::ANY, chip_key: None }
    }

    fn account(available: u64) -> Account {
        Account {
            kind: CardKind::Credit,
            expiry: Expiry::parse("12/29").expect("valid"),
            available_minor: available,
            currency: eur(),
            open: true,
            chip: false,
        }
    }

    fn item(n: u16, amount: u64) -> BatchItem {
        let mut random = [0u8; 10];
        random[..2].copy_from_slice(&n.to_be_bytes());
        BatchItem {
            id: PaymentId::mint(CAPTURED, random),
            pan: Pan::parse("4111111111111111").expect("valid"),
            expiry: Expiry::parse("12/29").expect("valid"),
            amount: Money::new(amount, eur()).expect("valid"),
            captured_unix_ms: CAPTURED + u64::from(n),
            late: false,
            pos: PointOfSale::LEGACY,
            deferred: true,
            emv: None,
        }
    }

    fn items(n: u16) -> Vec<BatchItem> {
        (0..n).map(|k| item(k, 100 + u64::from(k))).collect()
    }

    fn header_of(items: &[BatchItem]) -> BatchHeader {
        let mut d = BatchDigest::default();
        items.iter().for_each(|i| d.update(i));
        BatchHeader {
            id: inflight_wire::BatchId([7; 16]),
            aircraft: AIRCRAFT.into(),
            flight: "AF001".into(),
            count: items.len() as u32,
            totals: vec![],
            digest: d.finish(),
        }
    }

    /// Feeds `items` under `header` in chunks of `chunk` and ends the batch.
    fn receive(header: BatchHeader, items: &[BatchItem], chunk: usize) -> Result<AcceptedBatch, BatchRefusal> {
        let mut b = IssuerBatch::begin(header, AIRCRAFT, BatchStart::New)?;
        for c in items.chunks(chunk) {
            b.on_items(b.received() as u32, c.to_vec())?;
        }
        b.on_end()
    }

    #[test]
    fn start_of_a_batch_id() {
        let h = header_of(&items(2));
        let other = BatchHeader { count: 3, ..h.clone() };
        assert_eq!(start_of(None, &h), BatchStart::New);
        assert_eq!(start_of(Some((&h, false)), &h), BatchStart::Resume);
        assert_eq!(start_of(Some((&h, true)), &h), BatchStart::Done);
        assert_eq!(start_of(Some((&other, false)), &h), BatchStart::Conflict);
        assert_eq!(start_of(Some((&other, true)), &h), BatchStart::Conflict);
    }

    #[test]
    fn an_honest_batch_is_accepted() {
        let its = items(5);
        let b = receive(header_of(&its), &its, 2).expect("accepted");
        assert_eq!(b.items, its);
        assert!(b.needs_deciding());
        assert_eq!(b.first_conflict(|_| None, |_| unreachable!("no prior decision")), None);
    }

    #[test]
    fn invalid_headers_are_refused() {
        let its = items(2);
        let h = header_of(&its);
        for bad in [
            BatchHeader { count: 0, ..h.clone() },
            BatchHeader { count: BATCH_PAYMENTS_MAX + 1, ..h.clone() },
            BatchHeader { aircraft: "F-OTHER".into(), ..h.clone() },
        ] {
            assert_eq!(check_header(&bad, AIRCRAFT), Err(BatchRefusal::InvalidHeader));
            let got = IssuerBatch::begin(bad, AIRCRAFT, BatchStart::New).map(|_| ());
            assert_eq!(got, Err(BatchRefusal::InvalidHeader));
        }
        // The largest count is allowed.
        assert!(IssuerBatch::begin(BatchHeader { count: BATCH_PAYMENTS_MAX, ..h }, AIRCRAFT, BatchStart::New).is_ok());
    }

    #[test]
    fn a_reused_batch_id_is_refused() {
        let h = header_of(&items(2));
        assert_eq!(
            IssuerBatch::begin(h.clone(), AIRCRAFT, BatchStart::Conflict).map(|_| ()),
            Err(BatchRefusal::IdReused)
        );
        let done = IssuerBatch::begin(h, AIRCRAFT, BatchStart::Done).expect("a known batch is received again");
        assert_eq!(done.start(), BatchStart::Done);
    }

    #[test]
    fn items_out_of_order_or_beyond_the_count_are_refused() {
        let its = items(4);
        let h = header_of(&its);
        let begin = || IssuerBatch::begin(h.clone(), AIRCRAFT, BatchStart::New).expect("valid");
        // A gap.
        assert_eq!(begin().on_items(1, its[1..2].to_vec()), Err(BatchRefusal::ItemsOutOfOrder));
        // A chunk sent twice.
        let mut b = begin();
        b.on_items(0, its[..2].to_vec()).expect("first chunk");
        assert_eq!(b.on_items(0, its[..2].to_vec()), Err(BatchRefusal::ItemsOutOfOrder));
        // Beyond the header's count.
        let mut b = begin();
        b.on_items(0, its.clone()).expect("all of it");
        assert_eq!(b.on_items(4, its[..1].to_vec()), Err(BatchRefusal::ItemsOutOfOrder));
        // A chunk over BATCH_CHUNK_MAX, even within the count.
        let many: Vec<BatchItem> = (0..=BATCH_CHUNK_MAX as u16).map(|k| item(k, 100)).collect();
        let mut b = IssuerBatch::begin(header_of(&many), AIRCRAFT, BatchStart::New).expect("valid");
        assert_eq!(b.on_items(0, many.clone()), Err(BatchRefusal::ItemsOutOfOrder));
        assert_eq!(b.received(), 0, "a refused chunk is not kept");
    }

    #[test]
    fn count_or_digest_not_the_headers_is_refused() {
        let its = items(3);
        let h = header_of(&its);
        // Too few items.
        assert_eq!(receive(h.clone(), &its[..2], 2), Err(BatchRefusal::DigestMismatch));
        // The right count, another digest.
        let mut other = its.clone();
        other[1] = item(9, 101);
        assert_eq!(receive(h.clone(), &other, 2), Err(BatchRefusal::DigestMismatch));
        // The same items in another order.
        let mut swapped = its.clone();
        swapped.swap(0, 2);
        assert_eq!(receive(h, &swapped, 3), Err(BatchRefusal::DigestMismatch));
    }

    #[test]
    fn a_payment_id_twice_is_refused() {
        let mut its = items(3);
        its[2] = BatchItem { amount: Money::new(555, eur()).expect("valid"), ..its[0].clone() };
        let id = its[0].id;
        assert_eq!(receive(header_of(&its), &its, 2), Err(BatchRefusal::DuplicatePayment(id)));
        assert!(BatchRefusal::DuplicatePayment(id).reason().contains(&id.to_string()));
    }

    #[test]
    fn a_payment_id_decided_with_other_content_is_found_before_deciding() {
        let its = items(3);
        let b = receive(header_of(&its), &its, 3).expect("accepted");
        let content = |i: &BatchItem| [i.amount.amount_minor() as u8; 32];
        // Decided before with the same content: no conflict.
        let same = |id: &PaymentId| (*id == its[1].id).then(|| content(&its[1]));
        assert_eq!(b.first_conflict(same, content), None);
        assert_eq!(b.check_prior(same, content), Ok(()));
        // Decided before with other content: that id.
        let other = |id: &PaymentId| (*id == its[2].id).then_some([0xee; 32]);
        assert_eq!(b.first_conflict(other, content), Some(its[2].id));
        assert_eq!(b.check_prior(other, content), Err(BatchRefusal::AlreadyDecidedOtherContent(its[2].id)));
    }

    #[test]
    fn refusal_reasons_are_stable() {
        let id = PaymentId::from_bytes([0xab; 16]);
        let cases = [
            (BatchRefusal::InvalidHeader, "header count or aircraft is invalid".to_owned()),
            (BatchRefusal::IdReused, "batch id already used with different content".to_owned()),
            (BatchRefusal::ItemsOutOfOrder, "items out of order or beyond the header's count".to_owned()),
            (BatchRefusal::DigestMismatch, "items do not match the header's count and digest".to_owned()),
            (BatchRefusal::DuplicatePayment(id), format!("payment {id} appears twice in the batch")),
            (
                BatchRefusal::AlreadyDecidedOtherContent(id),
                format!("payment {id} was already decided with other content"),
            ),
        ];
        for (r, text) in cases {
            assert_eq!(r.reason(), text);
        }
    }

    #[test]
    fn decide_keeps_an_earlier_decision_of_the_same_content() {
        let it = item(1, 5_000);
        let content = [1u8; 32];
        let got = decide(&it, &content, Some(&content), card(Some(&account(8_000))), &rules(&programme()));
        assert_eq!(got, ItemDecision::Keep, "decided once: the account is not charged again");
    }

    #[test]
    fn decide_refuses_an_earlier_decision_of_other_content() {
        let it = item(1, 5_000);
        let got = decide(&it, &[1; 32], Some(&[2; 32]), card(Some(&account(8_000))), &rules(&programme()));
        assert_eq!(got, ItemDecision::Conflict);
    }

    #[test]
    fn decide_approves_a_fresh_item_and_charges_its_account() {
        let it = item(1, 5_000);
        let got = decide(&it, &[1; 32], None, card(Some(&account(8_000))), &rules(&programme()));
        let code = crate::authorize::auth_code(it.id);
        assert_eq!(
            got,
            ItemDecision::Decide {
                outcome: AuthOutcome::Approved { auth_code: code },
                account_after: Some(account(3_000)),
                atc_after: None,
            }
        );
    }

    #[test]
    fn decide_declines_a_fresh_item_and_leaves_its_account() {
        let p = programme();
        let it = item(1, 9_000);
        let got = decide(&it, &[1; 32], None, card(Some(&account(8_000))), &rules(&p));
        let want = AuthOutcome::Declined(DeclineReason::InsufficientFunds);
        assert_eq!(got, ItemDecision::Decide { outcome: want, account_after: None, atc_after: None });
        let got = decide(&it, &[1; 32], None, card(None), &rules(&p));
        let want = AuthOutcome::Declined(DeclineReason::UnknownCard);
        assert_eq!(got, ItemDecision::Decide { outcome: want, account_after: None, atc_after: None });
    }

    /// No decline is ever retried: the same payment sent again (a batch re-sent after a lost
    /// answer, or in another batch) keeps its decision even when the account could now approve
    /// it. This is the whole of inflight's "retry" of a declined payment (README, "Declines are
    /// final").
    #[test]
    fn a_declined_payment_sent_again_is_never_authorized_again() {
        let p = programme();
        let it = item(1, 9_000);
        let ItemDecision::Decide { outcome, .. } = decide(&it, &[1; 32], None, card(Some(&account(8_000))), &rules(&p))
        else {
            panic!("a fresh item is decided");
        };
        assert_eq!(outcome, AuthOutcome::Declined(DeclineReason::InsufficientFunds));
        let again = decide(&it, &[1; 32], Some(&[1; 32]), card(Some(&account(1_000_000))), &rules(&p));
        assert_eq!(again, ItemDecision::Keep, "the stored decline is answered, not re-authorized");
    }

    /// The items of a valid batch and a way to cut them into chunks.
    fn batch_and_chunking() -> impl Strategy<Value = (Vec<BatchItem>, Vec<usize>)> {
        (1u16..1_200).prop_flat_map(|n| {
            let its = items(n);
            (Just(its), prop::collection::vec(1usize..=BATCH_CHUNK_MAX, 1..40))
        })
    }

    /// Cuts `items` into chunks of the given sizes (cycled).
    fn chunked(items: &[BatchItem], sizes: &[usize]) -> Vec<Vec<BatchItem>> {
        let mut out = Vec::new();
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at == items.len() {
                break;
            }
            let end = (at + size).min(items.len());
            out.push(items[at..end].to_vec());
            at = end;
        }
        out
    }

    fn receive_chunks(header: BatchHeader, chunks: Vec<Vec<BatchItem>>) -> Result<AcceptedBatch, BatchRefusal> {
        let mut b = IssuerBatch::begin(header, AIRCRAFT, BatchStart::New)?;
        for c in chunks {
            b.on_items(b.received() as u32, c)?;
        }
        b.on_end()
    }

    #[derive(Debug, Clone, Copy)]
    enum Change {
        Amount,
        Id,
        CaptureTime,
    }

    proptest! {
        /// A valid batch is accepted however it is cut into chunks; changing one item's amount,
        /// id or capture time after the header was sealed is refused as a digest mismatch.
        #[test]
        fn any_chunking_of_a_valid_batch_is_accepted_and_any_one_change_refused(
            (its, sizes) in batch_and_chunking(),
            pick in any::<prop::sample::Index>(),
            change in prop_oneof![Just(Change::Amount), Just(Change::Id), Just(Change::CaptureTime)],
        ) {
            let header = header_of(&its);
            let accepted = receive_chunks(header.clone(), chunked(&its, &sizes));
            prop_assert_eq!(accepted.map(|b| b.items), Ok(its.clone()));

            let k = pick.index(its.len());
            let mut changed = its.clone();
            let it = &mut changed[k];
            match change {
                Change::Amount => {
                    it.amount = Money::new(it.amount.amount_minor() + 1, it.amount.currency()).expect("valid");
                }
                // An id no item of the batch has (the others are minted from 0..n).
                Change::Id => it.id = PaymentId::mint(CAPTURED, [0xff; 10]),
                Change::CaptureTime => it.captured_unix_ms += 1,
            }
            let refused = receive_chunks(header, chunked(&changed, &sizes));
            prop_assert_eq!(refused.map(|b| b.items), Err(BatchRefusal::DigestMismatch));
        }
    }
}
