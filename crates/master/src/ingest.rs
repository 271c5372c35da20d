//! The ingest path: one actor decides on every submitted payment (`inflight-core`'s
//! `Aggregator`) and writes it; one acker waits for durability and sends the acks. While the
//! acker waits for one flush, the next group of writes accumulates: that is the group commit.

use std::sync::Arc;

use inflight_core::aggregator::{Aggregator, Decision, IndexEntry};
use inflight_store::{content_digest, MasterStore, StoreError, Ticket};
use inflight_wire::{ErrorCode, Payment, PaymentId, TerminalId, Verdict};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Capacity of the ingest queue. Connection readers wait when it is full, which
/// back-pressures terminals through QUIC flow control instead of growing memory.
pub const INGEST_QUEUE_MAX: usize = 16_384;
/// Capacity of the queue of acks waiting for durability.
pub const ACK_QUEUE_MAX: usize = 65_536;
/// Capacity of each connection's outgoing queue: a terminal has at most its forward window
/// (at most `inflight_core::outbox::WINDOW_MAX`) payments in flight, so acks fit.
pub const CONN_OUTGOING_MAX: usize = 2 * inflight_core::outbox::WINDOW_MAX;

/// What a connection writer sends.
#[derive(Debug)]
pub enum Outgoing {
    /// An ack frame.
    Ack(PaymentId, Verdict),
    /// An error frame, then close the connection.
    Close(ErrorCode, String),
}

/// Inputs of the ingest actor.
#[derive(Debug)]
pub enum Ingest {
    /// A payment from the terminal whose certificate is `terminal`.
    Submit { terminal: TerminalId, payment: Box<Payment>, answered: bool, reply: mpsc::Sender<Outgoing> },
    /// Counts for the status report.
    Counts { reply: oneshot::Sender<inflight_core::aggregator::Counts> },
}

struct PendingAck {
    ticket: Ticket,
    id: PaymentId,
    verdict: Verdict,
    reply: mpsc::Sender<Outgoing>,
}

/// Loads the index from the store into a fresh aggregator.
pub fn restore(store: &MasterStore) -> Result<Aggregator, StoreError> {
    let mut agg = Aggregator::new();
    for r in store.index() {
        let (id, digest, verdict) = r?;
        agg.restore(id, IndexEntry { digest, verdict });
    }
    Ok(agg)
}

/// The ingest actor: runs until its input closes or `cancel`.
pub async fn run(
    mut agg: Aggregator,
    store: Arc<MasterStore>,
    mut rx: mpsc::Receiver<Ingest>,
    cancel: CancellationToken,
) {
    let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE_MAX);
    let acker = tokio::spawn(acker(store.clone(), ack_rx));
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            msg = rx.recv() => match msg { Some(m) => m, None => break },
        };
        match msg {
            Ingest::Counts { reply } => {
                let _ = reply.send(agg.counts());
            }
            Ingest::Submit { terminal, payment, answered, reply } => {
                let digest = content_digest(&payment);
                let decision = agg.handle_submit(&terminal, &payment, answered, digest);
                let written = match decision {
                    Decision::Store => store.put(&payment, digest, Verdict::Stored).map(|t| (t, Verdict::Stored)),
                    Decision::Refuse(r) => {
                        store.put(&payment, digest, Verdict::Refused(r)).map(|t| (t, Verdict::Refused(r)))
                    }
                    Decision::CarryRefused(r) => {
                        tracing::warn!(payment = %payment.id, flag = r.as_str(), "carrying a payment the terminal already accepted despite a failed check");
                        store.carry_refused(&payment, r).map(|t| (t, Verdict::Stored))
                    }
                    // The original write may still be in the current group: ack only once
                    // everything written so far is durable.
                    Decision::Repeat(v) => Ok((store.latest(), v)),
                    Decision::WrongTerminal => {
                        tracing::warn!(%terminal, claimed = %payment.terminal, "terminal submitted a payment under another terminal's id");
                        let _ = reply.try_send(Outgoing::Close(
                            ErrorCode::WrongTerminal,
                            "payment carries another terminal's id".into(),
                        ));
                        continue;
                    }
                    Decision::Full => {
                        tracing::error!("master payment store is full; refusing new payments");
                        let _ = reply.try_send(Outgoing::Close(ErrorCode::ShuttingDown, "master is full".into()));
                        continue;
                    }
                };
                match written {
                    Ok((ticket, verdict)) => {
                        if ack_tx.send(PendingAck { ticket, id: payment.id, verdict, reply }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        // No ack: the terminal keeps the payment and sends it again.
                        tracing::error!(error = %e, payment = %payment.id, "cannot store payment");
                        agg.revert(&payment.id, decision);
                    }
                }
            }
        }
    }
    drop(ack_tx);
    let _ = acker.await;
}

async fn acker(store: Arc<MasterStore>, mut rx: mpsc::Receiver<PendingAck>) {
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
                for a in group.drain(..) {
                    // A full or closed connection loses the ack; the terminal re-sends.
                    let _ = a.reply.try_send(Outgoing::Ack(a.id, a.verdict));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, unacked = group.len(), "flush failed; not acking");
                group.clear();
            }
        }
    }
}
