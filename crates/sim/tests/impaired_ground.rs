//! Landing over a bad ground link: 5 % loss, 300 ms delay, three drop-outs during the upload.

use std::time::Duration;

use inflight_sim::{run, SimOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_slow_flapping_ground_link() {
    let r = run(SimOptions {
        slaves: 60,
        payments_per_slave: 10,
        seed: 5,
        loss: 0.05,
        delay: Duration::from_millis(300),
        jitter: Duration::from_millis(20),
        flaps: 3,
        ..SimOptions::default()
    })
    .await
    .expect("flight completes");
    assert!(r.ok(), "{}", r.table());
    assert_eq!((r.lost, r.duplicated, r.undelivered), (0, 0, 0));
    assert!(
        r.ground_link["dropped_datagrams"].as_u64().unwrap_or(0) > 0,
        "the link really lost packets: {}",
        r.ground_link
    );
    assert!(r.timings_ms["landing_to_delivered"] >= 600, "300 ms each way cannot be faster than two round trips");
}
