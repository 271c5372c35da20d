//! `inflight-sim`: a whole flight in one process — an issuer, a master and N terminals, each
//! terminal with its own QUIC endpoint and sled store under a run directory, all on loopback with
//! real TLS — with userspace link emulators between master and issuer and between terminals and
//! master, a seeded scenario, and an invariant checker.
//!
//! Phases: gate (link up, BIN list on every terminal) → take-off (link down) → cabin sales (every
//! terminal capturing concurrently) → landing (link up, with the configured impairments and
//! flaps) → one batch → results to every terminal → stop → check.
//!
//! The daemons run exactly the code of `inflight-issuer`, `inflight-master` and `inflight-slave`,
//! as tasks of this process instead of separate processes.

pub mod bench;
pub mod check;
pub mod html;
pub mod leaks;
pub mod link;
pub mod model;
pub mod report;
pub mod rng;
pub mod scenario;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use inflight_core::chip::{ChipCard, ChipTxn};
use inflight_issuer::IssuerConfig;
use inflight_master::{AdminRequest, MasterConfig};
use inflight_slave::api::CaptureBody;
use inflight_slave::SlaveConfig;
use inflight_wire::{EmvData, Money};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::link::{Impairments, LinkEmulator};
use crate::report::{Capture, Report, Sample, Timeline};
use crate::rng::Rng;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Terminals in the cabin.
    pub slaves: u32,
    /// Captures per terminal.
    pub payments_per_slave: u32,
    /// Seed of the scenario and of the link emulators.
    pub seed: u64,
    /// Ground link at landing: loss probability.
    pub loss: f64,
    /// Ground link at landing: one-way delay.
    pub delay: Duration,
    /// Ground link at landing: jitter.
    pub jitter: Duration,
    /// Ground link at landing: duplication probability.
    pub duplicate: f64,
    /// Times the ground link drops out during the upload.
    pub flaps: u32,
    /// If set, the flaps are regular: up and down for this long each (500 ms: 1 Hz flapping).
    /// Otherwise they are random, some longer than the idle timeout.
    pub flap_half_period: Option<Duration>,
    /// The ambiguous case: at landing the issuer receives and decides the batch, but its answers
    /// are lost until the connection has died; the batch must be sent again and answered from
    /// the issuer's stored results.
    pub ambiguous: bool,
    /// During sales, every terminal's traffic starts coming from a new source port (NAT
    /// rebinding); QUIC connections must migrate.
    pub rebind_cabin: bool,
    /// Cabin network (terminals ↔ master): loss probability during sales.
    pub cabin_loss: f64,
    /// Cut terminal 1 off the cabin network for longer than the idle timeout during sales.
    pub cut_terminal: bool,
    /// Percent of chip payments a hostile terminal alters after the card signed them (amount
    /// raised by one minor unit in the payment and in the chip data; the cryptogram kept).
    pub tamper: f64,
    /// Run directory to use and keep; `None`: a temporary one, removed at the end.
    pub keep_dir: Option<PathBuf>,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// Longest the landing may take before the run is declared stuck.
    pub landing_timeout: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            slaves: 300,
            payments_per_slave: 10,
            seed: 1,
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            duplicate: 0.0,
            flaps: 0,
            flap_half_period: None,
            ambiguous: false,
            rebind_cabin: false,
            cabin_loss: 0.0,
            cut_terminal: false,
            tamper: 0.0,
            keep_dir: None,
            progress: false,
            landing_timeout: Duration::from_secs(300),
        }
    }
}

fn eur() -> inflight_wire::Currency {
    inflight_wire::Currency::parse("EUR").unwrap_or_else(|e| unreachable!("{e}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a hostile terminal does to chip data after the card signed it: the amount (9F02)
/// rewritten, everything else (the cryptogram above all) kept.
pub fn raise_amount(emv: &EmvData, amount_minor: u64) -> EmvData {
    const TAGS: [u16; 12] = [0x9F26, 0x9F27, 0x9F10, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x5F2A, 0x9F37, 0x9F34, 0x5F34];
    let amount = inflight_wire::bcd(amount_minor, 6);
    let tags: Vec<(u16, &[u8])> =
        TAGS.iter().filter_map(|t| Some((*t, if *t == 0x9F02 { &amount[..] } else { emv.get(*t)? }))).collect();
    EmvData::from_tags(&tags).unwrap_or_else(|e| unreachable!("chip data stays well formed: {e}"))
}

/// Closes the current flight with `--send` and waits for the issuer's acknowledgement (the
/// master's next ground session sends it); the answer of `close-flight` with it.
async fn close_and_acknowledge(master: &MasterConfig) -> anyhow::Result<Value> {
    let close = |send| AdminRequest::CloseFlight { flight: None, force: false, send };
    let queued = admin(master, close(true)).await?;
    anyhow::ensure!(queued.get("error").is_none(), "close-flight --send refused: {queued}");
    let t = Instant::now();
    loop {
        let m = admin(master, close(false)).await?;
        if m.get("issuer_ack").is_some() {
            return Ok(m);
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "no acknowledgement from the issuer within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Idle timeout of the cabin links in the simulation (terminals notice a dead master this fast).
const CABIN_IDLE: Duration = Duration::from_secs(4);

/// Runs one flight and checks it.
pub async fn run(opts: SimOptions) -> anyhow::Result<Report> {
    let t0 = Instant::now();
    let tmp;
    let dir: PathBuf = match &opts.keep_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile_dir()?;
            tmp.path().to_owned()
        }
    };
    let progress = Progress { on: opts.progress, t0 };
    // The flight over time, for the HTML page; flaps record their outages from their task.
    let timeline = Arc::new(std::sync::Mutex::new(Timeline::default()));
    let at_ms = move || t0.elapsed().as_millis() as u64;
    progress.say(&format!(
        "flight of {} terminals × {} payments, seed {}, run dir {}",
        opts.slaves,
        opts.payments_per_slave,
        opts.seed,
        dir.display()
    ));
    logging::to_file(&dir.join("sim.log"))?;

    // Set-up: a deployment as `inflight-setup local` writes it, and this flight's passengers.
    let (master_port, issuer_port) = (free_udp_port()?, free_udp_port()?);
    let plan = inflight_setup::LocalPlan {
        out: dir.clone(),
        terminals: opts.slaves,
        aircraft: "d-sim".into(),
        base_port: master_port,
    };
    inflight_setup::write_local(&plan).context("writing the deployment")?;
    let flight = scenario::generate(opts.seed, opts.slaves, opts.payments_per_slave);
    write_accounts(&dir, &flight)?;

    let cancel = CancellationToken::new();
    let mut icfg = IssuerConfig::load(&dir.join("config/issuer.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    icfg.listen = format!("127.0.0.1:{issuer_port}").parse()?;
    let issuer_addr = icfg.listen;
    let issuer_cfg = icfg.clone();
    let issuer = tokio::spawn(inflight_issuer::run(icfg, cancel.clone()));
    wait_socket(&issuer_cfg.admin_socket, Duration::from_secs(30)).await.context("issuer did not start")?;
    // The accounts file and the published test cards are inputs holding card numbers in clear;
    // once imported they are removed, so every file left under the run directory is checked.
    let _ = std::fs::remove_file(dir.join("issuer/accounts.json"));
    let _ = std::fs::remove_file(dir.join("test-cards.json"));

    let ground = LinkEmulator::start(issuer_addr, Impairments::default(), opts.seed, cancel.clone()).await?;
    let mut mcfg = MasterConfig::load(&dir.join("config/master.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    mcfg.ground.issuer_addr = ground.addr;
    mcfg.ground.probe_interval = Duration::from_millis(250);
    mcfg.ground.upload_retry = Duration::from_millis(250);
    mcfg.timers.idle = CABIN_IDLE;
    mcfg.timers.keep_alive = Duration::from_millis(1_000);
    let master_addr = mcfg.listen;
    let master_cfg = mcfg.clone();
    let master = tokio::spawn(inflight_master::run(mcfg, cancel.clone()));
    wait_socket(&master_cfg.admin_socket, Duration::from_secs(30)).await.context("master did not start")?;

    let cabin_impairments = Impairments { loss: opts.cabin_loss, ..Default::default() };
    let cabin = LinkEmulator::start(master_addr, cabin_impairments, opts.seed ^ 0xcab1, cancel.clone()).await?;
    // Terminal 1 gets a link of its own, so that it alone can be cut off.
    let lonely = LinkEmulator::start(master_addr, cabin_impairments, opts.seed ^ 0x10e1, cancel.clone()).await?;
    let mut slave_cfgs = Vec::new();
    let mut slaves = Vec::new();
    for k in 1..=opts.slaves {
        let mut c =
            SlaveConfig::load(&dir.join(format!("config/slave-{k}.toml"))).map_err(|e| anyhow::anyhow!("{e}"))?;
        c.master_addr = if k == 1 { lonely.addr } else { cabin.addr };
        // Under a full cabin on a small machine the master can take more than the default half
        // second to answer; waiting longer keeps the outcome of a capture independent of load.
        c.verdict_wait = Duration::from_secs(5);
        c.timers.idle = CABIN_IDLE;
        c.timers.keep_alive = Duration::from_millis(1_000);
        c.reconnect_max = Duration::from_millis(1_000);
        slaves.push(tokio::spawn(inflight_slave::run(c.clone(), cancel.clone())));
        slave_cfgs.push(c);
    }
    for c in &slave_cfgs {
        wait_socket(&c.capture_socket, Duration::from_secs(60))
            .await
            .with_context(|| format!("{} did not start", c.terminal_id))?;
    }
    let setup_ms = t0.elapsed().as_millis() as u64;
    progress.say("set-up done: issuer, master and terminals running");

    // Gate: the link is up and every terminal holds the signed BIN list.
    let t_gate = Instant::now();
    wait_until(Duration::from_secs(120), || async {
        let mut ready = 0;
        for c in &slave_cfgs {
            if inflight_slave::status(c, None).await.is_ok_and(|v| v["bin_list_valid"] == true) {
                ready += 1;
            }
        }
        ready == slave_cfgs.len()
    })
    .await
    .context("gate: not every terminal received the BIN list")?;
    let gate_ms = t_gate.elapsed().as_millis() as u64;
    progress.say("gate: ground link up, BIN list on every terminal");
    {
        let mut tl = lock(&timeline);
        tl.link_seen(at_ms(), true);
        tl.mark(at_ms(), "gate");
    }

    // Take-off.
    admin(&master_cfg, AdminRequest::Link { mode: "down".into() }).await?;
    {
        let mut tl = lock(&timeline);
        tl.link_seen(at_ms(), false);
        tl.mark(at_ms(), "take_off");
    }
    progress.say("take-off: ground link down");

    // Cabin sales, every terminal at once.
    let t_sales = Instant::now();
    lock(&timeline).sales_start_ms = at_ms();
    let done = Arc::new(AtomicU64::new(0));
    let total_captures = u64::from(opts.slaves) * u64::from(opts.payments_per_slave);
    let cut = if opts.cut_terminal {
        let lonely = lonely.clone();
        Some(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            lonely.set_blackhole(true);
            tokio::time::sleep(CABIN_IDLE + Duration::from_secs(2)).await;
            lonely.set_blackhole(false);
        }))
    } else {
        None
    };
    // The cards' chips: one transaction counter per card, shared by every seat that uses it.
    let imk = inflight_store::chip_master_key_from_file(&dir.join("keys/issuer.chip.key"))?;
    let chips: Arc<Vec<(Option<ChipCard>, AtomicU16)>> = Arc::new(
        flight
            .cards
            .iter()
            .map(|c| {
                let chip = inflight_wire::Pan::parse(&c.pan).ok().map(|pan| ChipCard::new(&imk, &pan, 1));
                (chip, AtomicU16::new(0))
            })
            .collect(),
    );
    let mut sellers = Vec::new();
    for (k, c) in slave_cfgs.iter().enumerate() {
        let plan = flight.captures[k].clone();
        let cards = flight.cards.clone();
        let chips = chips.clone();
        let mut hostile = Rng::new(opts.seed).fork(0x7a3e_0000 + k as u64);
        let tamper = opts.tamper / 100.0;
        let (socket, done, seat) =
            (c.capture_socket.clone(), done.clone(), format!("{}{}", 1 + k / 6, (b'A' + (k % 6) as u8) as char));
        sellers.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(plan.len());
            for idx in plan {
                let card = &cards[idx];
                let (chip, atc) = &chips[idx];
                let tampered = chip.is_some() && hostile.chance(tamper);
                let emv = chip.as_ref().map(|chip| {
                    let amount = Money::new(card.amount_minor, eur()).unwrap_or_else(|e| unreachable!("{e}"));
                    let atc = atc.fetch_add(1, Ordering::Relaxed) + 1;
                    let unpredictable = (u32::from(atc) ^ (k as u32) << 16).to_be_bytes();
                    let emv = chip.generate_ac(ChipTxn {
                        atc,
                        amount,
                        unix_ms: now_ms(),
                        unpredictable,
                        pin_verified: false,
                    });
                    if tampered {
                        raise_amount(&emv, card.amount_minor + 1)
                    } else {
                        emv
                    }
                });
                let amount_minor = card.amount_minor + u64::from(tampered);
                let body = CaptureBody {
                    pan: card.pan.clone(),
                    expiry: card.expiry.clone(),
                    amount_minor,
                    currency: "EUR".into(),
                    seat: seat.clone(),
                    items: vec![],
                    request_id: None,
                    entry_mode: emv.is_some().then(|| card.entry_mode.to_owned()),
                    emv: emv.map(|e| e.to_hex()),
                    mcc: None,
                };
                let sent_emv = body.emv.clone();
                let t = Instant::now();
                let answer = inflight_slave::capture_via_socket(&socket, body).await;
                let latency = t.elapsed();
                done.fetch_add(1, Ordering::Relaxed);
                out.push(Capture {
                    terminal: k as u32 + 1,
                    card: idx,
                    answer: answer.map_err(|e| e.to_string()),
                    latency,
                    answered_at_ms: at_ms(),
                    amount_minor,
                    emv: sent_emv,
                    tampered,
                });
            }
            out
        }));
    }
    let rebind = opts.rebind_cabin.then(|| {
        let (cabin, lonely) = (cabin.clone(), lonely.clone());
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                cabin.rebind();
                lonely.rebind();
            }
        })
    });
    let ticker = progress.ticker("sales", done.clone(), total_captures);
    let mut captures = Vec::new();
    for s in sellers {
        captures.extend(s.await?);
    }
    ticker.abort();
    if let Some(r) = rebind {
        let _ = r.await;
    }
    if let Some(c) = cut {
        let _ = c.await;
    }
    let sales_ms = t_sales.elapsed().as_millis() as u64;
    lock(&timeline).count_captures(&captures, sales_ms);
    let accepted = captures.iter().filter(|c| c.answer.as_ref().is_ok_and(|a| a.outcome == "accepted")).count() as u64;
    progress.say(&format!(
        "cabin sales: {} captures, {accepted} accepted, in {:.1} s",
        captures.len(),
        sales_ms as f64 / 1e3
    ));
    // Everything accepted reaches the master (terminals cut off re-send when they are back).
    wait_until(Duration::from_secs(120), || async {
        master_counts(&master_cfg).await.is_ok_and(|p| p["total"] == accepted)
    })
    .await
    .context("not every accepted payment reached the master")?;

    // Landing.
    let (up0, down0) = (ground.stats.up_bytes.load(Ordering::Relaxed), ground.stats.down_bytes.load(Ordering::Relaxed));
    ground.set_impairments(Impairments {
        delay: opts.delay,
        jitter: opts.jitter,
        loss: opts.loss,
        duplicate: opts.duplicate,
    });
    let flaps = spawn_flaps(
        &ground,
        opts.flaps,
        opts.flap_half_period,
        Rng::new(opts.seed).fork(0xf1a9),
        (timeline.clone(), t0),
    );
    // The ambiguous case: the downlink is cut at the exact moment the issuer has made its
    // decisions durable and is about to answer (its `issuer.after_results_stored` point), for
    // longer than the ground link's idle timeout (5 s): the answer is lost, the connection dies,
    // and the master must send the same batch again.
    let cut = opts.ambiguous.then(|| {
        let cut = Arc::new(AnswerCut { ground: ground.clone(), fired_at: std::sync::Mutex::new(None) });
        *ANSWER_CUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cut.clone());
        inflight_daemon::observe_points(answer_cut_observer);
        cut
    });
    let t_land = Instant::now();
    admin(&master_cfg, AdminRequest::Link { mode: "auto".into() }).await?;
    lock(&timeline).mark(at_ms(), "landing");
    progress.say(&format!(
        "landing: ground link back (loss {:.0}%, delay {} ms, {} flaps)",
        opts.loss * 100.0,
        opts.delay.as_millis(),
        opts.flaps
    ));
    let mut decided_ms = None;
    let mut batch_seen = false;
    let landed = loop {
        if let Ok(v) = admin(&master_cfg, AdminRequest::Status { payment_id: None }).await {
            let p = &v["payments"];
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            let finished = n("decided") + n("delivered");
            let mut tl = lock(&timeline);
            let now = at_ms();
            tl.sample(Sample {
                t_ms: now,
                link_up: v["link"] == "up",
                in_batch: n("in_batch"),
                decided: n("decided"),
                delivered: n("delivered"),
            });
            if !batch_seen && n("in_batch") > 0 {
                batch_seen = true;
                tl.mark(now, "batch_sealed");
            } else if batch_seen && n("in_batch") == 0 {
                batch_seen = false;
                tl.mark(now, "batch_answered");
            }
            if decided_ms.is_none() && finished == accepted {
                decided_ms = Some(t_land.elapsed().as_millis() as u64);
                tl.mark(now, "all_decided");
            }
            if p["delivered"] == accepted && p["pending"] == 0 && p["in_batch"] == 0 {
                tl.mark(now, "all_delivered");
                break Ok(());
            }
        }
        if t_land.elapsed() > opts.landing_timeout {
            break Err(anyhow::anyhow!("timed out after {:?}", opts.landing_timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    flaps.abort();
    ground.set_blackhole(false);
    let delivered_ms = t_land.elapsed().as_millis() as u64;
    lock(&timeline).finish(at_ms());
    let ground_bytes =
        (ground.stats.up_bytes.load(Ordering::Relaxed) - up0, ground.stats.down_bytes.load(Ordering::Relaxed) - down0);
    if landed.is_ok() {
        progress.say(&format!(
            "results: every payment decided and delivered {:.1} s after landing",
            delivered_ms as f64 / 1e3
        ));
    } else {
        progress.say("results: NOT every payment was delivered in time");
    }

    // The flight closed, its manifest sent to the issuer and acknowledged (signed) over the
    // ground link: the books close 1:1 with what the issuer decided.
    let closing = if landed.is_ok() { Some(close_and_acknowledge(&master_cfg).await) } else { None };
    if closing.is_some() {
        progress.say("flight closed: manifest acknowledged by the issuer");
    }

    // Stop everything, then look at what is on disk.
    cancel.cancel();
    for t in slaves {
        let _ = t.await;
    }
    let _ = master.await;
    let _ = issuer.await;
    logging::close();
    progress.say("stopped; checking invariants");
    let mut report = check::check(&dir, &flight, &captures, &issuer_cfg, &slave_cfgs)?;
    report.seed = opts.seed;
    report.slaves = opts.slaves;
    report.payments_per_slave = opts.payments_per_slave;
    report.impairments = json!({
        "ground_loss": opts.loss, "ground_delay_ms": opts.delay.as_millis() as u64, "ground_jitter_ms": opts.jitter.as_millis() as u64,
        "ground_duplicate": opts.duplicate, "flaps": opts.flaps, "flap_half_period_ms": opts.flap_half_period.map(|d| d.as_millis() as u64),
        "ambiguous": opts.ambiguous, "cabin_loss": opts.cabin_loss, "cut_terminal": opts.cut_terminal, "rebind_cabin": opts.rebind_cabin,
    });
    report.timings_ms = BTreeMap::from([
        ("setup".to_owned(), setup_ms),
        ("gate".to_owned(), gate_ms),
        ("sales".to_owned(), sales_ms),
        ("landing_to_decided".to_owned(), decided_ms.unwrap_or(delivered_ms)),
        ("landing_to_delivered".to_owned(), delivered_ms),
        ("total".to_owned(), t0.elapsed().as_millis() as u64),
    ]);
    report.throughput = json!({ "captures_per_s": captures.len() as f64 / (sales_ms.max(1) as f64 / 1e3) });
    report.ground_link = json!({
        "bytes_up": ground_bytes.0, "bytes_down": ground_bytes.1,
        "bytes_per_payment": if accepted > 0 { (ground_bytes.0 + ground_bytes.1) as f64 / accepted as f64 } else { 0.0 },
        "bytes_up_per_payment": if accepted > 0 { ground_bytes.0 as f64 / accepted as f64 } else { 0.0 },
        "dropped_datagrams": ground.stats.dropped.load(Ordering::Relaxed),
    });
    report.peak_rss_mib = peak_rss_mib();
    report.cabin_paths = cabin.stats.paths.load(Ordering::Relaxed) + lonely.stats.paths.load(Ordering::Relaxed);
    if let Err(e) = landed {
        report.violations.push(format!("landing did not complete: {e:#}"));
    }
    match closing {
        Some(Ok(m)) => {
            let ack = &m["issuer_ack"];
            let mismatches = ack["mismatches"].as_array().map_or(0, Vec::len);
            if mismatches > 0
                || ack["signature_valid"] != true
                || ack["matches_this_manifest"] != true
                || ack["manifest_signature_valid"] != true
            {
                report.violations.push(format!("the issuer's acknowledgement of the manifest: {ack}"));
            }
            let eur = &m["currencies"][0]["books"];
            report.manifest = json!({
                "payments": m["payments"].as_array().map_or(0, Vec::len),
                "captured": eur["captured"], "approved": eur["approved"], "declined": eur["declined"],
                "voided": eur["voided"], "pending": eur["pending"],
                "issuer_decisions": ack["decisions"], "mismatches": mismatches,
            });
        }
        Some(Err(e)) => report.violations.push(format!("closing the flight: {e:#}")),
        None => {}
    }
    if let Some(cut) = cut {
        ANSWER_CUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match *cut.fired_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some(at) => {
                let mut tl = lock(&timeline);
                tl.mark(at.saturating_duration_since(t0).as_millis() as u64, "answer_cut");
                let end = tl.end_ms;
                tl.finish(end);
                report
                    .timings_ms
                    .insert("answer_cut_after_landing".into(), at.saturating_duration_since(t_land).as_millis() as u64);
            }
            None => report.violations.push(
                "the ambiguous case never happened: the issuer never reached the point where its answer is cut".into(),
            ),
        }
    }
    report.run_dir = opts.keep_dir.as_ref().map(|d| d.display().to_string());
    report.timeline = std::mem::take(&mut *lock(&timeline));
    Ok(report)
}

/// The downlink cut of the ambiguous case, armed by a run and thrown by the issuer's point.
#[derive(Debug)]
struct AnswerCut {
    ground: LinkEmulator,
    /// When the issuer passed the point (the answer was cut then).
    fired_at: std::sync::Mutex<Option<Instant>>,
}

/// The armed cut, if any (one ambiguous run per process at a time).
static ANSWER_CUT: std::sync::Mutex<Option<Arc<AnswerCut>>> = std::sync::Mutex::new(None);

/// The point observer (installed once per process): throws the armed cut, once.
fn answer_cut_observer(point: &str) {
    if point != "issuer.after_results_stored" {
        return;
    }
    let Some(cut) = ANSWER_CUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() else { return };
    let mut fired = cut.fired_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if fired.is_some() {
        return;
    }
    *fired = Some(Instant::now());
    cut.ground.set_down_blackhole(true);
    let ground = cut.ground.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(7)).await;
        ground.set_down_blackhole(false);
    });
}

/// Drops the ground link out `n` times: up a little, then down for a while (some outages are
/// longer than the idle timeout, so connections die and the batch is sent again).
fn spawn_flaps(
    ground: &LinkEmulator,
    n: u32,
    half_period: Option<Duration>,
    mut rng: Rng,
    (timeline, t0): (Arc<std::sync::Mutex<Timeline>>, Instant),
) -> tokio::task::JoinHandle<()> {
    let mark = move |event: &str| lock(&timeline).mark(t0.elapsed().as_millis() as u64, event);
    let ground = ground.clone();
    tokio::spawn(async move {
        for _ in 0..n {
            let (up, down) = match half_period {
                Some(p) => (p, p),
                None => (Duration::from_millis(300 + rng.below(700)), Duration::from_millis(1_000 + rng.below(5_500))),
            };
            tokio::time::sleep(up).await;
            ground.set_blackhole(true);
            mark("ground_outage_start");
            tokio::time::sleep(down).await;
            ground.set_blackhole(false);
            mark("ground_outage_end");
        }
    })
}

fn write_accounts(dir: &Path, flight: &scenario::Flight) -> anyhow::Result<()> {
    let accounts: Vec<Value> = flight
        .cards
        .iter()
        .filter_map(|c| {
            c.available_minor.map(|available| {
                json!({ "pan": c.pan, "kind": c.kind, "expiry": c.expiry, "available_minor": available, "currency": "EUR", "status": c.status })
            })
        })
        .collect();
    std::fs::write(dir.join("issuer/accounts.json"), serde_json::to_vec_pretty(&accounts)?)?;
    Ok(())
}

async fn admin(cfg: &MasterConfig, req: AdminRequest) -> anyhow::Result<Value> {
    let v = inflight_master::admin_request(cfg, &req).await?;
    anyhow::ensure!(v.get("error").is_none(), "master refused {req:?}: {v}");
    Ok(v)
}

/// The timeline, even if a task panicked holding it (it is only ever appended to).
fn lock(t: &std::sync::Mutex<Timeline>) -> std::sync::MutexGuard<'_, Timeline> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn master_counts(cfg: &MasterConfig) -> anyhow::Result<Value> {
    Ok(inflight_master::admin_request(cfg, &AdminRequest::Status { payment_id: None }).await?["payments"].clone())
}

async fn wait_socket(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    wait_until(timeout, || async { tokio::net::UnixStream::connect(path).await.is_ok() }).await
}

async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < timeout, "timed out after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free UDP port below Linux's ephemeral range (32768-60999), so that client endpoints
/// binding ephemeral ports (this run's or a concurrent test's) cannot take it before the daemon
/// binds it.
fn free_udp_port() -> std::io::Result<u16> {
    let mut rng = Rng::new(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()),
    );
    for _ in 0..200 {
        let p = 20_000 + rng.below(12_000) as u16;
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free UDP port found"))
}

fn tempfile_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("inflight-sim").tempdir_in("/tmp")
}

/// Peak resident memory of this process (all daemons together), MiB.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Progress lines on stderr.
#[derive(Debug, Clone, Copy)]
struct Progress {
    on: bool,
    t0: Instant,
}

impl Progress {
    fn say(&self, msg: &str) {
        if self.on {
            eprintln!("[{:>6.1}s] {msg}", self.t0.elapsed().as_secs_f64());
        }
    }

    fn ticker(&self, phase: &'static str, done: Arc<AtomicU64>, total: u64) -> tokio::task::JoinHandle<()> {
        let me = *self;
        tokio::spawn(async move {
            if !me.on {
                return;
            }
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let d = done.load(Ordering::Relaxed);
                let rate = d as f64 / start.elapsed().as_secs_f64();
                eprint!("\r[{:>6.1}s] {phase}: {d}/{total} captures ({rate:.0}/s)   ", me.t0.elapsed().as_secs_f64());
                let _ = std::io::stderr().flush();
                if d >= total {
                    eprintln!();
                    return;
                }
            }
        })
    }
}

mod logging {
    //! The daemons' logs go to the current run's `sim.log`. The subscriber is global (one per
    //! process); the file it writes to is swapped per run.

    use std::fs::File;
    use std::io::Write;
    use std::path::Path;
    use std::sync::Mutex;

    static FILE: Mutex<Option<File>> = Mutex::new(None);

    struct Sink;

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match FILE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
                Some(f) => f.write(buf),
                None => Ok(buf.len()),
            }
        }

        fn flush(&mut self) -> std::io::Result<()> {
            match FILE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
                Some(f) => f.flush(),
                None => Ok(()),
            }
        }
    }

    pub fn to_file(path: &Path) -> std::io::Result<()> {
        *FILE.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(File::create(path)?);
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(|| Sink).try_init();
        Ok(())
    }

    pub fn close() {
        *FILE.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}
