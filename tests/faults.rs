//! Fault injection with real processes: every named crash point, and seeded random `kill -9`
//! schedules over whole flights. After each run the checker verifies: every accepted payment
//! decided exactly once; no decision without a payment a terminal captured; every queue
//! drained; results on every terminal; no full card number on disk or in logs.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use inflight_e2e::{accepted_id, Daemon, Deployment, SaleApp};
use inflight_store::{CardVault, SlaveStore};
use serde_json::json;

const TERMINALS: u32 = 3;
const PER_TERMINAL: u64 = 40;

/// The daemons of one flight, restarted (unarmed) whenever one dies.
struct Cabin<'a> {
    dep: &'a Deployment,
    issuer: Daemon,
    master: Daemon,
    slaves: Vec<Daemon>,
    /// Which daemons died, in order.
    deaths: Vec<String>,
}

impl<'a> Cabin<'a> {
    fn start(dep: &'a Deployment, armed: Option<(&str, &str)>) -> Self {
        let env = |who: &str| -> Vec<(&str, &str)> {
            match armed {
                Some((w, point)) if w == who => vec![("INFLIGHT_CRASH_AT", point)],
                _ => vec![],
            }
        };
        let issuer = dep.start_issuer_env(&env("issuer"));
        let master = dep.start_master_env(&env("master"));
        let slaves = (1..=dep.terminals)
            .map(|k| {
                let e = env(&format!("slave-{k}"));
                let d = Daemon::spawn_env(
                    "inflight-slave",
                    &dep.config(&format!("slave-{k}")),
                    &dep.path(&format!("slave-{k}.log")),
                    &e,
                );
                dep.wait_for("slave socket", Duration::from_secs(20), || {
                    SaleApp::connect(&dep.slave_socket(k)).is_ok()
                });
                d
            })
            .collect();
        dep.wait_bin_lists();
        Self { dep, issuer, master, slaves, deaths: vec![] }
    }

    /// Restarts whatever died (without any crash point armed).
    fn supervise(&mut self) {
        if matches!(self.issuer.child.try_wait(), Ok(Some(_))) {
            self.deaths.push("issuer".into());
            self.issuer = self.dep.start_issuer();
        }
        if matches!(self.master.child.try_wait(), Ok(Some(_))) {
            self.deaths.push("master".into());
            self.master = self.dep.start_master();
        }
        for k in 0..self.slaves.len() {
            if matches!(self.slaves[k].child.try_wait(), Ok(Some(_))) {
                self.deaths.push(format!("slave-{}", k + 1));
                self.slaves[k] = self.dep.start_slave(k as u32 + 1);
            }
        }
    }

    /// `kill -9` of one daemon by name; the next `supervise` restarts it.
    fn kill(&mut self, who: &str) {
        match who {
            "issuer" => self.issuer.kill9(),
            "master" => self.master.kill9(),
            s => {
                let k: usize = s.trim_start_matches("slave-").parse().expect("slave-<k>");
                self.slaves[k - 1].kill9();
            }
        }
    }

    /// Runs `f` in a thread while supervising; returns its result.
    fn while_supervising<T: Send>(&mut self, f: impl FnOnce() -> T + Send, mut tick: impl FnMut(&mut Self)) -> T {
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let r = f();
                done.store(true, Ordering::Relaxed);
                r
            });
            while !done.load(Ordering::Relaxed) {
                tick(self);
                self.supervise();
                std::thread::sleep(Duration::from_millis(50));
            }
            h.join().expect("worker thread")
        })
    }

    /// Stops everything cleanly.
    fn stop(mut self) -> Vec<String> {
        self.master.terminate();
        self.issuer.terminate();
        for s in &mut self.slaves {
            s.terminate();
        }
        self.deaths
    }
}

/// Sale apps on every terminal capture `per_terminal` payments, riding out terminal restarts.
/// Returns the ids answered `accepted`.
fn sell(dep: &Deployment, per_terminal: u64) -> BTreeSet<String> {
    let accepted = Mutex::new(BTreeSet::new());
    let card = dep.cards()[1].clone();
    std::thread::scope(|s| {
        for k in 1..=dep.terminals {
            let (accepted, card) = (&accepted, &card);
            s.spawn(move || {
                let mut app = None;
                let mut i = 0;
                let deadline = Instant::now() + Duration::from_secs(90);
                while i < per_terminal {
                    assert!(Instant::now() < deadline, "slave-{k}: sales never finished");
                    if app.is_none() {
                        app = SaleApp::connect(&dep.slave_socket(k)).ok();
                        if app.is_none() {
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    }
                    let a = app.as_mut().map(|a| a.capture(card, 1 + i % 9, "7B"));
                    match a {
                        Some(Ok(answer)) => {
                            if let Some(id) = accepted_id(&answer) {
                                accepted.lock().expect("lock").insert(id);
                            }
                            i += 1;
                        }
                        // The terminal died mid-capture: no answer, so not accepted. Try again.
                        _ => {
                            app = None;
                            i += 1;
                        }
                    }
                }
            });
        }
    });
    accepted.into_inner().expect("lock")
}

/// Lands and waits until every payment is decided and delivered, restarting what dies.
fn land(cabin: &mut Cabin<'_>, mut tick: impl FnMut(&mut Cabin<'_>)) {
    let dep = cabin.dep;
    let start = Instant::now();
    let mut link_set = false;
    loop {
        tick(cabin);
        cabin.supervise();
        if !link_set {
            let mut admin = SaleApp::connect(&dep.path("run/master.sock")).ok();
            link_set = admin
                .as_mut()
                .and_then(|a| a.request(&json!({"op": "link", "mode": "auto"})).ok())
                .is_some_and(|v| v["link"].is_string());
        }
        let done = SaleApp::connect(&dep.path("run/master.sock"))
            .ok()
            .and_then(|mut a| a.request(&json!({"op": "status"})).ok())
            .is_some_and(|v| {
                let p = &v["payments"];
                p["total"] == p["delivered"] && p["pending"] == 0 && p["in_batch"] == 0 && p["decided"] == 0
            });
        // Terminals must have drained their outboxes too.
        if done && (1..=dep.terminals).all(|k| dep.slave_status(k, None)["outbox"]["unacked"] == 0) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "landing never completed; deaths: {:?}", cabin.deaths);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The checker.
fn check(dep: &Deployment, accepted: &BTreeSet<String>) {
    let ledger = dep.assert_exactly_once_in_money(accepted);
    let decided: BTreeSet<String> = ledger.iter().map(|l| l["payment_id"].as_str().expect("id").to_owned()).collect();
    let mut captured = BTreeSet::new();
    for k in 1..=dep.terminals {
        let key = CardVault::from_key_file(&dep.path(&format!("keys/slave-{k}.card.key"))).expect("key");
        let s = SlaveStore::open(&dep.path(&format!("data/slave-{k}")), key, 2 << 20).expect("slave store");
        captured.extend(s.ids().expect("ids").into_iter().map(|id| id.to_string()));
        assert_eq!(s.with_card_data().expect("scan"), vec![], "slave-{k} kept card data");
        s.close();
    }
    let phantom: Vec<_> = decided.difference(&captured).collect();
    assert!(phantom.is_empty(), "decided without a captured payment: {phantom:?}");
    dep.assert_no_full_pan_anywhere();
}

fn flight_with_crash_point(who: &str, point: &str) {
    flight_with_crash_point_of(who, point, PER_TERMINAL);
}

fn flight_with_crash_point_of(who: &str, point: &str, per_terminal: u64) {
    let dep = Deployment::new(TERMINALS);
    let mut cabin = Cabin::start(&dep, Some((who, point)));
    // Take-off: link down, then sales.
    let mut admin = SaleApp::connect(&dep.path("run/master.sock")).expect("admin");
    admin.request(&json!({"op": "link", "mode": "down"})).expect("link down");
    let accepted = cabin.while_supervising(|| sell(&dep, per_terminal), |_| {});
    land(&mut cabin, |_| {});
    let deaths = cabin.stop();
    assert!(deaths.iter().any(|d| d == who), "{point}: {who} never died (deaths: {deaths:?})");
    // Any death is not enough: the process must have died at this point, and said so.
    let said = format!("crash point {point} reached");
    assert!(dep.log(who).contains(&said), "{point}: {who} died elsewhere; its log never says {said:?}");
    check(&dep, &accepted);
}

macro_rules! crash_point_tests {
    ($($name:ident: $who:literal, $point:literal;)*) => {$(
        #[test]
        fn $name() {
            flight_with_crash_point($who, $point);
        }
    )*};
}

crash_point_tests! {
    slave_after_write_before_flush: "slave-1", "slave.after_write_before_flush";
    slave_after_flush_before_answer: "slave-2", "slave.after_flush_before_answer";
    slave_after_ack_received_before_marking: "slave-3", "slave.after_ack_received_before_marking";
    slave_after_result_stored_before_ack: "slave-1", "slave.after_result_stored_before_ack";
    master_after_write_before_flush: "master", "master.after_write_before_flush";
    master_after_flush_before_ack: "master", "master.after_flush_before_ack";
    master_after_ack_sent: "master", "master.after_ack_sent";
    master_mid_seal: "master", "master.mid_seal";
    master_after_seal: "master", "master.after_seal";
    master_mid_upload: "master", "master.mid_upload";
    master_after_batch_sent_before_results_stored: "master", "master.after_batch_sent_before_results_stored";
    master_after_results_stored_before_push: "master", "master.after_results_stored_before_push";
    master_after_result_delivered_before_purge: "master", "master.after_result_delivered_before_purge";
    issuer_after_results_stored: "issuer", "issuer.after_results_stored";
    issuer_after_answer_sent: "issuer", "issuer.after_answer_sent";
}

/// The issuer dies between two chunks of one batch, the first durable: on the re-sent batch the
/// first chunk must keep its decisions, not be charged again (checked in money). More than
/// `BATCH_CHUNK_MAX` (512) payments make the batch two chunks.
#[test]
fn issuer_mid_decide() {
    flight_with_crash_point_of("issuer", "issuer.mid_decide", 200);
}

/// Seeded random `kill -9` of every kind of daemon, several times, across a whole flight.
#[test]
fn random_kill_schedules() {
    for seed in [11u64, 12] {
        let dep = Deployment::new(TERMINALS);
        let mut cabin = Cabin::start(&dep, None);
        let mut admin = SaleApp::connect(&dep.path("run/master.sock")).expect("admin");
        admin.request(&json!({"op": "link", "mode": "down"})).expect("link down");
        let mut rng = seed;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let victims = ["issuer", "master", "slave-1", "slave-2", "slave-3"];
        let mut schedule: Vec<(Duration, &str)> =
            (0..6).map(|_| (Duration::from_millis(100 + next(1_400)), victims[next(5) as usize])).collect();
        schedule.sort();
        let t0 = Instant::now();
        let mut pending = schedule.clone();
        let mut killer = |c: &mut Cabin<'_>| {
            while let Some(&(at, who)) = pending.first() {
                if t0.elapsed() < at {
                    break;
                }
                c.kill(who);
                pending.remove(0);
            }
        };
        let accepted = cabin.while_supervising(|| sell(&dep, PER_TERMINAL), &mut killer);
        land(&mut cabin, &mut killer);
        let deaths = cabin.stop();
        assert!(deaths.len() >= 3, "seed {seed}: several kills happened: {deaths:?} (schedule {schedule:?})");
        check(&dep, &accepted);
    }
}
