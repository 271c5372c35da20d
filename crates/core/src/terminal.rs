//! The terminal: every decision `inflight-slave` makes, as a machine with no I/O.
//!
//! It takes a sale app's capture, refuses what the BIN list or the terminal's caps do not allow,
//! has the payment written, waits a while for the master's verdict, and answers the sale app;
//! it forwards through the [`Outbox`], voids payments whose sale app was never answered, and
//! stores the issuer's results. The driver feeds it inputs with the time and carries out the
//! [`Action`]s it emits: writes (each with what follows once it is durable), replies and result
//! acks. The same code runs in the daemon and in the deterministic simulator.
//!
//! The one rule it exists for: **no `accepted` answer without a durable mark.** An
//! [`Answer::Accepted`] holds a [`Told`], and the only place a `Told` is made is
//! [`Terminal::on_written`] for a durable [`After::Answered`]: the answered mark reached the
//! disk first, so a payment the sale app was told `accepted` is carried even if the terminal
//! dies at once, and a payment whose mark never became durable is never answered `accepted`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bincode::{Decode, Encode};
use inflight_wire::{
    AuthOutcome, BinList, CancelOutcome, Money, Payment, PaymentId, RefusalReason, TerminalId, Verdict,
};

use crate::capture::{self, CaptureRequest, Holdings, Refusal, Site, TerminalCaps};
use crate::outbox::{Outbox, Settled, Transmit};

/// Longest request id a sale app may give, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 64;

/// Where a payment stands on the terminal, as stored. States only move forward
/// ([`moves_forward`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum SlaveState {
    /// Stored; the master has not acked it yet. `answered`: the sale app was told `accepted`
    /// before the master's verdict, so the master must carry it.
    Captured {
        /// Whether the sale app has been answered `accepted`.
        answered: bool,
    },
    /// The master acked it as stored.
    Forwarded,
    /// The master refused it before the sale app was answered; card data erased.
    Refused(RefusalReason),
    /// Voided: the sale app was never told `accepted` and no retry of its request claimed it in
    /// time. Card data erased; never carried. `master_acked`: the master confirmed the void.
    Voided {
        /// Whether the master has confirmed the void.
        master_acked: bool,
    },
    /// The sale app voided it after it was told `accepted` (the passenger changed their mind):
    /// the master is told once it holds the payment, until it answers.
    Cancelling,
    /// The master answered the sale app's void. `reversal`: it was already sealed into a batch,
    /// so the issuer reverses it (releasing the funds if it approved); otherwise it is never
    /// carried. Card data erased.
    Cancelled {
        /// Whether the issuer is asked to reverse it.
        reversal: bool,
    },
}

/// Whether `from → to` is a move forward. Captured unanswered may become anything else but a
/// sale app's void; answered may only be forwarded (or refused, then re-sent answered) or voided
/// by its sale app; a void is only for a payment never answered, and only its master
/// confirmation may follow it; a sale app's void only its master's answer.
pub fn moves_forward(from: SlaveState, to: SlaveState) -> bool {
    use SlaveState::{Cancelled, Cancelling, Captured, Forwarded, Voided};
    match (from, to) {
        (Captured { answered: false }, Captured { answered: false } | Cancelling | Cancelled { .. }) => false,
        (Captured { answered: false }, _) => true,
        // An answered payment must be carried: it is only ever forwarded, never refused, unless
        // its own sale app voids it.
        (Captured { answered: true }, Forwarded | Cancelling) => true,
        (Forwarded, Cancelling) => true,
        // The master voided it at the sale app's request, and the terminal's own void mark was
        // lost in a crash before it was durable.
        (Captured { answered: true } | Forwarded, Cancelled { reversal: false }) => true,
        (Cancelling, Cancelled { .. }) => true,
        (Voided { master_acked: false }, Voided { master_acked: true }) => true,
        _ => false,
    }
}

/// Whether a sale app's request id is acceptable: 1 to [`REQUEST_ID_BYTES_MAX`] printable
/// ASCII bytes.
pub fn request_id_ok(rid: &str) -> bool {
    !rid.is_empty() && rid.len() <= REQUEST_ID_BYTES_MAX && rid.bytes().all(|b| b.is_ascii_graphic())
}

/// The driver's handle for one waiting sale app (a reply channel, a simulated client).
pub type ReplyTo = u64;

/// Whether a sale app is still waiting for its answer. An `accepted` answer nobody hears would
/// charge a sale nobody knows of, so the terminal does not record one for a sale app that left.
pub trait Listeners {
    /// Whether `to` still listens.
    fn listening(&self, to: ReplyTo) -> bool;
}

/// Every sale app listens (tests).
#[derive(Debug, Clone, Copy)]
pub struct AllListening;

impl Listeners for AllListening {
    fn listening(&self, _: ReplyTo) -> bool {
        true
    }
}

/// Proof that a payment's answered mark is durable: the sale app may be told `accepted`.
/// Only [`Terminal::on_written`] makes one.
#[derive(Debug, PartialEq, Eq)]
pub struct Told {
    id: PaymentId,
}

impl Told {
    /// The payment.
    pub fn id(&self) -> PaymentId {
        self.id
    }
}

/// What a sale app is told.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// `accepted`: the answered mark is durable.
    Accepted(Told),
    /// `rejected`, with the payment id when one was minted.
    Rejected {
        /// The payment, if one was minted.
        id: Option<PaymentId>,
        /// Machine-readable reason.
        reason: &'static str,
    },
    /// Neither: the answered mark was written but could not be made durable (a failing disk),
    /// so whether the payment will be carried is not known until the terminal restarts. The sale
    /// app retries with its `request_id` to learn the outcome.
    Unknown {
        /// The payment.
        id: PaymentId,
    },
    /// The answer to a void.
    Void {
        /// The payment, when known.
        id: Option<PaymentId>,
        /// What became of it.
        outcome: VoidOutcome,
    },
    /// A void that could not be done now: `void_in_progress` (the payment is being captured or
    /// answered: ask again), `storage_error` (the void's record could not be made durable).
    VoidFailed {
        /// The payment.
        id: PaymentId,
        /// Machine-readable reason.
        reason: &'static str,
    },
}

/// What a sale app's void of a payment came to (the `outcome` of the void op).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoidOutcome {
    /// Never carried to the issuer: nothing is charged.
    Voided,
    /// Recorded: it was (or may already be) sealed into a batch for the issuer, which reverses
    /// it once decided; the funds are released if it approved.
    ReversalPending,
    /// No such payment on this terminal.
    UnknownPayment,
    /// Voided (or refused) already, never carried: nothing is or will be charged.
    AlreadyVoided,
}

impl VoidOutcome {
    /// Stable machine-readable name.
    pub fn as_str(self) -> &'static str {
        match self {
            VoidOutcome::Voided => "voided",
            VoidOutcome::ReversalPending => "reversal_pending",
            VoidOutcome::UnknownPayment => "unknown_payment",
            VoidOutcome::AlreadyVoided => "already_voided",
        }
    }
}

impl Answer {
    fn rejected(id: Option<PaymentId>, reason: &'static str) -> Self {
        Answer::Rejected { id, reason }
    }
}

/// A write the driver must apply to the terminal's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A newly captured payment (`Captured { answered: false }`), with its request id.
    Captured {
        /// The payment, card data included (the store seals it).
        payment: Payment,
        /// The sale app's request id, stored with it.
        request_id: Option<String>,
    },
    /// Move a payment to `state` (ignored by the store when it is not a move forward).
    State {
        /// The payment.
        id: PaymentId,
        /// Its new state.
        state: SlaveState,
    },
    /// The master's verdict settled a payment (forwarded or refused): not waited on; if lost in
    /// a crash, the payment is sent again and the master answers it the same way.
    Settle {
        /// The payment.
        id: PaymentId,
        /// `Forwarded` or `Refused`.
        state: SlaveState,
    },
    /// The issuer's decision; the card data is erased.
    Result {
        /// The payment.
        id: PaymentId,
        /// The decision.
        outcome: AuthOutcome,
    },
}

/// What follows once a write is durable (or failed): fed back through [`Terminal::on_written`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Nothing waits for it.
    Nothing,
    /// A capture is durable: it may be forwarded and answered.
    Captured {
        /// The payment.
        id: PaymentId,
        /// Its amount (released from the caps if the write failed).
        amount: Money,
    },
    /// The answered mark is durable: tell the sale app `accepted`.
    Answered {
        /// The payment.
        id: PaymentId,
    },
    /// The void mark is durable: the master may be told.
    Voided {
        /// The payment.
        id: PaymentId,
    },
    /// The master's void ack is recorded.
    VoidAcked,
    /// A sale app's void of an answered payment is durable: the master may be told.
    Cancelling {
        /// The payment.
        id: PaymentId,
    },
    /// The master's verdict is recorded (fed back as soon as the write is applied, not waited
    /// on): until then the terminal answers retries from its own record of the settlement.
    Settled {
        /// The payment.
        id: PaymentId,
    },
    /// A result is durable: acknowledge it to the master.
    ResultStored {
        /// The payment.
        id: PaymentId,
    },
}

/// Why a write did not become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFailure {
    /// The store refused the write: nothing reached the disk.
    NotWritten,
    /// Written, but the flush failed: it may or may not be on disk.
    NotDurable,
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Apply `write`, and once everything written so far is durable feed `then` back.
    Write {
        /// The write.
        write: Write,
        /// What follows.
        then: After,
    },
    /// Answer a sale app.
    Reply {
        /// Which one.
        to: ReplyTo,
        /// The answer.
        answer: Answer,
        /// It answers a retry of an earlier capture (same request id).
        replayed: bool,
    },
    /// Tell the master this result is stored (dropped when not connected: it is pushed again).
    ResultAck {
        /// The payment.
        id: PaymentId,
    },
    /// Something the operator should see in the log.
    Note(Note),
}

/// Events worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Refused at the terminal.
    Refused(Refusal),
    /// Voided: its sale app was never told `accepted` and no retry claimed it.
    VoidedOrphan(PaymentId),
    /// The master carries a payment this terminal voided.
    VoidCarried(PaymentId),
    /// A capture retried with its request id.
    Retried(PaymentId),
    /// The capture write did not become durable.
    CaptureLost(PaymentId),
    /// A sale app voided a payment (its outcome, once the master answered or the wait ran out).
    Cancelled(PaymentId, VoidOutcome),
}

/// The terminal's timing and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Messages in flight to the master.
    pub window: usize,
    /// How long to wait for the master's ack before sending again.
    pub ack_timeout_ms: u64,
    /// How long a capture waits for the master's verdict before it is answered `accepted`.
    pub verdict_wait_ms: u64,
    /// How long a payment never answered may be claimed by a retry before it is voided.
    pub claim_grace_ms: u64,
    /// The terminal's own caps.
    pub caps: TerminalCaps,
    /// Its terminal type and default merchant category.
    pub site: Site,
}

/// The terminal's decisions.
#[derive(Debug)]
pub struct Terminal {
    id: TerminalId,
    settings: Settings,
    /// What must still reach the master.
    outbox: Outbox,
    /// What this terminal holds un-acked, for its caps.
    held: Holdings,
    /// Amount of each payment in the outbox, to release holdings once it is settled.
    amounts: BTreeMap<PaymentId, Money>,
    /// Captures being written: the sale app that asked.
    capturing: BTreeMap<PaymentId, ReplyTo>,
    /// Captures durable, waiting for the master's verdict until a deadline.
    waiting: BTreeMap<PaymentId, (u64, ReplyTo)>,
    /// Retries (same request id) of captures not yet answered, waiting for the same answer.
    retries: BTreeMap<PaymentId, Vec<ReplyTo>>,
    /// Answered marks written, not yet durable: who is told once they are (`replayed` each).
    answering: BTreeMap<PaymentId, Vec<(ReplyTo, bool)>>,
    /// Of those, the ones whose mark was on record already (a retry's repeat of it): a failure
    /// to write it again undoes nothing.
    marked_before: BTreeSet<PaymentId>,
    /// Payments never answered that nobody waits for, voided after this time unless a retry
    /// claims them first.
    orphans: BTreeMap<PaymentId, u64>,
    /// Settlements (forwarded, refused) whose write has not been applied, or failed: the
    /// store may still say `captured`, so retries are answered from here.
    settling: BTreeMap<PaymentId, SlaveState>,
    /// The issuer's list, signature verified; `None` until one arrives (every card refused).
    bins: Option<BinList>,
    /// The issuer's hot-card list, verified; `None` until one arrives (no card refused as hot).
    hot: Option<crate::hotlist::HotSet>,
    /// The master's clock minus ours; `None` until a master said `Hello` since start.
    clock_offset_ms: Option<i64>,
    /// Sale apps waiting for the void of a payment never answered (its void mark being written).
    voiders: BTreeMap<PaymentId, Vec<ReplyTo>>,
    /// Sale apps' voids of answered payments whose `Cancel` the master has not answered.
    cancels: BTreeMap<PaymentId, Cancel>,
    actions: VecDeque<Action>,
}

/// A sale app's void of an answered payment, on its way to the master.
#[derive(Debug, Default)]
struct Cancel {
    /// The void mark is written: it may be sent (once the master holds the payment).
    durable: bool,
    /// Its flush failed: it may or may not be on disk, so a repeated void is not told it is
    /// under way until a restart reads the store (found by the model: a repeat told
    /// `reversal_pending`, then a crash lost the mark).
    unconfirmed: bool,
    /// Sent on this connection; sent again after this time.
    resend_at: Option<u64>,
    /// Sale apps waiting for the master's answer, each until its deadline (then told
    /// `reversal_pending`); `None` until the mark is durable.
    waiters: Vec<(ReplyTo, Option<u64>)>,
}

impl Terminal {
    /// A terminal with nothing stored.
    pub fn new(id: TerminalId, settings: Settings) -> Self {
        Self {
            id,
            settings,
            outbox: Outbox::new(settings.window, settings.ack_timeout_ms),
            held: Holdings::default(),
            amounts: BTreeMap::new(),
            capturing: BTreeMap::new(),
            waiting: BTreeMap::new(),
            retries: BTreeMap::new(),
            answering: BTreeMap::new(),
            marked_before: BTreeSet::new(),
            orphans: BTreeMap::new(),
            settling: BTreeMap::new(),
            bins: None,
            hot: None,
            clock_offset_ms: None,
            voiders: BTreeMap::new(),
            cancels: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// Restores one stored payment at start (`now_ms`: the driver's monotonic time; `card_data`:
    /// its card data is still stored). A payment never answered becomes claimable for the claim
    /// grace, then is voided.
    pub fn restore(&mut self, id: PaymentId, amount: Money, state: SlaveState, card_data: bool, now_ms: u64) {
        match state {
            SlaveState::Captured { answered } => {
                self.outbox.insert(id, answered);
                self.held.add(amount);
                self.amounts.insert(id, amount);
                if !answered {
                    self.orphans.insert(id, now_ms.saturating_add(self.settings.claim_grace_ms));
                }
            }
            SlaveState::Voided { master_acked: false } => self.outbox.insert_voided(id),
            SlaveState::Cancelling => {
                // Sent again first (the master repeats its verdict), so that the master surely
                // holds it when the `Cancel` comes. Without card data its result is stored: the
                // master holds it, and a submit could not be built anyway (found by the model).
                if card_data {
                    self.outbox.insert(id, true);
                    self.held.add(amount);
                    self.amounts.insert(id, amount);
                }
                self.cancels.insert(id, Cancel { durable: true, ..Cancel::default() });
            }
            _ => {}
        }
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Every pending action, in order.
    pub fn drain_actions(&mut self) -> std::collections::vec_deque::Drain<'_, Action> {
        self.actions.drain(..)
    }

    /// The time captures are judged and stamped with: the master's, when known, else the
    /// terminal's own clock (`local_unix_ms`).
    pub fn sane_now(&self, local_unix_ms: u64) -> u64 {
        (local_unix_ms as i64 + self.clock_offset_ms.unwrap_or(0)).max(0) as u64
    }

    /// A sale app asks to take a payment. `to` is its handle; `random` the id's random part;
    /// `local_unix_ms` the terminal's clock. A request id already known is a retry: the driver
    /// looks it up and calls [`Terminal::retry`] instead.
    pub fn capture(
        &mut self,
        to: ReplyTo,
        req: &CaptureRequest,
        request_id: Option<String>,
        random: [u8; 10],
        local_unix_ms: u64,
    ) {
        if request_id.as_deref().is_some_and(|r| !request_id_ok(r)) {
            self.reply(to, Answer::rejected(None, "bad_request_id"), false);
            return;
        }
        let now = self.sane_now(local_unix_ms);
        let valid = match capture::validate(
            req,
            now,
            self.bins.as_ref(),
            self.hot.as_ref(),
            self.settings.site,
            &self.settings.caps,
            &self.held,
        ) {
            Ok(v) => v,
            Err(r) => {
                self.actions.push_back(Action::Note(Note::Refused(r)));
                self.reply(to, Answer::rejected(None, r.as_str()), false);
                return;
            }
        };
        let payment = Payment {
            id: PaymentId::mint(now, random),
            terminal: self.id.clone(),
            pan: valid.pan,
            expiry: valid.expiry,
            amount: valid.amount,
            seat: valid.seat,
            captured_unix_ms: now,
            items: valid.items,
            pos: valid.pos,
            emv: valid.emv,
        };
        let (id, amount) = (payment.id, payment.amount);
        if self.capturing.contains_key(&id) || self.amounts.contains_key(&id) {
            // Same millisecond and same random bytes: not a second payment under one id.
            self.reply(to, Answer::rejected(None, Refusal::StorageError.as_str()), false);
            return;
        }
        // Counted against the caps now, so concurrent captures cannot overshoot them.
        self.held.add(amount);
        self.capturing.insert(id, to);
        self.retries.insert(id, Vec::new());
        self.actions.push_back(Action::Write {
            write: Write::Captured { payment, request_id },
            then: After::Captured { id, amount },
        });
    }

    /// A sale app retries a capture already taken as `id` (found by its request id), whose
    /// stored state is `stored` and amount `amount`: it gets the first capture's answer, or, for
    /// a payment never answered and not yet voided, claims it (`accepted`, through the durable
    /// mark).
    pub fn retry(
        &mut self,
        to: ReplyTo,
        id: PaymentId,
        stored: SlaveState,
        amount: Money,
        now_ms: u64,
        who: &impl Listeners,
    ) {
        if let Some(r) = self.retries.get_mut(&id) {
            r.push(to);
            return;
        }
        if let Some(r) = self.answering.get_mut(&id) {
            r.push((to, true));
            return;
        }
        self.actions.push_back(Action::Note(Note::Retried(id)));
        let state = self.state_of(id, stored);
        if let SlaveState::Captured { answered } = state {
            if !self.outbox.contains(id) {
                // Stored, but let go here (its capture write reported a failure that it
                // survived): taken up again, so that an `accepted` answer is always followed
                // by the payment being forwarded.
                self.outbox.insert(id, answered);
                if self.amounts.insert(id, amount).is_none() {
                    self.held.add(amount);
                }
            }
        }
        self.tell(id, vec![(to, true)], state, now_ms, who);
    }

    /// Where `id` stands: what this terminal decided and the store may not show yet (a
    /// settlement whose write is not applied) wins over a stored `captured`, never over a later
    /// state (a sale app's void written since).
    fn state_of(&self, id: PaymentId, stored: SlaveState) -> SlaveState {
        match (stored, self.settling.get(&id)) {
            (SlaveState::Captured { .. }, Some(settled)) => *settled,
            _ => stored,
        }
    }

    /// The one path to an `accepted` answer: write the answered mark; [`Terminal::on_written`]
    /// tells the sale apps once it is durable.
    fn tell(
        &mut self,
        id: PaymentId,
        mut to: Vec<(ReplyTo, bool)>,
        stored: SlaveState,
        now_ms: u64,
        who: &impl Listeners,
    ) {
        to.extend(self.retries.remove(&id).unwrap_or_default().into_iter().map(|r| (r, true)));
        if to.iter().all(|(r, _)| !who.listening(*r)) {
            // Nobody is listening any more: recording that a sale app is told `accepted` would
            // charge a sale nobody heard about. Leave it unanswered (claimable, else voided).
            if to.iter().any(|(_, replayed)| !replayed) {
                self.orphans.insert(id, now_ms.saturating_add(self.settings.claim_grace_ms));
            }
            return;
        }
        match stored {
            SlaveState::Refused(r) => return self.reply_all(to, || Answer::rejected(Some(id), r.as_str())),
            // Voided, or voided by its sale app since: a retry of its capture is told so.
            SlaveState::Voided { .. } | SlaveState::Cancelling | SlaveState::Cancelled { .. } => {
                return self.reply_all(to, || Answer::rejected(Some(id), RefusalReason::Voided.as_str()))
            }
            SlaveState::Captured { .. } | SlaveState::Forwarded => {}
        }
        self.orphans.remove(&id);
        // From here the payment must be carried: a refusal of its unanswered submit parks it.
        self.outbox.begin_answer(id);
        if matches!(stored, SlaveState::Captured { answered: true } | SlaveState::Forwarded) {
            self.marked_before.insert(id);
        }
        self.answering.entry(id).or_default().extend(to);
        self.actions.push_back(Action::Write {
            write: Write::State { id, state: SlaveState::Captured { answered: true } },
            then: After::Answered { id },
        });
    }

    fn reply(&mut self, to: ReplyTo, answer: Answer, replayed: bool) {
        self.actions.push_back(Action::Reply { to, answer, replayed });
    }

    fn reply_all(&mut self, to: Vec<(ReplyTo, bool)>, answer: impl Fn() -> Answer) {
        for (r, replayed) in to {
            self.reply(r, answer(), replayed);
        }
    }

    /// A write emitted earlier is durable (`Ok`) or failed.
    pub fn on_written(&mut self, then: After, result: Result<(), WriteFailure>, now_ms: u64, who: &impl Listeners) {
        match (then, result) {
            (After::Nothing | After::VoidAcked, _) => {}
            (After::Cancelling { id }, Ok(())) => {
                let wait = self.settings.verdict_wait_ms;
                let Some(c) = self.cancels.get_mut(&id) else { return };
                c.durable = true;
                for w in &mut c.waiters {
                    w.1 = Some(now_ms.saturating_add(wait));
                }
                if wait == 0 {
                    self.answer_cancel(id, VoidOutcome::ReversalPending, false);
                }
            }
            (After::Cancelling { id }, Err(failure)) => {
                // Not written: nothing changed, the sale app asks again. Written but not durable:
                // maybe on disk, so it is sent anyway (what the sale app asked for), and the sale
                // app, told `storage_error`, asks again to learn the outcome (found by review:
                // dropping it here left a void the store shows and nobody sends).
                let waiters = match failure {
                    WriteFailure::NotWritten => self.cancels.remove(&id).map(|c| c.waiters),
                    WriteFailure::NotDurable => self.cancels.get_mut(&id).map(|c| {
                        c.durable = true;
                        c.unconfirmed = true;
                        std::mem::take(&mut c.waiters)
                    }),
                };
                for (r, _) in waiters.unwrap_or_default() {
                    self.reply(r, Answer::VoidFailed { id, reason: Refusal::StorageError.as_str() }, false);
                }
            }
            (After::Settled { id }, Ok(())) => {
                self.settling.remove(&id);
            }
            // Kept: until a restart reads the store again, retries are answered from it.
            (After::Settled { .. }, Err(_)) => {}
            (After::Captured { id, amount }, Ok(())) => {
                self.capturing_durable(id, amount, now_ms, who);
            }
            (After::Captured { id, amount }, Err(_)) => {
                // The record may still reach the disk: after a restart it is a payment never
                // answered, voided unless a retry with its request id claims it.
                self.actions.push_back(Action::Note(Note::CaptureLost(id)));
                self.held.remove(amount);
                let first = self.capturing.remove(&id);
                let retries = self.retries.remove(&id).unwrap_or_default();
                for (r, replayed) in first.map(|f| (f, false)).into_iter().chain(retries.into_iter().map(|r| (r, true)))
                {
                    self.reply(r, Answer::rejected(None, Refusal::StorageError.as_str()), replayed);
                }
            }
            (After::Answered { id }, Ok(())) => {
                self.marked_before.remove(&id);
                for (r, replayed) in self.answering.remove(&id).unwrap_or_default() {
                    self.reply(r, Answer::Accepted(Told { id }), replayed);
                }
                self.outbox.mark_answered(id);
            }
            (After::Answered { id }, Err(WriteFailure::NotWritten)) if !self.marked_before.remove(&id) => {
                // Nothing reached the disk: still unanswered, claimable, else voided.
                self.outbox.abort_answer(id);
                self.orphans.insert(id, now_ms.saturating_add(self.settings.claim_grace_ms));
                let to = self.answering.remove(&id).unwrap_or_default();
                self.reply_all(to, || Answer::rejected(Some(id), Refusal::StorageError.as_str()));
            }
            (After::Answered { id }, Err(_)) => {
                // The mark may be on disk (or was already): it stays answering (carried if it
                // is), the outcome is unknown to the sale app until it retries.
                self.marked_before.remove(&id);
                let to = self.answering.remove(&id).unwrap_or_default();
                self.reply_all(to, || Answer::Unknown { id });
            }
            (After::Voided { id }, Ok(())) => {
                self.release(id);
                self.outbox.void(id);
                for r in self.voiders.remove(&id).unwrap_or_default() {
                    self.reply(r, Answer::Void { id: Some(id), outcome: VoidOutcome::Voided }, false);
                }
            }
            (After::Voided { id }, Err(_)) => {
                self.orphans.insert(id, now_ms.saturating_add(self.settings.claim_grace_ms));
                for r in self.voiders.remove(&id).unwrap_or_default() {
                    self.reply(r, Answer::VoidFailed { id, reason: Refusal::StorageError.as_str() }, false);
                }
            }
            (After::ResultStored { id }, Ok(())) => self.actions.push_back(Action::ResultAck { id }),
            // Not acked: the master pushes it again.
            (After::ResultStored { .. }, Err(_)) => {}
        }
    }

    fn capturing_durable(&mut self, id: PaymentId, amount: Money, now_ms: u64, who: &impl Listeners) {
        self.outbox.insert(id, false);
        self.amounts.insert(id, amount);
        let Some(to) = self.capturing.remove(&id) else { return };
        if self.settings.verdict_wait_ms == 0 {
            self.tell(id, vec![(to, false)], SlaveState::Captured { answered: false }, now_ms, who);
        } else {
            self.waiting.insert(id, (now_ms.saturating_add(self.settings.verdict_wait_ms), to));
        }
    }

    /// A connection to the master is up.
    pub fn on_connected(&mut self) {
        self.outbox.on_connected();
    }

    /// The connection is gone.
    pub fn on_disconnected(&mut self) {
        self.outbox.on_disconnected();
        for c in self.cancels.values_mut() {
            c.resend_at = None;
        }
    }

    /// Whether a connection to the master is up.
    pub fn is_connected(&self) -> bool {
        self.outbox.is_connected()
    }

    /// The next message for the master, if the window has room. A sale app's void goes once
    /// the master holds the payment (acked `Stored`: it has left the outbox), so the master
    /// always finds what it is asked to void.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Transmit> {
        if let Some(t) = self.outbox.poll_transmit(now_ms) {
            return Some(t);
        }
        if !self.outbox.is_connected() {
            return None;
        }
        let in_flight = self.cancels.values().filter(|c| c.resend_at.is_some()).count();
        if in_flight >= self.settings.window.max(1) {
            return None;
        }
        let outbox = &self.outbox;
        let (id, c) =
            self.cancels.iter_mut().find(|(id, c)| c.durable && c.resend_at.is_none() && !outbox.contains(**id))?;
        c.resend_at = Some(now_ms.saturating_add(self.settings.ack_timeout_ms));
        Some(Transmit::Cancel { id: *id })
    }

    /// A sale app asks to void a payment: `found` is its id and stored state (looked up by its
    /// payment id or request id), `None` when there is no such payment.
    ///
    /// Never answered `accepted`: voided here like an orphan (never carried). Answered: the
    /// void is recorded durably, then the master is told once it holds the payment; it voids it
    /// if not yet sealed, else has the issuer reverse it. The sale app hears the master's
    /// answer, or `reversal_pending` if none comes within the verdict wait.
    pub fn void(&mut self, to: ReplyTo, found: Option<(PaymentId, SlaveState)>) {
        let Some((id, stored)) = found else {
            return self.reply(to, Answer::Void { id: None, outcome: VoidOutcome::UnknownPayment }, false);
        };
        let busy = self.capturing.contains_key(&id)
            || self.waiting.contains_key(&id)
            || self.answering.contains_key(&id)
            || self.retries.contains_key(&id)
            || self.voiders.contains_key(&id);
        let state = self.state_of(id, stored);
        // A repeated void is answered what the first would be told now: never carried
        // (`already_voided`), or a reversal on its way (`reversal_pending`).
        let repeat = |outcome| Answer::Void { id: Some(id), outcome };
        match state {
            SlaveState::Refused(_) | SlaveState::Voided { .. } | SlaveState::Cancelled { reversal: false } => {
                self.reply(to, repeat(VoidOutcome::AlreadyVoided), false)
            }
            SlaveState::Cancelled { reversal: true } => self.reply(to, repeat(VoidOutcome::ReversalPending), false),
            SlaveState::Cancelling => match self.cancels.get_mut(&id) {
                // Asked again while the first is being written: the same answer when it comes.
                Some(c) if !c.durable => c.waiters.push((to, None)),
                Some(c) if !c.unconfirmed => self.reply(to, repeat(VoidOutcome::ReversalPending), false),
                // Not known durable, or answered by the master and its answer not stored (a
                // failing store): not known until a restart reads the store.
                _ => self.reply(to, Answer::VoidFailed { id, reason: Refusal::StorageError.as_str() }, false),
            },
            _ if busy => self.reply(to, Answer::VoidFailed { id, reason: "void_in_progress" }, false),
            SlaveState::Captured { answered: false } => {
                if !self.outbox.can_void(id) {
                    return self.reply(to, Answer::VoidFailed { id, reason: "void_in_progress" }, false);
                }
                self.orphans.remove(&id);
                self.voiders.entry(id).or_default().push(to);
                self.outbox.hold(id);
                self.actions.push_back(Action::Write {
                    write: Write::State { id, state: SlaveState::Voided { master_acked: false } },
                    then: After::Voided { id },
                });
            }
            SlaveState::Captured { answered: true } | SlaveState::Forwarded => {
                self.cancels.insert(id, Cancel { waiters: vec![(to, None)], ..Cancel::default() });
                self.actions.push_back(Action::Write {
                    write: Write::State { id, state: SlaveState::Cancelling },
                    then: After::Cancelling { id },
                });
            }
        }
    }

    /// The master's answer to a sale app's void.
    pub fn on_cancel_ack(&mut self, id: PaymentId, outcome: CancelOutcome) {
        if !self.cancels.get(&id).is_some_and(|c| c.durable) {
            return;
        }
        let reversal = outcome == CancelOutcome::ReversalPending;
        self.actions.push_back(Action::Write {
            write: Write::State { id, state: SlaveState::Cancelled { reversal } },
            then: After::Nothing,
        });
        let outcome = if reversal { VoidOutcome::ReversalPending } else { VoidOutcome::Voided };
        self.answer_cancel(id, outcome, true);
    }

    /// Tells the sale apps waiting on `id`'s void; `done`: the master answered, it is settled.
    fn answer_cancel(&mut self, id: PaymentId, outcome: VoidOutcome, done: bool) {
        let waiters = if done {
            self.cancels.remove(&id).map(|c| c.waiters).unwrap_or_default()
        } else {
            self.cancels.get_mut(&id).map(|c| std::mem::take(&mut c.waiters)).unwrap_or_default()
        };
        if !waiters.is_empty() || done {
            self.actions.push_back(Action::Note(Note::Cancelled(id, outcome)));
        }
        for (r, _) in waiters {
            self.reply(r, Answer::Void { id: Some(id), outcome }, false);
        }
    }

    /// The master's verdict on a submitted payment.
    pub fn on_verdict(&mut self, id: PaymentId, verdict: Verdict, now_ms: u64, who: &impl Listeners) {
        if verdict == Verdict::Refused(RefusalReason::Voided) && self.cancels.contains_key(&id) {
            // Sent again after a restart, and the master had already voided it at the sale
            // app's request: settled; the `Cancel` goes next and is answered `voided`.
            self.outbox.settle(id);
            self.release(id);
            return;
        }
        if verdict == Verdict::Refused(RefusalReason::Voided) && self.outbox.is_answered(id) {
            // The master voids an answered payment only at its sale app's request: this
            // terminal sent the `Cancel`, and a crash lost its unconfirmed void mark (found by
            // the model: re-sent answered, refused `voided`, forever). Settled as voided.
            self.outbox.settle(id);
            self.release(id);
            self.actions.push_back(Action::Note(Note::Cancelled(id, VoidOutcome::Voided)));
            self.actions.push_back(Action::Write {
                write: Write::State { id, state: SlaveState::Cancelled { reversal: false } },
                then: After::Nothing,
            });
            return;
        }
        let settled = self.outbox.on_verdict(id, verdict);
        let state = match settled {
            Settled::Unknown | Settled::Resubmit | Settled::Voided { .. } => return,
            // The master holds it; it carries it only once told the sale app was answered.
            Settled::AwaitingAnswer => {
                if let Some((_, to)) = self.waiting.remove(&id) {
                    self.tell(id, vec![(to, false)], SlaveState::Captured { answered: false }, now_ms, who);
                }
                return;
            }
            Settled::Forwarded => SlaveState::Forwarded,
            Settled::Refused(r) => SlaveState::Refused(r),
        };
        self.settling.insert(id, state);
        self.actions.push_back(Action::Write { write: Write::Settle { id, state }, then: After::Settled { id } });
        self.release(id);
        self.orphans.remove(&id);
        if let Some((_, to)) = self.waiting.remove(&id) {
            match settled {
                Settled::Refused(r) => {
                    let retries = self.retries.remove(&id).unwrap_or_default();
                    self.reply(to, Answer::rejected(Some(id), r.as_str()), false);
                    for r2 in retries {
                        self.reply(r2, Answer::rejected(Some(id), r.as_str()), true);
                    }
                }
                // The master carries it (it was told the sale app was answered: a master
                // that is not honest): the sale app is told `accepted`, through the mark.
                _ => self.tell(id, vec![(to, false)], SlaveState::Forwarded, now_ms, who),
            }
        }
    }

    /// The master's answer to a void.
    pub fn on_void_ack(&mut self, id: PaymentId, carried: bool) {
        if let Settled::Voided { carried } = self.outbox.on_void_ack(id, carried) {
            if carried {
                self.actions.push_back(Action::Note(Note::VoidCarried(id)));
            }
            self.actions.push_back(Action::Write {
                write: Write::State { id, state: SlaveState::Voided { master_acked: true } },
                then: After::VoidAcked,
            });
        }
    }

    /// The issuer's decision on one of this terminal's payments: stored, then acked. The master
    /// evidently holds the payment, so it is settled now (its ack may have been lost): a
    /// re-send would find its card data erased by the result's write. If that write is lost in
    /// a crash, the payment is restored unsettled and sent again, and the master repeats itself.
    pub fn on_result(&mut self, id: PaymentId, outcome: AuthOutcome) {
        if self.outbox.on_verdict(id, Verdict::Stored) == Settled::Forwarded {
            self.release(id);
        }
        self.actions
            .push_back(Action::Write { write: Write::Result { id, outcome }, then: After::ResultStored { id } });
    }

    /// The master's clock minus ours, learnt at `Hello`.
    pub fn on_clock_offset(&mut self, offset_ms: i64) {
        self.clock_offset_ms = Some(offset_ms);
    }

    /// The clock offset in force.
    pub fn clock_offset_ms(&self) -> Option<i64> {
        self.clock_offset_ms
    }

    /// Whether `list` (signature already verified) should replace the one held.
    pub fn prefers(&self, list: &BinList, local_unix_ms: u64) -> bool {
        crate::binlist::prefer(self.bins.as_ref(), list, self.sane_now(local_unix_ms))
    }

    /// Installs a list (stored first by the driver, or restored).
    pub fn install_bin_list(&mut self, list: Option<BinList>) {
        self.bins = list;
    }

    /// The list in force.
    pub fn bin_list(&self) -> Option<&BinList> {
        self.bins.as_ref()
    }

    /// Whether `list` (verified) should replace the hot-card list held.
    pub fn prefers_hot_list(&self, list: &crate::hotlist::HotSet, local_unix_ms: u64) -> bool {
        crate::hotlist::prefer(self.hot.as_ref(), list, self.sane_now(local_unix_ms))
    }

    /// Installs a hot-card list (stored first by the driver, or restored).
    pub fn install_hot_list(&mut self, list: Option<crate::hotlist::HotSet>) {
        self.hot = list;
    }

    /// The hot-card list in force.
    pub fn hot_list(&self) -> Option<&crate::hotlist::HotSet> {
        self.hot.as_ref()
    }

    /// When [`Terminal::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        let outbox = self.outbox.poll_timeout();
        let waiter = self.waiting.values().map(|(d, _)| *d).min();
        let orphan = self.orphans.values().min().copied();
        let cancel = self
            .cancels
            .values()
            .flat_map(|c| c.resend_at.into_iter().chain(c.waiters.iter().filter_map(|w| w.1)))
            .min();
        [outbox, waiter, orphan, cancel].into_iter().flatten().min()
    }

    /// Re-sends overdue messages, answers captures whose verdict wait ran out, voids orphans
    /// whose claim period ended.
    pub fn handle_timeout(&mut self, now_ms: u64, who: &impl Listeners) {
        self.outbox.handle_timeout(now_ms);
        let due: Vec<PaymentId> = self.waiting.iter().filter(|(_, (d, _))| *d <= now_ms).map(|(id, _)| *id).collect();
        for id in due {
            if let Some((_, to)) = self.waiting.remove(&id) {
                // The verdict wait ran out: the payment is durable here and will be forwarded.
                self.tell(id, vec![(to, false)], SlaveState::Captured { answered: false }, now_ms, who);
            }
        }
        let orphans: Vec<PaymentId> = self.orphans.iter().filter(|(_, d)| **d <= now_ms).map(|(id, _)| *id).collect();
        for id in orphans {
            self.void_orphan(id);
        }
        let mut overdue = Vec::new();
        for (id, c) in &mut self.cancels {
            if c.resend_at.is_some_and(|t| t <= now_ms) {
                c.resend_at = None;
            }
            let (due, keep): (Vec<_>, Vec<_>) = c.waiters.drain(..).partition(|w| w.1.is_some_and(|d| d <= now_ms));
            c.waiters = keep;
            overdue.extend(due.into_iter().map(|(r, _)| (*id, r)));
        }
        for (id, r) in overdue {
            // The master did not answer in time: the void is durable here and will reach it.
            self.actions.push_back(Action::Note(Note::Cancelled(id, VoidOutcome::ReversalPending)));
            self.reply(r, Answer::Void { id: Some(id), outcome: VoidOutcome::ReversalPending }, false);
        }
    }

    /// Voids a payment whose sale app was never answered and that no retry claimed: it is
    /// marked voided durably (card data erased) before the master is told, so a void the master
    /// heard of is never undone by a restart.
    fn void_orphan(&mut self, id: PaymentId) {
        self.orphans.remove(&id);
        if self.retries.contains_key(&id) || self.waiting.contains_key(&id) || self.answering.contains_key(&id) {
            return;
        }
        if !self.outbox.can_void(id) {
            return;
        }
        // Its submit must not go out once the void's write has erased its card data.
        self.outbox.hold(id);
        self.actions.push_back(Action::Note(Note::VoidedOrphan(id)));
        self.actions.push_back(Action::Write {
            write: Write::State { id, state: SlaveState::Voided { master_acked: false } },
            then: After::Voided { id },
        });
    }

    /// Shutdown: every capture still waiting for a verdict is durable and queued, so it is
    /// answered `accepted` — through the same durable mark as every other answer.
    pub fn drain_waiting(&mut self, now_ms: u64, who: &impl Listeners) {
        let waiting = std::mem::take(&mut self.waiting);
        for (id, (_, to)) in waiting {
            self.tell(id, vec![(to, false)], SlaveState::Captured { answered: false }, now_ms, who);
        }
    }

    /// Payments whose answered mark is written and not yet reported durable (shutdown waits
    /// for them, so their sale apps are still answered).
    pub fn answering_ids(&self) -> Vec<PaymentId> {
        self.answering.keys().copied().collect()
    }

    /// Releases a settled payment's amount from the terminal's caps.
    fn release(&mut self, id: PaymentId) {
        if let Some(amount) = self.amounts.remove(&id) {
            self.held.remove(amount);
        }
    }

    /// Payments not yet settled with the master.
    pub fn unsettled(&self) -> usize {
        self.outbox.len()
    }

    /// Sale apps' voids the master has not answered yet.
    pub fn voids_unsettled(&self) -> usize {
        self.cancels.len()
    }

    /// Messages in flight to the master.
    pub fn in_flight(&self) -> usize {
        self.outbox.in_flight()
    }

    /// Payments the master holds that wait for their sale app's answer.
    pub fn parked(&self) -> usize {
        self.outbox.parked()
    }

    /// Payments never answered that nobody waits for.
    pub fn never_answered(&self) -> usize {
        self.orphans.len()
    }

    /// What the terminal holds un-forwarded.
    pub fn holdings(&self) -> &Holdings {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use inflight_wire::{BinPrefix, BinRule, CardKind, Currency, Money};

    use super::*;

    const T0: u64 = 1_795_564_800_000;

    fn settings(verdict_wait_ms: u64) -> Settings {
        Settings {
            window: 8,
            ack_timeout_ms: 1_000,
            verdict_wait_ms,
            claim_grace_ms: 5_000,
            caps: TerminalCaps {
                stored_payments_max: 100,
                stored_amount_minor_max: 1_000_000,
                txn_amount_minor_max: 100_000,
            },
            site: Site::default(),
        }
    }

    fn terminal(verdict_wait_ms: u64) -> Terminal {
        let mut t = Terminal::new(TerminalId::parse("t-1").expect("id"), settings(verdict_wait_ms));
        let eur = Currency::parse("EUR").expect("eur");
        t.install_bin_list(Some(BinList {
            version: 1,
            issuer: "test".into(),
            valid_from_unix_ms: 0,
            valid_until_unix_ms: u64::MAX,
            rules: vec![BinRule {
                prefix: BinPrefix::parse("411111").expect("bin"),
                kind: CardKind::Credit,
                txn_limit_minor: 100_000,
                card_flight_limit_minor: 1_000_000,
                currencies: vec![eur],
                cvm_required: false,
                entry_modes: inflight_wire::EntryMode::ALL.to_vec(),
            }],
        }));
        t
    }

    fn req() -> CaptureRequest {
        CaptureRequest {
            pan: "4111111111111111".into(),
            expiry: "12/30".into(),
            amount_minor: 500,
            currency: "EUR".into(),
            seat: "12A".into(),
            items: vec![],
            emv: None,
            entry_mode: None,
            mcc: None,
        }
    }

    fn actions(t: &mut Terminal) -> Vec<Action> {
        t.drain_actions().filter(|a| !matches!(a, Action::Note(_))).collect()
    }

    /// Takes one capture up to its durable write; returns its id.
    fn captured(t: &mut Terminal, to: ReplyTo) -> PaymentId {
        t.capture(to, &req(), Some(format!("r{to}")), [to as u8; 10], T0);
        let acts = actions(t);
        let [Action::Write { write: Write::Captured { payment, .. }, then }] = acts.as_slice() else {
            panic!("expected one capture write, got {acts:?}")
        };
        let id = payment.id;
        t.on_written(then.clone(), Ok(()), 0, &AllListening);
        id
    }

    #[test]
    fn accepted_only_once_the_answered_mark_is_durable() {
        let mut t = terminal(0);
        let id = captured(&mut t, 1);
        let acts = actions(&mut t);
        assert_eq!(
            acts,
            vec![Action::Write {
                write: Write::State { id, state: SlaveState::Captured { answered: true } },
                then: After::Answered { id },
            }],
            "the mark is written, nobody is told yet"
        );
        t.on_written(After::Answered { id }, Ok(()), 0, &AllListening);
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply { to: 1, answer: Answer::Accepted(Told { id }), replayed: false }]
        );
    }

    #[test]
    fn a_mark_that_never_becomes_durable_is_never_answered_accepted() {
        let mut t = terminal(0);
        let id = captured(&mut t, 1);
        actions(&mut t);
        t.on_written(After::Answered { id }, Err(WriteFailure::NotDurable), 0, &AllListening);
        assert_eq!(actions(&mut t), vec![Action::Reply { to: 1, answer: Answer::Unknown { id }, replayed: false }]);
        let id2 = captured(&mut t, 2);
        actions(&mut t);
        t.on_written(After::Answered { id: id2 }, Err(WriteFailure::NotWritten), 0, &AllListening);
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply { to: 2, answer: Answer::rejected(Some(id2), "storage_error"), replayed: false }]
        );
        // Not written at all: it is claimable again, then voided.
        t.handle_timeout(10_000, &AllListening);
        assert!(matches!(
            actions(&mut t).as_slice(),
            [Action::Write { write: Write::State { state: SlaveState::Voided { master_acked: false }, .. }, .. }]
        ));
    }

    #[test]
    fn a_verdict_within_the_wait_answers_the_sale_app() {
        let mut t = terminal(1_000);
        let id = captured(&mut t, 1);
        assert_eq!(actions(&mut t), vec![], "waiting for the verdict");
        t.on_connected();
        assert_eq!(t.poll_transmit(0), Some(Transmit::Submit { id, answered: false }));
        let refused = Verdict::Refused(RefusalReason::OverCardFlightLimit);
        t.on_verdict(id, refused, 10, &AllListening);
        let acts = actions(&mut t);
        assert_eq!(
            acts[0],
            Action::Write {
                write: Write::Settle { id, state: SlaveState::Refused(RefusalReason::OverCardFlightLimit) },
                then: After::Settled { id }
            }
        );
        assert_eq!(
            acts[1],
            Action::Reply { to: 1, answer: Answer::rejected(Some(id), "over_card_flight_limit"), replayed: false }
        );
        assert_eq!(t.holdings().payments, 0, "released");
        // Held: told accepted through the mark.
        let id2 = captured(&mut t, 2);
        assert_eq!(t.poll_transmit(0), Some(Transmit::Submit { id: id2, answered: false }));
        t.on_verdict(id2, Verdict::Held, 10, &AllListening);
        assert!(matches!(actions(&mut t).as_slice(), [Action::Write { then: After::Answered { .. }, .. }]));
    }

    #[test]
    fn nobody_listening_means_no_mark_and_a_void_after_the_grace() {
        struct Gone;
        impl Listeners for Gone {
            fn listening(&self, _: ReplyTo) -> bool {
                false
            }
        }
        let mut t = terminal(0);
        t.capture(1, &req(), None, [1; 10], T0);
        let Some(Action::Write { then, .. }) = t.poll_action() else { panic!("capture write") };
        t.on_written(then, Ok(()), 0, &Gone);
        assert_eq!(actions(&mut t), vec![], "no mark for a sale app that left");
        assert_eq!(t.never_answered(), 1);
        t.handle_timeout(5_000, &Gone);
        assert!(matches!(
            actions(&mut t).as_slice(),
            [Action::Write {
                write: Write::State { state: SlaveState::Voided { master_acked: false }, .. },
                then: After::Voided { .. }
            }]
        ));
    }

    #[test]
    fn a_retry_claims_an_unanswered_payment_or_learns_its_settlement() {
        let mut t = terminal(0);
        let id = PaymentId::mint(T0, [9; 10]);
        t.restore(
            id,
            inflight_wire::Money::new(500, Currency::parse("EUR").expect("eur")).expect("m"),
            SlaveState::Captured { answered: false },
            true,
            0,
        );
        assert_eq!(t.never_answered(), 1);
        let m = Money::new(500, Currency::parse("EUR").expect("eur")).expect("m");
        t.retry(7, id, SlaveState::Captured { answered: false }, m, 1, &AllListening);
        assert!(matches!(actions(&mut t).as_slice(), [Action::Write { then: After::Answered { .. }, .. }]));
        t.retry(8, id, SlaveState::Captured { answered: true }, m, 1, &AllListening);
        assert_eq!(actions(&mut t), vec![], "joins the answer being recorded");
        t.on_written(After::Answered { id }, Ok(()), 2, &AllListening);
        assert_eq!(
            actions(&mut t),
            vec![
                Action::Reply { to: 7, answer: Answer::Accepted(Told { id }), replayed: true },
                Action::Reply { to: 8, answer: Answer::Accepted(Told { id }), replayed: true },
            ]
        );
        assert_eq!(t.never_answered(), 0, "claimed, never voided");
        t.retry(9, id, SlaveState::Voided { master_acked: true }, m, 3, &AllListening);
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply { to: 9, answer: Answer::rejected(Some(id), "voided"), replayed: true }]
        );
    }

    #[test]
    fn a_hot_card_is_refused_at_once_and_nothing_is_stored() {
        let mut t = terminal(0);
        t.install_hot_list(Some(crate::hotlist::test_set(&["4111111111111111"])));
        t.capture(1, &req(), None, [1; 10], T0);
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply { to: 1, answer: Answer::rejected(None, "hot_card"), replayed: false }]
        );
        assert_eq!(t.holdings().payments, 0, "a refused card holds nothing against the caps");
        // Another card (same BIN) passes: the list names cards, not ranges.
        t.capture(2, &CaptureRequest { pan: "4111111111111129".into(), ..req() }, None, [2; 10], T0);
        assert!(
            t.drain_actions().any(|a| matches!(a, Action::Write { .. })),
            "a card not on the list goes on to be stored"
        );
    }

    #[test]
    fn bad_request_ids_and_refusals_are_answered_at_once() {
        let mut t = terminal(0);
        t.capture(1, &req(), Some(String::new()), [1; 10], T0);
        t.capture(2, &req(), Some("x".repeat(65)), [1; 10], T0);
        t.install_bin_list(None);
        t.capture(3, &req(), None, [1; 10], T0);
        assert_eq!(
            actions(&mut t),
            vec![
                Action::Reply { to: 1, answer: Answer::rejected(None, "bad_request_id"), replayed: false },
                Action::Reply { to: 2, answer: Answer::rejected(None, "bad_request_id"), replayed: false },
                Action::Reply { to: 3, answer: Answer::rejected(None, "no_valid_bin_list"), replayed: false },
            ]
        );
    }

    /// Found by the simulator (seed 153): a result pushed by the master reached a terminal that
    /// had just restarted and still had the payment queued; the result's write erased the card
    /// data, and the queued submit found none ("payment in the outbox has no card data", an
    /// error, then a needless re-send cycle). A result settles the payment at once: the master
    /// evidently holds it.
    #[test]
    fn a_result_settles_its_payment_before_it_is_sent_again() {
        let mut t = terminal(0);
        let id = PaymentId::mint(T0, [3; 10]);
        let eur = Currency::parse("EUR").expect("eur");
        t.restore(
            id,
            inflight_wire::Money::new(500, eur).expect("m"),
            SlaveState::Captured { answered: true },
            true,
            0,
        );
        t.on_connected();
        t.on_result(id, AuthOutcome::Declined(inflight_wire::DeclineReason::InsufficientFunds));
        assert_eq!(t.poll_transmit(0), None, "nothing to send: the master has it");
        assert_eq!(t.unsettled(), 0);
        assert_eq!(t.holdings().payments, 0, "released");
    }

    /// Found by the model simulator (seed 1697): the master refused a payment (`aircraft_full`),
    /// the terminal settled it in memory, and the store refused the write recording that. A
    /// retry with the sale's request id read the store (still `captured`), claimed the payment
    /// and answered `accepted` — for a payment the outbox had let go: never forwarded.
    #[test]
    fn a_settlement_not_yet_on_disk_still_answers_retries() {
        let mut t = terminal(0);
        let eur = Currency::parse("EUR").expect("eur");
        let id = PaymentId::mint(T0, [5; 10]);
        t.restore(id, Money::new(500, eur).expect("m"), SlaveState::Captured { answered: false }, true, 0);
        t.on_connected();
        assert_eq!(t.poll_transmit(0), Some(Transmit::Submit { id, answered: false }));
        t.on_verdict(id, Verdict::Refused(RefusalReason::AircraftFull), 1, &AllListening);
        let settle = actions(&mut t);
        let [Action::Write { write: Write::Settle { .. }, then }] = settle.as_slice() else { panic!("{settle:?}") };
        t.on_written(then.clone(), Err(WriteFailure::NotWritten), 2, &AllListening);
        t.retry(7, id, SlaveState::Captured { answered: false }, Money::new(500, eur).expect("m"), 3, &AllListening);
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply { to: 7, answer: Answer::rejected(Some(id), "aircraft_full"), replayed: true }]
        );
    }

    /// The same class: a capture whose write did not become durable is answered
    /// `storage_error` and let go; a retry that finds it on disk after all takes it up again, so
    /// an `accepted` answer is always followed by the payment being forwarded.
    #[test]
    fn a_retry_takes_up_a_payment_the_terminal_had_let_go() {
        let mut t = terminal(0);
        t.capture(1, &req(), Some("r1".into()), [1; 10], T0);
        let Some(Action::Write { write: Write::Captured { payment, .. }, then }) = t.poll_action() else {
            panic!("capture write")
        };
        t.on_written(then, Err(WriteFailure::NotDurable), 0, &AllListening);
        assert!(matches!(actions(&mut t).as_slice(), [Action::Reply { answer: Answer::Rejected { .. }, .. }]));
        assert_eq!(t.unsettled(), 0);
        t.retry(2, payment.id, SlaveState::Captured { answered: false }, payment.amount, 1, &AllListening);
        assert!(matches!(actions(&mut t).as_slice(), [Action::Write { then: After::Answered { .. }, .. }]));
        t.on_written(After::Answered { id: payment.id }, Ok(()), 2, &AllListening);
        assert!(matches!(actions(&mut t).as_slice(), [Action::Reply { answer: Answer::Accepted(_), .. }]));
        t.on_connected();
        assert_eq!(t.poll_transmit(3), Some(Transmit::Submit { id: payment.id, answered: true }), "forwarded");
        assert_eq!(t.holdings().payments, 1, "counted against the caps again");
    }

    /// Found by the model simulator (seed 7027): the answered mark was durable (the sale app's
    /// answer lost in a crash, the payment carried), a retry wrote the mark again, the store
    /// refused that write, and the sale app was told `rejected` — for a payment being charged.
    /// A mark already on record is not undone by a failed repeat of it: the outcome is
    /// `unknown` (retry), never `rejected`.
    #[test]
    fn a_failed_repeat_of_a_mark_on_record_is_never_a_rejection() {
        let mut t = terminal(0);
        let id = PaymentId::mint(T0, [6; 10]);
        let m = Money::new(500, Currency::parse("EUR").expect("eur")).expect("m");
        t.restore(id, m, SlaveState::Captured { answered: true }, true, 0);
        t.retry(4, id, SlaveState::Captured { answered: true }, m, 1, &AllListening);
        assert!(matches!(actions(&mut t).as_slice(), [Action::Write { then: After::Answered { .. }, .. }]));
        t.on_written(After::Answered { id }, Err(WriteFailure::NotWritten), 2, &AllListening);
        assert_eq!(actions(&mut t), vec![Action::Reply { to: 4, answer: Answer::Unknown { id }, replayed: true }]);
        assert_eq!(t.never_answered(), 0, "answered: never voided");
    }

    /// Found by the model simulator (seed 12239): a payment being voided was still queued, and
    /// its submit went out after the void's write had erased its card data ("no card data",
    /// an error). A payment being voided sends nothing until the void is durable, then its void.
    /// Takes a capture to `accepted` (mark durable); returns its id.
    fn accepted(t: &mut Terminal, to: ReplyTo) -> PaymentId {
        let id = captured(t, to);
        t.drain_waiting(0, &AllListening);
        actions(t);
        t.on_written(After::Answered { id }, Ok(()), 0, &AllListening);
        actions(t);
        id
    }

    #[test]
    fn a_sale_app_s_void_goes_to_the_master_only_once_durable_and_once_the_master_holds_it() {
        let mut t = terminal(1_000);
        let id = accepted(&mut t, 1);
        t.on_connected();
        assert_eq!(t.poll_transmit(0), Some(Transmit::Submit { id, answered: true }));
        t.void(2, Some((id, SlaveState::Captured { answered: true })));
        assert_eq!(
            actions(&mut t),
            vec![Action::Write {
                write: Write::State { id, state: SlaveState::Cancelling },
                then: After::Cancelling { id }
            }],
            "the void is written first; nobody is told"
        );
        assert_eq!(t.poll_transmit(0), None, "not before the void is durable");
        t.on_written(After::Cancelling { id }, Ok(()), 10, &AllListening);
        assert_eq!(t.poll_transmit(10), None, "not before the master acked the payment");
        t.on_verdict(id, Verdict::Stored, 20, &AllListening);
        actions(&mut t);
        assert_eq!(t.poll_transmit(20), Some(Transmit::Cancel { id }));
        assert_eq!(t.poll_transmit(20), None, "once in flight");
        t.on_cancel_ack(id, CancelOutcome::ReversalPending);
        assert_eq!(
            actions(&mut t),
            vec![
                Action::Write {
                    write: Write::State { id, state: SlaveState::Cancelled { reversal: true } },
                    then: After::Nothing
                },
                Action::Reply {
                    to: 2,
                    answer: Answer::Void { id: Some(id), outcome: VoidOutcome::ReversalPending },
                    replayed: false
                },
            ]
        );
        t.on_cancel_ack(id, CancelOutcome::ReversalPending);
        assert!(actions(&mut t).is_empty(), "a repeated ack changes nothing");
        t.void(3, Some((id, SlaveState::Cancelled { reversal: true })));
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply {
                to: 3,
                answer: Answer::Void { id: Some(id), outcome: VoidOutcome::ReversalPending },
                replayed: false
            }],
            "a repeat is told what the first would be now: a reversal is on its way"
        );
        t.void(4, Some((id, SlaveState::Cancelled { reversal: false })));
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply {
                to: 4,
                answer: Answer::Void { id: Some(id), outcome: VoidOutcome::AlreadyVoided },
                replayed: false
            }]
        );
    }

    #[test]
    fn a_void_the_master_does_not_answer_in_time_is_told_reversal_pending_and_sent_again() {
        let mut t = terminal(1_000);
        let id = accepted(&mut t, 1);
        t.on_connected();
        assert_eq!(t.poll_transmit(0), Some(Transmit::Submit { id, answered: true }));
        t.on_verdict(id, Verdict::Stored, 0, &AllListening);
        actions(&mut t);
        t.void(2, Some((id, SlaveState::Forwarded)));
        actions(&mut t);
        t.on_written(After::Cancelling { id }, Ok(()), 0, &AllListening);
        assert_eq!(t.poll_transmit(0), Some(Transmit::Cancel { id }));
        t.handle_timeout(1_000, &AllListening);
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply {
                to: 2,
                answer: Answer::Void { id: Some(id), outcome: VoidOutcome::ReversalPending },
                replayed: false
            }]
        );
        assert_eq!(t.poll_transmit(1_000), Some(Transmit::Cancel { id }), "sent again after the ack timeout");
        t.on_disconnected();
        t.on_connected();
        assert_eq!(t.poll_transmit(1_001), Some(Transmit::Cancel { id }), "and after a reconnect");
    }

    #[test]
    fn a_void_of_a_payment_never_answered_is_an_orphan_void_and_a_failed_void_write_says_so() {
        let mut t = terminal(5_000);
        let id = captured(&mut t, 1);
        t.void(2, Some((id, SlaveState::Captured { answered: false })));
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply {
                to: 2,
                answer: Answer::VoidFailed { id, reason: "void_in_progress" },
                replayed: false
            }],
            "its capture is still waiting for the master's verdict"
        );
        t.handle_timeout(5_000, &AllListening);
        actions(&mut t);
        t.on_written(After::Answered { id }, Ok(()), 5_000, &AllListening);
        actions(&mut t);
        t.void(3, Some((id, SlaveState::Captured { answered: true })));
        actions(&mut t);
        t.on_written(After::Cancelling { id }, Err(WriteFailure::NotWritten), 5_000, &AllListening);
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply { to: 3, answer: Answer::VoidFailed { id, reason: "storage_error" }, replayed: false }]
        );
        t.on_connected();
        assert_eq!(t.poll_transmit(5_000), Some(Transmit::Submit { id, answered: true }), "still carried");
        assert_eq!(t.poll_transmit(5_000), None, "no void goes out");
        // Written but not made durable (a failing disk): maybe on disk, so it goes out anyway;
        // the sale app is told to ask again (found by review).
        t.void(6, Some((id, SlaveState::Captured { answered: true })));
        actions(&mut t);
        t.on_written(After::Cancelling { id }, Err(WriteFailure::NotDurable), 5_000, &AllListening);
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply { to: 6, answer: Answer::VoidFailed { id, reason: "storage_error" }, replayed: false }]
        );
        t.on_verdict(id, Verdict::Stored, 5_000, &AllListening);
        actions(&mut t);
        assert_eq!(t.poll_transmit(5_000), Some(Transmit::Cancel { id }));
        t.void(7, Some((id, SlaveState::Cancelling)));
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply { to: 7, answer: Answer::VoidFailed { id, reason: "storage_error" }, replayed: false }],
            "not known durable: never told it is under way"
        );

        let mut t = terminal(0);
        let id = captured(&mut t, 1);
        // Nobody heard it (the sale app left): never answered, then voided by the sale app.
        t.drain_actions().for_each(drop);
        t.on_written(After::Answered { id }, Err(WriteFailure::NotWritten), 0, &AllListening);
        actions(&mut t);
        t.void(4, Some((id, SlaveState::Captured { answered: false })));
        assert_eq!(
            actions(&mut t),
            vec![Action::Write {
                write: Write::State { id, state: SlaveState::Voided { master_acked: false } },
                then: After::Voided { id }
            }]
        );
        t.on_written(After::Voided { id }, Ok(()), 0, &AllListening);
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply {
                to: 4,
                answer: Answer::Void { id: Some(id), outcome: VoidOutcome::Voided },
                replayed: false
            }]
        );
        t.void(5, None);
        assert_eq!(
            actions(&mut t),
            vec![Action::Reply {
                to: 5,
                answer: Answer::Void { id: None, outcome: VoidOutcome::UnknownPayment },
                replayed: false
            }]
        );
    }

    #[test]
    fn a_void_restored_after_a_restart_sends_the_payment_first_and_settles_on_voided() {
        let mut t = terminal(0);
        let id = PaymentId::mint(T0, [7; 10]);
        let amount = Money::new(500, Currency::parse("EUR").expect("eur")).expect("money");
        t.restore(id, amount, SlaveState::Cancelling, true, 0);
        t.on_connected();
        assert_eq!(t.poll_transmit(0), Some(Transmit::Submit { id, answered: true }));
        assert_eq!(t.poll_transmit(0), None);
        // The master had voided it already: its answer settles the submit, the void goes next.
        t.on_verdict(id, Verdict::Refused(RefusalReason::Voided), 0, &AllListening);
        assert_eq!(t.poll_transmit(0), Some(Transmit::Cancel { id }));
        assert_eq!(t.poll_transmit(0), None, "no re-submit loop");
        t.on_cancel_ack(id, CancelOutcome::Voided);
        assert_eq!(
            actions(&mut t),
            vec![Action::Write {
                write: Write::State { id, state: SlaveState::Cancelled { reversal: false } },
                then: After::Nothing
            }]
        );
        assert_eq!(t.holdings().payments, 0, "its amount is released");
    }

    /// Found by the model: a void restored after a restart, of a payment whose result (and so
    /// the erasure of its card data) was already stored, was put in the outbox; its submit could
    /// not be built, so neither it nor the void ever went out.
    #[test]
    fn a_void_restored_without_card_data_sends_only_the_void() {
        let mut t = terminal(0);
        let id = PaymentId::mint(T0, [8; 10]);
        let amount = Money::new(500, Currency::parse("EUR").expect("eur")).expect("money");
        t.restore(id, amount, SlaveState::Cancelling, false, 0);
        t.on_connected();
        assert_eq!(t.poll_transmit(0), Some(Transmit::Cancel { id }));
        assert_eq!(t.unsettled(), 0);
    }

    #[test]
    fn a_payment_being_voided_sends_nothing_until_the_void_is_durable() {
        let mut t = terminal(0);
        let id = PaymentId::mint(T0, [8; 10]);
        let m = Money::new(500, Currency::parse("EUR").expect("eur")).expect("m");
        t.restore(id, m, SlaveState::Captured { answered: false }, true, 0);
        t.handle_timeout(5_000, &AllListening);
        assert!(matches!(actions(&mut t).as_slice(), [Action::Write { then: After::Voided { .. }, .. }]));
        t.on_connected();
        assert_eq!(t.poll_transmit(5_000), None, "neither its submit nor, yet, its void");
        t.on_written(After::Voided { id }, Ok(()), 5_001, &AllListening);
        assert_eq!(t.poll_transmit(5_001), Some(Transmit::Void { id }));
    }

    mod property {
        use std::collections::{BTreeMap, BTreeSet};

        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// A new sale (with a request id or not).
            Capture(bool),
            /// A sale retries with its request id.
            Retry(prop::sample::Index),
            /// The next pending write becomes durable, or fails.
            Flush(Option<bool>),
            Connect,
            Disconnect,
            Send,
            /// The master answers the oldest message sent: `refuse` new unanswered ones.
            Answer(bool),
            Tick(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                any::<bool>().prop_map(Op::Capture),
                any::<prop::sample::Index>().prop_map(Op::Retry),
                prop_oneof![Just(None), any::<bool>().prop_map(Some)].prop_map(Op::Flush),
                Just(Op::Flush(None)),
                Just(Op::Flush(None)),
                Just(Op::Connect),
                Just(Op::Disconnect),
                Just(Op::Send),
                any::<bool>().prop_map(Op::Answer),
                (0u64..4_000).prop_map(Op::Tick),
            ]
        }

        /// The store as `SlaveStore` keeps it: state per payment, written and durable.
        #[derive(Default)]
        struct Store {
            current: BTreeMap<PaymentId, (SlaveState, Money)>,
            durable: BTreeMap<PaymentId, SlaveState>,
            requests: BTreeMap<String, PaymentId>,
            /// Writes waiting for a flush, with what follows.
            pending: Vec<(Write, After)>,
        }

        impl Store {
            fn catch_up(&mut self) {
                self.durable = self.current.iter().map(|(k, (s, _))| (*k, *s)).collect();
            }

            fn apply(map: &mut BTreeMap<PaymentId, SlaveState>, w: &Write) {
                match w {
                    Write::Captured { payment, .. } => {
                        map.entry(payment.id).or_insert(SlaveState::Captured { answered: false });
                    }
                    Write::State { id, state } | Write::Settle { id, state } => {
                        if let Some(s) = map.get_mut(id) {
                            if moves_forward(*s, *state) {
                                *s = *state;
                            }
                        }
                    }
                    Write::Result { .. } => {}
                }
            }
        }

        proptest! {
            /// Whatever the sale apps, the store and the master do: `accepted` only once the
            /// mark is durable, one answer per sale app, never both answers for one sale,
            /// holdings within the caps; and once everything is durable and a master answers,
            /// every payment told `accepted` has been sent marked answered.
            #[test]
            fn accepted_only_after_a_durable_mark_and_always_forwarded(ops in prop::collection::vec(op(), 1..150)) {
                let mut t = terminal(0);
                let mut store = Store::default();
                let mut now = 0u64;
                let mut next_to: ReplyTo = 0;
                let mut sales: Vec<Option<String>> = Vec::new();
                let mut replies: BTreeSet<ReplyTo> = BTreeSet::new();
                let mut heard: BTreeMap<String, (bool, Option<PaymentId>)> = BTreeMap::new();
                let mut accepted: BTreeSet<PaymentId> = BTreeSet::new();
                let mut sent: Vec<Transmit> = Vec::new();
                let mut carried: BTreeSet<PaymentId> = BTreeSet::new();
                let mut to_sale: BTreeMap<ReplyTo, usize> = BTreeMap::new();
                let run = |t: &mut Terminal, store: &mut Store, now: u64,
                               replies: &mut BTreeSet<ReplyTo>, heard: &mut BTreeMap<String, (bool, Option<PaymentId>)>,
                               accepted: &mut BTreeSet<PaymentId>, to_sale: &BTreeMap<ReplyTo, usize>,
                               sales: &[Option<String>]| -> Result<(), TestCaseError> {
                    for a in t.drain_actions().collect::<Vec<_>>() {
                        match a {
                            Action::Write { write, then } => {
                                let mut cur: BTreeMap<PaymentId, SlaveState> =
                                    store.current.iter().map(|(k, (s, _))| (*k, *s)).collect();
                                Store::apply(&mut cur, &write);
                                if let Write::Captured { payment, request_id } = &write {
                                    store.current.entry(payment.id).or_insert((SlaveState::Captured { answered: false }, payment.amount));
                                    if let Some(r) = request_id { store.requests.insert(r.clone(), payment.id); }
                                }
                                for (k, s) in cur { if let Some(e) = store.current.get_mut(&k) { e.0 = s; } }
                                store.pending.push((write, then));
                            }
                            Action::Reply { to, answer, .. } => {
                                prop_assert!(replies.insert(to), "two answers to sale app {}", to);
                                let rid = to_sale.get(&to).and_then(|k| sales[*k].clone());
                                let (ok, id) = match &answer {
                                    Answer::Accepted(told) => {
                                        let d = store.durable.get(&told.id()).copied();
                                        prop_assert!(
                                            matches!(d, Some(SlaveState::Captured { answered: true } | SlaveState::Forwarded)),
                                            "accepted {:?} with durable state {:?}", told.id(), d
                                        );
                                        accepted.insert(told.id());
                                        (true, Some(told.id()))
                                    }
                                    // Transient: the sale app may retry, and the payment may
                                    // be on disk after all (the retry then takes it up).
                                    Answer::Rejected { reason: "storage_error", .. } => continue,
                                    Answer::Rejected { id, .. } => (false, *id),
                                    Answer::Unknown { .. } | Answer::Void { .. } | Answer::VoidFailed { .. } => continue,
                                };
                                if let Some(r) = rid {
                                    if let Some((before, bid)) = heard.insert(r.clone(), (ok, id)) {
                                        prop_assert_eq!(before, ok, "sale {} heard both answers", r);
                                        if ok { prop_assert_eq!(bid, id); }
                                    }
                                }
                            }
                            Action::ResultAck { .. } | Action::Note(_) => {}
                        }
                    }
                    let _ = now;
                    prop_assert!(t.holdings().payments <= 100);
                    Ok(())
                };
                for op in ops {
                    match op {
                        Op::Capture(with_rid) => {
                            next_to += 1;
                            let rid = with_rid.then(|| format!("r{next_to}"));
                            sales.push(rid.clone());
                            to_sale.insert(next_to, sales.len() - 1);
                            let mut random = [0u8; 10];
                            random[..8].copy_from_slice(&next_to.to_be_bytes());
                            t.capture(next_to, &req(), rid, random, T0 + now);
                        }
                        Op::Retry(ix) if !sales.is_empty() => {
                            let k = ix.index(sales.len());
                            if let Some(rid) = sales[k].clone() {
                                next_to += 1;
                                to_sale.insert(next_to, k);
                                match store.requests.get(&rid).copied() {
                                    Some(id) => {
                                        let (state, amount) = store.current[&id];
                                        t.retry(next_to, id, state, amount, now, &AllListening);
                                    }
                                    None => {
                                        let mut random = [0u8; 10];
                                        random[..8].copy_from_slice(&next_to.to_be_bytes());
                                        t.capture(next_to, &req(), Some(rid), random, T0 + now);
                                    }
                                }
                            }
                        }
                        Op::Retry(_) => {}
                        Op::Flush(outcome) => {
                            if !store.pending.is_empty() {
                                let (w, then) = store.pending.remove(0);
                                let result = match outcome {
                                    // A flush makes everything written so far durable (sled
                                    // flushes its whole memory), earlier failed ones included.
                                    None | Some(true) => {
                                        Store::apply(&mut store.durable, &w);
                                        store.catch_up();
                                        Ok(())
                                    }
                                    // Not durable: it stays in memory (the store's view) only.
                                    Some(false) => Err(WriteFailure::NotDurable),
                                };
                                t.on_written(then, result, now, &AllListening);
                            }
                        }
                        Op::Connect => t.on_connected(),
                        Op::Disconnect => { t.on_disconnected(); sent.clear(); }
                        Op::Send => { if let Some(x) = t.poll_transmit(now) { sent.push(x); } }
                        Op::Answer(refuse) if !sent.is_empty() => {
                            match sent.remove(0) {
                                Transmit::Submit { id, answered } => {
                                    let v = if answered || carried.contains(&id) {
                                        carried.insert(id);
                                        Verdict::Stored
                                    } else if refuse {
                                        Verdict::Refused(RefusalReason::OverCardFlightLimit)
                                    } else {
                                        Verdict::Held
                                    };
                                    t.on_verdict(id, v, now, &AllListening);
                                }
                                Transmit::Void { id } => t.on_void_ack(id, false),
                                Transmit::Cancel { id } => t.on_cancel_ack(id, CancelOutcome::Voided),
                            }
                        }
                        Op::Answer(_) => {}
                        Op::Tick(dt) => { now += dt; t.handle_timeout(now, &AllListening); }
                    }
                    run(&mut t, &mut store, now, &mut replies, &mut heard, &mut accepted, &to_sale, &sales)?;
                }
                // Then every write becomes durable, and a perfect master answers everything.
                t.on_connected();
                for _ in 0..200 {
                    while !store.pending.is_empty() {
                        let (w, then) = store.pending.remove(0);
                        Store::apply(&mut store.durable, &w);
                        store.catch_up();
                        t.on_written(then, Ok(()), now, &AllListening);
                        run(&mut t, &mut store, now, &mut replies, &mut heard, &mut accepted, &to_sale, &sales)?;
                    }
                    while let Some(x) = t.poll_transmit(now) {
                        match x {
                            Transmit::Submit { id, answered } => {
                                let v = if answered { carried.insert(id); Verdict::Stored } else { Verdict::Held };
                                t.on_verdict(id, v, now, &AllListening);
                            }
                            Transmit::Void { id } => t.on_void_ack(id, false),
                            Transmit::Cancel { id } => t.on_cancel_ack(id, CancelOutcome::Voided),
                        }
                        run(&mut t, &mut store, now, &mut replies, &mut heard, &mut accepted, &to_sale, &sales)?;
                    }
                    now += 10_000;
                    t.handle_timeout(now, &AllListening);
                    run(&mut t, &mut store, now, &mut replies, &mut heard, &mut accepted, &to_sale, &sales)?;
                }
                for id in &accepted {
                    prop_assert!(carried.contains(id), "accepted {:?} never sent marked answered", id);
                }
            }
        }
    }
}
