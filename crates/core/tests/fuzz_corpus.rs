//! Replays the committed fuzzing corpus (`fuzz/corpus/<target>/`) through the same entry points
//! the fuzzers run, so every input that ever reached new code keeps being checked by
//! `cargo test`. Fuzz for longer with `fuzz/README.md`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        // A panic here names the input that broke a property.
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{target}: {} breaks a property", path.display());
        n += 1;
    }
    assert!(n >= 10, "{target}: only {n} corpus inputs in {}", dir.display());
}

#[test]
fn decoders_corpus() {
    replay("decoders", inflight_core::fuzz::decoders);
}

#[test]
fn aggregator_session_corpus() {
    replay("aggregator_session", |d| {
        inflight_core::fuzz::aggregator_session(d);
    });
}

/// The corpus reaches what the session checks: refusals by the per-card limit, voids and
/// sealed batches (before the session installed a BIN list, refusals were unreachable).
#[test]
fn aggregator_session_corpus_reaches_refusals_voids_and_batches() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/aggregator_session");
    let mut total = inflight_core::fuzz::SessionStats::default();
    for entry in std::fs::read_dir(&dir).expect("corpus") {
        let data = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        let s = inflight_core::fuzz::aggregator_session(&data);
        total.refused += s.refused;
        total.voided += s.voided;
        total.sealed += s.sealed;
    }
    assert!(total.refused > 0 && total.voided > 0 && total.sealed > 0, "{total:?}");
}

#[test]
fn outbox_session_corpus() {
    replay("outbox_session", inflight_core::fuzz::outbox_session);
}
