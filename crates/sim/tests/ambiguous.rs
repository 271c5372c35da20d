//! The ambiguous case, alone in its process (it installs a process-wide point observer): the
//! issuer decided the batch and made it durable, and its answer never arrived. The downlink is
//! cut at that very point (`issuer.after_results_stored`) for longer than the idle timeout; the
//! master must send the same batch again and get it answered from the stored results, with
//! nothing decided twice (checked in money).

use inflight_sim::{run, SimOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuer_decided_but_the_answer_never_arrived() {
    let r = run(SimOptions { slaves: 40, payments_per_slave: 10, seed: 22, ambiguous: true, ..SimOptions::default() })
        .await
        .expect("flight completes");
    assert!(r.ok(), "{}", r.table());
    assert_eq!((r.lost, r.duplicated, r.phantom, r.undelivered, r.unanswered), (0, 0, 0, 0, 0), "{}", r.table());
    assert_eq!(r.money_mismatches, 0, "{}", r.table());
    assert_eq!(r.batches, 1, "the same batch, answered from stored results");
    // The order really happened: the issuer reached the point (its decisions durable), the
    // answer was cut then, and the master stored results only after the cut was lifted (7 s).
    let cut = r.timings_ms.get("answer_cut_after_landing").copied().expect("the issuer reached the point");
    assert!(
        r.timings_ms["landing_to_decided"] >= cut + 5_000,
        "results reached the master {} ms after landing, the answer was cut at {cut} ms",
        r.timings_ms["landing_to_decided"]
    );
}
