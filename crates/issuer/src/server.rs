//! One aircraft's connection: authenticate, answer probes and BIN list fetches, authorize
//! batches exactly once.

use std::sync::Arc;

use inflight_core::issuer::{check_header, BatchRefusal, IssuerBatch};
use inflight_net::framed::{framed, FrameReader, FrameWriter};
use inflight_net::{identity, Connection, NetError};
use inflight_store::{BinListSigner, IssuerStore, StoreError};
use inflight_wire::{
    AircraftMsg, AuthOutcome, BatchHeader, BatchId, BinList, DeclineReason, HotEntry, HotList, HotListUpdate,
    IssuerMsg, SignedBinList, SignedManifestAck, BATCH_CHUNK_MAX, BATCH_PAYMENTS_MAX, GROUND_FRAME_BYTES_MAX,
    GROUND_PROTOCOL_VERSION, HOT_ENTRIES_MAX, MANIFEST_BYTES_MAX, MANIFEST_PART_BYTES_MAX,
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
    /// The issuer master key that verifies chip cryptograms (`chip_key_file`), if configured.
    pub chip_key: Option<inflight_core::chip::IssuerMasterKey>,
    /// The list as published: the programme with its current validity window, signed; renewed
    /// (same version, fresh window) by a task in `run`.
    pub signed: std::sync::Mutex<SignedBinList>,
    /// Batch items held in memory across every connection, at most [`ITEMS_IN_MEMORY_MAX`]: a
    /// batch takes its header's count before its items are read, so a fleet uploading at once
    /// queues instead of holding `AIRCRAFT_MAX` batches (QUIC flow control holds the rest back
    /// at the sender).
    pub items_budget: tokio::sync::Semaphore,
    /// The issuer's metrics.
    pub metrics: crate::metrics::IssuerMetrics,
    /// The list signing key: the hot-card list's head is signed at each fetch (with a fresh
    /// validity window), the BIN list by the renewal task.
    pub signer: Arc<BinListSigner>,
}

/// Batch items the issuer holds in memory at once, across all aircraft: one largest batch
/// (about 200 bytes each in memory, so about 200 MB). A batch is held whole until it is checked
/// against its header; streaming it to the store instead is part of issue 11.
pub const ITEMS_IN_MEMORY_MAX: usize = BATCH_PAYMENTS_MAX as usize;

// No deadline on a whole batch: a sealed batch cannot be split, and a slow uplink that keeps
// sending must be allowed to finish (a total deadline made a 100k batch on a 200 kbit/s link
// start over forever). Progress is what is required: a frame at least every
// `timers.batch_frame_idle_ms` (30 s by default), receiving and sending results alike.

/// Serves one aircraft until it leaves or breaks the protocol, or, between two exchanges, until
/// the issuer stops (`cancel`): a batch already begun is finished within the shutdown grace.
pub async fn serve(shared: Arc<Shared>, conn: Connection, cancel: tokio_util::sync::CancellationToken) {
    let remote = conn.remote_address();
    let hello = tokio::time::timeout(shared.cfg.hello_timeout, handshake(&shared, &conn)).await;
    let (aircraft, mut w, mut r) = match hello {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::warn!(%remote, error = %e, "aircraft refused");
            inflight_net::framed::close_after_final(&conn, 1u32.into(), b"refused").await;
            return;
        }
        Err(_) => {
            conn.close(1u32.into(), b"no Hello in time");
            return;
        }
    };
    tracing::info!(%aircraft, %remote, "aircraft connected");
    let _connected = shared.metrics.aircraft_connected();
    // The certificate the handshake verified: it checks the aircraft's signature on a manifest.
    let leaf = identity::peer_leaf(&conn).ok();
    match session(&shared, &aircraft, leaf.as_ref(), &mut w, &mut r, &cancel).await {
        Ok(()) => tracing::debug!(%aircraft, "aircraft disconnected"),
        Err(e) => {
            e.log(&aircraft);
            if matches!(e, SessionError::Refused { .. }) {
                shared.metrics.batch_refused();
            }
            if let Some(frame) = e.answer() {
                // Bounded: an aircraft that stopped reading must not hold this task.
                w.send_final(&frame).await;
                // Shutting down, the issuer does not wait for the aircraft to close: the drain's
                // grace is for batches, and the aircraft learns it from the frame or the close.
                if !matches!(e, SessionError::ShuttingDown) {
                    return inflight_net::framed::close_after_final(&conn, 0u32.into(), b"bye").await;
                }
            }
        }
    }
    conn.close(0u32.into(), b"bye");
}

/// Why an aircraft's session ended, other than the aircraft leaving: each is logged at its own
/// level and, but for a peer that went away, told to the aircraft.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The connection broke or the peer sent a frame that does not decode. A broken connection
    /// (`NetError::Connection`) is the aircraft going away: a debug line, no answer.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The issuer's store failed (I/O, a failed fsync, a corrupt record): an error, and the
    /// aircraft is told to send the batch again later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The aircraft broke the ground protocol (a frame out of place).
    #[error("{0}")]
    Protocol(String),
    /// The batch was refused ([`BatchRefusal`]): the aircraft quarantines it.
    #[error("batch {batch} refused: {refusal}")]
    Refused {
        /// The batch.
        batch: BatchId,
        /// Why.
        refusal: BatchRefusal,
    },
    /// Other batches hold the issuer's batch memory: this one was not received.
    #[error("issuer busy: batch {0} not received, send it again later")]
    Busy(BatchId),
    /// The aircraft stopped sending items, or stopped reading results.
    #[error("batch {batch}: {what}")]
    Stalled {
        /// The batch.
        batch: BatchId,
        /// What stopped.
        what: String,
    },
    /// The issuer is stopping.
    #[error("issuer shutting down")]
    ShuttingDown,
}

impl SessionError {
    /// What the aircraft is sent before the connection closes, if anything.
    fn answer(&self) -> Option<IssuerMsg> {
        let error = |message: String| Some(IssuerMsg::Error { message });
        match self {
            SessionError::Net(NetError::Connection(_)) => None,
            SessionError::Refused { batch, refusal } => {
                Some(IssuerMsg::BatchRefused { batch: *batch, reason: refusal.reason() })
            }
            // The store's own text names paths and records: it is logged here, not sent.
            SessionError::Store(_) => {
                error("issuer storage failure: the batch was not answered; send it again later".into())
            }
            e => error(e.to_string()),
        }
    }

    /// Logs the end of the session at the level it deserves.
    fn log(&self, aircraft: &str) {
        match self {
            SessionError::Net(NetError::Connection(e)) => {
                tracing::debug!(%aircraft, error = %e, "aircraft disconnected")
            }
            SessionError::Refused { batch, refusal } => {
                tracing::error!(%aircraft, %batch, reason = %refusal, "batch refused")
            }
            SessionError::Store(e) => {
                tracing::error!(%aircraft, error = %e, "storage failure; closing aircraft connection")
            }
            SessionError::ShuttingDown => {
                tracing::info!(%aircraft, "issuer shutting down; closing aircraft connection")
            }
            SessionError::Net(_) | SessionError::Protocol(_) | SessionError::Busy(_) | SessionError::Stalled { .. } => {
                tracing::warn!(%aircraft, error = %self, "closing aircraft connection")
            }
        }
    }
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
        w.send_final(&IssuerMsg::Error { message: message.clone() }).await;
        return Err(NetError::Identity(message));
    }
    w.send(&IssuerMsg::Hello { version: GROUND_PROTOCOL_VERSION, issuer: shared.cfg.issuer_name.clone() }).await?;
    Ok((aircraft, w, r))
}

async fn session(
    shared: &Shared,
    aircraft: &str,
    leaf: Option<&identity::PeerCertificate>,
    w: &mut FrameWriter,
    r: &mut FrameReader,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), SessionError> {
    // A manifest being received: its flight, the next part expected, the bytes so far.
    let mut manifest: Option<(String, u32, Vec<u8>)> = None;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(SessionError::ShuttingDown),
            next = r.recv::<AircraftMsg>() => next,
        };
        match next? {
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
            Some(AircraftMsg::FetchHotList { have_version }) => {
                w.send(&IssuerMsg::HotList(hot_list_update(shared, have_version)?)).await?;
            }
            Some(AircraftMsg::BatchBegin(header)) => batch(shared, aircraft, header, w, r).await?,
            Some(AircraftMsg::Reverse { ids }) => {
                if ids.is_empty() || ids.len() > BATCH_CHUNK_MAX {
                    return Err(SessionError::Protocol(format!(
                        "Reverse with {} ids (1 to {BATCH_CHUNK_MAX})",
                        ids.len()
                    )));
                }
                let (results, ticket) = shared.store.reverse(&ids, aircraft)?;
                // Answered only once every reversal (and its released amount) is durable.
                shared.store.durable(ticket).await?;
                for res in &results {
                    tracing::info!(%aircraft, payment = %res.id, outcome = ?res.outcome, "reversal");
                }
                w.send(&IssuerMsg::Reversed { results }).await?;
            }
            Some(AircraftMsg::ManifestPart { flight, part, last, bytes, signature }) => {
                let (f, next, mut buf) = manifest.take().unwrap_or_else(|| (flight.clone(), 0, Vec::new()));
                if f != flight || part != next || bytes.len() > MANIFEST_PART_BYTES_MAX {
                    return Err(SessionError::Protocol(format!(
                        "manifest part {part} out of order or over {MANIFEST_PART_BYTES_MAX} bytes"
                    )));
                }
                if buf.len() + bytes.len() > MANIFEST_BYTES_MAX {
                    return Err(SessionError::Protocol(format!("a manifest over {MANIFEST_BYTES_MAX} bytes")));
                }
                buf.extend_from_slice(&bytes);
                if !last {
                    manifest = Some((flight, next + 1, buf));
                    continue;
                }
                let signed = leaf.is_some_and(|l| identity::verify_manifest(l, &buf, &signature));
                let ack = manifest_ack(shared, aircraft, buf, signed).await?;
                w.send(&IssuerMsg::ManifestAck(ack)).await?;
            }
            Some(other) => {
                return Err(SessionError::Protocol(format!("unexpected {} outside a batch", msg_name(&other))))
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
        AircraftMsg::Reverse { .. } => "Reverse",
        AircraftMsg::FetchHotList { .. } => "FetchHotList",
        AircraftMsg::ManifestPart { .. } => "ManifestPart",
    }
}

/// The issuer's signed answer to a closed flight's manifest: what it finds comparing it with its
/// decisions (the same comparison as `inflight-issuer reconcile`), or why it could not read it.
/// Nothing is stored or changed: asked again, it answers again from its ledger.
async fn manifest_ack(
    shared: &Shared,
    aircraft: &str,
    json: Vec<u8>,
    signed: bool,
) -> Result<SignedManifestAck, SessionError> {
    let store = shared.store.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, String> {
        let m = crate::parse_manifest(&json)?;
        let ledger: Vec<serde_json::Value> =
            store.ledger().map_err(|e| e.to_string())?.iter().map(crate::ledger_json).collect();
        crate::reconcile_with(&m, &ledger)
    })
    .await
    .map_err(|e| SessionError::Protocol(format!("manifest check failed: {e}")))?;
    let mut body = match found {
        Ok(v) => v,
        Err(detail) => serde_json::json!({ "error": detail }),
    };
    body["aircraft"] = serde_json::json!(aircraft);
    // Signed by the key of the certificate this connection presented (the aircraft's own).
    body["manifest_signature_valid"] = serde_json::json!(signed);
    body["acknowledged_unix_ms"] = serde_json::json!(inflight_daemon::unix_ms_now());
    let mismatches = body["mismatches"].as_array().map_or(0, Vec::len);
    tracing::info!(%aircraft, flight = body["flight"].as_str().unwrap_or("?"), mismatches, "manifest acknowledged");
    Ok(shared.signer.sign_manifest_ack(serde_json::to_vec(&body).unwrap_or_default()))
}

/// Receives a whole batch, has the batch machine ([`IssuerBatch`]) check it against its header,
/// decides it (once per payment id, [`inflight_core::issuer::decide`] inside the store's
/// transactions), makes every decision durable, and only then streams the results back. This
/// moves frames, runs the timers, holds the memory budget and writes the store; every check is
/// the machine's.
async fn batch(
    shared: &Shared,
    aircraft: &str,
    header: BatchHeader,
    w: &mut FrameWriter,
    r: &mut FrameReader,
) -> Result<(), SessionError> {
    let store = &shared.store;
    let id = header.id;
    let refused = |refusal: BatchRefusal| SessionError::Refused { batch: id, refusal };
    // Checked before the store records anything of it.
    check_header(&header, aircraft).map_err(refused)?;
    let (start, _) = store.begin_batch(&header)?;
    tracing::info!(%aircraft, batch = %id, count = header.count, ?start, "batch begins");
    let mut machine = IssuerBatch::begin(header, aircraft, start).map_err(refused)?;
    let count = machine.header().count;
    // The count is at most BATCH_PAYMENTS_MAX = ITEMS_IN_MEMORY_MAX (checked above), so this
    // succeeds once earlier batches are done; the semaphore is never closed. A batch that cannot
    // get its share in time is turned away (the aircraft sends it again later): waiting forever
    // behind a stalled batch is what the deadline below prevents.
    let (idle, budget_wait) = (shared.cfg.batch_frame_idle, shared.cfg.batch_budget_wait);
    let held = match tokio::time::timeout(budget_wait, shared.items_budget.acquire_many(count)).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => return Err(SessionError::ShuttingDown),
        Err(_) => return Err(SessionError::Busy(id)),
    };
    // A batch holds its share of memory only while its items keep coming.
    // Items are held until the whole batch is checked against its header: a batch that does not
    // match is refused with nothing decided under its id.
    loop {
        let next = match tokio::time::timeout(idle, r.recv::<AircraftMsg>()).await {
            Ok(frame) => frame?,
            Err(_) => {
                let what = format!("items stopped coming ({} of {count} received); dropped", machine.received());
                return Err(SessionError::Stalled { batch: id, what });
            }
        };
        match next {
            Some(AircraftMsg::BatchItems { batch, first_seq, items }) if batch == id => {
                machine.on_items(first_seq, items).map_err(refused)?;
            }
            Some(AircraftMsg::BatchEnd { batch }) if batch == id => break,
            Some(other) => {
                return Err(SessionError::Protocol(format!("unexpected {} inside batch {id}", msg_name(&other))))
            }
            None => return Err(NetError::Connection(format!("stream ended inside batch {id}")).into()),
        }
    }
    let accepted = machine.on_end().map_err(refused)?;
    let deciding = tokio::time::Instant::now();
    let decided_now = accepted.needs_deciding();
    // The header's digest covers no card data (see `BatchDigest`): each payment id already
    // decided is compared with what was decided, under this issuer's own key.
    let prior = store.prior_contents(&accepted.items)?;
    accepted.check_prior(|p| prior.get(p).copied(), |item| store.content_digest(item)).map_err(refused)?;
    drop(prior);
    if accepted.needs_deciding() {
        let chunks = accepted.items.len().div_ceil(BATCH_CHUNK_MAX);
        let bounds = inflight_core::authorize::CaptureBounds::at_receipt(
            inflight_daemon::unix_ms_now(),
            shared.cfg.capture_age_max.as_millis() as u64,
        );
        for (k, chunk) in accepted.items.chunks(BATCH_CHUNK_MAX).enumerate() {
            let rules = inflight_core::authorize::Rules {
                programme: &shared.programme,
                bounds,
                chip_key: shared.chip_key.as_ref(),
            };
            let t = store.decide_chunk(id, (k * BATCH_CHUNK_MAX) as u32, chunk, &rules)?;
            if k + 1 < chunks && inflight_daemon::crash_armed("issuer.mid_decide") {
                // The crash must leave the batch half decided *on disk*, the case the "already
                // decided" guard exists for; without this the flusher may not have run yet.
                store.durable(t).await?;
                inflight_daemon::crash_point("issuer.mid_decide");
            }
        }
        store.finish_batch(&accepted.header)?;
    }
    // Every answer waits for durability, also a known batch's: another connection may have
    // written its decisions and not yet seen them fsynced.
    store.durable(store.latest()).await?;
    // A card declined `account_blocked` goes on the hot-card list, so the next flight refuses it
    // at the seat. Done for a replayed batch too (idempotent: a listed card adds no version), so
    // a crash between the decisions and this write loses no listing.
    // Read once, for the listing and the answer (100,000 decisions read twice cost ~0.5 s).
    let results = store.results(id)?;
    list_blocked_cards(shared, aircraft, id, &accepted.items, &results).await?;
    // Decided and durable: the items and their memory share are no longer needed (results are
    // read from the store), so a peer that stops reading results holds nothing of the budget.
    drop(accepted);
    drop(held);
    tracing::info!(%aircraft, batch = %id, count, ?start, "batch decided and durable");
    inflight_daemon::crash_point("issuer.after_results_stored");
    if decided_now {
        shared.metrics.batch_decided(deciding.elapsed(), results.iter().map(|r| &r.outcome));
    } else {
        shared.metrics.batch_replayed();
    }
    let stalled = || SessionError::Stalled { batch: id, what: "the aircraft stopped reading its results".into() };
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

/// Adds to the hot-card list the cards of `items` that batch `id` declined `account_blocked`,
/// durably (before the results are sent, so an aircraft that saw the decline finds the card on
/// its next fetch).
async fn list_blocked_cards(
    shared: &Shared,
    aircraft: &str,
    id: BatchId,
    items: &[inflight_wire::BatchItem],
    results: &[inflight_wire::AuthResult],
) -> Result<(), SessionError> {
    let blocked: std::collections::HashSet<_> = results
        .iter()
        .filter(|r| r.outcome == AuthOutcome::Declined(DeclineReason::AccountBlocked))
        .map(|r| r.id)
        .collect();
    if blocked.is_empty() {
        return Ok(());
    }
    let pans: Vec<&inflight_wire::Pan> = items.iter().filter(|i| blocked.contains(&i.id)).map(|i| &i.pan).collect();
    let (ticket, full) = shared.store.add_hot_cards(&pans)?;
    shared.store.durable(ticket).await?;
    if full > 0 {
        tracing::warn!(%aircraft, batch = %id, not_listed = full, max = HOT_ENTRIES_MAX, "hot-card list full");
    }
    Ok(())
}

/// The answer to `FetchHotList { have_version }`: a delta when the master's version is one this
/// issuer published (entries only ever get added, each with the version that added it), else
/// the whole list. Either way the head is signed afresh, with a validity window from now, so a
/// fetch also renews the master's list.
pub(crate) fn hot_list_update(shared: &Shared, have_version: Option<u64>) -> Result<HotListUpdate, StoreError> {
    let cards = shared.store.hot_cards()?;
    let mut entries: Vec<HotEntry> = cards.entries.iter().map(|(e, _)| *e).collect();
    let window = hot_list_window(inflight_daemon::unix_ms_now(), shared.cfg.bin_list_validity.as_millis() as u64);
    let head = inflight_core::hotlist::head_for(
        cards.version,
        &shared.cfg.issuer_name,
        window,
        shared.store.hot_list_key(),
        &mut entries,
    );
    let head = shared.signer.sign_hot_head(&head);
    Ok(match have_version {
        Some(base) if base <= cards.version => {
            let added = cards.entries.iter().filter(|(_, v)| *v > base).map(|(e, _)| *e).collect();
            HotListUpdate::Delta { base_version: base, head, added }
        }
        _ => HotListUpdate::Full(HotList { head, entries }),
    })
}

/// The validity window of a hot-card list signed at `now_unix_ms`: it starts at the last
/// quarter-of-validity boundary (less an hour for clocks behind the issuer's) and lasts
/// `validity_ms`, so it always has at least three quarters left. Within a quarter every fetch
/// gets the same head (and, Ed25519 being deterministic, the same signature): the master sees
/// nothing new and does not rewrite its store or push the list to every terminal each minute.
fn hot_list_window(now_unix_ms: u64, validity_ms: u64) -> (u64, u64) {
    let step = (validity_ms / 4).max(1);
    let from = now_unix_ms - now_unix_ms % step;
    (from.saturating_sub(3_600_000), from + validity_ms)
}

#[cfg(test)]
mod tests {
    use inflight_wire::PaymentId;

    #[test]
    fn hot_list_windows_change_once_a_quarter_and_always_cover_now() {
        let validity = 48 * 3_600_000;
        let now = 1_795_564_800_000 + 5;
        let w = hot_list_window(now, validity);
        assert!(w.0 <= now && now + validity * 3 / 4 <= w.1, "{w:?}");
        assert_eq!(hot_list_window(now + 60_000, validity), w, "a fetch a minute later renews nothing");
        let later = hot_list_window(now + validity / 4, validity);
        assert!(later.1 > w.1, "the next quarter extends the window");
    }

    use super::*;

    /// What each way a session ends tells the aircraft: nothing when it went away, its refusal
    /// for a refused batch, an error frame for everything else (a store failure included, with
    /// no store detail in it).
    #[test]
    fn each_session_error_tells_the_aircraft_what_it_should() {
        let batch = BatchId([1; 16]);
        assert_eq!(SessionError::Net(NetError::Connection("lost".into())).answer(), None);
        let refusal = BatchRefusal::AlreadyDecidedOtherContent(PaymentId::from_bytes([2; 16]));
        assert_eq!(
            SessionError::Refused { batch, refusal: refusal.clone() }.answer(),
            Some(IssuerMsg::BatchRefused { batch, reason: refusal.reason() })
        );
        let store = SessionError::Store(StoreError::Io("/var/lib/issuer: No space left on device".into()));
        match store.answer() {
            Some(IssuerMsg::Error { message }) => {
                assert!(message.contains("storage") && !message.contains("/var/lib"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        for e in [
            SessionError::Net(NetError::Frame("too long".into())),
            SessionError::Protocol("unexpected BatchEnd outside a batch".into()),
            SessionError::Busy(batch),
            SessionError::Stalled { batch, what: "items stopped coming".into() },
            SessionError::ShuttingDown,
        ] {
            assert!(matches!(e.answer(), Some(IssuerMsg::Error { .. })), "{e:?}");
        }
    }
}
