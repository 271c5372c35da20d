//! The deterministic simulator: `inflight-sim --model --seeds A-B`.
//!
//! A whole flight — N terminals, the aircraft, the issuer, their sale apps and the links between
//! them — runs over the real decision machines of `inflight-core` (`terminal::Terminal`,
//! `aggregator::Aggregator`, `uploader::Uploader`, `issuer::IssuerBatch` and `issuer::decide`),
//! with stores that crash and lose what was not durable ([`disk`]), connections that break,
//! delay, and deliver stale frames late ([`net`]), partitions and ground black-outs, and a
//! simulated clock. No thread, socket, file or wall clock: a seed fixes everything, so the same
//! seed gives the same trace, bit for bit, and a failure found once is replayed at will
//! (`--seeds S --trace`).
//!
//! The glue here plays the drivers' part (what `crates/slave`, `crates/master` and
//! `crates/issuer` do with each decision: which write, which ack once durable); every decision
//! is the machines'. After every event the checker tests the invariants of ARCHITECTURE.md;
//! after a chaos phase everything heals and, at the end, liveness: every payment a sale app was
//! told `accepted` is decided once, in money, and its result is back on its terminal.
//!
//! Anchors: TigerBeetle's VOPR and FoundationDB's simulation (seeded worlds, crash and network
//! faults, replay from a seed), quinn-proto's sans-I/O `Connection` (inputs with the time in,
//! actions out).

mod disk;
mod net;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use inflight_core::aggregator::{
    Aggregator, CancelDecision, ContentDigest, IndexEntry, Limits, Phase, Reversal, SubmitPlan, SubmitWrite,
};
use inflight_core::authorize::{Account, CaptureBounds, CardFile, Rules};
use inflight_core::capture::{CaptureRequest, TerminalCaps};
use inflight_core::chip::{AtcWindow, ChipCard, ChipTxn, IssuerMasterKey};
use inflight_core::deadline::Deadline;
use inflight_core::issuer::{self, BatchStart, IssuerBatch, ItemDecision, ReversalDecision};
use inflight_core::manifest;
use inflight_core::outbox::Transmit;
use inflight_core::terminal::{
    self as term, Action, After, Answer, Listeners, ReplyTo, SlaveState, VoidOutcome, Write, WriteFailure,
};
use inflight_core::uploader::{NextBatch, Uploader};
use inflight_wire::{
    AircraftMsg, AuthOutcome, AuthResult, BatchHeader, BatchId, BatchItem, BinList, BinPrefix, BinRule, CancelOutcome,
    CardKind, Currency, DeclineReason, EmvData, Expiry, IssuerMsg, MasterMsg, Money, Pan, Payment, PaymentId,
    RefusalReason, ReversalOutcome, ReversalResult, TerminalId, TerminalMsg, Verdict, BATCH_CHUNK_MAX,
    BATCH_PAYMENTS_MAX,
};

use self::disk::{Apply, Disk};
use self::net::{Dir, Link};
use crate::rng::Rng;

/// The aircraft's name in every batch.
const AIRCRAFT: &str = "F-SIM";
/// Simulated Unix time at the start of every run (2026-11-28).
const UNIX_START: u64 = 1_795_824_000_000;
/// Faults stop here; then everything heals.
const CHAOS_END_MS: u64 = 45_000;
/// The run ends here: liveness is judged.
const END_MS: u64 = 120_000;
/// Sale apps stop retrying here, so that the last answers can come back.
const SALES_RETRY_UNTIL_MS: u64 = END_MS - 15_000;
/// How often the master pushes undelivered results again (`RESULT_RESEND_INTERVAL`).
const RESULT_RESEND_MS: u64 = 2_000;
/// How often an idle upload session looks for payments (`IDLE_POLL`).
const UPLOAD_IDLE_MS: u64 = 250;
/// Pause after a failed upload session (`ground.upload_retry`).
const UPLOAD_RETRY_MS: u64 = 1_000;
/// How old a payment may be at the issuer.
const CAPTURE_AGE_MAX_MS: u64 = 30 * 86_400_000;
/// The deferred-authorization window of the model's flights (24 h in service): short enough
/// that ground black-outs and crashes make some payments late, so the late marks are checked.
const DEADLINE_WINDOW_MS: u64 = 8_000;
/// The crew's warning lead time before that deadline.
const DEADLINE_LEAD_MS: u64 = 3_000;

fn deadline() -> Deadline {
    Deadline::new(DEADLINE_WINDOW_MS, DEADLINE_LEAD_MS).expect("the lead fits in the window")
}

/// A defect put back on purpose, to show the simulator finds it (tests only).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mutation {
    /// The terminal tells its sale app `accepted` as soon as the answered mark is written,
    /// before it is durable.
    AcceptBeforeDurable,
    /// The issuer's store forgets the "already decided" guard: a payment decided before is
    /// decided (and charged) again.
    NoDecidedGuard,
    /// The master acks a payment before its write is durable.
    AckBeforeDurable,
    /// The master, after a failed upload, seals the open batch again with what is pending now,
    /// under the same batch id: a batch re-sent with different content.
    ResealOnRetry,
    /// The master hands pending payments to the uploader without promising them to the batch:
    /// a sale app's void that comes while the batch is being sealed voids a sealed payment.
    NoPromise,
    /// The issuer releases a reversed amount every time the reversal comes.
    ReleaseTwice,
    /// The master judges an item late against the time it sends it, not the batch's seal: a
    /// batch re-sent after a failure can carry another mark than the copy the issuer decided.
    LateAtSend,
    /// A terminal that restarts does not restore the hot-card list it had stored.
    ForgetHotListOnRestart,
    /// The issuer's store does not keep the chip transaction counters it has seen: a replayed
    /// cryptogram is charged again.
    ForgetAtc,
    /// The issuer decides chip items as if they were keyed: no cryptogram checked, no counter
    /// kept. An altered payment is charged.
    IgnoreChip,
    /// The issuer forgets which cards are chip cards: a chip card keyed (its chip data stripped
    /// by the terminal) is charged for any amount.
    KeyedChipCards,
}

macro_rules! mutant {
    ($w:expr, $m:ident) => {{
        #[cfg(test)]
        {
            $w.mutation == Some(Mutation::$m)
        }
        #[cfg(not(test))]
        {
            false
        }
    }};
}

/// What one seed did.
#[derive(Debug, Clone, Default)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// Every invariant broken, in the order found (the first is usually the cause).
    pub violations: Vec<String>,
    /// The full event trace (only when asked for).
    pub trace: Vec<String>,
    /// Counts.
    pub stats: Stats,
}

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events handled.
    pub events: u64,
    /// Terminals.
    pub terminals: u64,
    /// Sales attempted.
    pub sales: u64,
    /// Sales told `accepted`.
    pub accepted: u64,
    /// Sales told `rejected`.
    pub rejected: u64,
    /// Payments decided by the issuer.
    pub decided: u64,
    /// Of which approved.
    pub approved: u64,
    /// Crashes of any node.
    pub crashes: u64,
    /// Connections broken.
    pub breaks: u64,
    /// Frames of a dead connection handled anyway.
    pub late_frames: u64,
    /// Payments charged whose sale app gave up before hearing `accepted` (the documented window:
    /// their answered mark was durable).
    pub charged_unheard: u64,
    /// Voids answered `voided` (never carried).
    pub voided: u64,
    /// Voids answered `reversal_pending`.
    pub reversal_pending: u64,
    /// Reversals applied by the issuer (an approved amount released).
    pub reversed: u64,
    /// Payments the issuer decided from an item marked `late` (sealed after its deadline).
    pub late: u64,
    /// Chip payments a hostile terminal altered, decided by the issuer (all `cryptogram_invalid`).
    pub altered: u64,
    /// Payments declined `atc_replayed` (a hostile terminal's copy of a card's chip data).
    pub replays_declined: u64,
    /// Chip cards keyed (their chip data stripped by a hostile terminal), decided by the issuer.
    pub stripped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Term(usize),
    Master,
    Issuer,
}

#[derive(Debug, Clone)]
enum Ev {
    SaleAttempt(usize),
    SaleDeadline(usize, u32),
    /// A sale app voids its sale (attempt number).
    SaleVoid(usize),
    VoidDeadline(usize, u32),
    TermTimer(usize),
    MasterResend,
    Flush(Node),
    Crash(Node),
    Restart(Node),
    CabinConnect(usize),
    CabinBreak(usize),
    CabinBlock(usize, u64),
    ToMaster {
        t: usize,
        epoch: u64,
        msg: Box<TerminalMsg>,
    },
    ToTerminal {
        t: usize,
        epoch: u64,
        msg: Box<MasterMsg>,
    },
    GroundUp,
    GroundDown,
    GroundConnect,
    UploadStep(u64),
    /// The upload session has read the items of a new batch: seal it.
    Seal {
        session: u64,
        ids: Vec<PaymentId>,
    },
    ToIssuer {
        epoch: u64,
        msg: Box<AircraftMsg>,
    },
    FromIssuer {
        epoch: u64,
        msg: Box<IssuerMsg>,
    },
    Heal,
}

// ---------------------------------------------------------------------------------------------
// Terminal side

#[derive(Debug, Clone)]
struct TermRec {
    payment: Payment,
    state: SlaveState,
    outcome: Option<AuthOutcome>,
    card: bool,
}

/// The terminal's store, as `SlaveStore` keeps it.
#[derive(Debug, Clone, Default)]
struct TermDisk {
    payments: BTreeMap<PaymentId, TermRec>,
    requests: BTreeMap<String, PaymentId>,
}

impl Apply<Write> for TermDisk {
    fn apply(&mut self, op: &Write) {
        match op {
            Write::Captured { payment, request_id } => {
                self.payments.entry(payment.id).or_insert(TermRec {
                    payment: payment.clone(),
                    state: SlaveState::Captured { answered: false },
                    outcome: None,
                    card: true,
                });
                if let Some(r) = request_id {
                    self.requests.insert(r.clone(), payment.id);
                }
            }
            Write::State { id, state } | Write::Settle { id, state } => {
                if let Some(rec) = self.payments.get_mut(id) {
                    if term::moves_forward(rec.state, *state) {
                        rec.state = *state;
                        if matches!(
                            state,
                            SlaveState::Refused(_) | SlaveState::Voided { .. } | SlaveState::Cancelled { .. }
                        ) {
                            rec.card = false;
                        }
                    }
                }
            }
            Write::Result { id, outcome } => {
                if let Some(rec) = self.payments.get_mut(id) {
                    if rec.outcome.is_none() {
                        rec.outcome = Some(outcome.clone());
                        rec.card = false;
                        if rec.state == (SlaveState::Captured { answered: true }) {
                            rec.state = SlaveState::Forwarded;
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
struct Term {
    id: TerminalId,
    machine: term::Terminal,
    disk: Disk<TermDisk, Write, After>,
    up: bool,
    timer: Option<u64>,
    flushing: bool,
    /// Payments whose answered mark reached the disk (the checker's record).
    marked: BTreeSet<PaymentId>,
    /// A flush failed: the store is poisoned, every write is refused until a restart.
    poisoned: bool,
}

// ---------------------------------------------------------------------------------------------
// Sale apps

#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    Nothing,
    Accepted(PaymentId),
    Rejected(Option<PaymentId>, &'static str),
}

#[derive(Debug, Clone)]
struct Sale {
    term: usize,
    card: usize,
    amount: u64,
    request_id: Option<String>,
    attempt: u32,
    deadline: u64,
    waiting: bool,
    heard: Heard,
    gave_up: bool,
    /// When the sale app voids the sale, if it does.
    void_at: Option<u64>,
    void_attempt: u32,
    void_waiting: bool,
    /// The first answer to its void.
    void_heard: Option<VoidOutcome>,
}

/// Replies to voids are told apart from replies to captures by this bit.
const VOID_REPLY: u64 = 1 << 40;

/// Which sale apps still listen: the current attempt, before its deadline.
struct Who<'a> {
    sales: &'a [Sale],
    now: u64,
}

impl Listeners for Who<'_> {
    fn listening(&self, to: ReplyTo) -> bool {
        let (k, a) = (((to & !VOID_REPLY) >> 16) as usize, (to & 0xffff) as u32);
        if to & VOID_REPLY != 0 {
            return self.sales.get(k).is_some_and(|s| s.void_waiting && s.void_attempt == a);
        }
        self.sales.get(k).is_some_and(|s| s.waiting && s.attempt == a && self.now < s.deadline)
    }
}

// ---------------------------------------------------------------------------------------------
// Master side

/// The master's store, as `MasterStore` keeps it.
#[derive(Debug, Clone, Default)]
struct MasterDisk {
    entries: BTreeMap<PaymentId, IndexEntry>,
    payments: BTreeMap<PaymentId, Payment>,
    open: Option<(BatchHeader, Vec<PaymentId>)>,
    outcomes: BTreeMap<PaymentId, AuthOutcome>,
    reversals: BTreeMap<PaymentId, Option<ReversalOutcome>>,
}

#[derive(Debug, Clone)]
enum MOp {
    Put { payment: Box<Payment>, entry: Box<IndexEntry> },
    CarryRefused(PaymentId),
    Confirm(PaymentId),
    Void(PaymentId),
    Cancel(PaymentId),
    RequestReversal(PaymentId),
    Reversed(Vec<ReversalResult>),
    Seal(BatchHeader, Vec<PaymentId>),
    Results(Vec<AuthResult>),
    Quarantine(BatchId),
    Delivered(PaymentId),
    Barrier,
}

impl MasterDisk {
    fn set_phase(&mut self, id: &PaymentId, phase: Phase) {
        if let Some(e) = self.entries.get_mut(id) {
            if e.verdict == Verdict::Stored && phase > e.phase {
                e.phase = phase;
            }
        }
    }
}

impl Apply<MOp> for MasterDisk {
    fn apply(&mut self, op: &MOp) {
        match op {
            MOp::Put { payment, entry } => {
                if let std::collections::btree_map::Entry::Vacant(v) = self.entries.entry(payment.id) {
                    v.insert((**entry).clone());
                    self.payments.insert(payment.id, (**payment).clone());
                }
            }
            MOp::CarryRefused(id) => {
                if let Some(e) = self.entries.get_mut(id) {
                    e.verdict = Verdict::Stored;
                    e.phase = Phase::Pending;
                    e.answered = true;
                }
            }
            MOp::Confirm(id) => {
                if let Some(e) = self.entries.get_mut(id) {
                    e.answered = true;
                }
            }
            MOp::Void(id) => {
                if let Some(e) = self.entries.get_mut(id) {
                    e.verdict = Verdict::Refused(RefusalReason::Voided);
                }
                self.payments.remove(id);
            }
            // As `MasterStore::cancel`: only a stored payment without an outcome.
            MOp::Cancel(id) => {
                let undecided = !self.outcomes.contains_key(id);
                if let Some(e) = self.entries.get_mut(id) {
                    if e.verdict == Verdict::Stored && undecided {
                        e.verdict = Verdict::Refused(RefusalReason::Voided);
                        self.payments.remove(id);
                    }
                }
            }
            MOp::RequestReversal(id) => {
                self.reversals.entry(*id).or_insert(None);
            }
            MOp::Reversed(results) => {
                for r in results.iter().filter(|r| r.outcome != ReversalOutcome::Unknown) {
                    self.reversals.insert(r.id, Some(r.outcome));
                }
            }
            MOp::Seal(header, ids) => {
                for id in ids {
                    self.set_phase(id, Phase::InBatch);
                    // As `MasterStore::index` derives it from the batch item lists: the first
                    // seal of the payment.
                    if let Some(e) = self.entries.get_mut(id) {
                        e.sealed_unix_ms.get_or_insert(header.id.sealed_unix_ms());
                    }
                }
                self.open = Some((header.clone(), ids.clone()));
            }
            MOp::Results(results) => {
                for r in results {
                    self.outcomes.insert(r.id, r.outcome.clone());
                    self.set_phase(&r.id, Phase::Decided);
                }
                self.open = None;
            }
            MOp::Quarantine(batch) => {
                if let Some((h, ids)) = self.open.take() {
                    if h.id == *batch {
                        for id in &ids {
                            self.set_phase(id, Phase::Quarantined);
                        }
                    } else {
                        self.open = Some((h, ids));
                    }
                }
            }
            MOp::Delivered(id) => {
                self.set_phase(id, Phase::Delivered);
                self.payments.remove(id);
            }
            MOp::Barrier => {}
        }
    }
}

#[derive(Debug, Clone)]
enum MCont {
    Ack { t: usize, epoch: u64, msg: MasterMsg },
    Sealed { session: u64, header: BatchHeader, ids: Vec<PaymentId> },
    ResultsStored { session: u64, batch: BatchId, results: Vec<AuthResult> },
    Quarantined { session: u64, batch: BatchId },
    ReversalsStored { session: u64, results: Vec<ReversalResult> },
}

#[derive(Debug)]
struct Master {
    agg: Aggregator,
    disk: Disk<MasterDisk, MOp, MCont>,
    uploader: Uploader,
    up: bool,
    flushing: bool,
    /// Terminals connected, with their connection.
    conns: BTreeMap<usize, u64>,
    /// The upload session's ground connection, when one is up.
    session: Option<u64>,
    /// Reversals sent on this session and not answered yet.
    reversing: bool,
    /// A new batch's items are being read, its seal not yet asked for.
    choosing: bool,
    /// Reversals sent on this session: each asked once per session (the daemon skips those the
    /// issuer did not know; the others are no longer due once answered).
    unknown_to_issuer: BTreeSet<PaymentId>,
}

// ---------------------------------------------------------------------------------------------
// Issuer side

#[derive(Debug, Clone)]
struct Decided {
    content: [u8; 32],
    outcome: AuthOutcome,
    /// The item decided was marked late (as `IssuerStore`'s `late` tree records it).
    late: bool,
    card: usize,
    amount: u64,
}

/// The issuer's store, as `IssuerStore` keeps it.
#[derive(Debug, Clone, Default)]
struct IssuerDisk {
    accounts: BTreeMap<usize, Account>,
    opening: BTreeMap<usize, u64>,
    decisions: BTreeMap<PaymentId, Decided>,
    batches: BTreeMap<BatchId, (BatchHeader, bool, BTreeMap<u32, PaymentId>)>,
    reversals: BTreeMap<PaymentId, ReversalOutcome>,
    /// Per card, the chip transaction counters seen (the store's `atc` tree).
    atc: BTreeMap<usize, AtcWindow>,
}

#[derive(Debug, Clone)]
enum IOp {
    Begin(BatchHeader),
    Decide {
        batch: BatchId,
        seq: u32,
        id: PaymentId,
        decided: Option<Decided>,
        account: Option<(usize, Account)>,
        atc: Option<(usize, AtcWindow)>,
    },
    Finish(BatchId),
    Reverse {
        id: PaymentId,
        outcome: ReversalOutcome,
        account: Option<(usize, Account)>,
    },
    Barrier,
}

impl Apply<IOp> for IssuerDisk {
    fn apply(&mut self, op: &IOp) {
        match op {
            IOp::Begin(h) => {
                self.batches.entry(h.id).or_insert_with(|| (h.clone(), false, BTreeMap::new()));
            }
            IOp::Decide { batch, seq, id, decided, account, atc } => {
                if let Some((_, _, positions)) = self.batches.get_mut(batch) {
                    positions.insert(*seq, *id);
                }
                if let Some((card, w)) = atc {
                    self.atc.insert(*card, *w);
                }
                if let Some(d) = decided {
                    self.decisions.insert(*id, d.clone());
                }
                if let Some((card, a)) = account {
                    self.accounts.insert(*card, a.clone());
                }
            }
            IOp::Finish(batch) => {
                if let Some((_, done, _)) = self.batches.get_mut(batch) {
                    *done = true;
                }
            }
            IOp::Reverse { id, outcome, account } => {
                self.reversals.insert(*id, *outcome);
                if let Some((card, a)) = account {
                    self.accounts.insert(*card, a.clone());
                }
            }
            IOp::Barrier => {}
        }
    }
}

#[derive(Debug, Clone)]
enum ICont {
    Answer { epoch: u64, batch: BatchId },
    Reversed { epoch: u64, results: Vec<ReversalResult> },
}

#[derive(Debug)]
struct Issuer {
    disk: Disk<IssuerDisk, IOp, ICont>,
    up: bool,
    flushing: bool,
    /// The batch being received on the current connection.
    receiving: Option<(u64, IssuerBatch)>,
}

// ---------------------------------------------------------------------------------------------
// The world

/// The cards of every run: number, account (if any).
struct Card {
    pan: &'static str,
    account: Option<(u64, bool)>,
}

const CARDS: &[Card] = &[
    Card { pan: "4242424242424242", account: Some((1_000_000, true)) },
    Card { pan: "4111111111111111", account: Some((1_000_000, true)) },
    Card { pan: "4012888888881881", account: Some((6_000, true)) },
    Card { pan: "4000056655665556", account: Some((500_000, false)) },
    Card { pan: "5555555555554444", account: Some((1_000_000, true)) },
    Card { pan: "4000000000000002", account: None },
];

fn eur() -> Currency {
    Currency::parse("EUR").expect("a known currency")
}

fn expiry() -> Expiry {
    Expiry::new(2030, 12).expect("a valid expiry")
}

fn programme() -> BinList {
    let rule = |p: &str| BinRule {
        prefix: BinPrefix::parse(p).expect("a valid prefix"),
        kind: CardKind::Credit,
        txn_limit_minor: 50_000,
        // Low enough that busy cards meet the aircraft-wide limit now and then.
        card_flight_limit_minor: 20_000,
        currencies: vec![eur()],
        cvm_required: false,
        entry_modes: inflight_wire::EntryMode::ALL.to_vec(),
    };
    BinList {
        version: 1,
        issuer: "sim-issuer".into(),
        valid_from_unix_ms: 0,
        valid_until_unix_ms: u64::MAX,
        rules: ["424242", "411111", "401288", "400005", "555555", "400000"].into_iter().map(rule).collect(),
    }
}

/// The issuer master key of the model's chip cards.
fn chip_key() -> IssuerMasterKey {
    IssuerMasterKey::from_bytes([0x1c; 16])
}

/// What a sale app's card reader and its terminal do with the chip: most sales are genuine; a
/// hostile terminal raises the amount after the card signed, or sends a card's last chip data
/// again as a new sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChipUse {
    Genuine,
    Tampered,
    Replayed,
    Stripped,
}

/// The card on the issuer's hot-card list (the blocked account's card).
const HOT_CARD: &str = "4000056655665556";

/// Whether terminal `t` holds the hot-card list: the odd ones, so that the even ones still
/// take the card and the issuer's `account_blocked` decline stays exercised.
fn holds_hot_list(t: usize) -> bool {
    t % 2 == 1
}

/// The issuer's hot-card list naming [`HOT_CARD`], signed and verified as a terminal does. The
/// signing key is random, but nothing of the signature reaches the trace.
fn hot_list() -> inflight_core::hotlist::HotSet {
    let signer = inflight_store::BinListSigner::from_pkcs8(
        &inflight_store::BinListSigner::generate().expect("the system random source works"),
    )
    .expect("a key just generated");
    let key = [0x5a; 32];
    let mut entries = vec![inflight_core::hotlist::entry_for(&key, &Pan::parse(HOT_CARD).expect("a valid card"))];
    let head = inflight_core::hotlist::head_for(1, "sim-issuer", (0, u64::MAX), key, &mut entries);
    let list = inflight_wire::HotList { head: signer.sign_hot_head(&head), entries };
    inflight_core::hotlist::HotSet::verify(&signer.public_key(), &list).expect("a list just signed verifies")
}

/// A stand-in for the HMAC the stores compute under their card key: the model keeps nothing on
/// disk, so an FNV over the fields is enough to tell contents apart.
fn fnv(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for b in *p {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(h.rotate_left(i as u32 * 13) ^ i as u64).to_be_bytes());
    }
    out
}

fn payment_digest(p: &Payment) -> ContentDigest {
    inflight_core::aggregator::index_key(&fnv(&[
        &p.id.to_bytes(),
        p.terminal.as_str().as_bytes(),
        p.pan.expose_digits().as_bytes(),
        &p.amount.amount_minor().to_be_bytes(),
        &p.captured_unix_ms.to_be_bytes(),
        p.seat.as_bytes(),
    ]))
}

fn item_content(i: &BatchItem) -> [u8; 32] {
    fnv(&[
        &i.id.to_bytes(),
        i.pan.expose_digits().as_bytes(),
        &i.amount.amount_minor().to_be_bytes(),
        &i.captured_unix_ms.to_be_bytes(),
    ])
}

fn card_index(pan: &Pan) -> usize {
    CARDS.iter().position(|c| c.pan == pan.expose_digits()).unwrap_or(usize::MAX)
}

struct World {
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    terms: Vec<Term>,
    sales: Vec<Sale>,
    master: Master,
    issuer: Issuer,
    cabin: Vec<Link>,
    ground: Link,
    ground_up: bool,
    healed: bool,
    /// Batches whose seal reached the master's disk (the checker's record).
    sealed: BTreeSet<BatchId>,
    /// Payments whose sale app was told its void left them `voided` (never to be carried).
    voided_ids: BTreeSet<PaymentId>,
    /// Chance, at each write and each frame sent during the chaos phase, of a crash or a broken
    /// connection right there (FoundationDB's BUGGIFY): the windows between a write and its
    /// flush, or a frame and its ack, are milliseconds wide and random faults alone rarely hit
    /// them.
    buggify: f64,
    programme: BinList,
    /// The hot-card list the odd terminals hold ([`holds_hot_list`]), restored at their restarts.
    hot: inflight_core::hotlist::HotSet,
    /// The cards' chips, their transaction counters, and the chip data each card made last
    /// (what a replaying terminal copies).
    chips: Vec<ChipCard>,
    atc: Vec<u16>,
    last_chip: Vec<Option<(EmvData, u64)>>,
    /// Which sales a hostile terminal alters or replays (drawn from a stream of its own, so the
    /// rest of each seed's world is what it was before chip cards).
    hostile: Rng,
    /// Cryptograms of captures altered after the card signed, with the amount they were raised
    /// to: never to be charged.
    tampered: BTreeMap<[u8; 8], u64>,
    /// (card, counter) pairs a terminal replayed: the only ones that may be declined `atc_replayed`.
    replayed: BTreeSet<(usize, u16)>,
    /// (card, counter) → the payment charged for it or declined for another reason than the
    /// chip's: one payment per cryptogram.
    counted: BTreeMap<(usize, u16), PaymentId>,
    settings: term::Settings,
    limits: Limits,
    stats: Stats,
    violations: Vec<String>,
    tracing: bool,
    trace: Vec<String>,
    #[cfg(test)]
    mutation: Option<Mutation>,
}

macro_rules! trace {
    ($w:expr, $($arg:tt)*) => {
        if $w.tracing {
            let line = format!($($arg)*);
            $w.trace.push(format!("{:>7} {}", $w.now, line));
        }
    };
}

/// Runs seed `seed`; with `trace`, keeps every event.
pub fn run_seed(seed: u64, trace: bool) -> SeedRun {
    World::new(seed, trace).run()
}

/// Runs seed `seed` with `mutation` put back (the simulator's own tests).
#[cfg(test)]
pub(crate) fn run_mutated(seed: u64, mutation: Mutation) -> SeedRun {
    let mut w = World::new(seed, false);
    w.mutation = Some(mutation);
    w.run()
}

/// Runs seeds `from..=to` on `threads` threads; results in seed order.
pub fn run_seeds(from: u64, to: u64, threads: usize) -> Vec<SeedRun> {
    let next = std::sync::atomic::AtomicU64::new(from);
    let out = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed > to {
                    return;
                }
                let run = run_seed(seed, false);
                out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(run);
            });
        }
    });
    let mut runs = out.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    runs.sort_by_key(|r| r.seed);
    runs
}

impl World {
    fn new(seed: u64, tracing: bool) -> Self {
        let mut rng = Rng::new(seed);
        let n = 2 + rng.below(5) as usize;
        let settings = term::Settings {
            window: 1 + rng.below(8) as usize,
            ack_timeout_ms: 1_000 + rng.below(2_000),
            verdict_wait_ms: [0, 100, 1_000][rng.below(3) as usize],
            claim_grace_ms: 2_000 + rng.below(8_000),
            caps: TerminalCaps {
                stored_payments_max: 40,
                stored_amount_minor_max: 200_000,
                txn_amount_minor_max: 50_000,
            },
            site: Default::default(),
        };
        // Small shares now and then, so that full terminals and a full aircraft happen.
        let limits = if rng.chance(0.2) { Limits::new(6, 12, n) } else { Limits::new(1_000, 10_000, n) };
        let programme = programme();
        let hot = hot_list();
        let chips: Vec<ChipCard> =
            CARDS.iter().map(|c| ChipCard::new(&chip_key(), &Pan::parse(c.pan).expect("a valid card"), 1)).collect();
        let mut issuer_disk = IssuerDisk::default();
        for (k, c) in CARDS.iter().enumerate() {
            if let Some((available, open)) = c.account {
                issuer_disk.accounts.insert(
                    k,
                    Account {
                        kind: CardKind::Credit,
                        expiry: expiry(),
                        available_minor: available,
                        currency: eur(),
                        open,
                        chip: true,
                    },
                );
                issuer_disk.opening.insert(k, available);
            }
        }
        let terms = (0..n)
            .map(|i| {
                let id = TerminalId::parse(&format!("seat-{i}")).expect("a valid terminal id");
                let mut machine = term::Terminal::new(id.clone(), settings);
                machine.install_bin_list(Some(programme.clone()));
                if holds_hot_list(i) {
                    machine.install_hot_list(Some(hot.clone()));
                }
                Term {
                    id,
                    machine,
                    disk: Disk::new(TermDisk::default()),
                    up: true,
                    timer: None,
                    flushing: false,
                    marked: BTreeSet::new(),
                    poisoned: false,
                }
            })
            .collect();
        let mut w = World {
            seed,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            terms,
            sales: Vec::new(),
            master: Master {
                agg: Aggregator::with_limits(limits),
                disk: Disk::new(MasterDisk::default()),
                uploader: Uploader::new(AIRCRAFT.into()),
                up: true,
                flushing: false,
                conns: BTreeMap::new(),
                session: None,
                reversing: false,
                choosing: false,
                unknown_to_issuer: BTreeSet::new(),
            },
            issuer: Issuer { disk: Disk::new(issuer_disk), up: true, flushing: false, receiving: None },
            cabin: (0..n).map(|_| Link::new((1, 20), 0.3)).collect(),
            ground: Link::new((10, 200), 0.0),
            ground_up: false,
            healed: false,
            buggify: 0.0,
            sealed: BTreeSet::new(),
            voided_ids: BTreeSet::new(),
            programme,
            hot,
            atc: vec![0; chips.len()],
            last_chip: vec![None; chips.len()],
            chips,
            hostile: Rng::new(seed).fork(0xc41b),
            tampered: BTreeMap::new(),
            replayed: BTreeSet::new(),
            counted: BTreeMap::new(),
            settings,
            limits,
            stats: Stats { terminals: n as u64, ..Stats::default() },
            violations: Vec::new(),
            tracing,
            trace: Vec::new(),
            #[cfg(test)]
            mutation: None,
            rng,
        };
        w.schedule_world();
        w
    }

    fn at(&mut self, time: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((time.max(self.now), self.seq), ev);
    }

    fn after(&mut self, delay: u64, ev: Ev) {
        self.at(self.now + delay, ev);
    }

    /// Sales, faults and the ground link's windows, all drawn from the seed up front.
    fn schedule_world(&mut self) {
        let n = self.terms.len();
        let profile = self.rng.below(3); // 0: calm, 1: flaky, 2: brutal
        self.buggify = [0.0, 0.005, 0.02][profile as usize];
        for t in 0..n {
            let when = 1 + self.rng.below(50);
            self.at(when, Ev::CabinConnect(t));
            self.cabin[t].connecting = true;
            let sales = 3 + self.rng.below(8) as usize;
            for _ in 0..sales {
                let card = self.rng.below(CARDS.len() as u64) as usize;
                let amount = 100 + self.rng.below(9_000);
                let request_id = self.rng.chance(0.85).then(|| format!("r-{}-{}", t, self.sales.len()));
                self.sales.push(Sale {
                    term: t,
                    card,
                    amount,
                    request_id,
                    attempt: 0,
                    deadline: 0,
                    waiting: false,
                    heard: Heard::Nothing,
                    gave_up: false,
                    void_at: None,
                    void_attempt: 0,
                    void_waiting: false,
                    void_heard: None,
                });
                let k = self.sales.len() - 1;
                let when = 100 + self.rng.below(25_000);
                self.at(when, Ev::SaleAttempt(k));
                // A quarter of the sales are voided later: some soon (before any batch), some
                // after the ground link took them (reversals), some across faults.
                if self.rng.chance(0.25) {
                    let soon = self.rng.chance(0.5);
                    let void_at = when + 50 + self.rng.below(if soon { 3_000 } else { 40_000 });
                    self.sales[k].void_at = Some(void_at);
                    self.at(void_at, Ev::SaleVoid(k));
                }
            }
            let (crashes, breaks, blocks) = match profile {
                0 => (0, self.rng.below(2), 0),
                1 => (self.rng.below(2), self.rng.below(4), self.rng.below(2)),
                _ => (self.rng.below(4), self.rng.below(8), self.rng.below(3)),
            };
            for _ in 0..crashes {
                let when = self.rng.below(CHAOS_END_MS);
                self.at(when, Ev::Crash(Node::Term(t)));
            }
            for _ in 0..breaks {
                let when = self.rng.below(CHAOS_END_MS);
                self.at(when, Ev::CabinBreak(t));
            }
            for _ in 0..blocks {
                let when = self.rng.below(CHAOS_END_MS);
                let len = 500 + self.rng.below(10_000);
                self.at(when, Ev::CabinBlock(t, when + len));
            }
        }
        for node in [Node::Master, Node::Issuer] {
            let crashes = match profile {
                0 => 0,
                1 => self.rng.below(2),
                _ => 1 + self.rng.below(3),
            };
            for _ in 0..crashes {
                let when = self.rng.below(CHAOS_END_MS);
                self.at(when, Ev::Crash(node));
            }
        }
        // The ground: windows of contact and black-outs, some longer than every timer.
        let mut t = 2_000 + self.rng.below(15_000);
        while t < CHAOS_END_MS {
            self.at(t, Ev::GroundUp);
            t += 100 + self.rng.below(if profile == 0 { 20_000 } else { 4_000 });
            self.at(t, Ev::GroundDown);
            let long = self.rng.chance(0.2);
            t += 100 + self.rng.below(if long { 25_000 } else { 5_000 });
        }
        self.at(CHAOS_END_MS, Ev::Heal);
        self.at(RESULT_RESEND_MS, Ev::MasterResend);
    }

    fn run(mut self) -> SeedRun {
        while let Some(((time, _), ev)) = self.queue.pop_first() {
            if time > END_MS {
                break;
            }
            self.now = time;
            self.stats.events += 1;
            self.handle(ev);
            self.check_step();
            if self.violations.len() > 20 {
                break;
            }
        }
        self.now = END_MS;
        self.check_end();
        SeedRun { seed: self.seed, violations: self.violations, trace: self.trace, stats: self.stats }
    }

    fn violation(&mut self, what: String) {
        trace!(self, "VIOLATION {what}");
        self.violations.push(what);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::SaleAttempt(k) => self.sale_attempt(k),
            Ev::SaleDeadline(k, a) => {
                let s = &mut self.sales[k];
                if s.waiting && s.attempt == a {
                    s.waiting = false;
                    let retry = s.request_id.is_some() && self.now < SALES_RETRY_UNTIL_MS;
                    if !retry {
                        s.gave_up = true;
                    }
                    trace!(self, "sale {k} attempt {a} timed out{}", if retry { "; will retry" } else { "; gives up" });
                    if retry {
                        let d = 200 + self.rng.below(2_000);
                        self.after(d, Ev::SaleAttempt(k));
                    }
                }
            }
            Ev::SaleVoid(k) => self.sale_void(k),
            Ev::VoidDeadline(k, a) => {
                let s = &mut self.sales[k];
                if s.void_waiting && s.void_attempt == a {
                    s.void_waiting = false;
                    trace!(self, "sale {k} void attempt {a} timed out");
                    if self.now < SALES_RETRY_UNTIL_MS {
                        let d = 200 + self.rng.below(2_000);
                        self.after(d, Ev::SaleVoid(k));
                    }
                }
            }
            Ev::TermTimer(t) => {
                self.terms[t].timer = None;
                if self.terms[t].up {
                    let who = Who { sales: &self.sales, now: self.now };
                    self.terms[t].machine.handle_timeout(self.now, &who);
                    self.term_act(t);
                }
            }
            Ev::MasterResend => {
                if self.master.up {
                    let conns: Vec<(usize, u64)> = self.master.conns.iter().map(|(t, e)| (*t, *e)).collect();
                    for (t, epoch) in conns {
                        self.push_results(t, epoch);
                    }
                }
                self.after(RESULT_RESEND_MS, Ev::MasterResend);
            }
            Ev::Flush(node) => self.flush(node),
            Ev::Crash(node) => self.crash(node),
            Ev::Restart(node) => self.restart(node),
            Ev::CabinConnect(t) => self.cabin_connect(t),
            Ev::CabinBreak(t) => {
                if self.cabin[t].connected {
                    trace!(self, "cabin {t}: connection breaks");
                    self.cabin_down(t);
                }
            }
            Ev::CabinBlock(t, until) => {
                if !self.healed {
                    trace!(self, "cabin {t}: partitioned until {until}");
                    self.cabin[t].blocked_until = until;
                    if self.cabin[t].connected {
                        self.cabin_down(t);
                    }
                }
            }
            Ev::ToMaster { t, epoch, msg } => {
                if !self.master.up {
                    return;
                }
                if !self.cabin[t].handled(&mut self.rng, epoch) {
                    return;
                }
                if epoch != self.cabin[t].epoch || !self.cabin[t].connected {
                    self.stats.late_frames += 1;
                }
                self.master_on_terminal(t, epoch, *msg);
            }
            Ev::ToTerminal { t, epoch, msg } => {
                if !self.terms[t].up || !self.cabin[t].handled(&mut self.rng, epoch) {
                    return;
                }
                if epoch != self.cabin[t].epoch || !self.cabin[t].connected {
                    self.stats.late_frames += 1;
                }
                self.check_master_ack(t, &msg);
                self.terminal_on_master(t, *msg);
            }
            Ev::GroundUp => {
                trace!(self, "ground link up");
                self.ground_up = true;
                self.ground.blocked_until = 0;
                self.ground_maybe_connect();
            }
            Ev::GroundDown => {
                if !self.healed {
                    trace!(self, "ground link down");
                    self.ground_up = false;
                    self.session_failed("ground link down");
                }
            }
            Ev::GroundConnect => {
                self.ground.connecting = false;
                if self.ground_up && self.master.up && self.issuer.up && self.master.session.is_none() {
                    self.ground.open(self.now);
                    let epoch = self.ground.epoch;
                    self.master.session = Some(epoch);
                    trace!(self, "upload session {epoch} opens");
                    self.upload_step(epoch);
                } else {
                    self.ground_maybe_connect_later();
                }
            }
            Ev::Seal { session, ids } => {
                if self.master.up && self.master.session == Some(session) {
                    self.master.choosing = false;
                    self.seal(session, None, ids);
                }
            }
            Ev::UploadStep(session) => {
                if self.master.up && self.master.session == Some(session) {
                    self.upload_step(session);
                }
            }
            Ev::ToIssuer { epoch, msg } => {
                if self.issuer.up && self.ground.handled(&mut self.rng, epoch) {
                    self.issuer_on(epoch, *msg);
                }
            }
            Ev::FromIssuer { epoch, msg } => {
                if self.master.up && self.master.session == Some(epoch) && self.ground.handled(&mut self.rng, epoch) {
                    self.master_on_issuer(epoch, *msg);
                }
            }
            Ev::Heal => {
                trace!(self, "heal: no more faults");
                self.healed = true;
                for l in &mut self.cabin {
                    l.blocked_until = 0;
                }
                for t in 0..self.terms.len() {
                    if self.terms[t].poisoned && self.terms[t].up {
                        self.terminal_down(t);
                    }
                    if !self.terms[t].up {
                        self.restart(Node::Term(t));
                    }
                }
                if !self.master.up {
                    self.restart(Node::Master);
                }
                if !self.issuer.up {
                    self.restart(Node::Issuer);
                }
                self.ground_up = true;
                self.ground_maybe_connect();
            }
        }
    }

    // --- sale apps -----------------------------------------------------------------------

    fn sale_attempt(&mut self, k: usize) {
        if self.sales[k].heard != Heard::Nothing || self.sales[k].gave_up {
            return;
        }
        self.stats.sales += u64::from(self.sales[k].attempt == 0);
        let t = self.sales[k].term;
        let patience = 300 + self.rng.below(5_000);
        let s = &mut self.sales[k];
        s.attempt += 1;
        s.deadline = self.now + patience;
        s.waiting = true;
        let (a, deadline) = (s.attempt, s.deadline);
        self.at(deadline, Ev::SaleDeadline(k, a));
        if !self.terms[t].up {
            // Connection refused: nothing was taken, so even without a request id it is safe
            // to try again.
            trace!(self, "sale {k} attempt {a}: terminal {t} is down");
            self.sales[k].waiting = false;
            if self.now < SALES_RETRY_UNTIL_MS {
                let d = 500 + self.rng.below(2_000);
                self.after(d, Ev::SaleAttempt(k));
            } else {
                self.sales[k].gave_up = true;
            }
            return;
        }
        let to: ReplyTo = ((k as u64) << 16) | u64::from(a);
        let s = self.sales[k].clone();
        let known = s.request_id.as_ref().and_then(|r| self.terms[t].disk.current().requests.get(r).copied());
        match known {
            Some(id) => {
                let rec = self.terms[t].disk.current().payments.get(&id).map(|r| (r.state, r.payment.amount));
                trace!(self, "sale {k} attempt {a}: retry of {id}");
                let who = Who { sales: &self.sales, now: self.now };
                if let Some((state, amount)) = rec {
                    self.terms[t].machine.retry(to, id, state, amount, self.now, &who);
                }
            }
            None => {
                trace!(self, "sale {k} attempt {a}: capture {} EUR at terminal {t}", s.amount);
                let (emv, amount) = self.chip_data(s.card, s.amount);
                let emv = emv.map(|e| e.to_hex());
                let req = CaptureRequest {
                    pan: CARDS[s.card].pan.into(),
                    expiry: "12/30".into(),
                    amount_minor: amount,
                    currency: "EUR".into(),
                    seat: format!("{}A", t + 1),
                    items: vec![],
                    emv,
                    entry_mode: None,
                    mcc: None,
                };
                let mut random = [0u8; 10];
                for b in &mut random {
                    *b = self.rng.below(256) as u8;
                }
                self.terms[t].machine.capture(to, &req, s.request_id.clone(), random, UNIX_START + self.now);
            }
        }
        self.term_act(t);
    }

    /// The sale app voids its sale: by its request id, else by the payment id it heard.
    fn sale_void(&mut self, k: usize) {
        let s = self.sales[k].clone();
        if s.void_heard.is_some() || s.void_waiting {
            return;
        }
        let t = s.term;
        if !self.terms[t].up {
            if self.now < SALES_RETRY_UNTIL_MS {
                let d = 500 + self.rng.below(2_000);
                self.after(d, Ev::SaleVoid(k));
            }
            return;
        }
        let disk = self.terms[t].disk.current();
        let id = match (&s.request_id, &s.heard) {
            (Some(r), _) => disk.requests.get(r).copied(),
            (None, Heard::Accepted(id)) => Some(*id),
            (None, _) => return,
        };
        let found = id.and_then(|id| disk.payments.get(&id).map(|r| (id, r.state)));
        let sale = &mut self.sales[k];
        sale.void_attempt += 1;
        sale.void_waiting = true;
        let a = sale.void_attempt;
        self.after(8_000, Ev::VoidDeadline(k, a));
        let to: ReplyTo = VOID_REPLY | ((k as u64) << 16) | u64::from(a);
        trace!(self, "sale {k} void attempt {a} of {id:?} at terminal {t}");
        self.terms[t].machine.void(to, found);
        self.term_act(t);
    }

    fn void_hears(&mut self, k: usize, a: u32, answer: Answer) {
        let s = &mut self.sales[k];
        if !(s.void_waiting && s.void_attempt == a) {
            return;
        }
        s.void_waiting = false;
        trace!(self, "sale {k} void attempt {a} hears {answer:?}");
        match answer {
            Answer::Void { id, outcome } => {
                if s.void_heard.is_none() {
                    s.void_heard = Some(outcome);
                    match outcome {
                        VoidOutcome::Voided => self.stats.voided += 1,
                        VoidOutcome::ReversalPending => self.stats.reversal_pending += 1,
                        _ => {}
                    }
                }
                if let (VoidOutcome::Voided, Some(id)) = (outcome, id) {
                    self.voided_ids.insert(id);
                    if self.issuer.disk.current().decisions.contains_key(&id) {
                        self.violation(format!("sale {k} was told {id} is voided, but the issuer decided it"));
                    }
                }
            }
            Answer::VoidFailed { .. } => {
                if self.now < SALES_RETRY_UNTIL_MS {
                    let d = 200 + self.rng.below(2_000);
                    self.after(d, Ev::SaleVoid(k));
                }
            }
            other => self.violation(format!("sale {k}'s void was answered like a capture: {other:?}")),
        }
    }

    fn sale_hears(&mut self, t: usize, to: ReplyTo, answer: Answer, replayed: bool) {
        if to & VOID_REPLY != 0 {
            let (k, a) = (((to & !VOID_REPLY) >> 16) as usize, (to & 0xffff) as u32);
            return self.void_hears(k, a, answer);
        }
        let (k, a) = ((to >> 16) as usize, (to & 0xffff) as u32);
        if let Answer::Accepted(told) = &answer {
            let id = told.id();
            let durable = self.terms[t].disk.durable().payments.get(&id).map(|r| r.state);
            if !matches!(durable, Some(SlaveState::Captured { answered: true } | SlaveState::Forwarded)) {
                self.violation(format!(
                    "terminal {t} told sale {k} `accepted` for {id} without a durable answered mark (durable state {durable:?})"
                ));
            }
        }
        let listening = Who { sales: &self.sales, now: self.now }.listening(to);
        if !listening {
            trace!(self, "sale {k} attempt {a}: answer {answer:?} not heard (gone)");
            return;
        }
        trace!(self, "sale {k} attempt {a} hears {answer:?}{}", if replayed { " (replayed)" } else { "" });
        let s = &mut self.sales[k];
        let heard = match answer {
            Answer::Accepted(told) => Heard::Accepted(told.id()),
            Answer::Rejected { id, reason } => Heard::Rejected(id, reason),
            Answer::Void { .. } | Answer::VoidFailed { .. } => {
                self.violation(format!("sale {k} got a void answer to a capture: {answer:?}"));
                return;
            }
            Answer::Unknown { .. } => {
                // "Retry with the same request_id once the terminal is back".
                s.waiting = false;
                if s.request_id.is_some() && self.now < SALES_RETRY_UNTIL_MS {
                    let d = 200 + self.rng.below(2_000);
                    self.after(d, Ev::SaleAttempt(k));
                } else {
                    s.gave_up = true;
                }
                return;
            }
        };
        s.waiting = false;
        let before = std::mem::replace(&mut s.heard, heard.clone());
        match (&before, &heard) {
            (Heard::Nothing, Heard::Accepted(_)) => self.stats.accepted += 1,
            (Heard::Nothing, Heard::Rejected(..)) => self.stats.rejected += 1,
            _ => {}
        }
        if before != Heard::Nothing && before != heard {
            self.violation(format!("sale {k} heard {before:?}, then {heard:?}"));
        }
    }

    // --- terminals -----------------------------------------------------------------------

    /// Carries out the terminal's actions (as `crates/slave/src/terminal.rs` does), then sends
    /// what its outbox releases and sets its timer.
    fn term_act(&mut self, t: usize) {
        while let Some(action) = self.terms[t].machine.poll_action() {
            match action {
                Action::Write { write, then } => {
                    if self.terms[t].poisoned || (!self.healed && self.rng.chance(self.buggify / 4.0)) {
                        // A write the store refuses (disk full, I/O error): nothing is applied.
                        trace!(self, "terminal {t}: write refused ({then:?})");
                        let who = Who { sales: &self.sales, now: self.now };
                        self.terms[t].machine.on_written(then, Err(WriteFailure::NotWritten), self.now, &who);
                        continue;
                    }
                    if !self.healed && self.rng.chance(self.buggify / 2.0) {
                        // Sled applied the write, then a flush failed before its ticket was taken
                        // (`StoreError::Unconfirmed`): the driver reports it not durable (the
                        // outcome unknown), never "not written" — the write may reach the disk.
                        trace!(self, "terminal {t}: write applied, unconfirmed ({then:?})");
                        self.terms[t].disk.write(write, None);
                        if !self.terms[t].poisoned {
                            self.terms[t].poisoned = true;
                            let d = 500 + self.rng.below(5_000);
                            self.after(d, Ev::Crash(Node::Term(t)));
                        }
                        self.schedule_flush(Node::Term(t));
                        let who = Who { sales: &self.sales, now: self.now };
                        self.terms[t].machine.on_written(then, Err(WriteFailure::NotDurable), self.now, &who);
                        continue;
                    }
                    let early = mutant!(self, AcceptBeforeDurable) && matches!(then, After::Answered { .. });
                    let applied = matches!(then, After::Settled { .. });
                    let wait = (then != After::Nothing && !early && !applied).then_some(then.clone());
                    self.terms[t].disk.write(write, wait);
                    self.schedule_flush(Node::Term(t));
                    if early || applied {
                        let who = Who { sales: &self.sales, now: self.now };
                        self.terms[t].machine.on_written(then, Ok(()), self.now, &who);
                    }
                }
                Action::Reply { to, answer, replayed } => self.sale_hears(t, to, answer, replayed),
                Action::ResultAck { id } => self.send_to_master(t, TerminalMsg::ResultAck { id }),
                Action::Note(n) => trace!(self, "terminal {t}: {n:?}"),
            }
        }
        while let Some(tx) = self.terms[t].machine.poll_transmit(self.now) {
            let msg = match tx {
                Transmit::Void { id } => TerminalMsg::Void { id },
                Transmit::Cancel { id } => TerminalMsg::Cancel { id },
                Transmit::Submit { id, answered } => {
                    match self.terms[t].disk.current().payments.get(&id).filter(|r| r.card) {
                        Some(rec) => TerminalMsg::Submit { payment: rec.payment.clone(), answered },
                        None => {
                            self.violation(format!("terminal {t} must send {id} but holds no card data for it"));
                            continue;
                        }
                    }
                }
            };
            self.send_to_master(t, msg);
        }
        if let Some(at) = self.terms[t].machine.poll_timeout() {
            if self.terms[t].timer.is_none_or(|cur| at < cur) {
                self.terms[t].timer = Some(at);
                self.at(at, Ev::TermTimer(t));
            }
        }
    }

    fn send_to_master(&mut self, t: usize, msg: TerminalMsg) {
        if !self.healed && self.rng.chance(self.buggify) {
            let d = self.rng.below(30);
            self.after(d, Ev::CabinBreak(t));
        }
        let epoch = self.cabin[t].epoch;
        if let Some(when) = self.cabin[t].send(&mut self.rng, self.now, Dir::Up) {
            self.at(when, Ev::ToMaster { t, epoch, msg: Box::new(msg) });
        }
    }

    fn terminal_on_master(&mut self, t: usize, msg: MasterMsg) {
        let who = Who { sales: &self.sales, now: self.now };
        let m = &mut self.terms[t].machine;
        match msg {
            MasterMsg::Ack { id, verdict } => m.on_verdict(id, verdict, self.now, &who),
            MasterMsg::VoidAck { id, carried } => m.on_void_ack(id, carried),
            MasterMsg::CancelAck { id, outcome } => m.on_cancel_ack(id, outcome),
            MasterMsg::Result { id, outcome } => m.on_result(id, outcome),
            _ => {}
        }
        self.term_act(t);
    }

    // --- the cabin network -----------------------------------------------------------------

    fn cabin_connect(&mut self, t: usize) {
        self.cabin[t].connecting = false;
        if self.cabin[t].connected {
            return;
        }
        if self.terms[t].up && self.master.up && self.now >= self.cabin[t].blocked_until {
            self.cabin[t].open(self.now);
            let epoch = self.cabin[t].epoch;
            trace!(self, "cabin {t}: connection {epoch} up");
            self.terms[t].machine.on_connected();
            self.master.conns.insert(t, epoch);
            self.push_results(t, epoch);
            self.term_act(t);
        } else {
            self.cabin_retry(t);
        }
    }

    fn cabin_retry(&mut self, t: usize) {
        if !self.cabin[t].connecting && self.terms[t].up {
            self.cabin[t].connecting = true;
            let d = 100 + self.rng.below(900);
            self.after(d, Ev::CabinConnect(t));
        }
    }

    fn cabin_down(&mut self, t: usize) {
        self.stats.breaks += 1;
        self.cabin[t].close();
        if self.master.conns.get(&t) == Some(&self.cabin[t].epoch) {
            self.master.conns.remove(&t);
        }
        if self.terms[t].up {
            self.terms[t].machine.on_disconnected();
            self.term_act(t);
            self.cabin_retry(t);
        }
    }

    // --- the master ------------------------------------------------------------------------

    fn send_to_terminal(&mut self, t: usize, epoch: u64, msg: MasterMsg) {
        if self.cabin[t].epoch != epoch {
            return;
        }
        if let Some(when) = self.cabin[t].send(&mut self.rng, self.now, Dir::Down) {
            self.at(when, Ev::ToTerminal { t, epoch, msg: Box::new(msg) });
        }
    }

    fn push_results(&mut self, t: usize, epoch: u64) {
        let tid = self.terms[t].id.clone();
        for id in self.master.agg.undelivered(&tid).into_iter().take(1024) {
            if let Some(outcome) = self.master.disk.current().outcomes.get(&id).cloned() {
                self.send_to_terminal(t, epoch, MasterMsg::Result { id, outcome });
            }
        }
    }

    /// What `crates/master/src/aircraft.rs` does with a terminal's frame.
    fn master_on_terminal(&mut self, t: usize, epoch: u64, msg: TerminalMsg) {
        let tid = self.terms[t].id.clone();
        match msg {
            TerminalMsg::Cancel { id } => {
                let d = self.master.agg.handle_cancel(&tid, id);
                trace!(self, "master: sale app's void of {id} from {t}: {d:?}");
                let (op, outcome) = match d {
                    CancelDecision::WrongTerminal => return,
                    CancelDecision::Void => (MOp::Cancel(id), CancelOutcome::Voided),
                    CancelDecision::Reverse => (MOp::RequestReversal(id), CancelOutcome::ReversalPending),
                    CancelDecision::Repeat(o) => (MOp::Barrier, o),
                };
                let msg = MasterMsg::CancelAck { id, outcome };
                self.master.disk.write(op, Some(MCont::Ack { t, epoch, msg }));
                self.schedule_flush(Node::Master);
            }
            TerminalMsg::Submit { payment, answered } => {
                if holds_hot_list(t) && payment.pan.expose_digits() == HOT_CARD {
                    self.violation(format!("terminal {t} holds the hot-card list and captured the listed card"));
                }
                let digest = payment_digest(&payment);
                let card = inflight_core::aggregator::index_key(&fnv(&[payment.pan.expose_digits().as_bytes()]));
                let decision = self.master.agg.handle_submit(&tid, &payment, answered, digest, card);
                trace!(self, "master: submit {} from {t} answered={answered}: {decision:?}", payment.id);
                let id = payment.id;
                let entry = |verdict| IndexEntry {
                    digest,
                    verdict,
                    phase: Phase::Pending,
                    terminal: tid.clone().into(),
                    card,
                    amount: payment.amount,
                    answered,
                    captured_unix_ms: payment.captured_unix_ms,
                    sealed_unix_ms: None,
                };
                let (op, verdict) = match decision.plan(answered) {
                    SubmitPlan::Ack { write, ack } => (
                        match write {
                            SubmitWrite::Put { verdict, answered, .. } => MOp::Put {
                                payment: Box::new(payment.clone()),
                                entry: Box::new(IndexEntry { answered, ..entry(verdict) }),
                            },
                            SubmitWrite::CarryRefused(_) => MOp::CarryRefused(id),
                            SubmitWrite::Confirm => MOp::Confirm(id),
                            SubmitWrite::Barrier => MOp::Barrier,
                        },
                        ack,
                    ),
                    SubmitPlan::Close | SubmitPlan::Wait => return,
                };
                let msg = MasterMsg::Ack { id, verdict };
                if mutant!(self, AckBeforeDurable) {
                    self.master.disk.write(op, None);
                    self.send_to_terminal(t, epoch, msg);
                } else {
                    self.master.disk.write(op, Some(MCont::Ack { t, epoch, msg }));
                }
                self.schedule_flush(Node::Master);
            }
            TerminalMsg::Void { id } => {
                let d = self.master.agg.handle_void(&tid, id);
                trace!(self, "master: void {id} from {t}: {d:?}");
                let Some((void, carried)) = d.plan() else { return };
                let op = if void { MOp::Void(id) } else { MOp::Barrier };
                let msg = MasterMsg::VoidAck { id, carried };
                self.master.disk.write(op, Some(MCont::Ack { t, epoch, msg }));
                self.schedule_flush(Node::Master);
            }
            TerminalMsg::ResultAck { id } => {
                if self.master.agg.delivers(&tid, &id) {
                    trace!(self, "master: {id} delivered to {t}");
                    self.master.disk.write(MOp::Delivered(id), None);
                    self.schedule_flush(Node::Master);
                    self.master.agg.advance(id, Phase::Delivered);
                }
            }
            TerminalMsg::Hello { .. } => {}
        }
    }

    fn master_durable(&mut self, c: MCont) {
        match c {
            MCont::Ack { t, epoch, msg } => {
                if self.master.conns.get(&t) == Some(&epoch) {
                    self.send_to_terminal(t, epoch, msg);
                }
            }
            MCont::Sealed { session, header, ids } => {
                self.master.agg.seal_batch(header, ids);
                self.master.uploader.on_sealed();
                if self.master.session == Some(session) {
                    self.send_batch(session);
                }
            }
            MCont::ResultsStored { session, batch, results } => {
                self.master.agg.close_batch(batch);
                for r in &results {
                    self.master.agg.advance(r.id, Phase::Decided);
                }
                let mut to: BTreeSet<usize> = BTreeSet::new();
                for r in &results {
                    if let Some(e) = self.master.agg.entry(&r.id) {
                        if let Some(t) = self.terms.iter().position(|x| x.id == *e.terminal) {
                            to.insert(t);
                        }
                    }
                }
                for t in to {
                    if let Some(epoch) = self.master.conns.get(&t).copied() {
                        self.push_results(t, epoch);
                    }
                }
                trace!(self, "master: results of batch {batch} stored ({})", results.len());
                if self.master.session == Some(session) {
                    self.after(1, Ev::UploadStep(session));
                }
            }
            MCont::ReversalsStored { session, results } => {
                for r in &results {
                    self.master.agg.reversal_answered(r.id, r.outcome);
                }
                if self.master.session == Some(session) {
                    self.master.reversing = false;
                    self.after(1, Ev::UploadStep(session));
                }
            }
            MCont::Quarantined { session, batch } => {
                let ids = self.master.agg.open_batch().map(|(_, ids)| ids.to_vec()).unwrap_or_default();
                for id in ids {
                    self.master.agg.advance(id, Phase::Quarantined);
                }
                self.master.agg.close_batch(batch);
                if self.master.session == Some(session) {
                    self.after(1, Ev::UploadStep(session));
                }
            }
        }
    }

    // --- the ground ------------------------------------------------------------------------

    fn ground_maybe_connect(&mut self) {
        if self.ground_up && self.master.up && self.master.session.is_none() && !self.ground.connecting {
            self.ground.connecting = true;
            let d = 20 + self.rng.below(200);
            self.after(d, Ev::GroundConnect);
        }
    }

    fn ground_maybe_connect_later(&mut self) {
        if self.ground_up && self.master.up && !self.ground.connecting {
            self.ground.connecting = true;
            self.after(UPLOAD_RETRY_MS, Ev::GroundConnect);
        }
    }

    fn session_failed(&mut self, why: &str) {
        if let Some(s) = self.master.session.take() {
            trace!(self, "upload session {s} ends: {why}");
            self.ground.close();
            self.master.uploader.on_failure();
            self.master.reversing = false;
            self.master.choosing = false;
            self.master.unknown_to_issuer.clear();
            self.issuer.receiving = None;
            self.ground_maybe_connect_later();
        }
    }

    fn send_to_issuer(&mut self, msg: AircraftMsg) {
        let epoch = self.ground.epoch;
        if let Some(when) = self.ground.send(&mut self.rng, self.now, Dir::Up) {
            self.at(when, Ev::ToIssuer { epoch, msg: Box::new(msg) });
        }
    }

    fn send_to_aircraft(&mut self, epoch: u64, msg: IssuerMsg) {
        if self.ground.epoch != epoch {
            return;
        }
        if let Some(when) = self.ground.send(&mut self.rng, self.now, Dir::Down) {
            self.at(when, Ev::FromIssuer { epoch, msg: Box::new(msg) });
        }
    }

    /// What `crates/master/src/ground.rs`'s session does next: the open batch again, or a new
    /// one sealed from pending payments, or wait.
    fn upload_step(&mut self, session: u64) {
        if self.master.uploader.is_unfinished() && self.master.agg.open_batch().is_none() {
            // Sealing: waiting for the seal to be durable.
            return;
        }
        if self.master.reversing || self.master.choosing {
            return;
        }
        // As `ground.rs` `send_reversals`: reversals due go first, one chunk at a time.
        let skip: std::collections::HashSet<PaymentId> = self.master.unknown_to_issuer.iter().copied().collect();
        let due = self.master.agg.reversals_due(BATCH_CHUNK_MAX, &skip);
        if !due.is_empty() {
            trace!(self, "master: sending {} reversals", due.len());
            self.master.reversing = true;
            self.master.unknown_to_issuer.extend(due.iter().copied());
            self.send_to_issuer(AircraftMsg::Reverse { ids: due });
            return;
        }
        let next = if mutant!(self, NoPromise) {
            self.master.agg.choose_next_batch(BATCH_PAYMENTS_MAX as usize)
        } else {
            self.master.agg.promise_next_batch(BATCH_PAYMENTS_MAX as usize)
        };
        match next {
            NextBatch::Nothing => self.after(UPLOAD_IDLE_MS, Ev::UploadStep(session)),
            NextBatch::Open(header, ids) if !mutant!(self, ResealOnRetry) => {
                trace!(self, "master: re-sending open batch {}", header.id);
                self.master.uploader.resume(header, ids);
                self.send_batch(session);
            }
            NextBatch::Open(header, mut ids) => {
                // The defect: a driver that keeps no uploader across sessions seals the open
                // batch again, with what is pending now, under the same id.
                self.master.uploader = Uploader::new(AIRCRAFT.into());
                ids.extend(self.master.agg.next_batch(BATCH_PAYMENTS_MAX as usize));
                self.seal(session, Some(header.id), ids);
            }
            NextBatch::Pending(ids) => {
                // As `ground.rs` does: the session reads every item from the store to build the
                // header before it asks for the seal; the actor serves terminals meanwhile.
                self.master.choosing = true;
                let d = 1 + self.rng.below(200);
                self.after(d, Ev::Seal { session, ids });
            }
        }
    }

    fn seal(&mut self, session: u64, id: Option<BatchId>, ids: Vec<PaymentId>) {
        let Some(items) = self.batch_items(&ids, "seal") else { return };
        let batch_id = id.unwrap_or_else(|| {
            let mut b = [0u8; 16];
            for x in &mut b {
                *x = self.rng.below(256) as u8;
            }
            // As `ground.rs` mints it: the seal time in front (what an item's `late` is judged
            // against), random after. All 16 bytes are drawn, so every seed's events stay as
            // they were before the deadline existed.
            let random: [u8; 10] = b[6..].try_into().expect("10 bytes");
            BatchId(PaymentId::mint(UNIX_START + self.now, random).to_bytes())
        });
        let header = self.master.uploader.seal(batch_id, "SIM001".into(), &items);
        trace!(self, "master: sealing batch {} of {}", header.id, header.count);
        // As the daemon's actor does: the batch is the open one, its payments in it, only once
        // the seal is durable.
        let then = MCont::Sealed { session, header: header.clone(), ids: ids.clone() };
        self.master.disk.write(MOp::Seal(header, ids), Some(then));
        self.schedule_flush(Node::Master);
    }

    /// The batch items of `ids`, read from the master's store as `ground.rs` reads them.
    fn batch_items(&mut self, ids: &[PaymentId], what: &str) -> Option<Vec<BatchItem>> {
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(p) = self.master.disk.current().payments.get(id) else {
                self.violation(format!("master must {what} {id} but holds no card data for it"));
                return None;
            };
            items.push(BatchItem {
                id: p.id,
                pan: p.pan.clone(),
                expiry: p.expiry,
                amount: p.amount,
                captured_unix_ms: p.captured_unix_ms,
                late: false,
                deferred: true,
                emv: p.emv.clone(),
                pos: p.pos,
            });
        }
        Some(items)
    }

    fn send_batch(&mut self, session: u64) {
        let Some(header) = self.master.uploader.header().cloned() else { return };
        let ids = self.master.uploader.ids().to_vec();
        self.send_to_issuer(AircraftMsg::BatchBegin(header.clone()));
        for (k, chunk) in ids.chunks(BATCH_CHUNK_MAX).enumerate() {
            let Some(mut items) = self.batch_items(chunk, "send") else { return };
            // As `ground.rs`: judged against the seal, fixed for every re-send of the batch.
            let at = if mutant!(self, LateAtSend) { UNIX_START + self.now } else { header.id.sealed_unix_ms() };
            for item in &mut items {
                item.late = deadline().is_late(item.captured_unix_ms, at);
            }
            self.send_to_issuer(AircraftMsg::BatchItems {
                batch: header.id,
                first_seq: (k * BATCH_CHUNK_MAX) as u32,
                items,
            });
        }
        self.send_to_issuer(AircraftMsg::BatchEnd { batch: header.id });
        self.master.uploader.on_sent();
        trace!(self, "master: batch {} sent on session {session}", header.id);
    }

    fn master_on_issuer(&mut self, session: u64, msg: IssuerMsg) {
        if let IssuerMsg::BatchResults { results, .. } = &msg {
            // No result before it is durable at the issuer.
            for r in results {
                let durable = self.issuer.disk.durable().decisions.get(&r.id).map(|d| &d.outcome);
                if durable != Some(&r.outcome) {
                    let v = format!("the master received a result for {} the issuer has not durably decided", r.id);
                    self.violation(v);
                }
            }
        }
        if let IssuerMsg::Reversed { results } = &msg {
            for r in results {
                let durable = self.issuer.disk.durable().reversals.get(&r.id);
                if r.outcome != ReversalOutcome::Unknown && durable != Some(&r.outcome) {
                    self.violation(format!(
                        "the master received a reversal of {} the issuer has not made durable",
                        r.id
                    ));
                }
            }
        }
        match msg {
            IssuerMsg::Reversed { results } if self.master.reversing => {
                let then = MCont::ReversalsStored { session, results: results.clone() };
                self.master.disk.write(MOp::Reversed(results), Some(then));
                self.schedule_flush(Node::Master);
            }
            IssuerMsg::BatchResults { batch, first_seq, results } => {
                if let Err(e) = self.master.uploader.on_results(batch, first_seq, results) {
                    self.session_failed(&e.to_string());
                }
            }
            IssuerMsg::BatchDone { batch, count } => match self.master.uploader.on_done(batch, count) {
                Ok(results) => {
                    self.master
                        .disk
                        .write(MOp::Results(results.clone()), Some(MCont::ResultsStored { session, batch, results }));
                    self.schedule_flush(Node::Master);
                }
                Err(e) => self.session_failed(&e.to_string()),
            },
            IssuerMsg::BatchRefused { batch, reason } => {
                trace!(self, "master: batch {batch} refused: {reason}");
                match self.master.uploader.on_refused(batch, reason) {
                    Ok(_) => {
                        self.master.disk.write(MOp::Quarantine(batch), Some(MCont::Quarantined { session, batch }));
                        self.schedule_flush(Node::Master);
                    }
                    Err(e) => self.session_failed(&e.to_string()),
                }
            }
            other => self.session_failed(&format!("unexpected {other:?}")),
        }
    }

    // --- the issuer ------------------------------------------------------------------------

    /// What `crates/issuer/src/server.rs` and the issuer's store do with a frame.
    fn issuer_on(&mut self, epoch: u64, msg: AircraftMsg) {
        match msg {
            AircraftMsg::Reverse { ids } => {
                // As `IssuerStore::reverse`: each through `issuer::reverse`, the account change
                // with it; answered once durable.
                let mut results = Vec::with_capacity(ids.len());
                for id in ids {
                    let current = self.issuer.disk.current();
                    let decided = current.decisions.get(&id).cloned();
                    let prior = if mutant!(self, ReleaseTwice) { None } else { current.reversals.get(&id).copied() };
                    let money =
                        decided.as_ref().map(|d| (d.outcome.clone(), Money::new(d.amount, eur()).expect("money")));
                    let decision = issuer::reverse(money.as_ref().map(|(o, m)| (o, *m)), prior);
                    let account = match (decision, &decided) {
                        (ReversalDecision::Release { amount_minor }, Some(d)) => {
                            current.accounts.get(&d.card).cloned().map(|mut a| {
                                a.available_minor += amount_minor;
                                (d.card, a)
                            })
                        }
                        _ => None,
                    };
                    if matches!(decision, ReversalDecision::Release { .. }) {
                        self.stats.reversed += 1;
                    }
                    trace!(self, "issuer: reversal of {id}: {decision:?}");
                    if matches!(decision, ReversalDecision::NotCharged | ReversalDecision::Release { .. }) {
                        self.issuer.disk.write(IOp::Reverse { id, outcome: decision.outcome(), account }, None);
                    }
                    results.push(ReversalResult { id, outcome: decision.outcome() });
                }
                self.issuer.disk.write(IOp::Barrier, Some(ICont::Reversed { epoch, results }));
                self.schedule_flush(Node::Issuer);
            }
            AircraftMsg::BatchBegin(header) => {
                if !self.sealed.contains(&header.id) {
                    self.violation(format!("batch {} reached the issuer before its seal was durable", header.id));
                }
                let known = self.issuer.disk.current().batches.get(&header.id).map(|(h, done, _)| (h.clone(), *done));
                let start = issuer::start_of(known.as_ref().map(|(h, d)| (h, *d)), &header);
                trace!(self, "issuer: batch {} begins ({start:?})", header.id);
                if start == BatchStart::New {
                    self.issuer.disk.write(IOp::Begin(header.clone()), None);
                    self.schedule_flush(Node::Issuer);
                }
                let id = header.id;
                match IssuerBatch::begin(header, AIRCRAFT, start) {
                    Ok(b) => self.issuer.receiving = Some((epoch, b)),
                    Err(r) => self.issuer_refuse(epoch, id, r.reason()),
                }
            }
            AircraftMsg::BatchItems { batch, first_seq, items } => {
                let Some((e, b)) = self.issuer.receiving.as_mut() else { return };
                if *e != epoch || b.header().id != batch {
                    return;
                }
                if let Err(r) = b.on_items(first_seq, items) {
                    self.issuer.receiving = None;
                    self.issuer_refuse(epoch, batch, r.reason());
                }
            }
            AircraftMsg::BatchEnd { batch } => {
                let Some((e, b)) = self.issuer.receiving.take() else { return };
                if e != epoch || b.header().id != batch {
                    return;
                }
                let accepted = match b.on_end() {
                    Ok(a) => a,
                    Err(r) => return self.issuer_refuse(epoch, batch, r.reason()),
                };
                let decisions = &self.issuer.disk.current().decisions;
                if let Err(r) = accepted.check_prior(|id| decisions.get(id).map(|d| d.content), item_content) {
                    return self.issuer_refuse(epoch, batch, r.reason());
                }
                if accepted.needs_deciding() {
                    let bounds = CaptureBounds::at_receipt(UNIX_START + self.now, CAPTURE_AGE_MAX_MS);
                    for (seq, item) in accepted.items.iter().enumerate() {
                        let content = item_content(item);
                        let current = self.issuer.disk.current();
                        let prior = if mutant!(self, NoDecidedGuard) {
                            None
                        } else {
                            current.decisions.get(&item.id).map(|d| d.content)
                        };
                        let card = card_index(&item.pan);
                        let mut account = current.accounts.get(&card).cloned();
                        if mutant!(self, KeyedChipCards) {
                            account = account.map(|a| Account { chip: false, ..a });
                        }
                        let key = chip_key();
                        let rules = Rules { programme: &self.programme, bounds, chip_key: Some(&key) };
                        let atc = if mutant!(self, ForgetAtc) { None } else { current.atc.get(&card).copied() };
                        let file = CardFile { account: account.as_ref(), atc };
                        let mut judged = item.clone();
                        if mutant!(self, IgnoreChip) {
                            judged.pos.entry_mode = inflight_wire::EntryMode::KeyEntered;
                            judged.emv = None;
                        }
                        let decision = issuer::decide(&judged, &content, prior.as_ref(), file, &rules);
                        let (decided, account, atc) = match decision {
                            ItemDecision::Keep => (None, None, None),
                            ItemDecision::Decide { outcome, account_after, atc_after } => {
                                trace!(self, "issuer: {} {outcome:?}", item.id);
                                self.check_charge(item.id, &outcome);
                                self.check_chip(item, card, &outcome);
                                (
                                    Some(Decided {
                                        content,
                                        outcome,
                                        late: item.late,
                                        card,
                                        amount: item.amount.amount_minor(),
                                    }),
                                    account_after.map(|a| (card, a)),
                                    atc_after.map(|w| (card, w)),
                                )
                            }
                            ItemDecision::Conflict => {
                                return self.issuer_refuse(epoch, batch, "already decided with other content".into())
                            }
                        };
                        self.issuer
                            .disk
                            .write(IOp::Decide { batch, seq: seq as u32, id: item.id, decided, account, atc }, None);
                    }
                    self.issuer.disk.write(IOp::Finish(batch), None);
                }
                trace!(self, "issuer: batch {batch} decided; answering once durable");
                self.issuer.disk.write(IOp::Barrier, Some(ICont::Answer { epoch, batch }));
                self.schedule_flush(Node::Issuer);
            }
            AircraftMsg::Hello { .. }
            | AircraftMsg::Ping { .. }
            | AircraftMsg::FetchBinList { .. }
            | AircraftMsg::FetchHotList { .. }
            | AircraftMsg::ManifestPart { .. } => {}
        }
    }

    fn issuer_refuse(&mut self, epoch: u64, batch: BatchId, reason: String) {
        trace!(self, "issuer: batch {batch} refused: {reason}");
        self.send_to_aircraft(epoch, IssuerMsg::BatchRefused { batch, reason });
    }

    fn issuer_durable(&mut self, c: ICont) {
        let (epoch, batch) = match c {
            ICont::Answer { epoch, batch } => (epoch, batch),
            ICont::Reversed { epoch, results } => {
                return self.send_to_aircraft(epoch, IssuerMsg::Reversed { results });
            }
        };
        let disk = self.issuer.disk.current();
        let Some((_, _, positions)) = disk.batches.get(&batch) else { return };
        let results: Vec<AuthResult> = positions
            .values()
            .filter_map(|id| disk.decisions.get(id).map(|d| AuthResult { id: *id, outcome: d.outcome.clone() }))
            .collect();
        let count = results.len() as u32;
        for (k, chunk) in results.chunks(BATCH_CHUNK_MAX).enumerate() {
            self.send_to_aircraft(
                epoch,
                IssuerMsg::BatchResults { batch, first_seq: (k * BATCH_CHUNK_MAX) as u32, results: chunk.to_vec() },
            );
        }
        self.send_to_aircraft(epoch, IssuerMsg::BatchDone { batch, count });
    }

    /// The issuer decides `id` now: its terminal must have recorded durably that its sale app
    /// was told `accepted`, and no sale app may have been told it was rejected.
    /// The chip data of a new capture of `card` for `amount`, and the amount the terminal sends:
    /// a fresh tap (the card's counter moves on), or, from a hostile terminal, the same chip data
    /// with the amount raised, or the card's last chip data again.
    fn chip_data(&mut self, card: usize, amount: u64) -> (Option<EmvData>, u64) {
        let roll = self.hostile.below(100);
        let use_ = match (roll, &self.last_chip[card]) {
            (0..=3, _) => ChipUse::Tampered,
            (4..=6, Some(_)) => ChipUse::Replayed,
            (7..=8, _) => ChipUse::Stripped,
            _ => ChipUse::Genuine,
        };
        if let (ChipUse::Replayed, Some((emv, signed))) = (use_, &self.last_chip[card]) {
            self.replayed.insert((card, emv.atc()));
            trace!(self, "hostile terminal: replays card {card}'s counter {}", emv.atc());
            return (Some(emv.clone()), *signed);
        }
        if use_ == ChipUse::Stripped {
            // The card read, its chip data thrown away, the sale sent as typed (any amount).
            trace!(self, "hostile terminal: keys card {card}, its chip data stripped");
            return (None, amount);
        }
        self.atc[card] += 1;
        let money = Money::new(amount, eur()).expect("a positive amount");
        let unpredictable = (self.atc[card] as u32 ^ (card as u32) << 16).to_be_bytes();
        let txn = ChipTxn {
            atc: self.atc[card],
            amount: money,
            unix_ms: UNIX_START + self.now,
            unpredictable,
            pin_verified: false,
        };
        let emv = self.chips[card].generate_ac(txn);
        self.last_chip[card] = Some((emv.clone(), amount));
        if use_ == ChipUse::Tampered {
            trace!(self, "hostile terminal: alters card {card}'s counter {} to {} EUR", emv.atc(), amount + 1);
            self.tampered.insert(emv.cryptogram(), amount + 1);
            return (Some(crate::raise_amount(&emv, amount + 1)), amount + 1);
        }
        (Some(emv), amount)
    }

    /// The chip rules, at each decision: an altered payment is never charged and a genuine one
    /// never declined `cryptogram_invalid`; a counter is declined `atc_replayed` only when a
    /// terminal replayed it; and one cryptogram is decided on its merits for one payment only.
    fn check_chip(&mut self, item: &BatchItem, card: usize, outcome: &AuthOutcome) {
        let Some(emv) = &item.emv else {
            // Every model card is a chip card: taken without its chip, it is never charged.
            self.stats.stripped += 1;
            if matches!(outcome, AuthOutcome::Approved { .. }) {
                self.violation(format!("{}: a chip card keyed (its chip data stripped) was approved", item.id));
            }
            return;
        };
        let altered = self.tampered.get(&emv.cryptogram()) == Some(&emv.amount_minor());
        let invalid = *outcome == AuthOutcome::Declined(DeclineReason::CryptogramInvalid);
        self.stats.altered += u64::from(altered);
        self.stats.replays_declined += u64::from(*outcome == AuthOutcome::Declined(DeclineReason::AtcReplayed));
        if altered && !invalid {
            self.violation(format!("{} was altered after the card signed, and the issuer {outcome:?}", item.id));
        }
        if !altered && invalid {
            self.violation(format!("{} is genuine chip data, declined cryptogram_invalid", item.id));
        }
        let key = (card, emv.atc());
        if *outcome == AuthOutcome::Declined(DeclineReason::AtcReplayed) {
            if !self.replayed.contains(&key) {
                self.violation(format!("{} declined atc_replayed, but no terminal replayed that counter", item.id));
            }
        } else if !invalid {
            if let Some(first) = self.counted.insert(key, item.id).filter(|first| *first != item.id) {
                self.violation(format!(
                    "card {card}'s chip counter {} decided for two payments, {first} and {}",
                    emv.atc(),
                    item.id
                ));
            }
        }
    }

    fn check_charge(&mut self, id: PaymentId, outcome: &AuthOutcome) {
        self.stats.decided += 1;
        if matches!(outcome, AuthOutcome::Approved { .. }) {
            self.stats.approved += 1;
        }
        // From the terminal's durable record, not from the mark's write: the store ignores a
        // mark on a voided or refused record.
        // A sale app's void moves only an answered payment on (`moves_forward`): cancelling or
        // cancelled means the mark was durable before.
        let marked = self.terms.iter().any(|t| {
            t.marked.contains(&id)
                && matches!(
                    t.disk.durable().payments.get(&id).map(|r| r.state),
                    Some(
                        SlaveState::Captured { answered: true }
                            | SlaveState::Forwarded
                            | SlaveState::Cancelling
                            | SlaveState::Cancelled { .. }
                    )
                )
        });
        if !marked {
            self.violation(format!(
                "the issuer decides {id}, whose sale app was never durably recorded as told `accepted`"
            ));
        }
        // (A sale app that voided its own sale may hear `rejected`, `voided` on a retry of the
        // capture while the issuer decides it: then it must end reversed, checked at the end.)
        if self.sales.iter().any(|s| matches!(s.heard, Heard::Rejected(Some(x), _) if x == id) && s.void_attempt == 0) {
            self.violation(format!("the issuer decides {id}, whose sale app was told `rejected`"));
        }
        if self.voided_ids.contains(&id) {
            self.violation(format!("the issuer decides {id}, whose sale app was told it is voided"));
        }
    }

    // --- disks, crashes --------------------------------------------------------------------

    fn schedule_flush(&mut self, node: Node) {
        if !self.healed && self.rng.chance(self.buggify) {
            let d = self.rng.below(4);
            self.after(d, Ev::Crash(node));
        }
        let flushing = match node {
            Node::Term(t) => &mut self.terms[t].flushing,
            Node::Master => &mut self.master.flushing,
            Node::Issuer => &mut self.issuer.flushing,
        };
        if !*flushing {
            *flushing = true;
            let d = 1 + self.rng.below(4);
            self.after(d, Ev::Flush(node));
        }
    }

    fn flush(&mut self, node: Node) {
        match node {
            Node::Term(t) => {
                let term = &mut self.terms[t];
                term.flushing = false;
                if !term.up {
                    return;
                }
                if term.poisoned || (!self.healed && self.rng.chance(self.buggify)) {
                    let first = !term.poisoned;
                    term.poisoned = true;
                    let conts = term.disk.fail_flush();
                    trace!(self, "terminal {t}: flush fails, store poisoned ({} waiting)", conts.len());
                    for c in conts {
                        let who = Who { sales: &self.sales, now: self.now };
                        self.terms[t].machine.on_written(c, Err(WriteFailure::NotDurable), self.now, &who);
                    }
                    self.term_act(t);
                    if first {
                        let d = 500 + self.rng.below(5_000);
                        self.after(d, Ev::Crash(Node::Term(t)));
                    }
                    return;
                }
                let marked = &mut term.marked;
                let conts = term.disk.flush(|op| note_mark(marked, op));
                for c in conts {
                    let who = Who { sales: &self.sales, now: self.now };
                    self.terms[t].machine.on_written(c, Ok(()), self.now, &who);
                }
                self.term_act(t);
            }
            Node::Master => {
                self.master.flushing = false;
                if !self.master.up {
                    return;
                }
                let sealed = &mut self.sealed;
                for c in self.master.disk.flush(|op| note_seal(sealed, op)) {
                    self.master_durable(c);
                }
            }
            Node::Issuer => {
                self.issuer.flushing = false;
                if !self.issuer.up {
                    return;
                }
                for c in self.issuer.disk.flush(|_| {}) {
                    self.issuer_durable(c);
                }
            }
        }
    }

    fn crash(&mut self, node: Node) {
        if self.healed {
            return;
        }
        self.stats.crashes += 1;
        let down = 100 + self.rng.below(4_000);
        match node {
            Node::Term(t) => {
                if !self.terms[t].up {
                    return;
                }
                self.terminal_down(t);
            }
            Node::Master => {
                if !self.master.up {
                    return;
                }
                let keep = self.rng.below(self.master.disk.pending() as u64 + 1) as usize;
                trace!(self, "master crashes (keeps {keep} of {} pending writes)", self.master.disk.pending());
                self.master.up = false;
                self.master.flushing = false;
                let sealed = &mut self.sealed;
                self.master.disk.crash(keep, |op| note_seal(sealed, op));
                for t in 0..self.terms.len() {
                    if self.cabin[t].connected {
                        self.cabin_down(t);
                    }
                }
                self.session_failed("master crashed");
                self.master.conns.clear();
            }
            Node::Issuer => {
                if !self.issuer.up {
                    return;
                }
                let keep = self.rng.below(self.issuer.disk.pending() as u64 + 1) as usize;
                trace!(self, "issuer crashes (keeps {keep} of {} pending writes)", self.issuer.disk.pending());
                self.issuer.up = false;
                self.issuer.flushing = false;
                self.issuer.disk.crash(keep, |_| {});
                self.issuer.receiving = None;
                self.session_failed("issuer crashed");
            }
        }
        self.after(down, Ev::Restart(node));
    }

    /// Terminal `t` dies: it keeps what was flushed and a random prefix of what was written
    /// since; its connection breaks.
    fn terminal_down(&mut self, t: usize) {
        let keep = self.rng.below(self.terms[t].disk.pending() as u64 + 1) as usize;
        trace!(self, "terminal {t} crashes (keeps {keep} of {} pending writes)", self.terms[t].disk.pending());
        let term = &mut self.terms[t];
        term.up = false;
        term.flushing = false;
        let marked = &mut term.marked;
        term.disk.crash(keep, |op| note_mark(marked, op));
        if self.cabin[t].connected {
            self.cabin_down(t);
        }
    }

    fn restart(&mut self, node: Node) {
        match node {
            Node::Term(t) => {
                if self.terms[t].up {
                    return;
                }
                trace!(self, "terminal {t} restarts");
                let mut m = term::Terminal::new(self.terms[t].id.clone(), self.settings);
                m.install_bin_list(Some(self.programme.clone()));
                if holds_hot_list(t) && !mutant!(self, ForgetHotListOnRestart) {
                    m.install_hot_list(Some(self.hot.clone()));
                }
                for rec in self.terms[t].disk.current().payments.values() {
                    if matches!(
                        rec.state,
                        SlaveState::Captured { .. }
                            | SlaveState::Voided { master_acked: false }
                            | SlaveState::Cancelling
                    ) {
                        m.restore(rec.payment.id, rec.payment.amount, rec.state, rec.card, self.now);
                    }
                }
                let term = &mut self.terms[t];
                term.machine = m;
                term.poisoned = false;
                term.up = true;
                term.timer = None;
                self.cabin[t].connecting = false;
                self.cabin_retry(t);
                self.term_act(t);
            }
            Node::Master => {
                if self.master.up {
                    return;
                }
                trace!(self, "master restarts");
                let mut agg = Aggregator::with_limits(self.limits);
                let disk = self.master.disk.current();
                for (id, e) in &disk.entries {
                    agg.restore(*id, e.clone());
                }
                if let Some((h, ids)) = &disk.open {
                    agg.restore_open_batch(h.clone(), ids.clone());
                }
                for (id, r) in &disk.reversals {
                    let r = r.map_or(
                        inflight_core::aggregator::Reversal::Requested,
                        inflight_core::aggregator::Reversal::Done,
                    );
                    agg.restore_reversal(*id, r);
                }
                self.master.agg = agg;
                self.master.uploader = Uploader::new(AIRCRAFT.into());
                self.master.up = true;
                for t in 0..self.terms.len() {
                    self.cabin_retry(t);
                }
                self.ground_maybe_connect();
            }
            Node::Issuer => {
                if self.issuer.up {
                    return;
                }
                trace!(self, "issuer restarts");
                self.issuer.up = true;
                self.ground_maybe_connect();
            }
        }
    }

    // --- the checker -----------------------------------------------------------------------

    /// No ack without fsync: what a terminal is told the master holds, the master's disk holds.
    fn check_master_ack(&mut self, t: usize, msg: &MasterMsg) {
        let disk = self.master.disk.durable();
        let problem = match msg {
            MasterMsg::Ack { id, verdict } => {
                let e = disk.entries.get(id);
                match verdict {
                    Verdict::Stored => {
                        (!e.is_some_and(|e| e.verdict == Verdict::Stored && e.answered)).then_some("Stored")
                    }
                    // Held, then maybe voided since (the void ack follows on the same stream).
                    Verdict::Held => (!e.is_some_and(|e| {
                        matches!(e.verdict, Verdict::Stored | Verdict::Refused(RefusalReason::Voided))
                    }))
                    .then_some("Held"),
                    Verdict::Refused(RefusalReason::Voided | RefusalReason::OverCardFlightLimit) => {
                        e.is_none().then_some("a stored refusal")
                    }
                    Verdict::Refused(_) => None,
                }
                .map(|what| (*id, what))
            }
            MasterMsg::CancelAck { id, outcome: CancelOutcome::Voided } => {
                disk.entries.get(id).is_some_and(|e| e.verdict == Verdict::Stored).then_some((*id, "a sale app's void"))
            }
            MasterMsg::CancelAck { id, outcome: CancelOutcome::ReversalPending } => {
                (!disk.reversals.contains_key(id)).then_some((*id, "a reversal"))
            }
            MasterMsg::VoidAck { id, carried: false } => disk
                .entries
                .get(id)
                .is_some_and(|e| e.verdict == Verdict::Stored && e.answered)
                .then_some((*id, "a void")),
            _ => None,
        };
        if let Some((id, what)) = problem {
            self.violation(format!("terminal {t} got {what} for {id} before the master's disk held it"));
        }
    }

    /// After every event: the books of every machine, the money, the caps.
    fn check_step(&mut self) {
        if self.master.up {
            if let Err(e) = self.master.agg.check_invariants() {
                self.violation(format!("master's books: {e}"));
            }
        }
        for which in [false, true] {
            let disk = if which { self.issuer.disk.durable() } else { self.issuer.disk.current() };
            if let Some(v) = money_mismatch(disk) {
                let what = if which { "on disk" } else { "in memory" };
                self.violation(format!("issuer's money {what}: {v}"));
            }
        }
        for (t, term) in self.terms.iter().enumerate() {
            if term.up && term.machine.holdings().payments > self.settings.caps.stored_payments_max {
                let v = format!("terminal {t} holds more than its caps");
                self.violations.push(v);
            }
        }
    }

    /// At the end, after the faults healed: everything a sale app was told `accepted` is
    /// decided once and back on its terminal; nothing is left half-way.
    fn check_end(&mut self) {
        let decisions = self.issuer.disk.durable().decisions.clone();
        let reversals = self.issuer.disk.durable().reversals.clone();
        for (k, s) in self.sales.clone().iter().enumerate() {
            if s.void_heard.is_some() || s.void_attempt > 0 {
                // Voided, or a void asked for: never charged once the void is answered; the
                // payment may also be decided and reversed.
                let id = match &s.heard {
                    Heard::Accepted(id) => Some(*id),
                    _ => s.request_id.as_ref().and_then(|r| self.terms[s.term].disk.durable().requests.get(r).copied()),
                };
                let answered = matches!(s.void_heard, Some(VoidOutcome::Voided | VoidOutcome::ReversalPending));
                if let (true, Some(id)) = (answered, id) {
                    let charged = decisions.get(&id).is_some_and(|d| matches!(d.outcome, AuthOutcome::Approved { .. }));
                    if charged && !matches!(reversals.get(&id), Some(ReversalOutcome::Reversed { .. })) {
                        self.violation(format!("sale {k} voided {id}, which stays charged at the end"));
                    }
                }
                continue;
            }
            match &s.heard {
                Heard::Accepted(id) => {
                    if !decisions.contains_key(id) {
                        self.violation(format!(
                            "sale {k} was told `accepted` for {id}, which the issuer never decided"
                        ));
                    }
                    let rec = self.terms[s.term].disk.durable().payments.get(id).cloned();
                    match rec {
                        Some(r) if r.outcome.is_some() => {
                            if r.outcome.as_ref() != decisions.get(id).map(|d| &d.outcome) {
                                self.violation(format!(
                                    "terminal {} holds another result for {id} than the issuer's",
                                    s.term
                                ));
                            }
                            if r.card {
                                self.violation(format!("terminal {} still holds card data of delivered {id}", s.term));
                            }
                        }
                        _ => self.violation(format!("the result of accepted {id} never reached terminal {}", s.term)),
                    }
                }
                Heard::Nothing if s.request_id.is_some() && !s.gave_up => {
                    self.violation(format!("sale {k} (with a request id) never got an answer"));
                }
                _ => {}
            }
        }
        for id in decisions.keys() {
            let heard = self.sales.iter().any(|s| s.heard == Heard::Accepted(*id));
            if !heard {
                self.stats.charged_unheard += 1;
            }
        }
        for (t, term) in self.terms.iter().enumerate() {
            let h = term.machine.holdings();
            if term.up && (h.payments != 0 || h.amount_minor.values().any(|v| *v != 0)) {
                let v = format!("terminal {t} still counts holdings at the end: {h:?}");
                self.violations.push(v);
            }
            if term.machine.unsettled() > 0 {
                let v =
                    format!("terminal {t} still has {} payments unsettled with the master", term.machine.unsettled());
                self.violations.push(v);
            }
            if term.machine.voids_unsettled() > 0 {
                let v = format!(
                    "terminal {t} still has {} voids the master never answered",
                    term.machine.voids_unsettled()
                );
                self.violations.push(v);
            }
        }
        let c = self.master.agg.counts();
        if c.pending + c.in_batch + c.decided + c.quarantined + c.unconfirmed > 0 {
            self.violation(format!("the master did not finish: {c:?}"));
        }
        let (reversals_left, _) = self.master.agg.reversal_counts();
        if reversals_left > 0 {
            self.violation(format!("the master never had {reversals_left} reversals answered"));
        }
        if let Some(v) = money_mismatch(self.issuer.disk.durable()) {
            self.violation(format!("issuer's money at the end: {v}"));
        }
        self.check_deadline(&decisions);
        self.check_manifest(&decisions, &reversals);
    }

    /// The flight's closing manifest at the end: it closes without `--force` (nothing pending),
    /// its books balance for every currency and terminal, and it reconciles with every decision
    /// the issuer holds without a mismatch (a payment decided that the master holds as voided,
    /// pending or unknown, or with another outcome or amount, is one).
    fn check_manifest(
        &mut self,
        decisions: &BTreeMap<PaymentId, Decided>,
        reversals: &BTreeMap<PaymentId, ReversalOutcome>,
    ) {
        let disk = self.master.disk.durable();
        let payments: Vec<manifest::ManifestPayment> = disk
            .entries
            .iter()
            .map(|(id, e)| {
                let reversal = disk.reversals.get(id).map(|r| match r {
                    None => Reversal::Requested,
                    Some(done) => Reversal::Done(*done),
                });
                manifest::ManifestPayment {
                    id: *id,
                    terminal: e.terminal.as_str().to_owned(),
                    currency: e.amount.currency(),
                    amount_minor: e.amount.amount_minor(),
                    captured_unix_ms: e.captured_unix_ms,
                    // Every model sale is of the terminals' default category.
                    mcc: inflight_wire::Mcc::DUTY_FREE,
                    standing: manifest::standing(e.verdict, e.answered, e.phase, disk.outcomes.get(id), reversal),
                }
            })
            .collect();
        let currency_of = |id: &PaymentId| disk.entries.get(id).map(|e| e.amount.currency());
        let issuer: Vec<manifest::IssuerDecision> = decisions
            .iter()
            .map(|(id, d)| manifest::IssuerDecision {
                id: *id,
                currency: currency_of(id).unwrap_or_else(|| Currency::parse("EUR").expect("a known currency")),
                amount_minor: d.amount,
                outcome: match (&d.outcome, reversals.get(id)) {
                    (AuthOutcome::Approved { .. }, Some(ReversalOutcome::Reversed { .. })) => {
                        manifest::IssuerOutcome::Reversed
                    }
                    (AuthOutcome::Approved { .. }, _) => manifest::IssuerOutcome::Approved,
                    (AuthOutcome::Declined(_), _) => manifest::IssuerOutcome::Declined,
                },
            })
            .collect();
        let key = manifest::ManifestKey::new([0x5a; 32]);
        match manifest::close("SIM", &payments, &key, UNIX_START + END_MS, false) {
            Err(e) => self.violation(format!("the flight does not close at the end: {e}")),
            Ok(m) => {
                let mismatches = manifest::reconcile(&m, &issuer);
                if let Some(first) = mismatches.first() {
                    self.violation(format!(
                        "the manifest does not reconcile with the issuer: {} mismatch(es), first {first:?}",
                        mismatches.len()
                    ));
                }
                if m.terminals.iter().any(|t| !t.books.balanced()) {
                    self.violation("a terminal's books do not balance at the end".to_owned());
                }
            }
        }
    }

    /// The deadline at the end: every decided payment was sealed by the master, and the issuer
    /// holds it `late` exactly when the master sealed it after its deadline (a mark from
    /// another copy, or a master that forgot the seal across a crash, breaks this); the
    /// master's `deadline_missed` is the issuer's late count, nothing is left warned about.
    fn check_deadline(&mut self, decisions: &BTreeMap<PaymentId, Decided>) {
        let d = deadline();
        for (id, decided) in decisions {
            let Some(e) = self.master.agg.entry(id).cloned() else { continue };
            let Some(sealed) = e.sealed_unix_ms else {
                self.violation(format!("the issuer decided {id}, which the master holds as never sealed"));
                continue;
            };
            let late = d.is_late(e.captured_unix_ms, sealed);
            if decided.late != late {
                self.violation(format!(
                    "the issuer holds {id} late={} but the master sealed it {} ms after capture (window {} ms)",
                    decided.late,
                    sealed.saturating_sub(e.captured_unix_ms),
                    DEADLINE_WINDOW_MS
                ));
            }
        }
        self.stats.late = decisions.values().filter(|x| x.late).count() as u64;
        let counts = self.master.agg.deadline_counts(UNIX_START + END_MS, &d);
        if counts.missed != self.stats.late || counts.soon != 0 {
            self.violation(format!(
                "the master counts {counts:?} at the end; the issuer holds {} late",
                self.stats.late
            ));
        }
    }
}

fn note_seal(sealed: &mut BTreeSet<BatchId>, op: &MOp) {
    if let MOp::Seal(h, _) = op {
        sealed.insert(h.id);
    }
}

fn note_mark(marked: &mut BTreeSet<PaymentId>, op: &Write) {
    if let Write::State { id, state: SlaveState::Captured { answered: true } } = op {
        marked.insert(*id);
    }
}

/// Exactly once, in money: every account's available amount is its opening less what was
/// approved on it, each payment id counted once.
fn money_mismatch(d: &IssuerDisk) -> Option<String> {
    let mut approved: BTreeMap<usize, u64> = BTreeMap::new();
    for (id, dec) in &d.decisions {
        let released = match d.reversals.get(id) {
            Some(ReversalOutcome::Reversed { released_minor }) if *released_minor == dec.amount => true,
            Some(ReversalOutcome::Reversed { released_minor }) => {
                return Some(format!("{id} of {} reversed releasing {released_minor}", dec.amount))
            }
            _ => false,
        };
        if matches!(dec.outcome, AuthOutcome::Approved { .. }) && !released {
            *approved.entry(dec.card).or_default() += dec.amount;
        }
    }
    for (card, a) in &d.accounts {
        let opening = d.opening.get(card).copied().unwrap_or(0);
        let spent = approved.get(card).copied().unwrap_or(0);
        if opening.checked_sub(spent) != Some(a.available_minor) {
            return Some(format!(
                "card {card}: opening {opening} less approved {spent} is not the available {}",
                a.available_minor
            ));
        }
    }
    None
}
