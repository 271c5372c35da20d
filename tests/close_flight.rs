//! `inflight-master close-flight` with real processes: a flight with approvals, declines, a void
//! before sealing and a reversal after approval. While payments wait for the ground the close is
//! refused (exit 75) unless `--force`, which lists them as pending; after landing the manifest's
//! books balance (approved + declined + voided + pending = captured), match the issuer's ledger
//! count for count and in money, reconcile with it without a mismatch, verify under the
//! aircraft's key, are the same from the running daemon and from its store, and hold no card
//! number.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use inflight_core::manifest::{self, IssuerDecision, IssuerOutcome, Manifest, ManifestKey, Standing, Tally};
use inflight_e2e::{accepted_id, bin, Deployment, SaleApp};
use inflight_wire::{Currency, PaymentId};
use serde_json::{json, Value};

/// `inflight-issuer reconcile --config … --manifest <file with m>`: exit code and JSON answer.
fn issuer_reconcile(dep: &Deployment, m: &Value, name: &str) -> (Option<i32>, Value) {
    let file = dep.path(name);
    std::fs::write(&file, serde_json::to_vec(m).expect("json")).expect("write manifest");
    let out = Command::new(bin("inflight-issuer"))
        .args(["reconcile", "--config"])
        .arg(dep.config("issuer"))
        .arg("--manifest")
        .arg(&file)
        .output()
        .expect("run reconcile");
    let answer = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), answer)
}

fn close_cmd(dep: &Deployment, args: &[&str]) -> Output {
    Command::new(bin("inflight-master"))
        .arg("close-flight")
        .arg("--config")
        .arg(dep.config("master"))
        .args(args)
        .output()
        .expect("run close-flight")
}

fn manifest_of(out: &Output) -> Manifest {
    assert!(out.status.success(), "close-flight: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the manifest is JSON")
}

/// The aircraft's manifest key, from the master's card key file (as the master derives it).
fn manifest_key(dep: &Deployment) -> ManifestKey {
    let cfg = inflight_master::MasterConfig::load(&dep.config("master")).expect("master config");
    let vault = inflight_store::CardVault::from_key_file(&cfg.card_key_file).expect("card key file");
    ManifestKey::new(vault.manifest_key())
}

/// The issuer's ledger as decisions to reconcile against.
fn issuer_view(ledger: &[Value]) -> Vec<IssuerDecision> {
    ledger
        .iter()
        .map(|l| IssuerDecision {
            id: PaymentId::parse(l["payment_id"].as_str().expect("id")).expect("payment id"),
            currency: Currency::parse(l["currency"].as_str().expect("currency")).expect("currency"),
            amount_minor: l["amount_minor"].as_u64().expect("amount"),
            outcome: match l["outcome"].as_str().expect("outcome") {
                "approved" => IssuerOutcome::Approved,
                "declined" => IssuerOutcome::Declined,
                "reversed" => IssuerOutcome::Reversed,
                other => panic!("unknown ledger outcome {other}"),
            },
        })
        .collect()
}

fn tally(count: u64, amount_minor: u64) -> Tally {
    Tally { count, amount_minor }
}

/// The ledger's count and sum of one outcome.
fn ledger_tally(ledger: &[Value], outcome: &str) -> Tally {
    ledger
        .iter()
        .filter(|l| l["outcome"] == outcome)
        .fold(tally(0, 0), |t, l| tally(t.count + 1, t.amount_minor + l["amount_minor"].as_u64().expect("amount")))
}

#[test]
fn a_flight_closes_only_when_settled_and_its_books_match_the_issuer() {
    let dep = Deployment::new(2);
    let (_issuer, mut master, _slaves) = dep.start_flight();
    dep.master_link("down");
    let cards = dep.cards();
    let (mut a1, mut a2) = (
        SaleApp::connect(&dep.slave_socket(1)).expect("socket"),
        SaleApp::connect(&dep.slave_socket(2)).expect("socket"),
    );
    let take = |app: &mut SaleApp, card: usize, amount: u64| -> String {
        let a = app.capture(&cards[card], amount, "7C").expect("capture");
        accepted_id(&a).unwrap_or_else(|| panic!("accepted: {a}"))
    };
    // Card 0 approves, card 4 declines (insufficient funds), card 1 approves, card 5 declines
    // (account blocked); the fifth payment is voided before any batch.
    let reversed = take(&mut a1, 0, 1_250);
    take(&mut a1, 4, 9_900);
    // A meal (merchant category 5812); every other sale is the terminals' default, duty free.
    let c = &cards[1];
    let meal = a2
        .request(&json!({
            "op": "capture", "pan": c.pan, "expiry": c.expiry, "amount_minor": 150_000,
            "currency": c.currency, "seat": "7C", "mcc": "5812",
        }))
        .expect("capture");
    accepted_id(&meal).unwrap_or_else(|| panic!("accepted: {meal}"));
    take(&mut a2, 5, 2_000);
    let voided = take(&mut a1, 0, 500);
    dep.wait_for("five at the master", Duration::from_secs(30), || dep.master_total() == 5);
    let v = a1.request(&json!({ "op": "void", "payment_id": voided })).expect("void answer");
    assert_eq!(v["outcome"], "voided", "{v}");

    // In the air: four payments wait for the ground. Refused, with a clear error and exit 75.
    let refused = close_cmd(&dep, &[]);
    assert_eq!(refused.status.code(), Some(75), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(refused.stdout.is_empty());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("4 payment(s) of flight") && err.contains("--force"), "{err}");
    // Forced: they are listed and counted as pending, and the books still balance.
    let forced = manifest_of(&close_cmd(&dep, &["--force"]));
    assert!(forced.forced);
    let eur = &forced.currencies[0].books;
    assert_eq!(eur.captured, tally(5, 1_250 + 9_900 + 150_000 + 2_000 + 500));
    assert_eq!((eur.pending, eur.voided, eur.approved), (tally(4, 163_150), tally(1, 500), tally(0, 0)));
    assert!(eur.balanced());
    assert_eq!(forced.verify(&manifest_key(&dep)), []);

    // Landing: every carried payment decided and delivered; then the first is voided by its
    // sale app after the issuer approved it: reversed.
    dep.master_link("auto");
    dep.wait_for("four delivered", Duration::from_secs(60), || dep.master_status(None)["payments"]["delivered"] == 4);
    let v = a1.request(&json!({ "op": "void", "payment_id": reversed })).expect("void answer");
    assert_eq!(v["outcome"], "reversal_pending", "{v}");
    dep.wait_for("the reversal recorded", Duration::from_secs(60), || {
        dep.master_status(Some(&reversed))["void"] == "reversed"
    });

    let m = manifest_of(&close_cmd(&dep, &[]));
    assert!(!m.forced);
    assert_eq!(m.currencies.len(), 1);
    let books = &m.currencies[0].books;
    assert_eq!(books.captured, tally(5, 163_650));
    assert_eq!(books.approved, tally(1, 150_000));
    assert_eq!(books.declined, tally(2, 11_900));
    assert_eq!((books.voided, books.reversed), (tally(2, 1_750), tally(1, 1_250)), "voids net out");
    assert_eq!((books.pending, books.refused), (tally(0, 0), tally(0, 0)));
    assert!(books.balanced());
    assert!(m.terminals.iter().all(|t| t.books.balanced()), "{:?}", m.terminals);
    let per_terminal: Vec<(&str, u64)> =
        m.terminals.iter().map(|t| (t.terminal.as_str(), t.books.captured.count)).collect();
    assert_eq!(per_terminal, [("slave-1", 3), ("slave-2", 2)]);
    let per_category: Vec<(&str, u64, u64)> = m
        .merchant_categories
        .iter()
        .map(|c| (c.mcc.as_str(), c.books.captured.count, c.books.approved.amount_minor))
        .collect();
    assert_eq!(per_category, [("5309", 4, 0), ("5812", 1, 150_000)]);
    let standing = |id: &str| m.payments.iter().find(|e| e.payment_id == id).map(|e| e.standing);
    assert_eq!((standing(&reversed), standing(&voided)), (Some(Standing::Reversed), Some(Standing::Voided)));

    // The issuer's ledger agrees, count for count and in money, and reconciles line by line.
    let ledger = dep.ledger();
    assert_eq!(ledger_tally(&ledger, "approved"), books.approved);
    assert_eq!(ledger_tally(&ledger, "declined"), books.declined);
    assert_eq!(ledger_tally(&ledger, "reversed"), books.reversed);
    assert_eq!(manifest::reconcile(&m, &issuer_view(&ledger)), []);
    let key = manifest_key(&dep);
    assert_eq!(m.verify(&key), []);
    // A ledger with a payment the manifest lacks (an issuer that decided one it should not
    // have): listed, not hidden.
    let mut dropped = m.clone();
    dropped.payments.retain(|e| e.standing != Standing::Approved);
    let found = manifest::reconcile(&dropped, &issuer_view(&ledger));
    assert!(found.iter().any(|x| matches!(x, manifest::Mismatch::UnknownToAircraft { .. })), "{found:?}");
    assert!(dropped.verify(&key).contains(&manifest::Mismatch::ChainInvalid));

    // The issuer's side: the manifest against its ledger, scoped to the flight's batches.
    let as_json = serde_json::to_value(&m).expect("json");
    let (code, answer) = issuer_reconcile(&dep, &as_json, "manifest.json");
    assert_eq!((code, &answer["mismatches"]), (Some(0), &json!([])), "{answer}");
    assert_eq!((answer["payments"].as_u64(), answer["decisions"].as_u64()), (Some(5), Some(4)), "{answer}");
    // A manifest that hides the approval and lowers a decline: each listed, exit 1.
    let mut tampered = as_json.clone();
    let list = tampered["payments"].as_array_mut().expect("payments");
    let approved = list.iter().position(|e| e["standing"] == "approved").expect("one approval");
    let hidden = list.remove(approved)["payment_id"].clone();
    let declined = list.iter_mut().find(|e| e["standing"] == "declined").expect("a decline");
    declined["amount_minor"] = json!(1);
    let lowered = declined["payment_id"].clone();
    let (code, answer) = issuer_reconcile(&dep, &tampered, "tampered.json");
    assert_eq!(code, Some(1), "{answer}");
    let kinds: Vec<(&str, &Value)> = answer["mismatches"]
        .as_array()
        .expect("mismatches")
        .iter()
        .map(|x| (x["kind"].as_str().expect("kind"), &x["payment_id"]))
        .collect();
    assert!(kinds.contains(&("unknown_to_aircraft", &hidden)), "{answer}");
    assert!(kinds.contains(&("amount_differs", &lowered)), "{answer}");
    assert!(kinds.iter().any(|k| k.0 == "books_disagree"), "{answer}");
    let (code, _) = issuer_reconcile(&dep, &json!({ "not": "a manifest" }), "junk.json");
    assert_eq!(code, Some(64));

    // Over the ground link: the manifest queued (`--send`, refused with `--force`), sent, and
    // the issuer's signed acknowledgement stored on the aircraft and shown with the manifest.
    let refused = close_cmd(&dep, &["--send", "--force"]);
    assert_eq!(refused.status.code(), Some(64), "{}", String::from_utf8_lossy(&refused.stderr));
    let queued: Value = serde_json::from_slice(&close_cmd(&dep, &["--send"]).stdout).expect("json");
    assert_eq!(queued["chain"], json!(m.chain), "{queued}");
    let mut acked = Value::Null;
    dep.wait_for("the issuer's acknowledgement", Duration::from_secs(30), || {
        acked = serde_json::from_slice(&close_cmd(&dep, &[]).stdout).unwrap_or(Value::Null);
        acked.get("issuer_ack").is_some()
    });
    let ack = &acked["issuer_ack"];
    assert_eq!(acked["queued_for_issuer"], json!(false), "off the queue once acknowledged: {acked}");
    assert_eq!((&ack["signature_valid"], &ack["matches_this_manifest"]), (&json!(true), &json!(true)), "{ack}");
    assert_eq!((&ack["mismatches"], &ack["decisions"], &ack["payments"]), (&json!([]), &json!(4), &json!(5)), "{ack}");
    assert!(ack["aircraft"].is_string(), "{ack}");
    // The manifest itself was signed with the aircraft's certificate key, checked by the issuer
    // against the certificate the connection presented.
    assert_eq!(ack["manifest_signature_valid"], json!(true), "{ack}");

    // The same books from the stopped daemon's store; and a flight id that is not one: exit 64.
    master.terminate();
    let stopped = manifest_of(&close_cmd(&dep, &[]));
    assert_eq!(
        (&stopped.currencies, &stopped.terminals, &stopped.payments, &stopped.chain),
        (&m.currencies, &m.terminals, &m.payments, &m.chain)
    );
    assert_eq!(stopped.verify(&key), []);
    let bad = close_cmd(&dep, &["--flight", "no spaces"]);
    assert_eq!(bad.status.code(), Some(64), "{}", String::from_utf8_lossy(&bad.stderr));

    // No card number in the manifest: ids, terminals and amounts only.
    let text = serde_json::to_string(&m).expect("json");
    for c in &cards {
        for w in c.pan.as_bytes().windows(12) {
            assert!(!text.contains(std::str::from_utf8(w).expect("digits")), "a card number in the manifest");
        }
    }
    let ids: BTreeSet<&str> = m.payments.iter().map(|e| e.payment_id.as_str()).collect();
    assert_eq!(ids.len(), 5);
    // Nor anywhere on disk or in a log, the manifest files written above included.
    dep.assert_no_full_pan_anywhere();
}
