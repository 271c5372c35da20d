//! The aircraft actor: the one owner of the master's payment state (`inflight-core`'s
//! `Aggregator`) and of every write to it. Connections submit payments and acknowledge results;
//! the uploader asks it to seal batches and to record results; it pushes the BIN list and
//! results to connected terminals.
//!
//! The actor never waits for a flush. It applies each write to sled (synchronous, cheap) and
//! hands the write's ticket to the writer task ([`run_writer`]) with what must follow once it is
//! durable: an ack to send, or a [`Completion`] (reply to the uploader, push results, ...) that
//! the writer hands back as an input event, [`Event::Durable`]. While the writer waits on one
//! flush, the next group of writes accumulates (group commit), acks and completions alike.

use std::collections::HashMap;
use std::sync::Arc;

use inflight_core::aggregator::{
    index_key, Aggregator, CancelDecision, Counts, DeadlineCounts, Decision, Phase, SubmitPlan, SubmitWrite,
    TerminalRef,
};
use inflight_core::deadline::Deadline;
use inflight_core::hotlist::HotSet;
pub use inflight_core::uploader::NextBatch;
use inflight_store::{MasterStore, StoreError, Ticket};
use inflight_wire::{
    AuthResult, BatchHeader, BinList, CancelOutcome, ErrorCode, MasterMsg, Payment, PaymentId, ReversalOutcome,
    ReversalResult, SignedBinList, Verdict, BATCH_CHUNK_MAX, BATCH_PAYMENTS_MAX,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::MasterMetrics;

/// Capacity of the actor's queue. Connection readers wait when it is full, which
/// back-pressures terminals through QUIC flow control instead of growing memory.
pub const EVENTS_MAX: usize = 16_384;
/// Capacity of the queue of writes (acks and completions) waiting for durability.
pub const ACK_QUEUE_MAX: usize = 65_536;
/// Most [`Completion`]s in flight: handed to the writer and not yet handled back by the actor.
/// The writer's report-back queue has this capacity, so the writer never waits to report a
/// flush (which could deadlock it against an actor waiting for room in `ACK_QUEUE_MAX`): the
/// actor admits a new completion only below this count and counts one down when it handles
/// its `Event::Durable`. The uploader has one in flight at a time; the crew's `flight` ops the
/// rest. Past it a new one is answered with an error at once.
pub const COMPLETIONS_MAX: usize = 64;
/// Capacity of each connection's outgoing queue: acks for at most a forward window
/// (`inflight_core::outbox::WINDOW_MAX`) of payments, results, and the BIN list.
pub const CONN_OUTGOING_MAX: usize = 4 * inflight_core::outbox::WINDOW_MAX;

/// How often unconfirmed results are pushed again to connected terminals.
pub const RESULT_RESEND_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// Most results pushed again per terminal per interval (bounded by the connection's queue too).
pub const RESULTS_PER_RESEND_MAX: usize = 1024;

/// How often a metrics scrape may have the actor recount the aged payments and the deadline
/// counts (hour-scale flags: a minute late is nothing, a scan of the index at every scrape
/// would slow ingest). `status` always recounts.
pub const AGED_RECOUNT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a connection writer sends.
#[derive(Debug)]
pub enum Outgoing {
    /// A frame.
    Msg(MasterMsg),
    /// An error frame, then close the connection.
    Close(ErrorCode, String),
}

/// Inputs of the actor.
#[derive(Debug)]
pub enum Event {
    /// A payment from the terminal whose certificate is `terminal`.
    Submit { terminal: TerminalRef, payment: Box<Payment>, answered: bool, reply: mpsc::Sender<Outgoing> },
    /// The issuer refused `batch`: set it aside (durably) so later payments can go.
    Quarantine { batch: Box<BatchHeader>, reason: String, reply: oneshot::Sender<Result<(), StoreError>> },
    /// A terminal voided `id` (its sale app was never told `accepted`).
    Void { terminal: TerminalRef, id: PaymentId, reply: mpsc::Sender<Outgoing> },
    /// A terminal's sale app voided `id` after it was told `accepted`.
    Cancel { terminal: TerminalRef, id: PaymentId, reply: mpsc::Sender<Outgoing> },
    /// The uploader asks which reversals to send the issuer now (none of `skip`).
    ReversalsDue { skip: std::collections::HashSet<PaymentId>, reply: oneshot::Sender<Vec<PaymentId>> },
    /// The issuer's answers to reversals: store them durably.
    Reversed { results: Vec<ReversalResult>, reply: oneshot::Sender<Result<(), StoreError>> },
    /// A terminal stored the result of `id`.
    ResultAck { terminal: TerminalRef, id: PaymentId },
    /// A terminal connected (`serial` tells its connections apart).
    Connected { terminal: TerminalRef, serial: u64, tx: mpsc::Sender<Outgoing> },
    /// A terminal's connection ended.
    Disconnected { terminal: TerminalRef, serial: u64 },
    /// A verified BIN list from the issuer.
    BinList { signed: Box<SignedBinList>, list: Box<BinList> },
    /// A verified hot-card list from the issuer (whole, any delta already applied).
    HotList(Box<HotSet>),
    /// The uploader asks for the hot-card list held, to apply a delta to it.
    HotListHeld { reply: oneshot::Sender<Option<HotSet>> },
    /// The uploader asks what the next batch holds: the open one, or pending payments.
    NextBatch { reply: oneshot::Sender<NextBatch> },
    /// The uploader has built a batch header for `ids`: record it durably.
    Seal { header: Box<BatchHeader>, ids: Vec<PaymentId>, reply: oneshot::Sender<Result<(), StoreError>> },
    /// The issuer's results for a batch: store them durably, then deliver.
    Results { batch: Box<BatchHeader>, results: Vec<AuthResult>, reply: oneshot::Sender<Result<(), StoreError>> },
    /// Counts and the BIN list version, for status.
    Status { reply: oneshot::Sender<Snapshot> },
    /// The same for a metrics scrape, with `aged` recounted at most every [`AGED_RECOUNT`]
    /// (it scans the whole index; scrapes come every few seconds).
    MetricsSnapshot { reply: oneshot::Sender<Snapshot> },
    /// The crew sets the flight stamped on new payments.
    SetFlight { flight: String, reply: oneshot::Sender<Result<(), StoreError>> },
    /// From the writer: the write behind `completion` is durable (or the flush failed).
    Durable { completion: Box<Completion>, result: Result<(), StoreError> },
}

/// What the actor does once a write is durable: what used to follow an awaited flush.
#[derive(Debug)]
pub enum Completion {
    /// The batch is sealed: it becomes the open batch; the uploader may send it.
    Seal { header: BatchHeader, ids: Vec<PaymentId>, reply: oneshot::Sender<Result<(), StoreError>> },
    /// A batch's results are stored: its payments are decided, their results pushed.
    Results { batch: BatchHeader, results: Vec<AuthResult>, reply: oneshot::Sender<Result<(), StoreError>> },
    /// A refused batch is set aside.
    Quarantine {
        batch: BatchHeader,
        ids: Vec<PaymentId>,
        reason: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The new flight is stored.
    SetFlight { flight: String, reply: oneshot::Sender<Result<(), StoreError>> },
    /// The issuer's answers to reversals are stored.
    Reversed { results: Vec<ReversalResult>, reply: oneshot::Sender<Result<(), StoreError>> },
}

impl Completion {
    fn fail(self, e: StoreError) {
        let reply = match self {
            Completion::Seal { reply, .. }
            | Completion::Results { reply, .. }
            | Completion::Quarantine { reply, .. }
            | Completion::SetFlight { reply, .. }
            | Completion::Reversed { reply, .. } => reply,
        };
        let _ = reply.send(Err(e));
    }
}

/// The state the status report shows.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// Payment counts by phase.
    pub counts: Counts,
    /// Version of the BIN list in force.
    pub bin_list_version: Option<u64>,
    /// When the BIN list in force expires (milliseconds since the Unix epoch).
    pub bin_list_valid_until_unix_ms: Option<u64>,
    /// Version and entry count of the hot-card list held.
    pub hot_list: Option<(u64, usize)>,
    /// Terminals connected.
    pub terminals: usize,
    /// Payments waiting for the issuer longer than the configured age, and carried payments
    /// against their deferred-authorization deadline.
    pub scan: Scan,
    /// Reversals (sale apps' voids of sealed payments) not yet answered by the issuer, and
    /// answered.
    pub reversals: (u64, u64),
}

/// What a scan of the whole index counts (hour-scale flags, see [`AGED_RECOUNT`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// Payments waiting for the issuer longer than `report.payment_age_flag_hours`.
    pub aged: u64,
    /// Carried payments against their deadline (`deadline_soon`, `deadline_missed`).
    pub deadline: DeadlineCounts,
}

/// A write the writer task waits on: once its ticket is durable, an ack is sent or a
/// completion handed back to the actor.
pub(crate) struct Write {
    ticket: Ticket,
    then: Then,
}

enum Then {
    /// `taken`: when the actor took the submit (for its latency), `None` for a void.
    Ack {
        msg: Outgoing,
        reply: mpsc::Sender<Outgoing>,
        taken: Option<Instant>,
    },
    Complete(Box<Completion>),
}

/// The writer task's ends: the writes to wait on, and the actor's report-back queue.
pub(crate) struct Writer {
    writes: mpsc::Receiver<Write>,
    durable: mpsc::Sender<Event>,
    /// Where the submit → ack latency goes.
    metrics: MasterMetrics,
}

struct Link {
    serial: u64,
    tx: mpsc::Sender<Outgoing>,
}

/// The actor's state.
pub(crate) struct Aircraft {
    agg: Aggregator,
    store: Arc<MasterStore>,
    /// Verified list currently in force, as signed (pushed to terminals).
    signed: Option<SignedBinList>,
    /// The issuer's hot-card list, verified: pushed to terminals, kept to apply deltas to.
    hot: Option<HotSet>,
    /// Connected terminals.
    links: HashMap<TerminalRef, Link>,
    /// Flight stamped on new payments.
    flight: String,
    /// Waiting longer than this is flagged in the status.
    age_flag: std::time::Duration,
    /// The deferred-authorization deadline the status counts payments against.
    deadline: Deadline,
    writes: mpsc::Sender<Write>,
    /// The writer's reports (`Event::Durable`), taken by [`Aircraft::run`].
    durable: Option<mpsc::Receiver<Event>>,
    /// Completions handed to the writer and not yet handled (at most [`COMPLETIONS_MAX`]).
    completions: usize,
    /// Counters of what the actor decides and stores.
    metrics: MasterMetrics,
    /// The scan the last metrics scrape got, and when it was made.
    scan_for_metrics: Option<(Instant, Scan)>,
}

/// Rebuilds the aircraft's state from the store.
pub(crate) fn restore(
    store: Arc<MasterStore>,
    flight: String,
    issuer_key: &[u8; 32],
    age_flag: std::time::Duration,
    deadline: Deadline,
    limits: inflight_core::aggregator::Limits,
    metrics: MasterMetrics,
) -> Result<(Aircraft, Writer), StoreError> {
    let mut agg = Aggregator::with_limits(limits);
    for (id, entry) in store.index()? {
        agg.restore(id, entry);
    }
    if let Some(header) = store.open_batch()? {
        let ids = store.batch_ids(header.id)?;
        agg.restore_open_batch(header, ids);
    }
    for (id, r) in store.reversals()? {
        agg.restore_reversal(id, r);
    }
    let signed = store.bin_list()?;
    if let Some(s) = &signed {
        match inflight_store::verify_bin_list(issuer_key, s) {
            Ok(list) => agg.set_bin_list(Some(list)),
            Err(e) => tracing::error!(error = %e, "stored BIN list does not verify; ignoring it"),
        }
    }
    let hot = match store.hot_list()? {
        None => None,
        Some(l) => match HotSet::verify(issuer_key, &l) {
            Ok(set) => Some(set),
            Err(e) => {
                tracing::error!(error = %e, "stored hot-card list does not verify; ignoring it");
                None
            }
        },
    };
    let flight = store.setting("flight")?.unwrap_or(flight);
    let (writes, writes_rx) = mpsc::channel(ACK_QUEUE_MAX);
    let (durable_tx, durable_rx) = mpsc::channel(COMPLETIONS_MAX);
    let signed = agg.bin_list().and(signed);
    let actor = Aircraft {
        agg,
        store,
        signed,
        hot,
        links: HashMap::new(),
        flight,
        writes,
        age_flag,
        deadline,
        durable: Some(durable_rx),
        completions: 0,
        metrics: metrics.clone(),
        scan_for_metrics: None,
    };
    Ok((actor, Writer { writes: writes_rx, durable: durable_tx, metrics }))
}

impl Aircraft {
    /// Runs until its input closes or `cancel`.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Event>, cancel: CancellationToken) {
        let mut resend = tokio::time::interval(RESULT_RESEND_INTERVAL);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut durable = self.durable.take().unwrap_or_else(|| mpsc::channel(1).1);
        loop {
            let ev = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                // Reports first: each frees a completion slot and may answer a waiting uploader.
                Some(ev) = durable.recv() => ev,
                _ = resend.tick() => {
                    self.resend_results();
                    continue;
                }
                ev = rx.recv() => match ev { Some(e) => e, None => break },
            };
            self.handle(ev).await;
        }
    }

    /// Pushes again, to every connected terminal, results it has not confirmed. A result (or
    /// its ack) can be lost to a full queue or a dying connection; re-sending is harmless, the
    /// terminal stores a result once and acks it again.
    fn resend_results(&mut self) {
        for (terminal, link) in &self.links {
            for id in self.agg.undelivered(terminal).into_iter().take(RESULTS_PER_RESEND_MAX) {
                match self.store.outcome(id) {
                    Ok(Some(outcome)) => {
                        if link.tx.try_send(Outgoing::Msg(MasterMsg::Result { id, outcome })).is_err() {
                            break;
                        }
                    }
                    _ => continue,
                }
            }
        }
    }

    async fn handle(&mut self, ev: Event) {
        match ev {
            Event::Submit { terminal, payment, answered, reply } => {
                self.submit(terminal, *payment, answered, reply).await
            }
            Event::Void { terminal, id, reply } => self.void(terminal, id, reply).await,
            Event::Cancel { terminal, id, reply } => self.cancel(terminal, id, reply).await,
            Event::ReversalsDue { skip, reply } => {
                let _ = reply.send(self.agg.reversals_due(BATCH_CHUNK_MAX, &skip));
            }
            Event::Reversed { results, reply } => match self.store.store_reversals(&results) {
                Ok(t) => self.complete(t, Completion::Reversed { results, reply }).await,
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Event::Quarantine { batch, reason, reply } => {
                let written = self.store.batch_ids(batch.id).and_then(|ids| {
                    let t = self.store.quarantine_batch(batch.id, &reason)?;
                    Ok((t, ids))
                });
                match written {
                    Ok((t, ids)) => {
                        self.complete(t, Completion::Quarantine { batch: *batch, ids, reason, reply }).await
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Event::Durable { completion, result } => {
                self.completions = self.completions.saturating_sub(1);
                match result {
                    Ok(()) => self.completed(*completion),
                    Err(e) => completion.fail(e),
                }
            }
            Event::ResultAck { terminal, id } => {
                if self.agg.delivers(&terminal, &id) {
                    inflight_daemon::crash_point("master.after_result_delivered_before_purge");
                    // Not waited on: if lost, the result is pushed again and acked again.
                    match self.store.mark_delivered(id) {
                        Ok(_) => self.agg.advance(id, Phase::Delivered),
                        Err(e) => tracing::error!(error = %e, payment = %id, "cannot record delivery"),
                    }
                }
            }
            Event::Connected { terminal, serial, tx } => {
                if let Some(s) = &self.signed {
                    let _ = tx.try_send(Outgoing::Msg(MasterMsg::BinList(s.clone())));
                }
                if let Some(h) = &self.hot {
                    let _ = tx.try_send(Outgoing::Msg(MasterMsg::HotList(Box::new(h.to_wire()))));
                }
                for id in self.agg.undelivered(&terminal) {
                    if let Ok(Some(outcome)) = self.store.outcome(id) {
                        let _ = tx.try_send(Outgoing::Msg(MasterMsg::Result { id, outcome }));
                    }
                }
                self.links.insert(terminal, Link { serial, tx });
            }
            Event::Disconnected { terminal, serial } => {
                if self.links.get(&terminal).is_some_and(|l| l.serial == serial) {
                    self.links.remove(&terminal);
                }
            }
            Event::BinList { signed, list } => {
                let (signed, list) = (*signed, *list);
                if !inflight_core::binlist::prefer(self.agg.bin_list(), &list, inflight_daemon::unix_ms_now()) {
                    return;
                }
                match self.store.set_bin_list(&signed) {
                    Ok(_) => {
                        tracing::info!(
                            version = list.version,
                            rules = list.rules.len(),
                            "new BIN list; pushing to terminals"
                        );
                        self.agg.set_bin_list(Some(list));
                        for l in self.links.values() {
                            let _ = l.tx.try_send(Outgoing::Msg(MasterMsg::BinList(signed.clone())));
                        }
                        self.signed = Some(signed);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot store the BIN list"),
                }
            }
            Event::HotList(set) => {
                if !inflight_core::hotlist::prefer(self.hot.as_ref(), &set, inflight_daemon::unix_ms_now()) {
                    return;
                }
                let wire = set.to_wire();
                match self.store.set_hot_list(&wire) {
                    Ok(_) => {
                        tracing::info!(
                            version = set.version(),
                            entries = set.len(),
                            "new hot-card list; pushing to terminals"
                        );
                        for l in self.links.values() {
                            let _ = l.tx.try_send(Outgoing::Msg(MasterMsg::HotList(Box::new(wire.clone()))));
                        }
                        self.hot = Some(*set);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot store the hot-card list"),
                }
            }
            Event::HotListHeld { reply } => {
                let _ = reply.send(self.hot.clone());
            }
            Event::NextBatch { reply } => {
                let _ = reply.send(self.agg.promise_next_batch(BATCH_PAYMENTS_MAX as usize));
            }
            Event::Seal { header, ids, reply } => {
                match self.store.seal_batch(&header, &ids, || inflight_daemon::crash_point("master.mid_seal")) {
                    // The batch becomes the open one once durable: until then a new session
                    // asking for the next batch gets its payments as pending, and the uploader,
                    // which still holds this header, has it recorded again.
                    Ok(t) => self.complete(t, Completion::Seal { header: *header, ids, reply }).await,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Event::Results { batch, results, reply } => {
                let written = self.store.store_results(&results).and_then(|_| self.store.finish_batch(batch.id));
                match written {
                    Ok(t) => self.complete(t, Completion::Results { batch: *batch, results, reply }).await,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Event::Status { reply } => {
                let _ = reply.send(self.snapshot(self.scan()));
            }
            Event::MetricsSnapshot { reply } => {
                let scan = match self.scan_for_metrics {
                    Some((at, scan)) if at.elapsed() < AGED_RECOUNT => scan,
                    _ => {
                        let scan = self.scan();
                        self.scan_for_metrics = Some((Instant::now(), scan));
                        scan
                    }
                };
                let _ = reply.send(self.snapshot(scan));
            }
            Event::SetFlight { flight, reply } => match self.store.set_setting("flight", &flight) {
                Ok(t) => self.complete(t, Completion::SetFlight { flight, reply }).await,
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
    }

    /// Payments waiting for the issuer longer than the flag age, and the deadline counts (two
    /// passes over the index).
    fn scan(&self) -> Scan {
        let now = inflight_daemon::unix_ms_now();
        Scan {
            aged: self.agg.aged(now, self.age_flag.as_millis() as u64),
            deadline: self.agg.deadline_counts(now, &self.deadline),
        }
    }

    fn snapshot(&self, scan: Scan) -> Snapshot {
        Snapshot {
            counts: self.agg.counts(),
            bin_list_version: self.agg.bin_list().map(|b| b.version),
            bin_list_valid_until_unix_ms: self.agg.bin_list().map(|b| b.valid_until_unix_ms),
            hot_list: self.hot.as_ref().map(|h| (h.version(), h.len())),
            terminals: self.links.len(),
            scan,
            reversals: self.agg.reversal_counts(),
        }
    }

    /// Hands a write's ticket to the writer with what follows once it is durable. Never waits
    /// for the flush; waits only for room in the writer's queue.
    async fn complete(&mut self, ticket: Ticket, completion: Completion) {
        if self.completions >= COMPLETIONS_MAX {
            tracing::warn!(max = COMPLETIONS_MAX, "too many writes waiting for durability; refusing one");
            completion.fail(StoreError::Io("too many writes waiting for durability; try again".into()));
            return;
        }
        match self.writes.send(Write { ticket, then: Then::Complete(Box::new(completion)) }).await {
            Ok(()) => self.completions += 1,
            Err(mpsc::error::SendError(w)) => {
                if let Then::Complete(c) = w.then {
                    c.fail(StoreError::Closed);
                }
            }
        }
    }

    /// What follows a durable write (what used to follow an awaited flush).
    fn completed(&mut self, completion: Completion) {
        match completion {
            Completion::Seal { header, ids, reply } => {
                self.agg.seal_batch(header, ids);
                let _ = reply.send(Ok(()));
            }
            Completion::Results { batch, results, reply } => {
                inflight_daemon::crash_point("master.after_results_stored_before_push");
                self.agg.close_batch(batch.id);
                self.metrics.batch_decided(results.iter().map(|r| &r.outcome));
                for r in &results {
                    self.agg.advance(r.id, Phase::Decided);
                    let Some(entry) = self.agg.entry(&r.id) else { continue };
                    if let Some(l) = self.links.get(&entry.terminal) {
                        let _ =
                            l.tx.try_send(Outgoing::Msg(MasterMsg::Result { id: r.id, outcome: r.outcome.clone() }));
                    }
                }
                let _ = reply.send(Ok(()));
            }
            Completion::Quarantine { batch, ids, reason, reply } => {
                tracing::error!(
                    batch = %batch.id,
                    payments = ids.len(),
                    %reason,
                    "BATCH QUARANTINED: the issuer refused it; its payments are kept for the crew and the \
                     issuer's operations, later payments go in new batches"
                );
                self.agg.close_batch(batch.id);
                self.metrics.batch_quarantined();
                for id in ids {
                    self.agg.advance(id, Phase::Quarantined);
                }
                let _ = reply.send(Ok(()));
            }
            Completion::SetFlight { flight, reply } => {
                tracing::info!(%flight, "flight changed by the crew");
                self.flight = flight;
                let _ = reply.send(Ok(()));
            }
            Completion::Reversed { results, reply } => {
                for r in &results {
                    match r.outcome {
                        ReversalOutcome::Unknown => tracing::error!(
                            payment = %r.id,
                            "the issuer does not know a payment it was asked to reverse; the reversal is kept"
                        ),
                        o => tracing::info!(payment = %r.id, outcome = ?o, "payment reversed by the issuer"),
                    }
                    self.agg.reversal_answered(r.id, r.outcome);
                }
                let _ = reply.send(Ok(()));
            }
        }
    }

    async fn submit(&mut self, terminal: TerminalRef, payment: Payment, answered: bool, reply: mpsc::Sender<Outgoing>) {
        let taken = Instant::now();
        let digest = self.store.content_digest(&payment);
        let card = index_key(&self.store.card_hash(&payment));
        let decision = self.agg.handle_submit(&terminal, &payment, answered, index_key(&digest), card);
        let id = payment.id;
        if let Decision::Turn(r) = decision {
            tracing::warn!(
                payment = %id,
                %terminal,
                reason = r.as_str(),
                open = self.agg.open_of(&terminal),
                "terminal over its share of the aircraft; payment refused, not stored"
            );
        }
        let written = match decision.plan(answered) {
            SubmitPlan::Ack { write, ack } => {
                let ticket = match write {
                    SubmitWrite::Put { verdict, flag, answered } => {
                        match (verdict, flag) {
                            (Verdict::Refused(r), _) => {
                                tracing::info!(payment = %id, %terminal, reason = r.as_str(), "payment refused by an aircraft-wide check")
                            }
                            (_, Some(f)) => {
                                tracing::warn!(payment = %id, flag = f.as_str(), "carrying a payment the terminal already accepted despite a failed check")
                            }
                            _ => {}
                        }
                        let put = self.store.put(&payment, digest, verdict, flag, &self.flight, answered);
                        if put.is_ok() {
                            // The index records a held payment as `Stored` until confirmed.
                            let label = if answered || verdict != Verdict::Stored { verdict } else { Verdict::Held };
                            self.metrics.payment_received(label);
                        }
                        put
                    }
                    SubmitWrite::CarryRefused(r) => {
                        tracing::warn!(payment = %id, flag = r.as_str(), "carrying a refused payment its terminal had already accepted");
                        self.store.carry_refused(&payment, r)
                    }
                    SubmitWrite::Confirm => {
                        let confirmed = self.store.confirm_answered(id);
                        if confirmed.is_ok() {
                            self.metrics.payment_confirmed();
                        }
                        confirmed
                    }
                    SubmitWrite::Barrier => Ok(self.store.latest()),
                };
                ticket.map(|t| (t, ack))
            }
            SubmitPlan::Close => {
                tracing::warn!(%terminal, claimed = %payment.terminal, "terminal submitted a payment under another terminal's id");
                let _ = reply.try_send(Outgoing::Close(
                    ErrorCode::WrongTerminal,
                    "payment carries another terminal's id".into(),
                ));
                return;
            }
            SubmitPlan::Wait => {
                tracing::warn!(
                    payment = %id,
                    %terminal,
                    open = self.agg.open_of(&terminal),
                    "terminal over its share of the aircraft sent a payment its sale app was told accepted; \
                     not stored yet, the terminal keeps it and sends it again"
                );
                return;
            }
        };
        inflight_daemon::crash_point("master.after_write_before_flush");
        match written {
            Ok((ticket, verdict)) => {
                let msg = Outgoing::Msg(MasterMsg::Ack { id: payment.id, verdict });
                let _ = self.writes.send(Write { ticket, then: Then::Ack { msg, reply, taken: Some(taken) } }).await;
            }
            Err(e) => {
                // No ack: the terminal keeps the payment and sends it again.
                tracing::error!(error = %e, payment = %payment.id, "cannot store payment");
                self.agg.revert(&payment.id, decision);
            }
        }
    }
}

impl Aircraft {
    /// A terminal voids a payment its sale app was never told `accepted` about.
    async fn void(&mut self, terminal: TerminalRef, id: PaymentId, reply: mpsc::Sender<Outgoing>) {
        let decision = self.agg.handle_void(&terminal, id);
        let Some((void, carried)) = decision.plan() else {
            tracing::warn!(%terminal, payment = %id, "terminal voided another terminal's payment");
            let _ =
                reply.try_send(Outgoing::Close(ErrorCode::WrongTerminal, "void of another terminal's payment".into()));
            return;
        };
        if void {
            tracing::info!(payment = %id, %terminal, "payment voided by its terminal (sale app never answered)");
        }
        if carried {
            tracing::error!(payment = %id, %terminal, "terminal voided a payment it had confirmed answered; carrying it");
        }
        let written = if void { self.store.void(id) } else { Ok(self.store.latest()) };
        match written {
            Ok(ticket) => {
                let msg = Outgoing::Msg(MasterMsg::VoidAck { id, carried });
                let _ = self.writes.send(Write { ticket, then: Then::Ack { msg, reply, taken: None } }).await;
            }
            Err(e) => {
                tracing::error!(error = %e, payment = %id, "cannot record the void; the terminal will send it again");
                self.agg.revert_void(&id);
            }
        }
    }
}

impl Aircraft {
    /// A terminal's sale app voids a payment it was told `accepted` for.
    async fn cancel(&mut self, terminal: TerminalRef, id: PaymentId, reply: mpsc::Sender<Outgoing>) {
        let decision = self.agg.handle_cancel(&terminal, id);
        let (written, outcome) = match decision {
            CancelDecision::WrongTerminal => {
                tracing::warn!(%terminal, payment = %id, "terminal voided another terminal's payment");
                let _ = reply
                    .try_send(Outgoing::Close(ErrorCode::WrongTerminal, "void of another terminal's payment".into()));
                return;
            }
            CancelDecision::Void => {
                tracing::info!(payment = %id, %terminal, "payment voided by its sale app before sealing: never carried");
                (self.store.cancel(id), CancelOutcome::Voided)
            }
            CancelDecision::Reverse => {
                tracing::info!(payment = %id, %terminal, "payment voided by its sale app after sealing: the issuer will reverse it");
                (self.store.request_reversal(id), CancelOutcome::ReversalPending)
            }
            CancelDecision::Repeat(o) => (Ok(self.store.latest()), o),
        };
        match written {
            Ok(ticket) => {
                let msg = Outgoing::Msg(MasterMsg::CancelAck { id, outcome });
                let _ = self.writes.send(Write { ticket, then: Then::Ack { msg, reply, taken: None } }).await;
            }
            Err(e) => {
                tracing::error!(error = %e, payment = %id, "cannot record the void; the terminal will send it again");
                self.agg.revert_cancel(&id, decision);
            }
        }
    }
}

/// The writer task: waits for durability a group at a time, then sends the group's acks and
/// hands its completions back to the actor (`Event::Durable`). Ends when the actor is gone and
/// every write handed to it is answered.
pub(crate) async fn run_writer(store: Arc<MasterStore>, writer: Writer) {
    let Writer { writes: mut rx, durable, metrics } = writer;
    let mut group: Vec<Write> = Vec::new();
    while let Some(first) = rx.recv().await {
        group.push(first);
        while let Ok(more) = rx.try_recv() {
            group.push(more);
        }
        // Tickets grow monotonically, so the largest covers the whole group.
        let ticket = group.iter().map(|w| w.ticket).max().unwrap_or(Ticket::NONE);
        let flushed = store.durable(ticket).await;
        if flushed.is_ok() {
            inflight_daemon::crash_point("master.after_flush_before_ack");
        } else if let Err(e) = &flushed {
            let acks = group.iter().filter(|w| matches!(w.then, Then::Ack { .. })).count();
            tracing::error!(error = %e, unacked = acks, "flush failed; not acking");
        }
        for w in group.drain(..) {
            match w.then {
                Then::Ack { msg, reply, taken } => {
                    if flushed.is_ok() {
                        // A full or closed connection loses the ack; the terminal re-sends.
                        let _ = reply.try_send(msg);
                        if let Some(taken) = taken {
                            metrics.submit_acked(taken.elapsed());
                        }
                    }
                }
                // Never waits: the queue has room for every completion in flight (see
                // `COMPLETIONS_MAX`). Fails only once the actor is gone (shutting down).
                Then::Complete(completion) => {
                    let _ = durable.send(Event::Durable { completion, result: flushed.clone() }).await;
                }
            }
        }
        if flushed.is_ok() {
            // Give the connection writers a moment to put the acks on the wire.
            tokio::task::yield_now().await;
            inflight_daemon::crash_point("master.after_ack_sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use inflight_store::CardVault;
    use inflight_wire::{BatchId, Expiry, Money, Pan, TerminalId};

    use super::*;

    fn payment(terminal: &TerminalId) -> Payment {
        Payment {
            id: PaymentId::mint(1_700_000_000_000, [1; 10]),
            terminal: terminal.clone(),
            pan: Pan::parse("4111111111111111").expect("valid card"),
            expiry: Expiry::parse("12/29").expect("valid expiry"),
            amount: Money::new(100, inflight_wire::Currency::parse("EUR").expect("known")).expect("valid"),
            seat: "1A".into(),
            captured_unix_ms: 1_700_000_000_000,
            items: vec![],
            emv: None,
            pos: inflight_wire::PointOfSale::LEGACY,
        }
    }

    async fn ask<R>(tx: &mpsc::Sender<Event>, ev: impl FnOnce(oneshot::Sender<R>) -> Event) -> R {
        let (reply, rx) = oneshot::channel();
        tx.send(ev(reply)).await.expect("actor running");
        tokio::time::timeout(Duration::from_secs(5), rx).await.expect("answered in time").expect("answered")
    }

    /// The actor never waits for a flush: with the writer held back (no write becomes durable
    /// as far as the actor knows), it still decides a terminal's payment and answers status
    /// while a seal waits; it answers the seal, and makes the batch the open one, only once the
    /// writer reports the seal durable.
    #[tokio::test]
    async fn the_actor_serves_terminals_while_a_seal_waits_for_durability() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(MasterStore::open(dir.path(), CardVault::from_key(&[7; 32]), 1 << 20).expect("store"));
        let (actor, writer) = restore(
            store.clone(),
            "F1".into(),
            &[0; 32],
            Duration::from_secs(3600),
            Deadline::default(),
            inflight_core::aggregator::Limits::default(),
            MasterMetrics::new(),
        )
        .expect("restore");
        let (tx, rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let actor_task = tokio::spawn(actor.run(rx, cancel.clone()));

        let header = BatchHeader {
            id: BatchId([3; 16]),
            aircraft: "A1".into(),
            flight: "F1".into(),
            count: 0,
            totals: vec![],
            digest: [0; 32],
        };
        let (seal_reply, mut sealed) = oneshot::channel();
        tx.send(Event::Seal { header: Box::new(header.clone()), ids: vec![], reply: seal_reply })
            .await
            .expect("running");
        let terminal = TerminalId::parse("t1").expect("valid id");
        let (conn_tx, mut conn_rx) = mpsc::channel(4);
        let submit = Event::Submit {
            payment: Box::new(payment(&terminal)),
            terminal: terminal.into(),
            answered: true,
            reply: conn_tx,
        };
        tx.send(submit).await.expect("running");
        let status = ask(&tx, |reply| Event::Status { reply }).await;
        assert_ne!(status.counts, Counts::default(), "the payment was decided while the seal waits");
        assert!(sealed.try_recv().is_err(), "no seal reply before the writer reports it durable");
        assert!(conn_rx.try_recv().is_err(), "no ack before durability");
        assert!(
            !matches!(ask(&tx, |reply| Event::NextBatch { reply }).await, NextBatch::Open(..)),
            "not the open batch before it is durable"
        );

        let writer_task = tokio::spawn(run_writer(store.clone(), writer));
        let answer = tokio::time::timeout(Duration::from_secs(5), sealed).await.expect("in time").expect("answered");
        assert!(answer.is_ok(), "{answer:?}");
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(5), conn_rx.recv()).await.expect("in time"),
            Some(Outgoing::Msg(MasterMsg::Ack { .. }))
        ));
        assert_eq!(ask(&tx, |reply| Event::NextBatch { reply }).await, NextBatch::Open(header, vec![]));

        cancel.cancel();
        actor_task.await.expect("actor");
        writer_task.await.expect("writer");
        store.close();
    }
}
#[cfg(test)]
mod queue_entry_size {
    /// The actor's queue holds up to `EVENTS_MAX` events and the writer's up to `ACK_QUEUE_MAX`
    /// writes, each slot as large as the largest variant: a batch header or a BIN list inline
    /// made every slot 240 and 192 bytes (up to 16 MiB when a thousand terminals fill them).
    /// Large variants are boxed; this keeps it so.
    #[test]
    fn the_actor_s_queue_entries_stay_small() {
        assert!(std::mem::size_of::<super::Event>() <= 64, "Event is {} bytes", std::mem::size_of::<super::Event>());
        assert!(std::mem::size_of::<super::Write>() <= 96, "Write is {} bytes", std::mem::size_of::<super::Write>());
    }
}
