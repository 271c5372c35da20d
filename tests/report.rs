//! `inflight-master report` with real processes: a small flight, then the report while the
//! master runs and again after it is stopped (the same JSON); its totals are what the flight
//! did; the CSV parses and its rows add up to the JSON; the HTML parses and its numbers are the
//! JSON's; no form holds a run of 12 or more digits of any test card.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use inflight_e2e::{accepted_id, bin, Deployment, SaleApp};
use inflight_master::report::{csv, FlightReport, Outcome, Tally, ALL_TERMINALS};
use serde_json::Value;

/// The master's clock 25 h on: payments captured now are past the 24 h age flag.
const DAY_LATER: (&str, &str) = ("INFLIGHT_CLOCK_SKEW_MS", "90000000");

/// `inflight-master report --config … [args]`, with extra environment.
fn report_cmd(dep: &Deployment, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin("inflight-master"))
        .arg("report")
        .arg("--config")
        .arg(dep.config("master"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run report")
}

/// The report in `format`, as text; the command must succeed.
fn report_text(dep: &Deployment, format: &str, env: &[(&str, &str)]) -> String {
    let out = report_cmd(dep, &["--format", format], env);
    assert!(out.status.success(), "report --format {format}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn report_json(dep: &Deployment, env: &[(&str, &str)]) -> FlightReport {
    serde_json::from_str(&report_text(dep, "json", env)).expect("the JSON form parses")
}

/// No run of 12 or more consecutive digits of any test card number in `text`.
fn assert_no_card_number(dep: &Deployment, text: &str, what: &str) {
    for c in dep.cards() {
        for w in c.pan.as_bytes().windows(12) {
            let run = std::str::from_utf8(w).expect("digits");
            assert!(!text.contains(run), "{what} holds 12 digits of a test card ({}…)", &c.pan[..6]);
        }
    }
}

/// Every total of the CSV equals the JSON's, and each terminal's rows add up to the all rows.
fn assert_csv_matches(text: &str, r: &FlightReport) {
    let rows = csv::parse(text).expect("RFC 4180");
    assert_eq!(rows[0], csv::HEADER);
    let get = |terminal: &str, currency: &str, measure: &str, reason: &str| -> Tally {
        rows[1..]
            .iter()
            .filter(|row| row[1] == terminal && row[2] == currency && row[3] == measure && row[4] == reason)
            .map(|row| Tally { count: row[5].parse().expect("count"), amount_minor: row[6].parse().expect("amount") })
            .next()
            .unwrap_or_else(|| panic!("no row {terminal} {currency} {measure} {reason}"))
    };
    for c in &r.currencies {
        let t = &c.totals;
        assert_eq!(get(ALL_TERMINALS, &c.currency, "captured", ""), t.captured);
        assert_eq!(get(ALL_TERMINALS, &c.currency, "accepted", ""), t.accepted);
        assert_eq!(get(ALL_TERMINALS, &c.currency, "aged", ""), t.aged);
        for o in Outcome::ALL {
            assert_eq!(get(ALL_TERMINALS, &c.currency, o.as_str(), ""), t.outcome(o), "{}", o.as_str());
            let sum = r
                .terminals
                .iter()
                .filter(|x| x.currency == c.currency)
                .map(|x| get(&x.terminal, &c.currency, o.as_str(), ""))
                .fold((0, 0), |a, b| (a.0 + b.count, a.1 + b.amount_minor));
            assert_eq!(sum, (t.outcome(o).count, t.outcome(o).amount_minor), "terminals' {} rows", o.as_str());
        }
        for (reason, n) in t.declined_by_reason.iter() {
            assert_eq!(get(ALL_TERMINALS, &c.currency, "declined", reason), *n);
        }
        for (reason, n) in t.refused_by_reason.iter() {
            assert_eq!(get(ALL_TERMINALS, &c.currency, "refused", reason), *n);
        }
    }
}

/// The HTML is well-formed, fetches nothing, and its numbers are the JSON's.
fn assert_html_matches(text: &str, r: &FlightReport) {
    let doc = roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
    )
    .expect("well-formed XHTML");
    for external in ["src=", "href=", "url(", "<script"] {
        assert!(!text.contains(external), "{external} in the page");
    }
    let tally = |n: &roxmltree::Node<'_, '_>| Tally {
        count: n.attribute("data-count").and_then(|v| v.parse().ok()).expect("data-count"),
        amount_minor: n.attribute("data-amount-minor").and_then(|v| v.parse().ok()).expect("data-amount-minor"),
    };
    let find = |class: &str, terminal: &str, currency: &str, measure: &str, reason: Option<&str>| {
        doc.descendants()
            .find(|n| {
                n.attribute("class") == Some(class)
                    && n.attribute("data-terminal") == Some(terminal)
                    && n.attribute("data-currency") == Some(currency)
                    && n.attribute("data-measure") == Some(measure)
                    && n.attribute("data-reason") == reason
            })
            .map(|n| tally(&n))
    };
    for c in &r.currencies {
        let t = &c.totals;
        assert_eq!(find("total", ALL_TERMINALS, &c.currency, "captured", None), Some(t.captured));
        assert_eq!(find("total", ALL_TERMINALS, &c.currency, "accepted", None), Some(t.accepted));
        assert_eq!(find("total", ALL_TERMINALS, &c.currency, "aged", None), Some(t.aged));
        for o in Outcome::ALL {
            assert_eq!(find("total", ALL_TERMINALS, &c.currency, o.as_str(), None), Some(t.outcome(o)));
        }
        for (reason, n) in t.declined_by_reason.iter() {
            assert_eq!(find("total", ALL_TERMINALS, &c.currency, "declined", Some(reason)), Some(*n));
        }
    }
    for x in &r.terminals {
        for o in Outcome::ALL.into_iter().filter(|o| x.totals.outcome(*o).count > 0) {
            assert_eq!(find("bar", &x.terminal, &x.currency, o.as_str(), None), Some(x.totals.outcome(o)));
        }
    }
    let flagged = doc.descendants().filter(|n| n.attribute("class") == Some("flagged")).count();
    assert_eq!(flagged, r.flagged.len());
}

/// Every form of the report, while the master runs and after it stopped: the same JSON, and
/// each form consistent with it and free of card numbers.
fn check_all_forms(dep: &Deployment, master: &mut inflight_e2e::Daemon, env: &[(&str, &str)]) -> FlightReport {
    let running = report_json(dep, env);
    let (csv_text, html) = (report_text(dep, "csv", env), report_text(dep, "html", env));
    master.terminate();
    let stopped = report_json(dep, env);
    assert_eq!(running, stopped, "the same report from the daemon and from its store");
    assert_eq!(report_text(dep, "csv", env), csv_text);
    assert_eq!(report_text(dep, "html", env), html);
    assert_csv_matches(&csv_text, &running);
    assert_html_matches(&html, &running);
    for (what, text) in [("json", serde_json::to_string(&running).expect("json")), ("csv", csv_text), ("html", html)] {
        assert_no_card_number(dep, &text, what);
    }
    running
}

#[test]
fn the_crew_report_is_the_same_running_or_stopped_and_adds_up_in_every_form() {
    let dep = Deployment::new(2);
    let (_issuer, mut master, _slaves) = dep.start_flight();
    let out = Command::new(bin("inflight-master"))
        .args(["flight", "IF300", "--config"])
        .arg(dep.config("master"))
        .output()
        .expect("run flight");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dep.master_link("down");
    let cards = dep.cards();
    let (mut a1, mut a2) = (
        SaleApp::connect(&dep.slave_socket(1)).expect("socket"),
        SaleApp::connect(&dep.slave_socket(2)).expect("socket"),
    );
    let mut accepted = BTreeSet::new();
    let mut take = |app: &mut SaleApp, card: usize, amount: u64, seat: &str| -> Value {
        let a = app.capture(&cards[card], amount, seat).expect("capture");
        if let Some(id) = accepted_id(&a) {
            accepted.insert(id);
        }
        a
    };
    // Seat labels are printable ASCII from the sale app: the page must escape them.
    let first = accepted_id(&take(&mut a1, 0, 1_250, "12A")).expect("accepted");
    take(&mut a1, 4, 9_900, "<1&\"A'>");
    assert_eq!(take(&mut a1, 6, 1_000, "3C")["reason"], "bin_not_enrolled", "refused at the seat");
    take(&mut a2, 1, 150_000, "14B");
    take(&mut a2, 1, 150_000, "14B");
    take(&mut a2, 5, 2_000, "15D");
    // Card 2's flight limit (300,000) is used up: the master refuses this one, and records it.
    assert_eq!(take(&mut a1, 1, 150_000, "12A")["reason"], "over_card_flight_limit");
    assert_eq!(accepted.len(), 5);
    dep.wait_for("all at the master", Duration::from_secs(30), || dep.master_total() == 5);

    // A day later (25 h), nothing has reached the ground: every accepted payment is aged and
    // past its 24 h deadline, flagged for both.
    master.terminate();
    let mut master = dep.start_master_env(&[DAY_LATER]);
    let aged = check_all_forms(&dep, &mut master, &[DAY_LATER]);
    let eur = &aged.currencies[0].totals;
    assert_eq!(eur.aged, Tally { count: 5, amount_minor: 1_250 + 9_900 + 300_000 + 2_000 });
    assert_eq!(eur.outcome(Outcome::Pending), eur.aged);
    assert_eq!(aged.flagged_total, 5);
    assert!(
        aged.flagged.iter().all(|f| f.flags == ["aged", "deadline_missed"] && f.state == "pending"),
        "{:?}",
        aged.flagged
    );
    assert_eq!((eur.deadline_missed, aged.deadline_missed, aged.deadline_soon), (eur.aged, 5, 0));
    let cards_shown: BTreeSet<&str> = aged.flagged.iter().map(|f| f.card.as_str()).collect();
    let masked = |k: usize| format!("{}******{}", &cards[k].pan[..6], &cards[k].pan[cards[k].pan.len() - 4..]);
    let want: Vec<String> = [0, 4, 1, 5].into_iter().map(masked).collect();
    assert_eq!(cards_shown, want.iter().map(String::as_str).collect::<BTreeSet<_>>());

    // Landing: every payment decided and delivered.
    let mut master = dep.start_master();
    dep.master_link("auto");
    dep.wait_for("all delivered", Duration::from_secs(60), || dep.master_status(None)["payments"]["delivered"] == 5);
    // The first passenger changes their mind after the issuer approved: reversed.
    let mut a1 = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
    let v = a1.request(&serde_json::json!({ "op": "void", "payment_id": first })).expect("void answer");
    assert_eq!(v["outcome"], "reversal_pending", "{v}");
    dep.wait_for("the reversal recorded", Duration::from_secs(60), || {
        dep.master_status(Some(&first))["void"] == "reversed"
    });
    let r = check_all_forms(&dep, &mut master, &[]);
    assert_eq!((r.flight.as_str(), r.flights.as_slice()), ("IF300", ["IF300".to_owned()].as_slice()));
    assert_eq!(r.currencies.len(), 1);
    let t = &r.currencies[0].totals;
    let tally = |count, amount_minor| Tally { count, amount_minor };
    assert_eq!(
        t.captured,
        tally(6, 1_250 + 9_900 + 150_000 * 3 + 2_000),
        "the seat's refusal never reached the master"
    );
    assert_eq!(t.accepted, tally(5, 1_250 + 9_900 + 300_000 + 2_000));
    assert_eq!(t.outcome(Outcome::Approved), tally(2, 300_000));
    assert_eq!(t.outcome(Outcome::Reversed), tally(1, 1_250));
    assert_eq!(t.declined_by_reason["insufficient_funds"], tally(1, 9_900));
    assert_eq!(t.declined_by_reason["account_blocked"], tally(1, 2_000));
    assert_eq!(t.refused_by_reason["over_card_flight_limit"], tally(1, 150_000));
    assert_eq!((t.outcome(Outcome::Pending), t.aged), (tally(0, 0), tally(0, 0)));
    // Sealed by a master back on the real clock: within the deadline, nothing late.
    assert_eq!((t.deadline_missed, r.deadline_missed), (tally(0, 0), 0));
    assert_eq!(r.flagged_total, 0);
    // The issuer's ledger agrees, in money (the reversed payment shows `reversed`).
    let approved: u64 = dep
        .ledger()
        .iter()
        .filter(|l| l["outcome"] == "approved")
        .map(|l| l["amount_minor"].as_u64().expect("amount"))
        .sum();
    assert_eq!(approved, t.outcome(Outcome::Approved).amount_minor);
    let per_terminal: Vec<(&str, u64)> =
        r.terminals.iter().map(|x| (x.terminal.as_str(), x.totals.captured.count)).collect();
    assert_eq!(per_terminal, [("slave-1", 3), ("slave-2", 3)]);

    // Another flight: empty. A flight id that is not one: exit 64, nothing printed.
    let other = report_cmd(&dep, &["--flight", "IF301"], &[]);
    let other: FlightReport = serde_json::from_slice(&other.stdout).expect("json");
    assert!(other.currencies.is_empty() && other.flights == ["IF300"], "{other:?}");
    let bad = report_cmd(&dep, &["--flight", "no spaces"], &[]);
    assert_eq!(bad.status.code(), Some(64), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(bad.stdout.is_empty());
}
