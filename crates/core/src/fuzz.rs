//! Entry points for fuzzing (cargo-fuzz targets in `fuzz/`, and the corpus replay in
//! `cargo test`). Each takes arbitrary bytes, must never panic on them, and panics only when a
//! property breaks: that panic is what the fuzzer reports.

use inflight_wire::{
    decode, encode, AircraftMsg, BinList, BinPrefix, BinRule, CardKind, Currency, EntryMode, Expiry, IssuerMsg,
    MasterMsg, Money, Pan, Payment, PaymentId, PointOfSale, TerminalId, TerminalMsg, Verdict,
};

use crate::aggregator::{Aggregator, Decision, Phase, VoidDecision};
use crate::outbox::Outbox;

/// Every decoder on the same bytes: decoding never panics, and whatever decodes re-encodes to
/// bytes that decode to the same value.
pub fn decoders(data: &[u8]) {
    fn round_trip<T>(data: &[u8])
    where
        T: inflight_wire::Decode<()> + inflight_wire::Encode + PartialEq + std::fmt::Debug,
    {
        if let Ok(v) = decode::<T>(data) {
            let again = decode::<T>(&encode(&v)).expect("a value we decoded re-encodes to something decodable");
            assert_eq!(again, v, "round trip changed the value");
        }
    }
    round_trip::<TerminalMsg>(data);
    round_trip::<MasterMsg>(data);
    round_trip::<AircraftMsg>(data);
    round_trip::<IssuerMsg>(data);
    round_trip::<Payment>(data);
    round_trip::<BinList>(data);
}

/// What an aggregator session reached: lets the corpus replay show that refusals, voids and
/// batches are reachable at all (a checker that never reaches them proves nothing about them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Payments refused by the per-card flight limit.
    pub refused: u64,
    /// Payments voided by their terminal.
    pub voided: u64,
    /// Payments sealed into a batch.
    pub sealed: u64,
}

/// A sequence of frames from terminals against the master's aggregator, under a BIN list with
/// per-card flight limits: whatever arrives, the aggregator's books stay consistent, a stored
/// payment is never un-stored by a re-send, a payment under another terminal's id is never
/// recorded, only payments whose terminal confirmed the answer are sealed, and only unconfirmed
/// ones are voided.
pub fn aggregator_session(data: &[u8]) -> SessionStats {
    let mut stats = SessionStats::default();
    let mut agg = Aggregator::new();
    agg.set_bin_list(Some(fuzz_bin_list()));
    let terminals = [TerminalId::parse("t1").expect("literal id"), TerminalId::parse("t2").expect("literal id")];
    let mut stored = std::collections::BTreeSet::new();
    for chunk in data.split(|b| *b == 0xff) {
        let Some((&op, rest)) = chunk.split_first() else { continue };
        let conn = &terminals[usize::from(op & 1)];
        match op >> 5 {
            // A frame as received on the connection.
            0..=3 => {
                if let Ok(TerminalMsg::Submit { payment, answered }) = decode::<TerminalMsg>(rest) {
                    let digest = crate::aggregator::index_key(&digest32(&encode(&payment)));
                    let card = crate::aggregator::index_key(&digest32(payment.pan.expose_digits().as_bytes()));
                    let d = agg.handle_submit(conn, &payment, answered, digest, card);
                    if &payment.terminal != conn {
                        assert_eq!(d, Decision::WrongTerminal);
                        assert!(agg.entry(&payment.id).is_none_or(|e| *e.terminal == payment.terminal));
                    }
                    if matches!(d, Decision::Store { .. } | Decision::CarryRefused(_)) {
                        stored.insert(payment.id);
                    }
                }
            }
            // A generated payment (so sessions reach deep states without valid encodings).
            4 | 5 => {
                let p = synthetic(rest, &terminals[usize::from(op & 1)]);
                let digest = crate::aggregator::index_key(&digest32(&encode(&p)));
                let d = agg.handle_submit(
                    conn,
                    &p,
                    op & 2 != 0,
                    digest,
                    [p.pan.expose_digits().as_bytes()[0]; crate::aggregator::KEY_BYTES],
                );
                if matches!(d, Decision::Store { .. } | Decision::CarryRefused(_)) {
                    stored.insert(p.id);
                }
                if matches!(d, Decision::Refuse(_)) {
                    stats.refused += 1;
                }
                if op & 4 != 0 {
                    agg.revert(&p.id, d);
                    if matches!(d, Decision::Store { .. }) {
                        stored.remove(&p.id);
                    }
                }
            }
            // A terminal voids a payment (its sale app was never told `accepted`).
            6 => {
                let p = synthetic(rest, conn);
                let before = agg.entry(&p.id).cloned();
                if agg.handle_void(conn, p.id) == VoidDecision::Void {
                    let e = before.expect("only a known payment is voided");
                    assert!(!e.answered && e.phase == Phase::Pending, "voided a confirmed or sealed payment: {e:?}");
                    stored.remove(&p.id);
                    stats.voided += 1;
                }
            }
            // Batches and results.
            _ => {
                let batch = agg.next_batch(usize::from(rest.first().copied().unwrap_or(1)));
                for id in &batch {
                    assert!(agg.entry(id).is_some_and(|e| e.answered), "sealed a payment never confirmed answered");
                }
                stats.sealed += batch.len() as u64;
                for id in batch {
                    let to = match op & 3 {
                        0 => Phase::InBatch,
                        1 => Phase::Decided,
                        _ => Phase::Delivered,
                    };
                    agg.advance(id, to);
                }
            }
        }
        agg.check_invariants().unwrap_or_else(|e| panic!("aggregator books broken: {e}"));
    }
    for id in stored {
        assert_eq!(agg.verdict(&id), Some(Verdict::Stored), "a stored payment lost its verdict");
    }
    stats
}

/// The fuzzer's BIN list: small per-card flight limits on two of the synthetic cards' BINs (the
/// third has no rule), so refusals are reachable.
fn fuzz_bin_list() -> BinList {
    let rule = |prefix: &str, limit: u64| BinRule {
        prefix: BinPrefix::parse(prefix).expect("literal BIN"),
        kind: CardKind::Credit,
        txn_limit_minor: limit,
        card_flight_limit_minor: limit,
        currencies: vec![Currency::parse("EUR").expect("known")],
        entry_modes: EntryMode::ALL.to_vec(),
        cvm_required: false,
    };
    BinList {
        version: 1,
        issuer: "fuzz".into(),
        valid_from_unix_ms: 0,
        valid_until_unix_ms: u64::MAX,
        rules: vec![rule("411111", 10_000), rule("555555", 30_000)],
    }
}

/// Random outbox operations: the window is respected, nothing is sent while disconnected, and
/// what is in flight is always among what is unanswered.
pub fn outbox_session(data: &[u8]) {
    let window = usize::from(data.first().copied().unwrap_or(4) % 8) + 1;
    let mut o = Outbox::new(window, 100);
    let mut now = 0u64;
    let mut connected = false;
    for &b in data.iter().skip(1) {
        let id = PaymentId::mint(u64::from(b & 0x0f), [b & 0x0f; 10]);
        match b >> 4 {
            0..=3 => o.insert(id, b & 0x10 != 0),
            4 => {
                o.on_connected();
                connected = true;
            }
            5 => {
                o.on_disconnected();
                connected = false;
                assert_eq!(o.in_flight(), 0, "a lost connection leaves nothing in flight");
            }
            6 => o.mark_answered(id),
            7..=10 => {
                let sent = o.poll_transmit(now);
                assert!(connected || sent.is_none(), "sent while disconnected");
            }
            11..=13 => {
                let v = if b & 1 == 0 {
                    if b & 2 == 0 {
                        Verdict::Stored
                    } else {
                        Verdict::Held
                    }
                } else {
                    Verdict::Refused(inflight_wire::RefusalReason::OverCardFlightLimit)
                };
                o.on_verdict(id, v);
            }
            14 => {
                o.void(id);
            }
            _ => {
                now += u64::from(b);
                o.handle_timeout(now);
            }
        }
        assert!(o.in_flight() <= o.len(), "more in flight than unanswered");
        assert!(o.in_flight() <= window, "window exceeded");
    }
}

fn synthetic(bytes: &[u8], terminal: &TerminalId) -> Payment {
    let b = |i: usize| bytes.get(i).copied().unwrap_or(0);
    Payment {
        id: PaymentId::mint(u64::from(b(0) & 7), [b(1) & 7; 10]),
        terminal: terminal.clone(),
        pan: Pan::parse(["4111111111111111", "5555555555554444", "4000056655665556"][usize::from(b(2) % 3)])
            .expect("literal cards"),
        expiry: Expiry::new(2030, 1 + b(3) % 12).expect("valid month"),
        amount: Money::new(1 + u64::from(b(4)) * 100, Currency::parse("EUR").expect("known")).expect("positive"),
        seat: "1A".into(),
        captured_unix_ms: u64::from(b(5)),
        items: vec![],
        pos: PointOfSale::LEGACY,
        emv: None,
    }
}

/// A cheap 32-byte digest for the fuzzer (no crypto needed: only equality matters).
fn digest32(data: &[u8]) -> Box<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (i, b) in data.iter().enumerate() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        out[i % 32] ^= (h >> 24) as u8;
    }
    out[..8].copy_from_slice(&h.to_le_bytes());
    Box::new(out)
}
