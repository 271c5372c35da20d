//! The master's Prometheus metrics (README "Metrics"): counters and histograms updated where
//! the event happens (atomic updates, never a wait), gauges set at scrape time from the actor's
//! status snapshot. Labels take values from closed sets only.

use std::sync::Arc;
use std::time::Duration;

use inflight_daemon::metrics::prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use inflight_daemon::metrics::{Common, Metrics, BATCH_BUCKETS, LATENCY_BUCKETS, SNAPSHOT_WAIT};
use inflight_store::CommitObserver;
use inflight_wire::{AuthOutcome, Verdict};
use tokio::sync::{mpsc, oneshot};

use crate::aircraft::{Event, Snapshot};
use crate::config::MasterConfig;
use crate::ground::LinkState;

/// Why a terminal's connection was refused before it could submit: the `reason` label of
/// `inflight_master_handshakes_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not admitted by the handshake limits (answered with a QUIC Retry, or over a limit).
    NotAdmitted,
    /// The TLS handshake failed (bad or revoked certificate, wrong CA, timeout).
    Handshake,
    /// Its certificate names no terminal, or one that is revoked.
    Identity,
    /// `terminals_max` terminals connected already.
    TerminalLimit,
}

impl Refusal {
    const ALL: [Refusal; 4] = [Refusal::NotAdmitted, Refusal::Handshake, Refusal::Identity, Refusal::TerminalLimit];

    fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAdmitted => "not_admitted",
            Refusal::Handshake => "handshake",
            Refusal::Identity => "identity",
            Refusal::TerminalLimit => "terminal_limit",
        }
    }
}

/// The master's payment states as the status document counts them.
const STATES: [&str; 8] =
    ["unconfirmed", "voided", "pending", "in_batch", "quarantined", "decided", "delivered", "refused"];

/// Every metric of the master. Clones share the metrics.
#[derive(Debug, Clone)]
pub(crate) struct MasterMetrics {
    registry: Metrics,
    common: Common,
    payments_received: IntCounterVec,
    payments_confirmed: IntCounter,
    outcomes: IntCounterVec,
    submit_ack: Histogram,
    handshakes_refused: IntCounterVec,
    link_flaps: IntCounter,
    batches: IntCounterVec,
    seal_seconds: Histogram,
    upload_seconds: Histogram,
    payments: IntGaugeVec,
    reversals: IntGaugeVec,
    results_pending: IntGauge,
    aged: IntGauge,
    deadline: IntGaugeVec,
    terminals: IntGauge,
    link_up: IntGauge,
    bin_list_version: IntGauge,
    bin_list_expiry: IntGauge,
}

impl MasterMetrics {
    /// Registers every metric, at zero (so each family shows from the first scrape).
    pub(crate) fn new() -> Self {
        let m = Metrics::new();
        let s = Self {
            common: Common::new(&m),
            payments_received: m.counter_vec(
                "inflight_master_payments_received_total",
                "New payments written by the master, by verdict: stored (its terminal had told its sale app \
                 accepted), held (waiting for that confirmation), refused (an aircraft-wide check).",
                &["verdict"],
            ),
            payments_confirmed: m.counter(
                "inflight_master_payments_confirmed_total",
                "Held payments whose terminal confirmed its sale app was told accepted.",
            ),
            outcomes: m.counter_vec(
                "inflight_master_payment_outcomes_total",
                "Issuer decisions stored by the master, by outcome.",
                &["outcome"],
            ),
            submit_ack: m.histogram(
                "inflight_master_submit_ack_duration_seconds",
                "From a terminal's submit taken by the aircraft actor to its ack handed to the connection \
                 (the write made durable in between).",
                LATENCY_BUCKETS,
            ),
            handshakes_refused: m.counter_vec(
                "inflight_master_handshakes_refused_total",
                "Terminal connections refused before their first frame, by reason.",
                &["reason"],
            ),
            link_flaps: m
                .counter("inflight_master_ground_link_flaps_total", "Times the ground link went from up to down."),
            batches: m.counter_vec(
                "inflight_master_batches_total",
                "Batches answered by the issuer, by result: decided, or quarantined (refused).",
                &["result"],
            ),
            seal_seconds: m.histogram(
                "inflight_master_batch_seal_duration_seconds",
                "Sealing a batch: building its header from the pending payments and recording it durably.",
                BATCH_BUCKETS,
            ),
            upload_seconds: m.histogram(
                "inflight_master_batch_upload_duration_seconds",
                "Uploading a batch: from its first frame to its results stored durably.",
                BATCH_BUCKETS,
            ),
            payments: m.gauge_vec(
                "inflight_master_payments",
                "Payments held by the master, by state (as in `inflight-master status`).",
                &["state"],
            ),
            reversals: m.gauge_vec(
                "inflight_master_reversals",
                "Sale apps' voids of sealed payments, by state: pending (the issuer has not answered) or answered.",
                &["state"],
            ),
            results_pending: m.gauge(
                "inflight_master_results_pending_delivery",
                "Payments decided by the issuer whose result has not reached their terminal yet.",
            ),
            aged: m.gauge(
                "inflight_master_payments_aged",
                "Payments waiting for the issuer longer than report.payment_age_flag_hours.",
            ),
            deadline: m.gauge_vec(
                "inflight_master_payments_deadline",
                "Carried payments against their deferred-authorization deadline: soon (within deadline.warn_lead_secs, waiting for the issuer), missed (sealed, or to be sealed, after it: sent late).",
                &["state"],
            ),
            terminals: m.gauge("inflight_master_terminals_connected", "Terminals connected now."),
            link_up: m
                .gauge("inflight_master_ground_link_up", "1 when the ground link is up (probes or crew override)."),
            bin_list_version: m.gauge("inflight_bin_list_version", "Version of the BIN list in force (0: none)."),
            bin_list_expiry: m.gauge(
                "inflight_bin_list_expiry_seconds",
                "Seconds until the BIN list in force expires (0: none, negative once expired).",
            ),
            registry: m,
        };
        for v in ["stored", "held", "refused"] {
            s.payments_received.with_label_values(&[v]);
        }
        for v in ["approved", "declined"] {
            s.outcomes.with_label_values(&[v]);
        }
        for r in Refusal::ALL {
            s.handshakes_refused.with_label_values(&[r.as_str()]);
        }
        for v in ["decided", "quarantined"] {
            s.batches.with_label_values(&[v]);
        }
        for state in STATES {
            s.payments.with_label_values(&[state]);
        }
        for state in ["soon", "missed"] {
            s.deadline.with_label_values(&[state]);
        }
        s
    }

    /// What the store's flusher calls at each group commit.
    pub(crate) fn commit_observer(&self) -> CommitObserver {
        let common = self.common.clone();
        Arc::new(move |writes, took| common.group_committed(writes, took))
    }

    /// A new payment written with `verdict`.
    pub(crate) fn payment_received(&self, verdict: Verdict) {
        let v = match verdict {
            Verdict::Stored => "stored",
            Verdict::Held => "held",
            Verdict::Refused(_) => "refused",
        };
        self.payments_received.with_label_values(&[v]).inc();
    }

    /// A held payment confirmed answered.
    pub(crate) fn payment_confirmed(&self) {
        self.payments_confirmed.inc();
    }

    /// A batch's results stored.
    pub(crate) fn batch_decided<'a>(&self, outcomes: impl Iterator<Item = &'a AuthOutcome>) {
        self.batches.with_label_values(&["decided"]).inc();
        let (mut approved, mut declined) = (0, 0);
        for o in outcomes {
            match o {
                AuthOutcome::Approved { .. } => approved += 1,
                AuthOutcome::Declined(_) => declined += 1,
            }
        }
        self.outcomes.with_label_values(&["approved"]).inc_by(approved);
        self.outcomes.with_label_values(&["declined"]).inc_by(declined);
    }

    /// A batch refused by the issuer and quarantined.
    pub(crate) fn batch_quarantined(&self) {
        self.batches.with_label_values(&["quarantined"]).inc();
    }

    /// A submit acked, `took` after the actor took it.
    pub(crate) fn submit_acked(&self, took: Duration) {
        self.submit_ack.observe(took.as_secs_f64());
    }

    /// A terminal's connection refused.
    pub(crate) fn handshake_refused(&self, why: Refusal) {
        self.handshakes_refused.with_label_values(&[why.as_str()]).inc();
    }

    /// The ground link went down after being up.
    pub(crate) fn link_flapped(&self) {
        self.link_flaps.inc();
    }

    /// A batch sealed in `took`.
    pub(crate) fn sealed(&self, took: Duration) {
        self.seal_seconds.observe(took.as_secs_f64());
    }

    /// A batch uploaded and its results stored in `took`.
    pub(crate) fn uploaded(&self, took: Duration) {
        self.upload_seconds.observe(took.as_secs_f64());
    }

    /// The scrape: the state gauges from the actor's snapshot (waited for at most
    /// [`SNAPSHOT_WAIT`]; without it they keep their last values), the store and the
    /// certificate, then the text.
    pub(crate) async fn scrape(&self, cfg: &MasterConfig, events: &mpsc::Sender<Event>, link: &LinkState) -> String {
        let (reply, rx) = oneshot::channel();
        let asked = async {
            events.send(Event::MetricsSnapshot { reply }).await.ok()?;
            rx.await.ok()
        };
        match tokio::time::timeout(SNAPSHOT_WAIT, asked).await {
            Ok(Some(snap)) => self.set_state(&snap),
            _ => tracing::debug!("no status snapshot for the metrics in time"),
        }
        self.link_up.set(i64::from(link.is_up()));
        self.common.refresh(&cfg.data_dir, inflight_net::tls::leaf_not_after_unix_s(&cfg.cert_file).ok());
        self.registry.render()
    }

    fn set_state(&self, snap: &Snapshot) {
        let c = &snap.counts;
        let by_state =
            [c.unconfirmed, c.voided, c.pending, c.in_batch, c.quarantined, c.decided, c.delivered, c.refused];
        for (state, n) in STATES.iter().zip(by_state) {
            self.payments.with_label_values(&[state]).set(gauge(n));
        }
        let (pending, answered) = snap.reversals;
        self.reversals.with_label_values(&["pending"]).set(gauge(pending));
        self.reversals.with_label_values(&["answered"]).set(gauge(answered));
        self.results_pending.set(gauge(c.decided));
        self.aged.set(gauge(snap.scan.aged));
        self.deadline.with_label_values(&["soon"]).set(gauge(snap.scan.deadline.soon));
        self.deadline.with_label_values(&["missed"]).set(gauge(snap.scan.deadline.missed));
        self.terminals.set(gauge(snap.terminals as u64));
        self.bin_list_version.set(gauge(snap.bin_list_version.unwrap_or(0)));
        let now_s = (inflight_daemon::unix_ms_now() / 1000) as i64;
        self.bin_list_expiry.set(snap.bin_list_valid_until_unix_ms.map_or(0, |t| (t / 1000) as i64 - now_s));
    }
}

/// A count as a gauge value.
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
