//! The run's report: JSON for machines (`--report FILE`), a table for people.

use std::collections::BTreeMap;
use std::time::Duration;

use inflight_slave::api::CaptureAnswer;
use serde::Serialize;
use serde_json::Value;

/// One capture as the sale app saw it.
#[derive(Debug, Clone)]
pub struct Capture {
    /// Terminal number (1-based).
    pub terminal: u32,
    /// Index of the card in the flight.
    pub card: usize,
    /// The terminal's answer, or why none came.
    pub answer: Result<CaptureAnswer, String>,
    /// Capture → answer.
    pub latency: Duration,
}

/// Everything measured and checked (DESIGN.md §8 names: `accepted`, `rejected`, `approved`,
/// `declined`, `lost`, `duplicated`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Scenario seed.
    pub seed: u64,
    /// Terminals.
    pub slaves: u32,
    /// Captures per terminal.
    pub payments_per_slave: u32,
    /// Link impairments used.
    pub impairments: Value,
    /// Captures attempted.
    pub captures: u64,
    /// Answered `accepted`.
    pub accepted: u64,
    /// Answered `rejected`, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Captures that got no answer at all.
    pub unanswered: u64,
    /// Approved by the issuer.
    pub approved: u64,
    /// Declined by the issuer, by reason.
    pub declined: BTreeMap<String, u64>,
    /// Accepted payments the issuer never decided.
    pub lost: u64,
    /// Payments decided more than once.
    pub duplicated: u64,
    /// Decisions with no accepted capture behind them.
    pub phantom: u64,
    /// Accounts whose available amount is not opening − approved, and payments decided for
    /// another amount than captured: exactly once, checked in money.
    pub money_mismatches: u64,
    /// Accepted payments whose result is not on their terminal.
    pub undelivered: u64,
    /// Results on a terminal that differ from the issuer's ledger.
    pub mismatched: u64,
    /// Payments still holding sealed card data after delivery.
    pub card_data_retained: u64,
    /// Files under the run directory containing a full card number.
    pub pan_leaks: u64,
    /// Batches the issuer decided.
    pub batches: u64,
    /// Phase durations.
    pub timings_ms: BTreeMap<String, u64>,
    /// Capture → answer latency, milliseconds.
    pub latency_ms: BTreeMap<String, f64>,
    /// Captures per second during sales.
    pub throughput: Value,
    /// Traffic on the ground link from landing to the end.
    pub ground_link: Value,
    /// Network paths terminals used to reach the master (more than the terminals: some changed
    /// source port mid-connection).
    pub cabin_paths: u64,
    /// Peak memory of the whole simulation process.
    pub peak_rss_mib: Option<f64>,
    /// Every invariant that broke, in words. Empty: the flight is sound.
    pub violations: Vec<String>,
    /// The run directory, when kept.
    pub run_dir: Option<String>,
}

impl Report {
    /// True when every invariant held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The human summary.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| s.push_str(&format!("  {k:<34} {v}\n"));
        row("terminals × payments", format!("{} × {}", self.slaves, self.payments_per_slave));
        row("captures", self.captures.to_string());
        row("accepted", self.accepted.to_string());
        for (r, n) in &self.rejected {
            row(&format!("  rejected: {r}"), n.to_string());
        }
        row("approved", self.approved.to_string());
        for (r, n) in &self.declined {
            row(&format!("  declined: {r}"), n.to_string());
        }
        row("batches", self.batches.to_string());
        row("lost / duplicated / phantom", format!("{} / {} / {}", self.lost, self.duplicated, self.phantom));
        row("money mismatches", self.money_mismatches.to_string());
        row("undelivered / mismatched results", format!("{} / {}", self.undelivered, self.mismatched));
        row("card data retained / PAN leaks", format!("{} / {}", self.card_data_retained, self.pan_leaks));
        for (k, v) in &self.timings_ms {
            row(&format!("time: {k}"), format!("{:.2} s", *v as f64 / 1e3));
        }
        if let Some(x) = self.throughput.get("captures_per_s").and_then(Value::as_f64) {
            row("capture throughput", format!("{x:.0} /s"));
        }
        if let (Some(p50), Some(p99)) = (self.latency_ms.get("p50"), self.latency_ms.get("p99")) {
            row("capture latency p50 / p99", format!("{p50:.1} / {p99:.1} ms"));
        }
        if let Some(b) = self.ground_link.get("bytes_per_payment").and_then(Value::as_f64) {
            row("ground link bytes per payment", format!("{b:.0}"));
        }
        if let Some(m) = self.peak_rss_mib {
            row("peak memory (all daemons)", format!("{m:.0} MiB"));
        }
        let verdict = if self.ok() {
            "ALL INVARIANTS HOLD".to_owned()
        } else {
            format!("{} VIOLATION(S)", self.violations.len())
        };
        s.push_str(&format!("  {verdict}\n"));
        for v in &self.violations {
            s.push_str(&format!("    - {v}\n"));
        }
        s
    }
}
