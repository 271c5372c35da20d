//! Link faults through the emulator: 1 Hz flapping over a lossy, duplicating, reordering ground
//! link; terminals changing source port mid-connection. (The ambiguous case has its own test
//! binary, `ambiguous.rs`: it installs a process-wide point observer.)

use std::time::Duration;

use inflight_sim::{run, SimOptions};

fn sound(r: &inflight_sim::report::Report) {
    assert!(r.ok(), "{}", r.table());
    assert_eq!((r.lost, r.duplicated, r.phantom, r.undelivered, r.unanswered), (0, 0, 0, 0, 0), "{}", r.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_at_one_hertz_with_loss_duplication_and_reordering() {
    let r = run(SimOptions {
        slaves: 40,
        payments_per_slave: 10,
        seed: 21,
        loss: 0.20,
        duplicate: 0.05,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(40),
        flaps: 6,
        flap_half_period: Some(Duration::from_millis(500)),
        ..SimOptions::default()
    })
    .await
    .expect("flight completes");
    sound(&r);
    assert!(r.ground_link["dropped_datagrams"].as_u64().unwrap_or(0) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_changing_source_port_mid_connection() {
    let r =
        run(SimOptions { slaves: 40, payments_per_slave: 20, seed: 23, rebind_cabin: true, ..SimOptions::default() })
            .await
            .expect("flight completes");
    sound(&r);
}
