//! Card-present evidence with real processes: chip test cards tapped with `inflight-setup
//! chip-data`, captured with `inflight-slave capture --emv` and the socket's `emv` field, carried
//! by the master and verified by the issuer. An amount altered after the card signed is declined
//! `cryptogram_invalid`, the same chip data sent again `atc_replayed`, and the programme's
//! chip-and-PIN BIN refuses other captures at the seat. Money is checked per account, and no
//! chip data is left on any disk once the results are delivered.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use inflight_e2e::{accepted_id, bin, Card, Deployment, SaleApp};
use serde_json::{json, Value};

/// `inflight-setup chip-data` for one tap of `card`.
fn tap(dep: &Deployment, card: &Card, amount: u64, atc: u16, pin: bool) -> String {
    let mut cmd = Command::new(bin("inflight-setup"));
    cmd.args(["chip-data", "--chip-key"]).arg(dep.path("keys/issuer.chip.key")).args([
        "--pan",
        &card.pan,
        "--pan-sequence",
        &card.pan_sequence.to_string(),
        "--amount",
        &amount.to_string(),
        "--currency",
        &card.currency,
        "--atc",
        &atc.to_string(),
    ]);
    if pin {
        cmd.arg("--pin");
    }
    let out = cmd.output().expect("run inflight-setup chip-data");
    assert!(out.status.success(), "chip-data: {}", String::from_utf8_lossy(&out.stderr));
    let tlv = String::from_utf8(out.stdout).expect("hex").trim().to_owned();
    assert!(!tlv.contains(&card.pan), "chip data never carries the card number");
    tlv
}

/// `inflight-slave capture --emv` (the card number on standard input, and the chip data too
/// with `--emv -`: its second line).
fn capture_cli(dep: &Deployment, card: &Card, amount: u64, emv: &str) -> Value {
    use std::io::Write as _;
    let on_stdin = amount % 2 == 0;
    let mut child = Command::new(bin("inflight-slave"))
        .args(["capture", "--config"])
        .arg(dep.config("slave-1"))
        .args(["--pan", "-", "--expiry", &card.expiry, "--amount", &amount.to_string(), "--currency", &card.currency])
        .args(["--seat", "4C", "--emv", if on_stdin { "-" } else { emv }])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("capture command");
    let mut input = child.stdin.take().expect("stdin");
    writeln!(input, "{}", card.pan).expect("write the card number");
    if on_stdin {
        writeln!(input, "{emv}").expect("write the chip data");
    }
    drop(input);
    let out = child.wait_with_output().expect("capture command");
    assert!(out.status.success(), "capture: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON answer")
}

fn capture_socket(app: &mut SaleApp, card: &Card, amount: u64, extra: Value) -> Value {
    let mut req = json!({
        "op": "capture", "pan": card.pan, "expiry": card.expiry,
        "amount_minor": amount, "currency": card.currency, "seat": "4D",
    });
    for (k, v) in extra.as_object().expect("an object") {
        req[k] = v.clone();
    }
    app.request(&req).expect("answer")
}

/// A hex TLV with 9F02 (the amount) rewritten: what a hostile terminal does after the card
/// signed. The cryptogram is kept.
fn raise_amount(tlv: &str, amount: u64) -> String {
    let emv = inflight_wire::EmvData::from_hex(tlv).expect("valid chip data");
    inflight_sim::raise_amount(&emv, amount).to_hex()
}

#[test]
fn chip_payments_are_verified_by_the_issuer_and_altered_or_replayed_ones_declined() {
    let dep = Deployment::new(1);
    let cards = dep.cards();
    let credit = cards.iter().find(|c| c.chip && c.pan.starts_with("400011")).expect("the chip credit card");
    let pin_card = cards.iter().find(|c| c.chip && c.pan.starts_with("520077")).expect("the chip-and-PIN card");
    let (_issuer, _master, _slaves) = dep.start_flight();
    dep.master_link("down");

    let mut accepted = BTreeSet::new();
    let mut accept = |a: &Value, what: &str| -> String {
        let id = accepted_id(a).unwrap_or_else(|| panic!("{what} refused: {a}"));
        accepted.insert(id.clone());
        id
    };
    // Genuine chip payments: through the command line, and through the socket (contactless).
    let genuine = accept(&capture_cli(&dep, credit, 2_990, &tap(&dep, credit, 2_990, 1, false)), "a chip payment");
    let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
    let contactless = json!({ "emv": tap(&dep, credit, 1_500, 2, false), "entry_mode": "contactless", "mcc": "5812" });
    let tapped = accept(&capture_socket(&mut app, credit, 1_500, contactless), "a contactless payment");
    // Altered after the card signed: amount and chip amount raised together (the seat, without
    // keys, cannot tell).
    let altered_tlv = raise_amount(&tap(&dep, credit, 1_000, 3, false), 1_001);
    let altered = accept(&capture_cli(&dep, credit, 1_001, &altered_tlv), "an altered payment");
    // The first payment's chip data again, as a new sale: a replay.
    let replay_tlv = tap(&dep, credit, 2_990, 1, false);
    let replayed = accept(&capture_cli(&dep, credit, 2_990, &replay_tlv), "a replayed payment");
    // The chip card keyed, its chip data left out (what a terminal stripping the evidence
    // would send): its BIN takes typed numbers, so the seat accepts; the issuer, which knows it is
    // a chip card, does not.
    let stripped = accept(&capture_socket(&mut app, credit, 1_200, json!({})), "a keyed chip card");
    // Chip and PIN: accepted with the PIN verified by the chip.
    let with_pin = accept(
        &capture_socket(&mut app, pin_card, 2_000, json!({ "emv": tap(&dep, pin_card, 2_000, 1, true) })),
        "a chip-and-PIN payment",
    );

    // Refused at the seat, each with its reason; nothing stored.
    let refusals = [
        (
            capture_socket(&mut app, pin_card, 2_000, json!({ "emv": tap(&dep, pin_card, 2_000, 2, false) })),
            "cvm_required",
        ),
        (capture_socket(&mut app, pin_card, 2_000, json!({})), "entry_mode_not_allowed"),
        (
            capture_socket(&mut app, credit, 2_000, json!({ "emv": tap(&dep, credit, 1_999, 4, false) })),
            "chip_data_mismatch",
        ),
        (capture_socket(&mut app, credit, 2_000, json!({ "emv": "9f2608" })), "bad_chip_data"),
        (capture_socket(&mut app, credit, 2_000, json!({ "entry_mode": "chip" })), "chip_data_missing"),
        (capture_socket(&mut app, credit, 2_000, json!({ "mcc": "4511" })), "bad_mcc"),
    ];
    for (answer, reason) in &refusals {
        assert_eq!(
            (answer["outcome"].as_str(), answer["reason"].as_str()),
            (Some("rejected"), Some(*reason)),
            "{answer}"
        );
        assert!(answer["payment_id"].is_null(), "refused before anything is stored: {answer}");
    }

    dep.wait_for("every payment at the master", Duration::from_secs(30), || dep.master_total() == 6);
    dep.master_link("auto");
    dep.wait_for("decided and delivered", Duration::from_secs(60), || {
        dep.master_status(None)["payments"]["delivered"] == 6
    });
    let ledger = dep.assert_exactly_once_in_money(&accepted);
    let outcome = |id: &str| {
        let l = ledger.iter().find(|l| l["payment_id"] == id).expect("decided");
        (l["outcome"].as_str().unwrap_or_default().to_owned(), l["reason"].as_str().map(str::to_owned))
    };
    for id in [&genuine, &tapped, &with_pin] {
        assert_eq!(outcome(id), ("approved".into(), None), "{id}");
    }
    assert_eq!(outcome(&altered), ("declined".into(), Some("cryptogram_invalid".into())));
    assert_eq!(outcome(&replayed), ("declined".into(), Some("atc_replayed".into())));
    assert_eq!(outcome(&stripped), ("declined".into(), Some("entry_mode_not_allowed".into())));

    // The point of sale is kept in clear for the books; the chip data is gone with the card.
    let status = dep.master_status(Some(&tapped));
    assert_eq!(
        (status["entry_mode"].as_str(), status["mcc"].as_str()),
        (Some("contactless"), Some("5812")),
        "{status}"
    );
    let mut scanner = inflight_sim::leaks::CardScanner::new();
    for tlv in [&altered_tlv, &replay_tlv] {
        scanner.add_chip_data(&inflight_wire::EmvData::from_hex(tlv).expect("valid"), "a capture");
    }
    for dir in ["data", "run"] {
        let found = scanner.scan_dir(&dep.path(dir));
        assert!(found.is_empty(), "chip data on disk after delivery: {found:?}");
    }
    dep.assert_no_full_pan_anywhere();
}
