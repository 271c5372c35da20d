//! Prometheus metrics of the three daemons: scraped during a real flight with a plain HTTP GET,
//! the values that must hold asserted, no card number in any scrape, every scrape checked with
//! `promtool check metrics` (skipped, with a message, only when promtool is not installed:
//! `.ci/run` installs it). A `metrics_listen` that does not parse stops the daemon with 64, one
//! that cannot be bound with 69.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use inflight_e2e::{accepted_id, Card, Daemon, Deployment, SaleApp};

/// A free TCP port on loopback (bound, read, released).
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind tcp").local_addr().expect("addr").port()
}

/// Gives `name` (a daemon's config) a `metrics_listen` on a free loopback port; returns it.
fn with_metrics(dep: &Deployment, name: &str) -> SocketAddr {
    let addr: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
    dep.prepend_config(name, &format!("metrics_listen = \"{addr}\""));
    addr
}

/// One scrape: `GET /metrics` over a plain TCP connection; the status line, the headers and the
/// body.
fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to metrics_listen");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n").expect("send request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

/// A scrape's samples: `name{labels}` → value.
#[derive(Debug)]
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// `GET /metrics` on `addr`, checked: 200, the text format's content type, no card number,
    /// and `promtool check metrics` (when installed).
    fn of(addr: SocketAddr, cards: &[Card], what: &str) -> Self {
        let (status, headers, text) = get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{what}: {headers}");
        assert!(
            headers.lines().any(|h| h == "Content-Type: text/plain; version=0.0.4; charset=utf-8"),
            "{what}: {headers}"
        );
        assert_no_card_digits(&text, cards, what);
        promtool_check(&text, what);
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{what}: sample line {l:?}"));
                (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("{what}: value in {l:?}")))
            })
            .collect();
        Self { text, samples }
    }

    /// The value of one series (`name` or `name{label="v"}`), which must be there.
    fn value(&self, series: &str) -> f64 {
        *self.samples.get(series).unwrap_or_else(|| panic!("no {series} in:\n{}", self.text))
    }
}

/// No run of 12 digits of any test card (a card number has 12 to 19) anywhere in a scrape.
fn assert_no_card_digits(text: &str, cards: &[Card], what: &str) {
    for card in cards {
        for run in card.pan.as_bytes().windows(12) {
            let run = std::str::from_utf8(run).expect("digits");
            assert!(!text.contains(run), "{what}: 12 digits of a test card ({}…) in the metrics", &card.pan[..6]);
        }
    }
}

/// promtool on the PATH, or `None` with a message saying the check is skipped.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("promtool")).find(|p| p.is_file()));
    if found.is_none() {
        eprintln!(
            "SKIPPED promtool check: promtool is not installed (Debian package `prometheus`; .ci/run installs it)"
        );
    }
    found
}

/// `promtool check metrics` on `text`: its success and what it printed.
fn promtool_says(promtool: &PathBuf, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// A scrape passes `promtool check metrics` (names, types, help, units, format).
fn promtool_check(text: &str, what: &str) {
    if let Some(p) = promtool() {
        let (ok, said) = promtool_says(&p, text);
        assert!(ok, "{what}: promtool check metrics failed:\n{said}\n--- scrape:\n{text}");
    }
}

#[test]
fn every_daemon_serves_its_metrics_during_a_flight() {
    let dep = Deployment::new(2);
    let issuer_addr = with_metrics(&dep, "issuer");
    let master_addr = with_metrics(&dep, "master");
    let slave_addrs = [with_metrics(&dep, "slave-1"), with_metrics(&dep, "slave-2")];
    let (_issuer, _master, _slaves) = dep.start_flight();
    dep.master_link("down"); // take-off: a flap of the ground link (it was up at the gate)

    let cards = dep.cards();
    let (mut accepted, mut by_slave) = (0u64, [0u64; 2]);
    let mut rejected = [0u64; 2];
    for k in 1..=2u32 {
        let mut app = SaleApp::connect(&dep.slave_socket(k)).expect("socket");
        for card in &cards {
            let a = app.capture(card, 1_000, "3F").expect("capture answer");
            if accepted_id(&a).is_some() {
                accepted += 1;
                by_slave[k as usize - 1] += 1;
            } else {
                rejected[k as usize - 1] += 1;
            }
        }
    }
    assert!(accepted > 0 && rejected.iter().all(|&r| r > 0), "the test cards cover both outcomes");
    dep.wait_for("every accepted payment at the master", Duration::from_secs(30), || dep.master_total() == accepted);

    // In flight.
    let m = Scrape::of(master_addr, &cards, "master in flight");
    assert_eq!(m.value("inflight_master_terminals_connected"), 2.0);
    assert_eq!(m.value("inflight_master_payments{state=\"pending\"}"), accepted as f64);
    assert_eq!(
        m.value("inflight_master_payments_received_total{verdict=\"stored\"}")
            + m.value("inflight_master_payments_received_total{verdict=\"held\"}"),
        accepted as f64,
        "one new payment written per accepted capture"
    );
    assert!(m.value("inflight_master_submit_ack_duration_seconds_count") >= accepted as f64);
    assert_eq!(m.value("inflight_master_ground_link_up"), 0.0);
    assert!(m.value("inflight_master_ground_link_flaps_total") >= 1.0, "the take-off took the link down");
    assert_eq!(m.value("inflight_master_results_pending_delivery"), 0.0);
    assert_eq!(m.value("inflight_master_payments_aged"), 0.0);
    assert_eq!(m.value("inflight_bin_list_version"), 1.0);
    assert!(m.value("inflight_bin_list_expiry_seconds") > 0.0);
    // setup's certificates live 30 days.
    let cert = m.value("inflight_certificate_expiry_seconds");
    assert!(cert > 29.0 * 86_400.0 && cert <= 32.0 * 86_400.0, "certificate expiry {cert}");
    assert!(m.value("inflight_store_size_bytes") > 0.0);
    assert!(m.value("inflight_store_group_commit_writes_count") >= 1.0);
    assert!(m.value("inflight_store_fsync_duration_seconds_count") >= 1.0);
    for k in 0..2 {
        let s = Scrape::of(slave_addrs[k], &cards, &format!("slave-{} in flight", k + 1));
        assert_eq!(s.value("inflight_slave_captures_total{outcome=\"accepted\"}"), by_slave[k] as f64);
        assert_eq!(s.value("inflight_slave_captures_total{outcome=\"rejected\"}"), rejected[k] as f64);
        assert_eq!(s.value("inflight_slave_capture_accept_duration_seconds_count"), by_slave[k] as f64);
        assert!(s.value("inflight_slave_captures_rejected_total{reason=\"bin_not_enrolled\"}") >= 1.0);
        assert_eq!(s.value("inflight_slave_master_connected"), 1.0);
        assert_eq!(s.value("inflight_bin_list_version"), 1.0);
        assert!(s.value("inflight_bin_list_expiry_seconds") > 0.0);
        assert!(s.value("inflight_certificate_expiry_seconds") > 29.0 * 86_400.0);
        assert!(s.value("inflight_store_size_bytes") > 0.0);
    }
    let i = Scrape::of(issuer_addr, &cards, "issuer in flight");
    assert_eq!(i.value("inflight_issuer_batches_total{result=\"decided\"}"), 0.0);
    assert_eq!(i.value("inflight_bin_list_version"), 1.0);

    // Landing: one batch, decided, results delivered.
    dep.master_link("auto");
    dep.wait_for("every payment delivered", Duration::from_secs(60), || {
        dep.master_status(None)["payments"]["delivered"] == accepted
    });
    let m = Scrape::of(master_addr, &cards, "master after landing");
    assert_eq!(m.value("inflight_master_ground_link_up"), 1.0);
    assert_eq!(m.value("inflight_master_batches_total{result=\"decided\"}"), 1.0);
    assert_eq!(m.value("inflight_master_batch_seal_duration_seconds_count"), 1.0);
    assert_eq!(m.value("inflight_master_batch_upload_duration_seconds_count"), 1.0);
    assert_eq!(
        m.value("inflight_master_payment_outcomes_total{outcome=\"approved\"}")
            + m.value("inflight_master_payment_outcomes_total{outcome=\"declined\"}"),
        accepted as f64
    );
    assert_eq!(m.value("inflight_master_payments{state=\"delivered\"}"), accepted as f64);
    assert_eq!(m.value("inflight_master_payments{state=\"pending\"}"), 0.0);
    let i = Scrape::of(issuer_addr, &cards, "issuer after landing");
    assert_eq!(i.value("inflight_issuer_batches_total{result=\"decided\"}"), 1.0);
    assert_eq!(i.value("inflight_issuer_batch_decide_duration_seconds_count"), 1.0);
    let approved = i.value("inflight_issuer_payments_decided_total{outcome=\"approved\"}");
    assert_eq!(approved + i.value("inflight_issuer_payments_decided_total{outcome=\"declined\"}"), accepted as f64);
    assert_eq!(approved, m.value("inflight_master_payment_outcomes_total{outcome=\"approved\"}"));
    let ledger_approved = dep.ledger().iter().filter(|l| l["outcome"] == "approved").count();
    assert_eq!(approved, ledger_approved as f64, "the counter agrees with the ledger");
    for k in 0..2 {
        let s = Scrape::of(slave_addrs[k], &cards, &format!("slave-{} after landing", k + 1));
        assert_eq!(s.value("inflight_slave_payments_decided"), by_slave[k] as f64);
        assert_eq!(s.value("inflight_slave_outbox_unacked"), 0.0);
    }

    // Anything but GET /metrics is refused; the daemon goes on serving.
    let (status, _, _) = get(master_addr, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let mut s = TcpStream::connect(master_addr).expect("connect");
    s.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{out}");
    Scrape::of(master_addr, &cards, "master after refused requests");
}

/// The check can fail: promtool refuses a counter without `_total` and a series without help.
#[test]
fn promtool_refuses_metrics_that_break_the_conventions() {
    let Some(p) = promtool() else { return };
    let (ok, said) = promtool_says(&p, "# HELP payments Payments.\n# TYPE payments counter\npayments 3\n");
    assert!(!ok && said.contains("_total"), "{said}");
    let (ok, said) = promtool_says(&p, "inflight_mystery 1\n");
    assert!(!ok && said.contains("no help text"), "{said}");
}

/// A `metrics_listen` that does not parse stops the daemon at start with exit 64 (a config
/// error); one that cannot be bound (in use) with 69, so a supervisor retries it; both say so.
#[test]
fn a_metrics_listen_that_cannot_be_used_stops_the_daemon_and_says_why() {
    let dep = Deployment::new(1);
    dep.prepend_config("issuer", "metrics_listen = \"nowhere\"");
    let mut issuer = Daemon::spawn("inflight-issuer", &dep.config("issuer"), &dep.path("issuer.log"));
    assert_eq!(issuer.wait_exit(Duration::from_secs(20)).code(), Some(64));
    assert!(dep.log("issuer").contains("metrics_listen"), "{}", dep.log("issuer"));

    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    for name in ["master", "slave-1"] {
        dep.prepend_config(name, &format!("metrics_listen = \"{addr}\""));
        let bin = if name == "master" { "inflight-master" } else { "inflight-slave" };
        let log = dep.path(&format!("{name}.log"));
        let mut d = Daemon::spawn(bin, &dep.config(name), &log);
        assert_eq!(d.wait_exit(Duration::from_secs(20)).code(), Some(69), "{name}: {}", dep.log(name));
        let text = dep.log(name);
        assert!(text.contains("metrics_listen") && text.contains(&addr.to_string()), "{name}: {text}");
    }
}
