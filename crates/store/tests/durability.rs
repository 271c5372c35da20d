//! Durability of the store: acked writes survive a crash, restarts keep every state, group commit
//! answers many concurrent writers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use inflight_store::{CardVault, MasterStore, SlaveState, SlaveStore};
use inflight_wire::{Currency, Expiry, Money, Pan, Payment, PaymentId, RefusalReason, TerminalId, Verdict};
use proptest::prelude::*;

const CACHE: u64 = 8 << 20;
const TEST_PAN: &str = "4111111111111111";

fn vault() -> CardVault {
    CardVault::from_key(&[42; 32])
}

fn payment(n: u32) -> Payment {
    let mut r = [0u8; 10];
    r[..4].copy_from_slice(&n.to_be_bytes());
    Payment {
        id: PaymentId::mint(1_790_000_000_000 + u64::from(n), r),
        terminal: TerminalId::parse("t1").expect("valid"),
        pan: Pan::parse(TEST_PAN).expect("valid card"),
        expiry: Expiry::parse("12/29").expect("valid"),
        amount: Money::new(100 + u64::from(n), Currency::parse("EUR").expect("known")).expect("valid"),
        seat: "1A".into(),
        captured_unix_ms: 1_790_000_000_000,
        items: vec![],
        emv: None,
        pos: inflight_wire::PointOfSale::LEGACY,
    }
}

/// Every file under `dir`, concatenated.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("readable dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).expect("readable file"));
        }
    }
    out
}

#[test]
fn card_numbers_are_never_on_disk_in_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = SlaveStore::open(dir.path(), vault(), CACHE).expect("open");
        for n in 0..50 {
            let t = s.put_captured(&payment(n), None).expect("put");
            s.durable_blocking(t).expect("durable");
        }
        assert_eq!(
            s.payment(payment(7).id).expect("read").map(|p| p.pan.expose_digits().to_owned()).as_deref(),
            Some(TEST_PAN)
        );
        s.close();
    }
    let bytes = all_bytes(dir.path());
    assert!(bytes.len() > 1000, "the store wrote something");
    assert!(!bytes.windows(TEST_PAN.len()).any(|w| w == TEST_PAN.as_bytes()), "full PAN found on disk");
}

#[test]
fn refusal_erases_card_data_and_states_only_move_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SlaveStore::open(dir.path(), vault(), CACHE).expect("open");
    let p = payment(1);
    s.put_captured(&p, None).expect("put");
    s.set_state(p.id, SlaveState::Refused(RefusalReason::OverCardFlightLimit)).expect("set");
    assert_eq!(s.payment(p.id).expect("read"), None, "card data erased");
    let v = s.view(p.id).expect("read").expect("masked record kept");
    assert!(v.payment.card_data_erased);
    assert_eq!(v.payment.card.to_string(), "411111******1111");
    s.set_state(p.id, SlaveState::Captured { answered: true }).expect("set");
    assert_eq!(
        s.view(p.id).expect("read").map(|v| v.state),
        Some(SlaveState::Refused(RefusalReason::OverCardFlightLimit))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_answers_many_concurrent_writers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = std::sync::Arc::new(MasterStore::open(dir.path(), vault(), CACHE).expect("open"));
    let mut tasks = Vec::new();
    for w in 0..64u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..20 {
                let p = payment(w * 1000 + k);
                let t = s.put(&p, [0; 32], Verdict::Stored, None, "FL1", true).expect("put");
                s.durable(t).await.expect("durable");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    assert_eq!(s.counts().expect("counts").stored, 64 * 20);
    // Put is insert-if-absent: a second put of the same id changes nothing.
    s.put(&payment(0), [9; 32], Verdict::Refused(RefusalReason::IdConflict), None, "FL1", false).expect("put");
    let view = s.view(payment(0).id).expect("read").expect("present");
    assert_eq!(view.verdict, Verdict::Stored);
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8),
    Forward(u8),
    Refuse(u8),
    Answer(u8),
    Void(u8),
    VoidAcked(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..20).prop_map(Op::Put),
        2 => (0u8..20).prop_map(Op::Forward),
        1 => (0u8..20).prop_map(Op::Refuse),
        1 => (0u8..20).prop_map(Op::Answer),
        1 => (0u8..20).prop_map(Op::Void),
        1 => (0u8..20).prop_map(Op::VoidAcked),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// The slave store against a `BTreeMap` model, with restarts anywhere.
    #[test]
    fn slave_store_matches_model_across_restarts(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SlaveStore::open(dir.path(), vault(), CACHE).expect("open");
        let mut model: BTreeMap<PaymentId, SlaveState> = BTreeMap::new();
        // The terminal's states, as the design states them: an unanswered payment may go
        // anywhere; an answered one only to forwarded (it must be carried, never refused or
        // voided); a void only to its master confirmation; the rest are final.
        let allowed = |from: SlaveState, to: SlaveState| {
            use SlaveState::{Captured, Forwarded, Voided};
            match (from, to) {
                (Captured { answered: false }, Captured { answered: false }) => false,
                (Captured { answered: false }, _) => true,
                (Captured { answered: true }, Forwarded) => true,
                (Voided { master_acked: false }, Voided { master_acked: true }) => true,
                _ => false,
            }
        };
        for op in ops {
            let (id, new) = match op {
                Op::Put(n) => {
                    let p = payment(u32::from(n));
                    if let std::collections::btree_map::Entry::Vacant(e) = model.entry(p.id) {
                        let t = store.put_captured(&p, None).expect("put");
                        store.durable_blocking(t).expect("durable");
                        e.insert(SlaveState::Captured { answered: false });
                    }
                    continue;
                }
                Op::Forward(n) => (payment(u32::from(n)).id, SlaveState::Forwarded),
                Op::Refuse(n) => (payment(u32::from(n)).id, SlaveState::Refused(RefusalReason::OverCardFlightLimit)),
                Op::Answer(n) => (payment(u32::from(n)).id, SlaveState::Captured { answered: true }),
                Op::Void(n) => (payment(u32::from(n)).id, SlaveState::Voided { master_acked: false }),
                Op::VoidAcked(n) => (payment(u32::from(n)).id, SlaveState::Voided { master_acked: true }),
                Op::Reopen => {
                    store.close();
                    drop(store);
                    store = SlaveStore::open(dir.path(), vault(), CACHE).expect("reopen");
                    continue;
                }
            };
            let t = store.set_state(id, new).expect("set");
            store.durable_blocking(t).expect("durable");
            if let Some(s) = model.get_mut(&id) {
                if allowed(*s, new) { *s = new; }
            }
        }
        for (id, want) in &model {
            prop_assert_eq!(store.view(*id).expect("read").map(|v| v.state), Some(*want));
        }
        let unacked: Vec<PaymentId> = store.unacked().expect("scan").into_iter().map(|(v, _)| v.id).collect();
        let want: Vec<PaymentId> = model
            .iter()
            .filter(|(_, s)| matches!(s, SlaveState::Captured { .. } | SlaveState::Voided { master_acked: false }))
            .map(|(id, _)| *id)
            .collect();
        prop_assert_eq!(unacked, want);
    }
}

const CHILD_ENV: &str = "INFLIGHT_STORE_CRASH_CHILD_DIR";
/// The round of `acked_writes_survive_kill_9` a child runs in.
const CHILD_ROUND_ENV: &str = "INFLIGHT_TEST_CRASH_ROUND";

/// In the child process: write payments from many tasks forever, printing each id once durable.
/// In the parent (a normal test run): does nothing; `acked_writes_survive_kill_9` drives it.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        // Each round writes ids of its own (an id already stored would be acked at once, proving
        // nothing about this round's writes).
        let round: u32 = std::env::var(CHILD_ROUND_ENV).ok().and_then(|r| r.parse().ok()).unwrap_or(0);
        let store = std::sync::Arc::new(MasterStore::open(Path::new(&dir), vault(), CACHE).expect("open"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        for w in 0..16u32 {
            let (store, tx) = (store.clone(), tx.clone());
            tokio::spawn(async move {
                for k in 0.. {
                    let n = w * 1_000_000 + round * 100_000 + k;
                    let t = store.put(&payment(n), [0; 32], Verdict::Stored, None, "FL1", true).expect("put");
                    store.durable(t).await.expect("durable");
                    if tx.send(n).is_err() {
                        return;
                    }
                }
            });
        }
        let mut out = std::io::stdout().lock();
        while let Some(n) = rx.recv().await {
            writeln!(out, "acked {n}").expect("stdout");
            out.flush().expect("stdout");
        }
    });
}

#[test]
fn acked_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all_acked = Vec::new();
    for round in 0..3u32 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(CHILD_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped");
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("utf-8");
            if let Some(n) = line.strip_prefix("acked ") {
                let n = n.parse::<u32>().expect("number");
                assert_eq!((n % 1_000_000) / 100_000, round, "round {round} acked {n}, an id of another round");
                acked.push(n);
                if acked.len() == 300 {
                    break;
                }
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        assert!(acked.len() >= 300, "child acked {} writes", acked.len());
        all_acked.extend(acked);
        let store = MasterStore::open(dir.path(), vault(), CACHE).expect("reopen after kill -9");
        for n in &all_acked {
            assert!(
                store.view(payment(*n).id).expect("read").is_some(),
                "acked write {n} lost after kill -9 (round {round})"
            );
        }
        store.close();
    }
}

/// "An ack means fsynced", tested against a power cut rather than `kill -9` (which keeps the page
/// cache, so it would pass without any fsync). The child store records, at every fsync, an image
/// of sled's files as that fsync made them durable (`INFLIGHT_STORE_POWER_IMAGES`); after
/// `kill -9` the store is rebuilt from the latest image alone — every write no fsync covered is
/// lost — and every acked write must be in it. (Shown to fail with the fsync left out: see
/// RELIABILITY.md.)
#[test]
fn acked_writes_survive_power_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, images) = (dir.path().join("store"), dir.path().join("images"));
    std::fs::create_dir_all(&images).expect("images dir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &live)
        .env("INFLIGHT_STORE_POWER_IMAGES", &images)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut acked = Vec::new();
    let ack = |line: std::io::Result<String>, acked: &mut Vec<u32>| {
        if let Some(n) = line.expect("utf-8").strip_prefix("acked ") {
            acked.push(n.parse::<u32>().expect("number"));
        }
    };
    while acked.len() < 300 {
        ack(lines.next().expect("the child acks writes"), &mut acked);
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // Every ack the child printed before it died counts, the last ones most of all: they are the
    // ones a missing or late fsync would lose.
    for line in lines {
        ack(line, &mut acked);
    }

    // The power cut: the disk holds what the last fsync covered, and the files that are fsynced
    // on their own (the marker, the durable mark).
    let latest = std::fs::read_to_string(images.join("LATEST")).expect("an fsync happened");
    let after = dir.path().join("after-power-cut");
    copy_dir(&images.join(format!("image-{}", latest.trim())), &after);
    for f in ["INFLIGHT_STORE", "INFLIGHT_DURABLE"] {
        std::fs::copy(live.join(f), after.join(f)).expect("fsynced file");
    }
    let store = MasterStore::open(&after, vault(), CACHE).expect("the store opens after a power cut");
    for n in &acked {
        assert!(store.view(payment(*n).id).expect("read").is_some(), "acked write {n} lost in a power cut");
    }
    let survived = store.index().expect("index").len();
    store.close();
    drop(store);
    let live_store = MasterStore::open(&live, vault(), CACHE).expect("the live store opens");
    let in_page_cache = live_store.index().expect("index").len();
    live_store.close();
    assert!(survived <= in_page_cache, "the image holds no more than was written");
    eprintln!("power cut: {} acked, {survived} survived, {in_page_cache} were in the page cache", acked.len());
    assert!(acked.len() >= 300);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let p = e.expect("entry").path();
        let target = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).expect("copy");
        }
    }
}

/// What the terminal's store is asked for reads back, across a restart (mutation testing found
/// these checked only end to end): the request id → payment map, the BIN list, which payments
/// still hold card data, and the counts by state.
#[test]
fn the_terminal_store_reads_back_requests_lists_card_data_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = inflight_store::BinListSigner::from_pkcs8(&inflight_store::BinListSigner::generate().expect("key"))
        .expect("key");
    let list = signer.sign(&inflight_wire::BinList {
        version: 7,
        issuer: "bank".into(),
        valid_from_unix_ms: 0,
        valid_until_unix_ms: u64::MAX,
        rules: vec![],
    });
    {
        let s = SlaveStore::open(dir.path(), vault(), CACHE).expect("open");
        assert_eq!(s.bin_list().expect("read"), None);
        for n in 0..6 {
            let rid = format!("till-{n}");
            let t = s.put_captured(&payment(n), Some(rid.as_str())).expect("put");
            s.durable_blocking(t).expect("durable");
        }
        s.set_state(payment(1).id, SlaveState::Captured { answered: true }).expect("answer");
        s.set_state(payment(1).id, SlaveState::Forwarded).expect("forward");
        s.set_state(payment(2).id, SlaveState::Refused(RefusalReason::OverCardFlightLimit)).expect("refuse");
        s.set_state(payment(3).id, SlaveState::Voided { master_acked: false }).expect("void");
        s.set_state(payment(5).id, SlaveState::Voided { master_acked: false }).expect("void");
        s.set_state(payment(5).id, SlaveState::Voided { master_acked: true }).expect("void acked");
        let approved = inflight_wire::AuthOutcome::Approved { auth_code: "123456".into() };
        s.store_result(payment(1).id, &approved).expect("result");
        let t = s.set_bin_list(&list).expect("list");
        s.durable_blocking(t).expect("durable");
        s.close();
    }
    let s = SlaveStore::open(dir.path(), vault(), CACHE).expect("reopen");
    assert_eq!(s.request("till-3").expect("read"), Some(payment(3).id));
    assert_eq!(s.request("till-9").expect("read"), None);
    assert_eq!(s.bin_list().expect("read"), Some(list));
    let counts = s.counts().expect("counts");
    assert_eq!((counts.captured, counts.forwarded, counts.refused, counts.voided, counts.decided), (2, 1, 1, 2, 1));
    // Not settled with the master: captured ones, and the void it has not confirmed.
    let unacked: Vec<PaymentId> = s.unacked().expect("scan").into_iter().map(|(v, _)| v.id).collect();
    assert_eq!(unacked, vec![payment(0).id, payment(3).id, payment(4).id]);
    // Refused and voided payments lose their card data at once, a delivered one with its
    // result; the others keep it until then.
    let mut held = s.with_card_data().expect("scan");
    held.sort();
    let mut want = vec![payment(0).id, payment(4).id];
    want.sort();
    assert_eq!(held, want);
    s.close();
}
