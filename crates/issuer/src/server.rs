//! One aircraft's connection: authenticate, answer probes and BIN list fetches, authorize
//! batches exactly once.

use std::sync::Arc;

use inflight_net::framed::{framed, FrameReader, FrameWriter};
use inflight_net::{identity, Connection, NetError};
use inflight_store::{BatchDigest, BatchStart, IssuerStore};
use inflight_wire::{
    AircraftMsg, BatchHeader, BatchItem, BinList, IssuerMsg, SignedBinList, BATCH_CHUNK_MAX, BATCH_PAYMENTS_MAX,
    GROUND_FRAME_BYTES_MAX, GROUND_PROTOCOL_VERSION,
};

use crate::config::IssuerConfig;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// Configuration.
    pub cfg: IssuerConfig,
    /// The store.
    pub store: Arc<IssuerStore>,
    /// The programme (the list's rules decide authorizations too).
    pub programme: BinList,
    /// The list as published: the programme with its current validity window, signed; renewed
    /// (same version, fresh window) by a task in `run`.
    pub signed: std::sync::Mutex<SignedBinList>,
    /// Batch items held in memory across every connection, at most [`ITEMS_IN_MEMORY_MAX`]: a
    /// batch takes its header's count before its items are read, so a fleet uploading at once
    /// queues instead of holding `AIRCRAFT_MAX` batches (QUIC flow control holds the rest back
    /// at the sender).
    pub items_budget: tokio::sync::Semaphore,
}

/// Batch items the issuer holds in memory at once, across all aircraft: one largest batch
/// (about 200 bytes each in memory, so about 200 MB). A batch is held whole until it is checked
/// against its header; streaming it to the store instead is part of issue 11.
pub const ITEMS_IN_MEMORY_MAX: usize = BATCH_PAYMENTS_MAX as usize;

// No deadline on a whole batch: a sealed batch cannot be split, and a slow uplink that keeps
// sending must be allowed to finish (a total deadline made a 100k batch on a 200 kbit/s link
// start over forever). Progress is what is required: a frame at least every
// `timers.batch_frame_idle_ms` (30 s by default), receiving and sending results alike.

/// Serves one aircraft until it leaves or breaks the protocol.
pub async fn serve(shared: Arc<Shared>, conn: Connection) {
    let remote = conn.remote_address();
    let hello = tokio::time::timeout(shared.cfg.hello_timeout, handshake(&shared, &conn)).await;
    let (aircraft, mut w, mut r) = match hello {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::warn!(%remote, error = %e, "aircraft refused");
            conn.close(1u32.into(), b"refused");
            return;
        }
        Err(_) => {
            conn.close(1u32.into(), b"no Hello in time");
            return;
        }
    };
    tracing::info!(%aircraft, %remote, "aircraft connected");
    match session(&shared, &aircraft, &mut w, &mut r).await {
        Ok(()) | Err(NetError::Connection(_)) => tracing::debug!(%aircraft, "aircraft disconnected"),
        Err(e) => {
            tracing::warn!(%aircraft, error = %e, "closing aircraft connection");
            let _ = w.send(&IssuerMsg::Error { message: e.to_string() }).await;
            w.finish();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), w.stream_mut().stopped()).await;
        }
    }
    conn.close(0u32.into(), b"bye");
}

async fn handshake(shared: &Shared, conn: &Connection) -> Result<(String, FrameWriter, FrameReader), NetError> {
    let leaf = identity::peer_leaf(conn)?;
    let (s, r) = conn.accept_bi().await.map_err(|e| NetError::Connection(e.to_string()))?;
    let (mut w, mut r) = framed(s, r, GROUND_FRAME_BYTES_MAX);
    let (version, aircraft) = match r.recv::<AircraftMsg>().await? {
        Some(AircraftMsg::Hello { version, aircraft }) => (version, aircraft),
        _ => return Err(NetError::Connection("first frame must be Hello".into())),
    };
    let refusal = if version != GROUND_PROTOCOL_VERSION {
        Some(format!("protocol version {version} not supported; this issuer speaks {GROUND_PROTOCOL_VERSION}"))
    } else {
        // The claimed name is the peer's text, unchecked until the certificate matches it: it is
        // escaped (newlines, control characters) so it cannot forge a log line, and the check's
        // own error (which repeats it raw) is not used.
        identity::check_aircraft(&leaf, &aircraft).err().map(|_| {
            format!("claimed aircraft \"{}\": the certificate does not name it", inflight_daemon::log_escape(&aircraft))
        })
    };
    if let Some(message) = refusal {
        let _ = w.send(&IssuerMsg::Error { message: message.clone() }).await;
        w.finish();
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), w.stream_mut().stopped()).await;
        return Err(NetError::Identity(message));
    }
    w.send(&IssuerMsg::Hello { version: GROUND_PROTOCOL_VERSION, issuer: shared.cfg.issuer_name.clone() }).await?;
    Ok((aircraft, w, r))
}

async fn session(shared: &Shared, aircraft: &str, w: &mut FrameWriter, r: &mut FrameReader) -> Result<(), NetError> {
    loop {
        match r.recv::<AircraftMsg>().await? {
            None => return Ok(()),
            Some(AircraftMsg::Ping { nonce }) => w.send(&IssuerMsg::Pong { nonce }).await?,
            Some(AircraftMsg::FetchBinList { have_version }) => {
                // The same version is sent too: it may be a renewal (a later window), which the
                // master prefers to what it holds (`inflight_core::binlist::prefer`).
                let newer = have_version.is_none_or(|v| v <= shared.programme.version);
                let signed =
                    newer.then(|| shared.signed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone());
                w.send(&IssuerMsg::BinList(signed)).await?;
            }
            Some(AircraftMsg::BatchBegin(header)) => batch(shared, aircraft, header, w, r).await?,
            Some(other) => {
                return Err(NetError::Connection(format!("unexpected {} outside a batch", msg_name(&other))))
            }
        }
    }
}

fn msg_name(m: &AircraftMsg) -> &'static str {
    match m {
        AircraftMsg::Hello { .. } => "Hello",
        AircraftMsg::Ping { .. } => "Ping",
        AircraftMsg::FetchBinList { .. } => "FetchBinList",
        AircraftMsg::BatchBegin(_) => "BatchBegin",
        AircraftMsg::BatchItems { .. } => "BatchItems",
        AircraftMsg::BatchEnd { .. } => "BatchEnd",
    }
}

/// Receives a whole batch, checks it against its header, decides it (once per payment id),
/// makes every decision durable, and only then streams the results back.
async fn batch(
    shared: &Shared,
    aircraft: &str,
    header: BatchHeader,
    w: &mut FrameWriter,
    r: &mut FrameReader,
) -> Result<(), NetError> {
    let store = &shared.store;
    let id = header.id;
    if header.count == 0 || header.count > BATCH_PAYMENTS_MAX || header.aircraft != aircraft {
        return refuse(w, &header, "header count or aircraft is invalid").await;
    }
    let (start, _) = store.begin_batch(&header).map_err(|e| NetError::Connection(e.to_string()))?;
    tracing::info!(%aircraft, batch = %id, count = header.count, ?start, "batch begins");
    if start == BatchStart::Conflict {
        return refuse(w, &header, "batch id already used with different content").await;
    }
    // The count is at most BATCH_PAYMENTS_MAX = ITEMS_IN_MEMORY_MAX (checked above), so this
    // succeeds once earlier batches are done; the semaphore is never closed. A batch that cannot
    // get its share in time is turned away (the aircraft sends it again later): waiting forever
    // behind a stalled batch is what the deadline below prevents.
    let (idle, budget_wait) = (shared.cfg.batch_frame_idle, shared.cfg.batch_budget_wait);
    let held = match tokio::time::timeout(budget_wait, shared.items_budget.acquire_many(header.count)).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => return Err(NetError::Connection("issuer shutting down".into())),
        Err(_) => {
            tracing::warn!(%aircraft, batch = %id, count = header.count, "issuer busy with other batches; turned away");
            return Err(NetError::Connection(format!("issuer busy: batch {id} not received, send it again later")));
        }
    };
    // A batch holds its share of memory only while its items keep coming.
    // Items are held until the whole batch is checked against its header: a batch that does not
    // match is refused with nothing decided under its id.
    let mut items: Vec<BatchItem> = Vec::with_capacity(header.count.min(65_536) as usize);
    let mut digest = BatchDigest::default();
    loop {
        let next = match tokio::time::timeout(idle, r.recv::<AircraftMsg>()).await {
            Ok(frame) => frame?,
            Err(_) => {
                tracing::warn!(%aircraft, batch = %id, received = items.len(), count = header.count, "batch items stopped coming; dropped");
                return Err(NetError::Connection(format!(
                    "batch {id}: items stopped coming ({} of {} received)",
                    items.len(),
                    header.count
                )));
            }
        };
        match next {
            Some(AircraftMsg::BatchItems { batch, first_seq, items: chunk }) if batch == id => {
                if first_seq as usize != items.len()
                    || chunk.len() > BATCH_CHUNK_MAX
                    || items.len() + chunk.len() > header.count as usize
                {
                    return refuse(w, &header, "items out of order or beyond the header's count").await;
                }
                for it in &chunk {
                    digest.update(it);
                }
                items.extend(chunk);
            }
            Some(AircraftMsg::BatchEnd { batch }) if batch == id => break,
            Some(other) => {
                return Err(NetError::Connection(format!("unexpected {} inside batch {id}", msg_name(&other))))
            }
            None => return Err(NetError::Connection(format!("stream ended inside batch {id}"))),
        }
    }
    if items.len() != header.count as usize || digest.finish() != header.digest {
        return refuse(w, &header, "items do not match the header's count and digest").await;
    }
    // A payment id twice in one batch would be decided in one chunk and refused in another.
    let mut ids = std::collections::HashSet::with_capacity(items.len());
    if !items.iter().all(|i| ids.insert(i.id)) {
        return refuse(w, &header, "a payment id appears twice in the batch").await;
    }
    // The header's digest covers no card data (see `BatchDigest`): each payment id already
    // decided is compared with what was decided, under this issuer's own key.
    if let Some(payment) = store.first_conflict(&items).map_err(|e| NetError::Connection(e.to_string()))? {
        tracing::error!(%aircraft, batch = %id, %payment, "payment id already decided with other content");
        let reason = format!("payment {payment} was already decided with other content");
        return refuse(w, &header, &reason).await;
    }
    if start != BatchStart::Done {
        let chunks = items.len().div_ceil(BATCH_CHUNK_MAX);
        let bounds = inflight_core::authorize::CaptureBounds::at_receipt(
            inflight_daemon::unix_ms_now(),
            shared.cfg.capture_age_max.as_millis() as u64,
        );
        for (k, chunk) in items.chunks(BATCH_CHUNK_MAX).enumerate() {
            let t = store
                .decide_chunk(id, (k * BATCH_CHUNK_MAX) as u32, chunk, &shared.programme, bounds)
                .map_err(|e| NetError::Connection(e.to_string()))?;
            if k + 1 < chunks && inflight_daemon::crash_armed("issuer.mid_decide") {
                // The crash must leave the batch half decided *on disk*, the case the "already
                // decided" guard exists for; without this the flusher may not have run yet.
                store.durable(t).await.map_err(|e| NetError::Connection(e.to_string()))?;
                inflight_daemon::crash_point("issuer.mid_decide");
            }
        }
        store.finish_batch(&header).map_err(|e| NetError::Connection(e.to_string()))?;
    }
    // Every answer waits for durability, also a known batch's: another connection may have
    // written its decisions and not yet seen them fsynced.
    store.durable(store.latest()).await.map_err(|e| NetError::Connection(e.to_string()))?;
    // Decided and durable: the items and their memory share are no longer needed (results are
    // read from the store), so a peer that stops reading results holds nothing of the budget.
    drop(items);
    drop(held);
    tracing::info!(%aircraft, batch = %id, count = header.count, ?start, "batch decided and durable");
    inflight_daemon::crash_point("issuer.after_results_stored");
    let results = store.results(id).map_err(|e| NetError::Connection(e.to_string()))?;
    let stalled = || NetError::Connection(format!("batch {id}: the aircraft stopped reading its results"));
    for (k, chunk) in results.chunks(BATCH_CHUNK_MAX).enumerate() {
        let frame =
            IssuerMsg::BatchResults { batch: id, first_seq: (k * BATCH_CHUNK_MAX) as u32, results: chunk.to_vec() };
        tokio::time::timeout(idle, w.feed(&frame)).await.map_err(|_| stalled())??;
    }
    let done = IssuerMsg::BatchDone { batch: id, count: results.len() as u32 };
    tokio::time::timeout(idle, w.send(&done)).await.map_err(|_| stalled())??;
    inflight_daemon::crash_point("issuer.after_answer_sent");
    Ok(())
}

async fn refuse(w: &mut FrameWriter, header: &BatchHeader, reason: &str) -> Result<(), NetError> {
    tracing::error!(batch = %header.id, reason, "batch refused");
    w.send(&IssuerMsg::BatchRefused { batch: header.id, reason: reason.into() }).await?;
    // Let the refusal reach the master before the connection closes.
    w.finish();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), w.stream_mut().stopped()).await;
    Err(NetError::Connection(format!("batch {} refused: {reason}", header.id)))
}
