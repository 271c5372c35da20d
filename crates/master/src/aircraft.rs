//! The aircraft actor: the one owner of the master's payment state (`inflight-core`'s
//! `Aggregator`) and of every write to it. Connections submit payments and acknowledge results;
//! the uploader asks it to seal batches and to record results; it pushes the BIN list and
//! results to connected terminals. A separate acker waits for durability and sends the acks:
//! while it waits on one flush, the next group of writes accumulates (group commit).

use std::collections::HashMap;
use std::sync::Arc;

use inflight_core::aggregator::{Aggregator, Counts, Decision, Phase, VoidDecision};
use inflight_store::{MasterStore, StoreError, Ticket};
use inflight_wire::{
    AuthResult, BatchHeader, BinList, ErrorCode, MasterMsg, Payment, PaymentId, SignedBinList, TerminalId, Verdict,
    BATCH_PAYMENTS_MAX,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Capacity of the actor's queue. Connection readers wait when it is full, which
/// back-pressures terminals through QUIC flow control instead of growing memory.
pub const EVENTS_MAX: usize = 16_384;
/// Capacity of the queue of acks waiting for durability.
pub const ACK_QUEUE_MAX: usize = 65_536;
/// Capacity of each connection's outgoing queue: acks for at most a forward window
/// (`inflight_core::outbox::WINDOW_MAX`) of payments, results, and the BIN list.
pub const CONN_OUTGOING_MAX: usize = 4 * inflight_core::outbox::WINDOW_MAX;

/// How often unconfirmed results are pushed again to connected terminals.
pub const RESULT_RESEND_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// Most results pushed again per terminal per interval (bounded by the connection's queue too).
pub const RESULTS_PER_RESEND_MAX: usize = 1024;

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
    Submit { terminal: TerminalId, payment: Box<Payment>, answered: bool, reply: mpsc::Sender<Outgoing> },
    /// The issuer refused `batch`: set it aside (durably) so later payments can go.
    Quarantine { batch: BatchHeader, reason: String, reply: oneshot::Sender<Result<(), StoreError>> },
    /// A terminal voided `id` (its sale app was never told `accepted`).
    Void { terminal: TerminalId, id: PaymentId, reply: mpsc::Sender<Outgoing> },
    /// A terminal stored the result of `id`.
    ResultAck { terminal: TerminalId, id: PaymentId },
    /// A terminal connected (`serial` tells its connections apart).
    Connected { terminal: TerminalId, serial: u64, tx: mpsc::Sender<Outgoing> },
    /// A terminal's connection ended.
    Disconnected { terminal: TerminalId, serial: u64 },
    /// A verified BIN list from the issuer.
    BinList { signed: SignedBinList, list: BinList },
    /// The uploader asks what the next batch holds: the open one, or pending payments.
    NextBatch { reply: oneshot::Sender<NextBatch> },
    /// The uploader has built a batch header for `ids`: record it durably.
    Seal { header: BatchHeader, ids: Vec<PaymentId>, reply: oneshot::Sender<Result<(), StoreError>> },
    /// The issuer's results for a batch: store them durably, then deliver.
    Results { batch: BatchHeader, results: Vec<AuthResult>, reply: oneshot::Sender<Result<(), StoreError>> },
    /// Counts and the BIN list version, for status.
    Status { reply: oneshot::Sender<Snapshot> },
    /// The crew sets the flight stamped on new payments.
    SetFlight { flight: String, reply: oneshot::Sender<Result<(), StoreError>> },
}

/// The state the status report shows.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// Payment counts by phase.
    pub counts: Counts,
    /// Version of the BIN list in force.
    pub bin_list_version: Option<u64>,
    /// Terminals connected.
    pub terminals: usize,
    /// Payments waiting for the issuer longer than the configured age.
    pub aged: u64,
}

/// What the next batch is.
#[derive(Debug)]
pub enum NextBatch {
    /// Nothing to send.
    Nothing,
    /// A sealed batch not yet answered: send it again, same id, same content.
    Open(BatchHeader, Vec<PaymentId>),
    /// Pending payments to seal into a new batch.
    Pending(Vec<PaymentId>),
}

pub(crate) struct PendingAck {
    ticket: Ticket,
    msg: Outgoing,
    reply: mpsc::Sender<Outgoing>,
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
    /// Connected terminals.
    links: HashMap<TerminalId, Link>,
    /// Flight stamped on new payments.
    flight: String,
    /// Waiting longer than this is flagged in the status.
    age_flag: std::time::Duration,
    acks: mpsc::Sender<PendingAck>,
}

/// Rebuilds the aircraft's state from the store.
pub(crate) fn restore(
    store: Arc<MasterStore>,
    flight: String,
    issuer_key: &[u8; 32],
    age_flag: std::time::Duration,
    limits: inflight_core::aggregator::Limits,
) -> Result<(Aircraft, mpsc::Receiver<PendingAck>), StoreError> {
    let mut agg = Aggregator::with_limits(limits);
    for (id, entry) in store.index()? {
        agg.restore(id, entry);
    }
    let signed = store.bin_list()?;
    if let Some(s) = &signed {
        match inflight_store::verify_bin_list(issuer_key, s) {
            Ok(list) => agg.set_bin_list(Some(list)),
            Err(e) => tracing::error!(error = %e, "stored BIN list does not verify; ignoring it"),
        }
    }
    let flight = store.setting("flight")?.unwrap_or(flight);
    let (acks, rx) = mpsc::channel(ACK_QUEUE_MAX);
    let signed = agg.bin_list().and(signed);
    Ok((Aircraft { agg, store, signed, links: HashMap::new(), flight, acks, age_flag }, rx))
}

impl Aircraft {
    /// Runs until its input closes or `cancel`.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Event>, cancel: CancellationToken) {
        let mut resend = tokio::time::interval(RESULT_RESEND_INTERVAL);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => break,
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
            Event::Quarantine { batch, reason, reply } => {
                let result = async {
                    let ids = self.store.batch_ids(batch.id)?;
                    let t = self.store.quarantine_batch(batch.id, &reason)?;
                    self.store.durable(t).await?;
                    Ok::<_, StoreError>(ids)
                }
                .await;
                let reply_result = match result {
                    Ok(ids) => {
                        tracing::error!(
                            batch = %batch.id,
                            payments = ids.len(),
                            %reason,
                            "BATCH QUARANTINED: the issuer refused it; its payments are kept for the crew and the \
                             issuer's operations, later payments go in new batches"
                        );
                        for id in ids {
                            self.agg.advance(id, Phase::Quarantined);
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(reply_result);
            }
            Event::ResultAck { terminal, id } => {
                if self.agg.entry(&id).is_some_and(|e| e.terminal == terminal && e.phase == Phase::Decided) {
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
            Event::NextBatch { reply } => {
                let next = match self.store.open_batch() {
                    Ok(Some(h)) => match self.store.batch_ids(h.id) {
                        Ok(ids) => NextBatch::Open(h, ids),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the open batch");
                            NextBatch::Nothing
                        }
                    },
                    Ok(None) => {
                        let ids = self.agg.next_batch(BATCH_PAYMENTS_MAX as usize);
                        if ids.is_empty() {
                            NextBatch::Nothing
                        } else {
                            NextBatch::Pending(ids)
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the open batch");
                        NextBatch::Nothing
                    }
                };
                let _ = reply.send(next);
            }
            Event::Seal { header, ids, reply } => {
                let result =
                    match self.store.seal_batch(&header, &ids, || inflight_daemon::crash_point("master.mid_seal")) {
                        Ok(t) => {
                            for id in &ids {
                                self.agg.advance(*id, Phase::InBatch);
                            }
                            self.store.durable(t).await
                        }
                        Err(e) => Err(e),
                    };
                let _ = reply.send(result);
            }
            Event::Results { batch, results, reply } => {
                let stored = async {
                    self.store.store_results(&results)?;
                    let t = self.store.finish_batch(batch.id)?;
                    self.store.durable(t).await
                }
                .await;
                if stored.is_ok() {
                    inflight_daemon::crash_point("master.after_results_stored_before_push");
                    for r in &results {
                        self.agg.advance(r.id, Phase::Decided);
                        let Some(entry) = self.agg.entry(&r.id) else { continue };
                        if let Some(l) = self.links.get(&entry.terminal) {
                            let _ = l
                                .tx
                                .try_send(Outgoing::Msg(MasterMsg::Result { id: r.id, outcome: r.outcome.clone() }));
                        }
                    }
                }
                let _ = reply.send(stored);
            }
            Event::Status { reply } => {
                let _ = reply.send(Snapshot {
                    counts: self.agg.counts(),
                    bin_list_version: self.agg.bin_list().map(|b| b.version),
                    terminals: self.links.len(),
                    aged: self.agg.aged(inflight_daemon::unix_ms_now(), self.age_flag.as_millis() as u64),
                });
            }
            Event::SetFlight { flight, reply } => {
                let r = match self.store.set_setting("flight", &flight) {
                    Ok(t) => self.store.durable(t).await,
                    Err(e) => Err(e),
                };
                if r.is_ok() {
                    tracing::info!(%flight, "flight changed by the crew");
                    self.flight = flight;
                }
                let _ = reply.send(r);
            }
        }
    }

    async fn submit(&mut self, terminal: TerminalId, payment: Payment, answered: bool, reply: mpsc::Sender<Outgoing>) {
        let digest = self.store.content_digest(&payment);
        let card = self.store.card_hash(&payment);
        let decision = self.agg.handle_submit(&terminal, &payment, answered, digest, card);
        let written = match decision {
            Decision::Store { flag } => {
                if let Some(f) = flag {
                    tracing::warn!(payment = %payment.id, flag = f.as_str(), "carrying a payment the terminal already accepted despite a failed check");
                }
                let ack = if answered { Verdict::Stored } else { Verdict::Held };
                self.store.put(&payment, digest, Verdict::Stored, flag, &self.flight, answered).map(|t| (t, ack))
            }
            Decision::Refuse(r) => {
                tracing::info!(payment = %payment.id, %terminal, reason = r.as_str(), "payment refused by an aircraft-wide check");
                self.store
                    .put(&payment, digest, Verdict::Refused(r), None, &self.flight, false)
                    .map(|t| (t, Verdict::Refused(r)))
            }
            Decision::CarryRefused(r) => {
                tracing::warn!(payment = %payment.id, flag = r.as_str(), "carrying a refused payment its terminal had already accepted");
                self.store.carry_refused(&payment, r).map(|t| (t, Verdict::Stored))
            }
            Decision::Confirm => self.store.confirm_answered(payment.id).map(|t| (t, Verdict::Stored)),
            // The original write may still be in the current group: ack only once everything
            // written so far is durable.
            Decision::Repeat(v) => Ok((self.store.latest(), v)),
            Decision::WrongTerminal => {
                tracing::warn!(%terminal, claimed = %payment.terminal, "terminal submitted a payment under another terminal's id");
                let _ = reply.try_send(Outgoing::Close(
                    ErrorCode::WrongTerminal,
                    "payment carries another terminal's id".into(),
                ));
                return;
            }
            // Nothing stored: the refusal is acked like a repeat, once what was written before
            // it is durable (it confirms nothing of its own).
            Decision::Turn(r) => {
                tracing::warn!(
                    payment = %payment.id,
                    %terminal,
                    reason = r.as_str(),
                    open = self.agg.open_of(&terminal),
                    "terminal over its share of the aircraft; payment refused, not stored"
                );
                Ok((self.store.latest(), Verdict::Refused(r)))
            }
            Decision::Full => {
                // Not acked and the connection kept: the terminal sends it again after its ack
                // timeout, while results (which make room) keep flowing. Closing the connection
                // instead made a reconnect loop in which the result acks never got through.
                tracing::warn!(
                    payment = %payment.id,
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
                let _ = self.acks.send(PendingAck { ticket, msg, reply }).await;
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
    async fn void(&mut self, terminal: TerminalId, id: PaymentId, reply: mpsc::Sender<Outgoing>) {
        let (written, carried) = match self.agg.handle_void(&terminal, id) {
            VoidDecision::Void => {
                tracing::info!(payment = %id, %terminal, "payment voided by its terminal (sale app never answered)");
                (self.store.void(id), false)
            }
            VoidDecision::Repeat => (Ok(self.store.latest()), false),
            VoidDecision::Carried => {
                tracing::error!(payment = %id, %terminal, "terminal voided a payment it had confirmed answered; carrying it");
                (Ok(self.store.latest()), true)
            }
            VoidDecision::WrongTerminal => {
                tracing::warn!(%terminal, payment = %id, "terminal voided another terminal's payment");
                let _ = reply
                    .try_send(Outgoing::Close(ErrorCode::WrongTerminal, "void of another terminal's payment".into()));
                return;
            }
        };
        match written {
            Ok(ticket) => {
                let msg = Outgoing::Msg(MasterMsg::VoidAck { id, carried });
                let _ = self.acks.send(PendingAck { ticket, msg, reply }).await;
            }
            Err(e) => {
                tracing::error!(error = %e, payment = %id, "cannot record the void; the terminal will send it again");
                self.agg.revert_void(&id);
            }
        }
    }
}

/// Waits for durability and sends acks, a group at a time.
pub(crate) async fn run_acker(store: Arc<MasterStore>, mut rx: mpsc::Receiver<PendingAck>) {
    let mut group = Vec::new();
    while let Some(first) = rx.recv().await {
        group.push(first);
        while let Ok(more) = rx.try_recv() {
            group.push(more);
        }
        // Tickets grow monotonically, so the largest covers the whole group.
        let ticket = group.iter().map(|a| a.ticket).max().unwrap_or(Ticket::NONE);
        match store.durable(ticket).await {
            Ok(()) => {
                inflight_daemon::crash_point("master.after_flush_before_ack");
                for a in group.drain(..) {
                    // A full or closed connection loses the ack; the terminal re-sends.
                    let _ = a.reply.try_send(a.msg);
                }
                // Give the connection writers a moment to put the acks on the wire.
                tokio::task::yield_now().await;
                inflight_daemon::crash_point("master.after_ack_sent");
            }
            Err(e) => {
                tracing::error!(error = %e, unacked = group.len(), "flush failed; not acking");
                group.clear();
            }
        }
    }
}
