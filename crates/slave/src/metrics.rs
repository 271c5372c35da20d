//! The terminal's Prometheus metrics (README "Metrics"): capture counters and latency updated
//! as each answer goes out, state gauges set at scrape time from the actor's status. Labels
//! take values from closed sets only (the reject reasons are the machine's own literals).

use std::sync::Arc;
use std::time::Duration;

use inflight_daemon::metrics::prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use inflight_daemon::metrics::{Common, Metrics, LATENCY_BUCKETS, SNAPSHOT_WAIT};
use inflight_store::CommitObserver;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::answer::Told;
use crate::config::SlaveConfig;
use crate::terminal::Event;

/// The payment states of the terminal's status (`payments`), each a label value.
const STATES: [&str; 4] = ["captured", "forwarded", "refused", "voided"];

/// Every metric of the terminal. Clones share the metrics.
#[derive(Debug, Clone)]
pub(crate) struct SlaveMetrics {
    registry: Metrics,
    common: Common,
    captures: IntCounterVec,
    rejected: IntCounterVec,
    accept_seconds: Histogram,
    link_drops: IntCounter,
    payments: IntGaugeVec,
    decided: IntGauge,
    unacked: IntGauge,
    master_connected: IntGauge,
    bin_list_version: IntGauge,
    bin_list_expiry: IntGauge,
}

impl SlaveMetrics {
    /// Registers every metric, at zero.
    pub(crate) fn new() -> Self {
        let m = Metrics::new();
        let s = Self {
            common: Common::new(&m),
            captures: m.counter_vec(
                "inflight_slave_captures_total",
                "Capture requests answered, by outcome: accepted, rejected, unknown (the store failed \
                 while recording the answer).",
                &["outcome"],
            ),
            rejected: m.counter_vec(
                "inflight_slave_captures_rejected_total",
                "Capture requests answered rejected, by reason (the capture API's reasons).",
                &["reason"],
            ),
            accept_seconds: m.histogram(
                "inflight_slave_capture_accept_duration_seconds",
                "From a capture request taken to its answer accepted (payment and answered mark fsynced, \
                 the master's verdict or its wait in between).",
                LATENCY_BUCKETS,
            ),
            link_drops: m.counter(
                "inflight_slave_master_link_drops_total",
                "Times a connection to the master that had been established ended.",
            ),
            payments: m.gauge_vec("inflight_slave_payments", "Payments on this terminal, by state.", &["state"]),
            decided: m
                .gauge("inflight_slave_payments_decided", "Payments on this terminal with the issuer's decision."),
            unacked: m
                .gauge("inflight_slave_outbox_unacked", "Payments in the outbox the master has not acknowledged yet."),
            master_connected: m.gauge("inflight_slave_master_connected", "1 when connected to the master."),
            bin_list_version: m.gauge("inflight_bin_list_version", "Version of the BIN list in force (0: none)."),
            bin_list_expiry: m.gauge(
                "inflight_bin_list_expiry_seconds",
                "Seconds until the BIN list in force expires (0: none, negative once expired).",
            ),
            registry: m,
        };
        for o in ["accepted", "rejected", "unknown"] {
            s.captures.with_label_values(&[o]);
        }
        for state in STATES {
            s.payments.with_label_values(&[state]);
        }
        s
    }

    /// What the store's flusher calls at each group commit.
    pub(crate) fn commit_observer(&self) -> CommitObserver {
        let common = self.common.clone();
        Arc::new(move |writes, took| common.group_committed(writes, took))
    }

    /// A capture answered, `took` after it was taken.
    pub(crate) fn answered(&self, told: Told, took: Duration) {
        match told {
            Told::Accepted => {
                self.captures.with_label_values(&["accepted"]).inc();
                self.accept_seconds.observe(took.as_secs_f64());
            }
            Told::Rejected(reason) => {
                self.captures.with_label_values(&["rejected"]).inc();
                self.rejected.with_label_values(&[reason]).inc();
            }
            Told::Unknown => self.captures.with_label_values(&["unknown"]).inc(),
            // Not a capture: counted nowhere here.
            Told::Other => {}
        }
    }

    /// A connection to the master that had been established ended.
    pub(crate) fn link_dropped(&self) {
        self.link_drops.inc();
    }

    /// The scrape: the state gauges from the actor's status (waited for at most
    /// [`SNAPSHOT_WAIT`]; without it they keep their last values), the store and the
    /// certificate, then the text.
    pub(crate) async fn scrape(&self, cfg: &SlaveConfig, events: &mpsc::Sender<Event>) -> String {
        let (reply, rx) = oneshot::channel();
        let asked = async {
            events.send(Event::Status { payment: None, reply }).await.ok()?;
            rx.await.ok()
        };
        match tokio::time::timeout(SNAPSHOT_WAIT, asked).await {
            Ok(Some(status)) => self.set_state(&status),
            _ => tracing::debug!("no status for the metrics in time"),
        }
        self.common.refresh(&cfg.data_dir, inflight_net::tls::leaf_not_after_unix_s(&cfg.cert_file).ok());
        self.registry.render()
    }

    fn set_state(&self, status: &Value) {
        let n = |v: &Value| v.as_u64().map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
        for state in STATES {
            self.payments.with_label_values(&[state]).set(n(&status["payments"][state]));
        }
        self.decided.set(n(&status["payments"]["decided"]));
        self.unacked.set(n(&status["outbox"]["unacked"]));
        self.master_connected.set(i64::from(status["master_connected"].as_bool().unwrap_or(false)));
        self.bin_list_version.set(n(&status["bin_list_version"]));
        let now_s = (inflight_daemon::unix_ms_now() / 1000) as i64;
        self.bin_list_expiry
            .set(status["bin_list_valid_until_unix_ms"].as_u64().map_or(0, |t| (t / 1000) as i64 - now_s));
    }
}
