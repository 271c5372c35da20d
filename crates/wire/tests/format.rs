//! The wire format, frozen: golden bytes, round trips, and decoders that never panic.

use inflight_wire::*;
use proptest::prelude::*;

fn sample_payment() -> Payment {
    Payment {
        id: PaymentId::mint(1_790_000_000_000, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        terminal: TerminalId::parse("seat-12a").expect("valid id"),
        pan: Pan::parse("4111111111111111").expect("valid test card"),
        expiry: Expiry::parse("12/29").expect("valid expiry"),
        amount: Money::new(1250, Currency::parse("EUR").expect("known")).expect("valid amount"),
        seat: "12A".into(),
        captured_unix_ms: 1_790_000_000_000,
        items: vec![LineItem { sku: "PERFUME-50".into(), quantity: 1, unit_amount_minor: 1250 }],
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Changing these bytes breaks every deployed terminal: bump the protocol version instead.
#[test]
fn golden_bytes() {
    let hello =
        TerminalMsg::Hello { version: TERMINAL_PROTOCOL_VERSION, terminal: TerminalId::parse("t1").expect("valid") };
    assert_eq!(hex(&encode(&hello)), "0005027431");

    let submit = TerminalMsg::Submit { payment: sample_payment(), answered: false };
    assert_eq!(hex(&encode(&submit)), GOLDEN_SUBMIT);

    let ack = MasterMsg::Ack {
        id: PaymentId::from_bytes([0xab; 16]),
        verdict: Verdict::Refused(RefusalReason::OverCardFlightLimit),
    };
    assert_eq!(hex(&encode(&ack)), format!("01{}0100", "ab".repeat(16)));

    // Protocol 2: held until the terminal confirms its answer; voids and their acks.
    let held = MasterMsg::Ack { id: PaymentId::from_bytes([0xab; 16]), verdict: Verdict::Held };
    assert_eq!(hex(&encode(&held)), format!("01{}02", "ab".repeat(16)));
    let void = TerminalMsg::Void { id: PaymentId::from_bytes([0xcd; 16]) };
    assert_eq!(hex(&encode(&void)), format!("03{}", "cd".repeat(16)));
    let void_ack = MasterMsg::VoidAck { id: PaymentId::from_bytes([0xcd; 16]), carried: false };
    assert_eq!(hex(&encode(&void_ack)), format!("05{}00", "cd".repeat(16)));

    // Protocol 3: refusals of a terminal over its share, close codes `Busy` and `Replaced`.
    let full = MasterMsg::Ack {
        id: PaymentId::from_bytes([0xab; 16]),
        verdict: Verdict::Refused(RefusalReason::TerminalFull),
    };
    assert_eq!(hex(&encode(&full)), format!("01{}0103", "ab".repeat(16)));
    let aircraft = MasterMsg::Ack {
        id: PaymentId::from_bytes([0xab; 16]),
        verdict: Verdict::Refused(RefusalReason::AircraftFull),
    };
    assert_eq!(hex(&encode(&aircraft)), format!("01{}0104", "ab".repeat(16)));
    assert_eq!((ErrorCode::Busy.as_u32(), ErrorCode::Replaced.as_u32()), (6, 7));

    // Protocol 4: a sale app's void of a payment it was told `accepted` for, and its answer.
    let cancel = TerminalMsg::Cancel { id: PaymentId::from_bytes([0xcd; 16]) };
    assert_eq!(hex(&encode(&cancel)), format!("04{}", "cd".repeat(16)));
    let voided = MasterMsg::CancelAck { id: PaymentId::from_bytes([0xcd; 16]), outcome: CancelOutcome::Voided };
    assert_eq!(hex(&encode(&voided)), format!("06{}00", "cd".repeat(16)));
    let reversal =
        MasterMsg::CancelAck { id: PaymentId::from_bytes([0xcd; 16]), outcome: CancelOutcome::ReversalPending };
    assert_eq!(hex(&encode(&reversal)), format!("06{}01", "cd".repeat(16)));
}

/// The ground link's reversals (protocol 3), frozen like the terminal link.
#[test]
fn golden_bytes_of_reversals() {
    // Since protocol 3; the version in force is pinned by `golden_bytes_of_late_items`.
    let id = PaymentId::from_bytes([0xef; 16]);
    let reverse = AircraftMsg::Reverse { ids: vec![id] };
    assert_eq!(hex(&encode(&reverse)), format!("0601{}", "ef".repeat(16)));
    let reversed = IssuerMsg::Reversed {
        results: vec![
            ReversalResult { id, outcome: ReversalOutcome::Reversed { released_minor: 1250 } },
            ReversalResult { id, outcome: ReversalOutcome::NotCharged },
            ReversalResult { id, outcome: ReversalOutcome::Unknown },
        ],
    };
    let e = "ef".repeat(16);
    assert_eq!(hex(&encode(&reversed)), format!("0703{e}00fbe204{e}01{e}02"));
    // Appended: every earlier message keeps its encoding (`Error` is still 6).
    assert_eq!(hex(&encode(&IssuerMsg::Error { message: "x".into() }))[..2], *"06");
}

/// The ground link's batch item with its deadline mark (protocol 4): `late` is appended, so an
/// item's earlier fields keep their encoding.
#[test]
fn golden_bytes_of_late_items() {
    // Since protocol 4; the version in force is pinned by `golden_bytes_of_the_hot_list`.
    let p = sample_payment();
    let item = |late| BatchItem {
        id: p.id,
        pan: p.pan.clone(),
        expiry: p.expiry,
        amount: p.amount,
        captured_unix_ms: p.captured_unix_ms,
        late,
    };
    let msg =
        AircraftMsg::BatchItems { batch: BatchId([0xba; 16]), first_seq: 0, items: vec![item(true), item(false)] };
    let item_bytes = concat!(
        "01a0c4506c000102030405060708090a",   // payment id
        "1034313131313131313131313131313131", // pan
        "fbed070c",                           // expiry 2029 / 12
        "fbe204455552",                       // 1250 EUR
        "fd006c50c4a0010000",                 // captured_unix_ms
    );
    let golden = format!(
        "04{}0002{item_bytes}01{item_bytes}00", // BatchItems, batch, first_seq 0, 2 items; late true, false
        "ba".repeat(16)
    );
    assert_eq!(hex(&encode(&msg)), golden);
}

/// The hot-card list (ground protocol 5, terminal protocol 5), frozen like the rest.
#[test]
fn golden_bytes_of_the_hot_list() {
    assert_eq!((GROUND_PROTOCOL_VERSION, TERMINAL_PROTOCOL_VERSION), (5, 5));
    let fetch = AircraftMsg::FetchHotList { have_version: Some(7) };
    assert_eq!(hex(&encode(&fetch)), "070107");
    let head = HotListHead {
        version: 3,
        issuer: "bank".into(),
        valid_from_unix_ms: 1,
        valid_until_unix_ms: 2,
        key: [0x11; 32],
        count: 1,
        entries_digest: [0x22; 32],
    };
    assert_eq!(hex(&encode(&head)), format!("030462616e6b0102{}01{}", "11".repeat(32), "22".repeat(32)));
    let delta = IssuerMsg::HotList(HotListUpdate::Delta {
        base_version: 7,
        head: SignedHotHead { body: vec![1, 2], signature: vec![3] },
        added: vec![HotEntry([0xaa; 8])],
    });
    assert_eq!(hex(&encode(&delta)), format!("080107020102010301{}", "aa".repeat(8)));
    let full = IssuerMsg::HotList(HotListUpdate::Full(HotList {
        head: SignedHotHead { body: vec![1], signature: vec![2] },
        entries: vec![HotEntry([0xbb; 8])],
    }));
    assert_eq!(hex(&encode(&full)), format!("08000101010201{}", "bb".repeat(8)));
    let to_terminal = MasterMsg::HotList(Box::new(HotList {
        head: SignedHotHead { body: vec![1], signature: vec![2] },
        entries: vec![HotEntry([0xbb; 8])],
    }));
    assert_eq!(hex(&encode(&to_terminal)), format!("070101010201{}", "bb".repeat(8)));
}

const GOLDEN_SUBMIT: &str = concat!(
    "01", // TerminalMsg::Submit
    "01a0c4506c00",
    "0102030405060708090a", // payment id: capture ms (6 bytes BE) + 10 random
    "08",
    "736561742d313261", // terminal "seat-12a"
    "10",
    "34313131313131313131313131313131", // pan (length-prefixed ASCII digits)
    "fbed07",
    "0c", // expiry 2029 / 12
    "fbe204",
    "455552", // 1250 EUR
    "03",
    "313241",             // seat "12A"
    "fd006c50c4a0010000", // captured_unix_ms
    "01",
    "0a50455246554d452d3530",
    "01",
    "fbe204", // one line item
    "00",     // answered = false
);

#[test]
fn decode_validates_fields() {
    // A Submit whose PAN fails Luhn must not decode, even though its shape is right.
    let mut bytes = encode(&TerminalMsg::Submit { payment: sample_payment(), answered: false });
    let pos = bytes.windows(16).position(|w| w == b"4111111111111111").expect("pan is in the frame");
    bytes[pos + 15] = b'2';
    assert!(matches!(decode::<TerminalMsg>(&bytes), Err(DecodeError::Malformed(m)) if m.contains("Luhn")));
}

#[test]
fn trailing_and_truncated_bytes_are_rejected() {
    let mut bytes = encode(&TerminalMsg::Submit { payment: sample_payment(), answered: true });
    for cut in 0..bytes.len() {
        assert!(decode::<TerminalMsg>(&bytes[..cut]).is_err(), "truncated at {cut}");
    }
    bytes.push(0);
    assert_eq!(decode::<TerminalMsg>(&bytes), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn huge_length_prefix_does_not_allocate() {
    // Submit, then a payment id, then a terminal id whose length prefix claims 2^62 bytes.
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&[0u8; 16]);
    bytes.push(0xfd); // varint: u64 follows
    bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(decode::<TerminalMsg>(&bytes), Err(DecodeError::Malformed(_))));
}

fn arb_payment() -> impl Strategy<Value = Payment> {
    (
        any::<[u8; 16]>(),
        "[a-z0-9][a-z0-9-]{0,31}",
        prop::sample::select(vec!["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"]),
        (2000u16..2100, 1u8..=12),
        (1u64..=AMOUNT_MINOR_MAX, prop::sample::select(vec!["EUR", "USD", "JPY", "KRW"])),
        "[!-~]{1,16}",
        any::<u64>(),
        prop::collection::vec(("[!-~]{1,32}", 1u32.., any::<u64>()), 0..LINE_ITEMS_MAX),
    )
        .prop_map(|(id, term, pan, (y, m), (amt, cur), seat, t, items)| Payment {
            id: PaymentId::from_bytes(id),
            terminal: TerminalId::parse(&term).expect("strategy yields valid ids"),
            pan: Pan::parse(pan).expect("strategy yields valid cards"),
            expiry: Expiry::new(y, m).expect("strategy yields valid expiries"),
            amount: Money::new(amt, Currency::parse(cur).expect("known")).expect("strategy yields valid amounts"),
            seat,
            captured_unix_ms: t,
            items: items
                .into_iter()
                .map(|(sku, quantity, unit_amount_minor)| LineItem { sku, quantity, unit_amount_minor })
                .collect(),
        })
}

proptest! {
    #[test]
    fn terminal_messages_round_trip(p in arb_payment(), answered in any::<bool>()) {
        let msg = TerminalMsg::Submit { payment: p, answered };
        let bytes = encode(&msg);
        prop_assert!(bytes.len() <= TERMINAL_FRAME_BYTES_MAX);
        prop_assert_eq!(decode::<TerminalMsg>(&bytes), Ok(msg));
    }

    #[test]
    fn master_messages_round_trip(id in any::<[u8; 16]>(), refused in any::<bool>(), msg in "[ -~]{0,64}") {
        let verdict = if refused { Verdict::Refused(RefusalReason::IdConflict) } else { Verdict::Stored };
        for m in [
            MasterMsg::Ack { id: PaymentId::from_bytes(id), verdict },
            MasterMsg::Error { code: ErrorCode::Malformed, message: msg.clone() },
            MasterMsg::Hello { version: 1, aircraft: msg.clone(), unix_ms: id[0].into() },
        ] {
            prop_assert_eq!(decode::<MasterMsg>(&encode(&m)), Ok(m));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<TerminalMsg>(&bytes);
        let _ = decode::<MasterMsg>(&bytes);
        let _ = decode::<Payment>(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(p in arb_payment(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = encode(&TerminalMsg::Submit { payment: p, answered: false });
        for (i, v) in flips {
            let at = i.index(bytes.len());
            bytes[at] = v;
        }
        let _ = decode::<TerminalMsg>(&bytes);
    }
}
