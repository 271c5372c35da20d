//! Whole flights with real processes: gate, captures with the link down, landing, one batch,
//! results back to every terminal; and the faults of the ground link: cut mid-upload, issuer and
//! master killed at the worst moments. After each, every accepted payment is in the issuer's
//! ledger exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use inflight_e2e::{accepted_id, Card, Deployment, SaleApp, UdpRelay};
use inflight_store::{BinListSigner, CardVault, MasterStore, SlaveStore};
use serde_json::{json, Value};

/// Every accepted payment decided exactly once, checked in money (see the harness).
fn assert_ledger_exactly(dep: &Deployment, accepted: &BTreeSet<String>) -> Vec<Value> {
    dep.assert_exactly_once_in_money(accepted)
}

/// Waits until the master has every payment decided and delivered.
fn wait_all_delivered(dep: &Deployment, count: usize, timeout: Duration) {
    dep.wait_for(&format!("{count} payments decided and delivered"), timeout, || {
        let p = &dep.master_status(None)["payments"];
        p["total"] == count && p["delivered"] == count
    });
}

fn capture(app: &mut SaleApp, card: &Card, amount: u64) -> Value {
    app.capture(card, amount, "14C").expect("capture answer")
}

#[test]
fn a_flight_of_ten_terminals_decides_every_payment_once_with_the_expected_outcome() {
    const TERMINALS: u32 = 10;
    let dep = Deployment::new(TERMINALS);
    let (mut issuer, mut master, mut slaves) = dep.start_flight();
    dep.wait_hot_lists(1); // the demo's lost card is listed from the issuer's first start
    dep.master_link("down"); // take-off
    let cards = dep.cards();
    let mut accepted = BTreeSet::new();
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for k in 1..=TERMINALS {
        let mut app = SaleApp::connect(&dep.slave_socket(k)).expect("socket");
        // Key-entered captures of the cards without a chip (tests/chip.rs takes the chip cards).
        for card in cards.iter().filter(|c| !c.chip) {
            let a = capture(&mut app, card, 1_000 + u64::from(k));
            if card.status == "lost" {
                assert_eq!((a["outcome"].as_str(), a["reason"].as_str()), (Some("rejected"), Some("hot_card")), "{a}");
                continue;
            }
            match card.enrolled && !card.expiry.ends_with("/24") {
                true => {
                    let id = accepted_id(&a).unwrap_or_else(|| panic!("{} refused: {a}", &card.pan[..6]));
                    let want = if card.status == "blocked" {
                        "declined:account_blocked"
                    } else if card.available_minor < 1_000 + u64::from(k) {
                        "declined:insufficient_funds"
                    } else {
                        "approved"
                    };
                    expected.insert(id.clone(), want.to_owned());
                    accepted.insert(id);
                }
                false => {
                    let want = if card.enrolled { "expired" } else { "bin_not_enrolled" };
                    assert_eq!((a["outcome"].as_str(), a["reason"].as_str()), (Some("rejected"), Some(want)), "{a}");
                }
            }
        }
        // Over the BIN rule's per-transaction limit (200,000): refused at the seat.
        let a = capture(&mut app, &cards[7], 200_001);
        assert_eq!(a["reason"], "over_txn_limit", "{a}");
    }
    dep.wait_for("all payments at the master", Duration::from_secs(30), || dep.master_total() == accepted.len() as u64);
    assert!(dep.ledger().is_empty(), "nothing reaches the issuer while the link is down");

    dep.master_link("auto"); // landing
    wait_all_delivered(&dep, accepted.len(), Duration::from_secs(60));
    let ledger = assert_ledger_exactly(&dep, &accepted);
    let batches: BTreeSet<&str> = ledger.iter().map(|l| l["batch_id"].as_str().expect("batch_id")).collect();
    assert_eq!(batches.len(), 1, "one consolidated batch");
    for l in &ledger {
        let got = match l["outcome"].as_str() {
            Some("approved") => "approved".to_owned(),
            _ => format!("declined:{}", l["reason"].as_str().unwrap_or("?")),
        };
        assert_eq!(&got, &expected[l["payment_id"].as_str().expect("id")], "{l}");
    }
    // Every terminal shows its results.
    for k in 1..=TERMINALS {
        dep.wait_for(&format!("slave-{k} has all its results"), Duration::from_secs(30), || {
            dep.slave_status(k, None)["payments"]["decided"] == 7
        });
    }
    let any = accepted.iter().next().expect("one payment");
    let status: Vec<Value> = (1..=TERMINALS).map(|k| dep.slave_status(k, Some(any))).collect();
    let shown = status.iter().find(|s| s.get("error").is_none()).expect("its terminal knows it");
    assert_eq!(
        shown["outcome"].as_str().map(|o| o.to_owned()),
        Some(expected[any].split(':').next().unwrap_or("").to_owned()),
        "{shown}"
    );

    // After delivery no sealed card data remains, on the master or any terminal.
    master.terminate();
    issuer.terminate();
    for s in &mut slaves {
        s.terminate();
    }
    let key = |name: &str| CardVault::from_key_file(&dep.path(&format!("keys/{name}.card.key"))).expect("key");
    let m = MasterStore::open(&dep.path("data/master"), key("master"), 4 << 20).expect("master store");
    assert_eq!(m.with_card_data().expect("scan"), vec![], "master kept card data after delivery");
    m.close();
    for k in 1..=TERMINALS {
        let s = SlaveStore::open(&dep.path(&format!("data/slave-{k}")), key(&format!("slave-{k}")), 4 << 20)
            .expect("slave store");
        assert_eq!(s.with_card_data().expect("scan"), vec![], "slave-{k} kept card data after its results");
        s.close();
    }
    dep.assert_no_full_pan_anywhere();
}

#[test]
fn without_a_valid_signed_list_every_card_is_refused() {
    let dep = Deployment::new(3);
    let card = dep.cards()[0].clone();
    let refused = |k: u32| {
        let a = capture(&mut SaleApp::connect(&dep.slave_socket(k)).expect("socket"), &card, 100);
        assert_eq!(
            (a["outcome"].as_str(), a["reason"].as_str()),
            (Some("rejected"), Some("no_valid_bin_list")),
            "slave-{k}: {a}"
        );
    };

    // 1. No list at all: the issuer was never reached.
    let _master = dep.start_master();
    let _s1 = dep.start_slave(1);
    refused(1);

    // 2. An expired list, correctly signed by the issuer, installed in the terminal's store.
    let signer = BinListSigner::from_hex_file(&dep.path("keys/issuer-signing.key")).expect("signing key");
    let expired = inflight_wire::BinList {
        version: 7,
        issuer: "Demo Bank".into(),
        valid_from_unix_ms: 1_000,
        valid_until_unix_ms: 2_000,
        rules: vec![inflight_wire::BinRule {
            prefix: inflight_wire::BinPrefix::parse(&card.pan[..6]).expect("valid"),
            kind: inflight_wire::CardKind::Credit,
            txn_limit_minor: 1_000_000,
            card_flight_limit_minor: 1_000_000,
            currencies: vec![inflight_wire::Currency::parse("EUR").expect("known")],
            cvm_required: false,
            entry_modes: inflight_wire::EntryMode::ALL.to_vec(),
        }],
    };
    {
        let key = CardVault::from_key_file(&dep.path("keys/slave-2.card.key")).expect("key");
        let s = SlaveStore::open(&dep.path("data/slave-2"), key, 4 << 20).expect("store");
        let t = s.set_bin_list(&signer.sign(&expired)).expect("install");
        s.durable_blocking(t).expect("durable");
        s.close();
    }
    let _s2 = dep.start_slave(2);
    assert_eq!(dep.slave_status(2, None)["bin_list_version"], 7, "the expired list is installed");
    refused(2);

    // 3. A list whose signature does not verify: terminal 3 trusts another issuer key.
    let other = BinListSigner::from_pkcs8(&BinListSigner::generate().expect("keygen")).expect("key");
    let hex: String = other.public_key().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dep.path("keys/other-issuer.pub"), hex + "\n").expect("write key");
    dep.set_config("slave-3", "issuer_public_key_file", "\"../keys/other-issuer.pub\"");
    let _s3 = dep.start_slave(3);
    let _issuer = dep.start_issuer();
    dep.wait_for("terminal 1 gets the real list", Duration::from_secs(30), || {
        dep.slave_status(1, None)["bin_list_valid"] == true
    });
    dep.wait_for("terminal 3 rejects the list", Duration::from_secs(30), || {
        dep.log("slave-3").contains("BIN list from the master rejected")
    });
    refused(3);
    assert_eq!(dep.slave_status(3, None)["bin_list_version"], Value::Null);
    // Terminal 1, with the genuine list, now takes the card.
    assert!(accepted_id(&capture(&mut SaleApp::connect(&dep.slave_socket(1)).expect("socket"), &card, 100)).is_some());
}

#[test]
fn the_master_refuses_a_card_past_its_flight_limit_across_terminals() {
    let dep = Deployment::new(5);
    let _flight = dep.start_flight();
    dep.master_link("down");
    // Card 2: BIN 400011, 200,000 per payment, 300,000 per card per flight.
    let card = dep.cards()[1].clone();
    let answers: Vec<Value> = (1..=5)
        .map(|k| capture(&mut SaleApp::connect(&dep.slave_socket(k)).expect("socket"), &card, 100_000))
        .collect();
    let outcomes: Vec<(&str, &str)> =
        answers.iter().map(|a| (a["outcome"].as_str().unwrap_or("?"), a["reason"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        outcomes,
        [
            ("accepted", ""),
            ("accepted", ""),
            ("accepted", ""),
            ("rejected", "over_card_flight_limit"),
            ("rejected", "over_card_flight_limit")
        ],
        "{answers:?}"
    );
    let s = dep.master_status(None);
    assert_eq!((s["payments"]["total"].as_u64(), s["payments"]["refused"].as_u64()), (Some(3), Some(2)), "{s}");
    // The refused payments stay refused on their terminals and never reach the issuer.
    let refused_id = answers[3]["payment_id"].as_str().expect("refusals carry the id");
    assert_eq!(dep.slave_status(4, Some(refused_id))["state"], "refused");
    dep.master_link("auto");
    wait_all_delivered(&dep, 3, Duration::from_secs(60));
    let accepted: BTreeSet<String> = answers.iter().filter_map(accepted_id).collect();
    assert_ledger_exactly(&dep, &accepted);
}

/// Captures `n` payments per terminal with the link down; returns the accepted ids.
fn captures_with_link_down(dep: &Deployment, n: u64) -> BTreeSet<String> {
    dep.master_link("down");
    let card = dep.cards()[1].clone();
    let mut ids = BTreeSet::new();
    for k in 1..=dep.terminals {
        let mut app = SaleApp::connect(&dep.slave_socket(k)).expect("socket");
        for i in 0..n {
            ids.insert(accepted_id(&capture(&mut app, &card, 1 + i % 7)).expect("accepted"));
        }
    }
    dep.wait_for("all at the master", Duration::from_secs(30), || dep.master_total() == ids.len() as u64);
    ids
}

#[test]
fn a_link_cut_mid_upload_resends_the_same_batch_and_decides_nothing_twice() {
    let dep = Deployment::new(4);
    let issuer_addr: std::net::SocketAddr = {
        let cfg: toml::Table = std::fs::read_to_string(dep.config("issuer")).expect("config").parse().expect("toml");
        cfg["listen"].as_str().expect("listen").parse().expect("addr")
    };
    let relay = UdpRelay::start(issuer_addr);
    dep.set_config("master", "issuer_addr", &format!("\"{}\"", relay.addr));
    let _flight = dep.start_flight();
    let ids = captures_with_link_down(&dep, 500);
    // The batch is ~100 KB; let the probes and the session start through, then cut mid-stream.
    relay.cut_after(40_000);
    dep.master_link("auto");
    dep.wait_for("the link is cut mid-upload", Duration::from_secs(30), || relay.is_cut());
    // Longer than the ground link's idle timeout (5 s): the connection dies, not just stalls.
    std::thread::sleep(Duration::from_secs(7));
    assert!(dep.ledger().len() < ids.len(), "the cut came before the batch was decided");
    relay.restore();
    wait_all_delivered(&dep, ids.len(), Duration::from_secs(90));
    let ledger = assert_ledger_exactly(&dep, &ids);
    let batches: BTreeSet<&str> = ledger.iter().map(|l| l["batch_id"].as_str().expect("batch_id")).collect();
    assert_eq!(batches.len(), 1, "the same batch was sent again, not a new one");
    assert!(dep.log("master").contains("re-sending the open batch"), "the master re-sent the sealed batch");
    let log = dep.log("issuer");
    assert!(log.matches("batch begins").count() >= 2, "the issuer saw the batch at least twice:\n{log}");
}

#[test]
fn an_issuer_killed_after_storing_results_answers_the_resend_from_them() {
    let dep = Deployment::new(3);
    let mut issuer = dep.start_issuer();
    let _master = dep.start_master();
    let _slaves: Vec<_> = (1..=3).map(|k| dep.start_slave(k)).collect();
    dep.wait_bin_lists();
    let ids = captures_with_link_down(&dep, 20);
    issuer.terminate();
    let mut issuer = dep.start_issuer_env(&[("INFLIGHT_CRASH_AT", "issuer.after_results_stored")]);
    dep.master_link("auto");
    let status = issuer.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "the issuer died at the crash point");
    assert_eq!(dep.ledger().len(), ids.len(), "the results were stored before the crash");
    let _issuer = dep.start_issuer();
    wait_all_delivered(&dep, ids.len(), Duration::from_secs(60));
    assert_ledger_exactly(&dep, &ids);
    assert!(dep.log("issuer").contains("start=Done"), "the re-sent batch was answered from stored results");
}

#[test]
fn a_master_killed_after_sealing_or_mid_upload_resends_the_same_batch() {
    for point in ["master.after_seal", "master.mid_upload"] {
        let dep = Deployment::new(3);
        let (_issuer, mut master, _slaves) = dep.start_flight();
        let first = captures_with_link_down(&dep, 600);
        master.terminate();
        let mut master = dep.start_master_env(&[("INFLIGHT_CRASH_AT", point)]);
        dep.master_link("auto");
        let status = master.wait_exit(Duration::from_secs(60));
        assert!(!status.success(), "{point}: the master died at the crash point");

        // While the sealed batch is in flight, more payments are captured: they go in the next.
        let card = dep.cards()[2].clone();
        let mut later = BTreeSet::new();
        for k in 1..=3 {
            let a = capture(&mut SaleApp::connect(&dep.slave_socket(k)).expect("socket"), &card, 99);
            later.insert(accepted_id(&a).expect("accepted while the master is down"));
        }
        let _master = dep.start_master();
        let all: BTreeSet<String> = first.union(&later).cloned().collect();
        wait_all_delivered(&dep, all.len(), Duration::from_secs(90));
        let ledger = assert_ledger_exactly(&dep, &all);
        let batch_of: BTreeMap<&str, &str> = ledger
            .iter()
            .map(|l| (l["payment_id"].as_str().expect("id"), l["batch_id"].as_str().expect("batch")))
            .collect();
        let first_batches: BTreeSet<&str> = first.iter().map(|id| batch_of[id.as_str()]).collect();
        let later_batches: BTreeSet<&str> = later.iter().map(|id| batch_of[id.as_str()]).collect();
        assert_eq!(first_batches.len(), 1, "{point}: the sealed batch was re-sent whole");
        assert!(
            first_batches.is_disjoint(&later_batches),
            "{point}: payments captured meanwhile went into the next batch"
        );
        assert!(dep.log("master").contains("re-sending the open batch"), "{point}");
    }
}

#[test]
fn status_answers_for_unknown_payments_and_bad_admin_requests() {
    let dep = Deployment::new(1);
    let _flight = dep.start_flight();
    let unknown = "0".repeat(32);
    assert_eq!(dep.master_status(Some(&unknown))["error"], "unknown_payment");
    assert_eq!(dep.slave_status(1, Some(&unknown))["error"], "unknown_payment");
    let mut admin = SaleApp::connect(&dep.path("run/master.sock")).expect("admin");
    assert_eq!(admin.request(&json!({"op": "link", "mode": "sideways"})).expect("answer")["error"], "bad_request");
    assert_eq!(admin.request(&json!({"op": "flight", "flight": "has space"})).expect("answer")["error"], "bad_request");
    assert_eq!(admin.request(&json!({"op": "flight", "flight": "IF200"})).expect("answer")["flight"], "IF200");
}

#[test]
fn payments_waiting_past_the_age_limit_are_flagged_not_dropped() {
    let dep = Deployment::new(2);
    let (_issuer, mut master, _slaves) = dep.start_flight();
    let ids = captures_with_link_down(&dep, 5);
    assert_eq!(dep.master_status(None)["payments"]["aged"], 0);
    // A day later (the master's clock moved 25 h on), nothing has reached the ground yet.
    master.terminate();
    let _master = dep.start_master_env(&[("INFLIGHT_CLOCK_SKEW_MS", "90000000")]);
    let p = dep.master_status(None)["payments"].clone();
    assert_eq!((p["aged"].as_u64(), p["total"].as_u64()), (Some(ids.len() as u64), Some(ids.len() as u64)), "{p}");
    dep.master_link("auto");
    wait_all_delivered(&dep, ids.len(), Duration::from_secs(60));
    assert_eq!(dep.master_status(None)["payments"]["aged"], 0, "decided payments are no longer waiting");
    assert_ledger_exactly(&dep, &ids);
}

/// The issuer renews its list (same version, a fresh window, signed again) and the master
/// fetches it while the link is up: the fleet keeps selling past the first list's expiry. Before,
/// a list re-signed with a later window was never taken (only a higher version was), so every
/// capture became `no_valid_bin_list` once the first window (48 h) had passed.
#[test]
fn a_renewed_bin_list_keeps_the_fleet_selling_past_the_first_lists_expiry() {
    const VALIDITY_S: u64 = 4;
    let dep = Deployment::new(1);
    dep.prepend_config("issuer", &format!("bin_list_validity_seconds = {VALIDITY_S}"));
    dep.set_config("master", "bin_list_refresh_ms", "300");
    let _flight = dep.start_flight();
    let card = dep.cards()[0].clone();
    let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
    let start = Instant::now();
    let mut answers = Vec::new();
    while start.elapsed() < Duration::from_secs(3 * VALIDITY_S) {
        answers.push(capture(&mut app, &card, 100));
        std::thread::sleep(Duration::from_millis(400));
    }
    let refused: Vec<&Value> = answers.iter().filter(|a| a["outcome"] != "accepted").collect();
    assert!(
        refused.is_empty(),
        "captures refused after {} s of lists valid {VALIDITY_S} s: {refused:?}",
        3 * VALIDITY_S
    );
    assert_eq!(dep.slave_status(1, None)["bin_list_valid"], true);
    assert!(dep.log("issuer").contains("BIN list renewed"), "the issuer renewed its list");
}
