//! The terminal actor: owns the outbox, the holdings and the captures waiting for a verdict.
//! One task, one `select!` over its event channel, its next deadline and shutdown; the
//! decisions themselves are `inflight-core`'s.

use std::collections::HashMap;
use std::sync::Arc;

use inflight_core::capture::{self, CaptureRequest, Holdings, Refusal};
use inflight_core::outbox::{Outbox, Settled, Transmit};
use inflight_store::{SlaveState, SlaveStore, StoreError};
use inflight_wire::{
    AuthOutcome, BinList, Money, Payment, PaymentId, RefusalReason, SignedBinList, TerminalMsg, Verdict,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::answer::{self, Answer, NotAnswerable, Reply};
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
    Capture { req: CaptureRequest, request_id: Option<String>, reply: oneshot::Sender<Reply> },
    /// A captured payment's write is durable (or failed).
    Durable { id: PaymentId, amount: Money, result: Result<(), StoreError>, reply: oneshot::Sender<Reply> },
    /// The answered mark of `id` is durable and its sale app has been told `accepted`: the
    /// master may now carry it.
    Told { id: PaymentId },
    /// The void mark of `id` is durable: the master may be told.
    VoidDurable { id: PaymentId },
    /// A connection to the master is up; frames for it go into `tx`.
    Connected { tx: mpsc::Sender<TerminalMsg> },
    /// The connection is gone.
    Disconnected,
    /// The master's verdict on a payment.
    Verdict { id: PaymentId, verdict: Verdict },
    /// The master's answer to a void.
    VoidAck { id: PaymentId, carried: bool },
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
    reply: oneshot::Sender<Reply>,
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
    unanswered: HashMap<PaymentId, Vec<oneshot::Sender<Reply>>>,
    /// Payments whose sale app was never answered and that nobody waits for (found at restart,
    /// or left by a failed write), with the time after which they are voided unless a retry
    /// with their request id claims them first.
    orphans: HashMap<PaymentId, Instant>,
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
    /// Rebuilds the actor's state from the store: every payment not settled with the master.
    pub(crate) fn restore(
        cfg: Arc<SlaveConfig>,
        store: Arc<SlaveStore>,
        events: mpsc::Sender<Event>,
    ) -> Result<Self, StoreError> {
        let mut outbox = Outbox::new(cfg.forward_window, cfg.ack_timeout.as_millis() as u64);
        let mut held = Holdings::default();
        let mut amounts = HashMap::new();
        let mut orphans = HashMap::new();
        let claim_until = Instant::now() + cfg.claim_grace;
        for (view, state) in store.unacked()? {
            match state {
                SlaveState::Captured { answered } => {
                    outbox.insert(view.id, answered);
                    held.add(view.amount);
                    amounts.insert(view.id, view.amount);
                    if !answered {
                        orphans.insert(view.id, claim_until);
                    }
                }
                SlaveState::Voided { master_acked: false } => outbox.insert_voided(view.id),
                _ => {}
            }
        }
        if !outbox.is_empty() {
            tracing::info!(
                unacked = outbox.len(),
                never_answered = orphans.len(),
                claim_grace_ms = cfg.claim_grace.as_millis() as u64,
                "resuming: unsettled payments will be re-sent; those never answered are voided unless claimed"
            );
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
            orphans,
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
        // Sale apps still waiting for a verdict: their payments are durable and queued, so
        // they are answered `accepted` — through the same durable mark as every other answer.
        let waiting: Vec<(PaymentId, Waiter)> = self.waiting.drain().collect();
        let store = self.store.clone();
        for (id, w) in waiting {
            let retries = self.unanswered.remove(&id).unwrap_or_default();
            let answer = match answer::mark(&store, id) {
                Ok(marked) => match tokio::task::block_in_place(|| marked.durable_blocking(&store)) {
                    Ok(told) => Answer::Accepted(told),
                    Err(_) => Answer::Unknown { id },
                },
                Err(NotAnswerable::Settled(reason)) => Answer::rejected(Some(id), reason),
                Err(NotAnswerable::Store(_)) => Answer::rejected(Some(id), Refusal::StorageError.as_str()),
            };
            send_all(w.reply, retries, &answer);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let outbox = self.outbox.poll_timeout().map(|ms| self.epoch + std::time::Duration::from_millis(ms));
        let waiter = self.waiting.values().map(|w| w.deadline).min();
        let orphan = self.orphans.values().min().copied();
        [outbox, waiter, orphan].into_iter().flatten().min()
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Capture { req, request_id, reply } => self.capture(req, request_id, reply),
            Event::Durable { id, amount, result, reply } => self.durable(id, amount, result, reply),
            Event::Told { id } => self.outbox.mark_answered(id),
            Event::VoidDurable { id } => {
                self.outbox.void(id);
            }
            Event::Connected { tx } => {
                self.link = Some(tx);
                self.outbox.on_connected();
            }
            Event::Disconnected => {
                self.link = None;
                self.outbox.on_disconnected();
            }
            Event::Verdict { id, verdict } => self.verdict(id, verdict),
            Event::VoidAck { id, carried } => {
                if let Settled::Voided { carried } = self.outbox.on_void_ack(id, carried) {
                    if carried {
                        tracing::error!(payment = %id, "the master carries a payment this terminal voided");
                    }
                    if let Err(e) = self.store.set_state(id, SlaveState::Voided { master_acked: true }) {
                        tracing::error!(error = %e, payment = %id, "cannot record the master's void ack");
                    }
                }
            }
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
                // The master had the payment, marked answered; if its ack was lost, the outbox
                // can let it go now.
                if self.outbox.on_verdict(id, Verdict::Stored) == Settled::Forwarded {
                    self.release(id);
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

    /// Releases a settled payment's amount from the terminal's caps.
    fn release(&mut self, id: PaymentId) {
        if let Some(amount) = self.amounts.remove(&id) {
            self.held.remove(amount);
        }
    }

    /// Answers a capture, and every retry of it, with a rejection.
    fn reject(&mut self, id: PaymentId, reply: oneshot::Sender<Reply>, reason: &'static str) {
        let retries = self.unanswered.remove(&id).unwrap_or_default();
        send_all(reply, retries, &Answer::rejected(Some(id), reason));
    }

    /// The one path to an `accepted` answer: record durably that the sale app is told, then
    /// tell it (and every retry waiting for the same answer), then let the master carry it.
    fn tell_accepted(&mut self, id: PaymentId, reply: oneshot::Sender<Reply>) {
        self.tell(id, reply, false);
    }

    /// [`Terminal::tell_accepted`]; `replayed` marks the first reply as answering a retry.
    fn tell(&mut self, id: PaymentId, reply: oneshot::Sender<Reply>, replayed: bool) {
        let retries = self.unanswered.remove(&id).unwrap_or_default();
        if reply.is_closed() && retries.iter().all(oneshot::Sender::is_closed) {
            // Nobody is listening any more: recording that a sale app is told `accepted` would
            // charge a sale nobody heard about. Leave it unanswered (claimable, else voided).
            if !replayed {
                self.orphans.insert(id, Instant::now() + self.cfg.claim_grace);
            }
            return;
        }
        self.orphans.remove(&id);
        let marked = match answer::mark(&self.store, id) {
            Ok(m) => m,
            Err(NotAnswerable::Settled(reason)) => {
                return send_all_as(reply, retries, &Answer::rejected(Some(id), reason), replayed)
            }
            Err(NotAnswerable::Store(e)) => {
                tracing::error!(error = %e, payment = %id, "cannot record the answer; answering storage_error");
                return send_all_as(
                    reply,
                    retries,
                    &Answer::rejected(Some(id), Refusal::StorageError.as_str()),
                    replayed,
                );
            }
        };
        // From here the payment must be carried: a refusal of its unanswered submit parks it.
        self.outbox.begin_answer(id);
        let (store, events) = (self.store.clone(), self.events.clone());
        tokio::spawn(async move {
            match marked.durable(&store).await {
                Ok(told) => {
                    send_all_as(reply, retries, &Answer::Accepted(told), replayed);
                    let _ = events.send(Event::Told { id }).await;
                }
                // The mark may have reached the disk anyway: the outcome is unknown, not
                // `rejected`; the sale app learns it by retrying with its request id.
                Err(_) => send_all_as(reply, retries, &Answer::Unknown { id }, replayed),
            }
        });
    }

    /// A retry of a capture already taken under `request_id`: the first capture's answer, or,
    /// for a payment never answered and not yet voided, a claim of it (`accepted`).
    fn replay(&mut self, id: PaymentId, reply: oneshot::Sender<Reply>) {
        if let Some(retries) = self.unanswered.get_mut(&id) {
            retries.push(reply);
            return;
        }
        tracing::info!(payment = %id, "capture retried with its request id");
        self.tell(id, reply, true);
    }

    fn capture(&mut self, req: CaptureRequest, request_id: Option<String>, reply: oneshot::Sender<Reply>) {
        if let Some(rid) = &request_id {
            if rid.is_empty() || rid.len() > REQUEST_ID_BYTES_MAX || !rid.bytes().all(|b| b.is_ascii_graphic()) {
                let _ = reply.send(Answer::rejected(None, "bad_request_id").reply(false));
                return;
            }
            match self.store.request(rid) {
                Ok(Some(id)) => return self.replay(id, reply),
                Ok(None) => {}
                Err(_) => {
                    let _ = reply.send(Answer::rejected(None, Refusal::StorageError.as_str()).reply(false));
                    return;
                }
            }
        }
        let now = self.sane_now();
        let valid = match capture::validate(&req, now, self.bins.as_ref(), &self.cfg.caps, &self.held) {
            Ok(v) => v,
            Err(r) => {
                tracing::info!(reason = r.as_str(), "capture refused at the terminal");
                let _ = reply.send(Answer::rejected(None, r.as_str()).reply(false));
                return;
            }
        };
        let mut random = [0u8; 10];
        if self.store.vault().random(&mut random).is_err() {
            let _ = reply.send(Answer::rejected(None, Refusal::StorageError.as_str()).reply(false));
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
                let _ = reply.send(Answer::rejected(None, Refusal::StorageError.as_str()).reply(false));
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

    fn durable(&mut self, id: PaymentId, amount: Money, result: Result<(), StoreError>, reply: oneshot::Sender<Reply>) {
        if let Err(e) = result {
            // The record may still reach the disk: after a restart it is a payment never
            // answered, voided unless a retry with its request id claims it.
            tracing::error!(error = %e, payment = %id, "capture refused: store did not make it durable");
            self.held.remove(amount);
            let retries = self.unanswered.remove(&id).unwrap_or_default();
            send_all(reply, retries, &Answer::rejected(None, Refusal::StorageError.as_str()));
            return;
        }
        inflight_daemon::crash_point("slave.after_flush_before_answer");
        tracing::debug!(payment = %id, %amount, "captured and durable");
        self.outbox.insert(id, false);
        self.amounts.insert(id, amount);
        if self.cfg.verdict_wait.is_zero() {
            self.tell_accepted(id, reply);
        } else {
            self.waiting.insert(id, Waiter { deadline: Instant::now() + self.cfg.verdict_wait, reply });
        }
    }

    /// Voids a payment whose sale app was never answered and that no retry claimed: it is
    /// marked voided durably (card data erased) before the master is told, so a void the master
    /// heard of is never undone by a restart.
    fn void_orphan(&mut self, id: PaymentId) {
        self.orphans.remove(&id);
        if self.unanswered.contains_key(&id) || self.waiting.contains_key(&id) {
            return;
        }
        match self.store.set_state(id, SlaveState::Voided { master_acked: false }) {
            Ok(ticket) => {
                tracing::warn!(payment = %id, "voided: its sale app was never told accepted and no retry claimed it");
                self.release(id);
                let (store, events) = (self.store.clone(), self.events.clone());
                tokio::spawn(async move {
                    if store.durable(ticket).await.is_ok() {
                        let _ = events.send(Event::VoidDurable { id }).await;
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, payment = %id, "cannot void a payment never answered"),
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
        if !inflight_core::binlist::prefer(self.bins.as_ref(), &list, self.sane_now()) {
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
            Settled::Unknown | Settled::Resubmit | Settled::Voided { .. } => return,
            // The master holds it; it carries it only once told the sale app was answered.
            Settled::AwaitingAnswer => {
                if let Some(w) = self.waiting.remove(&id) {
                    self.tell_accepted(id, w.reply);
                }
                return;
            }
            Settled::Forwarded => SlaveState::Forwarded,
            Settled::Refused(r) => SlaveState::Refused(r),
        };
        inflight_daemon::crash_point("slave.after_ack_received_before_marking");
        // Not waited on: if this is lost in a crash, the payment is re-sent and the master
        // answers it again identically.
        if let Err(e) = self.store.set_state(id, new_state) {
            tracing::error!(error = %e, payment = %id, "cannot record the master's verdict; it will be asked again");
        }
        self.release(id);
        self.orphans.remove(&id);
        if let (Some(w), Settled::Refused(r)) = (self.waiting.remove(&id), settled) {
            self.reject(id, w.reply, r.as_str());
        }
    }

    fn handle_timeouts(&mut self) {
        let now = Instant::now();
        self.outbox.handle_timeout(self.now_ms());
        let due: Vec<PaymentId> = self.waiting.iter().filter(|(_, w)| w.deadline <= now).map(|(id, _)| *id).collect();
        for id in due {
            if let Some(w) = self.waiting.remove(&id) {
                // The verdict wait ran out: the payment is durable here and will be forwarded.
                self.tell_accepted(id, w.reply);
            }
        }
        let orphans: Vec<PaymentId> = self.orphans.iter().filter(|(_, d)| **d <= now).map(|(id, _)| *id).collect();
        for id in orphans {
            self.void_orphan(id);
        }
    }

    /// Sends whatever the outbox releases.
    fn pump(&mut self) {
        let Some(link) = self.link.clone() else {
            return;
        };
        while let Some(t) = self.outbox.poll_transmit(self.now_ms()) {
            let msg = match t {
                Transmit::Void { id } => TerminalMsg::Void { id },
                Transmit::Submit { id, answered } => match self.store.payment(id) {
                    Ok(Some(payment)) => TerminalMsg::Submit { payment, answered },
                    Ok(None) => {
                        tracing::error!(payment = %id, "payment in the outbox has no card data; not sent");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, payment = %id, "cannot read payment to forward");
                        continue;
                    }
                },
            };
            // The channel holds as many frames as the outbox window, so it cannot be full.
            if link.try_send(msg).is_err() {
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
                        "voided": counts.voided,
                        "decided": counts.decided,
                    },
                    "outbox": {
                        "unacked": self.outbox.len(),
                        "in_flight": self.outbox.in_flight(),
                        "awaiting_answer": self.outbox.parked(),
                        "never_answered": self.orphans.len(),
                    },
                })
            }
        }
    }
}

/// Longest request id a sale app may give, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 64;

fn send_all(reply: oneshot::Sender<Reply>, retries: Vec<oneshot::Sender<Reply>>, answer: &Answer) {
    send_all_as(reply, retries, answer, false);
}

/// Sends `answer` to a capture (`replayed`: itself a retry) and to every retry of it.
fn send_all_as(reply: oneshot::Sender<Reply>, retries: Vec<oneshot::Sender<Reply>>, answer: &Answer, replayed: bool) {
    for r in retries {
        let _ = r.send(answer.reply(true));
    }
    let _ = reply.send(answer.reply(replayed));
}

/// One payment's status as JSON (masked card only).
pub(crate) fn view_json(v: &inflight_store::SlaveView) -> Value {
    let (state, reason, answered): (&str, Option<RefusalReason>, Option<bool>) = match v.state {
        SlaveState::Captured { answered } => ("captured", None, Some(answered)),
        SlaveState::Forwarded => ("forwarded", None, None),
        SlaveState::Refused(r) => ("refused", Some(r), None),
        SlaveState::Voided { .. } => ("voided", Some(RefusalReason::Voided), None),
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
