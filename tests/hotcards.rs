//! The hot-card list with real processes: a card the issuer declines `account_blocked` on one
//! flight is on its list afterwards; the master fetches the change (a delta from the version it
//! holds), every terminal gets the list, and on the next flight that card is refused at every
//! seat with `hot_card` while other cards still pass. No card number reaches any disk or log.

use std::collections::BTreeSet;
use std::time::Duration;

use inflight_e2e::{accepted_id, Deployment, SaleApp};

const TERMINALS: u32 = 3;

#[test]
fn a_card_declined_account_blocked_is_refused_hot_card_at_every_seat_on_the_next_flight() {
    let dep = Deployment::new(TERMINALS);
    let cards = dep.cards();
    let good =
        cards.iter().find(|c| c.status == "open" && c.enrolled && c.available_minor >= 100_000).expect("a good card");
    let blocked = cards.iter().find(|c| c.status == "blocked").expect("the blocked test card");
    let lost = cards.iter().find(|c| c.status == "lost").expect("the demo's lost card");
    let (_issuer, mut master, _slaves) = dep.start_flight();
    // Before any decline the list holds the demo's lost card (version 1), on every terminal.
    dep.wait_hot_lists(1);
    assert_eq!(dep.master_status(None)["hot_list_entries"], 1);

    // Flight 1: the blocked card is accepted offline (nothing tells the seat yet) and declined.
    dep.master_link("down");
    let mut accepted = BTreeSet::new();
    let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
    let a = app.capture(lost, 1_000, "3A").expect("answer");
    assert_eq!((a["outcome"].as_str(), a["reason"].as_str()), (Some("rejected"), Some("hot_card")), "{a}");
    for card in [good, blocked] {
        let a = app.capture(card, 1_000, "3A").expect("answer");
        accepted.insert(accepted_id(&a).unwrap_or_else(|| panic!("flight 1 refused a card: {a}")));
    }
    dep.wait_for("flight 1 at the master", Duration::from_secs(30), || dep.master_total() == 2);
    dep.master_link("auto");
    dep.wait_for("flight 1 decided and delivered", Duration::from_secs(60), || {
        dep.master_status(None)["payments"]["delivered"] == 2
    });
    let ledger = dep.assert_exactly_once_in_money(&accepted);
    let reasons: BTreeSet<&str> = ledger.iter().filter_map(|l| l["reason"].as_str()).collect();
    assert_eq!(reasons, BTreeSet::from(["account_blocked"]), "{ledger:?}");

    // Turnaround: the master starts again for flight 2; its first ground session fetches the
    // list with the version it holds and gets only what changed.
    master.terminate();
    let _master = dep.start_master();
    dep.wait_for("the master holds hot-card list version 2", Duration::from_secs(30), || {
        dep.master_status(None)["hot_list_version"] == 2
    });
    assert_eq!(dep.master_status(None)["hot_list_entries"], 2);
    assert!(dep.log("master").contains("kind=\"delta\""), "the master fetched a delta, not the whole list");
    dep.wait_hot_lists(2);

    // Flight 2, link down again: the blocked and the lost card are refused at every seat, the
    // good one passes.
    dep.master_link("down");
    for k in 1..=TERMINALS {
        let mut app = SaleApp::connect(&dep.slave_socket(k)).expect("socket");
        for card in [blocked, lost] {
            let refused = app.capture(card, 1_000, "5C").expect("answer");
            assert_eq!(
                (refused["outcome"].as_str(), refused["reason"].as_str()),
                (Some("rejected"), Some("hot_card")),
                "slave-{k}: {refused}"
            );
        }
        let passed = app.capture(good, 1_000, "5C").expect("answer");
        assert!(accepted_id(&passed).is_some(), "slave-{k} refused a card not on the list: {passed}");
    }
    dep.wait_for("flight 2 at the master", Duration::from_secs(30), || dep.master_total() == 2 + u64::from(TERMINALS));
    // The list on the terminals' disks is keyed hashes: no card number anywhere.
    dep.assert_no_full_pan_anywhere();
}
