//! The same seed twice gives the same counts by outcome and reason; another seed does not.

use inflight_sim::{run, SimOptions};

fn counts(r: &inflight_sim::report::Report) -> String {
    format!("accepted {} rejected {:?} approved {} declined {:?}", r.accepted, r.rejected, r.approved, r.declined)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_counts() {
    let opts = SimOptions { slaves: 60, payments_per_slave: 10, seed: 4242, ..SimOptions::default() };
    let a = run(opts.clone()).await.expect("first flight");
    let b = run(opts.clone()).await.expect("second flight");
    assert!(a.ok() && b.ok(), "{}\n{}", a.table(), b.table());
    assert_eq!(counts(&a), counts(&b));
    let c = run(SimOptions { seed: 4243, ..opts }).await.expect("third flight");
    assert!(c.ok(), "{}", c.table());
    assert_ne!(counts(&a), counts(&c), "another seed is another flight");
}
