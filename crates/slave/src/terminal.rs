//! The terminal actor: a thin driver around `inflight_core::terminal::Terminal`, which makes
//! every decision. One task, one `select!` over its event channel, the machine's next deadline
//! and shutdown; it carries out the machine's actions (store writes, durability waits that come
//! back as events, replies to sale apps, result acks) and moves frames to the link.

use std::collections::HashMap;
use std::sync::Arc;

use inflight_core::capture::CaptureRequest;
use inflight_core::hotlist::HotSet;
use inflight_core::outbox::Transmit;
use inflight_core::terminal::{self as machine, Action, After, Listeners, Note, ReplyTo, Write, WriteFailure};
use inflight_store::{SlaveState, SlaveStore, StoreError};
use inflight_wire::{
    AuthOutcome, CancelOutcome, HotList, PaymentId, RefusalReason, SignedBinList, TerminalMsg, Verdict,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::answer::Reply;
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
    /// A write the machine asked for is durable (or failed).
    Written { then: After, result: Result<(), WriteFailure> },
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
    /// The issuer's hot-card list pushed by the master (not yet verified).
    HotList(HotList),
    /// The issuer's decision on one of this terminal's payments.
    Result { id: PaymentId, outcome: AuthOutcome },
    /// The master's clock minus ours, learnt at `Hello`.
    ClockOffset(i64),
    /// A status query.
    Status { payment: Option<PaymentId>, reply: oneshot::Sender<Value> },
    /// A sale app voids a payment.
    Void { which: VoidOf, reply: oneshot::Sender<Reply> },
    /// The master's answer to a sale app's void.
    CancelAck { id: PaymentId, outcome: CancelOutcome },
    /// What a metrics scrape shows of the actor's state: cheap, no store read (the scrape
    /// counts the store's payments itself, off the actor).
    Gauges { reply: oneshot::Sender<Gauges> },
}

/// Which payment a void names.
#[derive(Debug)]
pub(crate) enum VoidOf {
    /// By its id.
    Payment(PaymentId),
    /// By the sale app's request id of its capture.
    Request(String),
}

/// Sale apps waiting for an answer, by the handle the machine knows them by.
#[derive(Debug)]
struct Replies {
    waiting: HashMap<ReplyTo, oneshot::Sender<Reply>>,
    next: ReplyTo,
    /// Size at which sale apps that hung up are dropped from `waiting` (the machine never answers
    /// a sale app that left, so nothing else removes them).
    prune_at: usize,
}

/// Least size at which `Replies` drops the sale apps that hung up.
const REPLIES_PRUNE_MIN: usize = 256;

impl Default for Replies {
    fn default() -> Self {
        Self { waiting: HashMap::new(), next: 0, prune_at: REPLIES_PRUNE_MIN }
    }
}

impl Replies {
    fn add(&mut self, reply: oneshot::Sender<Reply>) -> ReplyTo {
        if self.waiting.len() >= self.prune_at {
            // Amortised: pruning again only once the map has doubled.
            self.waiting.retain(|_, r| !r.is_closed());
            self.prune_at = (self.waiting.len() * 2).max(REPLIES_PRUNE_MIN);
        }
        self.next += 1;
        self.waiting.insert(self.next, reply);
        self.next
    }
}

impl Listeners for Replies {
    fn listening(&self, to: ReplyTo) -> bool {
        self.waiting.get(&to).is_some_and(|r| !r.is_closed())
    }
}

/// Whether durability waits run as tasks (serving) or block (the shutdown drain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waits {
    Spawned,
    Blocking,
}

pub(crate) struct Terminal {
    cfg: Arc<SlaveConfig>,
    store: Arc<SlaveStore>,
    /// Every decision.
    machine: machine::Terminal,
    replies: Replies,
    /// Frames to the master, while connected.
    link: Option<mpsc::Sender<TerminalMsg>>,
    /// For tasks that report back (durability waits).
    events: mpsc::Sender<Event>,
    /// Origin of the machine's monotonic milliseconds.
    epoch: Instant,
}

impl Terminal {
    /// Rebuilds the actor's state from the store: every payment not settled with the master.
    pub(crate) fn restore(
        cfg: Arc<SlaveConfig>,
        store: Arc<SlaveStore>,
        events: mpsc::Sender<Event>,
    ) -> Result<Self, StoreError> {
        let settings = machine::Settings {
            window: cfg.forward_window,
            ack_timeout_ms: cfg.ack_timeout.as_millis() as u64,
            verdict_wait_ms: cfg.verdict_wait.as_millis() as u64,
            claim_grace_ms: cfg.claim_grace.as_millis() as u64,
            caps: cfg.caps,
            site: cfg.site,
        };
        let mut m = machine::Terminal::new(cfg.terminal_id.clone(), settings);
        for (view, state) in store.unacked()? {
            m.restore(view.id, view.amount, state, !view.card_data_erased, 0);
        }
        if m.unsettled() > 0 {
            tracing::info!(
                unacked = m.unsettled(),
                never_answered = m.never_answered(),
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
        m.install_bin_list(bins);
        let hot = match store.hot_list()? {
            None => None,
            Some(list) => match HotSet::verify(&cfg.issuer_public_key, &list) {
                Ok(set) => Some(set),
                Err(e) => {
                    tracing::error!(error = %e, "stored hot-card list does not verify; ignoring it until a valid one arrives");
                    None
                }
            },
        };
        m.install_hot_list(hot);
        Ok(Self { cfg, store, machine: m, replies: Replies::default(), link: None, events, epoch: Instant::now() })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Event>, cancel: CancellationToken) {
        loop {
            self.act(Waits::Spawned);
            self.pump();
            let deadline = self.machine.poll_timeout().map(|ms| self.epoch + std::time::Duration::from_millis(ms));
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = sleep_until(deadline) => {
                    let now = self.now_ms();
                    self.machine.handle_timeout(now, &self.replies);
                }
            }
        }
        // Sale apps still waiting for a verdict: their payments are durable and queued, so
        // they are answered `accepted` — through the same durable mark as every other answer.
        let now = self.now_ms();
        self.machine.drain_waiting(now, &self.replies);
        tokio::task::block_in_place(|| self.act(Waits::Blocking));
        // Answers whose mark was written while serving and whose durability report had not come
        // back: waited for here, so those sale apps still hear `accepted` (or `unknown`).
        let answering = self.machine.answering_ids();
        if !answering.is_empty() {
            let result = tokio::task::block_in_place(|| self.store.durable_blocking(self.store.latest()))
                .map_err(|_| WriteFailure::NotDurable);
            let now = self.now_ms();
            for id in answering {
                self.machine.on_written(After::Answered { id }, result, now, &self.replies);
            }
            tokio::task::block_in_place(|| self.act(Waits::Blocking));
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = self.now_ms();
        match ev {
            Event::Capture { req, request_id, reply } => self.capture(req, request_id, reply),
            Event::Written { then, result } => {
                match (&then, result) {
                    (After::Captured { .. }, Ok(())) => inflight_daemon::crash_point("slave.after_flush_before_answer"),
                    (After::ResultStored { .. }, Ok(())) => {
                        inflight_daemon::crash_point("slave.after_result_stored_before_ack")
                    }
                    _ => {}
                }
                self.machine.on_written(then, result, now, &self.replies);
            }
            Event::Connected { tx } => {
                self.link = Some(tx);
                self.machine.on_connected();
            }
            Event::Disconnected => {
                self.link = None;
                self.machine.on_disconnected();
            }
            Event::Verdict { id, verdict } => self.machine.on_verdict(id, verdict, now, &self.replies),
            Event::VoidAck { id, carried } => self.machine.on_void_ack(id, carried),
            Event::ClockOffset(offset) => {
                if offset.abs() > CLOCK_OFFSET_WARN_MS {
                    tracing::warn!(
                        offset_ms = offset,
                        "this terminal's clock is off; using the master's time for captures"
                    );
                }
                self.machine.on_clock_offset(offset);
            }
            Event::BinList(signed) => self.bin_list(signed),
            Event::HotList(list) => self.hot_list(list),
            Event::Result { id, outcome } => self.machine.on_result(id, outcome),
            Event::CancelAck { id, outcome } => self.machine.on_cancel_ack(id, outcome),
            Event::Void { which, reply } => self.void(which, reply),
            Event::Status { payment, reply } => {
                let _ = reply.send(self.status(payment));
            }
            Event::Gauges { reply } => {
                let _ = reply.send(Gauges {
                    master_connected: self.link.is_some(),
                    bin_list_version: self.machine.bin_list().map(|b| b.version),
                    bin_list_valid_until_unix_ms: self.machine.bin_list().map(|b| b.valid_until_unix_ms),
                    unacked: self.machine.unsettled() as u64,
                });
            }
        }
    }

    fn capture(&mut self, req: CaptureRequest, request_id: Option<String>, reply: oneshot::Sender<Reply>) {
        let now = self.now_ms();
        let to = self.replies.add(reply);
        if let Some(rid) = request_id.as_deref().filter(|r| machine::request_id_ok(r)) {
            match self.store.request(rid).and_then(|id| match id {
                Some(id) => Ok(self.store.view(id)?.map(|v| (id, v.state, v.payment.amount))),
                None => Ok(None),
            }) {
                Ok(Some((id, state, amount))) => return self.machine.retry(to, id, state, amount, now, &self.replies),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot look up a request id");
                    return self.answer(to, machine::Answer::Rejected { id: None, reason: "storage_error" }, false);
                }
            }
        }
        let mut random = [0u8; 10];
        if self.store.vault().random(&mut random).is_err() {
            return self.answer(to, machine::Answer::Rejected { id: None, reason: "storage_error" }, false);
        }
        self.machine.capture(to, &req, request_id, random, inflight_daemon::unix_ms_now());
    }

    fn void(&mut self, which: VoidOf, reply: oneshot::Sender<Reply>) {
        let to = self.replies.add(reply);
        let found = match which {
            VoidOf::Payment(id) => self.store.view(id).map(|v| v.map(|v| (id, v.state))),
            VoidOf::Request(rid) => self.store.request(&rid).and_then(|id| match id {
                Some(id) => Ok(self.store.view(id)?.map(|v| (id, v.state))),
                None => Ok(None),
            }),
        };
        match found {
            Ok(found) => self.machine.void(to, found),
            Err(e) => {
                tracing::error!(error = %e, "cannot look up a payment to void");
                if let Some(r) = self.replies.waiting.remove(&to) {
                    let _ = r.send(Reply::lookup_failed());
                }
            }
        }
    }

    fn answer(&mut self, to: ReplyTo, answer: machine::Answer, replayed: bool) {
        if let Some(r) = self.replies.waiting.remove(&to) {
            let _ = r.send(Reply::of(&answer, replayed));
        }
    }

    /// Carries out what the machine asked for, until it asks for nothing more.
    fn act(&mut self, waits: Waits) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Write { write, then } => self.write(write, then, waits),
                Action::Reply { to, answer, replayed } => self.answer(to, answer, replayed),
                Action::ResultAck { id } => {
                    if let Some(link) = &self.link {
                        let _ = link.try_send(TerminalMsg::ResultAck { id });
                    }
                }
                Action::Note(note) => log_note(note),
            }
        }
    }

    fn write(&mut self, write: Write, then: After, waits: Waits) {
        let written = match write {
            Write::Captured { payment, request_id } => {
                let r = self.store.put_captured(&payment, request_id.as_deref());
                if let Err(e) = &r {
                    tracing::error!(error = %e, "capture refused: cannot store");
                }
                inflight_daemon::crash_point("slave.after_write_before_flush");
                r
            }
            Write::State { id, state } => self.store.set_state(id, state),
            Write::Settle { id, state } => {
                inflight_daemon::crash_point("slave.after_ack_received_before_marking");
                self.store.set_state(id, state)
            }
            Write::Result { id, outcome } => self.store.store_result(id, &outcome),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, after = ?then, "store write failed");
            let now = self.now_ms();
            return self.machine.on_written(then, Err(write_failure(&e)), now, &self.replies);
        }
        match then {
            // Not waited on: if lost in a crash, the master answers the re-send the same way.
            After::Nothing => return,
            After::Settled { .. } => {
                let now = self.now_ms();
                return self.machine.on_written(then, Ok(()), now, &self.replies);
            }
            _ => {}
        }
        // The latest ticket also covers an earlier write this one repeats (a retry's mark).
        let ticket = self.store.latest();
        match waits {
            Waits::Spawned => {
                let (store, events) = (self.store.clone(), self.events.clone());
                tokio::spawn(async move {
                    let result = store.durable(ticket).await.map_err(|e| {
                        tracing::error!(error = %e, "store did not make a write durable");
                        WriteFailure::NotDurable
                    });
                    let _ = events.send(Event::Written { then, result }).await;
                });
            }
            Waits::Blocking => {
                let result = self.store.durable_blocking(ticket).map_err(|_| WriteFailure::NotDurable);
                let now = self.now_ms();
                self.machine.on_written(then, result, now, &self.replies);
            }
        }
    }

    fn bin_list(&mut self, signed: SignedBinList) {
        let list = match inflight_store::verify_bin_list(&self.cfg.issuer_public_key, &signed) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "BIN list from the master rejected; keeping the current one");
                return;
            }
        };
        if !self.machine.prefers(&list, inflight_daemon::unix_ms_now()) {
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
                self.machine.install_bin_list(Some(list));
            }
            Err(e) => tracing::error!(error = %e, "cannot store the BIN list"),
        }
    }

    fn hot_list(&mut self, list: HotList) {
        let set = match HotSet::verify(&self.cfg.issuer_public_key, &list) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "hot-card list from the master rejected; keeping the current one");
                return;
            }
        };
        if !self.machine.prefers_hot_list(&set, inflight_daemon::unix_ms_now()) {
            return;
        }
        match self.store.set_hot_list(&list) {
            Ok(_) => {
                tracing::info!(version = set.version(), entries = set.len(), "hot-card list installed");
                self.machine.install_hot_list(Some(set));
            }
            Err(e) => tracing::error!(error = %e, "cannot store the hot-card list"),
        }
    }

    /// Sends whatever the outbox releases.
    fn pump(&mut self) {
        let Some(link) = self.link.clone() else {
            return;
        };
        let now = self.now_ms();
        while let Some(t) = self.machine.poll_transmit(now) {
            let msg = match t {
                Transmit::Void { id } => TerminalMsg::Void { id },
                Transmit::Cancel { id } => TerminalMsg::Cancel { id },
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
                self.machine.on_disconnected();
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
                let now = self.machine.sane_now(inflight_daemon::unix_ms_now());
                json!({
                    "terminal_id": self.cfg.terminal_id.as_str(),
                    "master_connected": self.link.is_some(),
                    "bin_list_version": self.machine.bin_list().map(|b| b.version),
                    "bin_list_valid": self.machine.bin_list().is_some_and(|b| b.is_valid_at(now)),
                    "hot_list_version": self.machine.hot_list().map(|h| h.version()),
                    "hot_list_entries": self.machine.hot_list().map(|h| h.len()),
                    "clock_offset_ms": self.machine.clock_offset_ms(),
                    "payments": {
                        "captured": counts.captured,
                        "forwarded": counts.forwarded,
                        "refused": counts.refused,
                        "voided": counts.voided,
                        "cancelled": counts.cancelled,
                        "decided": counts.decided,
                    },
                    "outbox": {
                        "unacked": self.machine.unsettled(),
                        "in_flight": self.machine.in_flight(),
                        "awaiting_answer": self.machine.parked(),
                        "never_answered": self.machine.never_answered(),
                    },
                })
            }
        }
    }
}

/// The actor's state a metrics scrape shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gauges {
    /// Connected to the master.
    pub master_connected: bool,
    /// The BIN list in force.
    pub bin_list_version: Option<u64>,
    /// When it expires (milliseconds since the Unix epoch).
    pub bin_list_valid_until_unix_ms: Option<u64>,
    /// Payments the master has not acked yet.
    pub unacked: u64,
}

/// What a failed write means for the machine: applied but unconfirmed (it may reach the disk:
/// the outcome is unknown), or refused before anything was applied.
fn write_failure(e: &StoreError) -> WriteFailure {
    match e {
        StoreError::Unconfirmed(_) => WriteFailure::NotDurable,
        _ => WriteFailure::NotWritten,
    }
}

fn log_note(note: Note) {
    match note {
        Note::Refused(r) => tracing::info!(reason = r.as_str(), "capture refused at the terminal"),
        Note::VoidedOrphan(id) => {
            tracing::warn!(payment = %id, "voided: its sale app was never told accepted and no retry claimed it")
        }
        Note::VoidCarried(id) => tracing::error!(payment = %id, "the master carries a payment this terminal voided"),
        Note::Retried(id) => tracing::info!(payment = %id, "capture retried with its request id"),
        Note::CaptureLost(id) => {
            tracing::error!(payment = %id, "capture refused: store did not make it durable")
        }
        Note::Cancelled(id, outcome) => {
            tracing::info!(payment = %id, outcome = outcome.as_str(), "payment voided by its sale app")
        }
    }
}

/// One payment's status as JSON (masked card only).
pub(crate) fn view_json(v: &inflight_store::SlaveView) -> Value {
    let (state, reason, answered): (&str, Option<RefusalReason>, Option<bool>) = match v.state {
        SlaveState::Captured { answered } => ("captured", None, Some(answered)),
        SlaveState::Forwarded => ("forwarded", None, None),
        SlaveState::Refused(r) => ("refused", Some(r), None),
        SlaveState::Voided { .. } => ("voided", Some(RefusalReason::Voided), None),
        SlaveState::Cancelling => ("void_pending", None, None),
        SlaveState::Cancelled { reversal: false } => ("voided", None, None),
        SlaveState::Cancelled { reversal: true } => ("reversal_pending", None, None),
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
        "entry_mode": p.pos.entry_mode.as_str(),
        "mcc": p.pos.mcc.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review: a write sled had applied, whose ticket the poisoned store then refused,
    /// was reported "not written"; the terminal told the sale app `rejected` and the answered
    /// mark reached the disk anyway (the payment was charged).
    #[test]
    fn a_write_applied_but_unconfirmed_is_not_a_write_refused() {
        assert_eq!(write_failure(&StoreError::Unconfirmed("poisoned".into())), WriteFailure::NotDurable);
        assert_eq!(write_failure(&StoreError::Poisoned("flush failed".into())), WriteFailure::NotWritten);
        assert_eq!(write_failure(&StoreError::Io("disk full".into())), WriteFailure::NotWritten);
    }

    /// Found by review: a sale app that hung up before its answer was never removed (the
    /// machine does not answer a sale app that left), one entry each, for good.
    #[test]
    fn sale_apps_that_hung_up_are_dropped() {
        let mut r = Replies::default();
        for _ in 0..10 * REPLIES_PRUNE_MIN {
            let (tx, rx) = oneshot::channel();
            drop(rx);
            r.add(tx);
        }
        let (tx, _listening) = oneshot::channel();
        let kept = r.add(tx);
        assert!(r.waiting.len() <= REPLIES_PRUNE_MIN, "{} entries", r.waiting.len());
        assert!(r.listening(kept), "a sale app still waiting is kept");
    }
}
