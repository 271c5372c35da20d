//! The terminal's outbox: which durably stored payments still have to reach the master, and
//! in what form.
//!
//! Forwarding is pipelined: up to `window` messages are in flight at once, each confirmed by an
//! ack carrying its id. A lost connection puts everything in flight back in the queue, and a
//! message not acked within `ack_timeout_ms` is sent again. Re-sending is always safe: the
//! master answers a known id with the verdict it already gave.
//!
//! A payment leaves the outbox only once the master holds it *and knows the sale app was told
//! `accepted`* (a `Stored` ack of a submit marked `answered`), or once it is refused or voided.
//! A payment the master stored before its sale app was answered is **parked**: the master will
//! not seal it until it is sent again marked `answered` (after [`Outbox::mark_answered`]), and
//! it is voided instead ([`Outbox::void`]) if no answer was ever given. So the master never
//! carries a payment whose sale app was not told `accepted`.
//!
//! Time is monotonic milliseconds passed in by the driver.

use std::collections::{BTreeMap, BTreeSet};

use inflight_wire::{PaymentId, RefusalReason, Verdict};

/// Most messages in flight to the master at once, unless configured lower.
pub const WINDOW_MAX: usize = 1024;

/// Stray voids (see [`Outbox::on_verdict`]) pending at once: a master acking `Held` for ids the
/// terminal never had cannot grow the outbox past this.
pub const STRAY_VOIDS_MAX: usize = 1024;

/// The forwarding state of every payment not yet settled with the master.
#[derive(Debug)]
pub struct Outbox {
    /// Every unsettled payment and what the master must learn of it.
    entries: BTreeMap<PaymentId, Entry>,
    /// Stored by the master, sale app not answered: nothing to send until answered or voided.
    parked: BTreeSet<PaymentId>,
    /// Waiting to be sent, in id (capture-time) order.
    queued: BTreeSet<PaymentId>,
    /// Sent on the current connection, with the time after which it is sent again.
    in_flight: BTreeMap<PaymentId, u64>,
    /// Whether a connection to the master is up; nothing is sent without one.
    connected: bool,
    /// Most messages in flight at once.
    window: usize,
    /// How long to wait for an ack before sending again.
    ack_timeout_ms: u64,
    /// Stray voids in `entries` (at most [`STRAY_VOIDS_MAX`]).
    strays: usize,
}

/// What the outbox holds for one payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The sale app has been told `accepted` (durably recorded by the driver first).
    answered: bool,
    /// The driver has written the answered mark and waits for it to be durable: from now on the
    /// payment must be carried, so a refusal parks it until [`Outbox::mark_answered`] instead of
    /// settling it.
    answering: bool,
    /// Voided: only a `Void` is sent from now on.
    voided: bool,
    /// Not a payment this terminal holds: a void sent because the master acked `Held` for an id
    /// the terminal had already settled (see [`Outbox::on_verdict`]). Its ack settles nothing.
    stray: bool,
}

/// One message to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// Send the payment. `answered`: the sale app has been told `accepted` (the master must carry
    /// it, and may seal it).
    Submit {
        /// The payment.
        id: PaymentId,
        /// Whether the sale app has been told `accepted`.
        answered: bool,
    },
    /// Tell the master the payment is voided (never to be carried).
    Void {
        /// The payment.
        id: PaymentId,
    },
    /// Tell the master the sale app voided a payment it was told `accepted` for (sent by the
    /// [`crate::terminal::Terminal`], not the outbox: only once the outbox is done with it).
    Cancel {
        /// The payment.
        id: PaymentId,
    },
}

impl Transmit {
    /// The payment the message is about.
    pub fn id(&self) -> PaymentId {
        match *self {
            Transmit::Submit { id, .. } | Transmit::Void { id } | Transmit::Cancel { id } => id,
        }
    }
}

/// What an ack from the master means for the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Nothing waiting for this ack (a duplicate, or a stale ack of a voided payment's submit).
    Unknown,
    /// The master holds it and knows the sale app was told `accepted`: mark it forwarded.
    Forwarded,
    /// The master stored it, but the sale app has not been answered: parked until
    /// [`Outbox::mark_answered`] or [`Outbox::void`].
    AwaitingAnswer,
    /// The master refused it and the sale app had not been answered: mark it refused.
    Refused(RefusalReason),
    /// The master refused it but the sale app was already told `accepted`: it was queued again
    /// with `answered = true`, which the master must carry.
    Resubmit,
    /// The master confirmed the void. `carried`: it refused the void because it had been told
    /// the sale app was answered (an honest terminal never voids such a payment).
    Voided {
        /// The master carries it anyway.
        carried: bool,
    },
}

impl Outbox {
    /// An empty outbox. `window` is clamped to 1..=[`WINDOW_MAX`].
    pub fn new(window: usize, ack_timeout_ms: u64) -> Self {
        Self {
            entries: BTreeMap::new(),
            parked: BTreeSet::new(),
            queued: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            connected: false,
            window: window.clamp(1, WINDOW_MAX),
            ack_timeout_ms,
            strays: 0,
        }
    }

    /// A payment is durably stored and must reach the master.
    pub fn insert(&mut self, id: PaymentId, answered: bool) {
        if let std::collections::btree_map::Entry::Vacant(v) = self.entries.entry(id) {
            v.insert(Entry { answered, answering: false, voided: false, stray: false });
            self.queued.insert(id);
        }
    }

    /// A voided payment whose void the master has not confirmed (after a restart).
    pub fn insert_voided(&mut self, id: PaymentId) {
        if let std::collections::btree_map::Entry::Vacant(v) = self.entries.entry(id) {
            v.insert(Entry { answered: false, answering: false, voided: true, stray: false });
            self.queued.insert(id);
        }
    }

    /// The driver has written (not yet made durable) the mark that `id`'s sale app is told
    /// `accepted`: it may no longer be voided or settled as refused.
    pub fn begin_answer(&mut self, id: PaymentId) {
        if let Some(e) = self.entries.get_mut(&id) {
            if !e.voided {
                e.answering = true;
            }
        }
    }

    /// The sale app has been told `accepted` for `id` (the driver recorded that durably first).
    /// A parked payment is sent again, marked answered, so the master may carry it.
    pub fn mark_answered(&mut self, id: PaymentId) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.voided {
                return;
            }
            e.answered = true;
            if self.parked.remove(&id) {
                self.queued.insert(id);
            }
        }
    }

    /// Voids a payment whose sale app was never answered. Returns false (and changes nothing)
    /// for an answered payment: that one must be carried.
    pub fn void(&mut self, id: PaymentId) -> bool {
        match self.entries.get_mut(&id) {
            Some(e) if !e.answered && !e.answering => {
                e.voided = true;
                self.parked.remove(&id);
                // A submit still in flight is answered with a stale ack, which is ignored; the
                // void goes out next (the master reads one stream in order).
                self.in_flight.remove(&id);
                self.queued.insert(id);
                true
            }
            Some(e) => e.voided,
            None => false,
        }
    }

    /// The answered mark of `id` could not be written: it may be voided again.
    pub fn abort_answer(&mut self, id: PaymentId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.answering = false;
        }
    }

    /// Whether [`Outbox::void`] would void `id` now (held, never answered, not voided yet).
    pub fn can_void(&self, id: PaymentId) -> bool {
        self.entries.get(&id).is_some_and(|e| !e.answered && !e.answering && !e.voided)
    }

    /// `id` is about to be voided (its void mark is being written): nothing of it is sent
    /// until [`Outbox::void`] (or, if a retry claims it, [`Outbox::mark_answered`]).
    pub fn hold(&mut self, id: PaymentId) {
        if self.can_void(id) {
            self.queued.remove(&id);
            self.in_flight.remove(&id);
            self.parked.insert(id);
        }
    }

    /// Whether `id` is held here and its sale app was told `accepted`.
    pub fn is_answered(&self, id: PaymentId) -> bool {
        self.entries.get(&id).is_some_and(|e| e.answered && !e.stray)
    }

    /// Whether `id` is not yet settled with the master (held here).
    pub fn contains(&self, id: PaymentId) -> bool {
        self.entries.get(&id).is_some_and(|e| !e.stray)
    }

    /// Whether a connection to the master is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether `id` is waiting for its sale app's answer (stored by the master, parked).
    pub fn is_parked(&self, id: &PaymentId) -> bool {
        self.parked.contains(id)
    }

    /// A connection to the master is established (after both `Hello`s).
    pub fn on_connected(&mut self) {
        self.connected = true;
    }

    /// The connection is gone: whatever was in flight may not have arrived.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        let back = std::mem::take(&mut self.in_flight);
        self.queued.extend(back.into_keys());
    }

    /// The next message to send at `now_ms`, if the connection is up and the window has room.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Transmit> {
        if !self.connected || self.in_flight.len() >= self.window {
            return None;
        }
        let id = self.queued.pop_first()?;
        self.in_flight.insert(id, now_ms.saturating_add(self.ack_timeout_ms));
        let e = self.entries.get(&id).copied().unwrap_or(Entry {
            answered: false,
            answering: false,
            voided: false,
            stray: false,
        });
        Some(if e.voided { Transmit::Void { id } } else { Transmit::Submit { id, answered: e.answered } })
    }

    /// The master's verdict on a submitted `id`.
    ///
    /// `Held` for an id the terminal no longer holds means the master stored a copy that nobody
    /// will confirm: the terminal settled it already (told its sale app `refused`, or voided it),
    /// and a re-send reached the master after a refusal that was not stored (`terminal_full`).
    /// Such a copy is voided at the master (a stray void), so it never lingers unconfirmed; the
    /// master never voids a payment it was told is answered, so a stale `Held` for a payment
    /// that was carried changes nothing.
    pub fn on_verdict(&mut self, id: PaymentId, verdict: Verdict) -> Settled {
        let Some(&e) = self.entries.get(&id) else {
            if verdict == Verdict::Held && self.strays < STRAY_VOIDS_MAX {
                self.strays += 1;
                self.entries.insert(id, Entry { answered: false, answering: false, voided: true, stray: true });
                self.queued.insert(id);
            }
            return Settled::Unknown;
        };
        if e.voided {
            // A stale ack of a submit sent before the void: the void's own ack settles it.
            return Settled::Unknown;
        }
        self.in_flight.remove(&id);
        match verdict {
            Verdict::Stored => {
                self.forget(id);
                Settled::Forwarded
            }
            // Held for a submit sent before the sale app was answered: it must go again, marked
            // answered (unless that one is already on its way).
            Verdict::Held if e.answered => {
                self.queued.insert(id);
                Settled::Resubmit
            }
            Verdict::Held => {
                self.queued.remove(&id);
                self.parked.insert(id);
                Settled::AwaitingAnswer
            }
            Verdict::Refused(_) if e.answered => {
                self.queued.insert(id);
                Settled::Resubmit
            }
            // Being answered `accepted` right now: it must be carried; it goes again, marked
            // answered, once the mark is durable.
            Verdict::Refused(_) if e.answering => {
                self.queued.remove(&id);
                self.parked.insert(id);
                Settled::AwaitingAnswer
            }
            Verdict::Refused(reason) => {
                self.forget(id);
                Settled::Refused(reason)
            }
        }
    }

    /// The master's answer to a `Void` of `id`.
    pub fn on_void_ack(&mut self, id: PaymentId, carried: bool) -> Settled {
        match self.entries.get(&id).copied() {
            Some(e) if e.stray => {
                self.forget(id);
                self.strays -= 1;
                Settled::Unknown
            }
            Some(e) if e.voided => {
                self.forget(id);
                Settled::Voided { carried }
            }
            _ => Settled::Unknown,
        }
    }

    /// The master settled `id` in a way only the terminal can tell apart (a payment its sale
    /// app voided, re-sent after a restart and answered `voided`): nothing more to send.
    pub fn settle(&mut self, id: PaymentId) {
        if self.entries.get(&id).is_some_and(|e| !e.stray) {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: PaymentId) {
        self.entries.remove(&id);
        self.queued.remove(&id);
        self.in_flight.remove(&id);
        self.parked.remove(&id);
    }

    /// When [`Outbox::handle_timeout`] next has work: the earliest ack deadline.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.in_flight.values().min().copied()
    }

    /// Queues again every message whose ack is overdue at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let overdue: Vec<PaymentId> = self.in_flight.iter().filter(|(_, &d)| d <= now_ms).map(|(id, _)| *id).collect();
        for id in overdue {
            self.in_flight.remove(&id);
            self.queued.insert(id);
        }
    }

    /// Payments not yet settled with the master (parked ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when every payment is settled with the master.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Messages currently in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Payments parked, waiting for their sale app's answer.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn id(n: u8) -> PaymentId {
        PaymentId::mint(u64::from(n), [n; 10])
    }

    #[test]
    fn pipelines_up_to_the_window_and_requeues_on_disconnect() {
        let mut o = Outbox::new(2, 1_000);
        for n in 0..3 {
            o.insert(id(n), true);
        }
        assert_eq!(o.poll_transmit(0), None, "nothing is sent while disconnected");
        o.on_connected();
        assert_eq!(o.poll_transmit(0).map(|t| t.id()), Some(id(0)));
        assert_eq!(o.poll_transmit(0).map(|t| t.id()), Some(id(1)));
        assert_eq!(o.poll_transmit(0), None, "window full");
        assert_eq!(o.in_flight(), 2);
        assert_eq!(o.on_verdict(id(0), Verdict::Stored), Settled::Forwarded);
        assert_eq!(o.on_verdict(id(0), Verdict::Stored), Settled::Unknown, "duplicate ack");
        assert_eq!(o.poll_transmit(0).map(|t| t.id()), Some(id(2)));
        o.on_disconnected();
        o.on_connected();
        assert_eq!(o.poll_transmit(5).map(|t| t.id()), Some(id(1)), "in-flight payments are re-sent in order");
        assert_eq!(o.poll_timeout(), Some(1_005));
    }

    #[test]
    fn refusal_of_an_answered_payment_is_resubmitted_as_answered() {
        let mut o = Outbox::new(8, 1_000);
        o.insert(id(1), false);
        o.on_connected();
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(1), answered: false }));
        o.mark_answered(id(1));
        assert_eq!(o.on_verdict(id(1), Verdict::Refused(RefusalReason::OverCardFlightLimit)), Settled::Resubmit);
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(1), answered: true }));
        assert_eq!(o.on_verdict(id(1), Verdict::Stored), Settled::Forwarded);
        assert!(o.is_empty());
    }

    /// Found by review: the answered mark was written but not yet durable when the master's
    /// refusal (of the unanswered submit) arrived; the payment was settled as refused, then the
    /// sale app was told `accepted`, and it was never carried.
    #[test]
    fn a_refusal_arriving_while_the_answer_is_being_recorded_does_not_settle_it() {
        let mut o = Outbox::new(8, 1_000);
        o.insert(id(1), false);
        o.on_connected();
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(1), answered: false }));
        o.begin_answer(id(1));
        assert!(!o.void(id(1)), "a payment being answered is never voided");
        let refused = Verdict::Refused(RefusalReason::OverCardFlightLimit);
        assert_eq!(o.on_verdict(id(1), refused), Settled::AwaitingAnswer, "parked, not refused");
        assert_eq!(o.poll_transmit(0), None);
        o.mark_answered(id(1));
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(1), answered: true }));
        assert_eq!(o.on_verdict(id(1), Verdict::Stored), Settled::Forwarded, "carried");
    }

    /// Mutation testing found these unchecked: a refusal of a payment nobody answered settles it
    /// as refused (not parked); a void ack for a payment not being voided changes nothing; a
    /// void restored after a restart is sent again; `is_parked` says what it says.
    #[test]
    fn refusals_void_acks_and_restored_voids_settle_exactly_what_they_name() {
        let mut o = Outbox::new(8, 1_000);
        o.insert(id(1), false);
        o.on_connected();
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(1), answered: false }));
        let refused = Verdict::Refused(RefusalReason::OverCardFlightLimit);
        assert_eq!(o.on_verdict(id(1), refused), Settled::Refused(RefusalReason::OverCardFlightLimit));
        assert!(o.is_empty());

        o.insert(id(2), false);
        assert_eq!(o.on_void_ack(id(2), false), Settled::Unknown, "not being voided");
        assert_eq!(o.len(), 1);
        assert!(!o.is_parked(&id(2)));
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(2), answered: false }));
        assert_eq!(o.on_verdict(id(2), Verdict::Held), Settled::AwaitingAnswer);
        assert!(o.is_parked(&id(2)));
        assert_eq!((o.parked(), o.in_flight()), (1, 0));
        o.insert(id(4), false);
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(4), answered: false }));
        assert_eq!(o.on_verdict(id(4), Verdict::Held), Settled::AwaitingAnswer);
        assert_eq!(o.parked(), 2);

        o.insert_voided(id(3));
        assert_eq!(o.poll_transmit(0), Some(Transmit::Void { id: id(3) }), "a void not yet acked goes again");
        assert_eq!(o.on_void_ack(id(3), false), Settled::Voided { carried: false });
    }

    #[test]
    fn a_payment_stored_before_its_answer_is_parked_then_confirmed_or_voided() {
        let mut o = Outbox::new(8, 1_000);
        o.insert(id(1), false);
        o.insert(id(2), false);
        o.on_connected();
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(1), answered: false }));
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(2), answered: false }));
        assert_eq!(o.on_verdict(id(1), Verdict::Held), Settled::AwaitingAnswer, "not carried yet");
        assert_eq!(o.on_verdict(id(2), Verdict::Held), Settled::AwaitingAnswer);
        assert_eq!(o.poll_transmit(0), None, "parked payments are not sent");
        assert_eq!(o.len(), 2);
        // The sale app of 1 is told `accepted`: 1 goes again, marked answered, and settles.
        o.mark_answered(id(1));
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(1), answered: true }));
        assert_eq!(o.on_verdict(id(1), Verdict::Stored), Settled::Forwarded);
        // Nobody was told about 2: it is voided, and only the master's void ack settles it.
        assert!(o.void(id(2)));
        assert_eq!(o.poll_transmit(0), Some(Transmit::Void { id: id(2) }));
        assert_eq!(o.on_verdict(id(2), Verdict::Held), Settled::Unknown, "a stale submit ack is ignored");
        o.mark_answered(id(2));
        assert_eq!(o.on_void_ack(id(2), false), Settled::Voided { carried: false }, "a voided payment stays voided");
        assert!(o.is_empty());
        // An answered payment is never voided.
        o.insert(id(3), true);
        assert!(!o.void(id(3)));
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(3), answered: true }));
        // Answered while its first (unanswered) submit was on the way: that submit's `Held`
        // does not settle it; it goes again, marked answered.
        o.insert(id(4), false);
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(4), answered: false }));
        o.mark_answered(id(4));
        assert_eq!(o.on_verdict(id(4), Verdict::Held), Settled::Resubmit);
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(4), answered: true }));
        assert_eq!(o.on_verdict(id(4), Verdict::Stored), Settled::Forwarded);
    }

    #[test]
    fn a_held_copy_of_a_payment_already_settled_is_voided_at_the_master() {
        let mut o = Outbox::new(8, 1_000);
        o.insert(id(1), false);
        o.on_connected();
        assert_eq!(o.poll_transmit(0), Some(Transmit::Submit { id: id(1), answered: false }));
        // Refused without being stored (the terminal was over its share): settled, forgotten.
        let full = Verdict::Refused(RefusalReason::TerminalFull);
        assert_eq!(o.on_verdict(id(1), full), Settled::Refused(RefusalReason::TerminalFull));
        assert!(o.is_empty());
        // A re-send that reached the master once there was room comes back `Held`: the master
        // holds a copy nobody will confirm. It is voided there, and settles nothing here.
        assert_eq!(o.on_verdict(id(1), Verdict::Held), Settled::Unknown);
        assert_eq!(o.poll_transmit(0), Some(Transmit::Void { id: id(1) }));
        assert_eq!(o.on_void_ack(id(1), false), Settled::Unknown, "a stray void settles nothing");
        assert!(o.is_empty());
        // A stale `Stored` or a refusal for an unknown id is ignored as before.
        assert_eq!(o.on_verdict(id(2), Verdict::Stored), Settled::Unknown);
        assert_eq!(o.poll_transmit(0), None);
    }

    #[test]
    fn stray_voids_are_bounded() {
        let mut o = Outbox::new(8, 1_000);
        for n in 0..(STRAY_VOIDS_MAX as u64 + 10) {
            o.on_verdict(PaymentId::mint(n, [1; 10]), Verdict::Held);
        }
        assert_eq!(o.len(), STRAY_VOIDS_MAX);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            answered: bool,
        },
        BeginAnswer(prop::sample::Index),
        MarkAnswered(prop::sample::Index),
        Void(prop::sample::Index),
        Connect,
        Disconnect,
        Send,
        /// The master answers one in-flight payment; `refuse` only matters for new ids.
        Answer {
            which: prop::sample::Index,
            refuse: bool,
            duplicate: bool,
        },
        Tick(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(|answered| Op::Insert { answered }),
            any::<prop::sample::Index>().prop_map(Op::BeginAnswer),
            any::<prop::sample::Index>().prop_map(Op::MarkAnswered),
            any::<prop::sample::Index>().prop_map(Op::Void),
            Just(Op::Connect),
            Just(Op::Disconnect),
            Just(Op::Send),
            Just(Op::Send),
            (any::<prop::sample::Index>(), any::<bool>(), any::<bool>())
                .prop_map(|(which, refuse, duplicate)| Op::Answer { which, refuse, duplicate }),
            (0u64..3_000).prop_map(Op::Tick),
        ]
    }

    /// A reference master: the first verdict for an id sticks, except that a refusal is turned
    /// into storage when the payment arrives marked answered (DESIGN.md §3); it carries (may
    /// seal) only what arrived marked answered, and a void of anything else is granted.
    #[derive(Default)]
    struct ModelMaster {
        verdicts: BTreeMap<PaymentId, Verdict>,
        carried: BTreeSet<PaymentId>,
        voided: BTreeSet<PaymentId>,
    }

    impl ModelMaster {
        /// Returns the settlement the outbox reaches for this message.
        fn answer(&mut self, o: &mut Outbox, t: Transmit, refuse: bool) -> Settled {
            match t {
                Transmit::Submit { id, answered } => {
                    if self.voided.contains(&id) {
                        return o.on_verdict(id, Verdict::Refused(RefusalReason::Voided));
                    }
                    let v = self.verdicts.entry(id).or_insert(if refuse {
                        Verdict::Refused(RefusalReason::OverCardFlightLimit)
                    } else {
                        Verdict::Held
                    });
                    if answered {
                        *v = Verdict::Stored;
                        self.carried.insert(id);
                    }
                    o.on_verdict(id, *v)
                }
                Transmit::Void { id } => {
                    let carried = self.carried.contains(&id);
                    if !carried {
                        self.voided.insert(id);
                    }
                    o.on_void_ack(id, carried)
                }
                // The outbox never emits it (the terminal does).
                Transmit::Cancel { .. } => Settled::Unknown,
            }
        }
    }

    proptest! {
        /// Whatever the connection does, every payment is eventually settled exactly once; a
        /// payment whose sale was answered `accepted` is carried; and one never answered is
        /// never carried (it is refused or voided).
        #[test]
        fn every_payment_settles_once_and_answered_ones_are_carried(ops in prop::collection::vec(op(), 1..200)) {
            let mut o = Outbox::new(4, 1_000);
            let mut master = ModelMaster::default();
            let mut now = 0u64;
            let mut minted = 0u8;
            let mut answered_ids = BTreeSet::new();
            let mut sent: Vec<Transmit> = Vec::new();
            let mut settled: BTreeMap<PaymentId, Settled> = BTreeMap::new();
            let settle = |id: PaymentId, s: Settled, settled: &mut BTreeMap<PaymentId, Settled>| {
                if matches!(s, Settled::Forwarded | Settled::Refused(_) | Settled::Voided { .. }) {
                    assert!(settled.insert(id, s).is_none(), "{id:?} settled twice");
                }
            };
            let mut voided_ids = BTreeSet::new();
            let mut answering: BTreeSet<PaymentId> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert { answered } if minted < 250 => {
                        let i = id(minted);
                        minted += 1;
                        o.insert(i, answered);
                        if answered { answered_ids.insert(i); }
                    }
                    Op::Insert { .. } => {}
                    // The driver writes the mark (begin), and later, once durable, answers (mark);
                    // it answers only payments still waiting, never a voided one.
                    Op::BeginAnswer(ix) if minted > 0 => {
                        let i = id(ix.index(minted as usize) as u8);
                        if !settled.contains_key(&i) && !voided_ids.contains(&i) {
                            o.begin_answer(i);
                            answering.insert(i);
                        }
                    }
                    Op::BeginAnswer(_) => {}
                    Op::MarkAnswered(ix) if minted > 0 => {
                        let i = id(ix.index(minted as usize) as u8);
                        if answering.contains(&i) || (!settled.contains_key(&i) && !voided_ids.contains(&i)) {
                            o.mark_answered(i);
                            answered_ids.insert(i);
                        }
                    }
                    Op::MarkAnswered(_) => {}
                    Op::Void(ix) if minted > 0 => {
                        let i = id(ix.index(minted as usize) as u8);
                        if !settled.contains_key(&i) && !answered_ids.contains(&i) && !answering.contains(&i) && o.void(i) {
                            voided_ids.insert(i);
                        }
                    }
                    Op::Void(_) => {}
                    Op::Connect => o.on_connected(),
                    Op::Disconnect => { o.on_disconnected(); sent.clear(); }
                    Op::Send => { if let Some(t) = o.poll_transmit(now) { sent.push(t); } }
                    Op::Answer { which, refuse, duplicate } if !sent.is_empty() => {
                        let k = which.index(sent.len());
                        let t = if duplicate { sent[k] } else { sent.remove(k) };
                        let s = master.answer(&mut o, t, refuse);
                        settle(t.id(), s, &mut settled);
                    }
                    Op::Answer { .. } => {}
                    Op::Tick(dt) => { now += dt; o.handle_timeout(now); }
                }
            }
            // Then every mark being written becomes durable, and a perfect, connected master
            // drains everything; unanswered payments it parks are voided, as the terminal does
            // once their claim period ends.
            for i in &answering {
                o.mark_answered(*i);
                answered_ids.insert(*i);
            }
            o.on_connected();
            let mut rounds = 0;
            while !o.is_empty() {
                rounds += 1;
                prop_assert!(rounds < 10_000, "outbox never drained");
                for n in 0..minted {
                    if o.is_parked(&id(n)) && o.void(id(n)) {
                        voided_ids.insert(id(n));
                    }
                }
                while let Some(t) = o.poll_transmit(now) {
                    let s = master.answer(&mut o, t, false);
                    if s == Settled::AwaitingAnswer && o.void(t.id()) {
                        voided_ids.insert(t.id());
                    }
                    settle(t.id(), s, &mut settled);
                }
                now += 1_000;
                o.handle_timeout(now);
            }
            prop_assert_eq!(settled.len(), minted as usize);
            for i in &answered_ids {
                prop_assert_eq!(settled.get(i), Some(&Settled::Forwarded), "answered payment {:?} not carried", i);
            }
            for i in master.carried.iter() {
                prop_assert!(answered_ids.contains(i), "payment {:?} carried but never answered", i);
            }
            for i in &voided_ids {
                prop_assert_eq!(settled.get(i), Some(&Settled::Voided { carried: false }));
            }
        }
    }
}
