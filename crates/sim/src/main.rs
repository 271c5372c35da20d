//! `inflight-sim`: see the crate docs and the README.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use inflight_sim::SimOptions;

/// Runs a whole simulated flight in one process and checks that no accepted payment was lost or
/// decided twice. Exit code 0: every invariant held; 1: one broke; 2: the run could not complete.
#[derive(Parser, Debug)]
#[command(name = "inflight-sim", version)]
struct Cli {
    /// Terminals in the cabin.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=2000))]
    slaves: u32,
    /// Payments each terminal captures.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    payments_per_slave: u32,
    /// Seed of the scenario and the link emulators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Ground link at landing: packet loss, percent.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Ground link at landing: one-way delay, ms.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Ground link at landing: jitter, ms.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Ground link at landing: duplicated packets, percent.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Times the ground link drops out during the upload.
    #[arg(long, default_value_t = 0)]
    flaps: u32,
    /// Make the flaps regular: up and down this many ms each (500: 1 Hz flapping).
    #[arg(long)]
    flap_half_period_ms: Option<u64>,
    /// The ambiguous case: the issuer decides the batch but its answers are lost.
    #[arg(long)]
    ambiguous: bool,
    /// Terminals change source port mid-connection during sales (NAT rebinding).
    #[arg(long)]
    rebind_cabin: bool,
    /// Cabin network (terminals ↔ master) during sales: packet loss, percent.
    #[arg(long, default_value_t = 0.0)]
    cabin_loss: f64,
    /// Cut terminal 1 off the cabin network for longer than the idle timeout during sales.
    #[arg(long)]
    cut_terminal: bool,
    /// Percent of chip payments a hostile terminal alters after the card signed them (amount
    /// raised in the payment and the chip data, cryptogram kept): the issuer must decline each
    /// `cryptogram_invalid` (`declined.cryptogram_invalid` = `tampered`), and nothing else.
    #[arg(long, default_value_t = 0.0, value_parser = parse_percent)]
    tamper: f64,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the flight as one self-contained HTML page here (timeline and outcomes).
    #[arg(long, conflicts_with = "model")]
    html: Option<PathBuf>,
    /// Keep the run directory (stores, logs, configs) here instead of a temporary one.
    #[arg(long)]
    keep_dir: Option<PathBuf>,
    /// Instead of a flight: benchmark the master's ingest with --slaves terminals pipelining
    /// --payments-per-slave payments each, this many in flight per terminal.
    #[arg(long)]
    bench_ingest_window: Option<usize>,
    /// With --bench-ingest-window: load the master of this deployment (made by
    /// `inflight-setup local`, master already running) instead of one in this process.
    #[arg(long)]
    bench_deployment: Option<PathBuf>,
    /// Instead of a flight of real processes: the deterministic simulator over the decision
    /// machines (simulated clock, network, crashes), one run per seed of --seeds.
    #[arg(long, requires = "seeds")]
    model: bool,
    /// With --model: the seeds to run, `A-B` (inclusive) or one seed `S`.
    #[arg(long, value_parser = parse_seeds)]
    seeds: Option<(u64, u64)>,
    /// With --model and one seed: print its full event trace (identical on every run).
    #[arg(long, requires = "model")]
    trace: bool,
    /// With --model: threads running seeds (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a percentage from 0 to 100")),
    }
}

fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let num = |x: &str| x.trim().parse::<u64>().map_err(|_| format!("`{x}` is not a seed number"));
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(s)?, num(s)?),
    };
    if a > b {
        return Err(format!("the range {a}-{b} is empty"));
    }
    Ok((a, b))
}

/// `--model`: runs the seeds, prints each violation with its seed and a summary line last.
fn model(seeds: (u64, u64), trace: bool, threads: Option<usize>) -> ExitCode {
    use inflight_sim::model;
    let started = std::time::Instant::now();
    let runs = if trace {
        if seeds.0 != seeds.1 {
            eprintln!("inflight-sim: --trace takes one seed (--seeds S)");
            return ExitCode::from(2);
        }
        let run = model::run_seed(seeds.0, true);
        for line in &run.trace {
            println!("{line}");
        }
        vec![run]
    } else {
        let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        model::run_seeds(seeds.0, seeds.1, threads)
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut failed = 0u64;
    let mut events = 0u64;
    let mut accepted = 0u64;
    let mut decided = 0u64;
    let mut late = 0u64;
    let (mut altered, mut replays, mut stripped) = (0u64, 0u64, 0u64);
    for r in &runs {
        altered += r.stats.altered;
        replays += r.stats.replays_declined;
        stripped += r.stats.stripped;
        events += r.stats.events;
        accepted += r.stats.accepted;
        decided += r.stats.decided;
        late += r.stats.late;
        if !r.violations.is_empty() {
            failed += 1;
        }
        for v in &r.violations {
            println!("seed {}: {v}", r.seed);
        }
    }
    let n = runs.len() as f64;
    println!(
        "model: seeds {}-{}: {} runs, {} with violations; {} events, {} payments accepted, {} decided ({} late: sealed after their deadline; {} altered chip payments, {} replayed cryptograms declined, {} chip cards keyed); {:.1} s ({:.0} seeds/s){}",
        seeds.0,
        seeds.1,
        runs.len(),
        failed,
        events,
        accepted,
        decided,
        late,
        altered,
        replays,
        stripped,
        elapsed,
        n / elapsed.max(1e-9),
        if failed > 0 { "; replay one with: inflight-sim --model --seeds S --trace" } else { "" }
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.model {
        let Some(seeds) = cli.seeds else {
            eprintln!("inflight-sim: --model needs --seeds A-B");
            return ExitCode::from(2);
        };
        return model(seeds, cli.trace, cli.threads);
    }
    let percent = |p: f64| (p / 100.0).clamp(0.0, 1.0);
    let opts = SimOptions {
        slaves: cli.slaves,
        payments_per_slave: cli.payments_per_slave,
        seed: cli.seed,
        loss: percent(cli.loss),
        delay: Duration::from_millis(cli.delay_ms),
        jitter: Duration::from_millis(cli.jitter_ms),
        duplicate: percent(cli.duplicate),
        flaps: cli.flaps,
        flap_half_period: cli.flap_half_period_ms.map(Duration::from_millis),
        ambiguous: cli.ambiguous,
        rebind_cabin: cli.rebind_cabin,
        cabin_loss: percent(cli.cabin_loss),
        cut_terminal: cli.cut_terminal,
        tamper: cli.tamper,
        keep_dir: cli.keep_dir,
        progress: true,
        ..SimOptions::default()
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("inflight-sim: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(window) = cli.bench_ingest_window {
        return match rt.block_on(inflight_sim::bench::ingest(
            cli.slaves,
            cli.payments_per_slave,
            window.max(1),
            cli.bench_deployment.as_deref(),
        )) {
            Ok(r) => {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("inflight-sim: benchmark failed: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match rt.block_on(inflight_sim::run(opts)) {
        Ok(report) => {
            println!("\n{}", report.table());
            if let Some(path) = cli.report {
                match serde_json::to_vec_pretty(&report) {
                    Ok(json) => {
                        if let Err(e) = std::fs::write(&path, json) {
                            eprintln!("inflight-sim: cannot write {}: {e}", path.display());
                            return ExitCode::from(2);
                        }
                    }
                    Err(e) => {
                        eprintln!("inflight-sim: cannot encode the report: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            if let Some(path) = cli.html {
                if let Err(e) = std::fs::write(&path, inflight_sim::html::render(&report)) {
                    eprintln!("inflight-sim: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("inflight-sim: the flight could not complete: {e:#}");
            ExitCode::from(2)
        }
    }
}
