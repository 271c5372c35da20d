//! The master's side of one batch upload: the header it seals, and the checks on what the issuer
//! answers.
//!
//! ```text
//!  Idle ──seal──► Sealing ──on_sealed──► Sending ──on_sent──► Awaiting ──on_done──► Done
//!   │                │                     ▲                    │  └──on_refused──► Quarantined
//!   └──resume────────┼─────────────────────┘                    │
//!                    └──on_failure──► Retry ◄──on_failure / a result that does not fit
//!                                       └──resume / seal──► the same batch again
//! ```
//!
//! The driver mints the batch id (random bytes and its clock), reads the items from its store,
//! records the header and ids durably between [`Uploader::seal`] and [`Uploader::on_sealed`],
//! moves the frames, and reports what happened. Once a batch is sealed, the uploader holds it
//! until the issuer has answered it in full ([`UploadState::Done`]) or refused it
//! ([`UploadState::Quarantined`]): whatever fails meanwhile, the only batch it will send is
//! that one, with the same header and the same ids. A `seal` while it holds one returns the held
//! header (the driver records it again, which changes nothing); a `resume` with another batch is
//! ignored.
//!
//! Results are accepted only in batch order, chunk after chunk with no gap and no repeat, each
//! naming the payment at its place; `BatchDone` only with the batch's count and every result in.
//! Anything else is an [`UploadError`] and the batch goes to [`UploadState::Retry`].

use std::collections::BTreeMap;
use std::fmt;

use inflight_wire::{AuthResult, BatchHeader, BatchId, BatchItem, Currency, PaymentId};

use crate::batch::BatchDigest;

/// Where the upload of the current batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UploadState {
    /// No batch held.
    Idle,
    /// A header is built; the driver is recording it (and its ids) durably. Nothing may be sent.
    Sealing,
    /// Recorded durably: the driver streams `BatchBegin`, the items and `BatchEnd`.
    Sending,
    /// `BatchEnd` is written: results are coming.
    Awaiting,
    /// Every result is in, in batch order.
    Done,
    /// The session ended before the batch was answered: the same batch must be sent again.
    Retry,
    /// The issuer refused the batch: set aside, never offered again automatically.
    Quarantined,
}

impl UploadState {
    /// A stable name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Idle => "idle",
            UploadState::Sealing => "sealing",
            UploadState::Sending => "sending",
            UploadState::Awaiting => "awaiting",
            UploadState::Done => "done",
            UploadState::Retry => "retry",
            UploadState::Quarantined => "quarantined",
        }
    }
}

impl fmt::Display for UploadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the next batch is (the aircraft's choice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextBatch {
    /// Nothing to send.
    Nothing,
    /// A sealed batch not yet answered: send it again, same id, same content.
    Open(BatchHeader, Vec<PaymentId>),
    /// Pending payments, in capture order, to seal into a new batch.
    Pending(Vec<PaymentId>),
}

/// Why an answer from the issuer was not accepted. The session ends and the batch is sent again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// An answer arrived when none was expected (no batch sent, or not yet ended).
    #[error("answer from the issuer while {state}")]
    Unexpected {
        /// The uploader's state when it arrived.
        state: UploadState,
    },
    /// The answer names another batch.
    #[error("answer for batch {got} while batch {expected} is being sent")]
    WrongBatch {
        /// The batch sent.
        expected: BatchId,
        /// The batch named.
        got: BatchId,
    },
    /// A chunk of results does not start where the previous one ended (a gap or a repeat).
    #[error("results chunk starts at {got}, expected {expected}")]
    Gap {
        /// Results received so far.
        expected: u32,
        /// The chunk's `first_seq`.
        got: u32,
    },
    /// A result names another payment than the one at its place in the batch.
    #[error("result {seq} is for {got}, the batch has {expected} there")]
    OutOfOrder {
        /// Its place in the batch.
        seq: u32,
        /// The payment at that place.
        expected: PaymentId,
        /// The payment the result names.
        got: PaymentId,
    },
    /// More results than the batch has payments.
    #[error("result {seq} is past the end of a batch of {count}")]
    TooMany {
        /// Its place.
        seq: u32,
        /// The batch's count.
        count: u32,
    },
    /// `BatchDone` with another count than the batch's.
    #[error("batch done with count {got}, the batch has {expected}")]
    WrongCount {
        /// The batch's count.
        expected: u32,
        /// The count the issuer sent.
        got: u32,
    },
    /// `BatchDone` before every result arrived.
    #[error("batch done after {got} results of {expected}")]
    Short {
        /// The batch's count.
        expected: u32,
        /// Results received.
        got: u32,
    },
}

/// Builds a batch header item by item, so that the driver can stream a large batch from its
/// store without holding every item: totals per currency, the [`BatchDigest`], the ids.
#[derive(Debug, Clone, Default)]
pub struct Sealer {
    digest: BatchDigest,
    totals: BTreeMap<Currency, u64>,
    ids: Vec<PaymentId>,
}

impl Sealer {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next item (in batch order).
    pub fn add(&mut self, item: &BatchItem) {
        let total = self.totals.entry(item.amount.currency()).or_default();
        *total = total.saturating_add(item.amount.amount_minor());
        self.digest.update(item);
        self.ids.push(item.id);
    }

    /// Items added so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no item was added.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The upload of one batch at a time (see the module documentation).
#[derive(Debug, Clone)]
pub struct Uploader {
    aircraft: String,
    state: UploadState,
    /// The batch held: its header and ids, in batch order.
    batch: Option<(BatchHeader, Vec<PaymentId>)>,
    /// Whether the held batch is known to be recorded durably (sealed, or resumed from the store).
    recorded: bool,
    /// Results accepted so far, in batch order.
    results: Vec<AuthResult>,
    /// Why the issuer refused the held batch.
    refusal: Option<String>,
}

impl Uploader {
    /// An idle uploader for `aircraft`.
    pub fn new(aircraft: String) -> Self {
        Self { aircraft, state: UploadState::Idle, batch: None, recorded: false, results: Vec::new(), refusal: None }
    }

    /// Where the upload is.
    pub fn state(&self) -> UploadState {
        self.state
    }

    /// Whether a batch is held that must be answered or refused before any other is sent.
    pub fn is_unfinished(&self) -> bool {
        self.batch.is_some()
            && matches!(
                self.state,
                UploadState::Sealing | UploadState::Sending | UploadState::Awaiting | UploadState::Retry
            )
    }

    /// The header of the batch held (also after it is done or quarantined).
    pub fn header(&self) -> Option<&BatchHeader> {
        self.batch.as_ref().map(|(h, _)| h)
    }

    /// The ids of the batch held, in batch order (empty if none).
    pub fn ids(&self) -> &[PaymentId] {
        self.batch.as_ref().map_or(&[], |(_, ids)| ids.as_slice())
    }

    /// Why the issuer refused the batch held, once [`UploadState::Quarantined`].
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// Results accepted so far for the batch held.
    pub fn results_received(&self) -> usize {
        self.results.len()
    }

    /// Builds the header of a new batch over `items` (in batch order: the aggregator's capture
    /// order) with id `batch_id` → [`UploadState::Sealing`]. The driver records the header and
    /// [`Uploader::ids`] durably, then calls [`Uploader::on_sealed`].
    ///
    /// While a batch is unfinished ([`Uploader::is_unfinished`]) no new one is made: the
    /// arguments are ignored and the held header is returned, to be recorded again.
    pub fn seal(&mut self, batch_id: BatchId, flight: String, items: &[BatchItem]) -> BatchHeader {
        if self.is_unfinished() {
            return self.reseal();
        }
        let mut sealer = Sealer::new();
        for item in items {
            sealer.add(item);
        }
        self.seal_with(batch_id, flight, sealer)
    }

    /// [`Uploader::seal`] over items added to `sealer` one at a time.
    pub fn seal_with(&mut self, batch_id: BatchId, flight: String, sealer: Sealer) -> BatchHeader {
        if self.is_unfinished() {
            return self.reseal();
        }
        let Sealer { digest, totals, ids } = sealer;
        let header = BatchHeader {
            id: batch_id,
            aircraft: self.aircraft.clone(),
            flight,
            count: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            totals: totals.into_iter().collect(),
            digest: digest.finish(),
        };
        self.batch = Some((header.clone(), ids));
        self.recorded = false;
        self.results.clear();
        self.refusal = None;
        self.state = UploadState::Sealing;
        header
    }

    fn reseal(&mut self) -> BatchHeader {
        self.results.clear();
        self.state = UploadState::Sealing;
        self.header().cloned().expect("an unfinished uploader holds a batch")
    }

    /// The header and ids are recorded durably → [`UploadState::Sending`].
    pub fn on_sealed(&mut self) {
        if self.state == UploadState::Sealing {
            self.recorded = true;
            self.state = UploadState::Sending;
        }
    }

    /// The aircraft's open batch (sealed earlier, maybe before a restart), to send again →
    /// [`UploadState::Sending`]. While another batch is unfinished here, that one is kept and
    /// this one ignored (→ `Sending`, or `Sealing` if the held one was never recorded).
    pub fn resume(&mut self, header: BatchHeader, ids: Vec<PaymentId>) {
        self.results.clear();
        let same = self.batch.as_ref().is_some_and(|(h, i)| *h == header && *i == ids);
        if self.is_unfinished() && !same {
            self.state = if self.recorded { UploadState::Sending } else { UploadState::Sealing };
            return;
        }
        self.batch = Some((header, ids));
        self.recorded = true;
        self.refusal = None;
        self.state = UploadState::Sending;
    }

    /// `BatchEnd` is written → [`UploadState::Awaiting`].
    pub fn on_sent(&mut self) {
        if self.state == UploadState::Sending {
            self.state = UploadState::Awaiting;
        }
    }

    /// A chunk of results. Accepted only for the batch sent, starting where the last chunk
    /// ended, each result naming the payment at its place; anything else → [`UploadState::Retry`].
    pub fn on_results(&mut self, batch: BatchId, first_seq: u32, results: Vec<AuthResult>) -> Result<(), UploadError> {
        let checked = self.check_results(batch, first_seq, &results);
        match checked {
            Ok(()) => {
                self.results.extend(results);
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn check_results(&self, batch: BatchId, first_seq: u32, results: &[AuthResult]) -> Result<(), UploadError> {
        let (header, ids) = self.awaited(batch)?;
        let have = self.results.len() as u32;
        if first_seq != have {
            return Err(UploadError::Gap { expected: have, got: first_seq });
        }
        for (k, r) in results.iter().enumerate() {
            let seq = have.saturating_add(k as u32);
            match ids.get(seq as usize) {
                None => return Err(UploadError::TooMany { seq, count: header.count }),
                Some(expected) if *expected != r.id => {
                    return Err(UploadError::OutOfOrder { seq, expected: *expected, got: r.id })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The issuer says the batch is done → [`UploadState::Done`], with every result in batch
    /// order. Accepted only for the batch sent, with its count, once every result is in.
    pub fn on_done(&mut self, batch: BatchId, count: u32) -> Result<Vec<AuthResult>, UploadError> {
        let checked = self.awaited(batch).and_then(|(header, ids)| {
            let got = self.results.len() as u32;
            if count != header.count || count as usize != ids.len() {
                Err(UploadError::WrongCount { expected: ids.len() as u32, got: count })
            } else if got != count {
                Err(UploadError::Short { expected: count, got })
            } else {
                Ok(())
            }
        });
        match checked {
            Ok(()) => {
                self.state = UploadState::Done;
                Ok(std::mem::take(&mut self.results))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The issuer refused the batch → [`UploadState::Quarantined`]; returns its header, for the
    /// driver to set it aside durably. Accepted only for the batch sent.
    pub fn on_refused(&mut self, batch: BatchId, reason: String) -> Result<BatchHeader, UploadError> {
        let checked = match (self.state, &self.batch) {
            (UploadState::Sending | UploadState::Awaiting, Some((h, _))) if h.id == batch => Ok(h.clone()),
            (UploadState::Sending | UploadState::Awaiting, Some((h, _))) => {
                Err(UploadError::WrongBatch { expected: h.id, got: batch })
            }
            (state, _) => Err(UploadError::Unexpected { state }),
        };
        match checked {
            Ok(h) => {
                self.results.clear();
                self.refusal = Some(reason);
                self.state = UploadState::Quarantined;
                Ok(h)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The session ended (connection lost, link down, a store or protocol error) → the batch
    /// held goes to [`UploadState::Retry`]: the same header and ids are sent again, never
    /// sealed anew. Nothing changes once it is done or quarantined, or when none is held.
    pub fn on_failure(&mut self) {
        if self.is_unfinished() {
            self.results.clear();
            self.state = UploadState::Retry;
        }
    }

    /// The batch results are expected for, if `batch` is it.
    fn awaited(&self, batch: BatchId) -> Result<(&BatchHeader, &[PaymentId]), UploadError> {
        match (self.state, &self.batch) {
            (UploadState::Awaiting, Some((h, ids))) if h.id == batch => Ok((h, ids)),
            (UploadState::Awaiting, Some((h, _))) => Err(UploadError::WrongBatch { expected: h.id, got: batch }),
            (state, _) => Err(UploadError::Unexpected { state }),
        }
    }

    fn fail(&mut self, e: UploadError) -> UploadError {
        self.on_failure();
        e
    }
}

#[cfg(test)]
mod tests {
    use inflight_wire::{AuthOutcome, DeclineReason, Expiry, Money, Pan};
    use proptest::prelude::*;

    use super::*;

    fn cur(c: &str) -> Currency {
        Currency::parse(c).expect("known")
    }

    fn item(n: u16, amount: u64, currency: &str) -> BatchItem {
        let mut random = [0u8; 10];
        random[..2].copy_from_slice(&n.to_be_bytes());
        BatchItem {
            id: PaymentId::mint(1_700_000_000_000 + u64::from(n), random),
            pan: Pan::parse("4111111111111111").expect("valid card"),
            expiry: Expiry::parse("12/29").expect("valid expiry"),
            amount: Money::new(amount, cur(currency)).expect("valid"),
            captured_unix_ms: 1_700_000_000_000 + u64::from(n),
            late: false,
            deferred: true,
            emv: None,
            pos: inflight_wire::PointOfSale::LEGACY,
        }
    }

    fn items(range: std::ops::Range<u16>) -> Vec<BatchItem> {
        range.map(|n| item(n, 100 + u64::from(n), if n % 3 == 0 { "USD" } else { "EUR" })).collect()
    }

    fn bid(n: u8) -> BatchId {
        BatchId([n; 16])
    }

    fn result(id: PaymentId) -> AuthResult {
        AuthResult { id, outcome: AuthOutcome::Declined(DeclineReason::UnknownCard) }
    }

    fn results(ids: &[PaymentId]) -> Vec<AuthResult> {
        ids.iter().copied().map(result).collect()
    }

    /// An uploader that has sent a sealed batch of `n` items and awaits its results.
    fn awaiting(n: u16) -> Uploader {
        let mut u = Uploader::new("A1".into());
        u.seal(bid(1), "F1".into(), &items(0..n));
        u.on_sealed();
        u.on_sent();
        assert_eq!(u.state(), UploadState::Awaiting);
        u
    }

    #[test]
    fn the_header_holds_count_totals_per_currency_and_the_digest() {
        let its = items(0..7);
        let mut u = Uploader::new("A1".into());
        let h = u.seal(bid(1), "F9".into(), &its);
        let mut digest = BatchDigest::default();
        its.iter().for_each(|i| digest.update(i));
        let eur: u64 = its.iter().filter(|i| i.amount.currency() == cur("EUR")).map(|i| i.amount.amount_minor()).sum();
        let usd: u64 = its.iter().filter(|i| i.amount.currency() == cur("USD")).map(|i| i.amount.amount_minor()).sum();
        let mut totals = vec![(cur("EUR"), eur), (cur("USD"), usd)];
        totals.sort();
        assert_eq!(
            h,
            BatchHeader {
                id: bid(1),
                aircraft: "A1".into(),
                flight: "F9".into(),
                count: 7,
                totals,
                digest: digest.finish(),
            }
        );
        assert_eq!(u.ids(), its.iter().map(|i| i.id).collect::<Vec<_>>().as_slice());
        assert_eq!(u.state(), UploadState::Sealing);
        assert_eq!(u.header(), Some(&h));
    }

    #[test]
    fn a_batch_answered_in_chunks_is_done_with_every_result_in_order() {
        let mut u = awaiting(5);
        let ids = u.ids().to_vec();
        u.on_results(bid(1), 0, results(&ids[..2])).expect("first chunk");
        u.on_results(bid(1), 2, vec![]).expect("an empty chunk changes nothing");
        u.on_results(bid(1), 2, results(&ids[2..])).expect("second chunk");
        let all = u.on_done(bid(1), 5).expect("done");
        assert_eq!(all, results(&ids));
        assert_eq!(u.state(), UploadState::Done);
        assert!(!u.is_unfinished());
    }

    #[test]
    fn results_that_do_not_fit_are_refused_and_the_batch_is_sent_again() {
        type Case = (&'static str, fn(&mut Uploader) -> Result<(), UploadError>);
        let cases: Vec<Case> = vec![
            ("wrong batch", |u| u.on_results(bid(2), 0, results(&u.ids()[..1]))),
            ("gap", |u| u.on_results(bid(1), 1, results(&u.ids()[1..2]))),
            ("duplicate chunk", |u| {
                let first = results(&u.ids()[..2]);
                u.on_results(bid(1), 0, first.clone())?;
                u.on_results(bid(1), 0, first)
            }),
            ("wrong id order", |u| {
                let swapped = vec![result(u.ids()[1]), result(u.ids()[0])];
                u.on_results(bid(1), 0, swapped)
            }),
            ("duplicate result", |u| u.on_results(bid(1), 0, vec![result(u.ids()[0]), result(u.ids()[0])])),
            ("too many", |u| {
                let mut all = results(u.ids());
                all.push(result(u.ids()[0]));
                u.on_results(bid(1), 0, all)
            }),
            ("short count", |u| {
                u.on_results(bid(1), 0, results(&u.ids()[..3]))?;
                u.on_done(bid(1), 3).map(drop)
            }),
            ("done too early", |u| {
                u.on_results(bid(1), 0, results(&u.ids()[..3]))?;
                u.on_done(bid(1), 4).map(drop)
            }),
            ("done for another batch", |u| {
                u.on_results(bid(1), 0, results(u.ids()))?;
                u.on_done(bid(2), 4).map(drop)
            }),
            ("refusal of another batch", |u| u.on_refused(bid(2), "no".into()).map(drop)),
        ];
        for (name, case) in cases {
            let mut u = awaiting(4);
            let (header, ids) = (u.header().cloned(), u.ids().to_vec());
            assert!(case(&mut u).is_err(), "{name}: accepted");
            assert_eq!(u.state(), UploadState::Retry, "{name}");
            assert_eq!(u.results_received(), 0, "{name}: results kept after a failure");
            // Sent again: the same batch, and nothing else can be sealed meanwhile.
            let again = u.seal(bid(9), "F2".into(), &items(10..12));
            assert_eq!(Some(again), header, "{name}");
            assert_eq!(u.ids(), ids.as_slice(), "{name}");
        }
    }

    #[test]
    fn answers_before_the_batch_is_ended_are_unexpected() {
        let mut u = Uploader::new("A1".into());
        assert_eq!(u.on_results(bid(1), 0, vec![]), Err(UploadError::Unexpected { state: UploadState::Idle }));
        u.seal(bid(1), "F".into(), &items(0..2));
        u.on_sealed();
        let ids = u.ids().to_vec();
        assert!(matches!(u.on_results(bid(1), 0, results(&ids)), Err(UploadError::Unexpected { .. })));
        assert_eq!(u.state(), UploadState::Retry);
    }

    #[test]
    fn a_refused_batch_is_quarantined_and_the_next_one_is_new() {
        let mut u = awaiting(3);
        let h = u.on_refused(bid(1), "digest mismatch".into()).expect("refused");
        assert_eq!(h.id, bid(1));
        assert_eq!(u.state(), UploadState::Quarantined);
        assert_eq!(u.refusal(), Some("digest mismatch"));
        u.on_failure();
        assert_eq!(u.state(), UploadState::Quarantined);
        let next = u.seal(bid(2), "F".into(), &items(5..6));
        assert_eq!(next.id, bid(2));
    }

    #[test]
    fn a_failure_at_any_step_sends_the_same_batch_again() {
        for step in 0..4 {
            let mut u = Uploader::new("A1".into());
            let header = u.seal(bid(1), "F".into(), &items(0..3));
            let ids = u.ids().to_vec();
            if step >= 1 {
                u.on_sealed();
            }
            if step >= 2 {
                u.on_sent();
            }
            if step >= 3 {
                u.on_results(bid(1), 0, results(&ids[..1])).expect("chunk");
            }
            u.on_failure();
            assert_eq!(u.state(), UploadState::Retry, "step {step}");
            // The aircraft offers its open batch again.
            u.resume(header.clone(), ids.clone());
            assert_eq!(u.state(), UploadState::Sending, "step {step}");
            assert_eq!((u.header(), u.ids()), (Some(&header), ids.as_slice()));
            u.on_sent();
            u.on_results(bid(1), 0, results(&ids)).expect("from the start again");
            assert_eq!(u.on_done(bid(1), 3).expect("done").len(), 3);
        }
    }

    #[test]
    fn a_resume_of_another_batch_never_replaces_an_unfinished_one() {
        let mut u = awaiting(3);
        let (header, ids) = (u.header().cloned(), u.ids().to_vec());
        u.on_failure();
        let mut other = Uploader::new("A1".into());
        let h2 = other.seal(bid(2), "F".into(), &items(7..9));
        u.resume(h2, other.ids().to_vec());
        assert_eq!(u.state(), UploadState::Sending);
        assert_eq!((u.header().cloned(), u.ids()), (header, ids.as_slice()));
    }

    /// What a driver (or the network) may do next.
    #[derive(Debug, Clone)]
    enum Op {
        /// Seal pending payments `lo..hi` as batch `id`.
        Seal {
            id: u8,
            lo: u16,
            len: u16,
        },
        Sealed,
        /// Resume the aircraft's open batch (`true`) or some other batch.
        Resume(bool),
        Sent,
        /// A chunk of `len` results at `first_seq` (`skew` 0: where it belongs), for batch
        /// `wrong_batch`? another : the sent one; `scramble` swaps two.
        Results {
            len: u8,
            skew: i8,
            wrong_batch: bool,
            scramble: bool,
        },
        Done {
            skew: i8,
            wrong_batch: bool,
        },
        Refused {
            wrong_batch: bool,
        },
        Failure,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (1u8..5, 0u16..50, 1u16..12).prop_map(|(id, lo, len)| Op::Seal { id, lo, len }),
            3 => Just(Op::Sealed),
            1 => any::<bool>().prop_map(Op::Resume),
            3 => Just(Op::Sent),
            4 => (0u8..8, prop_oneof![4 => Just(0i8), 1 => -2i8..3], prop::bool::weighted(0.1), prop::bool::weighted(0.1))
                .prop_map(|(len, skew, wrong_batch, scramble)| Op::Results { len, skew, wrong_batch, scramble }),
            2 => (prop_oneof![3 => Just(0i8), 1 => -2i8..3], prop::bool::weighted(0.1))
                .prop_map(|(skew, wrong_batch)| Op::Done { skew, wrong_batch }),
            1 => prop::bool::weighted(0.5).prop_map(|wrong_batch| Op::Refused { wrong_batch }),
            3 => Just(Op::Failure),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever fails and whatever the issuer answers: a batch once sealed is the only one
        /// sent, with the same header and ids, until it is done or quarantined; results are
        /// accepted only as the exact batch, in order; `Done` hands back exactly its ids.
        #[test]
        fn a_sealed_batch_is_sent_unchanged_until_answered(ops in prop::collection::vec(op(), 1..80)) {
            let mut u = Uploader::new("A1".into());
            // The reference: the batch the aircraft recorded (sealed durably), until answered.
            let mut open: Option<(BatchHeader, Vec<PaymentId>)> = None;
            // The reference's count of results accepted for the current sending.
            let mut accepted = 0usize;
            for op in ops {
                let before = u.state();
                match op {
                    Op::Seal { id, lo, len } => {
                        let h = u.seal(bid(id), "F".into(), &items(lo..lo + len));
                        if let Some((oh, oids)) = &open {
                            prop_assert_eq!(&h, oh, "a new header while a batch was open");
                            prop_assert_eq!(u.ids(), oids.as_slice());
                        }
                        accepted = 0;
                    }
                    Op::Sealed => {
                        u.on_sealed();
                        if before == UploadState::Sealing {
                            let now = (u.header().cloned().expect("held"), u.ids().to_vec());
                            if let Some(o) = &open {
                                prop_assert_eq!(o, &now, "sealed anew while a batch was open");
                            }
                            open = Some(now);
                        }
                    }
                    Op::Resume(same) => {
                        let (h, ids) = match (&open, same) {
                            (Some(o), true) => o.clone(),
                            _ => {
                                let mut other = Uploader::new("A1".into());
                                let h = other.seal(bid(7), "G".into(), &items(100..103));
                                (h, other.ids().to_vec())
                            }
                        };
                        u.resume(h.clone(), ids.clone());
                        accepted = 0;
                        if open.is_none() && !u.is_unfinished() {
                            prop_assert!(false, "resume left nothing to send");
                        }
                        if open.is_none() && u.state() == UploadState::Sending {
                            open = Some((h, ids));
                        }
                    }
                    Op::Sent => u.on_sent(),
                    Op::Results { len, skew, wrong_batch, scramble } => {
                        let ids = u.ids().to_vec();
                        let start = (accepted as i64 + i64::from(skew)).max(0) as usize;
                        let mut chunk: Vec<AuthResult> = ids.iter().skip(start).take(usize::from(len)).copied().map(result).collect();
                        if scramble && chunk.len() >= 2 {
                            chunk.swap(0, 1);
                        }
                        let batch = match (u.header(), wrong_batch) {
                            (Some(h), false) => h.id,
                            _ => bid(200),
                        };
                        let r = u.on_results(batch, start as u32, chunk.clone());
                        let fits = before == UploadState::Awaiting && !wrong_batch && start == accepted
                            && !(scramble && chunk.len() >= 2);
                        prop_assert_eq!(r.is_ok(), fits, "results accepted: {:?}, expected {}", r, fits);
                        if fits {
                            accepted += chunk.len();
                        } else {
                            accepted = 0;
                        }
                    }
                    Op::Done { skew, wrong_batch } => {
                        let n = u.ids().len() as i64 + i64::from(skew);
                        let batch = match (u.header(), wrong_batch) {
                            (Some(h), false) => h.id,
                            _ => bid(200),
                        };
                        let r = u.on_done(batch, n.max(0) as u32);
                        let fits = before == UploadState::Awaiting && !wrong_batch
                            && n.max(0) as usize == u.ids().len() && accepted == u.ids().len();
                        prop_assert_eq!(r.is_ok(), fits, "done accepted: {:?}", r.as_ref().map(Vec::len));
                        if let Ok(all) = r {
                            let (_, oids) = open.take().expect("done only for an open batch");
                            let got: Vec<PaymentId> = all.iter().map(|r| r.id).collect();
                            prop_assert_eq!(got, oids);
                            prop_assert_eq!(u.state(), UploadState::Done);
                        }
                        accepted = 0;
                    }
                    Op::Refused { wrong_batch } => {
                        let batch = match (u.header(), wrong_batch) {
                            (Some(h), false) => h.id,
                            _ => bid(200),
                        };
                        let r = u.on_refused(batch, "refused".into());
                        let fits = matches!(before, UploadState::Sending | UploadState::Awaiting) && !wrong_batch;
                        prop_assert_eq!(r.is_ok(), fits);
                        if let Ok(h) = r {
                            let (oh, _) = open.take().expect("refused only for an open batch");
                            prop_assert_eq!(h, oh);
                        }
                        accepted = 0;
                    }
                    Op::Failure => {
                        u.on_failure();
                        accepted = 0;
                    }
                }
                // Whenever it may send, it sends the open batch, unchanged; and it holds on to it
                // until it is answered.
                if matches!(u.state(), UploadState::Sending | UploadState::Awaiting) {
                    prop_assert!(open.is_some(), "sending a batch never recorded");
                }
                if let Some((oh, oids)) = &open {
                    prop_assert!(u.is_unfinished(), "an open batch dropped in state {}", u.state());
                    prop_assert_eq!(u.header(), Some(oh));
                    prop_assert_eq!(u.ids(), oids.as_slice());
                }
                if u.state() == UploadState::Retry || (u.state() != before && !matches!(u.state(), UploadState::Awaiting)) {
                    prop_assert_eq!(u.results_received(), 0);
                }
            }
        }
    }
}
