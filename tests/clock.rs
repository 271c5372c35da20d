//! Terminals whose clocks are hours off: they judge and stamp captures with the master's time;
//! without a master to tell them the time, a clock far behind fails closed.

use std::time::Duration;

use inflight_e2e::{accepted_id, Deployment, SaleApp};

const FIVE_HOURS_MS: i64 = 5 * 3_600_000;

#[test]
fn terminals_hours_off_use_the_masters_time() {
    let dep = Deployment::new(2);
    let _issuer = dep.start_issuer();
    let mut master = dep.start_master();
    let behind = dep.start_slave_env(1, &[("INFLIGHT_CLOCK_SKEW_MS", &(-FIVE_HOURS_MS).to_string())]);
    let _ahead = dep.start_slave_env(2, &[("INFLIGHT_CLOCK_SKEW_MS", &FIVE_HOURS_MS.to_string())]);
    dep.wait_bin_lists();
    let card = dep.cards()[1].clone();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    for (k, skew) in [(1, -FIVE_HOURS_MS), (2, FIVE_HOURS_MS)] {
        let offset = dep.slave_status(k, None)["clock_offset_ms"].as_i64().expect("offset learnt from the master");
        assert!((offset + skew).abs() < 5_000, "slave-{k}: offset {offset} corrects a skew of {skew}");
        let a = SaleApp::connect(&dep.slave_socket(k)).expect("socket").capture(&card, 500, "3A").expect("answer");
        let id = accepted_id(&a).unwrap_or_else(|| panic!("slave-{k} with a clock {skew} ms off refused: {a}"));
        dep.wait_for("payment at master", Duration::from_secs(20), || {
            dep.master_status(Some(&id))["state"] == "stored"
        });
        let captured = dep.master_status(Some(&id))["captured_unix_ms"].as_i64().expect("capture time");
        assert!((captured - now_ms).abs() < 60_000, "slave-{k}: stamped with the master's time, not its own");
    }

    // Without a master to learn the time from, a terminal five hours behind sees the issuer's
    // list as not yet valid and refuses every card.
    master.kill9();
    drop(behind);
    let _behind = dep.start_slave_env(1, &[("INFLIGHT_CLOCK_SKEW_MS", &(-FIVE_HOURS_MS).to_string())]);
    let a = SaleApp::connect(&dep.slave_socket(1)).expect("socket").capture(&card, 500, "3A").expect("answer");
    assert_eq!(a["reason"], "no_valid_bin_list", "{a}");
}
