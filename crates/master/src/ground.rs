//! The ground link: a watcher that probes the issuer and decides up/down (with the crew's
//! override), and an uploader that, while the link is up, fetches the BIN list and sends the
//! consolidated batch, re-sending the same batch after any failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inflight_core::link::{LinkOverride, LinkWatcher};
use inflight_net::framed::{framed, FrameReader, FrameWriter};
use inflight_net::{endpoint, Endpoint, NetError};
use inflight_store::{BatchDigest, MasterStore};
use inflight_wire::{
    AircraftMsg, AuthResult, BatchHeader, BatchId, Currency, IssuerMsg, PaymentId, BATCH_CHUNK_MAX,
    GROUND_FRAME_BYTES_MAX, GROUND_PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::aircraft::{Event, NextBatch};
use crate::config::MasterConfig;

/// How often an idle upload session looks for new payments to send.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// The link state shared by the watcher, the uploader and the admin API.
#[derive(Debug, Clone)]
pub struct LinkState {
    watcher: Arc<Mutex<LinkWatcher>>,
    up: watch::Sender<bool>,
}

impl LinkState {
    /// Starts down, with the crew's stored override.
    pub fn new(cfg: &MasterConfig, mode: LinkOverride) -> Self {
        let mut w = LinkWatcher::new(cfg.ground.probe_up_after, cfg.ground.probe_down_after);
        w.set_override(mode);
        let up = watch::Sender::new(w.is_up());
        Self { watcher: Arc::new(Mutex::new(w)), up }
    }

    fn with<R>(&self, f: impl FnOnce(&mut LinkWatcher) -> R) -> R {
        let mut w = self.watcher.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = f(&mut w);
        self.up.send_replace(w.is_up());
        r
    }

    /// Whether the link is up (probes or override).
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// The crew's override.
    pub fn mode(&self) -> LinkOverride {
        self.with(|w| w.mode())
    }

    /// Sets the crew's override.
    pub fn set_override(&self, mode: LinkOverride) {
        if let Some(up) = self.with(|w| w.set_override(mode)) {
            tracing::info!(up, mode = mode.as_str(), "ground link changed by the crew");
        }
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }
}

/// The master's endpoint towards the issuer, with its TLS material re-read when it changes (a
/// renewed aircraft certificate, a new revocation list of the issuer CA).
#[derive(Debug, Clone)]
pub struct GroundEndpoint {
    /// The QUIC endpoint.
    pub ep: Endpoint,
    /// Its client configuration.
    pub tls: Arc<inflight_net::reload::ClientTls>,
}

/// Probes the issuer every `probe_interval` until `cancel`.
pub async fn probe_loop(cfg: Arc<MasterConfig>, ep: GroundEndpoint, link: LinkState, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(cfg.ground.probe_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        nonce += 1;
        let probed = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe(&cfg, &ep, nonce) => r,
        };
        let ok = match probed {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "ground probe failed");
                false
            }
        };
        if let Some(up) = link.with(|w| w.on_probe(ok)) {
            tracing::info!(up, "ground link {}", if up { "up" } else { "down" });
        }
    }
}

/// A real handshake and a ping, within the connect timeout.
async fn probe(cfg: &MasterConfig, ep: &GroundEndpoint, nonce: u64) -> Result<(), NetError> {
    let g = &cfg.ground;
    let (conn, mut w, mut r) = open(cfg, ep).await?;
    let pong = tokio::time::timeout(g.timers.connect, async {
        w.send(&AircraftMsg::Ping { nonce }).await?;
        match r.recv::<IssuerMsg>().await? {
            Some(IssuerMsg::Pong { nonce: n }) if n == nonce => Ok(()),
            other => Err(NetError::Connection(format!("unexpected answer to Ping: {other:?}"))),
        }
    })
    .await;
    conn.close(0u32.into(), b"probe done");
    pong.map_err(|_| NetError::Connection("no Pong in time".into()))?
}

/// Connects to the issuer and exchanges `Hello`s.
async fn open(
    cfg: &MasterConfig,
    ep: &GroundEndpoint,
) -> Result<(inflight_net::Connection, FrameWriter, FrameReader), NetError> {
    let g = &cfg.ground;
    let conn = endpoint::connect_with(
        &ep.ep,
        ep.tls.current("ground"),
        g.issuer_addr,
        &g.issuer_server_name,
        g.timers.connect,
    )
    .await?;
    let hello = tokio::time::timeout(g.timers.connect, async {
        let (s, r) = conn.open_bi().await.map_err(|e| NetError::Connection(e.to_string()))?;
        let (mut w, mut r) = framed(s, r, GROUND_FRAME_BYTES_MAX);
        w.send(&AircraftMsg::Hello { version: GROUND_PROTOCOL_VERSION, aircraft: cfg.aircraft_id.clone() }).await?;
        match r.recv::<IssuerMsg>().await? {
            Some(IssuerMsg::Hello { version, .. }) if version == GROUND_PROTOCOL_VERSION => Ok((w, r)),
            Some(IssuerMsg::Error { message }) => Err(NetError::Connection(format!("issuer refused: {message}"))),
            other => Err(NetError::Connection(format!("unexpected first frame from issuer: {other:?}"))),
        }
    })
    .await;
    match hello {
        Ok(Ok((w, r))) => Ok((conn, w, r)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(NetError::Connection("no Hello from issuer in time".into())),
    }
}

/// While the link is up, keeps an upload session going; retries after failures.
pub async fn upload_loop(
    cfg: Arc<MasterConfig>,
    ep: GroundEndpoint,
    link: LinkState,
    store: Arc<MasterStore>,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    let mut up = link.subscribe();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = up.wait_for(|u| *u) => if r.is_err() { return },
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = session(&cfg, &ep, &store, &events) => r,
            _ = up.wait_for(|u| !*u) => Err(NetError::Connection("ground link went down".into())),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "upload session ended; the same batch will be sent again");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(cfg.ground.upload_retry) => {}
        }
    }
}

async fn session(
    cfg: &MasterConfig,
    ep: &GroundEndpoint,
    store: &MasterStore,
    events: &mpsc::Sender<Event>,
) -> Result<(), NetError> {
    let (conn, mut w, mut r) = open(cfg, ep).await?;
    let result = async {
        let mut last_fetch = None::<tokio::time::Instant>;
        loop {
            if last_fetch.is_none_or(|t| t.elapsed() >= cfg.ground.bin_list_refresh) {
                fetch_bin_list(cfg, &mut w, &mut r, events).await?;
                last_fetch = Some(tokio::time::Instant::now());
            }
            let (tx, rx) = oneshot::channel();
            events.send(Event::NextBatch { reply: tx }).await.map_err(|_| shutting_down())?;
            match rx.await.map_err(|_| shutting_down())? {
                NextBatch::Nothing => tokio::time::sleep(IDLE_POLL).await,
                NextBatch::Open(header, ids) => {
                    tracing::info!(batch = %header.id, count = header.count, "re-sending the open batch");
                    send_batch(store, &header, &ids, &mut w, &mut r, events).await?;
                }
                NextBatch::Pending(ids) => {
                    let header = seal(cfg, store, &ids, events).await?;
                    inflight_daemon::crash_point("master.after_seal");
                    send_batch(store, &header, &ids, &mut w, &mut r, events).await?;
                }
            }
        }
    }
    .await;
    conn.close(0u32.into(), b"upload session over");
    result
}

fn shutting_down() -> NetError {
    NetError::Connection("master shutting down".into())
}

async fn fetch_bin_list(
    cfg: &MasterConfig,
    w: &mut FrameWriter,
    r: &mut FrameReader,
    events: &mpsc::Sender<Event>,
) -> Result<(), NetError> {
    let (tx, rx) = oneshot::channel();
    events.send(Event::Status { reply: tx }).await.map_err(|_| shutting_down())?;
    let have_version = rx.await.map_err(|_| shutting_down())?.bin_list_version;
    w.send(&AircraftMsg::FetchBinList { have_version }).await?;
    match r.recv::<IssuerMsg>().await? {
        Some(IssuerMsg::BinList(None)) => Ok(()),
        Some(IssuerMsg::BinList(Some(signed))) => {
            match inflight_store::verify_bin_list(&cfg.ground.issuer_public_key, &signed) {
                Ok(list) => {
                    events.send(Event::BinList { signed, list }).await.map_err(|_| shutting_down())?;
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "the issuer's BIN list does not verify; keeping the current one");
                    Ok(())
                }
            }
        }
        other => Err(NetError::Connection(format!("unexpected answer to FetchBinList: {other:?}"))),
    }
}

/// Builds the header of a new batch from the pending payments and has it recorded durably.
async fn seal(
    cfg: &MasterConfig,
    store: &MasterStore,
    ids: &[PaymentId],
    events: &mpsc::Sender<Event>,
) -> Result<BatchHeader, NetError> {
    let started = tokio::time::Instant::now();
    let mut digest = BatchDigest::default();
    let mut totals: BTreeMap<Currency, u64> = BTreeMap::new();
    for id in ids {
        let item = store.batch_item(*id).map_err(store_err)?.ok_or_else(|| missing(*id))?;
        *totals.entry(item.amount.currency()).or_default() += item.amount.amount_minor();
        digest.update(&item);
    }
    let mut random = [0u8; 10];
    store.random(&mut random).map_err(store_err)?;
    let id = BatchId(PaymentId::mint(inflight_daemon::unix_ms_now(), random).to_bytes());
    let header = BatchHeader {
        id,
        aircraft: cfg.aircraft_id.clone(),
        flight: store.setting("flight").map_err(store_err)?.unwrap_or_else(|| cfg.flight_id.clone()),
        count: ids.len() as u32,
        totals: totals.into_iter().collect(),
        digest: digest.finish(),
    };
    let digested = started.elapsed();
    let (tx, rx) = oneshot::channel();
    events
        .send(Event::Seal { header: header.clone(), ids: ids.to_vec(), reply: tx })
        .await
        .map_err(|_| shutting_down())?;
    rx.await.map_err(|_| shutting_down())?.map_err(store_err)?;
    tracing::info!(
        batch = %header.id,
        count = header.count,
        totals = ?header.totals,
        digest_ms = digested.as_millis() as u64,
        seal_ms = (started.elapsed() - digested).as_millis() as u64,
        "batch sealed"
    );
    Ok(header)
}

fn store_err(e: inflight_store::StoreError) -> NetError {
    NetError::Connection(format!("store: {e}"))
}

fn missing(id: PaymentId) -> NetError {
    NetError::Connection(format!("payment {id} in a batch has no card data"))
}

/// Streams a batch, then collects its results and has them stored.
async fn send_batch(
    store: &MasterStore,
    header: &BatchHeader,
    ids: &[PaymentId],
    w: &mut FrameWriter,
    r: &mut FrameReader,
    events: &mpsc::Sender<Event>,
) -> Result<(), NetError> {
    let started = tokio::time::Instant::now();
    w.feed(&AircraftMsg::BatchBegin(header.clone())).await?;
    for (k, chunk) in ids.chunks(BATCH_CHUNK_MAX).enumerate() {
        let mut items = Vec::with_capacity(chunk.len());
        for id in chunk {
            items.push(store.batch_item(*id).map_err(store_err)?.ok_or_else(|| missing(*id))?);
        }
        w.feed(&AircraftMsg::BatchItems { batch: header.id, first_seq: (k * BATCH_CHUNK_MAX) as u32, items }).await?;
        if k == 0 {
            w.flush().await?;
            inflight_daemon::crash_point("master.mid_upload");
        }
    }
    w.send(&AircraftMsg::BatchEnd { batch: header.id }).await?;
    let mut results: Vec<AuthResult> = Vec::with_capacity(ids.len());
    loop {
        match r.recv::<IssuerMsg>().await? {
            Some(IssuerMsg::BatchResults { batch, first_seq, results: chunk })
                if batch == header.id && first_seq as usize == results.len() =>
            {
                for res in chunk {
                    if ids.get(results.len()) != Some(&res.id) {
                        return Err(NetError::Connection(format!("result for {} out of batch order", res.id)));
                    }
                    results.push(res);
                }
            }
            Some(IssuerMsg::BatchDone { batch, count })
                if batch == header.id && count as usize == ids.len() && results.len() == ids.len() =>
            {
                break
            }
            Some(IssuerMsg::BatchRefused { batch, reason }) if batch == header.id => {
                // Offering it again would be refused again and block every later batch: set it
                // aside, visible to the crew, and carry on with the rest.
                let (tx, rx) = oneshot::channel();
                events
                    .send(Event::Quarantine { batch: header.clone(), reason: reason.clone(), reply: tx })
                    .await
                    .map_err(|_| shutting_down())?;
                rx.await.map_err(|_| shutting_down())?.map_err(store_err)?;
                return Err(NetError::Connection(format!("batch {batch} refused and quarantined: {reason}")));
            }
            other => {
                return Err(NetError::Connection(format!("unexpected answer during batch {}: {other:?}", header.id)))
            }
        }
    }
    inflight_daemon::crash_point("master.after_batch_sent_before_results_stored");
    let (tx, rx) = oneshot::channel();
    events.send(Event::Results { batch: header.clone(), results, reply: tx }).await.map_err(|_| shutting_down())?;
    rx.await.map_err(|_| shutting_down())?.map_err(store_err)?;
    tracing::info!(batch = %header.id, count = header.count, elapsed_ms = started.elapsed().as_millis() as u64, "batch decided; results stored");
    Ok(())
}
