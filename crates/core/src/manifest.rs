//! The flight's closing manifest (issue 13 §4): from the master's payments of one flight, the
//! books per terminal and currency, a keyed hash chain over the payment ids in capture order,
//! an HMAC seal over the whole, and [`reconcile`], which lists every difference between a
//! manifest and what the issuer decided. Pure: no clock (the closing time is passed in), no
//! store, no keys but the one handed in.
//!
//! # What counts where (the books identity)
//!
//! Every payment of the flight the master recorded has exactly one [`Standing`]. `captured` is
//! every one of them **except** `refused` (an aircraft-wide check refused it at capture: the sale
//! app was told `rejected`, no sale happened; listed apart). The identity, in count and in
//! amount, per terminal and currency and for the flight:
//!
//! ```text
//! approved + declined + voided + pending = captured
//! ```
//!
//! - `approved`: the issuer approved it and it stands (not reversed).
//! - `declined`: the issuer declined it (a void of a declined payment leaves it declined:
//!   nothing was charged, nothing to release).
//! - `voided`: nothing is charged, because it was voided before it was carried, or reversed
//!   after the issuer approved it (the issuer released the amount). Voids net out: `reversed`
//!   is shown apart as a part of `voided`.
//! - `pending`: not settled yet: waiting to be carried or for the issuer's answer, in a batch
//!   the issuer refused (`quarantined`), voided after sealing with the reversal not answered
//!   (`reversal_pending`), or stored without its terminal's confirmation that the sale app was
//!   told `accepted` (`unconfirmed`). Each is shown apart as a part of `pending`.
//!
//! Partial approvals: the issuer's [`inflight_wire::AuthOutcome`] has only `Approved` (the full
//! amount) and `Declined`; there is no partial approval on the wire today, so the manifest has
//! none. When the wire gains one, it is a new [`Standing`] with its approved amount, counted in
//! `approved` with the approved amount and its remainder in `declined`.
//!
//! # Why the chain is keyed
//!
//! Payment ids are not card data (a capture time and 10 random bytes), so a plain hash over them
//! would leak nothing about cards. The chain is keyed anyway: (1) it is then a MAC, so whoever
//! edits the list of payments (drops one, adds one, reorders) cannot make a matching chain
//! without the aircraft's key; (2) whoever holds a manifest (a crew tablet, an airline's
//! back office) cannot confirm a guessed id is in it; (3) "no unkeyed digest over payment
//! records" stays a rule that needs no case-by-case argument.

use std::collections::{BTreeMap, HashMap};

use inflight_wire::{AuthOutcome, Currency, Mcc, PaymentId, RefusalReason, ReversalOutcome, Verdict};
use ring::hmac;

use crate::aggregator::{Phase, Reversal};
use serde::{Deserialize, Serialize};

/// The version of the manifest's JSON form; raised only if a field changes meaning.
pub const MANIFEST_VERSION: u32 = 1;

/// Most payments one manifest lists. A flight of more is refused (`CloseError::TooMany`), never
/// truncated (a truncated manifest would not balance). Sized so that the manifest's JSON (about
/// 130 bytes a payment, 200 pretty-printed) stays within the admin socket's answer bound
/// (`inflight_daemon::local::ANSWER_BYTES_MAX`, 512 MiB); the master's index
/// (`aggregator::INDEX_ENTRIES_MAX`, every flight it holds) is larger.
pub const MANIFEST_PAYMENTS_MAX: usize = 2_000_000;

/// Most mismatches [`reconcile`] lists; past it, `Mismatch::TooMany` says how many more.
pub const MISMATCHES_MAX: usize = 10_000;

/// Where a payment of the flight stands at closing: exactly one per payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, bincode::Encode)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// The issuer approved it and it stands.
    Approved,
    /// The issuer declined it.
    Declined,
    /// Voided before it was carried: never charged.
    Voided,
    /// Approved, then voided by its sale app: the issuer released the amount.
    Reversed,
    /// Voided after it was sealed; the issuer's answer to the reversal is not back.
    ReversalPending,
    /// Carried, waiting for the issuer: not in a batch yet, or in one not answered yet.
    Pending,
    /// In a batch the issuer refused: waiting for the crew and the issuer's operations.
    Quarantined,
    /// Stored, but its terminal has not confirmed the sale app was told `accepted`.
    Unconfirmed,
    /// Refused by an aircraft-wide check at capture: not a sale, outside `captured`.
    Refused,
}

impl Standing {
    /// Whether a payment in this standing is still waiting for someone (the identity's
    /// `pending`).
    pub fn pending(self) -> bool {
        matches!(self, Standing::Pending | Standing::Quarantined | Standing::ReversalPending | Standing::Unconfirmed)
    }
}

/// Where a payment the master recorded stands, from what the master holds of it: its verdict,
/// whether its terminal confirmed the sale app was told `accepted`, its phase, the issuer's
/// outcome and its reversal. The one classification: the crew's report, the manifest and the
/// model simulator's end check all take it from here.
pub fn standing(
    verdict: Verdict,
    answered: bool,
    phase: Phase,
    outcome: Option<&AuthOutcome>,
    reversal: Option<Reversal>,
) -> Standing {
    match verdict {
        Verdict::Refused(RefusalReason::Voided) => Standing::Voided,
        Verdict::Refused(_) => Standing::Refused,
        Verdict::Stored | Verdict::Held if !answered => Standing::Unconfirmed,
        // Quarantined first: a reversal there waits for the crew and the issuer's operations to
        // resolve the batch, and must not hide it.
        Verdict::Stored | Verdict::Held if outcome.is_none() && phase == Phase::Quarantined => Standing::Quarantined,
        Verdict::Stored | Verdict::Held => match (reversal, outcome) {
            (Some(Reversal::Requested | Reversal::Done(ReversalOutcome::Unknown)), _) => Standing::ReversalPending,
            (Some(Reversal::Done(ReversalOutcome::Reversed { .. })), _) => Standing::Reversed,
            // A reversal of a declined payment (`NotCharged`) leaves it declined.
            (_, Some(AuthOutcome::Approved { .. })) => Standing::Approved,
            (_, Some(AuthOutcome::Declined(_))) => Standing::Declined,
            (_, None) => Standing::Pending,
        },
    }
}

/// One payment of the flight, as the master knows it at closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPayment {
    /// The payment id.
    pub id: PaymentId,
    /// Its terminal's id.
    pub terminal: String,
    /// Its currency.
    pub currency: Currency,
    /// Its amount, minor units.
    pub amount_minor: u64,
    /// When the terminal captured it (the chain's order, then the id).
    pub captured_unix_ms: u64,
    /// What was sold: its merchant category.
    pub mcc: Mcc,
    /// Where it stands.
    pub standing: Standing,
}

/// A number of payments and their sum, minor units of one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, bincode::Encode)]
pub struct Tally {
    /// Payments.
    pub count: u64,
    /// Their amounts added up, minor units.
    pub amount_minor: u64,
}

impl Tally {
    /// Counts one more payment of `amount_minor`.
    pub fn add(&mut self, amount_minor: u64) {
        self.count += 1;
        self.amount_minor = self.amount_minor.saturating_add(amount_minor);
    }

    fn plus(self, o: Tally) -> Tally {
        Tally { count: self.count + o.count, amount_minor: self.amount_minor.saturating_add(o.amount_minor) }
    }
}

/// The books of one currency (for one terminal or the flight). The first five fields make the
/// identity; the others are parts of them, shown apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, bincode::Encode)]
pub struct Books {
    /// Every payment recorded but `refused`.
    pub captured: Tally,
    /// Approved and standing: what is charged.
    pub approved: Tally,
    /// Declined by the issuer.
    pub declined: Tally,
    /// Not charged: voided before carried, plus `reversed`.
    pub voided: Tally,
    /// Not settled: `pending` proper plus `quarantined`, `reversal_pending`, `unconfirmed`.
    pub pending: Tally,
    /// Part of `voided`: approved, then released.
    pub reversed: Tally,
    /// Part of `pending`: in a batch the issuer refused.
    pub quarantined: Tally,
    /// Part of `pending`: a reversal asked, not answered.
    pub reversal_pending: Tally,
    /// Part of `pending`: not confirmed by its terminal.
    pub unconfirmed: Tally,
    /// Outside `captured`: refused at capture by an aircraft-wide check.
    pub refused: Tally,
}

impl Books {
    fn add(&mut self, standing: Standing, amount_minor: u64) {
        if standing == Standing::Refused {
            self.refused.add(amount_minor);
            return;
        }
        self.captured.add(amount_minor);
        match standing {
            Standing::Approved => self.approved.add(amount_minor),
            Standing::Declined => self.declined.add(amount_minor),
            Standing::Voided => self.voided.add(amount_minor),
            Standing::Reversed => {
                self.voided.add(amount_minor);
                self.reversed.add(amount_minor);
            }
            Standing::Pending => self.pending.add(amount_minor),
            Standing::Quarantined => {
                self.pending.add(amount_minor);
                self.quarantined.add(amount_minor);
            }
            Standing::ReversalPending => {
                self.pending.add(amount_minor);
                self.reversal_pending.add(amount_minor);
            }
            Standing::Unconfirmed => {
                self.pending.add(amount_minor);
                self.unconfirmed.add(amount_minor);
            }
            Standing::Refused => unreachable!("counted above"),
        }
    }

    /// approved + declined + voided + pending = captured, in count and amount.
    pub fn balanced(&self) -> bool {
        self.approved.plus(self.declined).plus(self.voided).plus(self.pending) == self.captured
    }
}

/// The books of one terminal in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, bincode::Encode)]
pub struct TerminalBooks {
    /// The terminal id.
    pub terminal: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Its books.
    pub books: Books,
}

/// The books of one merchant category in one currency, over every terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, bincode::Encode)]
pub struct CategoryBooks {
    /// Merchant category code, four digits.
    pub mcc: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Its books.
    pub books: Books,
}

/// The books of one currency over every terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, bincode::Encode)]
pub struct CurrencyBooks {
    /// ISO 4217 code.
    pub currency: String,
    /// Its books.
    pub books: Books,
}

/// One payment as the manifest lists it (no card data: the id, where and how much).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, bincode::Encode)]
pub struct ManifestEntry {
    /// 32 hex digits.
    pub payment_id: String,
    /// Its terminal.
    pub terminal: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Amount, minor units.
    pub amount_minor: u64,
    /// Capture time, ms since the Unix epoch.
    pub captured_unix_ms: u64,
    /// Merchant category code, four digits.
    pub mcc: String,
    /// Where it stands.
    pub standing: Standing,
}

/// The flight's closing manifest (README "Closing the flight"). Field names are stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, bincode::Encode)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// The flight closed.
    pub flight: String,
    /// When it was closed, ms since the Unix epoch (the master's clock).
    pub closed_unix_ms: u64,
    /// Closed with payments still pending (`--force`): `pending` is not zero and the books
    /// will change.
    pub forced: bool,
    /// Per currency, sorted by currency.
    pub currencies: Vec<CurrencyBooks>,
    /// Per terminal and currency, sorted by terminal, then currency.
    pub terminals: Vec<TerminalBooks>,
    /// Per merchant category and currency, sorted by category, then currency.
    pub merchant_categories: Vec<CategoryBooks>,
    /// Every payment of the flight, in capture order (capture time, then id).
    pub payments: Vec<ManifestEntry>,
    /// The keyed hash chain over `payments`' ids in that order: 64 hex digits.
    pub chain: String,
    /// HMAC-SHA256 over every other field ([`Manifest::verify`]): 64 hex digits.
    pub seal: String,
}

/// The aircraft's manifest key (32 bytes): the chain and the seal are keyed with subkeys of it.
/// The master derives it from its card key file (it never leaves the aircraft).
#[derive(Clone)]
pub struct ManifestKey([u8; 32]);

impl std::fmt::Debug for ManifestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManifestKey(<key>)")
    }
}

impl ManifestKey {
    /// The key from its 32 bytes.
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn subkey(&self, label: &[u8]) -> hmac::Key {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), label);
        hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref())
    }
}

/// Why a flight cannot be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    /// Payments of the flight are still waiting (upload, the issuer's answer, a reversal, their
    /// terminal's confirmation); `force` closes anyway and lists them as pending.
    #[error("{pending} payment(s) of flight {flight} are still pending (not decided by the issuer); land them first, or close with --force to list them as pending")]
    Pending {
        /// The flight.
        flight: String,
        /// How many are pending.
        pending: u64,
    },
    /// More payments than [`MANIFEST_PAYMENTS_MAX`].
    #[error("flight {flight} has {count} payments, more than a manifest lists ({MANIFEST_PAYMENTS_MAX})")]
    TooMany {
        /// The flight.
        flight: String,
        /// How many it has.
        count: usize,
    },
}

/// Closes `flight`: its manifest from its `payments`, as of `closed_unix_ms`, keyed with `key`.
/// Refused while any payment is pending unless `force`.
pub fn close(
    flight: &str,
    payments: &[ManifestPayment],
    key: &ManifestKey,
    closed_unix_ms: u64,
    force: bool,
) -> Result<Manifest, CloseError> {
    if payments.len() > MANIFEST_PAYMENTS_MAX {
        return Err(CloseError::TooMany { flight: flight.to_owned(), count: payments.len() });
    }
    let pending = payments.iter().filter(|p| p.standing.pending()).count() as u64;
    if pending > 0 && !force {
        return Err(CloseError::Pending { flight: flight.to_owned(), pending });
    }
    let mut ordered: Vec<&ManifestPayment> = payments.iter().collect();
    ordered.sort_by_key(|p| (p.captured_unix_ms, p.id.to_bytes()));
    let entries: Vec<ManifestEntry> = ordered
        .iter()
        .map(|p| ManifestEntry {
            payment_id: p.id.to_string(),
            terminal: p.terminal.clone(),
            currency: p.currency.as_str().to_owned(),
            amount_minor: p.amount_minor,
            captured_unix_ms: p.captured_unix_ms,
            mcc: p.mcc.to_string(),
            standing: p.standing,
        })
        .collect();
    let (currencies, terminals, merchant_categories) = books_of(&entries);
    let mut m = Manifest {
        manifest_version: MANIFEST_VERSION,
        flight: flight.to_owned(),
        closed_unix_ms,
        forced: pending > 0,
        currencies,
        terminals,
        merchant_categories,
        chain: chain(key, flight, entries.iter().map(|e| e.payment_id.as_str())),
        payments: entries,
        seal: String::new(),
    };
    m.seal = seal_of(key, &m);
    Ok(m)
}

/// The books per currency, per terminal and currency, and per merchant category and currency.
fn books_of(entries: &[ManifestEntry]) -> (Vec<CurrencyBooks>, Vec<TerminalBooks>, Vec<CategoryBooks>) {
    let mut currencies: BTreeMap<&str, Books> = BTreeMap::new();
    let mut terminals: BTreeMap<(&str, &str), Books> = BTreeMap::new();
    let mut categories: BTreeMap<(&str, &str), Books> = BTreeMap::new();
    for e in entries {
        currencies.entry(&e.currency).or_default().add(e.standing, e.amount_minor);
        terminals.entry((&e.terminal, &e.currency)).or_default().add(e.standing, e.amount_minor);
        categories.entry((&e.mcc, &e.currency)).or_default().add(e.standing, e.amount_minor);
    }
    (
        currencies.into_iter().map(|(c, books)| CurrencyBooks { currency: c.to_owned(), books }).collect(),
        terminals
            .into_iter()
            .map(|((t, c), books)| TerminalBooks { terminal: t.to_owned(), currency: c.to_owned(), books })
            .collect(),
        categories
            .into_iter()
            .map(|((m, c), books)| CategoryBooks { mcc: m.to_owned(), currency: c.to_owned(), books })
            .collect(),
    )
}

/// The chain: `c0 = HMAC(k, label ‖ flight)`, `c(i) = HMAC(k, c(i-1) ‖ id(i))`, the ids as text.
fn chain<'a>(key: &ManifestKey, flight: &str, ids: impl Iterator<Item = &'a str>) -> String {
    let k = key.subkey(b"inflight/v1/manifest-chain");
    let mut head = hmac::sign(&k, &[b"inflight/v1/manifest-chain/", flight.as_bytes()].concat());
    for id in ids {
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(head.as_ref());
        ctx.update(id.as_bytes());
        head = ctx.sign();
    }
    hex(head.as_ref())
}

/// The seal: HMAC over a label and the bincode encoding of the manifest with an empty seal.
fn seal_of(key: &ManifestKey, m: &Manifest) -> String {
    let unsealed = Manifest { seal: String::new(), ..m.clone() };
    // Strings, numbers, vectors and fieldless enums: encoding into a Vec cannot fail.
    let body = bincode::encode_to_vec(&unsealed, bincode::config::standard()).expect("a manifest always encodes");
    let mut ctx = hmac::Context::with_key(&key.subkey(b"inflight/v1/manifest-seal"));
    ctx.update(b"inflight/v1/manifest/");
    ctx.update(&body);
    hex(ctx.sign().as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the issuer decided about one payment (from its ledger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerDecision {
    /// The payment id.
    pub id: PaymentId,
    /// Its currency, as the issuer decided it.
    pub currency: Currency,
    /// Its amount, as the issuer decided it.
    pub amount_minor: u64,
    /// The decision as it stands now.
    pub outcome: IssuerOutcome,
}

/// The issuer's decision on a payment, as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuerOutcome {
    /// Approved, and not reversed.
    Approved,
    /// Declined.
    Declined,
    /// Approved, then reversed (released).
    Reversed,
}

/// A difference between a manifest and itself or the issuer. Listed, never fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    /// The seal does not match the manifest under the aircraft's key: something was changed.
    SealInvalid,
    /// The chain does not match the listed payments under the aircraft's key: one was added,
    /// dropped, changed or moved.
    ChainInvalid,
    /// The books stated for this currency (and terminal, if named) are not those of the listed
    /// payments.
    BooksDisagree {
        /// The terminal, or none for the flight's books of the currency.
        terminal: Option<String>,
        /// ISO 4217 code.
        currency: String,
    },
    /// The books stated for this merchant category and currency are not those of the listed
    /// payments.
    CategoryBooksDisagree {
        /// Merchant category code.
        mcc: String,
        /// ISO 4217 code.
        currency: String,
    },
    /// The books of this currency do not satisfy approved + declined + voided + pending =
    /// captured.
    Unbalanced {
        /// ISO 4217 code.
        currency: String,
    },
    /// A payment id listed twice (in the manifest, or in the issuer's view).
    Duplicate {
        /// The id.
        payment_id: String,
    },
    /// The manifest says the issuer decided it; the issuer has no decision.
    MissingAtIssuer {
        /// The id.
        payment_id: String,
        /// Its standing in the manifest.
        aircraft: Standing,
    },
    /// The issuer decided a payment the manifest does not list.
    UnknownToAircraft {
        /// The id.
        payment_id: String,
        /// The issuer's decision.
        issuer: IssuerOutcome,
    },
    /// Both know it, and disagree on where it stands (a voided or pending payment the issuer
    /// decided, an approval the aircraft has as declined, ...).
    OutcomeDiffers {
        /// The id.
        payment_id: String,
        /// The manifest's standing.
        aircraft: Standing,
        /// The issuer's decision.
        issuer: IssuerOutcome,
    },
    /// Both know it, with another amount or currency.
    AmountDiffers {
        /// The id.
        payment_id: String,
        /// The manifest's amount and currency.
        aircraft: (u64, String),
        /// The issuer's.
        issuer: (u64, String),
    },
    /// More than [`MISMATCHES_MAX`]: this many more were not listed.
    TooMany {
        /// How many were left out.
        more: u64,
    },
}

impl Manifest {
    /// The mismatches of this manifest with itself under `key`: its seal, its chain, its books
    /// against its payments. Empty when it is as the aircraft made it.
    pub fn verify(&self, key: &ManifestKey) -> Vec<Mismatch> {
        let mut out = Vec::new();
        if seal_of(key, self) != self.seal {
            out.push(Mismatch::SealInvalid);
        }
        if chain(key, &self.flight, self.payments.iter().map(|e| e.payment_id.as_str())) != self.chain {
            out.push(Mismatch::ChainInvalid);
        }
        out.extend(self.books_mismatches());
        out
    }

    /// The books stated against the books of the listed payments, and the identity; no key.
    fn books_mismatches(&self) -> Vec<Mismatch> {
        let mut out = Vec::new();
        let (currencies, terminals, categories) = books_of(&self.payments);
        let stated: BTreeMap<&str, &Books> = self.currencies.iter().map(|c| (c.currency.as_str(), &c.books)).collect();
        let actual: BTreeMap<&str, &Books> = currencies.iter().map(|c| (c.currency.as_str(), &c.books)).collect();
        for c in stated.keys().chain(actual.keys()).collect::<std::collections::BTreeSet<_>>() {
            if stated.get(c) != actual.get(c) {
                out.push(Mismatch::BooksDisagree { terminal: None, currency: (*c).to_owned() });
            }
        }
        let key = |t: &TerminalBooks| (t.terminal.clone(), t.currency.clone());
        let stated: BTreeMap<_, &Books> = self.terminals.iter().map(|t| (key(t), &t.books)).collect();
        let actual: BTreeMap<_, &Books> = terminals.iter().map(|t| (key(t), &t.books)).collect();
        for k in stated.keys().chain(actual.keys()).collect::<std::collections::BTreeSet<_>>() {
            if stated.get(k) != actual.get(k) {
                out.push(Mismatch::BooksDisagree { terminal: Some(k.0.clone()), currency: k.1.clone() });
            }
        }
        let key = |c: &CategoryBooks| (c.mcc.clone(), c.currency.clone());
        let stated: BTreeMap<_, &Books> = self.merchant_categories.iter().map(|c| (key(c), &c.books)).collect();
        let actual: BTreeMap<_, &Books> = categories.iter().map(|c| (key(c), &c.books)).collect();
        for k in stated.keys().chain(actual.keys()).collect::<std::collections::BTreeSet<_>>() {
            if stated.get(k) != actual.get(k) {
                out.push(Mismatch::CategoryBooksDisagree { mcc: k.0.clone(), currency: k.1.clone() });
            }
        }
        for c in &self.currencies {
            if !c.books.balanced() {
                out.push(Mismatch::Unbalanced { currency: c.currency.clone() });
            }
        }
        out
    }
}

/// Every difference between `manifest` and what the issuer decided (`issuer`: every decision of
/// the flight's payments, from its ledger), and within the manifest's own books. Lists, never
/// fixes: the result is for people to resolve. A payment the manifest has as voided, refused or
/// pending and the issuer never saw is as expected; one whose reversal is pending matches any
/// decision (the reversal's answer is on its way).
pub fn reconcile(manifest: &Manifest, issuer: &[IssuerDecision]) -> Vec<Mismatch> {
    let mut out = manifest.books_mismatches();
    let mut ours: HashMap<&str, &ManifestEntry> = HashMap::with_capacity(manifest.payments.len());
    for e in &manifest.payments {
        if ours.insert(e.payment_id.as_str(), e).is_some() {
            out.push(Mismatch::Duplicate { payment_id: e.payment_id.clone() });
        }
    }
    let mut theirs: HashMap<String, &IssuerDecision> = HashMap::with_capacity(issuer.len());
    for d in issuer {
        let id = d.id.to_string();
        if theirs.contains_key(&id) {
            out.push(Mismatch::Duplicate { payment_id: id });
            continue;
        }
        match ours.get(id.as_str()) {
            None => out.push(Mismatch::UnknownToAircraft { payment_id: id.clone(), issuer: d.outcome }),
            Some(e) => {
                let agrees = matches!(
                    (e.standing, d.outcome),
                    (Standing::Approved, IssuerOutcome::Approved)
                        | (Standing::Declined, IssuerOutcome::Declined)
                        | (Standing::Reversed, IssuerOutcome::Reversed)
                        | (Standing::ReversalPending, _)
                );
                if !agrees {
                    out.push(Mismatch::OutcomeDiffers {
                        payment_id: id.clone(),
                        aircraft: e.standing,
                        issuer: d.outcome,
                    });
                }
                if e.amount_minor != d.amount_minor || e.currency != d.currency.as_str() {
                    out.push(Mismatch::AmountDiffers {
                        payment_id: id.clone(),
                        aircraft: (e.amount_minor, e.currency.clone()),
                        issuer: (d.amount_minor, d.currency.as_str().to_owned()),
                    });
                }
            }
        }
        theirs.insert(id, d);
    }
    for e in &manifest.payments {
        let decided = matches!(e.standing, Standing::Approved | Standing::Declined | Standing::Reversed);
        if decided && !theirs.contains_key(e.payment_id.as_str()) {
            out.push(Mismatch::MissingAtIssuer { payment_id: e.payment_id.clone(), aircraft: e.standing });
        }
    }
    if out.len() > MISMATCHES_MAX {
        let more = (out.len() - MISMATCHES_MAX) as u64;
        out.truncate(MISMATCHES_MAX);
        out.push(Mismatch::TooMany { more });
    }
    out
}

/// One line of the issuer's ledger, with the batch that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerDecision {
    /// The batch id (text form): payments carried together.
    pub batch: String,
    /// The decision.
    pub decision: IssuerDecision,
}

/// The issuer's decisions that concern `manifest`: every decision in a batch that carried at
/// least one of the manifest's payments. The issuer does not know flights, so it cannot pick a
/// flight's decisions directly; by batch, a payment the aircraft left out of its manifest but
/// carried with the others shows as `unknown_to_aircraft`. A batch that carried payments of two
/// flights (a flight changed while payments waited for the ground) shows the other flight's
/// payments there too: listed for a person to look at, never hidden.
pub fn issuer_scope(manifest: &Manifest, ledger: &[LedgerDecision]) -> Vec<IssuerDecision> {
    let ids: std::collections::HashSet<&str> = manifest.payments.iter().map(|e| e.payment_id.as_str()).collect();
    let batches: std::collections::HashSet<&str> =
        ledger.iter().filter(|l| ids.contains(l.decision.id.to_string().as_str())).map(|l| l.batch.as_str()).collect();
    ledger.iter().filter(|l| batches.contains(l.batch.as_str())).map(|l| l.decision.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn key() -> ManifestKey {
        ManifestKey::new([7; 32])
    }

    fn pay(n: u8, terminal: &str, amount: u64, currency: &str, standing: Standing) -> ManifestPayment {
        ManifestPayment {
            id: PaymentId::from_bytes([n; 16]),
            terminal: terminal.into(),
            currency: Currency::parse(currency).expect("currency"),
            amount_minor: amount,
            // Capture order is not id order: n = 3 is captured first.
            captured_unix_ms: T0 + u64::from(n % 3) * 1_000 + u64::from(n),
            // Meals on one terminal, duty free on the others.
            mcc: if terminal == "slave-1" { Mcc::RESTAURANTS } else { Mcc::DUTY_FREE },
            standing,
        }
    }

    /// A landed flight: two approvals, a decline, a void, a reversal, a refusal; two terminals,
    /// two currencies.
    fn landed() -> Vec<ManifestPayment> {
        vec![
            pay(1, "slave-1", 1_000, "EUR", Standing::Approved),
            pay(2, "slave-1", 2_000, "EUR", Standing::Declined),
            pay(3, "slave-2", 3_000, "EUR", Standing::Voided),
            pay(4, "slave-2", 4_000, "EUR", Standing::Reversed),
            pay(5, "slave-2", 5_000, "EUR", Standing::Refused),
            pay(6, "slave-1", 600, "USD", Standing::Approved),
        ]
    }

    fn issuer_of(payments: &[ManifestPayment]) -> Vec<IssuerDecision> {
        payments
            .iter()
            .filter_map(|p| {
                let outcome = match p.standing {
                    Standing::Approved => IssuerOutcome::Approved,
                    Standing::Declined => IssuerOutcome::Declined,
                    Standing::Reversed => IssuerOutcome::Reversed,
                    _ => return None,
                };
                Some(IssuerDecision { id: p.id, currency: p.currency, amount_minor: p.amount_minor, outcome })
            })
            .collect()
    }

    fn t(count: u64, amount_minor: u64) -> Tally {
        Tally { count, amount_minor }
    }

    #[test]
    fn the_books_count_each_payment_once_and_balance() {
        let m = close("IF200", &landed(), &key(), T0, false).expect("nothing pending");
        assert!(!m.forced);
        let eur = &m.currencies.iter().find(|c| c.currency == "EUR").expect("EUR").books;
        assert_eq!(eur.captured, t(4, 10_000), "the refusal is outside captured");
        assert_eq!((eur.approved, eur.declined), (t(1, 1_000), t(1, 2_000)));
        assert_eq!((eur.voided, eur.reversed), (t(2, 7_000), t(1, 4_000)), "voids net out");
        assert_eq!((eur.pending, eur.refused), (t(0, 0), t(1, 5_000)));
        assert!(eur.balanced());
        let s2 = m.terminals.iter().find(|x| x.terminal == "slave-2" && x.currency == "EUR").expect("slave-2 EUR");
        assert_eq!((s2.books.captured, s2.books.voided), (t(2, 7_000), t(2, 7_000)));
        let usd: Vec<_> = m.terminals.iter().filter(|x| x.currency == "USD").collect();
        assert_eq!(usd.len(), 1);
        assert_eq!(usd[0].books.approved, t(1, 600));
        assert!(m.currencies.iter().chain([]).all(|c| c.books.balanced()));
        assert!(m.terminals.iter().all(|x| x.books.balanced()));
        assert_eq!(m.payments.len(), 6, "every payment listed, the refusal too");
        // Per merchant category: slave-1 sold meals (5812), slave-2 duty free (5309).
        let cat = |mcc: &str, cur: &str| {
            m.merchant_categories.iter().find(|c| c.mcc == mcc && c.currency == cur).map(|c| c.books)
        };
        let meals = cat("5812", "EUR").expect("5812 EUR");
        assert_eq!((meals.captured, meals.approved, meals.declined), (t(2, 3_000), t(1, 1_000), t(1, 2_000)));
        let duty_free = cat("5309", "EUR").expect("5309 EUR");
        assert_eq!((duty_free.captured, duty_free.voided, duty_free.refused), (t(2, 7_000), t(2, 7_000), t(1, 5_000)));
        assert_eq!(cat("5812", "USD").map(|b| b.approved), Some(t(1, 600)));
        assert_eq!(m.merchant_categories.len(), 3);
        assert!(m.merchant_categories.iter().all(|c| c.books.balanced()));
        assert_eq!(m.payments.iter().filter(|p| p.mcc == "5812").count(), 3);
    }

    /// A payment moved to another merchant category in the list (its books left as stated):
    /// the category books disagree and the seal breaks.
    #[test]
    fn a_payment_moved_to_another_category_shows_in_verify() {
        let mut m = close("IF200", &landed(), &key(), T0, false).expect("closed");
        let moved = m.payments.iter_mut().find(|p| p.mcc == "5812" && p.currency == "EUR").expect("a meal");
        moved.mcc = "5309".into();
        let found = m.verify(&key());
        assert!(found.contains(&Mismatch::SealInvalid), "{found:?}");
        for mcc in ["5812", "5309"] {
            let want = Mismatch::CategoryBooksDisagree { mcc: mcc.into(), currency: "EUR".into() };
            assert!(found.contains(&want), "{found:?}");
        }
    }

    #[test]
    fn a_book_that_does_not_add_up_is_unbalanced() {
        let mut b = Books::default();
        for s in [Standing::Approved, Standing::Quarantined, Standing::Unconfirmed, Standing::ReversalPending] {
            b.add(s, 10);
        }
        assert!(b.balanced());
        assert_eq!((b.pending, b.quarantined), (t(3, 30), t(1, 10)));
        b.approved.amount_minor += 1;
        assert!(!b.balanced());
    }

    #[test]
    fn closing_with_payments_pending_is_refused_unless_forced() {
        let mut p = landed();
        p.push(pay(7, "slave-1", 700, "EUR", Standing::Pending));
        p.push(pay(8, "slave-2", 800, "EUR", Standing::Quarantined));
        let e = close("IF200", &p, &key(), T0, false).expect_err("two pending");
        assert_eq!(e, CloseError::Pending { flight: "IF200".into(), pending: 2 });
        assert!(e.to_string().contains("--force"), "{e}");
        let m = close("IF200", &p, &key(), T0, true).expect("forced");
        assert!(m.forced);
        let eur = &m.currencies[0].books;
        assert_eq!((eur.pending, eur.quarantined), (t(2, 1_500), t(1, 800)));
        assert!(eur.balanced());
        assert!(reconcile(&m, &issuer_of(&p)).is_empty(), "pending payments the issuer never saw are as expected");
    }

    #[test]
    fn the_chain_follows_capture_order_and_is_keyed() {
        let m = close("IF200", &landed(), &key(), T0, false).expect("closed");
        let order: Vec<u64> = m.payments.iter().map(|e| e.captured_unix_ms).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
        assert_eq!(m.payments[0].payment_id, PaymentId::from_bytes([3; 16]).to_string());
        assert_eq!(m.chain.len(), 64);
        // The same input, the same manifest; another key or flight, another chain.
        assert_eq!(close("IF200", &landed(), &key(), T0, false).expect("closed"), m);
        let other = close("IF200", &landed(), &ManifestKey::new([8; 32]), T0, false).expect("closed");
        assert_ne!(other.chain, m.chain);
        assert_ne!(close("IF201", &landed(), &key(), T0, false).expect("closed").chain, m.chain);
        assert!(m.verify(&key()).is_empty());
        assert_eq!(m.verify(&ManifestKey::new([8; 32])), [Mismatch::SealInvalid, Mismatch::ChainInvalid]);
    }

    #[test]
    fn a_landed_flight_reconciles_with_its_issuer() {
        let p = landed();
        let m = close("IF200", &p, &key(), T0, false).expect("closed");
        assert_eq!(reconcile(&m, &issuer_of(&p)), []);
    }

    #[test]
    fn a_tampered_payment_shows_in_verify_and_reconcile() {
        let p = landed();
        let mut m = close("IF200", &p, &key(), T0, false).expect("closed");
        let i = m.payments.iter().position(|e| e.standing == Standing::Approved && e.currency == "EUR").expect("one");
        m.payments[i].amount_minor = 1;
        let id = m.payments[i].payment_id.clone();
        let found = reconcile(&m, &issuer_of(&p));
        assert!(
            found.contains(&Mismatch::AmountDiffers {
                payment_id: id,
                aircraft: (1, "EUR".into()),
                issuer: (1_000, "EUR".into())
            }),
            "{found:?}"
        );
        assert!(found.contains(&Mismatch::BooksDisagree { terminal: None, currency: "EUR".into() }), "{found:?}");
        assert!(m.verify(&key()).contains(&Mismatch::SealInvalid));
    }

    #[test]
    fn a_missing_payment_shows_in_verify_and_reconcile() {
        let p = landed();
        let mut m = close("IF200", &p, &key(), T0, false).expect("closed");
        // Dropped from the list and from the books alike, so only the chain and the issuer see it.
        let i = m.payments.iter().position(|e| e.standing == Standing::Approved && e.currency == "USD").expect("one");
        let gone = m.payments.remove(i);
        let (c, tb, cb) = books_of(&m.payments);
        (m.currencies, m.terminals, m.merchant_categories) = (c, tb, cb);
        let found = reconcile(&m, &issuer_of(&p));
        assert_eq!(
            found,
            [Mismatch::UnknownToAircraft { payment_id: gone.payment_id, issuer: IssuerOutcome::Approved }]
        );
        assert!(m.verify(&key()).contains(&Mismatch::ChainInvalid));
    }

    #[test]
    fn differences_with_the_issuer_are_each_listed() {
        let mut p = landed();
        p.push(pay(9, "slave-1", 900, "EUR", Standing::Pending));
        let m = close("IF200", &p, &key(), T0, true).expect("forced");
        let mut issuer = issuer_of(&p);
        // The issuer never decided #1; it decided #3 (voided on board!) and #9 (pending on board);
        // it has #2 as approved; and one id twice.
        issuer.retain(|d| d.id != PaymentId::from_bytes([1; 16]));
        let eur = Currency::parse("EUR").expect("EUR");
        let decision = |n: u8, outcome| IssuerDecision {
            id: PaymentId::from_bytes([n; 16]),
            currency: eur,
            amount_minor: u64::from(n) * 1_000,
            outcome,
        };
        issuer.push(decision(3, IssuerOutcome::Approved));
        issuer.push(decision(3, IssuerOutcome::Approved));
        issuer.push(IssuerDecision { amount_minor: 900, ..decision(9, IssuerOutcome::Declined) });
        for d in issuer.iter_mut().filter(|d| d.id == PaymentId::from_bytes([2; 16])) {
            d.outcome = IssuerOutcome::Approved;
        }
        let id = |n: u8| PaymentId::from_bytes([n; 16]).to_string();
        let found = reconcile(&m, &issuer);
        let want = [
            Mismatch::OutcomeDiffers {
                payment_id: id(2),
                aircraft: Standing::Declined,
                issuer: IssuerOutcome::Approved,
            },
            Mismatch::OutcomeDiffers { payment_id: id(3), aircraft: Standing::Voided, issuer: IssuerOutcome::Approved },
            Mismatch::Duplicate { payment_id: id(3) },
            Mismatch::OutcomeDiffers {
                payment_id: id(9),
                aircraft: Standing::Pending,
                issuer: IssuerOutcome::Declined,
            },
            Mismatch::MissingAtIssuer { payment_id: id(1), aircraft: Standing::Approved },
        ];
        for w in &want {
            assert!(found.contains(w), "missing {w:?} in {found:?}");
        }
        assert_eq!(found.len(), want.len(), "{found:?}");
    }

    #[test]
    fn the_issuer_scope_is_the_batches_that_carried_the_flight() {
        let p = landed();
        let m = close("IF200", &p, &key(), T0, false).expect("closed");
        let mut ledger: Vec<LedgerDecision> =
            issuer_of(&p).into_iter().map(|decision| LedgerDecision { batch: "b1".into(), decision }).collect();
        let eur = Currency::parse("EUR").expect("EUR");
        let other = |n: u8, batch: &str| LedgerDecision {
            batch: batch.into(),
            decision: IssuerDecision {
                id: PaymentId::from_bytes([n; 16]),
                currency: eur,
                amount_minor: 10,
                outcome: IssuerOutcome::Approved,
            },
        };
        // #20 rode in the flight's batch but is not in the manifest; #21 is another flight's.
        ledger.push(other(20, "b1"));
        ledger.push(other(21, "b2"));
        let scope = issuer_scope(&m, &ledger);
        assert_eq!(scope.len(), issuer_of(&p).len() + 1);
        assert_eq!(
            reconcile(&m, &scope),
            [Mismatch::UnknownToAircraft {
                payment_id: PaymentId::from_bytes([20; 16]).to_string(),
                issuer: IssuerOutcome::Approved
            }]
        );
    }

    #[test]
    fn each_recorded_payment_has_one_standing() {
        use crate::aggregator::{Phase, Reversal};
        let approved = AuthOutcome::Approved { auth_code: "A1B2C3".into() };
        let declined = AuthOutcome::Declined(inflight_wire::DeclineReason::InsufficientFunds);
        let released = Reversal::Done(ReversalOutcome::Reversed { released_minor: 5 });
        let s = standing;
        let cases = [
            (s(Verdict::Refused(RefusalReason::Voided), true, Phase::Pending, None, None), Standing::Voided),
            (
                s(Verdict::Refused(RefusalReason::OverCardFlightLimit), false, Phase::Pending, None, None),
                Standing::Refused,
            ),
            (s(Verdict::Held, false, Phase::Pending, None, None), Standing::Unconfirmed),
            (s(Verdict::Stored, true, Phase::Quarantined, None, Some(Reversal::Requested)), Standing::Quarantined),
            (
                s(Verdict::Stored, true, Phase::Decided, Some(&approved), Some(Reversal::Requested)),
                Standing::ReversalPending,
            ),
            (s(Verdict::Stored, true, Phase::Delivered, Some(&approved), Some(released)), Standing::Reversed),
            (
                s(
                    Verdict::Stored,
                    true,
                    Phase::Delivered,
                    Some(&declined),
                    Some(Reversal::Done(ReversalOutcome::NotCharged)),
                ),
                Standing::Declined,
            ),
            (s(Verdict::Stored, true, Phase::Delivered, Some(&approved), None), Standing::Approved),
            (s(Verdict::Stored, true, Phase::InBatch, None, None), Standing::Pending),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
    }
}
