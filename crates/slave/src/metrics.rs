//! The terminal's Prometheus metrics (README "Metrics"): capture counters and latency updated
//! as each answer goes out, state gauges set at scrape time from the actor's cheap gauges and a
//! count of the store made off the actor (it reads every record: the capture path must not wait
//! for it). Labels take values from closed sets only (the reject reasons are the machine's own
//! literals).

use std::sync::Arc;
use std::time::Duration;

use inflight_daemon::metrics::prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use inflight_daemon::metrics::{Common, Metrics, LATENCY_BUCKETS, SNAPSHOT_WAIT};
use inflight_store::{CommitObserver, SlaveCounts, SlaveStore};
use tokio::sync::{mpsc, oneshot};

use crate::answer::Told;
use crate::config::SlaveConfig;
use crate::terminal::{Event, Gauges};

/// The payment states of the terminal's status (`payments`), each a label value.
const STATES: [&str; 5] = ["captured", "forwarded", "refused", "voided", "cancelled"];

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
    /// A count of the store is running: one at a time (a full scan a scraper cannot cancel;
    /// found by review: a hostile scraper could keep several running on a seatback CPU).
    counting: Arc<std::sync::atomic::AtomicBool>,
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
            counting: Arc::default(),
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

    /// The scrape: the actor's gauges (waited for at most [`SNAPSHOT_WAIT`]; without them they
    /// keep their last values), the payments counted in the store on a blocking thread, the
    /// store's size and the certificate, then the text.
    pub(crate) async fn scrape(
        &self,
        cfg: &SlaveConfig,
        events: &mpsc::Sender<Event>,
        store: &Arc<SlaveStore>,
    ) -> String {
        let (reply, rx) = oneshot::channel();
        let asked = async {
            events.send(Event::Gauges { reply }).await.ok()?;
            rx.await.ok()
        };
        match tokio::time::timeout(SNAPSHOT_WAIT, asked).await {
            Ok(Some(g)) => self.set_gauges(&g),
            _ => tracing::debug!("no gauges from the terminal's actor in time"),
        }
        // The last counts stay in force while another scrape's count runs.
        if !self.counting.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let (store, counting) = (Arc::clone(store), Arc::clone(&self.counting));
            let counted = tokio::task::spawn_blocking(move || {
                let c = store.counts();
                counting.store(false, std::sync::atomic::Ordering::Release);
                c
            })
            .await;
            match counted {
                Ok(Ok(c)) => self.set_counts(&c),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot count payments for the metrics"),
                Err(_) => {}
            }
        }
        self.common.refresh(&cfg.data_dir, inflight_net::tls::leaf_not_after_unix_s(&cfg.cert_file).ok());
        self.registry.render()
    }

    fn set_gauges(&self, g: &Gauges) {
        self.unacked.set(gauge(g.unacked));
        self.master_connected.set(i64::from(g.master_connected));
        self.bin_list_version.set(gauge(g.bin_list_version.unwrap_or(0)));
        let now_s = (inflight_daemon::unix_ms_now() / 1000) as i64;
        self.bin_list_expiry.set(g.bin_list_valid_until_unix_ms.map_or(0, |t| (t / 1000) as i64 - now_s));
    }

    fn set_counts(&self, c: &SlaveCounts) {
        for (state, n) in STATES.iter().zip([c.captured, c.forwarded, c.refused, c.voided, c.cancelled]) {
            self.payments.with_label_values(&[state]).set(gauge(n));
        }
        self.decided.set(gauge(c.decided));
    }
}

/// A count as a gauge value.
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
