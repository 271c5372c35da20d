//! The 24-hour deadline of deferred authorizations (issue 13, part 2), with real processes: a
//! 30-hour diversion. Payments are captured with the ground link down; the aircraft's clock
//! then runs on past their deadline (the master restarted with the `test-hooks` clock skew,
//! `INFLIGHT_CLOCK_SKEW_MS`, at +21 h and then +30 h: the same default 24 h window a deployment
//! runs with, no waiting); more payments are captured on time; then the link comes up. Every
//! payment is decided exactly once (checked in money), the late ones carry `late: true` at the
//! issuer and only they do, and the crew saw the warning, then the missed deadlines, in
//! `status`, the report and the metrics.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use inflight_e2e::{accepted_id, bin, Deployment, SaleApp};
use serde_json::Value;

const HOUR_MS: i64 = 3_600_000;

/// The master's (and later the issuer's) clock `hours` on.
fn skew(hours: i64) -> String {
    (hours * HOUR_MS).to_string()
}

/// `payments.deadline_soon` and `payments.deadline_missed` of the running master's status.
fn deadline_counts(dep: &Deployment) -> (u64, u64) {
    let p = &dep.master_status(None)["payments"];
    let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("payments.{k} missing: {p}"));
    (n("deadline_soon"), n("deadline_missed"))
}

/// The JSON report, from the running master.
fn report(dep: &Deployment) -> Value {
    let out = Command::new(bin("inflight-master"))
        .args(["report", "--config"])
        .arg(dep.config("master"))
        .output()
        .expect("run report");
    assert!(out.status.success(), "report: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the report is JSON")
}

/// One `GET /metrics`: the value of `series`.
fn metric(addr: SocketAddr, series: &str) -> f64 {
    let mut s = TcpStream::connect(addr).expect("connect to metrics_listen");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read answer");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn a_30_hour_diversion_loses_nothing_and_marks_the_late_payments() {
    let dep = Deployment::new(1);
    let metrics: SocketAddr =
        ([127, 0, 0, 1], TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()).into();
    dep.prepend_config("master", &format!("metrics_listen = \"{metrics}\""));
    let mut issuer = dep.start_issuer();
    let mut master = dep.start_master();
    let _slave = dep.start_slave(1);
    dep.wait_bin_lists();
    dep.master_link("down"); // take-off; the override is kept across the master's restarts
    let card = dep.cards()[0].clone();
    let capture = |amount: u64| {
        let a = SaleApp::connect(&dep.slave_socket(1)).expect("socket").capture(&card, amount, "7C").expect("answer");
        accepted_id(&a).unwrap_or_else(|| panic!("refused: {a}"))
    };

    // Cabin sales, then a diversion: no link.
    let late: BTreeSet<String> = [110, 120, 130].into_iter().map(capture).collect();
    dep.wait_for("the first sales at the master", Duration::from_secs(30), || dep.master_total() == 3);
    for id in &late {
        let p = dep.master_status(Some(id));
        let due = p["captured_unix_ms"].as_i64().expect("captured_unix_ms") + 24 * HOUR_MS;
        assert_eq!(p["deadline_unix_ms"].as_i64(), Some(due), "{p}");
    }
    assert_eq!(deadline_counts(&dep), (0, 0), "just captured: on time");

    // 21 hours on: within the 4-hour lead time of the 24-hour deadline. The crew is warned.
    master.terminate();
    master = dep.start_master_env(&[("INFLIGHT_CLOCK_SKEW_MS", &skew(21))]);
    assert_eq!(deadline_counts(&dep), (3, 0), "warned 4 h before the deadline");
    assert_eq!(report(&dep)["deadline_soon"], 3);
    dep.wait_for("the warning in the metrics", Duration::from_secs(15), || {
        metric(metrics, "inflight_master_payments_deadline{state=\"soon\"}") == 3.0
    });

    // 30 hours on: the deadline is past; nothing is dropped.
    master.terminate();
    master = dep.start_master_env(&[("INFLIGHT_CLOCK_SKEW_MS", &skew(30))]);
    assert_eq!(deadline_counts(&dep), (0, 3), "missed, still carried");
    dep.wait_for("the missed deadlines in the metrics", Duration::from_secs(15), || {
        metric(metrics, "inflight_master_payments_deadline{state=\"missed\"}") == 3.0
    });
    assert_eq!(dep.master_total(), 3, "nothing dropped for lateness");

    // Sales go on at the diversion airport: the terminal takes the master's time (+30 h), so
    // these are on time. The issuer's clock is the same day as the aircraft's.
    dep.wait_for("the terminal on the master's clock", Duration::from_secs(30), || {
        dep.slave_status(1, None)["clock_offset_ms"].as_i64().is_some_and(|o| (o - 30 * HOUR_MS).abs() < 60_000)
    });
    let on_time: BTreeSet<String> = [140, 150].into_iter().map(capture).collect();
    dep.wait_for("every sale at the master", Duration::from_secs(30), || dep.master_total() == 5);
    assert_eq!(deadline_counts(&dep), (0, 3));
    issuer.terminate();
    issuer = dep.start_issuer_env(&[("INFLIGHT_CLOCK_SKEW_MS", &skew(30))]);

    // A link: everything goes up at once, the late ones marked.
    dep.master_link("auto");
    dep.wait_for("every payment decided and delivered", Duration::from_secs(60), || {
        dep.master_status(None)["payments"]["delivered"] == 5
    });
    let accepted: BTreeSet<String> = late.union(&on_time).cloned().collect();
    let ledger = dep.assert_exactly_once_in_money(&accepted);
    for l in &ledger {
        let id = l["payment_id"].as_str().expect("payment_id");
        assert_eq!(l["late"], late.contains(id), "{l}");
        assert_ne!(l["reason"], "capture_time_out_of_bounds", "{l}");
    }
    let share = ledger.iter().filter(|l| l["late"] == true).count();
    assert_eq!((share, ledger.len()), (3, 5), "the late share: 3 of 5");

    // The crew's view once decided: the missed deadlines stay counted, with their amounts.
    assert_eq!(deadline_counts(&dep), (0, 3));
    let r = report(&dep);
    assert_eq!(r["deadline_missed"], 3, "{r}");
    let eur = r["currencies"].as_array().expect("currencies").iter().find(|c| c["currency"] == card.currency);
    let totals = &eur.expect("the card's currency").get("totals").expect("totals").clone();
    assert_eq!(totals["deadline_missed"], serde_json::json!({"count": 3, "amount_minor": 360}), "{totals}");
    assert_eq!(totals["deadline_soon"]["count"], 0, "{totals}");
    let flagged: BTreeSet<&str> = r["flagged"]
        .as_array()
        .expect("flagged")
        .iter()
        .filter(|f| f["flags"].as_array().is_some_and(|fl| fl.iter().any(|x| x == "deadline_missed")))
        .map(|f| f["payment_id"].as_str().expect("payment_id"))
        .collect();
    assert_eq!(flagged, late.iter().map(String::as_str).collect(), "the late ones listed for the crew");
    assert!(dep.log("master").contains("marked late"), "the master logs the late batch");
    dep.assert_no_full_pan_anywhere();
    drop((issuer, master));
}

/// The window and the lead time are the master's config keys: a lead longer than the window is
/// refused before anything starts (exit 64, the key named); a window of seconds (instead of the
/// clock skew above) runs a whole missed deadline in real time: the test only waits for states,
/// it never times anything.
#[test]
fn a_window_of_seconds_from_the_config_is_honoured() {
    let dep = Deployment::new(1);
    dep.set_config("master", "window_secs", "2");
    dep.set_config("master", "warn_lead_secs", "3");
    let out = Command::new(bin("inflight-master"))
        .args(["check", "--config"])
        .arg(dep.config("master"))
        .output()
        .expect("run check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("deadline.warn_lead_secs") && err.contains("longer than the window"), "{err}");

    // Warned from capture (lead = window), missed 2 s later.
    dep.set_config("master", "warn_lead_secs", "2");
    let (_issuer, _master, _slaves) = dep.start_flight();
    dep.master_link("down");
    let card = dep.cards()[0].clone();
    let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
    let ids: BTreeSet<String> = [210, 220]
        .into_iter()
        .map(|amount| {
            let a = app.capture(&card, amount, "8D").expect("answer");
            accepted_id(&a).unwrap_or_else(|| panic!("refused: {a}"))
        })
        .collect();
    dep.wait_for("both sales at the master", Duration::from_secs(30), || dep.master_total() == 2);
    dep.wait_for("both deadlines missed", Duration::from_secs(30), || deadline_counts(&dep) == (0, 2));
    dep.master_link("auto");
    dep.wait_for("both decided and delivered", Duration::from_secs(60), || {
        dep.master_status(None)["payments"]["delivered"] == 2
    });
    let ledger = dep.assert_exactly_once_in_money(&ids);
    assert!(ledger.iter().all(|l| l["late"] == true), "{ledger:?}");
    assert_eq!(deadline_counts(&dep), (0, 2));
}
