//! The issuer's Prometheus metrics (README "Metrics"): counters and histograms updated as
//! batches are decided, gauges set at scrape time. Labels take values from closed sets only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use inflight_daemon::metrics::prometheus::{Histogram, IntCounterVec, IntGauge};
use inflight_daemon::metrics::{Common, Metrics, BATCH_BUCKETS};
use inflight_store::CommitObserver;
use inflight_wire::AuthOutcome;

use crate::config::IssuerConfig;

/// Why an aircraft's connection was refused before its first frame: the `reason` label of
/// `inflight_issuer_handshakes_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not admitted by the handshake limits (answered with a QUIC Retry, or over a limit).
    NotAdmitted,
    /// The TLS handshake failed (bad or revoked certificate, wrong CA, timeout).
    Handshake,
    /// `AIRCRAFT_MAX` aircraft connected already.
    AircraftLimit,
    /// Too many connections of this aircraft, or its certificate is revoked.
    Identity,
}

impl Refusal {
    const ALL: [Refusal; 4] = [Refusal::NotAdmitted, Refusal::Handshake, Refusal::AircraftLimit, Refusal::Identity];

    fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAdmitted => "not_admitted",
            Refusal::Handshake => "handshake",
            Refusal::AircraftLimit => "aircraft_limit",
            Refusal::Identity => "identity",
        }
    }
}

/// Every metric of the issuer. Clones share the metrics.
#[derive(Debug, Clone)]
pub struct IssuerMetrics {
    registry: Metrics,
    common: Common,
    batches: IntCounterVec,
    decided: IntCounterVec,
    decide_seconds: Histogram,
    handshakes_refused: IntCounterVec,
    aircraft: IntGauge,
    bin_list_version: IntGauge,
    bin_list_expiry: IntGauge,
    /// When the published BIN list expires (set at each renewal), for the expiry gauge.
    bin_list_valid_until_unix_ms: Arc<AtomicU64>,
}

impl IssuerMetrics {
    /// Registers every metric, at zero.
    pub(crate) fn new() -> Self {
        let m = Metrics::new();
        let s = Self {
            common: Common::new(&m),
            batches: m.counter_vec(
                "inflight_issuer_batches_total",
                "Batches answered, by result: decided (now), replayed (known, answered from stored \
                 results), refused.",
                &["result"],
            ),
            decided: m.counter_vec(
                "inflight_issuer_payments_decided_total",
                "Payment decisions in batches this process decided, by outcome.",
                &["outcome"],
            ),
            decide_seconds: m.histogram(
                "inflight_issuer_batch_decide_duration_seconds",
                "Deciding a batch: from its last item received to its decisions durable.",
                BATCH_BUCKETS,
            ),
            handshakes_refused: m.counter_vec(
                "inflight_issuer_handshakes_refused_total",
                "Aircraft connections refused before their first frame, by reason.",
                &["reason"],
            ),
            aircraft: m.gauge("inflight_issuer_aircraft_connected", "Aircraft connections open now."),
            bin_list_version: m.gauge("inflight_bin_list_version", "Version of the BIN list published."),
            bin_list_expiry: m.gauge(
                "inflight_bin_list_expiry_seconds",
                "Seconds until the published BIN list expires (it is renewed every quarter of its validity).",
            ),
            bin_list_valid_until_unix_ms: Arc::default(),
            registry: m,
        };
        for r in ["decided", "replayed", "refused"] {
            s.batches.with_label_values(&[r]);
        }
        for o in ["approved", "declined"] {
            s.decided.with_label_values(&[o]);
        }
        for r in Refusal::ALL {
            s.handshakes_refused.with_label_values(&[r.as_str()]);
        }
        s
    }

    /// What the store's flusher calls at each group commit.
    pub(crate) fn commit_observer(&self) -> CommitObserver {
        let common = self.common.clone();
        Arc::new(move |writes, took| common.group_committed(writes, took))
    }

    /// The BIN list published now.
    pub(crate) fn bin_list(&self, version: u64, valid_until_unix_ms: u64) {
        self.bin_list_version.set(i64::try_from(version).unwrap_or(i64::MAX));
        self.bin_list_valid_until_unix_ms.store(valid_until_unix_ms, Ordering::Relaxed);
    }

    /// A batch decided now in `took`, with these outcomes.
    pub(crate) fn batch_decided<'a>(&self, took: Duration, outcomes: impl Iterator<Item = &'a AuthOutcome>) {
        self.batches.with_label_values(&["decided"]).inc();
        self.decide_seconds.observe(took.as_secs_f64());
        let (mut approved, mut declined) = (0, 0);
        for o in outcomes {
            match o {
                AuthOutcome::Approved { .. } => approved += 1,
                AuthOutcome::Declined(_) => declined += 1,
            }
        }
        self.decided.with_label_values(&["approved"]).inc_by(approved);
        self.decided.with_label_values(&["declined"]).inc_by(declined);
    }

    /// A known batch answered from its stored results.
    pub(crate) fn batch_replayed(&self) {
        self.batches.with_label_values(&["replayed"]).inc();
    }

    /// A batch refused.
    pub(crate) fn batch_refused(&self) {
        self.batches.with_label_values(&["refused"]).inc();
    }

    /// An aircraft's connection refused.
    pub(crate) fn handshake_refused(&self, why: Refusal) {
        self.handshakes_refused.with_label_values(&[why.as_str()]).inc();
    }

    /// An aircraft connection is open until the guard is dropped.
    pub(crate) fn aircraft_connected(&self) -> ConnectedGuard {
        self.aircraft.inc();
        ConnectedGuard(self.aircraft.clone())
    }

    /// The scrape: the store, the certificate and the list's expiry, then the text.
    pub(crate) fn scrape(&self, cfg: &IssuerConfig) -> String {
        let until_s = (self.bin_list_valid_until_unix_ms.load(Ordering::Relaxed) / 1000) as i64;
        self.bin_list_expiry.set(until_s - (inflight_daemon::unix_ms_now() / 1000) as i64);
        self.common.refresh(&cfg.data_dir, inflight_net::tls::leaf_not_after_unix_s(&cfg.cert_file).ok());
        self.registry.render()
    }
}

/// Counts one open aircraft connection while it lives.
#[derive(Debug)]
pub(crate) struct ConnectedGuard(IntGauge);

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
