//! Master ingest benchmark: N terminals, each with its own QUIC endpoint and certificate,
//! pipelining payments (a window in flight, acked by id) into one master running in this
//! process. Measures payments durably acked per second and submit → ack latency. Reports
//! numbers; asserts nothing about time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use inflight_master::MasterConfig;
use inflight_net::framed::framed;
use inflight_net::{endpoint, tls};
use inflight_wire::{
    Currency, Expiry, MasterMsg, Money, Pan, Payment, PaymentId, TerminalId, TerminalMsg, TERMINAL_ALPN,
    TERMINAL_FRAME_BYTES_MAX, TERMINAL_PROTOCOL_VERSION,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::rng::Rng;

/// Terminals the load generator has connecting at once: under the master's 64 handshakes from
/// one known address (`inflight_net::admission::Limits::TERMINALS`); every load terminal comes
/// from 127.0.0.1.
const CONNECTS_AT_ONCE: usize = 48;

/// What the ingest benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// Terminals connected.
    pub terminals: u32,
    /// Payments each sent.
    pub payments_per_terminal: u32,
    /// Payments in flight per terminal.
    pub window: usize,
    /// Payments acked as stored (durable).
    pub acked: u64,
    /// First submit → last ack.
    pub elapsed_ms: u64,
    /// Acked payments per second.
    pub acked_per_s: f64,
    /// Submit → ack latency percentiles, ms.
    pub latency_p50_ms: f64,
    /// Submit → ack latency, 99th percentile, ms.
    pub latency_p99_ms: f64,
    /// Time to connect every terminal.
    pub connect_ms: u64,
    /// Peak memory of this process (master and the load generator together), MiB.
    pub peak_rss_mib: Option<f64>,
}

/// Runs the benchmark against a master in this process, or, with `external`, against the master
/// of a deployment made by `inflight-setup local` and already running as its own process (so its
/// memory can be read apart from the load generator's).
pub async fn ingest(
    terminals: u32,
    per_terminal: u32,
    window: usize,
    external: Option<&std::path::Path>,
) -> anyhow::Result<IngestReport> {
    let tmp = tempfile::Builder::new().prefix("inflight-bench").tempdir_in("/tmp")?;
    let root = match external {
        Some(d) => d.to_owned(),
        None => {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
            let plan = inflight_setup::LocalPlan {
                out: tmp.path().to_owned(),
                terminals,
                aircraft: "d-bench".into(),
                base_port: port,
            };
            inflight_setup::write_local(&plan)?;
            tmp.path().to_owned()
        }
    };
    let dir = root.as_path();
    let mut mcfg = MasterConfig::load(&dir.join("config/master.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    // No issuer in this benchmark: the ground link stays down.
    mcfg.ground.probe_interval = Duration::from_secs(3600);
    let cancel = CancellationToken::new();
    let addr = mcfg.listen;
    let mcfg_aircraft = mcfg.aircraft_id.clone();
    let admin = mcfg.admin_socket.clone();
    let master = match external {
        Some(_) => None,
        None => Some(tokio::spawn(inflight_master::run(mcfg, cancel.clone()))),
    };
    let start = Instant::now();
    while tokio::net::UnixStream::connect(&admin).await.is_err() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(30), "master did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ca = tls::roots(&dir.join(inflight_setup::provision::Role::Aircraft.ca_cert()))?;
    let server_name = inflight_setup::master_server_name(&mcfg_aircraft);
    let t_connect = Instant::now();
    // Terminals connect at once, as a cabin does at power-up: the first alone (until one has
    // authenticated from an address, the master admits only a few handshakes from it), then up
    // to `CONNECTS_AT_ONCE` in flight. (Connecting them one after another measured the load
    // generator's round trips, not the master: 1,000 took 3-4 s.)
    let connect_one = {
        let (dir, ca, server_name) = (dir.to_owned(), ca.clone(), server_name.clone());
        move |k: u64| {
            let (dir, ca, server_name) = (dir.clone(), ca.clone(), server_name.clone());
            async move {
                let id = format!("slave-{k}");
                let ident = tls::Identity::from_pem_files(
                    &dir.join(format!("pki/{id}.pem")),
                    &dir.join(format!("pki/{id}.key")),
                )?;
                let ep = endpoint::client(
                    "127.0.0.1:0".parse()?,
                    tls::client_config(ident, ca, TERMINAL_ALPN)?,
                    Default::default(),
                )?;
                let conn = endpoint::connect(&ep, addr, &server_name, Duration::from_secs(10)).await?;
                let (s, r) = conn.open_bi().await?;
                let (mut w, mut r) = framed(s, r, TERMINAL_FRAME_BYTES_MAX);
                let terminal = TerminalId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
                w.send(&TerminalMsg::Hello { version: TERMINAL_PROTOCOL_VERSION, terminal: terminal.clone() }).await?;
                match r.recv::<MasterMsg>().await? {
                    Some(MasterMsg::Hello { .. }) => {}
                    other => anyhow::bail!("{id}: unexpected answer to Hello: {other:?}"),
                }
                anyhow::Ok((k, (ep, conn, w, r, terminal)))
            }
        }
    };
    let mut sessions = vec![connect_one(1).await?];
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTS_AT_ONCE));
    let mut connecting = tokio::task::JoinSet::new();
    for k in 2..=u64::from(terminals) {
        let (gate, connect) = (gate.clone(), connect_one.clone());
        connecting.spawn(async move {
            let _slot = gate.acquire_owned().await?;
            connect(k).await
        });
    }
    while let Some(done) = connecting.join_next().await {
        sessions.push(done??);
    }
    sessions.sort_by_key(|(k, _)| *k);
    let sessions: Vec<_> = sessions.into_iter().map(|(_, s)| s).collect();
    let connect_ms = t_connect.elapsed().as_millis() as u64;

    let go = Arc::new(tokio::sync::Barrier::new(terminals as usize + 1));
    let mut tasks = Vec::new();
    // Fresh payment ids every round: a second round against the same (external) master must
    // measure new payments, not the duplicate path (issue 11 found the ids repeated).
    let round = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    for (k, (ep, conn, mut w, mut r, terminal)) in sessions.into_iter().enumerate() {
        let go = go.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(round ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let payments: Vec<Payment> = (0..per_terminal).map(|i| payment(&terminal, &mut rng, i)).collect();
            let mut sent_at = std::collections::HashMap::with_capacity(payments.len());
            let mut latencies = Vec::with_capacity(payments.len());
            go.wait().await;
            let (mut next, mut acked) = (0usize, 0usize);
            while acked < payments.len() {
                while next < payments.len() && next - acked < window {
                    sent_at.insert(payments[next].id, Instant::now());
                    w.feed(&TerminalMsg::Submit { payment: payments[next].clone(), answered: false }).await?;
                    next += 1;
                }
                w.flush().await?;
                match r.recv::<MasterMsg>().await? {
                    Some(MasterMsg::Ack { id, .. }) => {
                        if let Some(t) = sent_at.remove(&id) {
                            latencies.push(t.elapsed());
                            acked += 1;
                        }
                    }
                    Some(MasterMsg::BinList(_) | MasterMsg::HotList(_) | MasterMsg::Result { .. }) => {}
                    other => anyhow::bail!("unexpected frame: {other:?}"),
                }
            }
            conn.close(0u32.into(), b"done");
            drop(ep);
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    go.wait().await;
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.context("terminal task")??);
    }
    let elapsed = t0.elapsed();
    cancel.cancel();
    if let Some(m) = master {
        let _ = m.await;
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Ok(IngestReport {
        terminals,
        payments_per_terminal: per_terminal,
        window,
        acked: lat.len() as u64,
        elapsed_ms: elapsed.as_millis() as u64,
        acked_per_s: lat.len() as f64 / elapsed.as_secs_f64(),
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
        connect_ms,
        peak_rss_mib: crate::peak_rss_mib(),
    })
}

fn payment(terminal: &TerminalId, rng: &mut Rng, i: u32) -> Payment {
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    random[8..].copy_from_slice(&(i as u16).to_le_bytes());
    Payment {
        id: PaymentId::mint(1_790_000_000_000 + u64::from(i), random),
        terminal: terminal.clone(),
        pan: Pan::parse(&inflight_setup::luhn_card("400011", rng.below(1_000_000), 16))
            .expect("generated cards pass Luhn"),
        expiry: Expiry::parse("12/30").expect("literal expiry"),
        amount: Money::new(100 + rng.below(10_000), Currency::parse("EUR").expect("known currency"))
            .expect("positive amount"),
        seat: "1A".into(),
        captured_unix_ms: 1_790_000_000_000,
        items: vec![],
        emv: None,
        pos: inflight_wire::PointOfSale::LEGACY,
    }
}
