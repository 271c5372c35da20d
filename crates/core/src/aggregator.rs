//! The master's verdict on every payment terminals submit: stored once, answered the same way
//! every time the same id comes again.
//!
//! The aggregator keeps a compact index of every payment id it has seen (its content digest and
//! verdict), loaded from the store at start. It decides; the driver writes what it decided,
//! waits until that is durable, and only then sends the ack.

use std::collections::HashMap;

use inflight_wire::{Payment, PaymentId, RefusalReason, TerminalId, Verdict};

/// Most payments the master holds in one flight. A wide-body cabin selling all flight long stays
/// far below; past it the master refuses new payments rather than grow without bound.
pub const PAYMENTS_MAX: usize = 2_000_000;

/// A digest of a payment's content, computed by the driver (SHA-256 of its encoding), used to
/// tell an honest re-send from a different payment re-using an id.
pub type ContentDigest = [u8; 32];

/// What the master knows about one payment id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Digest of the payment's content.
    pub digest: ContentDigest,
    /// The verdict given.
    pub verdict: Verdict,
}

/// What to do with a submitted payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// New: store it durably, then ack `Stored`.
    Store,
    /// New, refused by an aircraft-wide check: record the refusal durably, then ack it.
    Refuse(RefusalReason),
    /// Previously refused, now re-sent marked answered: store it (the refusal becomes a flag for
    /// the crew), then ack `Stored`.
    CarryRefused(RefusalReason),
    /// Known: ack this verdict again once the original write is durable.
    Repeat(Verdict),
    /// The connection's terminal is not the payment's terminal: close the connection.
    WrongTerminal,
    /// The master is full: close the connection, the terminal keeps the payment and retries.
    Full,
}

/// Counts for the status report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Payments the master will carry to the issuer.
    pub stored: u64,
    /// Payments the master refused at capture.
    pub refused: u64,
}

/// The master's index of payments and its verdict rule.
#[derive(Debug, Default)]
pub struct Aggregator {
    /// Every payment id seen, to answer re-sends identically and refuse id re-use.
    index: HashMap<PaymentId, IndexEntry>,
    /// Running totals, kept in step with `index`.
    counts: Counts,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores one entry from the store at start.
    pub fn restore(&mut self, id: PaymentId, entry: IndexEntry) {
        if let Some(old) = self.index.insert(id, entry) {
            self.uncount(old.verdict);
        }
        self.count(entry.verdict);
    }

    /// Decides on a payment submitted by `conn_terminal` (the id of the certificate on the
    /// connection). The decision is applied to the index at once: the driver must make it
    /// durable before acking, and must not ack a `Repeat` before the original write is durable.
    pub fn handle_submit(
        &mut self,
        conn_terminal: &TerminalId,
        payment: &Payment,
        answered: bool,
        digest: ContentDigest,
    ) -> Decision {
        if &payment.terminal != conn_terminal {
            return Decision::WrongTerminal;
        }
        if let Some(e) = self.index.get_mut(&payment.id) {
            if e.digest != digest {
                return Decision::Repeat(Verdict::Refused(RefusalReason::IdConflict));
            }
            return match e.verdict {
                Verdict::Refused(reason) if answered => {
                    e.verdict = Verdict::Stored;
                    self.counts.refused -= 1;
                    self.counts.stored += 1;
                    Decision::CarryRefused(reason)
                }
                v => Decision::Repeat(v),
            };
        }
        if self.index.len() >= PAYMENTS_MAX {
            return Decision::Full;
        }
        // Aircraft-wide checks (the per-card-per-flight limit) come with the issuer's BIN
        // program; until then every new payment is stored.
        self.index.insert(
            payment.id,
            IndexEntry {
                digest,
                verdict: Verdict::Stored,
            },
        );
        self.counts.stored += 1;
        Decision::Store
    }

    /// Undoes a decision whose write failed, so that a re-send is decided afresh instead of
    /// being acked from an index entry that never reached the disk.
    pub fn revert(&mut self, id: &PaymentId, decision: Decision) {
        match decision {
            Decision::Store | Decision::Refuse(_) => {
                if let Some(e) = self.index.remove(id) {
                    self.uncount(e.verdict);
                }
            }
            Decision::CarryRefused(reason) => {
                if let Some(e) = self.index.get_mut(id) {
                    e.verdict = Verdict::Refused(reason);
                    self.counts.stored -= 1;
                    self.counts.refused += 1;
                }
            }
            Decision::Repeat(_) | Decision::WrongTerminal | Decision::Full => {}
        }
    }

    /// The verdict on record for `id`.
    pub fn verdict(&self, id: &PaymentId) -> Option<Verdict> {
        self.index.get(id).map(|e| e.verdict)
    }

    /// Running totals.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    fn count(&mut self, v: Verdict) {
        match v {
            Verdict::Stored => self.counts.stored += 1,
            Verdict::Refused(_) => self.counts.refused += 1,
        }
    }

    fn uncount(&mut self, v: Verdict) {
        match v {
            Verdict::Stored => self.counts.stored -= 1,
            Verdict::Refused(_) => self.counts.refused -= 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use inflight_wire::{Currency, Expiry, Money, Pan};

    use super::*;

    fn payment(n: u8, terminal: &str) -> Payment {
        Payment {
            id: PaymentId::mint(u64::from(n), [n; 10]),
            terminal: TerminalId::parse(terminal).expect("valid id"),
            pan: Pan::parse("4111111111111111").expect("valid card"),
            expiry: Expiry::parse("12/29").expect("valid expiry"),
            amount: Money::new(100, Currency::parse("EUR").expect("known")).expect("valid"),
            seat: "1A".into(),
            captured_unix_ms: 0,
            items: vec![],
        }
    }

    #[test]
    fn stores_once_and_repeats_the_verdict() {
        let mut a = Aggregator::new();
        let t1 = TerminalId::parse("t1").expect("valid");
        let p = payment(1, "t1");
        assert_eq!(a.handle_submit(&t1, &p, false, [1; 32]), Decision::Store);
        assert_eq!(
            a.handle_submit(&t1, &p, false, [1; 32]),
            Decision::Repeat(Verdict::Stored)
        );
        assert_eq!(
            a.handle_submit(&t1, &p, true, [1; 32]),
            Decision::Repeat(Verdict::Stored)
        );
        assert_eq!(
            a.counts(),
            Counts {
                stored: 1,
                refused: 0
            }
        );
    }

    #[test]
    fn refuses_another_terminals_payment_and_id_reuse() {
        let mut a = Aggregator::new();
        let t2 = TerminalId::parse("t2").expect("valid");
        assert_eq!(
            a.handle_submit(&t2, &payment(1, "t1"), false, [1; 32]),
            Decision::WrongTerminal
        );
        assert_eq!(
            a.counts(),
            Counts::default(),
            "nothing recorded from an impostor"
        );
        assert_eq!(
            a.handle_submit(&t2, &payment(1, "t2"), false, [1; 32]),
            Decision::Store
        );
        assert_eq!(
            a.handle_submit(&t2, &payment(1, "t2"), false, [2; 32]),
            Decision::Repeat(Verdict::Refused(RefusalReason::IdConflict))
        );
        assert_eq!(
            a.verdict(&payment(1, "t2").id),
            Some(Verdict::Stored),
            "the stored payment is untouched"
        );
    }

    #[test]
    fn a_refusal_is_carried_when_the_terminal_already_answered() {
        let mut a = Aggregator::new();
        let p = payment(3, "t1");
        a.restore(
            p.id,
            IndexEntry {
                digest: [3; 32],
                verdict: Verdict::Refused(RefusalReason::OverCardFlightLimit),
            },
        );
        let t1 = TerminalId::parse("t1").expect("valid");
        assert_eq!(
            a.handle_submit(&t1, &p, false, [3; 32]),
            Decision::Repeat(Verdict::Refused(RefusalReason::OverCardFlightLimit))
        );
        assert_eq!(
            a.handle_submit(&t1, &p, true, [3; 32]),
            Decision::CarryRefused(RefusalReason::OverCardFlightLimit)
        );
        assert_eq!(
            a.counts(),
            Counts {
                stored: 1,
                refused: 0
            }
        );
    }

    #[test]
    fn a_failed_write_is_reverted_and_decided_again() {
        let mut a = Aggregator::new();
        let t1 = TerminalId::parse("t1").expect("valid");
        let p = payment(4, "t1");
        let d = a.handle_submit(&t1, &p, false, [4; 32]);
        a.revert(&p.id, d);
        assert_eq!(a.counts(), Counts::default());
        assert_eq!(
            a.handle_submit(&t1, &p, false, [4; 32]),
            Decision::Store,
            "not acked from a lost write"
        );
        let q = payment(5, "t1");
        a.restore(
            q.id,
            IndexEntry {
                digest: [5; 32],
                verdict: Verdict::Refused(RefusalReason::OverCardFlightLimit),
            },
        );
        let d = a.handle_submit(&t1, &q, true, [5; 32]);
        a.revert(&q.id, d);
        assert_eq!(
            a.verdict(&q.id),
            Some(Verdict::Refused(RefusalReason::OverCardFlightLimit))
        );
        assert_eq!(
            a.counts(),
            Counts {
                stored: 1,
                refused: 1
            }
        );
    }
}
