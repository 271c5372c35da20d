//! Voids by the sale app, with real processes: before the master seals the payment (never
//! carried, nothing charged), after the issuer decided it (reversed: the amount is released to
//! the account exactly once), and across a terminal killed while the master was away (the void
//! is carried like a payment: the master gets the payment, then its void).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use inflight_e2e::{accepted_id, bin, Deployment, SaleApp};
use serde_json::{json, Value};

/// `inflight-slave void --config … <args>`: its JSON answer.
fn void_cli(dep: &Deployment, k: u32, args: &[&str]) -> Value {
    let out = Command::new(bin("inflight-slave"))
        .arg("void")
        .arg("--config")
        .arg(dep.config(&format!("slave-{k}")))
        .args(args)
        .output()
        .expect("run void");
    assert!(out.status.success(), "void {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("void prints JSON")
}

fn ledger_line(dep: &Deployment, id: &str) -> Option<Value> {
    dep.ledger().into_iter().find(|l| l["payment_id"] == id)
}

/// The account of `card`: (opening, available).
fn account(dep: &Deployment, masked: &str) -> (u64, u64) {
    let a = dep.accounts().into_iter().find(|a| a["card"] == masked).expect("the card's account");
    (a["opening_minor"].as_u64().expect("opening"), a["available_minor"].as_u64().expect("available"))
}

#[test]
fn a_void_before_sealing_is_never_carried_and_one_after_the_decision_is_reversed_once() {
    let dep = Deployment::new(1);
    let _flight = dep.start_flight();
    dep.master_link("down");
    let card = dep.cards()[1].clone();
    let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
    let mut capture = |amount: u64, rid: &str| {
        let a = app
            .request(&json!({
                "op": "capture", "pan": card.pan, "expiry": card.expiry, "amount_minor": amount,
                "currency": card.currency, "seat": "3C", "request_id": rid,
            }))
            .expect("capture answer");
        accepted_id(&a).unwrap_or_else(|| panic!("accepted: {a}"))
    };
    let (a, b, c) = (capture(1_100, "sale-a"), capture(2_200, "sale-b"), capture(3_300, "sale-c"));
    dep.wait_for("three payments at the master", Duration::from_secs(30), || dep.master_total() == 3);

    // A: voided at the master before any batch: never carried.
    let v = void_cli(&dep, 1, &["--payment", &a]);
    assert_eq!(v, json!({ "payment_id": a, "outcome": "voided" }));
    let again = void_cli(&dep, 1, &["--payment", &a]);
    assert_eq!(again["outcome"], "already_voided", "idempotent: {again}");
    assert_eq!(dep.master_status(Some(&a))["state"], "voided");
    assert_eq!(dep.slave_status(1, Some(&a))["state"], "voided");
    let unknown = void_cli(&dep, 1, &["--request-id", "no-such-sale"]);
    assert_eq!(unknown, json!({ "outcome": "unknown_payment" }));

    // Landing: one batch with B and C only.
    dep.master_link("auto");
    dep.wait_for("B and C delivered", Duration::from_secs(60), || {
        let p = &dep.master_status(None)["payments"];
        p["total"] == 2 && p["delivered"] == 2
    });
    assert!(ledger_line(&dep, &a).is_none(), "the voided payment never reached the issuer");
    let masked = ledger_line(&dep, &b).expect("B decided")["card"].as_str().expect("card").to_owned();
    assert_eq!(ledger_line(&dep, &b).expect("B")["outcome"], "approved");
    let (opening, before) = account(&dep, &masked);
    assert_eq!(before, opening - 2_200 - 3_300, "B and C charged, A not");

    // B: voided by its request id after the issuer approved it: reversed, funds released once.
    let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
    let v = app.request(&json!({ "op": "void", "request_id": "sale-b" })).expect("void answer");
    assert_eq!(v, json!({ "payment_id": b, "outcome": "reversal_pending" }));
    dep.wait_for("B reversed at the issuer", Duration::from_secs(60), || {
        ledger_line(&dep, &b).is_some_and(|l| l["outcome"] == "reversed")
    });
    let line = ledger_line(&dep, &b).expect("B");
    assert_eq!(line["released_minor"], 2_200);
    assert_eq!(account(&dep, &masked).1, opening - 3_300, "B's amount released, once");
    dep.wait_for("the master records the reversal", Duration::from_secs(30), || {
        dep.master_status(Some(&b))["void"] == "reversed"
    });
    assert_eq!(dep.master_status(None)["payments"]["reversed"], 1);
    assert_eq!(dep.slave_status(1, Some(&b))["state"], "reversal_pending");
    let again = app.request(&json!({ "op": "void", "payment_id": b })).expect("void answer");
    assert_eq!(again["outcome"], "reversal_pending", "a repeat is told what the first would be now");
    // A retry of B's capture is told it was voided, never `accepted` again.
    let retry = app
        .request(&json!({
            "op": "capture", "pan": card.pan, "expiry": card.expiry, "amount_minor": 2_200,
            "currency": card.currency, "seat": "3C", "request_id": "sale-b",
        }))
        .expect("retry answer");
    assert_eq!(retry["outcome"], "rejected", "{retry}");
    assert_eq!(retry["reason"], "voided");
    // Some time later, with more sessions: still released once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(account(&dep, &masked).1, opening - 3_300);
    assert_eq!(ledger_line(&dep, &c).expect("C")["outcome"], "approved");
    let bad = app.request(&json!({ "op": "void" })).expect("answer");
    assert_eq!(bad["error"], "bad_request", "{bad}");
    let both = app.request(&json!({ "op": "void", "payment_id": c, "request_id": "sale-c" })).expect("answer");
    assert_eq!(both["error"], "bad_request", "{both}");
    dep.assert_no_full_pan_anywhere();
}

#[test]
fn a_void_crossing_a_terminal_crash_while_the_master_is_away_is_carried_once() {
    let dep = Deployment::new(1);
    let (_issuer, mut master, mut slaves) = dep.start_flight();
    dep.master_link("down");
    let card = dep.cards()[1].clone();
    master.terminate();
    let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
    // The master is away: accepted after the verdict wait, queued on the terminal.
    let e = accepted_id(&app.capture(&card, 4_400, "9F").expect("answer")).expect("accepted");
    let kept = accepted_id(&app.capture(&card, 500, "9F").expect("answer")).expect("accepted");
    let v = app.request(&json!({ "op": "void", "payment_id": e })).expect("void answer");
    // Recorded on the terminal; the master could not say yet whether it was sealed.
    assert_eq!(v, json!({ "payment_id": e, "outcome": "reversal_pending" }));
    assert_eq!(dep.slave_status(1, Some(&e))["state"], "void_pending");
    slaves[0].kill9();
    let _master = dep.start_master();
    let _slave = dep.start_slave(1);
    dep.wait_for("the master holds both and has voided one", Duration::from_secs(60), || {
        dep.master_status(Some(&e))["state"] == "voided" && dep.master_total() == 1
    });
    dep.wait_for("the terminal learns the void", Duration::from_secs(30), || {
        dep.slave_status(1, Some(&e))["state"] == "voided"
    });
    dep.master_link("auto");
    dep.wait_for("the kept payment delivered", Duration::from_secs(60), || {
        dep.master_status(None)["payments"]["delivered"] == 1
    });
    let decided: BTreeSet<String> =
        dep.ledger().iter().map(|l| l["payment_id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(decided, BTreeSet::from([kept.clone()]), "the voided payment was never carried");
    dep.assert_exactly_once_in_money(&BTreeSet::from([kept]));
}
