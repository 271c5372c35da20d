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
    /// When the answer came, ms after the run began (for the timeline).
    pub answered_at_ms: u64,
    /// The amount the sale app sent (minor units).
    pub amount_minor: u64,
    /// The chip data the sale app sent (hexadecimal TLV), for the leak scan.
    pub emv: Option<String>,
    /// Altered after the card signed (`--tamper`): amount and chip data's amount raised by one
    /// minor unit, the cryptogram left as the card made it.
    pub tampered: bool,
}

/// The flight over time (`--html`, and `timeline` in the JSON report). Every `*_ms` counts from
/// the start of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    /// Start of the cabin sales.
    pub sales_start_ms: u64,
    /// Width of the capture buckets: 1 s, or 100 ms (10 ms) when the sales took less than
    /// 10 s (1 s), so that a short flight still shows a rate over time.
    pub capture_bucket_ms: u64,
    /// Captures answered in each bucket of the sales, the first from `sales_start_ms`: they add
    /// up to `captures`.
    pub captures_per_bucket: Vec<u64>,
    /// The ground link as the master reported it, in consecutive intervals.
    pub link: Vec<LinkInterval>,
    /// What happened when, in time order (see [`Timeline::mark`] for the names).
    pub events: Vec<TimelineEvent>,
    /// The master's counts after landing, sampled about every 100 ms (an unchanged sample is
    /// not repeated): the batch in flight and results decided and delivered over time.
    pub samples: Vec<Sample>,
    /// The end of the flight (everything delivered, or the landing timed out).
    pub end_ms: u64,
}

/// An interval of the ground link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LinkInterval {
    /// Start.
    pub from_ms: u64,
    /// End.
    pub to_ms: u64,
    /// Up (true) or down.
    pub up: bool,
}

/// One moment of the flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEvent {
    /// When.
    pub t_ms: u64,
    /// `gate` (link up, BIN list on every terminal), `take_off` (link down), `landing` (link
    /// back to automatic), `ground_outage_start`/`_end` (an emulated drop-out), `answer_cut`,
    /// `batch_sealed`, `batch_answered`, `all_decided`, `all_delivered`.
    pub event: String,
}

/// The master's counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When.
    pub t_ms: u64,
    /// The master saw the ground link up.
    pub link_up: bool,
    /// Payments in the batch being uploaded.
    pub in_batch: u64,
    /// Decided by the issuer, result not yet at its terminal.
    pub decided: u64,
    /// Result delivered to its terminal.
    pub delivered: u64,
}

impl Timeline {
    /// Records `event` at `t_ms`.
    pub fn mark(&mut self, t_ms: u64, event: &str) {
        self.events.push(TimelineEvent { t_ms, event: event.to_owned() });
    }

    /// Records the link seen `up` (or not) at `t_ms`: extends the last interval, or starts one.
    pub fn link_seen(&mut self, t_ms: u64, up: bool) {
        match self.link.last_mut() {
            Some(last) if last.up == up => last.to_ms = last.to_ms.max(t_ms),
            Some(last) => {
                last.to_ms = last.to_ms.max(t_ms);
                self.link.push(LinkInterval { from_ms: t_ms, to_ms: t_ms, up });
            }
            None => self.link.push(LinkInterval { from_ms: t_ms, to_ms: t_ms, up }),
        }
    }

    /// Records a sample of the master's counts (and the link it saw).
    pub fn sample(&mut self, s: Sample) {
        self.link_seen(s.t_ms, s.link_up);
        let same = |l: &Sample| {
            (l.link_up, l.in_batch, l.decided, l.delivered) == (s.link_up, s.in_batch, s.decided, s.delivered)
        };
        if !self.samples.last().is_some_and(same) {
            self.samples.push(s);
        }
    }

    /// Counts the captures answered in each bucket of the sales, which took `sales_ms`.
    pub fn count_captures(&mut self, captures: &[Capture], sales_ms: u64) {
        self.capture_bucket_ms = match sales_ms {
            0..1_000 => 10,
            1_000..10_000 => 100,
            _ => 1_000,
        };
        let mut per_bucket: Vec<u64> = Vec::new();
        for c in captures {
            let i = (c.answered_at_ms.saturating_sub(self.sales_start_ms) / self.capture_bucket_ms) as usize;
            if per_bucket.len() <= i {
                per_bucket.resize(i + 1, 0);
            }
            per_bucket[i] += 1;
        }
        self.captures_per_bucket = per_bucket;
    }

    /// Ends the timeline at `t_ms`: the last link interval reaches it, events are in time order.
    pub fn finish(&mut self, t_ms: u64) {
        self.end_ms = t_ms;
        if let Some(last) = self.link.last_mut() {
            last.to_ms = last.to_ms.max(t_ms);
        }
        self.events.sort_by_key(|e| e.t_ms);
    }
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
    /// Accepted chip payments altered after capture (`--tamper`): each must be declined
    /// `cryptogram_invalid`, and nothing else.
    pub tampered: u64,
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
    /// The flight closed after landing: its manifest's books (EUR) and the issuer's signed
    /// acknowledgement over the ground link (`issuer_decisions`, `mismatches`: 0).
    pub manifest: Value,
    /// Payments the issuer decided from an item marked `late` (sealed after its
    /// deferred-authorization deadline; with the master's default 24 h window a simulated
    /// flight has none, `tests/deadline.rs` runs a diversion).
    pub late: u64,
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
    /// The flight over time.
    pub timeline: Timeline,
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
        if self.tampered > 0 {
            row("altered after capture (--tamper)", self.tampered.to_string());
        }
        row("batches", self.batches.to_string());
        if let Some(n) = self.manifest.get("mismatches") {
            row("manifest: acknowledged, mismatches", n.to_string());
        }
        row(
            "decided late (past the deadline)",
            format!("{} of {}", self.late, self.approved + self.declined.values().sum::<u64>()),
        );
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
