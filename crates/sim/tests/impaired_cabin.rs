//! Sales over a bad cabin network: loss between terminals and master, and one terminal cut off
//! for longer than the idle timeout.

use inflight_sim::{run, SimOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_cabin_and_a_terminal_cut_off() {
    let r = run(SimOptions {
        slaves: 60,
        payments_per_slave: 10,
        seed: 6,
        cabin_loss: 0.05,
        cut_terminal: true,
        ..SimOptions::default()
    })
    .await
    .expect("flight completes");
    assert!(r.ok(), "{}", r.table());
    assert_eq!((r.lost, r.duplicated, r.undelivered, r.unanswered), (0, 0, 0, 0));
    assert_eq!(r.captures, 600);
}
