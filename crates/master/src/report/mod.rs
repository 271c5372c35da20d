//! The crew's flight report (`inflight-master report`): for one flight, totals per currency, the
//! same per terminal, and the payments the crew should look at — computed from the master's
//! stored records by a pure function ([`build`]) and rendered by pure functions as JSON (the
//! stable form: [`FlightReport`] serialised), CSV ([`csv::render`]) or one self-contained HTML
//! page ([`html::render`]).
//!
//! What the master knows, and therefore what the report counts: every payment a terminal
//! submitted to it. Captures a terminal refused at the seat (`luhn`, `expired`,
//! `bin_not_enrolled`, `over_txn_limit`, ...) never reach the master and are not here; each
//! terminal's `status` counts those. Of the master's own refusals, only those it records are
//! here: `over_card_flight_limit` (and `voided`, counted apart); `terminal_full`,
//! `aircraft_full` and `id_conflict` refuse a payment without storing it (only logged), so no
//! report can count them.
//!
//! Card data: only the masked form (BIN + last 4) the store keeps beside the sealed card is
//! read; the report never opens the vault.

pub mod csv;
pub mod html;

use std::collections::{BTreeMap, BTreeSet};

use inflight_core::aggregator::Phase;
use inflight_core::deadline::{Deadline, DeadlineState};
use inflight_core::manifest::{self, ManifestPayment, Standing};
use inflight_store::ReportRow;
use inflight_wire::{AuthOutcome, Verdict};
use serde::{Deserialize, Serialize};

/// The version of the report's JSON form; raised only if a field changes meaning.
pub const REPORT_VERSION: u32 = 1;

/// The `terminal` of rows that total every terminal (CSV, HTML): never a terminal id, which
/// holds only lowercase letters, digits and '-'.
pub const ALL_TERMINALS: &str = "*";

/// Most flagged payments listed in one report (`flagged_total` still counts them all): a report
/// of a flight that went very wrong stays small enough for a tablet.
pub const FLAGGED_MAX: usize = 10_000;

/// Where a payment the master recorded ended: every captured payment has exactly one outcome.
/// A new state (a reversal, say) is one variant here, one name in [`Outcome::as_str`], and its
/// place in [`Outcome::ALL`] and [`Outcome::accepted`]; the report's JSON, CSV and HTML follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Approved by the issuer.
    Approved,
    /// Declined by the issuer (by reason in `declined_by_reason`).
    Declined,
    /// Carried, waiting for the issuer: not yet in a batch, or in one not yet answered.
    Pending,
    /// In a batch the issuer refused: kept for the crew and the issuer's operations.
    Quarantined,
    /// Voided by its sale app after it was sealed into a batch: the issuer is asked to reverse
    /// it and has not answered yet.
    ReversalPending,
    /// Voided by its sale app after the issuer approved it: the issuer released the amount.
    /// (One the issuer had declined stays `declined`: nothing was charged.)
    Reversed,
    /// Stored, but its terminal has not confirmed the sale app was told `accepted`: not carried
    /// unless it does, voided if it never does.
    Unconfirmed,
    /// Refused by an aircraft-wide check and recorded (by reason in `refused_by_reason`).
    Refused,
    /// Never carried: voided by its terminal (the sale app was never told `accepted`), or by
    /// its sale app before it was sealed into a batch.
    Voided,
}

impl Outcome {
    /// Every outcome, in the order the report shows them.
    pub const ALL: [Outcome; 9] = [
        Outcome::Approved,
        Outcome::Declined,
        Outcome::Pending,
        Outcome::Quarantined,
        Outcome::ReversalPending,
        Outcome::Reversed,
        Outcome::Unconfirmed,
        Outcome::Refused,
        Outcome::Voided,
    ];

    /// The stable name (JSON keys, CSV `measure`, HTML `data-measure`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Declined => "declined",
            Outcome::Pending => "pending",
            Outcome::Quarantined => "quarantined",
            Outcome::ReversalPending => "reversal_pending",
            Outcome::Reversed => "reversed",
            Outcome::Unconfirmed => "unconfirmed",
            Outcome::Refused => "refused",
            Outcome::Voided => "voided",
        }
    }

    /// Whether a payment with this outcome is one the master carried (or carries) to the
    /// issuer (counted in `accepted`).
    pub fn accepted(self) -> bool {
        match self {
            Outcome::Approved
            | Outcome::Declined
            | Outcome::Pending
            | Outcome::Quarantined
            | Outcome::ReversalPending
            | Outcome::Reversed => true,
            Outcome::Unconfirmed | Outcome::Refused | Outcome::Voided => false,
        }
    }
}

/// A number of payments and their sum, in minor units of one currency: the manifest's, so the
/// crew's report and the flight's close count alike.
pub use inflight_core::manifest::Tally;

/// Totals of one currency, for the whole flight or one terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Every payment the master recorded: the sum of all `outcomes`.
    pub captured: Tally,
    /// Carried to the issuer: `approved` + `declined` + `pending` + `quarantined` +
    /// `reversal_pending` + `reversed`.
    pub accepted: Tally,
    /// Still waiting for the issuer (`pending` or `quarantined`) and captured more than
    /// `aged_after_ms` ago; never dropped for age.
    pub aged: Tally,
    /// Carried and waiting for the issuer with its deferred-authorization deadline within
    /// `deadline_warn_lead_ms` (or past it, for one sealed on time whose batch is not answered
    /// yet): the crew should get a link.
    #[serde(default)]
    pub deadline_soon: Tally,
    /// Carried and sealed into a batch after its deadline (sent `late: true`, decided or not),
    /// or not sealed yet with its deadline past (it will be). Never dropped.
    #[serde(default)]
    pub deadline_missed: Tally,
    /// Every captured payment under exactly one outcome name; every name present, zeros too.
    pub outcomes: BTreeMap<String, Tally>,
    /// The master's recorded refusals by reason (they add up to `outcomes.refused`).
    pub refused_by_reason: BTreeMap<String, Tally>,
    /// The issuer's declines by reason (they add up to `outcomes.declined`).
    pub declined_by_reason: BTreeMap<String, Tally>,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            captured: Tally::default(),
            accepted: Tally::default(),
            aged: Tally::default(),
            deadline_soon: Tally::default(),
            deadline_missed: Tally::default(),
            outcomes: Outcome::ALL.iter().map(|o| (o.as_str().to_owned(), Tally::default())).collect(),
            refused_by_reason: BTreeMap::new(),
            declined_by_reason: BTreeMap::new(),
        }
    }
}

impl Totals {
    /// The tally of one outcome.
    pub fn outcome(&self, o: Outcome) -> Tally {
        self.outcomes.get(o.as_str()).copied().unwrap_or_default()
    }

    fn add(&mut self, c: &Classified, amount_minor: u64) {
        self.captured.add(amount_minor);
        if c.outcome.accepted() {
            self.accepted.add(amount_minor);
        }
        if c.aged {
            self.aged.add(amount_minor);
        }
        match c.deadline {
            DeadlineState::OnTime => {}
            DeadlineState::Soon => self.deadline_soon.add(amount_minor),
            DeadlineState::Missed => self.deadline_missed.add(amount_minor),
        }
        self.outcomes.entry(c.outcome.as_str().to_owned()).or_default().add(amount_minor);
        let by_reason = match c.outcome {
            Outcome::Refused => Some(&mut self.refused_by_reason),
            Outcome::Declined => Some(&mut self.declined_by_reason),
            _ => None,
        };
        if let (Some(map), Some(reason)) = (by_reason, c.reason) {
            map.entry(reason.to_owned()).or_default().add(amount_minor);
        }
    }
}

/// One currency's totals over every terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyTotals {
    /// ISO 4217 code.
    pub currency: String,
    /// The totals.
    pub totals: Totals,
}

/// One terminal's totals in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalTotals {
    /// The terminal id.
    pub terminal: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The totals.
    pub totals: Totals,
}

/// A payment the crew should look at: carried although a check failed (its `flags` name the
/// check), or waiting for the issuer for longer than `aged_after_ms` (flag `aged`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlaggedPayment {
    /// The payment id (32 hex digits).
    pub payment_id: String,
    /// Its terminal.
    pub terminal: String,
    /// BIN + last 4, never more.
    pub card: String,
    /// Seat or crew position, as the sale app gave it.
    pub seat: String,
    /// Amount, minor units.
    pub amount_minor: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// Why it is listed: the failed checks' names, and `aged`.
    pub flags: Vec<String>,
    /// Its outcome's name ([`Outcome::as_str`]).
    pub state: String,
    /// The decline or refusal reason, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The crew's report of one flight (README "The flight report"). Field names are stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightReport {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// The flight reported.
    pub flight: String,
    /// Every flight the master holds payments of (to pick another with `--flight`).
    pub flights: Vec<String>,
    /// Payments waiting for the issuer longer than this are `aged`
    /// (`report.payment_age_flag_hours`).
    pub aged_after_ms: u64,
    /// The deferred-authorization window (`deadline.window_secs`), ms after capture.
    #[serde(default)]
    pub deadline_window_ms: u64,
    /// The crew is warned this long before a payment's deadline (`deadline.warn_lead_secs`).
    #[serde(default)]
    pub deadline_warn_lead_ms: u64,
    /// Payments of the flight, every currency, that missed their deadline: the sum of every
    /// currency's `totals.deadline_missed.count` (amounts are per currency, in the totals).
    #[serde(default)]
    pub deadline_missed: u64,
    /// Payments of the flight, every currency, whose deadline is soon: the sum of every
    /// currency's `totals.deadline_soon.count`.
    #[serde(default)]
    pub deadline_soon: u64,
    /// Per currency, over every terminal, sorted by currency.
    pub currencies: Vec<CurrencyTotals>,
    /// Per terminal and currency, sorted by terminal, then currency.
    pub terminals: Vec<TerminalTotals>,
    /// How many payments are flagged.
    pub flagged_total: u64,
    /// The flagged payments, in payment id order, at most [`FLAGGED_MAX`].
    pub flagged: Vec<FlaggedPayment>,
}

/// A payment's outcome, the reason behind it, whether it is aged, and where it stands against
/// its deadline.
struct Classified {
    outcome: Outcome,
    reason: Option<&'static str>,
    aged: bool,
    deadline: DeadlineState,
}

/// When the report is made and what it flags: the clock and the configured times.
#[derive(Debug, Clone, Copy)]
pub struct AsOf {
    /// Now, ms since the Unix epoch.
    pub now_unix_ms: u64,
    /// `report.payment_age_flag_hours`, in ms.
    pub aged_after_ms: u64,
    /// The deferred-authorization deadline.
    pub deadline: Deadline,
}

/// Where a stored payment ended, and why.
fn classify(row: &ReportRow, as_of: &AsOf) -> Classified {
    let aged_before_unix_ms = as_of.now_unix_ms.saturating_sub(as_of.aged_after_ms);
    let v = &row.view;
    let (outcome, reason) =
        match manifest::standing(v.verdict, row.answered, row.phase, v.outcome.as_ref(), row.reversal) {
            Standing::Approved => (Outcome::Approved, None),
            Standing::Declined => match &v.outcome {
                Some(AuthOutcome::Declined(r)) => (Outcome::Declined, Some(r.as_str())),
                _ => (Outcome::Declined, None),
            },
            Standing::Voided => (Outcome::Voided, None),
            Standing::Reversed => (Outcome::Reversed, None),
            Standing::ReversalPending => (Outcome::ReversalPending, None),
            Standing::Pending => (Outcome::Pending, None),
            Standing::Quarantined => (Outcome::Quarantined, None),
            Standing::Unconfirmed => (Outcome::Unconfirmed, None),
            Standing::Refused => match v.verdict {
                Verdict::Refused(r) => (Outcome::Refused, Some(r.as_str())),
                _ => (Outcome::Refused, None),
            },
        };
    let waiting = matches!(outcome, Outcome::Pending | Outcome::Quarantined);
    // Judged for every payment carried to the issuer, as the master's status judges it.
    let deadline = if outcome.accepted() {
        let waiting_for_issuer = matches!(row.phase, Phase::Pending | Phase::InBatch | Phase::Quarantined);
        as_of.deadline.judge(v.payment.captured_unix_ms, row.sealed_unix_ms, waiting_for_issuer, as_of.now_unix_ms)
    } else {
        DeadlineState::OnTime
    };
    Classified { outcome, reason, aged: waiting && v.payment.captured_unix_ms < aged_before_unix_ms, deadline }
}

/// The report of `flight` from its stored payments (`rows`: those of this flight; `flights`:
/// every flight in the store), as of `as_of`. Pure: the same input, the same report.
pub fn build(flight: &str, flights: &BTreeSet<String>, rows: &[ReportRow], as_of: &AsOf) -> FlightReport {
    let mut currencies: BTreeMap<String, Totals> = BTreeMap::new();
    let mut terminals: BTreeMap<(String, String), Totals> = BTreeMap::new();
    let (mut flagged, mut flagged_total) = (Vec::new(), 0u64);
    for row in rows.iter().filter(|r| r.view.flight == flight) {
        let p = &row.view.payment;
        let c = classify(row, as_of);
        let (currency, amount) = (p.amount.currency().as_str().to_owned(), p.amount.amount_minor());
        currencies.entry(currency.clone()).or_default().add(&c, amount);
        terminals.entry((p.terminal.as_str().to_owned(), currency.clone())).or_default().add(&c, amount);
        let mut flags: Vec<String> = row.view.flags.iter().map(|f| f.as_str().to_owned()).collect();
        if c.aged {
            flags.push("aged".into());
        }
        match c.deadline {
            DeadlineState::OnTime => {}
            DeadlineState::Soon => flags.push("deadline_soon".into()),
            DeadlineState::Missed => flags.push("deadline_missed".into()),
        }
        if flags.is_empty() {
            continue;
        }
        flagged_total += 1;
        if flagged.len() < FLAGGED_MAX {
            flagged.push(FlaggedPayment {
                payment_id: p.id.to_string(),
                terminal: p.terminal.as_str().to_owned(),
                card: p.card.to_string(),
                seat: p.seat.clone(),
                amount_minor: amount,
                currency,
                flags,
                state: c.outcome.as_str().to_owned(),
                reason: c.reason.map(str::to_owned),
            });
        }
    }
    FlightReport {
        report_version: REPORT_VERSION,
        flight: flight.to_owned(),
        flights: flights.iter().cloned().collect(),
        aged_after_ms: as_of.aged_after_ms,
        deadline_window_ms: as_of.deadline.window_ms(),
        deadline_warn_lead_ms: as_of.deadline.warn_lead_ms(),
        deadline_missed: currencies.values().map(|t| t.deadline_missed.count).sum(),
        deadline_soon: currencies.values().map(|t| t.deadline_soon.count).sum(),
        currencies: currencies.into_iter().map(|(currency, totals)| CurrencyTotals { currency, totals }).collect(),
        terminals: terminals
            .into_iter()
            .map(|((terminal, currency), totals)| TerminalTotals { terminal, currency, totals })
            .collect(),
        flagged_total,
        flagged,
    }
}

/// The payments of `flight` as the closing manifest takes them
/// (`inflight_core::manifest::close`): each with the standing its report outcome gives, so the
/// manifest and the crew's report never classify a payment differently
/// (`inflight_core::manifest::standing`).
pub fn manifest_payments(flight: &str, rows: &[ReportRow]) -> Vec<ManifestPayment> {
    rows.iter()
        .filter(|r| r.view.flight == flight)
        .map(|row| {
            let (p, v) = (&row.view.payment, &row.view);
            let standing = manifest::standing(v.verdict, row.answered, row.phase, v.outcome.as_ref(), row.reversal);
            ManifestPayment {
                id: p.id,
                terminal: p.terminal.as_str().to_owned(),
                currency: p.amount.currency(),
                amount_minor: p.amount.amount_minor(),
                captured_unix_ms: p.captured_unix_ms,
                mcc: p.pos.mcc,
                standing,
            }
        })
        .collect()
}

/// The output formats of `inflight-master report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The stable form: [`FlightReport`] as one JSON document.
    Json,
    /// RFC 4180, one header row ([`csv::render`]).
    Csv,
    /// One self-contained XHTML page with inline SVG ([`html::render`]).
    Html,
}

impl Format {
    /// `json`, `csv` or `html`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "html" => Ok(Format::Html),
            other => Err(format!("unknown format `{other}` (json, csv or html)")),
        }
    }

    /// The report in this format.
    pub fn render(self, report: &FlightReport) -> String {
        match self {
            // A struct of strings, numbers and string-keyed maps always serialises.
            Format::Json => serde_json::to_string_pretty(report).expect("a report always serialises") + "\n",
            Format::Csv => csv::render(report),
            Format::Html => html::render(report),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use inflight_core::aggregator::Reversal;
    use inflight_store::{MaskedView, MasterView};
    use inflight_wire::{Currency, DeclineReason, Money, Pan, PaymentId, RefusalReason, ReversalOutcome, TerminalId};

    pub(crate) const NOW: u64 = 1_800_000_000_000;
    pub(crate) const HOUR: u64 = 3_600_000;

    /// One stored payment; `n` makes its id, card and seat.
    pub(crate) fn row(n: u8, terminal: &str, amount: u64, currency: &str) -> ReportRow {
        let pan = Pan::parse("4111111111111111").expect("test card");
        ReportRow {
            view: MasterView {
                payment: MaskedView {
                    id: PaymentId::from_bytes([n; 16]),
                    terminal: TerminalId::parse(terminal).expect("terminal id"),
                    card: pan.masked(),
                    amount: Money::new(amount, Currency::parse(currency).expect("currency")).expect("money"),
                    seat: format!("{n}A"),
                    captured_unix_ms: NOW - HOUR,
                    card_data_erased: true,
                    pos: inflight_wire::PointOfSale::LEGACY,
                },
                verdict: Verdict::Stored,
                flags: vec![],
                flight: "IF200".into(),
                outcome: None,
                delivered: false,
            },
            answered: true,
            phase: Phase::Pending,
            reversal: None,
            sealed_unix_ms: None,
        }
    }

    pub(crate) fn approved(mut r: ReportRow) -> ReportRow {
        r.view.outcome = Some(AuthOutcome::Approved { auth_code: "A1B2C3".into() });
        r.phase = Phase::Delivered;
        r
    }

    pub(crate) fn declined(mut r: ReportRow, reason: DeclineReason) -> ReportRow {
        r.view.outcome = Some(AuthOutcome::Declined(reason));
        r.phase = Phase::Decided;
        r
    }

    /// A flight with one payment of every outcome, on two terminals and two currencies.
    pub(crate) fn every_outcome() -> Vec<ReportRow> {
        let mut refused = row(5, "t-2", 700, "EUR");
        refused.view.verdict = Verdict::Refused(RefusalReason::OverCardFlightLimit);
        refused.answered = false;
        let mut voided = row(6, "t-2", 800, "EUR");
        voided.view.verdict = Verdict::Refused(RefusalReason::Voided);
        let mut unconfirmed = row(7, "t-1", 900, "EUR");
        unconfirmed.answered = false;
        let mut quarantined = row(8, "t-1", 1_000, "USD");
        quarantined.phase = Phase::Quarantined;
        quarantined.view.payment.captured_unix_ms = NOW - 30 * HOUR;
        // Sealed on time; the issuer refused the batch, so it is still waiting past its deadline.
        quarantined.sealed_unix_ms = Some(NOW - 29 * HOUR);
        let mut flagged = approved(row(9, "t-2", 1_100, "EUR"));
        flagged.view.flags = vec![RefusalReason::OverCardFlightLimit];
        let mut reversal_pending = row(10, "t-2", 1_200, "USD");
        reversal_pending.phase = Phase::InBatch;
        reversal_pending.reversal = Some(Reversal::Requested);
        let mut reversed = approved(row(11, "t-1", 1_300, "USD"));
        reversed.reversal = Some(Reversal::Done(ReversalOutcome::Reversed { released_minor: 1_300 }));
        let mut not_charged = declined(row(12, "t-1", 1_400, "USD"), DeclineReason::AccountBlocked);
        not_charged.reversal = Some(Reversal::Done(ReversalOutcome::NotCharged));
        vec![
            approved(row(1, "t-1", 100, "EUR")),
            approved(row(2, "t-2", 200, "EUR")),
            declined(row(3, "t-1", 300, "EUR"), DeclineReason::InsufficientFunds),
            row(4, "t-1", 400, "USD"),
            refused,
            voided,
            unconfirmed,
            quarantined,
            flagged,
            reversal_pending,
            reversed,
            not_charged,
        ]
    }

    pub(crate) fn report(rows: &[ReportRow]) -> FlightReport {
        build("IF200", &BTreeSet::from(["IF199".to_owned(), "IF200".to_owned()]), rows, &as_of(24 * HOUR))
    }

    fn tally(count: u64, amount_minor: u64) -> Tally {
        Tally { count, amount_minor }
    }

    /// As of [`NOW`], aged after `aged_after_ms`, the default 24 h deadline warned 4 h before.
    pub(crate) fn as_of(aged_after_ms: u64) -> AsOf {
        AsOf { now_unix_ms: NOW, aged_after_ms, deadline: Deadline::default() }
    }

    /// A 30-hour diversion: what was sealed after its deadline stays `deadline_missed` once
    /// decided; what was sealed on time and answered is not; what waits past its deadline (not
    /// sealed yet) is missed, and what waits within the lead time is `deadline_soon`. Only
    /// payments carried to the issuer are judged.
    #[test]
    fn deadline_totals_follow_the_seal_and_the_clock() {
        let at = |hours_ago: u64| NOW - hours_ago * HOUR;
        let captured = |mut r: ReportRow, hours_ago: u64| {
            r.view.payment.captured_unix_ms = at(hours_ago);
            r
        };
        let sealed = |mut r: ReportRow, hours_ago: u64| {
            r.sealed_unix_ms = Some(at(hours_ago));
            r
        };
        let mut not_carried = captured(row(6, "t-1", 600, "EUR"), 31);
        not_carried.view.verdict = Verdict::Refused(RefusalReason::Voided);
        let rows = vec![
            // Captured 31 h ago, sealed 1 h ago (30 h after capture), approved: missed.
            sealed(approved(captured(row(1, "t-1", 100, "EUR"), 31)), 1),
            // Captured 31 h ago, sealed 10 h ago (on time), declined: on time.
            sealed(declined(captured(row(2, "t-1", 200, "EUR"), 31), DeclineReason::InsufficientFunds), 10),
            // Captured 25 h ago, still pending: missed, and will be sent late.
            captured(row(3, "t-2", 300, "EUR"), 25),
            // Captured 21 h ago, pending: within the 4 h lead time.
            captured(row(4, "t-2", 400, "USD"), 21),
            // Captured 2 h ago: on time.
            captured(row(5, "t-2", 500, "USD"), 2),
            not_carried,
        ];
        let r = build("IF200", &BTreeSet::from(["IF200".to_owned()]), &rows, &as_of(48 * HOUR));
        let (eur, usd) = (&r.currencies[0].totals, &r.currencies[1].totals);
        assert_eq!(eur.deadline_missed, tally(2, 400));
        assert_eq!(eur.deadline_soon, tally(0, 0));
        assert_eq!(usd.deadline_missed, tally(0, 0));
        assert_eq!(usd.deadline_soon, tally(1, 400));
        assert_eq!((r.deadline_missed, r.deadline_soon), (2, 1));
        assert_eq!((r.deadline_window_ms, r.deadline_warn_lead_ms), (24 * HOUR, 4 * HOUR));
        let flags: Vec<(&str, &[String])> = r.flagged.iter().map(|f| (f.seat.as_str(), f.flags.as_slice())).collect();
        assert_eq!(
            flags,
            [
                ("1A", &["deadline_missed".to_owned()][..]),
                ("3A", &["deadline_missed".to_owned()][..]),
                ("4A", &["deadline_soon".to_owned()][..]),
            ]
        );
        // Per terminal too, adding up to the currency's.
        let t1 = r.terminals.iter().find(|t| t.terminal == "t-1" && t.currency == "EUR").expect("t-1 EUR");
        assert_eq!(t1.totals.deadline_missed, tally(1, 100));
    }

    /// Found by review: a reversal of a payment in a refused (quarantined) batch waits for the
    /// crew and the issuer's operations like the batch itself; it must not hide it.
    #[test]
    fn a_quarantined_payment_stays_quarantined_and_aged_when_its_sale_app_voids_it() {
        let mut q = row(1, "t-1", 1_000, "EUR");
        q.phase = Phase::Quarantined;
        q.reversal = Some(Reversal::Requested);
        q.view.payment.captured_unix_ms = NOW - 30 * HOUR;
        let r = report(&[q]);
        let eur = &r.currencies[0].totals;
        assert_eq!(eur.outcomes["quarantined"], tally(1, 1_000));
        assert_eq!(eur.outcomes["reversal_pending"], tally(0, 0));
        assert_eq!(eur.aged, tally(1, 1_000));
    }

    #[test]
    fn every_payment_has_one_outcome_and_the_totals_add_up() {
        let r = report(&every_outcome());
        assert_eq!(r.currencies.iter().map(|c| c.currency.as_str()).collect::<Vec<_>>(), ["EUR", "USD"]);
        let eur = &r.currencies[0].totals;
        assert_eq!(eur.captured, tally(7, 100 + 200 + 300 + 700 + 800 + 900 + 1_100));
        assert_eq!(eur.accepted, tally(4, 100 + 200 + 300 + 1_100));
        assert_eq!(eur.outcome(Outcome::Approved), tally(3, 1_400));
        assert_eq!(eur.outcome(Outcome::Declined), tally(1, 300));
        assert_eq!(eur.declined_by_reason["insufficient_funds"], tally(1, 300));
        assert_eq!(eur.outcome(Outcome::Refused), tally(1, 700));
        assert_eq!(eur.refused_by_reason["over_card_flight_limit"], tally(1, 700));
        assert_eq!(eur.outcome(Outcome::Voided), tally(1, 800));
        assert_eq!(eur.outcome(Outcome::Unconfirmed), tally(1, 900));
        assert_eq!(eur.aged, tally(0, 0));
        let usd = &r.currencies[1].totals;
        assert_eq!(usd.outcome(Outcome::Pending), tally(1, 400));
        assert_eq!(usd.outcome(Outcome::Quarantined), tally(1, 1_000));
        assert_eq!(usd.outcome(Outcome::ReversalPending), tally(1, 1_200));
        assert_eq!(usd.outcome(Outcome::Reversed), tally(1, 1_300));
        assert_eq!(usd.outcome(Outcome::Declined), tally(1, 1_400), "a declined payment voided later stays declined");
        assert_eq!(usd.declined_by_reason["account_blocked"], tally(1, 1_400));
        assert_eq!(usd.accepted, tally(5, 400 + 1_000 + 1_200 + 1_300 + 1_400));
        assert_eq!(usd.aged, tally(1, 1_000), "only the quarantined payment waited over 24 h");
        for c in &r.currencies {
            let t = &c.totals;
            let sum = |f: &dyn Fn(Outcome) -> bool| {
                Outcome::ALL.iter().filter(|o| f(**o)).map(|o| t.outcome(*o)).fold(Tally::default(), |a, b| Tally {
                    count: a.count + b.count,
                    amount_minor: a.amount_minor + b.amount_minor,
                })
            };
            assert_eq!(sum(&|_| true), t.captured, "{}: outcomes partition captured", c.currency);
            assert_eq!(sum(&Outcome::accepted), t.accepted, "{}", c.currency);
            assert_eq!(t.outcomes.len(), Outcome::ALL.len(), "every outcome named, zeros too");
        }
    }

    #[test]
    fn terminals_add_up_to_the_flight() {
        let r = report(&every_outcome());
        let keys: Vec<_> = r.terminals.iter().map(|t| (t.terminal.as_str(), t.currency.as_str())).collect();
        assert_eq!(keys, [("t-1", "EUR"), ("t-1", "USD"), ("t-2", "EUR"), ("t-2", "USD")]);
        for c in &r.currencies {
            for o in Outcome::ALL {
                let sum: u64 = r
                    .terminals
                    .iter()
                    .filter(|t| t.currency == c.currency)
                    .map(|t| t.totals.outcome(o).amount_minor)
                    .sum();
                assert_eq!(sum, c.totals.outcome(o).amount_minor, "{} {}", c.currency, o.as_str());
            }
        }
        assert_eq!(r.terminals[2].totals.captured, tally(4, 200 + 700 + 800 + 1_100));
    }

    #[test]
    fn flagged_payments_are_listed_masked_with_their_state() {
        let r = report(&every_outcome());
        assert_eq!(r.flagged_total, 2);
        let f: Vec<_> = r.flagged.iter().map(|f| (f.seat.as_str(), f.flags.clone(), f.state.as_str())).collect();
        assert_eq!(
            f,
            [
                ("8A", vec!["aged".to_owned(), "deadline_soon".to_owned()], "quarantined"),
                ("9A", vec!["over_card_flight_limit".to_owned()], "approved")
            ]
        );
        assert!(r.flagged.iter().all(|f| f.card == "411111******1111"), "{:?}", r.flagged);
        let json = serde_json::to_string(&r).expect("json");
        assert!(!json.contains("4111111111111111"));
    }

    #[test]
    fn only_the_flight_asked_for_is_counted() {
        let mut rows = every_outcome();
        rows[0].view.flight = "IF199".into();
        let r = report(&rows);
        assert_eq!(r.currencies[0].totals.captured.count, 6);
        assert_eq!(r.flights, ["IF199", "IF200"]);
        let empty = build("IF300", &BTreeSet::new(), &rows, &as_of(HOUR));
        assert!(empty.currencies.is_empty() && empty.terminals.is_empty() && empty.flagged.is_empty());
    }

    #[test]
    fn the_json_form_round_trips_and_keeps_its_field_names() {
        let r = report(&every_outcome());
        let v = serde_json::to_value(&r).expect("json");
        for k in [
            "report_version",
            "flight",
            "flights",
            "aged_after_ms",
            "currencies",
            "terminals",
            "flagged_total",
            "flagged",
        ] {
            assert!(v.get(k).is_some(), "{k} missing: {v}");
        }
        let t = &v["currencies"][0]["totals"];
        for k in ["captured", "accepted", "aged", "outcomes", "refused_by_reason", "declined_by_reason"] {
            assert!(t.get(k).is_some(), "{k} missing: {t}");
        }
        assert_eq!(t["outcomes"]["approved"], serde_json::json!({"count": 3, "amount_minor": 1_400}));
        let back: FlightReport = serde_json::from_value(v).expect("parses back");
        assert_eq!(back, r);
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert_eq!(Format::parse("csv"), Ok(Format::Csv));
        assert_eq!(Format::parse("html"), Ok(Format::Html));
        assert!(Format::parse("pdf").expect_err("unknown").contains("json, csv or html"));
    }
}
