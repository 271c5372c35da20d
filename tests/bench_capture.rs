//! Capture benchmark with real processes: N terminals, each driven by several concurrent sale
//! apps, all captures answered after the master's durable ack. Reports numbers; asserts only
//! that every accepted payment reached the master.
//!
//! cargo build --release --workspace && \
//!   cargo run --release -p inflight-e2e --example bench_capture -- [terminals] [payments-per-terminal] [apps-per-terminal]

use std::time::{Duration, Instant};

use inflight_e2e::{accepted_id, Deployment, SaleApp};

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numeric argument")).collect();
    let terminals = args.first().copied().unwrap_or(20) as u32;
    let per_terminal = args.get(1).copied().unwrap_or(500);
    let apps = args.get(2).copied().unwrap_or(8);
    let dep = Deployment::new(terminals);
    let (_issuer, master, slaves) = dep.start_flight();
    dep.master_link("down");
    let card = dep.cards()[1].clone();
    let started = Instant::now();
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for k in 1..=terminals {
            for a in 0..apps {
                let (dep, card) = (&dep, &card);
                handles.push(s.spawn(move || {
                    let mut app = SaleApp::connect(&dep.slave_socket(k)).expect("capture socket");
                    let mut lat = Vec::new();
                    for i in (a..per_terminal).step_by(apps as usize) {
                        let t = Instant::now();
                        let answer = app.capture(card, 1 + i % 3, "1A").expect("answer");
                        lat.push(t.elapsed());
                        accepted_id(&answer).unwrap_or_else(|| panic!("refused: {answer}"));
                    }
                    lat
                }));
            }
        }
        handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
    });
    let elapsed = started.elapsed();
    let total = lat.len() as u64;
    dep.wait_for("master holds everything", Duration::from_secs(120), || dep.master_total() == total);
    let drained = started.elapsed();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!("terminals {terminals}, sale apps per terminal {apps}, payments {total}");
    println!(
        "capture -> accepted (durable on terminal + master ack): p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    println!("captures answered: {:.0}/s over {:.2?}", total as f64 / elapsed.as_secs_f64(), elapsed);
    println!(
        "master ingest (durably acked): {:.0}/s ({total} in {:.2?})",
        total as f64 / drained.as_secs_f64(),
        drained
    );
    let slave_rss: Vec<f64> = slaves.iter().filter_map(|s| s.peak_rss_mib()).collect();
    println!(
        "peak memory: master {:.1} MiB; terminals mean {:.1} MiB, max {:.1} MiB",
        master.peak_rss_mib().unwrap_or(0.0),
        slave_rss.iter().sum::<f64>() / slave_rss.len().max(1) as f64,
        slave_rss.iter().copied().fold(0.0, f64::max)
    );
}
