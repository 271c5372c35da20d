//! The master's state of every payment terminals submitted: the verdict on each (stored once,
//! answered the same way every time the same id comes again), the aircraft-wide per-card limit,
//! and each stored payment's progress to the issuer and back.
//!
//! The aggregator keeps a compact index of every payment id (content digest, verdict, phase,
//! terminal, card key, amount), rebuilt from the store at start. It decides; the driver writes
//! what it decided, waits until that is durable, and only then acks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use inflight_wire::{
    BatchHeader, BatchId, BinList, CancelOutcome, Currency, Money, Payment, PaymentId, RefusalReason, ReversalOutcome,
    TerminalId, Verdict,
};

use crate::deadline::{Deadline, DeadlineState};
use crate::uploader::NextBatch;

/// Most open payments (stored, not yet delivered back) the whole aircraft holds before a full
/// aircraft refuses payments from terminals above their fair share. A wide-body cabin selling all
/// flight long stays far below.
pub const PAYMENTS_MAX: usize = 2_000_000;

/// Most payment records the master's index holds, delivered ones included: the absolute bound on
/// its memory. Past it every new payment is refused (`aircraft_full`); it is far above what
/// `PAYMENTS_MAX` open payments and a few flights of delivered ones need.
pub const INDEX_ENTRIES_MAX: usize = 4_000_000;

/// Most open payments one terminal may have at the master. A seatback sells a few dozen in a
/// flight and a crew terminal a few thousand; past it, that terminal (a broken or stolen one)
/// is refused, not the aircraft.
pub const TERMINAL_OPEN_MAX: usize = 20_000;

/// Voided and refused records one terminal may leave, per open payment it may hold: generous
/// for an honest terminal over hundreds of flights, a bound for a stolen one voiding in a loop.
pub const TERMINAL_SPENT_PER_OPEN: usize = 5;

/// How much one terminal may hold at the master: what one broken or stolen terminal can take
/// from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open payments (stored, not yet delivered back) of one terminal.
    pub terminal_open_max: usize,
    /// Open payments of the whole aircraft past which only terminals below their fair share
    /// get new payments stored.
    pub aircraft_open_max: usize,
    /// What a terminal may still store when the aircraft is full: its fair share of it. The
    /// aircraft therefore holds at most `aircraft_open_max` plus one fair share per terminal.
    pub terminal_fair_share: usize,
    /// Voided and refused payments one terminal may have recorded here (they stay until records
    /// are pruned, which is not built): past it, its unanswered payments are refused.
    pub terminal_spent_max: usize,
}

impl Limits {
    /// Limits for an aircraft of up to `terminals_max` terminals.
    pub fn new(terminal_open_max: usize, aircraft_open_max: usize, terminals_max: usize) -> Self {
        let terminal_fair_share = (aircraft_open_max / terminals_max.max(1)).max(1);
        let terminal_spent_max = terminal_open_max.saturating_mul(TERMINAL_SPENT_PER_OPEN);
        Self { terminal_open_max, aircraft_open_max, terminal_fair_share, terminal_spent_max }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(TERMINAL_OPEN_MAX, PAYMENTS_MAX, 2_000)
    }
}

/// A digest of a payment's content, computed by the driver (an HMAC of its encoding under the
/// card key file: never a plain hash of card data), used to tell an honest re-send from a
/// different payment re-using an id. The first [`KEY_BYTES`] of the stored 32-byte HMAC: the
/// index holds one per payment. A terminal never sees the key or the digest; to pass other
/// content off under an id it must hit the one digest stored for that id, about 2^128 tries.
pub type ContentDigest = [u8; KEY_BYTES];

/// A keyed hash of a card number (computed by the driver with the store's key): equal for the
/// same card, meaningless without the key. Truncated like [`ContentDigest`].
pub type CardKey = [u8; KEY_BYTES];

/// Bytes of the keyed digests the index keeps in memory (the store keeps all 32).
pub const KEY_BYTES: usize = 16;

/// The in-memory form of a stored 32-byte keyed digest ([`ContentDigest`], [`CardKey`]).
pub fn index_key(full: &[u8; 32]) -> [u8; KEY_BYTES] {
    let mut k = [0; KEY_BYTES];
    k.copy_from_slice(&full[..KEY_BYTES]);
    k
}

/// A terminal's id, shared: the index names the terminal of every payment, and a cabin has a
/// few hundred terminals for up to [`PAYMENTS_MAX`] payments, so each name is kept once.
pub type TerminalRef = Arc<TerminalId>;

/// Where a stored payment is on its way to the issuer and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Stored, waiting for the next batch.
    Pending,
    /// Sealed into a batch that has not been answered yet.
    InBatch,
    /// Sealed into a batch the issuer refused: set aside for the crew and the issuer's
    /// operations to resolve, never re-sent automatically, never dropped; later batches go on.
    Quarantined,
    /// The issuer's result is stored; not yet confirmed by the terminal.
    Decided,
    /// The terminal has stored the result; card data is erased.
    Delivered,
}

/// What the master knows about one payment id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Digest of the payment's content.
    pub digest: ContentDigest,
    /// The verdict given.
    pub verdict: Verdict,
    /// Progress (meaningful for stored payments).
    pub phase: Phase,
    /// The terminal that captured it: where its result goes (shared, see [`TerminalRef`]).
    pub terminal: TerminalRef,
    /// The card, for the per-card-per-flight limit.
    pub card: CardKey,
    /// The amount.
    pub amount: Money,
    /// The terminal has confirmed that its sale app was told `accepted` (a submit marked
    /// answered). Only such payments are sealed into a batch: one whose sale app was never told
    /// is never charged, and is voided by its terminal instead.
    pub answered: bool,
    /// When it was captured (terminal's time, corrected to the master's): for the age flag and
    /// the deferred-authorization deadline.
    pub captured_unix_ms: u64,
    /// When the batch that carries it was sealed (its batch id's time prefix), once sealed: an
    /// item sealed after its deadline is sent `late` ([`crate::deadline`]).
    pub sealed_unix_ms: Option<u64>,
}

/// What to do with a submitted payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// New: store it durably, then ack `Stored` (answered) or `Held` (not yet: it is not carried
    /// until the terminal confirms). `flag`: a check failed but the terminal had already
    /// answered `accepted`, so it is carried anyway and shown to the crew.
    Store {
        /// The failed check, if any.
        flag: Option<RefusalReason>,
    },
    /// New, refused by an aircraft-wide check: record the refusal durably, then ack it.
    Refuse(RefusalReason),
    /// Previously refused, now re-sent marked answered: store it (the refusal becomes a flag for
    /// the crew), then ack `Stored`.
    CarryRefused(RefusalReason),
    /// Stored earlier unanswered, now re-sent marked answered: record that durably (the payment
    /// may now be sealed), then ack `Stored`.
    Confirm,
    /// Known: ack this verdict again once the original write is durable.
    Repeat(Verdict),
    /// The connection's terminal is not the payment's terminal: close the connection.
    WrongTerminal,
    /// New and unanswered, but its terminal is over its share ([`Limits`]): ack this refusal
    /// without storing anything (the sale app is told `refused`; nothing is carried).
    Turn(RefusalReason),
    /// New and already answered `accepted` (it must be carried), but its terminal is over its
    /// share: not stored and not acked; the terminal keeps it and sends it again after its ack
    /// timeout, by when delivered results may have made room. The connection stays up, so
    /// results and their acks keep flowing.
    Full,
}

/// What the master writes for a [`Decision`] on a submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitWrite {
    /// Store the new payment with this verdict (`Stored` or a refusal) and flag.
    Put {
        /// The verdict recorded (`Stored` for a payment carried or held).
        verdict: Verdict,
        /// A check that failed on a payment carried anyway.
        flag: Option<RefusalReason>,
        /// Whether the terminal said its sale app was told `accepted`.
        answered: bool,
    },
    /// A refused payment comes back answered: carry it, the refusal becoming a flag.
    CarryRefused(RefusalReason),
    /// The terminal confirms its sale app was told `accepted`: it may now be sealed.
    Confirm,
    /// Nothing of its own: the ack waits for everything written before it to be durable (the
    /// original write of a repeat may still be in the current group).
    Barrier,
}

/// What the master's driver does with a [`Decision`]: write, then ack once durable — or close
/// the connection, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitPlan {
    /// Apply `write`; once it and everything before it is durable, ack `ack`.
    Ack {
        /// The write.
        write: SubmitWrite,
        /// The verdict sent back.
        ack: Verdict,
    },
    /// The payment names another terminal: close the connection, record nothing.
    Close,
    /// Neither write nor ack: the terminal keeps it and sends it again after its ack timeout.
    Wait,
}

impl Decision {
    /// The write and the ack for this decision on a submit marked `answered`.
    pub fn plan(self, answered: bool) -> SubmitPlan {
        let ack = |write, ack| SubmitPlan::Ack { write, ack };
        match self {
            // Stored unanswered is acked `Held`: not carried until the terminal confirms.
            Decision::Store { flag } => ack(
                SubmitWrite::Put { verdict: Verdict::Stored, flag, answered },
                if answered { Verdict::Stored } else { Verdict::Held },
            ),
            Decision::Refuse(r) => {
                ack(SubmitWrite::Put { verdict: Verdict::Refused(r), flag: None, answered: false }, Verdict::Refused(r))
            }
            Decision::CarryRefused(r) => ack(SubmitWrite::CarryRefused(r), Verdict::Stored),
            Decision::Confirm => ack(SubmitWrite::Confirm, Verdict::Stored),
            Decision::Repeat(v) => ack(SubmitWrite::Barrier, v),
            // Nothing stored: the refusal confirms nothing of its own.
            Decision::Turn(r) => ack(SubmitWrite::Barrier, Verdict::Refused(r)),
            Decision::WrongTerminal => SubmitPlan::Close,
            // Not acked, the connection kept: results (which make room) keep flowing. Closing
            // it instead made a reconnect loop in which the result acks never got through.
            Decision::Full => SubmitPlan::Wait,
        }
    }
}

/// What to do with a terminal's `Void` of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoidDecision {
    /// Stored and never confirmed answered: record the void durably (it is never sealed), then
    /// acknowledge it.
    Void,
    /// Nothing to change (unknown id, already voided, or refused): acknowledge once everything
    /// written so far is durable.
    Repeat,
    /// The terminal had confirmed the sale app was told `accepted`: the master carries it and
    /// says so.
    Carried,
    /// The payment belongs to another terminal: close the connection.
    WrongTerminal,
}

impl VoidDecision {
    /// `Some((write the void, carried))`: what to write and what the `VoidAck` says once it is
    /// durable (with nothing to write, once everything before it is); `None`: close the
    /// connection.
    pub fn plan(self) -> Option<(bool, bool)> {
        match self {
            VoidDecision::Void => Some((true, false)),
            VoidDecision::Repeat => Some((false, false)),
            VoidDecision::Carried => Some((false, true)),
            VoidDecision::WrongTerminal => None,
        }
    }
}

/// What to do with a sale app's void (`Cancel`) of a payment it was told `accepted` for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelDecision {
    /// Not sealed, nor promised to a batch being sealed: record the void durably (it is never
    /// carried, its card data is erased, its amount no longer counts against the card's
    /// limit), then ack `Voided`.
    Void,
    /// Sealed into a batch, or promised to one: record the reversal durably, then ack
    /// `ReversalPending`. It goes to the issuer once the issuer has decided the payment.
    Reverse,
    /// Nothing to change; ack this outcome once everything written so far is durable (a
    /// repeat, a refused payment, or an id not held here).
    Repeat(CancelOutcome),
    /// The payment belongs to another terminal: close the connection.
    WrongTerminal,
}

/// Where a payment's reversal stands at the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reversal {
    /// Recorded; not yet answered by the issuer.
    Requested,
    /// The issuer answered it (durably recorded).
    Done(ReversalOutcome),
}

/// Counts for the status report (DESIGN.md §8 names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Payments the master will carry to the issuer (every phase; confirmed answered).
    pub total: u64,
    /// Stored, but the terminal has not yet confirmed its sale app was told `accepted`: not
    /// sealed until it does, voided if it never does.
    pub unconfirmed: u64,
    /// Voided by their terminal (the sale app was never told `accepted`): never carried.
    pub voided: u64,
    /// Waiting for a batch.
    pub pending: u64,
    /// In a batch not yet answered.
    pub in_batch: u64,
    /// In a batch the issuer refused (see [`Phase::Quarantined`]).
    pub quarantined: u64,
    /// Decided by the issuer, result not yet at the terminal.
    pub decided: u64,
    /// Result delivered to the terminal.
    pub delivered: u64,
    /// Refused at capture by an aircraft-wide check.
    pub refused: u64,
}

/// Carried payments against their deferred-authorization deadline
/// ([`Aggregator::deadline_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadlineCounts {
    /// Waiting for the issuer with the deadline within the warning lead time (or past it, for
    /// one sealed on time whose batch has not been answered): the crew should get a link.
    pub soon: u64,
    /// Sealed into a batch after its deadline (its item says `late: true`), or not sealed yet
    /// with its deadline past (it will be).
    pub missed: u64,
}

/// Whether a verdict is the void of a payment (not a refusal at capture).
fn is_void(v: Verdict) -> bool {
    v == Verdict::Refused(RefusalReason::Voided)
}

/// The master's index of payments and its rules.
#[derive(Debug, Default)]
pub struct Aggregator {
    /// Every payment id seen.
    index: HashMap<PaymentId, IndexEntry>,
    /// Stored payments waiting for a batch, in capture order.
    pending: BTreeSet<PaymentId>,
    /// Decided payments whose result the terminal has not confirmed, per terminal.
    undelivered: HashMap<TerminalRef, BTreeSet<PaymentId>>,
    /// Total carried per card and currency this flight, for the per-card limit.
    card_totals: HashMap<(CardKey, Currency), u64>,
    /// The issuer's current list (its rules carry the per-card-per-flight limits).
    bins: Option<BinList>,
    /// Open payments per terminal (stored, not yet delivered back), for [`Limits`].
    open: HashMap<TerminalRef, usize>,
    /// Voided and refused payments per terminal (they stay recorded), for [`Limits`].
    spent: HashMap<TerminalRef, usize>,
    /// Terminal names, once each (see [`TerminalRef`]): every name the index holds, and names
    /// of reverted payments (it only grows until a restart rebuilds it). Bounded by the
    /// terminals with a certificate: a connection's payments must carry its own name.
    terminals: HashSet<TerminalRef>,
    /// What one terminal may hold.
    limits: Limits,
    /// Running totals, kept in step with `index`.
    counts: Counts,
    /// The batch sealed and not yet answered (or refused), with its ids in batch order: the
    /// next batch until it is.
    open_batch: Option<(BatchHeader, Vec<PaymentId>)>,
    /// Pending payments handed to the uploader for a batch not yet sealed durably: the
    /// uploader may seal them any time, so a sale app's void of one is a reversal, never a
    /// plain void (which would leave a voided payment in a sealed batch).
    promised: BTreeSet<PaymentId>,
    /// Reversals asked for by sale apps' voids, and what the issuer answered.
    reversals: BTreeMap<PaymentId, Reversal>,
}

impl Aggregator {
    /// An empty aggregator with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty aggregator with `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Self { limits, ..Self::default() }
    }

    /// Payments `terminal` holds here (see [`Limits`]).
    pub fn open_of(&self, terminal: &TerminalId) -> usize {
        self.open.get(terminal).copied().unwrap_or(0)
    }

    /// Whether a new payment from `terminal` is past what it may hold, and why. A payment
    /// already `answered` is held back only by open payments, which delivered results free
    /// once the ground is in reach: never by records that stay (voids, refusals, the index
    /// bound), or it could be kept out for good.
    fn over_share(&self, terminal: &TerminalId, answered: bool) -> Option<RefusalReason> {
        let mine = self.open_of(terminal);
        if mine >= self.limits.terminal_open_max {
            return Some(RefusalReason::TerminalFull);
        }
        if answered {
            return None;
        }
        let c = &self.counts;
        let aircraft = (c.unconfirmed + c.pending + c.in_batch + c.quarantined + c.decided) as usize;
        let spent = self.spent.get(terminal).copied().unwrap_or(0);
        if spent >= self.limits.terminal_spent_max {
            Some(RefusalReason::TerminalFull)
        } else if self.index.len() >= INDEX_ENTRIES_MAX {
            // The absolute bound on the master's memory, whoever is below their share.
            Some(RefusalReason::AircraftFull)
        } else if aircraft >= self.limits.aircraft_open_max && mine >= self.limits.terminal_fair_share {
            Some(RefusalReason::AircraftFull)
        } else {
            None
        }
    }

    /// The BIN list whose rules apply to new payments.
    pub fn set_bin_list(&mut self, bins: Option<BinList>) {
        self.bins = bins;
    }

    /// The BIN list in force.
    pub fn bin_list(&self) -> Option<&BinList> {
        self.bins.as_ref()
    }

    /// Restores one entry from the store at start.
    pub fn restore(&mut self, id: PaymentId, mut entry: IndexEntry) {
        entry.terminal = self.intern(&entry.terminal);
        if let Some(old) = self.index.remove(&id) {
            self.unaccount(id, &old);
        }
        self.account(id, &entry);
        self.index.insert(id, entry);
    }

    /// Decides on a payment submitted by `conn_terminal` (the id of the certificate on the
    /// connection). The decision is applied to the index at once: the driver must make it
    /// durable before acking (or [`Aggregator::revert`] it), and must not ack a `Repeat` before
    /// the original write is durable.
    pub fn handle_submit(
        &mut self,
        conn_terminal: &TerminalId,
        payment: &Payment,
        answered: bool,
        digest: ContentDigest,
        card: CardKey,
    ) -> Decision {
        if &payment.terminal != conn_terminal {
            return Decision::WrongTerminal;
        }
        if let Some(e) = self.index.get(&payment.id) {
            if e.digest != digest {
                return Decision::Repeat(Verdict::Refused(RefusalReason::IdConflict));
            }
            return match e.verdict {
                // A voided payment is never carried, whatever a later submit says.
                v if is_void(v) => Decision::Repeat(v),
                Verdict::Refused(reason) if answered => {
                    let mut e = e.clone();
                    self.unaccount(payment.id, &e);
                    e.verdict = Verdict::Stored;
                    e.phase = Phase::Pending;
                    e.answered = true;
                    self.account(payment.id, &e);
                    self.index.insert(payment.id, e);
                    Decision::CarryRefused(reason)
                }
                Verdict::Stored if answered && !e.answered => {
                    let mut e = e.clone();
                    self.unaccount(payment.id, &e);
                    e.answered = true;
                    self.account(payment.id, &e);
                    self.index.insert(payment.id, e);
                    Decision::Confirm
                }
                Verdict::Stored if !e.answered => Decision::Repeat(Verdict::Held),
                v => Decision::Repeat(v),
            };
        }
        if let Some(reason) = self.over_share(&payment.terminal, answered) {
            return if answered { Decision::Full } else { Decision::Turn(reason) };
        }
        let limit = self.bins.as_ref().and_then(|b| b.rule_for(&payment.pan)).map(|r| r.card_flight_limit_minor);
        let spent = self.card_totals.get(&(card, payment.amount.currency())).copied().unwrap_or(0);
        let over = limit.is_some_and(|l| spent + payment.amount.amount_minor() > l);
        let (verdict, decision) = match (over, answered) {
            (false, _) => (Verdict::Stored, Decision::Store { flag: None }),
            (true, true) => (Verdict::Stored, Decision::Store { flag: Some(RefusalReason::OverCardFlightLimit) }),
            (true, false) => (
                Verdict::Refused(RefusalReason::OverCardFlightLimit),
                Decision::Refuse(RefusalReason::OverCardFlightLimit),
            ),
        };
        let entry = IndexEntry {
            digest,
            verdict,
            phase: Phase::Pending,
            terminal: self.intern(&payment.terminal),
            card,
            amount: payment.amount,
            captured_unix_ms: payment.captured_unix_ms,
            answered,
            sealed_unix_ms: None,
        };
        self.account(payment.id, &entry);
        self.index.insert(payment.id, entry);
        decision
    }

    /// Decides on a terminal's `Void` of `id`. Applied to the index at once, like
    /// [`Aggregator::handle_submit`]: the driver makes it durable before acking, or reverts it.
    pub fn handle_void(&mut self, conn_terminal: &TerminalId, id: PaymentId) -> VoidDecision {
        let Some(e) = self.index.get(&id) else {
            // Never stored here: nothing can carry it. (A late copy of its submit would be
            // stored unconfirmed, and never sealed.)
            return VoidDecision::Repeat;
        };
        if *e.terminal != *conn_terminal {
            return VoidDecision::WrongTerminal;
        }
        match e.verdict {
            Verdict::Refused(_) => VoidDecision::Repeat,
            Verdict::Stored | Verdict::Held if e.answered => VoidDecision::Carried,
            Verdict::Stored | Verdict::Held => {
                self.set_voided(id);
                VoidDecision::Void
            }
        }
    }

    /// Records `id` voided in the index and the books (never carried; its amount no longer
    /// counts against its card's flight limit).
    fn set_voided(&mut self, id: PaymentId) {
        if let Some(mut e) = self.index.remove(&id) {
            self.unaccount(id, &e);
            e.verdict = Verdict::Refused(RefusalReason::Voided);
            self.account(id, &e);
            self.index.insert(id, e);
        }
    }

    /// Decides on a sale app's void (`Cancel`) of `id`, sent by `conn_terminal`. Applied at
    /// once like [`Aggregator::handle_submit`]: the driver makes it durable before acking, or
    /// reverts it ([`Aggregator::revert_cancel`]).
    pub fn handle_cancel(&mut self, conn_terminal: &TerminalId, id: PaymentId) -> CancelDecision {
        let Some(e) = self.index.get(&id) else {
            // A terminal sends its `Cancel` only after this master acked the payment stored, so
            // an unknown id was never held here (or the store was lost): nothing to carry.
            return CancelDecision::Repeat(CancelOutcome::Voided);
        };
        if *e.terminal != *conn_terminal {
            return CancelDecision::WrongTerminal;
        }
        if self.reversals.contains_key(&id) {
            return CancelDecision::Repeat(CancelOutcome::ReversalPending);
        }
        match (e.verdict, e.phase) {
            (Verdict::Refused(_), _) => CancelDecision::Repeat(CancelOutcome::Voided),
            (_, Phase::Pending) if !self.promised.contains(&id) => {
                self.set_voided(id);
                CancelDecision::Void
            }
            _ => {
                self.reversals.insert(id, Reversal::Requested);
                CancelDecision::Reverse
            }
        }
    }

    /// Undoes a sale app's void whose write failed.
    pub fn revert_cancel(&mut self, id: &PaymentId, decision: CancelDecision) {
        match decision {
            CancelDecision::Void => self.revert_void(id),
            CancelDecision::Reverse => {
                self.reversals.remove(id);
            }
            CancelDecision::Repeat(_) | CancelDecision::WrongTerminal => {}
        }
    }

    /// Restores a reversal from the store at start.
    pub fn restore_reversal(&mut self, id: PaymentId, reversal: Reversal) {
        self.reversals.insert(id, reversal);
    }

    /// Up to `max` reversals to send to the issuer now: requested, and the issuer has decided
    /// the payment (its result is stored here), so it knows what to reverse; none in `skip`
    /// (asked already in this session: skipped before the `max` is taken, so that those the
    /// issuer did not know never starve the others).
    pub fn reversals_due(&self, max: usize, skip: &HashSet<PaymentId>) -> Vec<PaymentId> {
        self.reversals
            .iter()
            .filter(|(id, r)| {
                **r == Reversal::Requested
                    && !skip.contains(*id)
                    && self.index.get(id).is_some_and(|e| matches!(e.phase, Phase::Decided | Phase::Delivered))
            })
            .map(|(id, _)| *id)
            .take(max)
            .collect()
    }

    /// The issuer answered a reversal (recorded durably by the driver). `Unknown` leaves it
    /// requested.
    pub fn reversal_answered(&mut self, id: PaymentId, outcome: ReversalOutcome) {
        if outcome != ReversalOutcome::Unknown {
            if let Some(r) = self.reversals.get_mut(&id) {
                *r = Reversal::Done(outcome);
            }
        }
    }

    /// The reversal of `id`, if one was asked for.
    pub fn reversal(&self, id: &PaymentId) -> Option<Reversal> {
        self.reversals.get(id).copied()
    }

    /// Reversals asked for and not answered yet, and answered.
    pub fn reversal_counts(&self) -> (u64, u64) {
        let pending = self.reversals.values().filter(|r| **r == Reversal::Requested).count() as u64;
        (pending, self.reversals.len() as u64 - pending)
    }

    /// Undoes a void whose write failed.
    pub fn revert_void(&mut self, id: &PaymentId) {
        if let Some(mut e) = self.index.remove(id) {
            self.unaccount(*id, &e);
            if is_void(e.verdict) {
                e.verdict = Verdict::Stored;
            }
            self.account(*id, &e);
            self.index.insert(*id, e);
        }
    }

    /// Undoes a decision whose write failed, so that a re-send is decided afresh instead of
    /// being acked from an index entry that never reached the disk.
    pub fn revert(&mut self, id: &PaymentId, decision: Decision) {
        match decision {
            Decision::Store { .. } | Decision::Refuse(_) => {
                if let Some(e) = self.index.remove(id) {
                    self.unaccount(*id, &e);
                }
            }
            Decision::CarryRefused(reason) => {
                if let Some(mut e) = self.index.remove(id) {
                    self.unaccount(*id, &e);
                    e.verdict = Verdict::Refused(reason);
                    e.answered = false;
                    self.account(*id, &e);
                    self.index.insert(*id, e);
                }
            }
            Decision::Confirm => {
                if let Some(mut e) = self.index.remove(id) {
                    self.unaccount(*id, &e);
                    e.answered = false;
                    self.account(*id, &e);
                    self.index.insert(*id, e);
                }
            }
            Decision::Repeat(_) | Decision::WrongTerminal | Decision::Turn(_) | Decision::Full => {}
        }
    }

    /// Up to `max` pending payments, in capture order: the content of the next batch.
    pub fn next_batch(&self, max: usize) -> Vec<PaymentId> {
        self.pending.iter().take(max).copied().collect()
    }

    /// [`Aggregator::choose_next_batch`] for the uploader, which may seal what it is given: the
    /// pending payments handed out are promised to a batch until sealed (see `promised`).
    pub fn promise_next_batch(&mut self, max: usize) -> NextBatch {
        let next = self.choose_next_batch(max);
        if let NextBatch::Pending(ids) = &next {
            self.promised.extend(ids.iter().copied());
        }
        next
    }

    /// What the uploader sends next: the open batch again (same id, same content), else up to
    /// `max` pending payments in capture order, else nothing.
    pub fn choose_next_batch(&self, max: usize) -> NextBatch {
        if let Some((header, ids)) = &self.open_batch {
            return NextBatch::Open(header.clone(), ids.clone());
        }
        let ids = self.next_batch(max);
        if ids.is_empty() {
            NextBatch::Nothing
        } else {
            NextBatch::Pending(ids)
        }
    }

    /// Restores, at start, the batch the store holds sealed and unanswered. Its payments'
    /// phases come from their own entries ([`Aggregator::restore`]).
    pub fn restore_open_batch(&mut self, header: BatchHeader, ids: Vec<PaymentId>) {
        self.open_batch = Some((header, ids));
    }

    /// A batch is sealed (its write applied): its payments leave `pending`, and it is the open
    /// batch until [`Aggregator::close_batch`].
    pub fn seal_batch(&mut self, header: BatchHeader, ids: Vec<PaymentId>) {
        let sealed = header.id.sealed_unix_ms();
        for id in &ids {
            self.advance(*id, Phase::InBatch);
            self.promised.remove(id);
            if let Some(e) = self.index.get_mut(id) {
                e.sealed_unix_ms = Some(sealed);
            }
        }
        self.open_batch = Some((header, ids));
    }

    /// The open batch, if any.
    pub fn open_batch(&self) -> Option<(&BatchHeader, &[PaymentId])> {
        self.open_batch.as_ref().map(|(h, ids)| (h, ids.as_slice()))
    }

    /// Batch `batch` is answered (its results stored durably) or quarantined: it is no longer
    /// the open one. Returns whether it was.
    pub fn close_batch(&mut self, batch: BatchId) -> bool {
        if self.open_batch.as_ref().is_some_and(|(h, _)| h.id == batch) {
            self.open_batch = None;
            true
        } else {
            false
        }
    }

    /// Moves payments to a phase (sealed into a batch, decided, delivered). Unknown ids and
    /// refused payments are ignored; phases only move forward.
    pub fn advance(&mut self, id: PaymentId, to: Phase) {
        let Some(mut e) = self.index.remove(&id) else { return };
        if e.verdict == Verdict::Stored && to > e.phase {
            self.unaccount(id, &e);
            e.phase = to;
            self.account(id, &e);
        }
        self.index.insert(id, e);
    }

    /// Whether a `ResultAck` of `id` from `terminal` records a delivery: only the payment's own
    /// terminal confirms it, and only once it is decided (a repeat or a stray ack changes
    /// nothing). The driver records it, then [`Aggregator::advance`]s it to `Delivered`.
    pub fn delivers(&self, terminal: &TerminalId, id: &PaymentId) -> bool {
        self.index.get(id).is_some_and(|e| *e.terminal == *terminal && e.phase == Phase::Decided)
    }

    /// Decided payments of `terminal` whose result it has not confirmed.
    pub fn undelivered(&self, terminal: &TerminalId) -> Vec<PaymentId> {
        self.undelivered.get(terminal).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// The entry for `id`.
    pub fn entry(&self, id: &PaymentId) -> Option<&IndexEntry> {
        self.index.get(id)
    }

    /// The verdict on record for `id`.
    pub fn verdict(&self, id: &PaymentId) -> Option<Verdict> {
        self.index.get(id).map(|e| e.verdict)
    }

    /// Payments still waiting for the issuer (pending or in an unanswered batch) that were
    /// captured more than `max_age_ms` before `now_unix_ms`. They are never dropped for age;
    /// the crew sees how many there are.
    pub fn aged(&self, now_unix_ms: u64, max_age_ms: u64) -> u64 {
        let cutoff = now_unix_ms.saturating_sub(max_age_ms);
        self.index
            .values()
            .filter(|e| {
                e.verdict == Verdict::Stored
                    && matches!(e.phase, Phase::Pending | Phase::InBatch | Phase::Quarantined)
                    && e.captured_unix_ms < cutoff
            })
            .count() as u64
    }

    /// Carried payments (stored, confirmed) against their deferred-authorization deadline at
    /// `now_unix_ms`, as [`Deadline::judge`] sees each: the crew's warning (`soon`) and the
    /// payments sealed, or to be sealed, after their deadline (`missed`). A full pass over the
    /// index, like [`Aggregator::aged`]: for status and metrics, not the hot path.
    pub fn deadline_counts(&self, now_unix_ms: u64, deadline: &Deadline) -> DeadlineCounts {
        let mut out = DeadlineCounts::default();
        for e in self.index.values().filter(|e| e.verdict == Verdict::Stored && e.answered) {
            let waiting = matches!(e.phase, Phase::Pending | Phase::InBatch | Phase::Quarantined);
            match deadline.judge(e.captured_unix_ms, e.sealed_unix_ms, waiting, now_unix_ms) {
                DeadlineState::OnTime => {}
                DeadlineState::Soon => out.soon += 1,
                DeadlineState::Missed => out.missed += 1,
            }
        }
        out
    }

    /// Running totals.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Recomputes every counter and side index from the index and compares: the self-check
    /// used by the fuzzer and the property tests. Returns what disagrees.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut fresh = Aggregator { bins: self.bins.clone(), ..Aggregator::default() };
        for (id, e) in &self.index {
            fresh.account(*id, e);
        }
        if fresh.counts != self.counts {
            return Err(format!("counts {:?} but the index says {:?}", self.counts, fresh.counts));
        }
        if fresh.pending != self.pending {
            return Err("pending set out of step with the index".into());
        }
        let nonzero = |m: &HashMap<(CardKey, Currency), u64>| {
            m.iter().filter(|(_, v)| **v > 0).map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
        };
        let (mut a, mut b) = (nonzero(&fresh.card_totals), nonzero(&self.card_totals));
        a.sort();
        b.sort();
        if a != b {
            return Err("per-card totals out of step with the index".into());
        }
        let flat =
            |m: &HashMap<TerminalRef, BTreeSet<PaymentId>>| m.values().flatten().copied().collect::<BTreeSet<_>>();
        if flat(&fresh.undelivered) != flat(&self.undelivered) {
            return Err("undelivered results out of step with the index".into());
        }
        if fresh.open != self.open || fresh.spent != self.spent {
            return Err(format!(
                "per-terminal shares {:?}/{:?} but the index says {:?}/{:?}",
                self.open, self.spent, fresh.open, fresh.spent
            ));
        }
        Ok(())
    }

    /// Adds an entry's contribution to the counters and side indexes.
    fn account(&mut self, id: PaymentId, e: &IndexEntry) {
        let c = &mut self.counts;
        match e.verdict {
            // Voided and refused payments stay recorded: they count against their terminal's
            // `spent` budget, or a stolen terminal could grow the index without bound by
            // submitting and voiding.
            v if is_void(v) => {
                c.voided += 1;
                *self.spent.entry(e.terminal.clone()).or_default() += 1;
            }
            Verdict::Refused(_) => {
                c.refused += 1;
                *self.spent.entry(e.terminal.clone()).or_default() += 1;
            }
            // The index records stored payments as `Stored`; `Held` is only ever an ack.
            Verdict::Stored | Verdict::Held if !e.answered && e.phase == Phase::Pending => {
                c.unconfirmed += 1;
                *self.open.entry(e.terminal.clone()).or_default() += 1;
                *self.card_totals.entry((e.card, e.amount.currency())).or_default() += e.amount.amount_minor();
            }
            Verdict::Stored | Verdict::Held => {
                c.total += 1;
                if e.phase != Phase::Delivered {
                    *self.open.entry(e.terminal.clone()).or_default() += 1;
                }
                *self.card_totals.entry((e.card, e.amount.currency())).or_default() += e.amount.amount_minor();
                match e.phase {
                    Phase::Pending => {
                        c.pending += 1;
                        self.pending.insert(id);
                    }
                    Phase::InBatch => c.in_batch += 1,
                    Phase::Quarantined => c.quarantined += 1,
                    Phase::Decided => {
                        c.decided += 1;
                        self.undelivered.entry(e.terminal.clone()).or_default().insert(id);
                    }
                    Phase::Delivered => c.delivered += 1,
                }
            }
        }
    }

    /// The shared copy of `terminal`'s name.
    fn intern(&mut self, terminal: &TerminalId) -> TerminalRef {
        if let Some(t) = self.terminals.get(terminal) {
            return t.clone();
        }
        let t = Arc::new(terminal.clone());
        self.terminals.insert(t.clone());
        t
    }

    /// One open payment of `terminal` fewer.
    fn close_one(open: &mut HashMap<TerminalRef, usize>, terminal: &TerminalId) {
        if let Some(n) = open.get_mut(terminal) {
            *n -= 1;
            if *n == 0 {
                open.remove(terminal);
            }
        }
    }

    /// Removes an entry's contribution (the inverse of `account`).
    fn unaccount(&mut self, id: PaymentId, e: &IndexEntry) {
        let c = &mut self.counts;
        match e.verdict {
            v if is_void(v) => {
                c.voided -= 1;
                Self::close_one(&mut self.spent, &e.terminal);
            }
            Verdict::Refused(_) => {
                c.refused -= 1;
                Self::close_one(&mut self.spent, &e.terminal);
            }
            Verdict::Stored | Verdict::Held if !e.answered && e.phase == Phase::Pending => {
                c.unconfirmed -= 1;
                Self::close_one(&mut self.open, &e.terminal);
                if let Some(t) = self.card_totals.get_mut(&(e.card, e.amount.currency())) {
                    *t -= e.amount.amount_minor();
                }
            }
            Verdict::Stored | Verdict::Held => {
                c.total -= 1;
                if e.phase != Phase::Delivered {
                    Self::close_one(&mut self.open, &e.terminal);
                }
                if let Some(t) = self.card_totals.get_mut(&(e.card, e.amount.currency())) {
                    *t -= e.amount.amount_minor();
                }
                match e.phase {
                    Phase::Pending => {
                        c.pending -= 1;
                        self.pending.remove(&id);
                    }
                    Phase::InBatch => c.in_batch -= 1,
                    Phase::Quarantined => c.quarantined -= 1,
                    Phase::Decided => {
                        c.decided -= 1;
                        if let Some(s) = self.undelivered.get_mut(&e.terminal) {
                            s.remove(&id);
                        }
                    }
                    Phase::Delivered => c.delivered -= 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use inflight_wire::{BinPrefix, BinRule, CardKind, Expiry, Pan};

    use super::*;

    fn eur() -> Currency {
        Currency::parse("EUR").expect("known")
    }

    fn payment(n: u8, terminal: &str, amount: u64) -> Payment {
        Payment {
            id: PaymentId::mint(u64::from(n), [n; 10]),
            terminal: TerminalId::parse(terminal).expect("valid id"),
            pan: Pan::parse("4111111111111111").expect("valid card"),
            expiry: Expiry::parse("12/29").expect("valid expiry"),
            amount: Money::new(amount, eur()).expect("valid"),
            seat: "1A".into(),
            captured_unix_ms: 0,
            items: vec![],
            emv: None,
            pos: inflight_wire::PointOfSale::LEGACY,
        }
    }

    fn t(id: &str) -> TerminalId {
        TerminalId::parse(id).expect("valid")
    }

    fn with_limit(limit: u64) -> Aggregator {
        let mut a = Aggregator::new();
        a.set_bin_list(Some(BinList {
            version: 1,
            issuer: "test".into(),
            valid_from_unix_ms: 0,
            valid_until_unix_ms: u64::MAX,
            rules: vec![BinRule {
                prefix: BinPrefix::parse("411111").expect("valid"),
                kind: CardKind::Credit,
                txn_limit_minor: limit,
                card_flight_limit_minor: limit,
                currencies: vec![eur()],
                cvm_required: false,
                entry_modes: inflight_wire::EntryMode::ALL.to_vec(),
            }],
        }));
        a
    }

    #[test]
    fn stores_once_and_repeats_the_verdict() {
        let mut a = Aggregator::new();
        let p = payment(1, "t1", 100);
        assert_eq!(
            a.handle_submit(&t("t1"), &p, false, [1; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Store { flag: None }
        );
        assert_eq!(
            a.handle_submit(&t("t1"), &p, false, [1; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Repeat(Verdict::Held)
        );
        assert_eq!(a.counts(), Counts { unconfirmed: 1, ..Counts::default() });
        assert!(a.next_batch(10).is_empty(), "never sealed before the terminal confirms its answer");
        assert_eq!(a.handle_submit(&t("t1"), &p, true, [1; KEY_BYTES], [0; KEY_BYTES]), Decision::Confirm);
        assert_eq!(
            a.handle_submit(&t("t1"), &p, true, [1; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Repeat(Verdict::Stored)
        );
        assert_eq!(a.counts(), Counts { total: 1, pending: 1, ..Counts::default() });
        assert_eq!(a.next_batch(10), vec![p.id]);
    }

    #[test]
    fn a_sale_app_s_void_voids_before_the_seal_and_asks_a_reversal_after() {
        let mut a = with_limit(1_000);
        let (p, q, r) = (payment(1, "t1", 400), payment(2, "t1", 400), payment(3, "t1", 100));
        for x in [&p, &q, &r] {
            assert_eq!(
                a.handle_submit(&t("t1"), x, true, [x.id.to_bytes()[15]; KEY_BYTES], [0; KEY_BYTES]),
                Decision::Store { flag: None }
            );
        }
        assert_eq!(a.handle_cancel(&t("t2"), p.id), CancelDecision::WrongTerminal);
        // Not sealed, not promised: voided, its amount freed from the card's flight limit.
        assert_eq!(a.handle_cancel(&t("t1"), p.id), CancelDecision::Void);
        assert_eq!(a.counts(), Counts { total: 2, pending: 2, voided: 1, ..Counts::default() });
        assert_eq!(a.handle_cancel(&t("t1"), p.id), CancelDecision::Repeat(CancelOutcome::Voided));
        let s = payment(4, "t1", 500);
        assert_eq!(
            a.handle_submit(&t("t1"), &s, false, [4; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Store { flag: None },
            "room again"
        );
        // Promised to a batch being sealed: a reversal, never a plain void.
        assert_eq!(a.promise_next_batch(1), NextBatch::Pending(vec![q.id]));
        assert_eq!(a.handle_cancel(&t("t1"), q.id), CancelDecision::Reverse);
        assert_eq!(a.handle_cancel(&t("t1"), q.id), CancelDecision::Repeat(CancelOutcome::ReversalPending));
        assert!(a.reversals_due(10, &HashSet::new()).is_empty(), "not before the issuer decided it");
        let h = BatchHeader {
            id: BatchId([9; 16]),
            aircraft: "A1".into(),
            flight: "F1".into(),
            count: 1,
            totals: vec![(eur(), 400)],
            digest: [0; 32],
        };
        a.seal_batch(h, vec![q.id]);
        a.close_batch(BatchId([9; 16]));
        a.advance(q.id, Phase::Decided);
        assert_eq!(a.reversals_due(10, &HashSet::new()), vec![q.id]);
        a.reversal_answered(q.id, ReversalOutcome::Unknown);
        assert_eq!(a.reversals_due(10, &HashSet::new()), vec![q.id], "kept while the issuer does not know it");
        a.reversal_answered(q.id, ReversalOutcome::Reversed { released_minor: 400 });
        assert!(a.reversals_due(10, &HashSet::new()).is_empty());
        assert_eq!(a.reversal_counts(), (0, 1));
        // A failed write is undone.
        assert_eq!(a.handle_cancel(&t("t1"), r.id), CancelDecision::Void);
        a.revert_cancel(&r.id, CancelDecision::Void);
        assert_eq!(a.verdict(&r.id), Some(Verdict::Stored));
        a.check_invariants().expect("books in step");
        assert_eq!(a.handle_cancel(&t("t1"), payment(5, "t1", 1).id), CancelDecision::Repeat(CancelOutcome::Voided));
    }

    #[test]
    fn the_open_batch_is_chosen_again_until_it_is_closed() {
        let mut a = Aggregator::new();
        assert_eq!(a.choose_next_batch(10), NextBatch::Nothing);
        let ps: Vec<Payment> = (1..=3).map(|n| payment(n, "t1", 100)).collect();
        for p in &ps {
            assert_eq!(
                a.handle_submit(&t("t1"), p, true, [p.id.to_bytes()[15]; KEY_BYTES], [0; KEY_BYTES]),
                Decision::Store { flag: None }
            );
        }
        let ids: Vec<PaymentId> = ps.iter().map(|p| p.id).collect();
        assert_eq!(a.choose_next_batch(2), NextBatch::Pending(ids[..2].to_vec()), "capture order, at most max");
        let header = BatchHeader {
            id: BatchId([9; 16]),
            aircraft: "A1".into(),
            flight: "F1".into(),
            count: 2,
            totals: vec![(eur(), 200)],
            digest: [0; 32],
        };
        a.seal_batch(header.clone(), ids[..2].to_vec());
        assert_eq!(a.counts().in_batch, 2);
        assert_eq!(a.choose_next_batch(10), NextBatch::Open(header.clone(), ids[..2].to_vec()));
        assert_eq!(a.choose_next_batch(10), NextBatch::Open(header.clone(), ids[..2].to_vec()), "again");
        assert!(!a.close_batch(BatchId([8; 16])), "another batch closes nothing");
        assert!(a.close_batch(header.id));
        assert_eq!(a.choose_next_batch(10), NextBatch::Pending(vec![ids[2]]));
        // Restored at start from the store.
        let mut b = Aggregator::new();
        b.restore_open_batch(header.clone(), ids[..2].to_vec());
        assert_eq!(b.open_batch(), Some((&header, &ids[..2])));
        assert_eq!(b.choose_next_batch(10), NextBatch::Open(header, ids[..2].to_vec()));
        a.check_invariants().expect("books");
    }

    #[test]
    fn a_void_keeps_an_unanswered_payment_out_of_every_batch_and_releases_its_limit() {
        let mut a = with_limit(1_000);
        let p = payment(1, "t1", 800);
        assert_eq!(
            a.handle_submit(&t("t1"), &p, false, [1; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Store { flag: None }
        );
        assert_eq!(a.handle_void(&t("t2"), p.id), VoidDecision::WrongTerminal);
        assert_eq!(a.handle_void(&t("t1"), p.id), VoidDecision::Void);
        assert_eq!(a.counts(), Counts { voided: 1, ..Counts::default() });
        assert_eq!(a.handle_void(&t("t1"), p.id), VoidDecision::Repeat, "idempotent");
        // A late submit, even one claiming an answer, never brings it back.
        assert_eq!(
            a.handle_submit(&t("t1"), &p, true, [1; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Repeat(Verdict::Refused(RefusalReason::Voided))
        );
        assert!(a.next_batch(10).is_empty());
        let q = payment(2, "t1", 800);
        assert_eq!(
            a.handle_submit(&t("t1"), &q, true, [2; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Store { flag: None },
            "limit freed"
        );
        assert_eq!(a.handle_void(&t("t1"), q.id), VoidDecision::Carried, "an answered payment is carried");
        assert_eq!(a.handle_void(&t("t1"), payment(3, "t1", 1).id), VoidDecision::Repeat, "unknown id");
        a.check_invariants().expect("books");
    }

    #[test]
    fn refuses_another_terminals_payment_and_id_reuse() {
        let mut a = Aggregator::new();
        assert_eq!(
            a.handle_submit(&t("t2"), &payment(1, "t1", 100), false, [1; KEY_BYTES], [0; KEY_BYTES]),
            Decision::WrongTerminal
        );
        assert_eq!(a.counts(), Counts::default(), "nothing recorded from an impostor");
        assert_eq!(
            a.handle_submit(&t("t2"), &payment(1, "t2", 100), false, [1; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Store { flag: None }
        );
        assert_eq!(
            a.handle_submit(&t("t2"), &payment(1, "t2", 100), false, [2; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Repeat(Verdict::Refused(RefusalReason::IdConflict))
        );
        assert_eq!(a.verdict(&payment(1, "t2", 100).id), Some(Verdict::Stored), "the stored payment is untouched");
    }

    #[test]
    fn per_card_flight_limit_across_terminals() {
        let mut a = with_limit(1_000);
        let card = [7; KEY_BYTES];
        // Five terminals, 300 each: the fourth and fifth would exceed 1,000.
        let decisions: Vec<Decision> = (1..=5)
            .map(|n| {
                a.handle_submit(&t(&format!("t{n}")), &payment(n, &format!("t{n}"), 300), false, [n; KEY_BYTES], card)
            })
            .collect();
        let refused =
            decisions.iter().filter(|d| matches!(d, Decision::Refuse(RefusalReason::OverCardFlightLimit))).count();
        assert_eq!(refused, 2, "{decisions:?}");
        // Another card is unaffected.
        assert_eq!(
            a.handle_submit(&t("t1"), &payment(9, "t1", 900), false, [9; KEY_BYTES], [8; KEY_BYTES]),
            Decision::Store { flag: None }
        );
        // Over the limit but already answered `accepted` by its terminal: carried, flagged.
        assert_eq!(
            a.handle_submit(&t("t1"), &payment(10, "t1", 900), true, [10; KEY_BYTES], card),
            Decision::Store { flag: Some(RefusalReason::OverCardFlightLimit) }
        );
        assert_eq!(a.counts().refused, 2);
    }

    #[test]
    fn a_refusal_is_carried_when_the_terminal_already_answered() {
        let mut a = with_limit(100);
        let p = payment(3, "t1", 500);
        assert_eq!(
            a.handle_submit(&t("t1"), &p, false, [3; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Refuse(RefusalReason::OverCardFlightLimit)
        );
        assert_eq!(
            a.handle_submit(&t("t1"), &p, false, [3; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Repeat(Verdict::Refused(RefusalReason::OverCardFlightLimit))
        );
        assert_eq!(
            a.handle_submit(&t("t1"), &p, true, [3; KEY_BYTES], [0; KEY_BYTES]),
            Decision::CarryRefused(RefusalReason::OverCardFlightLimit)
        );
        assert_eq!(a.counts(), Counts { total: 1, pending: 1, ..Counts::default() });
        a.revert(&p.id, Decision::CarryRefused(RefusalReason::OverCardFlightLimit));
        assert_eq!(a.counts(), Counts { refused: 1, ..Counts::default() });
    }

    #[test]
    fn a_failed_write_is_reverted_and_decided_again() {
        let mut a = with_limit(1_000);
        let p = payment(4, "t1", 800);
        let d = a.handle_submit(&t("t1"), &p, false, [4; KEY_BYTES], [0; KEY_BYTES]);
        a.revert(&p.id, d);
        assert_eq!(a.counts(), Counts::default());
        assert_eq!(
            a.handle_submit(&t("t1"), &p, false, [4; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Store { flag: None },
            "limit released too"
        );
    }

    #[test]
    fn phases_move_forward_and_route_results() {
        let mut a = Aggregator::new();
        for n in 1..=3 {
            a.handle_submit(&t("t1"), &payment(n, "t1", 100), true, [n; KEY_BYTES], [0; KEY_BYTES]);
        }
        let batch = a.next_batch(2);
        assert_eq!(batch, vec![payment(1, "t1", 1).id, payment(2, "t1", 1).id], "capture order");
        for id in &batch {
            a.advance(*id, Phase::InBatch);
        }
        assert_eq!(a.next_batch(10), vec![payment(3, "t1", 1).id], "sealed payments leave the pending set");
        a.advance(batch[0], Phase::Decided);
        a.advance(batch[0], Phase::InBatch);
        assert_eq!(a.undelivered(&t("t1")), vec![batch[0]], "phases never move back");
        a.advance(batch[0], Phase::Delivered);
        assert!(a.undelivered(&t("t1")).is_empty());
        a.advance(batch[1], Phase::Quarantined);
        assert_eq!(a.counts().quarantined, 1, "a refused batch's payment is set aside, counted");
        assert_eq!(a.next_batch(10), vec![payment(3, "t1", 1).id], "and not offered again");
        a.advance(batch[1], Phase::InBatch);
        assert_eq!(a.counts().quarantined, 1, "phases never move back");
        assert_eq!(a.counts(), Counts { total: 3, pending: 1, quarantined: 1, delivered: 1, ..Counts::default() });
        // Payments 1-3 were captured at t = 0: waiting ones age (quarantined too), delivered do not.
        assert_eq!(a.aged(100, 50), 2);
        assert_eq!(a.aged(100, 200), 0);
    }

    /// A carried payment is judged by the time its batch was sealed (the batch id's time
    /// prefix) once sealed, by the clock before; an unconfirmed one is not carried, not judged.
    #[test]
    fn deadline_counts_judge_each_carried_payment_by_its_seal() {
        use crate::deadline::Deadline;
        let d = Deadline::new(100, 30).expect("valid");
        let mut a = with_limit(1_000_000);
        let ids: Vec<PaymentId> = (1..=3).map(|n| payment(n, "t1", 10).id).collect();
        for n in 1..=3u8 {
            assert_eq!(
                a.handle_submit(&t("t1"), &payment(n, "t1", 10), true, [n; KEY_BYTES], [0; KEY_BYTES]),
                Decision::Store { flag: None }
            );
        }
        a.handle_submit(&t("t1"), &payment(4, "t1", 10), false, [4; KEY_BYTES], [0; KEY_BYTES]);
        // Captured at 0: due at 100, warned from 70.
        assert_eq!(a.deadline_counts(69, &d), DeadlineCounts::default());
        assert_eq!(a.deadline_counts(70, &d), DeadlineCounts { soon: 3, missed: 0 });
        assert_eq!(a.deadline_counts(101, &d), DeadlineCounts { soon: 0, missed: 3 });
        let sealed_at = |ms: u64| BatchHeader {
            id: BatchId(PaymentId::mint(ms, [7; 10]).to_bytes()),
            aircraft: "A1".into(),
            flight: "F1".into(),
            count: 1,
            totals: vec![],
            digest: [0; 32],
        };
        // Payment 1 sealed on time and decided; payment 2 sealed late, still waiting.
        a.seal_batch(sealed_at(90), vec![ids[0]]);
        assert_eq!(a.entry(&ids[0]).and_then(|e| e.sealed_unix_ms), Some(90));
        a.close_batch(sealed_at(90).id);
        a.advance(ids[0], Phase::Decided);
        a.seal_batch(sealed_at(150), vec![ids[1]]);
        assert_eq!(
            a.deadline_counts(200, &d),
            DeadlineCounts { soon: 0, missed: 2 },
            "1 on time; 2 sealed late; 3 not sealed, past"
        );
        // Decided late stays missed: the issuer holds it as late.
        a.close_batch(sealed_at(150).id);
        a.advance(ids[1], Phase::Decided);
        assert_eq!(a.deadline_counts(200, &d), DeadlineCounts { soon: 0, missed: 2 });
    }

    /// Mutation testing found these unchecked: the installed list is the one returned; a payment
    /// exactly at the per-card limit is stored; restoring an entry twice counts it once in
    /// every phase; a failed void is undone; the self-check catches books out of step.
    #[test]
    fn restore_limits_reverts_and_the_self_check() {
        let mut a = with_limit(1_000);
        assert_eq!(a.bin_list().map(|b| b.version), Some(1));
        let p = payment(1, "t1", 400);
        assert_eq!(a.handle_submit(&t("t1"), &p, true, [1; KEY_BYTES], [0; KEY_BYTES]), Decision::Store { flag: None });
        let q = payment(2, "t1", 600);
        assert_eq!(
            a.handle_submit(&t("t1"), &q, true, [2; KEY_BYTES], [0; KEY_BYTES]),
            Decision::Store { flag: None },
            "exactly at the limit"
        );

        let mut b = Aggregator::new();
        let entry = |phase: Phase, verdict: Verdict, answered: bool| IndexEntry {
            digest: [9; KEY_BYTES],
            verdict,
            phase,
            terminal: t("t1").into(),
            card: [1; KEY_BYTES],
            amount: Money::new(100, eur()).expect("valid"),
            captured_unix_ms: 0,
            answered,
            sealed_unix_ms: None,
        };
        let entries = [
            entry(Phase::Pending, Verdict::Stored, false),
            entry(Phase::Pending, Verdict::Stored, true),
            entry(Phase::InBatch, Verdict::Stored, true),
            entry(Phase::Quarantined, Verdict::Stored, true),
            entry(Phase::Decided, Verdict::Stored, true),
            entry(Phase::Delivered, Verdict::Stored, true),
            entry(Phase::Pending, Verdict::Refused(RefusalReason::Voided), false),
            entry(Phase::Pending, Verdict::Refused(RefusalReason::OverCardFlightLimit), false),
        ];
        for _ in 0..2 {
            for (n, e) in entries.iter().enumerate() {
                b.restore(payment(n as u8, "t1", 100).id, e.clone());
            }
        }
        let want = Counts {
            total: 5,
            unconfirmed: 1,
            voided: 1,
            pending: 1,
            in_batch: 1,
            quarantined: 1,
            decided: 1,
            delivered: 1,
            refused: 1,
        };
        assert_eq!(b.counts(), want, "each restored entry counted once");
        b.check_invariants().expect("books");

        // A void whose write failed is undone: the payment is unconfirmed again.
        let mut c = Aggregator::new();
        let r = payment(3, "t1", 100);
        c.handle_submit(&t("t1"), &r, false, [3; KEY_BYTES], [0; KEY_BYTES]);
        assert_eq!(c.handle_void(&t("t1"), r.id), VoidDecision::Void);
        c.revert_void(&r.id);
        assert_eq!(c.counts(), Counts { unconfirmed: 1, ..Counts::default() });
        c.check_invariants().expect("books");

        // The self-check sees books out of step with the index.
        c.counts.total += 1;
        assert!(c.check_invariants().is_err(), "counts");
        c.counts.total -= 1;
        c.card_totals.insert(([7; KEY_BYTES], eur()), 5);
        assert!(c.check_invariants().is_err(), "per-card totals");
    }

    /// Submits payment `n` of `terminal` (ids unique per `n`).
    fn submit(a: &mut Aggregator, n: u8, terminal: &str, answered: bool) -> Decision {
        let p = payment(n, terminal, 1);
        a.handle_submit(&t(terminal), &p, answered, [n; KEY_BYTES], [n; KEY_BYTES])
    }

    #[test]
    fn a_terminal_over_its_quota_is_refused_without_touching_the_others() {
        // 3 open payments per terminal; the aircraft is far from full.
        let mut a = Aggregator::with_limits(Limits::new(3, 1_000, 10));
        for n in 0..3 {
            assert_eq!(submit(&mut a, n, "bad", true), Decision::Store { flag: None });
        }
        // Unanswered: refused at once, nothing stored, nothing counted.
        assert_eq!(submit(&mut a, 3, "bad", false), Decision::Turn(RefusalReason::TerminalFull));
        assert!(a.entry(&payment(3, "bad", 1).id).is_none(), "a turned-away payment is not in the index");
        // Answered (the sale app was told accepted): never refused, but not stored either
        // while over quota; the terminal keeps it.
        assert_eq!(submit(&mut a, 4, "bad", true), Decision::Full);
        assert!(a.entry(&payment(4, "bad", 1).id).is_none());
        // Another terminal is served as before.
        assert_eq!(submit(&mut a, 5, "good", false), Decision::Store { flag: None });
        assert_eq!(a.open_of(&t("bad")), 3);
        assert_eq!(a.open_of(&t("good")), 1);
        // A re-send of a stored payment is still answered from the index.
        assert_eq!(submit(&mut a, 0, "bad", true), Decision::Repeat(Verdict::Stored));
    }

    #[test]
    fn delivered_and_voided_payments_free_a_terminal_s_open_share() {
        let mut a = Aggregator::with_limits(Limits::new(2, 1_000, 10));
        assert_eq!(submit(&mut a, 0, "x", true), Decision::Store { flag: None });
        assert_eq!(submit(&mut a, 1, "x", false), Decision::Store { flag: None });
        assert_eq!(submit(&mut a, 2, "x", false), Decision::Turn(RefusalReason::TerminalFull));
        let (p0, p1) = (payment(0, "x", 1).id, payment(1, "x", 1).id);
        // Voided: no longer open (its record counts in the terminal's spent budget).
        assert_eq!(a.handle_void(&t("x"), p1), VoidDecision::Void);
        assert_eq!(a.open_of(&t("x")), 1);
        assert_eq!(submit(&mut a, 1, "x", false), Decision::Repeat(Verdict::Refused(RefusalReason::Voided)));
        // Through the issuer and back: decided is still held, delivered is not.
        assert_eq!(submit(&mut a, 3, "x", false), Decision::Store { flag: None });
        assert_eq!(submit(&mut a, 4, "x", false), Decision::Turn(RefusalReason::TerminalFull));
        a.advance(p0, Phase::InBatch);
        a.advance(p0, Phase::Decided);
        assert_eq!(submit(&mut a, 4, "x", false), Decision::Turn(RefusalReason::TerminalFull));
        a.advance(p0, Phase::Delivered);
        assert_eq!(a.open_of(&t("x")), 1);
        assert_eq!(submit(&mut a, 4, "x", false), Decision::Store { flag: None });
        a.check_invariants().expect("shares in step with the index");
    }

    #[test]
    fn a_full_aircraft_refuses_only_terminals_above_their_fair_share() {
        // The aircraft is full at 4 open payments; 2 terminals, so a fair share is 2.
        let mut a = Aggregator::with_limits(Limits::new(100, 4, 2));
        for n in 0..4 {
            assert_eq!(submit(&mut a, n, "greedy", true), Decision::Store { flag: None });
        }
        assert_eq!(submit(&mut a, 4, "greedy", false), Decision::Turn(RefusalReason::AircraftFull));
        // The quiet terminal still gets its fair share...
        assert_eq!(submit(&mut a, 5, "quiet", false), Decision::Store { flag: None });
        assert_eq!(submit(&mut a, 6, "quiet", false), Decision::Store { flag: None });
        // ...and no more while the aircraft is full.
        assert_eq!(submit(&mut a, 7, "quiet", false), Decision::Turn(RefusalReason::AircraftFull));
    }

    #[test]
    fn restored_entries_count_against_the_quota() {
        let mut src = Aggregator::with_limits(Limits::new(2, 1_000, 10));
        submit(&mut src, 0, "x", true);
        submit(&mut src, 1, "x", true);
        let mut a = Aggregator::with_limits(Limits::new(2, 1_000, 10));
        for n in 0..2 {
            let id = payment(n, "x", 1).id;
            a.restore(id, src.entry(&id).cloned().expect("stored"));
        }
        assert_eq!(submit(&mut a, 2, "x", false), Decision::Turn(RefusalReason::TerminalFull));
    }

    #[test]
    fn voided_and_refused_records_have_a_budget_of_their_own() {
        // A stolen terminal submitting and voiding in a loop uses up its own budget, not the
        // index; answered payments are never held back by it.
        let mut limits = Limits::new(3, 1_000, 10);
        limits.terminal_spent_max = 2;
        let mut a = Aggregator::with_limits(limits);
        for n in 0..2 {
            assert_eq!(submit(&mut a, n, "stolen", false), Decision::Store { flag: None });
            assert_eq!(a.handle_void(&t("stolen"), payment(n, "stolen", 1).id), VoidDecision::Void);
        }
        assert_eq!(submit(&mut a, 2, "stolen", false), Decision::Turn(RefusalReason::TerminalFull));
        assert_eq!(submit(&mut a, 3, "stolen", true), Decision::Store { flag: None }, "answered: carried");
        assert_eq!(a.open_of(&t("stolen")), 1);
        // A reverted void is open again, not counted twice.
        a.revert_void(&payment(0, "stolen", 1).id);
        assert_eq!(a.open_of(&t("stolen")), 2);
        a.check_invariants().expect("in step");
    }

    #[test]
    fn a_fair_share_is_never_zero() {
        assert_eq!(Limits::new(10, 5, 2_000).terminal_fair_share, 1);
    }

    #[test]
    fn every_decision_has_one_plan() {
        let r = RefusalReason::OverCardFlightLimit;
        let put = |verdict, flag, answered| SubmitWrite::Put { verdict, flag, answered };
        assert_eq!(
            Decision::Store { flag: None }.plan(false),
            SubmitPlan::Ack { write: put(Verdict::Stored, None, false), ack: Verdict::Held },
            "unanswered: stored, held"
        );
        assert_eq!(
            Decision::Store { flag: Some(r) }.plan(true),
            SubmitPlan::Ack { write: put(Verdict::Stored, Some(r), true), ack: Verdict::Stored }
        );
        assert_eq!(
            Decision::Refuse(r).plan(false),
            SubmitPlan::Ack { write: put(Verdict::Refused(r), None, false), ack: Verdict::Refused(r) }
        );
        assert_eq!(
            Decision::CarryRefused(r).plan(true),
            SubmitPlan::Ack { write: SubmitWrite::CarryRefused(r), ack: Verdict::Stored }
        );
        assert_eq!(Decision::Confirm.plan(true), SubmitPlan::Ack { write: SubmitWrite::Confirm, ack: Verdict::Stored });
        assert_eq!(
            Decision::Repeat(Verdict::Held).plan(false),
            SubmitPlan::Ack { write: SubmitWrite::Barrier, ack: Verdict::Held }
        );
        assert_eq!(
            Decision::Turn(RefusalReason::TerminalFull).plan(false),
            SubmitPlan::Ack { write: SubmitWrite::Barrier, ack: Verdict::Refused(RefusalReason::TerminalFull) }
        );
        assert_eq!(Decision::WrongTerminal.plan(true), SubmitPlan::Close);
        assert_eq!(Decision::Full.plan(true), SubmitPlan::Wait);
        assert_eq!(VoidDecision::Void.plan(), Some((true, false)));
        assert_eq!(VoidDecision::Repeat.plan(), Some((false, false)));
        assert_eq!(VoidDecision::Carried.plan(), Some((false, true)));
        assert_eq!(VoidDecision::WrongTerminal.plan(), None);
    }

    #[test]
    fn only_its_own_terminal_delivers_a_decided_payment() {
        let mut a = Aggregator::new();
        let p = payment(1, "t1", 100);
        a.handle_submit(&t("t1"), &p, true, [1; KEY_BYTES], [0; KEY_BYTES]);
        assert!(!a.delivers(&t("t1"), &p.id), "not decided yet");
        a.advance(p.id, Phase::InBatch);
        a.advance(p.id, Phase::Decided);
        assert!(!a.delivers(&t("t2"), &p.id), "another terminal");
        assert!(a.delivers(&t("t1"), &p.id));
        a.advance(p.id, Phase::Delivered);
        assert!(!a.delivers(&t("t1"), &p.id), "already delivered");
    }
}
