//! A hostile terminal alters chip payments after the card signed them (`--tamper`): the issuer
//! declines exactly those, `cryptogram_invalid`, and the books still close in money.

use inflight_sim::{run, SimOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_altered_chip_payment_is_declined_cryptogram_invalid_and_nothing_else() {
    let r = run(SimOptions { slaves: 30, payments_per_slave: 6, seed: 13, tamper: 20.0, ..SimOptions::default() })
        .await
        .expect("flight completes");
    assert!(r.ok(), "{}", r.table());
    assert!(r.tampered > 0, "the run altered some payments: {}", r.table());
    assert_eq!(r.declined.get("cryptogram_invalid").copied(), Some(r.tampered), "{}", r.table());
    assert!(!r.declined.contains_key("atc_replayed"), "every tap is fresh: {}", r.table());
    assert_eq!((r.lost, r.duplicated, r.money_mismatches, r.pan_leaks), (0, 0, 0, 0));
}

/// Without tampering, a flight of chip cards has no chip decline at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_of_genuine_chip_cards_has_no_chip_decline() {
    let r = run(SimOptions { slaves: 20, payments_per_slave: 5, seed: 14, ..SimOptions::default() })
        .await
        .expect("flight completes");
    assert!(r.ok(), "{}", r.table());
    assert_eq!(r.tampered, 0);
    assert!(r.declined.keys().all(|k| k != "cryptogram_invalid" && k != "atc_replayed"), "{}", r.table());
    assert!(r.approved > 0);
}
