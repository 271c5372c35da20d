//! Storage faults: a disk that stops accepting writes during sales, a store held by another
//! process, a store whose data file is corrupted. Each gets a clear refusal; nothing stored
//! earlier is lost; nothing is deleted.

use std::process::{Command, Stdio};
use std::time::Duration;

use inflight_e2e::{accepted_id, bin, Deployment, SaleApp};

#[test]
fn a_failing_disk_refuses_captures_and_loses_nothing_accepted_before() {
    let dep = Deployment::new(1);
    let _issuer = dep.start_issuer();
    let _master = dep.start_master();
    let mut slave = dep.start_slave_env(1, &[("INFLIGHT_STORE_FSYNC_FAIL_AFTER", "5")]);
    dep.wait_bin_lists();
    let card = dep.cards()[1].clone();
    let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
    let answers: Vec<_> =
        (0..8).map(|i| app.capture(&card, 100 + i, "2D").expect("an answer, even on a failing disk")).collect();
    let accepted: Vec<String> = answers.iter().filter_map(accepted_id).collect();
    // Each accepted capture costs two fsyncs (the payment, then the mark that the sale app is
    // told): the fifth fsync fails during the third capture. From then on, every capture is
    // refused: after a failed fsync nothing written can be called durable.
    let first_failed = answers.iter().position(|a| a["outcome"] != "accepted").expect("the disk fails");
    assert!((1..=4).contains(&first_failed), "{answers:?}");
    assert_eq!(accepted.len(), first_failed, "{answers:?}");
    // The fsync that failed was the capture's own (`rejected`), or that of the mark that its sale
    // app is told `accepted`: then the outcome is unknown (the mark may be on disk), not
    // `rejected`.
    let f = &answers[first_failed];
    assert!(f["error"] == "outcome_unknown" || (f["outcome"] == "rejected" && f["reason"] == "storage_error"), "{f}");
    for a in &answers[first_failed + 1..] {
        assert_eq!((a["outcome"].as_str(), a["reason"].as_str()), (Some("rejected"), Some("storage_error")), "{a}");
    }
    // The daemon keeps serving: status still answers.
    assert_eq!(dep.slave_status(1, None)["terminal_id"], "slave-1");
    // Everything accepted before the failure reached the master, confirmed, and survives a
    // restart; nothing refused is carried as confirmed.
    let n = accepted.len() as u64;
    dep.wait_for("accepted payments at the master", Duration::from_secs(20), || dep.master_total() == n);
    slave.kill9();
    let _slave = dep.start_slave(1);
    for id in &accepted {
        assert_eq!(dep.slave_status(1, Some(id))["state"], "forwarded");
    }
    let again = SaleApp::connect(&dep.slave_socket(1)).expect("socket").capture(&card, 7, "2D").expect("answer");
    assert!(accepted_id(&again).is_some(), "a healthy disk takes payments again: {again}");
}

#[test]
fn a_store_held_by_another_process_is_refused_with_exit_74() {
    let dep = Deployment::new(1);
    let _master = dep.start_master();
    let out =
        Command::new(bin("inflight-master")).args(["run", "--config"]).arg(dep.config("master")).output().expect("run");
    assert_eq!(out.status.code(), Some(74));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open store") && err.contains("lock"), "{err}");
    assert_eq!(dep.master_status(None)["daemon_running"], true, "the running master is unaffected");
}

#[test]
fn a_corrupted_store_is_refused_and_nothing_is_deleted() {
    let dep = Deployment::new(1);
    let mut master = dep.start_master();
    master.terminate();
    let db = dep.path("data/master/db");
    let mut bytes = std::fs::read(&db).expect("db file");
    for (i, b) in bytes.iter_mut().enumerate() {
        *b ^= (i as u8).wrapping_mul(31) | 1;
    }
    std::fs::write(&db, &bytes).expect("corrupt");
    let out =
        Command::new(bin("inflight-master")).args(["run", "--config"]).arg(dep.config("master")).output().expect("run");
    assert_eq!(out.status.code(), Some(74), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is damaged") && err.contains("Nothing was deleted"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for f in ["INFLIGHT_STORE", "db", "conf"] {
        assert!(dep.path(&format!("data/master/{f}")).exists(), "{f} still there");
    }
}

/// The reviewer's reproduction (issue 8, item 8): 512 bytes flipped in the middle of the master's
/// `db` file after a clean stop. sled would recover a prefix of its log and the master started
/// with 15 of the 42 payments it had acked; it must refuse instead, with exit 74, and change no
/// file. The same after `kill -9` (no clean stop), which a copy of the store is checked for.
#[test]
fn a_store_holding_fewer_payments_than_acked_is_refused_with_exit_74() {
    for clean_stop in [true, false] {
        let dep = Deployment::new(1);
        let (_issuer, mut master, _slaves) = dep.start_flight();
        let card = dep.cards()[1].clone();
        let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
        for i in 0..42 {
            let a = app.capture(&card, 100 + i, "2D").expect("answer");
            assert!(accepted_id(&a).is_some(), "{a}");
        }
        dep.wait_for("42 payments at the master", Duration::from_secs(30), || dep.master_total() == 42);
        if clean_stop {
            assert!(master.terminate().success());
        } else {
            master.kill9();
        }
        let db = dep.path("data/master/db");
        let mut bytes = std::fs::read(&db).expect("db file");
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 512] {
            *b ^= 0xFF;
        }
        std::fs::write(&db, &bytes).expect("damage");
        let before = files(&dep.path("data/master"));
        // Spawned, not `output()`: a master that starts on the damaged store must fail the test,
        // not hang it.
        let mut child = Command::new(bin("inflight-master"))
            .args(["run", "--config"])
            .arg(dep.config("master"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        let start = std::time::Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("clean stop {clean_stop}: the master started on a damaged store");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(74), "clean stop {clean_stop}: {err}");
        assert!(err.contains("is damaged") && err.contains("restore the folder from a backup"), "{err}");
        assert!(
            files(&dep.path("data/master")) == before,
            "clean stop {clean_stop}: a refused store's files were changed"
        );
    }
}

/// Every file under `dir` with its bytes, in path order.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("readable folder") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).expect("readable file")));
        }
    }
    out.sort();
    out
}
