//! The ground link: a watcher that probes the issuer and decides up/down (with the crew's
//! override), and an uploader that, while the link is up, fetches the BIN list and sends the
//! consolidated batch, re-sending the same batch after any failure.
//!
//! Every decision of the upload (the batch header, the checks on the issuer's answers, when a
//! batch is quarantined) is `inflight_core::uploader::Uploader`'s; which batch goes next is the
//! aircraft actor's (`Aggregator::choose_next_batch`). This driver reads items from the store,
//! moves frames, and talks to the actor.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inflight_core::hotlist::{HotListError, HotSet};
use inflight_core::link::{LinkOverride, LinkWatcher};
use inflight_core::uploader::{NextBatch, Sealer, UploadError, UploadState, Uploader};
use inflight_net::framed::{framed, FrameReader, FrameWriter};
use inflight_net::{endpoint, Endpoint, NetError};
use inflight_store::{MasterStore, StoreError};
use inflight_wire::{
    AircraftMsg, BatchId, HotListUpdate, IssuerMsg, PaymentId, ReversalOutcome, BATCH_CHUNK_MAX,
    GROUND_FRAME_BYTES_MAX, GROUND_PROTOCOL_VERSION, MANIFEST_PART_BYTES_MAX,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::aircraft::Event;
use crate::config::MasterConfig;
use crate::metrics::MasterMetrics;

/// How often an idle upload session looks for new payments to send.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Why a ground session (an upload session or a probe) ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// QUIC, TLS or framing.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The master's store failed (reading items, or recording the batch or its results).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A payment in a batch has no card data left to send.
    #[error("payment {0} in a batch has no card data")]
    MissingItem(PaymentId),
    /// The issuer's answers to a batch do not fit it (`inflight_core::uploader`'s checks).
    #[error("issuer broke the batch protocol: {0}")]
    Protocol(#[from] UploadError),
    /// The issuer sent a frame that has no place here.
    #[error("unexpected frame from the issuer {during}: {frame}")]
    Unexpected {
        /// What the master was doing.
        during: &'static str,
        /// The frame (never card data: issuer frames carry none).
        frame: String,
    },
    /// The issuer refused the connection.
    #[error("issuer refused: {0}")]
    IssuerRefused(String),
    /// No answer in time.
    #[error("no answer from the issuer in time {0}")]
    Timeout(&'static str),
    /// The issuer refused the batch; it is quarantined.
    #[error("batch {batch} refused by the issuer and quarantined: {reason}")]
    Quarantined {
        /// The batch.
        batch: BatchId,
        /// The issuer's reason.
        reason: String,
    },
    /// The ground link went down.
    #[error("ground link went down")]
    LinkDown,
    /// The master is stopping.
    #[error("master shutting down")]
    ShuttingDown,
}

impl SessionError {
    fn unexpected(during: &'static str, frame: Option<IssuerMsg>) -> Self {
        let frame = match frame {
            Some(f) => format!("{f:?}"),
            None => "end of stream".into(),
        };
        SessionError::Unexpected { during, frame }
    }

    /// Logs why an upload session ended, at the level it deserves.
    fn log(&self) {
        const AGAIN: &str = "upload session ended; the same batch will be sent again";
        match self {
            SessionError::ShuttingDown => tracing::debug!(error = %self, "upload session ended"),
            SessionError::LinkDown | SessionError::Net(_) | SessionError::Timeout(_) => {
                tracing::warn!(error = %self, "{AGAIN}")
            }
            SessionError::Quarantined { .. } => {
                tracing::warn!(error = %self, "upload session ended; later payments go in new batches")
            }
            SessionError::Store(_)
            | SessionError::MissingItem(_)
            | SessionError::Protocol(_)
            | SessionError::Unexpected { .. }
            | SessionError::IssuerRefused(_) => tracing::error!(error = %self, "{AGAIN}"),
        }
    }
}

/// The link state shared by the watcher, the uploader and the admin API.
#[derive(Debug, Clone)]
pub struct LinkState {
    watcher: Arc<Mutex<LinkWatcher>>,
    up: watch::Sender<bool>,
    /// Counts the flaps (up to down).
    metrics: MasterMetrics,
}

impl LinkState {
    /// Starts down, with the crew's stored override.
    pub(crate) fn new(cfg: &MasterConfig, mode: LinkOverride, metrics: MasterMetrics) -> Self {
        let mut w = LinkWatcher::new(cfg.ground.probe_up_after, cfg.ground.probe_down_after);
        w.set_override(mode);
        let up = watch::Sender::new(w.is_up());
        Self { watcher: Arc::new(Mutex::new(w)), up, metrics }
    }

    fn with<R>(&self, f: impl FnOnce(&mut LinkWatcher) -> R) -> R {
        let mut w = self.watcher.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = f(&mut w);
        let was_up = self.up.send_replace(w.is_up());
        if was_up && !w.is_up() {
            self.metrics.link_flapped();
        }
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
async fn probe(cfg: &MasterConfig, ep: &GroundEndpoint, nonce: u64) -> Result<(), SessionError> {
    let g = &cfg.ground;
    let (conn, mut w, mut r) = open(cfg, ep).await?;
    let pong = tokio::time::timeout(g.timers.connect, async {
        w.send(&AircraftMsg::Ping { nonce }).await?;
        match r.recv::<IssuerMsg>().await? {
            Some(IssuerMsg::Pong { nonce: n }) if n == nonce => Ok(()),
            other => Err(SessionError::unexpected("answering a ping", other)),
        }
    })
    .await;
    conn.close(0u32.into(), b"probe done");
    pong.map_err(|_| SessionError::Timeout("to a ping"))?
}

/// Connects to the issuer and exchanges `Hello`s.
async fn open(
    cfg: &MasterConfig,
    ep: &GroundEndpoint,
) -> Result<(inflight_net::Connection, FrameWriter, FrameReader), SessionError> {
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
            Some(IssuerMsg::Error { message }) => Err(SessionError::IssuerRefused(message)),
            other => Err(SessionError::unexpected("as its first frame", other)),
        }
    })
    .await;
    match hello {
        Ok(Ok((w, r))) => Ok((conn, w, r)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SessionError::Timeout("to Hello")),
    }
}

/// While the link is up, keeps an upload session going; retries after failures. The
/// [`Uploader`] lives across sessions: a batch it holds is sent again, unchanged, whatever ended
/// the session.
pub async fn upload_loop(
    cfg: Arc<MasterConfig>,
    ep: GroundEndpoint,
    link: LinkState,
    store: Arc<MasterStore>,
    events: mpsc::Sender<Event>,
    metrics: MasterMetrics,
    cancel: CancellationToken,
) {
    let mut up = link.subscribe();
    let mut uploader = Uploader::new(cfg.aircraft_id.clone());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = up.wait_for(|u| *u) => if r.is_err() { return },
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => Err(SessionError::ShuttingDown),
            r = session(&cfg, &ep, &store, &events, &metrics, &mut uploader) => r,
            _ = up.wait_for(|u| !*u) => Err(SessionError::LinkDown),
        };
        if let Err(e) = result {
            uploader.on_failure();
            e.log();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(cfg.ground.upload_retry) => {}
        }
    }
}

/// Sends `ev` (built around a reply channel) to the actor and waits for its answer.
async fn ask<R>(events: &mpsc::Sender<Event>, ev: impl FnOnce(oneshot::Sender<R>) -> Event) -> Result<R, SessionError> {
    let (tx, rx) = oneshot::channel();
    events.send(ev(tx)).await.map_err(|_| SessionError::ShuttingDown)?;
    rx.await.map_err(|_| SessionError::ShuttingDown)
}

async fn session(
    cfg: &MasterConfig,
    ep: &GroundEndpoint,
    store: &MasterStore,
    events: &mpsc::Sender<Event>,
    metrics: &MasterMetrics,
    uploader: &mut Uploader,
) -> Result<(), SessionError> {
    let (conn, mut w, mut r) = open(cfg, ep).await?;
    let result = async {
        let mut last_fetch = None::<tokio::time::Instant>;
        let mut unknown_to_issuer = HashSet::new();
        loop {
            if last_fetch.is_none_or(|t| t.elapsed() >= cfg.ground.bin_list_refresh) {
                fetch_bin_list(cfg, &mut w, &mut r, events).await?;
                fetch_hot_list(cfg, &mut w, &mut r, events).await?;
                last_fetch = Some(tokio::time::Instant::now());
            }
            send_reversals(&mut w, &mut r, events, &mut unknown_to_issuer).await?;
            send_manifests(cfg, store, &mut w, &mut r).await?;
            match ask(events, |reply| Event::NextBatch { reply }).await? {
                NextBatch::Nothing => {
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
                NextBatch::Open(header, ids) => {
                    tracing::info!(batch = %header.id, count = header.count, "re-sending the open batch");
                    uploader.resume(header, ids);
                }
                NextBatch::Pending(ids) => {
                    let started = tokio::time::Instant::now();
                    seal(cfg, store, &ids, events, uploader).await?;
                    metrics.sealed(started.elapsed());
                }
            }
            if uploader.state() == UploadState::Sealing {
                // The uploader kept a batch it holds, never recorded: record it first.
                record(events, uploader).await?;
            }
            let started = tokio::time::Instant::now();
            send_batch(cfg, store, &mut w, &mut r, events, uploader).await?;
            metrics.uploaded(started.elapsed());
        }
    }
    .await;
    conn.close(0u32.into(), b"upload session over");
    result
}

async fn fetch_bin_list(
    cfg: &MasterConfig,
    w: &mut FrameWriter,
    r: &mut FrameReader,
    events: &mpsc::Sender<Event>,
) -> Result<(), SessionError> {
    let have_version = ask(events, |reply| Event::Status { reply }).await?.bin_list_version;
    w.send(&AircraftMsg::FetchBinList { have_version }).await?;
    match r.recv::<IssuerMsg>().await? {
        Some(IssuerMsg::BinList(None)) => Ok(()),
        Some(IssuerMsg::BinList(Some(signed))) => {
            match inflight_store::verify_bin_list(&cfg.ground.issuer_public_key, &signed) {
                Ok(list) => {
                    events
                        .send(Event::BinList { signed: Box::new(signed), list: Box::new(list) })
                        .await
                        .map_err(|_| SessionError::ShuttingDown)?;
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "the issuer's BIN list does not verify; keeping the current one");
                    Ok(())
                }
            }
        }
        other => Err(SessionError::unexpected("answering FetchBinList", other)),
    }
}

/// Fetches the hot-card list: a delta from the version held when the issuer can, else the
/// whole list. A delta that does not apply (the issuer's list was rebuilt, or it does not match
/// its signed digest) is followed by one request for the whole list; a list that does not
/// verify is not taken, and the one held stays in force.
async fn fetch_hot_list(
    cfg: &MasterConfig,
    w: &mut FrameWriter,
    r: &mut FrameReader,
    events: &mpsc::Sender<Event>,
) -> Result<(), SessionError> {
    let held = ask(events, |reply| Event::HotListHeld { reply }).await?;
    let key = &cfg.ground.issuer_public_key;
    let mut have_version = held.as_ref().map(HotSet::version);
    loop {
        w.send(&AircraftMsg::FetchHotList { have_version }).await?;
        let update = match r.recv::<IssuerMsg>().await? {
            Some(IssuerMsg::HotList(u)) => u,
            other => return Err(SessionError::unexpected("answering FetchHotList", other)),
        };
        let (kind, taken) = match (&update, &held) {
            (HotListUpdate::Full(list), _) => ("full", HotSet::verify(key, list)),
            (HotListUpdate::Delta { base_version, head, added }, Some(h)) => {
                ("delta", h.apply_delta(key, *base_version, head, added))
            }
            (HotListUpdate::Delta { .. }, None) => {
                ("delta", Err(HotListError::Malformed("a delta, but no list is held to apply it to".into())))
            }
        };
        match taken {
            Ok(set) => {
                if held.as_ref().map(HotSet::version) == Some(set.version()) {
                    tracing::debug!(kind, version = set.version(), "hot-card list renewed");
                } else {
                    tracing::info!(kind, version = set.version(), entries = set.len(), "hot-card list fetched");
                }
                events.send(Event::HotList(Box::new(set))).await.map_err(|_| SessionError::ShuttingDown)?;
                return Ok(());
            }
            Err(e) if have_version.is_some() => {
                tracing::warn!(error = %e, kind, "the issuer's hot-card update does not apply; asking for the whole list");
                have_version = None;
            }
            Err(e) => {
                tracing::error!(error = %e, kind, "the issuer's hot-card list does not verify; keeping the current one");
                return Ok(());
            }
        }
    }
}

/// Sends the reversals due (sale apps' voids of payments the issuer has decided), one chunk at
/// a time, and has the answers stored. An id the issuer does not know is not asked again in
/// this session (it stays requested, for the crew).
async fn send_reversals(
    w: &mut FrameWriter,
    r: &mut FrameReader,
    events: &mpsc::Sender<Event>,
    unknown_to_issuer: &mut HashSet<PaymentId>,
) -> Result<(), SessionError> {
    loop {
        let skip = unknown_to_issuer.clone();
        let ids = ask(events, |reply| Event::ReversalsDue { skip, reply }).await?;
        if ids.is_empty() {
            return Ok(());
        }
        w.send(&AircraftMsg::Reverse { ids: ids.clone() }).await?;
        let results = match r.recv::<IssuerMsg>().await? {
            Some(IssuerMsg::Reversed { results }) => results,
            other => return Err(SessionError::unexpected("answering Reverse", other)),
        };
        if results.len() != ids.len() || results.iter().zip(&ids).any(|(res, id)| res.id != *id) {
            return Err(SessionError::Unexpected {
                during: "answering Reverse",
                frame: format!("{} results for {} reversals, or out of order", results.len(), ids.len()),
            });
        }
        unknown_to_issuer
            .extend(results.iter().filter(|res| res.outcome == ReversalOutcome::Unknown).map(|res| res.id));
        ask(events, |reply| Event::Reversed { results, reply }).await??;
    }
}

/// Sends every closed flight's manifest queued for the issuer (`close-flight --send`), in parts,
/// and stores each acknowledgement once its signature verifies with the issuer's key; the
/// manifest then leaves the queue. An acknowledgement that does not verify leaves it queued
/// (sent again at the next session) and ends this one.
async fn send_manifests(
    cfg: &MasterConfig,
    store: &MasterStore,
    w: &mut FrameWriter,
    r: &mut FrameReader,
) -> Result<(), SessionError> {
    for (flight, json) in store.manifests_to_send()? {
        // Signed with the aircraft's certificate key: the issuer checks it against the certificate
        // the connection presented.
        let signature = inflight_net::identity::sign_manifest(&cfg.key_file, &json)?;
        let parts: Vec<&[u8]> = json.chunks(MANIFEST_PART_BYTES_MAX).collect();
        let count = parts.len().max(1);
        for k in 0..count {
            let bytes = parts.get(k).map_or_else(Vec::new, |p| p.to_vec());
            let last = k + 1 == count;
            let signature = if last { signature.clone() } else { Vec::new() };
            let msg = AircraftMsg::ManifestPart { flight: flight.clone(), part: k as u32, last, bytes, signature };
            w.feed(&msg).await?;
        }
        w.flush().await?;
        let ack = match r.recv::<IssuerMsg>().await? {
            Some(IssuerMsg::ManifestAck(ack)) => ack,
            other => return Err(SessionError::unexpected("answering a manifest", other)),
        };
        if !inflight_store::verify_manifest_ack(&cfg.ground.issuer_public_key, &ack) {
            return Err(SessionError::Unexpected {
                during: "answering a manifest",
                frame: "an acknowledgement whose signature does not verify with the issuer's key".into(),
            });
        }
        let found: serde_json::Value = serde_json::from_slice(&ack.body).unwrap_or_default();
        let mismatches = found["mismatches"].as_array().map_or(0, Vec::len);
        store.durable(store.store_manifest_ack(&flight, &ack)?).await?;
        if mismatches > 0 || found.get("error").is_some() {
            tracing::warn!(%flight, mismatches, "the issuer's acknowledgement of the flight's manifest lists differences");
        } else {
            tracing::info!(%flight, "the issuer acknowledged the flight's manifest: no difference");
        }
    }
    Ok(())
}

/// Has the uploader build the header of a new batch from the pending payments `ids` (streamed
/// from the store), then has it recorded durably.
async fn seal(
    cfg: &MasterConfig,
    store: &MasterStore,
    ids: &[PaymentId],
    events: &mpsc::Sender<Event>,
    uploader: &mut Uploader,
) -> Result<(), SessionError> {
    let started = tokio::time::Instant::now();
    let mut sealer = Sealer::new();
    if !uploader.is_unfinished() {
        for id in ids {
            sealer.add(&store.batch_item(*id)?.ok_or(SessionError::MissingItem(*id))?);
        }
    }
    let mut random = [0u8; 10];
    store.random(&mut random)?;
    let id = BatchId(PaymentId::mint(inflight_daemon::unix_ms_now(), random).to_bytes());
    let flight = store.setting("flight")?.unwrap_or_else(|| cfg.flight_id.clone());
    uploader.seal_with(id, flight, sealer);
    let digested = started.elapsed();
    record(events, uploader).await?;
    let header = uploader.header().expect("sealed");
    tracing::info!(
        batch = %header.id,
        count = header.count,
        totals = ?header.totals,
        digest_ms = digested.as_millis() as u64,
        seal_ms = (started.elapsed() - digested).as_millis() as u64,
        "batch sealed"
    );
    inflight_daemon::crash_point("master.after_seal");
    Ok(())
}

/// Has the actor record the uploader's batch durably (header and ids).
async fn record(events: &mpsc::Sender<Event>, uploader: &mut Uploader) -> Result<(), SessionError> {
    let header = uploader.header().cloned().expect("a batch being sealed");
    let ids = uploader.ids().to_vec();
    ask(events, |reply| Event::Seal { header: Box::new(header), ids, reply }).await??;
    uploader.on_sealed();
    Ok(())
}

/// Streams the uploader's batch, then collects its results and has them stored.
async fn send_batch(
    cfg: &MasterConfig,
    store: &MasterStore,
    w: &mut FrameWriter,
    r: &mut FrameReader,
    events: &mpsc::Sender<Event>,
    uploader: &mut Uploader,
) -> Result<(), SessionError> {
    let started = tokio::time::Instant::now();
    let header = uploader.header().cloned().expect("a batch to send");
    debug_assert_eq!(uploader.state(), UploadState::Sending);
    w.feed(&AircraftMsg::BatchBegin(header.clone())).await?;
    // Late is judged against the seal, fixed for the batch: every re-send marks the same items.
    let sealed_unix_ms = header.id.sealed_unix_ms();
    let mut late = 0u32;
    for (k, chunk) in uploader.ids().chunks(BATCH_CHUNK_MAX).enumerate() {
        let mut items = Vec::with_capacity(chunk.len());
        for id in chunk {
            let mut item = store.batch_item(*id)?.ok_or(SessionError::MissingItem(*id))?;
            item.late = cfg.deadline.is_late(item.captured_unix_ms, sealed_unix_ms);
            late += u32::from(item.late);
            items.push(item);
        }
        w.feed(&AircraftMsg::BatchItems { batch: header.id, first_seq: (k * BATCH_CHUNK_MAX) as u32, items }).await?;
        if k == 0 {
            w.flush().await?;
            inflight_daemon::crash_point("master.mid_upload");
        }
    }
    w.send(&AircraftMsg::BatchEnd { batch: header.id }).await?;
    if late > 0 {
        tracing::warn!(
            batch = %header.id,
            late,
            count = header.count,
            window_secs = cfg.deadline.window_ms() / 1000,
            "batch carries payments sealed after their deferred-authorization deadline, marked late"
        );
    }
    uploader.on_sent();
    let results = loop {
        match r.recv::<IssuerMsg>().await? {
            Some(IssuerMsg::BatchResults { batch, first_seq, results }) => {
                uploader.on_results(batch, first_seq, results)?
            }
            Some(IssuerMsg::BatchDone { batch, count }) => break uploader.on_done(batch, count)?,
            Some(IssuerMsg::BatchRefused { batch, reason }) => {
                // Offering it again would be refused again and block every later batch: set it
                // aside, visible to the crew, and carry on with the rest.
                let refused = uploader.on_refused(batch, reason.clone())?;
                ask(events, |reply| Event::Quarantine { batch: Box::new(refused), reason: reason.clone(), reply })
                    .await??;
                return Err(SessionError::Quarantined { batch, reason });
            }
            other => return Err(SessionError::unexpected("during a batch", other)),
        }
    };
    inflight_daemon::crash_point("master.after_batch_sent_before_results_stored");
    ask(events, |reply| Event::Results { batch: Box::new(header.clone()), results, reply }).await??;
    tracing::info!(batch = %header.id, count = header.count, elapsed_ms = started.elapsed().as_millis() as u64, "batch decided; results stored");
    Ok(())
}
