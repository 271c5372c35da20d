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
        pos: PointOfSale::LEGACY,
        emv: None,
    }
}

/// Chip data with every required tag (values made up; this crate does not verify them).
fn sample_emv() -> EmvData {
    EmvData::from_tags(&[
        (0x9F26, &[1, 2, 3, 4, 5, 6, 7, 8]),
        (0x9F27, &[0x80]),
        (0x9F10, &[0x06]),
        (0x9F36, &[0x00, 0x2A]),
        (0x95, &[0; 5]),
        (0x9A, &[0x26, 0x11, 0x27]),
        (0x9C, &[0x00]),
        (0x9F02, &[0, 0, 0, 0, 0x12, 0x50]),
        (0x5F2A, &[0x09, 0x78]),
        (0x9F37, &[9, 8, 7, 6]),
        (0x9F34, &[0x1F, 0x00, 0x02]),
        (0x5F34, &[0x01]),
    ])
    .expect("valid chip data")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Changing these bytes breaks every deployed terminal: bump the protocol version instead.
#[test]
fn golden_bytes() {
    let hello =
        TerminalMsg::Hello { version: TERMINAL_PROTOCOL_VERSION, terminal: TerminalId::parse("t1").expect("valid") };
    assert_eq!(hex(&encode(&hello)), "0006027431");

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
        pos: PointOfSale::LEGACY,
        deferred: true,
        emv: None,
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
    // Since protocol 6 each item ends with its point of sale (key entered, unattended, 5309),
    // deferred = true and no chip data.
    let evidence = "0201fbbd140100";
    let golden = format!(
        "04{}0002{item_bytes}01{evidence}{item_bytes}00{evidence}", // BatchItems, batch, first_seq 0, 2 items; late true, false
        "ba".repeat(16)
    );
    assert_eq!(hex(&encode(&msg)), golden);
}

/// Card-present evidence (ground protocol 6, terminal protocol 6): a chip payment's point of
/// sale and its chip data, appended to the payment and to the batch item.
#[test]
fn golden_bytes_of_chip_evidence() {
    assert_eq!((GROUND_PROTOCOL_VERSION, TERMINAL_PROTOCOL_VERSION), (6, 6));
    let pos = PointOfSale {
        entry_mode: EntryMode::Chip,
        terminal_type: TerminalType::AttendedOfflineOnly,
        mcc: Mcc::parse("5812").expect("valid"),
    };
    assert_eq!(hex(&encode(&pos)), "0000fbb416");
    let tlv = concat!(
        "9f26080102030405060708",
        "9f270180",
        "9f100106",
        "9f3602002a",
        "95050000000000",
        "9a03261127",
        "9c0100",
        "9f0206000000001250",
        "5f2a020978",
        "9f370409080706",
        "9f34031f0002",
        "5f340101",
    );
    assert_eq!(sample_emv().to_hex(), tlv);
    // The chip data is a length-prefixed byte string (70 bytes).
    assert_eq!(hex(&encode(&Some(sample_emv()))), format!("0146{tlv}"));
    let chip = Payment { pos, emv: Some(sample_emv()), ..sample_payment() };
    let bytes = encode(&TerminalMsg::Submit { payment: chip.clone(), answered: true });
    let tail = format!("0000fbb4160146{tlv}01");
    assert!(hex(&bytes).ends_with(&tail), "{}", hex(&bytes));
    assert_eq!(hex(&bytes).len(), GOLDEN_SUBMIT.len() + tail.len() - 2 - "0201fbbd1400".len());
    // Chip data without a chip entry mode, or a chip entry mode without it, does not decode.
    for bad in [Payment { emv: None, ..chip.clone() }, Payment { pos: PointOfSale::LEGACY, ..chip }] {
        let bytes = encode(&TerminalMsg::Submit { payment: bad, answered: true });
        assert!(matches!(decode::<TerminalMsg>(&bytes), Err(DecodeError::Malformed(m)) if m.contains("chip data")));
    }
}

/// A chunk of the largest items the master can send (19-digit card, the largest amount, chip
/// data with every tag at its longest) fits one ground frame: a chunk that does not is never
/// delivered (the batch would be re-sent forever). Caught the frame limit of protocol 5.
#[test]
fn a_chunk_of_the_largest_items_fits_a_ground_frame() {
    let longest: Vec<(u16, Vec<u8>)> = vec![
        (0x9F26, vec![0xff; 8]),
        (0x9F27, vec![0x80]),
        (0x9F10, vec![0xff; 32]),
        (0x9F36, vec![0xff; 2]),
        (0x95, vec![0xff; 5]),
        (0x9A, vec![0x99; 3]),
        (0x9C, vec![0xff]),
        (0x9F02, vec![0x99; 6]),
        (0x5F2A, vec![0x99; 2]),
        (0x9F37, vec![0xff; 4]),
        (0x9F34, vec![0xff; 3]),
        (0x5F34, vec![0x99]),
        (0x82, vec![0xff; 2]),
        (0x84, vec![0xff; 16]),
        (0x9F03, vec![0x99; 6]),
        (0x9F1A, vec![0xff; 2]),
        (0x9F33, vec![0xff; 3]),
        (0x9F35, vec![0xff]),
        (0x9F09, vec![0xff; 2]),
    ];
    let refs: Vec<(u16, &[u8])> = longest.iter().map(|(t, v)| (*t, v.as_slice())).collect();
    let emv = EmvData::from_tags(&refs).expect("every tag once, each at its longest");
    assert_eq!(emv.as_bytes().len(), 152);
    let item = BatchItem {
        id: PaymentId::from_bytes([0xff; 16]),
        pan: Pan::parse("4111111111111111110").expect("a 19-digit card"),
        expiry: Expiry::parse("12/99").expect("valid"),
        amount: Money::new(AMOUNT_MINOR_MAX, Currency::parse("EUR").expect("known")).expect("valid"),
        captured_unix_ms: u64::MAX,
        late: true,
        pos: PointOfSale {
            entry_mode: EntryMode::KeyEntered,
            terminal_type: TerminalType::UnattendedOfflineOnly,
            mcc: Mcc::parse("9999").expect("valid"),
        },
        deferred: true,
        emv: Some(emv),
    };
    let chunk =
        AircraftMsg::BatchItems { batch: BatchId([0xff; 16]), first_seq: u32::MAX, items: vec![item; BATCH_CHUNK_MAX] };
    let bytes = encode(&chunk);
    let n = bytes.len();
    assert!(n <= GROUND_FRAME_BYTES_MAX, "{n} bytes in a chunk, over the frame limit {GROUND_FRAME_BYTES_MAX}");
    // And the receiver decodes it: the decoder has a limit of its own (64 KiB in protocol 5,
    // which a flight of 300 chip terminals met: its batch was re-sent forever).
    assert_eq!(decode::<AircraftMsg>(&bytes), Ok(chunk));
}

/// A closed flight's manifest and the issuer's acknowledgement (ground protocol 6), frozen.
#[test]
fn golden_bytes_of_the_manifest_and_its_acknowledgement() {
    let part = AircraftMsg::ManifestPart {
        flight: "IF1".into(),
        part: 2,
        last: true,
        bytes: b"{}".to_vec(),
        signature: vec![7],
    };
    assert_eq!(hex(&encode(&part)), "08034946310201027b7d0107");
    let ack = IssuerMsg::ManifestAck(SignedManifestAck { body: b"{}".to_vec(), signature: vec![9] });
    assert_eq!(hex(&encode(&ack)), "09027b7d0109");
    // A part fills at most a frame.
    let full = AircraftMsg::ManifestPart {
        flight: "IF100".into(),
        part: u32::MAX,
        last: false,
        bytes: vec![b'x'; MANIFEST_PART_BYTES_MAX],
        signature: vec![0xff; 72],
    };
    assert!(encode(&full).len() <= GROUND_FRAME_BYTES_MAX);
}

/// The hot-card list (ground protocol 5, terminal protocol 5), frozen like the rest.
#[test]
fn golden_bytes_of_the_hot_list() {
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
    "02",     // entry mode: key entered
    "01",     // terminal type: unattended, offline only
    "fbbd14", // merchant category 5309
    "00",     // no chip data
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
        any::<bool>(),
    )
        .prop_map(|(id, term, pan, (y, m), (amt, cur), seat, t, items, chip)| Payment {
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
            pos: if chip {
                PointOfSale { entry_mode: EntryMode::Contactless, ..PointOfSale::LEGACY }
            } else {
                PointOfSale::LEGACY
            },
            emv: chip.then(sample_emv),
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
    /// The chip data parser on hostile input: never a panic; whatever it accepts reads back
    /// the same through hex and through the wire encoding, and keeps every required tag.
    fn chip_data_parsing_never_panics_and_round_trips(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        hex in "[0-9a-fA-Fz ]{0,520}",
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let _ = EmvData::from_hex(&hex);
        let _ = decode::<EmvData>(&bytes);
        let mut mutated = sample_emv().as_bytes().to_vec();
        for (i, b) in &flips {
            let k = i.index(mutated.len());
            mutated[k] = *b;
        }
        for input in [bytes.as_slice(), mutated.as_slice()] {
            if let Ok(emv) = EmvData::parse(input) {
                prop_assert_eq!(EmvData::from_hex(&emv.to_hex()), Ok(emv.clone()));
                prop_assert_eq!(decode::<EmvData>(&encode(&emv)), Ok(emv.clone()));
                prop_assert_eq!(emv.cryptogram().len(), 8);
                prop_assert!(emv.pan_sequence() <= 99);
            }
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
