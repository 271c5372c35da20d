//! Batch benchmark with real processes: captures N payments with the ground link down, then
//! brings it up and times the consolidated batch end to end (seal, upload, authorization,
//! durable results at the issuer and the master, results delivered to every terminal).
//! Reports numbers; asserts only that every payment was decided exactly once.
//!
//! cargo build --release --workspace && \
//!   cargo run --release -p inflight-e2e --example bench_batch -- [payments] [terminals]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use inflight_e2e::{accepted_id, Deployment, SaleApp};

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numeric argument")).collect();
    let payments = args.first().copied().unwrap_or(10_000);
    let terminals = args.get(1).copied().unwrap_or(10) as u32;
    let apps = 8u64;
    let dep = Deployment::new(terminals);
    let flight = dep.start_flight();
    dep.master_link("down");
    let card = dep.cards()[1].clone();
    let per_app = payments / (u64::from(terminals) * apps);
    let started = Instant::now();
    let ids: BTreeSet<String> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for k in 1..=terminals {
            for _ in 0..apps {
                let (dep, card) = (&dep, &card);
                handles.push(s.spawn(move || {
                    let mut app = SaleApp::connect(&dep.slave_socket(k)).expect("socket");
                    (0..per_app)
                        .map(|_| accepted_id(&app.capture(card, 1, "1A").expect("answer")).expect("accepted"))
                        .collect::<Vec<_>>()
                }));
            }
        }
        handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
    });
    let n = ids.len();
    println!("captured {n} payments on {terminals} terminals in {:.2?}", started.elapsed());
    dep.wait_for("all at the master", Duration::from_secs(120), || dep.master_total() == n as u64);

    let landed = Instant::now();
    dep.master_link("up");
    dep.wait_for("all decided", Duration::from_secs(300), || {
        dep.master_status(None)["payments"]["decided"].as_u64().unwrap_or(0)
            + dep.master_status(None)["payments"]["delivered"].as_u64().unwrap_or(0)
            == n as u64
    });
    let decided = landed.elapsed();
    dep.wait_for("all delivered", Duration::from_secs(300), || dep.master_status(None)["payments"]["delivered"] == n);
    let delivered = landed.elapsed();
    let ledger = dep.ledger();
    let distinct: BTreeSet<&str> = ledger.iter().map(|l| l["payment_id"].as_str().expect("id")).collect();
    assert_eq!((ledger.len(), distinct.len()), (n, n), "every payment decided exactly once");
    let log = dep.log("master");
    let upload = log.lines().find(|l| l.contains("batch decided; results stored")).unwrap_or("");
    for (who, l) in dep
        .log("master")
        .lines()
        .map(|l| ("master", l.to_owned()))
        .chain(dep.log("issuer").lines().map(|l| ("issuer", l.to_owned())))
    {
        if ["link up", "crew", "batch sealed", "batch begins", "decided and durable", "results stored", "upload"]
            .iter()
            .any(|k| l.contains(k))
        {
            println!("  {who}: {}", &l[11..l.len().min(260)]);
        }
    }
    println!("link up -> every result stored at the master: {decided:.2?}");
    println!("link up -> every result delivered to its terminal: {delivered:.2?}");
    println!("master log: {}", upload.split("INFO ").nth(1).unwrap_or(upload));
    let mib = |d: &inflight_e2e::Daemon| d.peak_rss_mib().map_or("?".to_owned(), |m| format!("{m:.1} MiB"));
    println!("peak memory (VmHWM): issuer {}, master {}", mib(&flight.0), mib(&flight.1));
}
