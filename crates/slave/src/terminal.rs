//! The terminal actor: owns the outbox, the holdings and the captures waiting for a verdict.
//! One task, one `select!` over its event channel, its next deadline and shutdown; the
//! decisions themselves are `inflight-core`'s.

use std::collections::HashMap;
use std::sync::Arc;

use inflight_core::capture::{self, CaptureRequest, Holdings, Refusal};
use inflight_core::outbox::{Outbox, Settled};
use inflight_store::{SlaveState, SlaveStore, StoreError};
use inflight_wire::{
    AuthOutcome, BinList, Money, Payment, PaymentId, RefusalReason, SignedBinList, TerminalMsg, Verdict,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::CaptureAnswer;
use crate::config::SlaveConfig;

/// Capacity of the actor's event channel: captures, verdicts and link changes queue here.
/// Senders wait when it is full, which back-pressures the sale apps and the link reader.
pub const EVENTS_MAX: usize = 4096;
/// A clock further than this from the master's is logged as a warning (it is corrected either way).
const CLOCK_OFFSET_WARN_MS: i64 = 60_000;

/// Room in the link's queue for result acks, beyond the forward window. An ack that finds no
/// room is dropped; the master pushes the result again on the next connection.
pub const RESULT_ACKS_MAX: usize = 1024;

/// Everything the actor reacts to.
#[derive(Debug)]
pub(crate) enum Event {
    /// A sale app asks to take a payment (`request_id`: its own id for the sale, if any).
    Capture { req: CaptureRequest, request_id: Option<String>, reply: oneshot::Sender<CaptureAnswer> },
    /// A captured payment's write is durable (or failed).
    Durable { id: PaymentId, amount: Money, result: Result<(), StoreError>, reply: oneshot::Sender<CaptureAnswer> },
    /// A connection to the master is up; frames for it go into `tx`.
    Connected { tx: mpsc::Sender<TerminalMsg> },
    /// The connection is gone.
    Disconnected,
    /// The master's verdict on a payment.
    Verdict { id: PaymentId, verdict: Verdict },
    /// A signed BIN list pushed by the master (not yet verified).
    BinList(SignedBinList),
    /// The issuer's decision on one of this terminal's payments.
    Result { id: PaymentId, outcome: AuthOutcome },
    /// A result is durable: acknowledge it to the master.
    ResultDurable { id: PaymentId },
    /// The master's clock minus ours, learnt at `Hello`.
    ClockOffset(i64),
    /// A status query.
    Status { payment: Option<PaymentId>, reply: oneshot::Sender<Value> },
}

struct Waiter {
    deadline: Instant,
    reply: oneshot::Sender<CaptureAnswer>,
}

pub(crate) struct Terminal {
    cfg: Arc<SlaveConfig>,
    store: Arc<SlaveStore>,
    /// What must still reach the master.
    outbox: Outbox,
    /// What this terminal holds un-acked, for its caps.
    held: Holdings,
    /// Amount of each payment in the outbox, to release holdings on its verdict.
    amounts: HashMap<PaymentId, Money>,
    /// Captures whose sale app is waiting for the master's verdict.
    waiting: HashMap<PaymentId, Waiter>,
    /// Captures not yet answered, with retries (same request id) waiting for the same answer.
    unanswered: HashMap<PaymentId, Vec<oneshot::Sender<CaptureAnswer>>>,
    /// Frames to the master, while connected.
    link: Option<mpsc::Sender<TerminalMsg>>,
    /// For tasks that report back (durability waits).
    events: mpsc::Sender<Event>,
    /// Origin of the outbox's monotonic milliseconds.
    epoch: Instant,
    /// The issuer's list, signature verified; `None` until one arrives (every card refused).
    bins: Option<BinList>,
    /// The master's clock minus ours; `None` until a master said `Hello` since start.
    clock_offset_ms: Option<i64>,
}

impl Terminal {
    /// Rebuilds the actor's state from the store: every payment the master has not acked.
    pub(crate) fn restore(
        cfg: Arc<SlaveConfig>,
        store: Arc<SlaveStore>,
        events: mpsc::Sender<Event>,
    ) -> Result<Self, StoreError> {
        let mut outbox = Outbox::new(cfg.forward_window, cfg.ack_timeout.as_millis() as u64);
        let mut held = Holdings::default();
        let mut amounts = HashMap::new();
        for (view, answered) in store.unacked()? {
            outbox.insert(view.id, answered);
            held.add(view.amount);
            amounts.insert(view.id, view.amount);
        }
        if !outbox.is_empty() {
            tracing::info!(unacked = outbox.len(), "resuming: payments the master has not acked will be re-sent");
        }
        let bins = match store.bin_list()? {
            None => None,
            Some(signed) => match inflight_store::verify_bin_list(&cfg.issuer_public_key, &signed) {
                Ok(list) => Some(list),
                Err(e) => {
                    tracing::error!(error = %e, "stored BIN list does not verify; refusing cards until a valid one arrives");
                    None
                }
            },
        };
        Ok(Self {
            cfg,
            store,
            outbox,
            held,
            amounts,
            waiting: HashMap::new(),
            unanswered: HashMap::new(),
            link: None,
            events,
            epoch: Instant::now(),
            bins,
            clock_offset_ms: None,
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Event>, cancel: CancellationToken) {
        loop {
            self.pump();
            let deadline = self.next_deadline();
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = sleep_until(deadline) => self.handle_timeouts(),
            }
        }
        // Sale apps still waiting get their answer: their payments are durable and queued.
        let waiting: Vec<(PaymentId, Waiter)> = self.waiting.drain().collect();
        for (id, w) in waiting {
            self.answer(id, w.reply, CaptureAnswer::accepted(id.to_string()));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let outbox = self.outbox.poll_timeout().map(|ms| self.epoch + std::time::Duration::from_millis(ms));
        let waiter = self.waiting.values().map(|w| w.deadline).min();
        [outbox, waiter].into_iter().flatten().min()
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Capture { req, request_id, reply } => self.capture(req, request_id, reply),
            Event::Durable { id, amount, result, reply } => self.durable(id, amount, result, reply),
            Event::Connected { tx } => {
                self.link = Some(tx);
                self.outbox.on_connected();
            }
            Event::Disconnected => {
                self.link = None;
                self.outbox.on_disconnected();
            }
            Event::Verdict { id, verdict } => self.verdict(id, verdict),
            Event::ClockOffset(offset) => {
                if offset.abs() > CLOCK_OFFSET_WARN_MS {
                    tracing::warn!(
                        offset_ms = offset,
                        "this terminal's clock is off; using the master's time for captures"
                    );
                }
                self.clock_offset_ms = Some(offset);
            }
            Event::BinList(signed) => self.bin_list(signed),
            Event::Result { id, outcome } => match self.store.store_result(id, &outcome) {
                Ok(ticket) => {
                    let (store, events) = (self.store.clone(), self.events.clone());
                    tokio::spawn(async move {
                        if store.durable(ticket).await.is_ok() {
                            let _ = events.send(Event::ResultDurable { id }).await;
                        }
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, payment = %id, "cannot store the issuer's result; the master will send it again")
                }
            },
            Event::ResultDurable { id } => {
                inflight_daemon::crash_point("slave.after_result_stored_before_ack");
                // The master had the payment; if its ack was lost, the outbox can let it go now.
                if self.outbox.on_verdict(id, Verdict::Stored) == Settled::Forwarded {
                    if let Some(amount) = self.amounts.remove(&id) {
                        self.held.remove(amount);
                    }
                }
                if let Some(link) = &self.link {
                    let _ = link.try_send(TerminalMsg::ResultAck { id });
                }
            }
            Event::Status { payment, reply } => {
                let _ = reply.send(self.status(payment));
            }
        }
    }

    /// Sends a capture's answer, and the same answer to every retry of it.
    fn answer(&mut self, id: PaymentId, reply: oneshot::Sender<CaptureAnswer>, answer: CaptureAnswer) {
        let retries = self.unanswered.remove(&id).unwrap_or_default();
        send_all(reply, retries, answer);
    }

    /// A retry of a capture already taken under `request_id`: the first capture's answer.
    fn replay(&mut self, id: PaymentId, reply: oneshot::Sender<CaptureAnswer>) {
        if let Some(retries) = self.unanswered.get_mut(&id) {
            retries.push(reply);
            return;
        }
        let mut answer = match self.store.view(id) {
            Ok(Some(v)) => match v.state {
                SlaveState::Refused(r) => CaptureAnswer::rejected(Some(id.to_string()), r.as_str()),
                SlaveState::Captured { .. } | SlaveState::Forwarded => CaptureAnswer::accepted(id.to_string()),
            },
            _ => CaptureAnswer::rejected(None, Refusal::StorageError.as_str()),
        };
        answer.replayed = true;
        // Whatever was written is durable before anyone hears `accepted`.
        let store = self.store.clone();
        tokio::spawn(async move {
            let answer = match store.durable(store.latest()).await {
                Ok(()) => answer,
                Err(_) => CaptureAnswer::rejected(Some(id.to_string()), Refusal::StorageError.as_str()),
            };
            let _ = reply.send(answer);
        });
    }

    fn capture(&mut self, req: CaptureRequest, request_id: Option<String>, reply: oneshot::Sender<CaptureAnswer>) {
        if let Some(rid) = &request_id {
            if rid.is_empty() || rid.len() > REQUEST_ID_BYTES_MAX || !rid.bytes().all(|b| b.is_ascii_graphic()) {
                let _ = reply.send(CaptureAnswer::rejected(None, "bad_request_id"));
                return;
            }
            match self.store.request(rid) {
                Ok(Some(id)) => return self.replay(id, reply),
                Ok(None) => {}
                Err(_) => {
                    let _ = reply.send(CaptureAnswer::rejected(None, Refusal::StorageError.as_str()));
                    return;
                }
            }
        }
        let now = self.sane_now();
        let valid = match capture::validate(&req, now, self.bins.as_ref(), &self.cfg.caps, &self.held) {
            Ok(v) => v,
            Err(r) => {
                tracing::info!(reason = r.as_str(), "capture refused at the terminal");
                let _ = reply.send(CaptureAnswer::rejected(None, r.as_str()));
                return;
            }
        };
        let mut random = [0u8; 10];
        if self.store.vault().random(&mut random).is_err() {
            let _ = reply.send(CaptureAnswer::rejected(None, Refusal::StorageError.as_str()));
            return;
        }
        let payment = Payment {
            id: PaymentId::mint(now, random),
            terminal: self.cfg.terminal_id.clone(),
            pan: valid.pan,
            expiry: valid.expiry,
            amount: valid.amount,
            seat: valid.seat,
            captured_unix_ms: now,
            items: valid.items,
        };
        let ticket = match self.store.put_captured(&payment, request_id.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "capture refused: cannot store");
                let _ = reply.send(CaptureAnswer::rejected(None, Refusal::StorageError.as_str()));
                return;
            }
        };
        inflight_daemon::crash_point("slave.after_write_before_flush");
        // Count it against the caps now, so concurrent captures cannot overshoot them.
        self.held.add(payment.amount);
        self.unanswered.insert(payment.id, Vec::new());
        let (id, amount, store, events) = (payment.id, payment.amount, self.store.clone(), self.events.clone());
        tokio::spawn(async move {
            let result = store.durable(ticket).await;
            let _ = events.send(Event::Durable { id, amount, result, reply }).await;
        });
    }

    fn durable(
        &mut self,
        id: PaymentId,
        amount: Money,
        result: Result<(), StoreError>,
        reply: oneshot::Sender<CaptureAnswer>,
    ) {
        if let Err(e) = result {
            tracing::error!(error = %e, payment = %id, "capture refused: store did not make it durable");
            self.held.remove(amount);
            self.answer(id, reply, CaptureAnswer::rejected(None, Refusal::StorageError.as_str()));
            return;
        }
        inflight_daemon::crash_point("slave.after_flush_before_answer");
        tracing::debug!(payment = %id, %amount, "captured and durable");
        self.outbox.insert(id, false);
        self.amounts.insert(id, amount);
        if self.cfg.verdict_wait.is_zero() {
            self.answer_accepted_unverdicted(id, reply);
        } else {
            self.waiting.insert(id, Waiter { deadline: Instant::now() + self.cfg.verdict_wait, reply });
        }
    }

    /// The verdict wait ran out: record durably that the sale app is told `accepted` (so the
    /// master must carry it, even after a restart), then tell it.
    fn answer_accepted_unverdicted(&mut self, id: PaymentId, reply: oneshot::Sender<CaptureAnswer>) {
        self.outbox.mark_answered(id);
        let store = self.store.clone();
        let retries = self.unanswered.remove(&id).unwrap_or_default();
        match store.set_state(id, SlaveState::Captured { answered: true }) {
            Ok(ticket) => {
                tokio::spawn(async move {
                    let answer = match store.durable(ticket).await {
                        Ok(()) => CaptureAnswer::accepted(id.to_string()),
                        Err(_) => CaptureAnswer::rejected(Some(id.to_string()), Refusal::StorageError.as_str()),
                    };
                    send_all(reply, retries, answer);
                });
            }
            Err(_) => {
                send_all(reply, retries, CaptureAnswer::rejected(Some(id.to_string()), Refusal::StorageError.as_str()))
            }
        }
    }

    /// The time captures are judged and stamped with: the master's, when known (see
    /// `MasterMsg::Hello`), else this terminal's own clock.
    fn sane_now(&self) -> u64 {
        let local = inflight_daemon::unix_ms_now() as i64;
        (local + self.clock_offset_ms.unwrap_or(0)).max(0) as u64
    }

    fn bin_list(&mut self, signed: SignedBinList) {
        let list = match inflight_store::verify_bin_list(&self.cfg.issuer_public_key, &signed) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "BIN list from the master rejected; keeping the current one");
                return;
            }
        };
        if self.bins.as_ref().is_some_and(|cur| cur.version >= list.version) {
            return;
        }
        match self.store.set_bin_list(&signed) {
            Ok(_) => {
                tracing::info!(
                    version = list.version,
                    rules = list.rules.len(),
                    valid_until_unix_ms = list.valid_until_unix_ms,
                    "BIN list installed"
                );
                self.bins = Some(list);
            }
            Err(e) => tracing::error!(error = %e, "cannot store the BIN list"),
        }
    }

    fn verdict(&mut self, id: PaymentId, verdict: Verdict) {
        let settled = self.outbox.on_verdict(id, verdict);
        let new_state = match settled {
            Settled::Unknown | Settled::Resubmit => return,
            Settled::Forwarded => SlaveState::Forwarded,
            Settled::Refused(r) => SlaveState::Refused(r),
        };
        inflight_daemon::crash_point("slave.after_ack_received_before_marking");
        // Not waited on: if this is lost in a crash, the payment is re-sent and the master
        // answers it again identically.
        if let Err(e) = self.store.set_state(id, new_state) {
            tracing::error!(error = %e, payment = %id, "cannot record the master's verdict; it will be asked again");
        }
        if let Some(amount) = self.amounts.remove(&id) {
            self.held.remove(amount);
        }
        if let Some(w) = self.waiting.remove(&id) {
            let answer = match settled {
                Settled::Refused(r) => CaptureAnswer::rejected(Some(id.to_string()), r.as_str()),
                _ => CaptureAnswer::accepted(id.to_string()),
            };
            self.answer(id, w.reply, answer);
        }
    }

    fn handle_timeouts(&mut self) {
        let now = Instant::now();
        self.outbox.handle_timeout(self.now_ms());
        let due: Vec<PaymentId> = self.waiting.iter().filter(|(_, w)| w.deadline <= now).map(|(id, _)| *id).collect();
        for id in due {
            if let Some(w) = self.waiting.remove(&id) {
                self.answer_accepted_unverdicted(id, w.reply);
            }
        }
    }

    /// Sends whatever the outbox releases.
    fn pump(&mut self) {
        let Some(link) = self.link.clone() else {
            return;
        };
        while let Some(t) = self.outbox.poll_transmit(self.now_ms()) {
            let payment = match self.store.payment(t.id) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    tracing::error!(payment = %t.id, "payment in the outbox has no card data; not sent");
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, payment = %t.id, "cannot read payment to forward");
                    continue;
                }
            };
            // The channel holds as many frames as the outbox window, so it cannot be full.
            if link.try_send(TerminalMsg::Submit { payment, answered: t.answered }).is_err() {
                self.link = None;
                self.outbox.on_disconnected();
                return;
            }
        }
    }

    fn status(&self, payment: Option<PaymentId>) -> Value {
        match payment {
            Some(id) => match self.store.view(id) {
                Ok(Some(v)) => view_json(&v),
                Ok(None) => json!({ "payment_id": id.to_string(), "error": "unknown_payment" }),
                Err(e) => json!({ "error": "storage_error", "detail": e.to_string() }),
            },
            None => {
                let counts = self.store.counts().unwrap_or_default();
                json!({
                    "terminal_id": self.cfg.terminal_id.as_str(),
                    "master_connected": self.link.is_some(),
                    "bin_list_version": self.bins.as_ref().map(|b| b.version),
                    "bin_list_valid": self.bins.as_ref().is_some_and(|b| b.is_valid_at(self.sane_now())),
                    "clock_offset_ms": self.clock_offset_ms,
                    "payments": {
                        "captured": counts.captured,
                        "forwarded": counts.forwarded,
                        "refused": counts.refused,
                        "decided": counts.decided,
                    },
                    "outbox": { "unacked": self.outbox.len(), "in_flight": self.outbox.in_flight() },
                })
            }
        }
    }
}

/// Longest request id a sale app may give, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 64;

fn send_all(
    reply: oneshot::Sender<CaptureAnswer>,
    retries: Vec<oneshot::Sender<CaptureAnswer>>,
    answer: CaptureAnswer,
) {
    for r in retries {
        let mut a = answer.clone();
        a.replayed = true;
        let _ = r.send(a);
    }
    let _ = reply.send(answer);
}

/// One payment's status as JSON (masked card only).
pub(crate) fn view_json(v: &inflight_store::SlaveView) -> Value {
    let (state, reason, answered): (&str, Option<RefusalReason>, Option<bool>) = match v.state {
        SlaveState::Captured { answered } => ("captured", None, Some(answered)),
        SlaveState::Forwarded => ("forwarded", None, None),
        SlaveState::Refused(r) => ("refused", Some(r), None),
    };
    let p = &v.payment;
    let mut out = json!({
        "payment_id": p.id.to_string(),
        "state": state,
        "card": p.card.to_string(),
        "amount_minor": p.amount.amount_minor(),
        "currency": p.amount.currency().as_str(),
        "seat": p.seat,
        "captured_unix_ms": p.captured_unix_ms,
        "card_data_erased": p.card_data_erased,
    });
    if let Some(r) = reason {
        out["reason"] = json!(r.as_str());
    }
    if let Some(a) = answered {
        out["answered"] = json!(a);
    }
    match &v.outcome {
        Some(AuthOutcome::Approved { auth_code }) => {
            out["outcome"] = json!("approved");
            out["auth_code"] = json!(auth_code);
        }
        Some(AuthOutcome::Declined(r)) => {
            out["outcome"] = json!("declined");
            out["decline_reason"] = json!(r.as_str());
        }
        None => {}
    }
    out
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
