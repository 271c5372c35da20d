//! The issuer's store decides a payment once, whatever batch carries it and however often; the
//! master's batch survives a restart intact.

use inflight_core::authorize::{Account, CaptureBounds, Rules};
use inflight_core::issuer::AcceptedBatch;
use inflight_store::{BatchStart, CardVault, IssuerStore, MasterStore};
use inflight_wire::{
    AuthOutcome, AuthResult, BatchHeader, BatchId, BatchItem, BinList, BinPrefix, BinRule, CardKind, Currency,
    DeclineReason, Expiry, Money, Pan, Payment, PaymentId, ReversalOutcome, TerminalId, Verdict,
};

const CACHE: u64 = 4 << 20;
const PAN: &str = "4111111111111111";

fn eur() -> Currency {
    Currency::parse("EUR").expect("known")
}

fn rules(programme: &BinList) -> Rules<'_> {
    Rules { programme, bounds: CaptureBounds::ANY, chip_key: None }
}

fn programme() -> BinList {
    BinList {
        version: 1,
        issuer: "bank".into(),
        valid_from_unix_ms: 0,
        valid_until_unix_ms: u64::MAX,
        rules: vec![BinRule {
            prefix: BinPrefix::parse("411111").expect("valid"),
            kind: CardKind::Credit,
            txn_limit_minor: 100_000,
            card_flight_limit_minor: 100_000,
            currencies: vec![eur()],
            cvm_required: false,
            entry_modes: inflight_wire::EntryMode::ALL.to_vec(),
        }],
    }
}

fn item(n: u8, amount: u64) -> BatchItem {
    BatchItem {
        id: PaymentId::mint(1_790_000_000_000, [n; 10]),
        pan: Pan::parse(PAN).expect("valid"),
        expiry: Expiry::parse("12/30").expect("valid"),
        amount: Money::new(amount, eur()).expect("valid"),
        captured_unix_ms: 1_790_000_000_000,
        late: false,
        deferred: true,
        emv: None,
        pos: inflight_wire::PointOfSale::LEGACY,
    }
}

fn header(id: u8, count: u32, digest: u8) -> BatchHeader {
    BatchHeader {
        id: BatchId([id; 16]),
        aircraft: "d-test".into(),
        flight: "FL1".into(),
        count,
        totals: vec![],
        digest: [digest; 32],
    }
}

fn issuer(dir: &std::path::Path) -> IssuerStore {
    let s = IssuerStore::open(dir, CardVault::from_key(&[1; 32]), CACHE).expect("open");
    if !s.accounts_imported().expect("meta") {
        let acct = Account {
            kind: CardKind::Credit,
            expiry: Expiry::parse("12/30").expect("valid"),
            available_minor: 1_000,
            currency: eur(),
            open: true,
            chip: false,
        };
        let t = s.import_accounts(&[(Pan::parse(PAN).expect("valid"), acct)]).expect("import");
        s.durable_blocking(t).expect("durable");
    }
    s
}

#[test]
fn a_payment_is_decided_once_across_resends_batches_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let items = [item(1, 600), item(2, 600)];
    {
        let s = issuer(dir.path());
        assert_eq!(s.begin_batch(&header(1, 2, 7)).expect("begin").0, BatchStart::New);
        s.decide_chunk(BatchId([1; 16]), 0, &items, &rules(&programme())).expect("decide");
        // The connection broke; the same batch comes again and is decided again.
        assert_eq!(s.begin_batch(&header(1, 2, 7)).expect("begin").0, BatchStart::Resume);
        let t = s.decide_chunk(BatchId([1; 16]), 0, &items, &rules(&programme())).expect("decide again");
        s.durable_blocking(t).expect("durable");
        s.close();
    }
    let s = issuer(dir.path());
    let t = s.finish_batch(&header(1, 2, 7)).expect("finish");
    s.durable_blocking(t).expect("durable");
    let results = s.results(BatchId([1; 16])).expect("results");
    assert!(matches!(results[0].outcome, AuthOutcome::Approved { .. }), "{results:?}");
    assert_eq!(
        results[1].outcome,
        AuthOutcome::Declined(DeclineReason::InsufficientFunds),
        "600 + 600 > 1,000: charged once only"
    );
    assert_eq!(s.begin_batch(&header(1, 2, 7)).expect("begin").0, BatchStart::Done);
    assert_eq!(s.begin_batch(&header(1, 2, 8)).expect("begin").0, BatchStart::Conflict, "same id, other content");

    // The same payment in another batch keeps its first decision.
    assert_eq!(s.begin_batch(&header(2, 1, 9)).expect("begin").0, BatchStart::New);
    s.decide_chunk(BatchId([2; 16]), 0, &items[..1], &rules(&programme())).expect("decide");
    assert_eq!(s.results(BatchId([2; 16])).expect("results"), results[..1].to_vec());
    let ledger = s.ledger().expect("ledger");
    assert_eq!(ledger.len(), 2, "two payments, two decisions");
    assert!(ledger.iter().all(|l| l.batch_id == BatchId([1; 16])));
}

/// A chip's transaction counter is used once, whatever batch carries it, across a restart: a
/// copy of a decided payment's chip data under a new payment id is declined `atc_replayed`, while
/// the original payment re-sent keeps its decision. An altered amount is `cryptogram_invalid`.
#[test]
fn a_chip_counter_is_used_once_across_batches_and_restarts() {
    use inflight_core::chip::{ChipCard, ChipTxn, IssuerMasterKey};
    let imk = IssuerMasterKey::from_bytes([9; 16]);
    let card = ChipCard::new(&imk, &Pan::parse(PAN).expect("valid"), 0);
    let chip = |n: u8, atc: u16, amount: u64| {
        let money = Money::new(amount, eur()).expect("valid");
        let emv = card.generate_ac(ChipTxn {
            atc,
            amount: money,
            unix_ms: 1_790_000_000_000,
            unpredictable: [n; 4],
            pin_verified: false,
        });
        BatchItem {
            pos: inflight_wire::PointOfSale {
                entry_mode: inflight_wire::EntryMode::Chip,
                ..inflight_wire::PointOfSale::LEGACY
            },
            emv: Some(emv),
            ..item(n, amount)
        }
    };
    let p = programme();
    let rules = Rules { programme: &p, bounds: CaptureBounds::ANY, chip_key: Some(&imk) };
    let dir = tempfile::tempdir().expect("tempdir");
    let first = chip(1, 40, 100);
    {
        let s = issuer(dir.path());
        s.begin_batch(&header(1, 1, 1)).expect("begin");
        let t = s.decide_chunk(BatchId([1; 16]), 0, std::slice::from_ref(&first), &rules).expect("decide");
        s.durable_blocking(t).expect("durable");
        s.close();
    }
    let s = issuer(dir.path());
    let replay = BatchItem { id: PaymentId::mint(1_790_000_000_000, [2; 10]), ..first.clone() };
    let mut altered = chip(3, 41, 100);
    altered.amount = Money::new(99, eur()).expect("valid");
    let fresh = chip(4, 39, 100);
    s.begin_batch(&header(2, 4, 2)).expect("begin");
    let t = s.decide_chunk(BatchId([2; 16]), 0, &[first.clone(), replay, altered, fresh], &rules).expect("decide");
    s.durable_blocking(t).expect("durable");
    let outcomes: Vec<AuthOutcome> = s.ledger().expect("ledger").into_iter().map(|l| l.outcome).collect();
    assert_eq!(outcomes.len(), 4);
    assert!(matches!(outcomes[0], AuthOutcome::Approved { .. }), "decided once, kept: {outcomes:?}");
    assert!(outcomes.contains(&AuthOutcome::Declined(DeclineReason::AtcReplayed)), "{outcomes:?}");
    assert!(outcomes.contains(&AuthOutcome::Declined(DeclineReason::CryptogramInvalid)), "{outcomes:?}");
    let approved = outcomes.iter().filter(|o| matches!(o, AuthOutcome::Approved { .. })).count();
    assert_eq!(approved, 2, "the first, and counter 39 (behind 40, never seen): {outcomes:?}");
    let acct = &s.accounts().expect("accounts")[0];
    assert_eq!(acct.available_minor, 1_000 - 200, "charged for the two genuine payments only");

    // The card re-issued under the same number (PAN sequence number 2): its counter starts
    // again, and its counter 40 is its own, not a replay of the first card's.
    let reissued = ChipCard::new(&imk, &Pan::parse(PAN).expect("valid"), 2);
    let money = Money::new(100, eur()).expect("valid");
    let emv = reissued.generate_ac(ChipTxn {
        atc: 40,
        amount: money,
        unix_ms: 1_790_000_000_000,
        unpredictable: [5; 4],
        pin_verified: false,
    });
    let new_card = BatchItem { emv: Some(emv), ..chip(5, 40, 100) };
    s.begin_batch(&header(3, 1, 3)).expect("begin");
    let t = s.decide_chunk(BatchId([3; 16]), 0, std::slice::from_ref(&new_card), &rules).expect("decide");
    s.durable_blocking(t).expect("durable");
    let decided = s.ledger().expect("ledger").into_iter().find(|l| l.payment_id == new_card.id).expect("decided");
    assert!(matches!(decided.outcome, AuthOutcome::Approved { .. }), "{decided:?}");
}

/// An item sealed after its deadline is recorded `late` with its decision, across a restart;
/// a later copy of a payment already decided (marked otherwise) neither re-decides nor re-marks it.
#[test]
fn the_ledger_records_late_items_from_the_copy_it_decided() {
    let dir = tempfile::tempdir().expect("tempdir");
    let late = BatchItem { late: true, ..item(1, 100) };
    let on_time = item(2, 100);
    {
        let s = issuer(dir.path());
        assert_eq!(s.begin_batch(&header(1, 2, 7)).expect("begin").0, BatchStart::New);
        let t = s
            .decide_chunk(BatchId([1; 16]), 0, &[late.clone(), on_time.clone()], &rules(&programme()))
            .expect("decide");
        s.durable_blocking(t).expect("durable");
        s.close();
    }
    let s = issuer(dir.path());
    // The same payments again in another batch, marks swapped: the first copies' marks stay.
    assert_eq!(s.begin_batch(&header(2, 2, 9)).expect("begin").0, BatchStart::New);
    let swapped = [BatchItem { late: false, ..late.clone() }, BatchItem { late: true, ..on_time.clone() }];
    let t = s.decide_chunk(BatchId([2; 16]), 0, &swapped, &rules(&programme())).expect("not a conflict");
    s.durable_blocking(t).expect("durable");
    let ledger = s.ledger().expect("ledger");
    let late_of = |id: PaymentId| ledger.iter().find(|l| l.payment_id == id).map(|l| l.late);
    assert_eq!(late_of(late.id), Some(true));
    assert_eq!(late_of(on_time.id), Some(false));
    assert_eq!(ledger.len(), 2);
}

#[test]
fn a_sealed_batch_survives_restart_and_delivery_erases_card_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = || CardVault::from_key(&[2; 32]);
    let ids = {
        let (s, ids) = master_with_a_sealed_batch(dir.path(), vault());
        s.close();
        ids
    };
    let s = MasterStore::open(dir.path(), vault(), CACHE).expect("reopen");
    assert_eq!(s.open_batch().expect("meta").map(|h| h.id), Some(BatchId([5; 16])));
    assert_eq!(s.batch_ids(BatchId([5; 16])).expect("ids"), ids[..2].to_vec());
    let phases: Vec<_> = s.index().expect("index").into_iter().map(|(_, e)| e.phase).collect();
    use inflight_core::aggregator::Phase;
    assert_eq!(phases, [Phase::InBatch, Phase::InBatch, Phase::Pending]);
    let results: Vec<AuthResult> = ids[..2]
        .iter()
        .map(|id| AuthResult { id: *id, outcome: AuthOutcome::Approved { auth_code: "123456".into() } })
        .collect();
    s.store_results(&results).expect("results");
    s.finish_batch(BatchId([5; 16])).expect("finish");
    assert_eq!(s.open_batch().expect("meta"), None);
    s.mark_delivered(ids[0]).expect("delivered");
    s.mark_delivered(ids[2]).expect("not decided: ignored");
    assert_eq!(
        s.with_card_data().expect("scan"),
        ids[1..].to_vec(),
        "only the delivered payment's card data is erased"
    );
}

/// A master store holding three payments, the first two sealed into batch 5 (durably).
fn master_with_a_sealed_batch(dir: &std::path::Path, vault: CardVault) -> (MasterStore, Vec<PaymentId>) {
    let payments: Vec<Payment> = (1..=3)
        .map(|n| Payment {
            id: PaymentId::mint(1_790_000_000_000, [n; 10]),
            terminal: TerminalId::parse("t1").expect("valid"),
            pan: Pan::parse(PAN).expect("valid"),
            expiry: Expiry::parse("12/30").expect("valid"),
            amount: Money::new(100, eur()).expect("valid"),
            seat: "1A".into(),
            captured_unix_ms: 1_790_000_000_000,
            items: vec![],
            emv: None,
            pos: inflight_wire::PointOfSale::LEGACY,
        })
        .collect();
    let ids: Vec<PaymentId> = payments.iter().map(|p| p.id).collect();
    let s = MasterStore::open(dir, vault, CACHE).expect("open");
    for p in &payments {
        s.put(p, [0; 32], Verdict::Stored, None, "FL1", true).expect("put");
    }
    let t = s.seal_batch(&header(5, 2, 1), &ids[..2], || ()).expect("seal");
    tokio_free_wait(&s, t);
    (s, ids)
}

fn tokio_free_wait(s: &MasterStore, t: inflight_store::Ticket) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(s.durable(t)).expect("durable");
}

/// The driver's check before deciding: core's machine over what the store read.
fn first_conflict(s: &IssuerStore, item: &BatchItem) -> Option<PaymentId> {
    let items = vec![item.clone()];
    let prior = s.prior_contents(&items).expect("read");
    let batch = AcceptedBatch { header: header(9, 1, 0), start: BatchStart::New, items };
    batch.first_conflict(|id| prior.get(id).copied(), |i| s.content_digest(i))
}

#[test]
fn a_payment_id_reused_with_other_content_is_refused_never_given_the_first_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = issuer(dir.path());
    let first = item(1, 600);
    s.begin_batch(&header(1, 1, 7)).expect("begin");
    s.decide_chunk(BatchId([1; 16]), 0, std::slice::from_ref(&first), &rules(&programme())).expect("decide");
    // The same id, another amount (or card, or time), in another batch: a bug or an attack.
    let mut other = item(1, 500);
    assert_eq!(first_conflict(&s, &first), None, "an honest re-send");
    assert_eq!(first_conflict(&s, &other), Some(other.id));
    s.begin_batch(&header(2, 1, 9)).expect("begin");
    let err = s.decide_chunk(BatchId([2; 16]), 0, std::slice::from_ref(&other), &rules(&programme()));
    assert!(matches!(err, Err(inflight_store::StoreError::ContentConflict { .. })), "{err:?}");
    other.amount = first.amount;
    other.captured_unix_ms += 1;
    assert_eq!(first_conflict(&s, &other), Some(other.id), "capture time");
    // Money moved once, for the first payment only.
    let accounts = s.accounts().expect("accounts");
    assert_eq!(accounts.len(), 1);
    assert_eq!((accounts[0].opening_minor, accounts[0].available_minor), (1_000, 400));
    assert_eq!(accounts[0].card.to_string(), inflight_wire::Pan::parse(PAN).expect("valid").masked().to_string());
}

/// A batch the issuer refused is set aside across restarts: no longer the open batch (later
/// payments can be sealed), its payments quarantined, kept with their card data.
#[test]
fn a_refused_batch_is_quarantined_and_no_longer_blocks_the_next() {
    use inflight_core::aggregator::Phase;
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = || CardVault::from_key(&[2; 32]);
    let ids = {
        let (s, ids) = master_with_a_sealed_batch(dir.path(), vault());
        let t =
            s.quarantine_batch(BatchId([5; 16]), "batch id already used with different content").expect("quarantine");
        tokio_free_wait(&s, t);
        s.close();
        ids
    };
    let s = MasterStore::open(dir.path(), vault(), CACHE).expect("reopen");
    assert_eq!(s.open_batch().expect("meta"), None, "the refused batch no longer blocks the next");
    let quarantined = s.quarantined_batches().expect("batches");
    assert_eq!(quarantined.len(), 1);
    assert!(quarantined[0].1.contains("different content"));
    let phases: Vec<_> = s.index().expect("index").into_iter().map(|(_, e)| e.phase).collect();
    assert_eq!(phases, [Phase::Quarantined, Phase::Quarantined, Phase::Pending]);
    assert_eq!(s.with_card_data().expect("scan"), ids, "kept, card data included, for resolution");
}

/// Accounts are imported once: afterwards the store's available amounts are the truth (a
/// restart must not import them again and undo every charge).
#[test]
fn accounts_are_imported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = issuer(dir.path());
        assert!(s.accounts_imported().expect("meta"));
        s.begin_batch(&header(1, 1, 7)).expect("begin");
        let t = s.decide_chunk(BatchId([1; 16]), 0, &[item(1, 600)], &rules(&programme())).expect("decide");
        s.durable_blocking(t).expect("durable");
        s.close();
    }
    let s = issuer(dir.path());
    assert_eq!(s.accounts().expect("accounts")[0].available_minor, 400, "the charge survives the restart");
}

#[test]
fn a_reversal_releases_an_approved_amount_once_and_only_for_the_aircraft_that_sent_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let items = [item(1, 600), item(2, 600)];
    let (approved, declined, unknown) = (items[0].id, items[1].id, item(3, 1).id);
    {
        let s = issuer(dir.path());
        s.begin_batch(&header(1, 2, 7)).expect("begin");
        let t = s.decide_chunk(BatchId([1; 16]), 0, &items, &rules(&programme())).expect("decide");
        s.durable_blocking(t).expect("durable");
        assert_eq!(s.accounts().expect("accounts")[0].available_minor, 400);
        // Another aircraft knows the id: not its payment to reverse.
        let (r, _) = s.reverse(&[approved], "d-other").expect("reverse");
        assert_eq!(r[0].outcome, ReversalOutcome::Unknown);
        assert_eq!(s.accounts().expect("accounts")[0].available_minor, 400, "nothing released");
        let (r, t) = s.reverse(&[approved, declined, unknown, approved], "d-test").expect("reverse");
        s.durable_blocking(t).expect("durable");
        let outcomes: Vec<_> = r.iter().map(|x| x.outcome).collect();
        assert_eq!(
            outcomes,
            vec![
                ReversalOutcome::Reversed { released_minor: 600 },
                ReversalOutcome::NotCharged,
                ReversalOutcome::Unknown,
                ReversalOutcome::Reversed { released_minor: 600 },
            ],
            "a repeat in the same chunk answers what was recorded"
        );
        assert_eq!(s.accounts().expect("accounts")[0].available_minor, 1_000, "released once");
        s.close();
    }
    // After a restart, again: the same answer, nothing more released.
    let s = issuer(dir.path());
    let (r, _) = s.reverse(&[approved], "d-test").expect("reverse");
    assert_eq!(r[0].outcome, ReversalOutcome::Reversed { released_minor: 600 });
    assert_eq!(s.accounts().expect("accounts")[0].available_minor, 1_000);
    let ledger = s.ledger().expect("ledger");
    let line = ledger.iter().find(|l| l.payment_id == approved).expect("line");
    assert_eq!(line.reversed, Some(ReversalOutcome::Reversed { released_minor: 600 }));
}
