//! The invariant checker: reads what the daemons left on disk after the flight and compares it
//! with what every sale app was told.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use inflight_issuer::IssuerConfig;
use inflight_slave::SlaveConfig;
use inflight_store::{CardVault, IssuerStore, SlaveStore};
use inflight_wire::{AuthOutcome, DeclineReason, EmvData, Expiry, Pan, Payment, PaymentId};

use crate::report::{Capture, Report};
use crate::scenario::Flight;

/// Checks every invariant; fills the counts of the report.
pub fn check(
    dir: &Path,
    flight: &Flight,
    captures: &[Capture],
    issuer: &IssuerConfig,
    slaves: &[SlaveConfig],
) -> anyhow::Result<Report> {
    let mut r = Report { captures: captures.len() as u64, ..Report::default() };
    let mut accepted: BTreeMap<PaymentId, u32> = BTreeMap::new();
    // What each accepted payment was captured for: the ledger must show the same amount.
    let mut captured_minor: BTreeMap<PaymentId, u64> = BTreeMap::new();
    let mut refused_ids = BTreeSet::new();
    // Accepted chip payments a hostile terminal altered: each must be declined
    // `cryptogram_invalid`, and nothing else may be.
    let mut tampered: BTreeSet<PaymentId> = BTreeSet::new();
    for c in captures {
        match &c.answer {
            Ok(a) if a.outcome == "accepted" => {
                let id = a.payment_id.as_deref().and_then(|s| PaymentId::parse(s).ok());
                match id {
                    Some(id) => {
                        captured_minor.insert(id, c.amount_minor);
                        if c.tampered {
                            tampered.insert(id);
                        }
                        if accepted.insert(id, c.terminal).is_some() {
                            r.violations.push(format!("payment id {id} answered accepted twice"));
                        }
                    }
                    None => r.violations.push("an accepted answer without a valid payment id".into()),
                }
            }
            Ok(a) => {
                *r.rejected.entry(a.reason.clone().unwrap_or_else(|| "unknown".into())).or_default() += 1;
                if let Some(id) = a.payment_id.as_deref().and_then(|s| PaymentId::parse(s).ok()) {
                    refused_ids.insert(id);
                }
            }
            Err(_) => r.unanswered += 1,
        }
    }
    r.accepted = accepted.len() as u64;
    if r.unanswered > 0 {
        r.violations.push(format!("{} captures got no answer", r.unanswered));
    }
    let mut lat: Vec<Duration> = captures.iter().map(|c| c.latency).collect();
    lat.sort_unstable();
    if !lat.is_empty() {
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
        r.latency_ms = BTreeMap::from([("p50".into(), pct(0.5)), ("p99".into(), pct(0.99)), ("max".into(), pct(1.0))]);
    }

    // The issuer's ledger: every accepted payment exactly once, nothing else.
    let store = IssuerStore::open(&issuer.data_dir, CardVault::from_key_file(&issuer.card_key_file)?, 8 << 20)?;
    let ledger = store.ledger()?;
    let accounts = store.accounts()?;
    store.close();
    drop(store);
    let mut decided: BTreeMap<PaymentId, AuthOutcome> = BTreeMap::new();
    let mut batches = BTreeSet::new();
    for l in &ledger {
        batches.insert(l.batch_id);
        r.late += u64::from(l.late);
        if decided.insert(l.payment_id, l.outcome.clone()).is_some() {
            r.duplicated += 1;
        }
        match &l.outcome {
            AuthOutcome::Approved { .. } => r.approved += 1,
            AuthOutcome::Declined(reason) => *r.declined.entry(reason.as_str().to_owned()).or_default() += 1,
        }
    }
    r.batches = batches.len() as u64;
    r.tampered = tampered.len() as u64;
    let invalid = AuthOutcome::Declined(DeclineReason::CryptogramInvalid);
    let not_caught = tampered.iter().filter(|id| decided.get(id).is_some_and(|o| *o != invalid)).count();
    let wrongly = decided.iter().filter(|(id, o)| **o == invalid && !tampered.contains(id)).count();
    if not_caught > 0 {
        r.violations.push(format!("{not_caught} altered chip payments not declined cryptogram_invalid"));
    }
    if wrongly > 0 {
        r.violations.push(format!("{wrongly} genuine payments declined cryptogram_invalid"));
    }
    // Every simulated tap is fresh (nothing here replays chip data): no counter is seen twice.
    let replayed = decided.values().filter(|o| **o == AuthOutcome::Declined(DeclineReason::AtcReplayed)).count();
    if replayed > 0 {
        r.violations.push(format!("{replayed} genuine chip payments declined atc_replayed"));
    }
    // Exactly once, in money: a payment charged twice leaves one ledger line (the ledger is keyed
    // by payment id) but takes its amount twice from the account.
    let mut approved: BTreeMap<(String, String), u64> = BTreeMap::new();
    for l in &ledger {
        if matches!(l.outcome, AuthOutcome::Approved { .. }) {
            *approved.entry((l.card.to_string(), l.amount.currency().as_str().to_owned())).or_default() +=
                l.amount.amount_minor();
        }
        if captured_minor.get(&l.payment_id).is_some_and(|m| *m != l.amount.amount_minor()) {
            r.money_mismatches += 1;
            r.violations.push(format!("payment {} decided for another amount than captured", l.payment_id));
        }
    }
    // Accounts whose masked cards coincide are checked together (the sum holds just the same).
    let mut books: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for a in &accounts {
        let b = books.entry((a.card.to_string(), a.currency.as_str().to_owned())).or_default();
        b.0 += a.opening_minor;
        b.1 += a.available_minor;
    }
    for (key, (opening, available)) in books {
        let charged = approved.remove(&key).unwrap_or(0);
        if opening.checked_sub(charged) != Some(available) {
            r.money_mismatches += 1;
            r.violations
                .push(format!("account {}: opening {opening} − approved {charged} ≠ available {available}", key.0));
        }
    }
    if !approved.is_empty() {
        r.money_mismatches += approved.len() as u64;
        r.violations.push(format!("approved payments charged to no account: {approved:?}"));
    }
    r.lost = accepted.keys().filter(|id| !decided.contains_key(id)).count() as u64;
    r.phantom = decided.keys().filter(|id| !accepted.contains_key(id)).count() as u64;
    let refused_decided = refused_ids.iter().filter(|id| decided.contains_key(id)).count();
    for (n, what) in [
        (r.lost, "accepted payments never decided (lost)"),
        (r.duplicated, "payments decided twice"),
        (r.phantom, "decisions without an accepted capture"),
        (refused_decided as u64, "payments rejected at capture yet decided"),
    ] {
        if n > 0 {
            r.violations.push(format!("{n} {what}"));
        }
    }

    // Every result on its terminal, equal to the ledger, card data erased. Each accepted
    // payment is also rebuilt (card from the scenario, the rest from its terminal), so the
    // scan below can look for the unkeyed digests an earlier version kept of it.
    let mut scanner = crate::leaks::CardScanner::new();
    for c in &flight.cards {
        scanner.add_pan(&c.pan);
    }
    let card_of: BTreeMap<PaymentId, (usize, Option<EmvData>)> = captures
        .iter()
        .filter_map(|c| {
            let a = c.answer.as_ref().ok()?;
            let emv = c.emv.as_deref().and_then(|e| EmvData::from_hex(e).ok());
            Some((PaymentId::parse(a.payment_id.as_deref()?).ok()?, (c.card, emv)))
        })
        .collect();
    for (id, (_, emv)) in &card_of {
        if let Some(emv) = emv {
            scanner.add_chip_data(emv, &format!("payment {id}"));
        }
    }
    for (k, cfg) in slaves.iter().enumerate() {
        let s = SlaveStore::open(&cfg.data_dir, CardVault::from_key_file(&cfg.card_key_file)?, 2 << 20)?;
        for (id, _) in accepted.iter().filter(|(_, t)| **t == k as u32 + 1) {
            let view = s.view(*id)?;
            let of = card_of.get(id);
            if let (Some(v), Some(card)) = (&view, of.and_then(|(i, _)| flight.cards.get(*i))) {
                if let (Ok(pan), Ok(expiry)) = (Pan::parse(&card.pan), Expiry::parse(&card.expiry)) {
                    scanner.add_payment(&Payment {
                        id: *id,
                        terminal: cfg.terminal_id.clone(),
                        pan,
                        expiry,
                        amount: v.payment.amount,
                        seat: v.payment.seat.clone(),
                        captured_unix_ms: v.payment.captured_unix_ms,
                        items: vec![],
                        emv: of.and_then(|(_, e)| e.clone()),
                        pos: v.payment.pos,
                    });
                }
            }
            match view.and_then(|v| v.outcome) {
                None => r.undelivered += 1,
                Some(o) if Some(&o) != decided.get(id) => r.mismatched += 1,
                Some(_) => {}
            }
        }
        r.card_data_retained += s.with_card_data()?.len() as u64;
        s.close();
    }
    let master_key = CardVault::from_key_file(&dir.join("keys/master.card.key"))?;
    let m = inflight_store::MasterStore::open(&dir.join("data/master"), master_key, 8 << 20)?;
    r.card_data_retained += m.with_card_data()?.len() as u64;
    m.close();
    for (n, what) in [
        (r.undelivered, "accepted payments without their result on the terminal"),
        (r.mismatched, "terminal results that differ from the issuer's ledger"),
        (r.card_data_retained, "payments still holding card data after delivery"),
    ] {
        if n > 0 {
            r.violations.push(format!("{n} {what}"));
        }
    }

    // No card data in any form, and no unkeyed digest of any payment, in any file under the run
    // directory (stores, logs, configs).
    for (f, what) in scanner.scan_dir(dir) {
        r.pan_leaks += 1;
        r.violations.push(format!("{what} found in {}", f.display()));
    }
    Ok(r)
}
