//! A damaged store is refused, never started with fewer records than it acknowledged (issue 8,
//! item 8). Each test writes N records through the store's API, waits until they are durable,
//! stops the store (cleanly, or by taking a crash image of its folder while it runs), flips bytes
//! in sled's `db` file, and reopens: the open must fail with `StoreError::Damaged` and leave the
//! files as they were, or (damage that hit nothing live) the store must hold all N records.

use std::path::Path;

use inflight_core::authorize::Account;
use inflight_store::{BatchStart, CardVault, IssuerStore, MasterStore, SlaveStore, StoreError};
use inflight_wire::{
    BatchHeader, BatchId, BatchItem, BinList, BinPrefix, BinRule, CardKind, Currency, Expiry, Money, Pan, Payment,
    PaymentId, TerminalId, Verdict,
};

const CACHE: u64 = 4 << 20;
const PAN: &str = "4111111111111111";
/// As many payments as the reviewer's reproduction.
const RECORDS: u32 = 42;
/// Bytes flipped at each place, as in the reviewer's reproduction.
const FLIP_LEN: usize = 512;
/// Where to flip, as a fraction of the `db` file's length (the middle, first, is the reviewer's case).
const FLIP_AT: [(u64, u64); 6] = [(1, 2), (1, 16), (1, 4), (3, 4), (15, 16), (0, 1)];

fn vault() -> CardVault {
    CardVault::from_key(&[9; 32])
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("known")
}

fn payment(n: u32) -> Payment {
    let mut r = [0u8; 10];
    r[..4].copy_from_slice(&n.to_be_bytes());
    Payment {
        id: PaymentId::mint(1_790_000_000_000 + u64::from(n), r),
        terminal: TerminalId::parse("t1").expect("valid"),
        pan: Pan::parse(PAN).expect("valid card"),
        expiry: Expiry::parse("12/29").expect("valid"),
        amount: Money::new(100 + u64::from(n), eur()).expect("valid"),
        seat: "1A".into(),
        captured_unix_ms: 1_790_000_000_000,
        items: vec![],
        emv: None,
        pos: inflight_wire::PointOfSale::LEGACY,
    }
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

/// The three stores, driven through their own APIs.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Master,
    Slave,
    Issuer,
}

/// An open store of any kind.
enum Open {
    Master(MasterStore),
    Slave(SlaveStore),
    Issuer(IssuerStore),
}

fn open(kind: Kind, dir: &Path) -> Result<Open, StoreError> {
    Ok(match kind {
        Kind::Master => Open::Master(MasterStore::open(dir, vault(), CACHE)?),
        Kind::Slave => Open::Slave(SlaveStore::open(dir, vault(), CACHE)?),
        Kind::Issuer => Open::Issuer(IssuerStore::open(dir, vault(), CACHE)?),
    })
}

impl Open {
    /// Writes `RECORDS` records, one durable write each (one group commit each).
    fn fill(&self) {
        match self {
            Open::Master(s) => {
                let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
                for n in 0..RECORDS {
                    let t = s.put(&payment(n), [0; 32], Verdict::Stored, None, "FL1", true).expect("put");
                    rt.block_on(s.durable(t)).expect("durable");
                }
            }
            Open::Slave(s) => {
                for n in 0..RECORDS {
                    let t = s.put_captured(&payment(n), None).expect("put");
                    s.durable_blocking(t).expect("durable");
                }
            }
            Open::Issuer(s) => {
                let acct = Account {
                    kind: CardKind::Credit,
                    expiry: Expiry::parse("12/30").expect("valid"),
                    available_minor: 1_000_000,
                    currency: eur(),
                    open: true,
                    chip: false,
                };
                let t = s.import_accounts(&[(Pan::parse(PAN).expect("valid"), acct)]).expect("import");
                s.durable_blocking(t).expect("durable");
                let header = BatchHeader {
                    id: BatchId([1; 16]),
                    aircraft: "d-test".into(),
                    flight: "FL1".into(),
                    count: RECORDS,
                    totals: vec![],
                    digest: [1; 32],
                };
                assert_eq!(s.begin_batch(&header).expect("begin").0, BatchStart::New);
                for n in 0..RECORDS {
                    let p = payment(n);
                    let item = BatchItem {
                        id: p.id,
                        pan: p.pan,
                        expiry: Expiry::parse("12/30").expect("valid"),
                        amount: p.amount,
                        captured_unix_ms: p.captured_unix_ms,
                        late: false,
                        deferred: true,
                        emv: None,
                        pos: inflight_wire::PointOfSale::LEGACY,
                    };
                    let t = s
                        .decide_chunk(
                            header.id,
                            n,
                            &[item],
                            &inflight_core::authorize::Rules {
                                programme: &programme(),
                                bounds: inflight_core::authorize::CaptureBounds::ANY,
                                chip_key: None,
                            },
                        )
                        .expect("decide");
                    s.durable_blocking(t).expect("durable");
                }
            }
        }
    }

    /// How many records the store holds (reading every one of them).
    fn records(&self) -> Result<usize, StoreError> {
        match self {
            Open::Master(s) => {
                let c = s.counts()?;
                Ok(s.index()?.len().min(usize::try_from(c.stored + c.refused).unwrap_or(usize::MAX)))
            }
            Open::Slave(s) => {
                let c = s.counts()?;
                Ok(s.ids()?.len().min(usize::try_from(c.captured + c.forwarded + c.refused).unwrap_or(usize::MAX)))
            }
            Open::Issuer(s) => Ok(s.ledger()?.len()),
        }
    }

    fn close(&self) {
        match self {
            Open::Master(s) => s.close(),
            Open::Slave(s) => s.close(),
            Open::Issuer(s) => s.close(),
        }
    }
}

/// Every file under `dir` with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("readable dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).expect("readable file")));
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("readable dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Flips (XOR 0xFF, so every byte changes) `FLIP_LEN` bytes of `dir/db` at `num/den` of its length.
fn flip(dir: &Path, (num, den): (u64, u64)) -> u64 {
    let path = dir.join("db");
    let mut bytes = std::fs::read(&path).expect("db file");
    let len = bytes.len() as u64;
    let at = usize::try_from((len * num / den).min(len.saturating_sub(FLIP_LEN as u64))).expect("fits");
    let end = (at + FLIP_LEN).min(bytes.len());
    for b in &mut bytes[at..end] {
        *b ^= 0xFF;
    }
    std::fs::write(&path, bytes).expect("write db");
    at as u64
}

/// Reopens a damaged store: refused with `Damaged` and the files untouched, or every record held.
fn assert_refused_or_whole(kind: Kind, dir: &Path, where_: &str) {
    let before = snapshot(dir);
    match open(kind, dir) {
        Err(StoreError::Damaged { detail, .. }) => {
            assert!(!detail.is_empty());
            assert!(snapshot(dir) == before, "{kind:?} {where_}: a refused store's files were changed");
        }
        Err(e) => panic!("{kind:?} {where_}: expected StoreError::Damaged, got another error: {e}"),
        Ok(s) => {
            let held = s.records();
            s.close();
            match held {
                Ok(n) => assert_eq!(
                    n, RECORDS as usize,
                    "{kind:?} {where_}: the damaged store started with {n} of the {RECORDS} records it acked"
                ),
                Err(e) => panic!("{kind:?} {where_}: the damaged store started, then failed to read: {e}"),
            }
        }
    }
}

fn damage_after_clean_stop(kind: Kind) {
    for at in FLIP_AT {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = open(kind, dir.path()).expect("open");
            s.fill();
            assert_eq!(s.records().expect("read"), RECORDS as usize);
            s.close();
        }
        let offset = flip(dir.path(), at);
        assert_refused_or_whole(kind, dir.path(), &format!("clean stop, {FLIP_LEN} bytes flipped at {offset}"));
    }
}

fn damage_after_crash(kind: Kind) {
    for at in FLIP_AT {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("image");
        let live = dir.path().join("live");
        let s = open(kind, &live).expect("open");
        s.fill();
        // The folder as a power cut would leave it: every acked write is on disk, no clean close.
        copy_dir(&live, &image);
        s.close();
        drop(s);
        let offset = flip(&image, at);
        assert_refused_or_whole(kind, &image, &format!("crash image, {FLIP_LEN} bytes flipped at {offset}"));
    }
}

#[test]
fn master_refuses_a_store_damaged_after_a_clean_stop() {
    damage_after_clean_stop(Kind::Master);
}

#[test]
fn terminal_refuses_a_store_damaged_after_a_clean_stop() {
    damage_after_clean_stop(Kind::Slave);
}

#[test]
fn issuer_refuses_a_store_damaged_after_a_clean_stop() {
    damage_after_clean_stop(Kind::Issuer);
}

#[test]
fn master_refuses_a_store_damaged_after_a_crash() {
    damage_after_crash(Kind::Master);
}

#[test]
fn terminal_refuses_a_store_damaged_after_a_crash() {
    damage_after_crash(Kind::Slave);
}

#[test]
fn issuer_refuses_a_store_damaged_after_a_crash() {
    damage_after_crash(Kind::Issuer);
}

/// The check must never refuse a healthy store: clean restarts, crash images, and a crash image
/// that holds more than its last mark (writes made after the mark was taken) all open whole.
#[test]
fn healthy_stores_open_with_every_record_after_clean_stops_and_crashes() {
    for kind in [Kind::Master, Kind::Slave, Kind::Issuer] {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("live");
        {
            let s = open(kind, &live).expect("open");
            s.fill();
            s.close();
        }
        for restart in 0..3 {
            let s = open(kind, &live).unwrap_or_else(|e| panic!("{kind:?} clean restart {restart}: {e}"));
            assert_eq!(s.records().expect("read"), RECORDS as usize, "{kind:?} clean restart {restart}");
            if restart == 1 {
                let image = dir.path().join("image");
                copy_dir(&live, &image);
                let c = open(kind, &image).unwrap_or_else(|e| panic!("{kind:?} crash image: {e}"));
                assert_eq!(c.records().expect("read"), RECORDS as usize, "{kind:?} crash image");
                c.close();
                drop(c);
                // And the crash image reopens cleanly after its own clean stop.
                let c = open(kind, &image).unwrap_or_else(|e| panic!("{kind:?} crash image restart: {e}"));
                assert_eq!(c.records().expect("read"), RECORDS as usize, "{kind:?} crash image restart");
            }
            s.close();
        }
    }
}
