//! A wide-body cabin: 300 terminals × 10 payments, every invariant holds.

use inflight_sim::{run, SimOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_terminals_ten_payments_each() {
    let r = run(SimOptions { slaves: 300, payments_per_slave: 10, seed: 300, ..SimOptions::default() })
        .await
        .expect("flight completes");
    assert!(r.ok(), "{}", r.table());
    assert_eq!(r.captures, 3_000);
    assert_eq!((r.lost, r.duplicated, r.phantom, r.undelivered, r.pan_leaks), (0, 0, 0, 0, 0));
    assert!(r.accepted > 1_500, "a realistic mix is mostly accepted: {}", r.accepted);
    assert_eq!(r.approved + r.declined.values().sum::<u64>(), r.accepted, "every accepted payment decided");
    assert_eq!(r.batches, 1, "one consolidated batch");
    for reason in ["bin_not_enrolled", "expired", "over_txn_limit", "over_card_flight_limit"] {
        assert!(r.rejected.get(reason).copied().unwrap_or(0) > 0, "{reason} appears in the mix: {:?}", r.rejected);
    }
    for reason in ["insufficient_funds", "account_blocked", "unknown_card"] {
        assert!(r.declined.get(reason).copied().unwrap_or(0) > 0, "{reason} appears in the mix: {:?}", r.declined);
    }
}
