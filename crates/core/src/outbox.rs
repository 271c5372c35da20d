//! The terminal's outbox: which durably stored payments still have to reach the master.
//!
//! Forwarding is pipelined: up to `window` payments are in flight at once, each confirmed by an
//! ack carrying its id. A payment leaves the outbox only on the master's verdict; a lost
//! connection puts everything in flight back in the queue, and a payment not acked within
//! `ack_timeout_ms` is sent again. Re-sending is always safe: the master answers a known id
//! with the verdict it already gave.
//!
//! Time is monotonic milliseconds passed in by the driver.

use std::collections::{BTreeMap, BTreeSet};

use inflight_wire::{PaymentId, RefusalReason, Verdict};

/// Most payments in flight to the master at once, unless configured lower.
pub const WINDOW_MAX: usize = 1024;

/// The forwarding state of every payment the master has not yet answered.
#[derive(Debug)]
pub struct Outbox {
    /// Every unanswered payment, with whether the sale app has already been told `accepted`.
    answered: BTreeMap<PaymentId, bool>,
    /// Waiting to be sent, in id (capture-time) order.
    queued: BTreeSet<PaymentId>,
    /// Sent on the current connection, with the time after which it is sent again.
    in_flight: BTreeMap<PaymentId, u64>,
    /// Whether a connection to the master is up; nothing is sent without one.
    connected: bool,
    /// Most payments in flight at once.
    window: usize,
    /// How long to wait for an ack before sending again.
    ack_timeout_ms: u64,
}

/// One payment to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The payment to send.
    pub id: PaymentId,
    /// Whether the sale app has already been answered `accepted` (the master must carry it).
    pub answered: bool,
}

/// What a verdict from the master means for the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No such payment waiting (a duplicate ack): nothing to do.
    Unknown,
    /// The master holds it: mark it forwarded.
    Forwarded,
    /// The master refused it and the sale app had not been answered: mark it refused.
    Refused(RefusalReason),
    /// The master refused it but the sale app was already told `accepted`: it was queued again
    /// with `answered = true`, which the master must carry.
    Resubmit,
}

impl Outbox {
    /// An empty outbox. `window` is clamped to 1..=[`WINDOW_MAX`].
    pub fn new(window: usize, ack_timeout_ms: u64) -> Self {
        Self {
            answered: BTreeMap::new(),
            queued: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            connected: false,
            window: window.clamp(1, WINDOW_MAX),
            ack_timeout_ms,
        }
    }

    /// A payment is durably stored and must reach the master.
    pub fn insert(&mut self, id: PaymentId, answered: bool) {
        if self.answered.insert(id, answered).is_none() {
            self.queued.insert(id);
        }
    }

    /// The sale app has been told `accepted` for `id` (its verdict wait ran out).
    pub fn mark_answered(&mut self, id: PaymentId) {
        if let Some(a) = self.answered.get_mut(&id) {
            *a = true;
        }
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

    /// The next payment to send at `now_ms`, if the connection is up and the window has room.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Transmit> {
        if !self.connected || self.in_flight.len() >= self.window {
            return None;
        }
        let id = self.queued.pop_first()?;
        self.in_flight.insert(id, now_ms.saturating_add(self.ack_timeout_ms));
        Some(Transmit { id, answered: self.answered.get(&id).copied().unwrap_or(false) })
    }

    /// The master's verdict on `id`.
    pub fn on_verdict(&mut self, id: PaymentId, verdict: Verdict) -> Settled {
        let Some(&answered) = self.answered.get(&id) else {
            return Settled::Unknown;
        };
        self.in_flight.remove(&id);
        match verdict {
            Verdict::Stored => {
                self.answered.remove(&id);
                self.queued.remove(&id);
                Settled::Forwarded
            }
            Verdict::Refused(_) if answered => {
                self.queued.insert(id);
                Settled::Resubmit
            }
            Verdict::Refused(reason) => {
                self.answered.remove(&id);
                self.queued.remove(&id);
                Settled::Refused(reason)
            }
        }
    }

    /// When [`Outbox::handle_timeout`] next has work: the earliest ack deadline.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.in_flight.values().min().copied()
    }

    /// Queues again every payment whose ack is overdue at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let overdue: Vec<PaymentId> = self.in_flight.iter().filter(|(_, &d)| d <= now_ms).map(|(id, _)| *id).collect();
        for id in overdue {
            self.in_flight.remove(&id);
            self.queued.insert(id);
        }
    }

    /// Payments the master has not answered yet.
    pub fn len(&self) -> usize {
        self.answered.len()
    }

    /// True when every payment has been answered by the master.
    pub fn is_empty(&self) -> bool {
        self.answered.is_empty()
    }

    /// Payments currently in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
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
            o.insert(id(n), false);
        }
        assert_eq!(o.poll_transmit(0), None, "nothing is sent while disconnected");
        o.on_connected();
        assert_eq!(o.poll_transmit(0).map(|t| t.id), Some(id(0)));
        assert_eq!(o.poll_transmit(0).map(|t| t.id), Some(id(1)));
        assert_eq!(o.poll_transmit(0), None, "window full");
        assert_eq!(o.on_verdict(id(0), Verdict::Stored), Settled::Forwarded);
        assert_eq!(o.on_verdict(id(0), Verdict::Stored), Settled::Unknown, "duplicate ack");
        assert_eq!(o.poll_transmit(0).map(|t| t.id), Some(id(2)));
        o.on_disconnected();
        o.on_connected();
        assert_eq!(o.poll_transmit(5).map(|t| t.id), Some(id(1)), "in-flight payments are re-sent in order");
        assert_eq!(o.poll_timeout(), Some(1_005));
    }

    #[test]
    fn refusal_of_an_answered_payment_is_resubmitted_as_answered() {
        let mut o = Outbox::new(8, 1_000);
        o.insert(id(1), false);
        o.on_connected();
        assert_eq!(o.poll_transmit(0), Some(Transmit { id: id(1), answered: false }));
        o.mark_answered(id(1));
        assert_eq!(o.on_verdict(id(1), Verdict::Refused(RefusalReason::OverCardFlightLimit)), Settled::Resubmit);
        assert_eq!(o.poll_transmit(0), Some(Transmit { id: id(1), answered: true }));
        assert_eq!(o.on_verdict(id(1), Verdict::Stored), Settled::Forwarded);
        assert!(o.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            answered: bool,
        },
        MarkAnswered(prop::sample::Index),
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
            any::<prop::sample::Index>().prop_map(Op::MarkAnswered),
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
    /// into storage when the payment arrives marked answered (DESIGN.md §3).
    #[derive(Default)]
    struct ModelMaster {
        verdicts: BTreeMap<PaymentId, Verdict>,
    }

    impl ModelMaster {
        fn submit(&mut self, t: Transmit, refuse: bool) -> Verdict {
            let v = self.verdicts.entry(t.id).or_insert(if refuse {
                Verdict::Refused(RefusalReason::OverCardFlightLimit)
            } else {
                Verdict::Stored
            });
            if t.answered {
                *v = Verdict::Stored;
            }
            *v
        }
    }

    proptest! {
        /// Whatever the connection does, every payment is eventually settled exactly once, and a
        /// payment whose sale was answered `accepted` is never settled as refused.
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
                if matches!(s, Settled::Forwarded | Settled::Refused(_)) {
                    assert!(settled.insert(id, s).is_none(), "{id:?} settled twice");
                }
            };
            for op in ops {
                match op {
                    Op::Insert { answered } if minted < 250 => {
                        let i = id(minted);
                        minted += 1;
                        o.insert(i, answered);
                        if answered { answered_ids.insert(i); }
                    }
                    Op::Insert { .. } => {}
                    Op::MarkAnswered(ix) if minted > 0 => {
                        let i = id(ix.index(minted as usize) as u8);
                        if !settled.contains_key(&i) { o.mark_answered(i); answered_ids.insert(i); }
                    }
                    Op::MarkAnswered(_) => {}
                    Op::Connect => o.on_connected(),
                    Op::Disconnect => { o.on_disconnected(); sent.clear(); }
                    Op::Send => { if let Some(t) = o.poll_transmit(now) { sent.push(t); } }
                    Op::Answer { which, refuse, duplicate } if !sent.is_empty() => {
                        let k = which.index(sent.len());
                        let t = if duplicate { sent[k] } else { sent.remove(k) };
                        let v = master.submit(t, refuse);
                        let s = o.on_verdict(t.id, v);
                        settle(t.id, s, &mut settled);
                    }
                    Op::Answer { .. } => {}
                    Op::Tick(dt) => { now += dt; o.handle_timeout(now); }
                }
            }
            // Then a perfect, connected master drains everything.
            o.on_connected();
            let mut rounds = 0;
            while !o.is_empty() {
                rounds += 1;
                prop_assert!(rounds < 10_000, "outbox never drained");
                while let Some(t) = o.poll_transmit(now) {
                    let v = master.submit(t, false);
                    let s = o.on_verdict(t.id, v);
                    settle(t.id, s, &mut settled);
                }
                now += 1_000;
                o.handle_timeout(now);
            }
            prop_assert_eq!(settled.len(), minted as usize);
            for i in &answered_ids {
                prop_assert_eq!(settled.get(i), Some(&Settled::Forwarded), "answered payment {:?} not carried", i);
            }
        }
    }
}
