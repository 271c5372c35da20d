//! The simulator's own tests: it is deterministic, a healthy build passes it, and it finds the
//! defects we have fixed when they are put back (its power is itself tested).

use super::*;

#[test]
fn the_same_seed_gives_the_same_trace() {
    for seed in [3, 7, 42] {
        let a = run_seed(seed, true);
        let b = run_seed(seed, true);
        assert!(a.trace.len() > 100, "seed {seed}: a trace of {} lines is too short to mean much", a.trace.len());
        assert_eq!(a.trace, b.trace, "seed {seed}: two runs differ");
        assert_eq!(a.stats, b.stats);
    }
}

#[test]
fn a_sweep_of_seeds_finds_no_violation_and_exercises_the_faults() {
    let runs = run_seeds(0, 99, 2);
    let mut total = Stats::default();
    for r in &runs {
        assert!(r.violations.is_empty(), "seed {}: {:?}", r.seed, r.violations);
        total.accepted += r.stats.accepted;
        total.rejected += r.stats.rejected;
        total.decided += r.stats.decided;
        total.crashes += r.stats.crashes;
        total.breaks += r.stats.breaks;
        total.late_frames += r.stats.late_frames;
    }
    // A checker that never sees a fault proves nothing: the sweep must crash nodes, break
    // connections, deliver stale frames, and still decide payments.
    assert!(total.accepted > 500 && total.decided > 500, "{total:?}");
    assert!(total.rejected > 0 && total.crashes > 50 && total.breaks > 100 && total.late_frames > 10, "{total:?}");
}

/// Runs seeds from 0 until one breaks an invariant; returns that seed and its first violation.
fn first_failing(m: Mutation, max: u64) -> Option<(u64, String)> {
    (0..max).find_map(|seed| {
        let r = run_mutated(seed, m);
        r.violations.first().map(|v| (seed, v.clone()))
    })
}

#[test]
fn finds_an_accepted_answer_given_before_the_mark_is_durable() {
    let found = first_failing(Mutation::AcceptBeforeDurable, 200);
    eprintln!("AcceptBeforeDurable: {found:?}");
    let (_, v) = found.expect("the simulator must find this defect within 200 seeds");
    assert!(v.contains("without a durable answered mark"), "{v}");
}

#[test]
fn finds_a_payment_decided_twice_without_the_already_decided_guard() {
    let found = first_failing(Mutation::NoDecidedGuard, 200);
    eprintln!("NoDecidedGuard: {found:?}");
    let (_, v) = found.expect("the simulator must find this defect within 200 seeds");
    // A chip payment decided a second time meets its own counter first: the replay window is a
    // second guard (declined `atc_replayed`, over its earlier approval), then money breaks.
    assert!(v.contains("money") || v.contains("atc_replayed"), "{v}");
}

#[test]
fn finds_a_batch_sent_again_with_different_content() {
    let found = first_failing(Mutation::ResealOnRetry, 200);
    eprintln!("ResealOnRetry: {found:?}");
    assert!(found.is_some(), "the simulator must find this defect within 200 seeds");
}

#[test]
fn finds_a_terminal_that_forgets_its_hot_card_list_at_a_restart() {
    let found = first_failing(Mutation::ForgetHotListOnRestart, 200);
    eprintln!("ForgetHotListOnRestart: {found:?}");
    let (_, v) = found.expect("the simulator must find this defect within 200 seeds");
    assert!(v.contains("hot-card list"), "{v}");
}

#[test]
fn finds_an_ack_sent_before_the_masters_write_is_durable() {
    let found = first_failing(Mutation::AckBeforeDurable, 200);
    eprintln!("AckBeforeDurable: {found:?}");
    let (_, v) = found.expect("the simulator must find this defect within 200 seeds");
    assert!(v.contains("before the master's disk held it"), "{v}");
}

#[test]
fn sale_apps_void_and_reversals_happen_in_a_sweep() {
    let runs = run_seeds(0, 99, 2);
    let (mut voided, mut pending, mut reversed) = (0, 0, 0);
    for r in &runs {
        assert!(r.violations.is_empty(), "seed {}: {:?}", r.seed, r.violations);
        voided += r.stats.voided;
        pending += r.stats.reversal_pending;
        reversed += r.stats.reversed;
    }
    // Voids before the seal, voids after it, and reversals the issuer applies must all occur,
    // or the checks on them prove nothing.
    assert!(voided > 20 && pending > 20 && reversed > 5, "voided {voided}, pending {pending}, reversed {reversed}");
}

#[test]
fn finds_a_void_of_a_payment_being_sealed() {
    let found = first_failing(Mutation::NoPromise, 500);
    eprintln!("NoPromise: {found:?}");
    assert!(found.is_some(), "the simulator must find this defect within 500 seeds");
}

#[test]
fn finds_an_amount_released_twice() {
    let found = first_failing(Mutation::ReleaseTwice, 500);
    eprintln!("ReleaseTwice: {found:?}");
    let (_, v) = found.expect("the simulator must find this defect within 500 seeds");
    assert!(v.contains("money"), "{v}");
}

#[test]
fn late_items_happen_in_a_sweep() {
    let runs = run_seeds(0, 99, 2);
    let (mut late, mut decided) = (0, 0);
    for r in &runs {
        assert!(r.violations.is_empty(), "seed {}: {:?}", r.seed, r.violations);
        late += r.stats.late;
        decided += r.stats.decided;
    }
    // Late and on-time items must both occur, or the check on the marks proves nothing.
    assert!(late > 10 && late < decided, "late {late} of {decided} decided");
}

#[test]
fn finds_a_late_mark_judged_when_sent_instead_of_sealed() {
    let found = first_failing(Mutation::LateAtSend, 500);
    eprintln!("LateAtSend: {found:?}");
    let (_, v) = found.expect("the simulator must find this defect within 500 seeds");
    assert!(v.contains("late"), "{v}");
}

#[test]
fn finds_a_replayed_cryptogram_charged_twice_when_the_issuer_forgets_counters() {
    let found = first_failing(Mutation::ForgetAtc, 500);
    eprintln!("ForgetAtc: {found:?}");
    let (_, v) = found.expect("the simulator must find this defect within 500 seeds");
    assert!(v.contains("chip counter"), "{v}");
}

#[test]
fn finds_an_altered_chip_payment_charged_when_chip_data_is_ignored() {
    let found = first_failing(Mutation::IgnoreChip, 500);
    eprintln!("IgnoreChip: {found:?}");
    let (_, v) = found.expect("the simulator must find this defect within 500 seeds");
    assert!(v.contains("altered after the card signed"), "{v}");
}

#[test]
fn finds_a_chip_card_keyed_and_charged_when_the_issuer_forgets_chip_cards() {
    let found = first_failing(Mutation::KeyedChipCards, 500);
    eprintln!("KeyedChipCards: {found:?}");
    let (_, v) = found.expect("the simulator must find this defect within 500 seeds");
    assert!(v.contains("chip data stripped"), "{v}");
}
