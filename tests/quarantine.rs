//! A batch the issuer refuses is quarantined, and the batches after it still go (issue 8, item
//! 12). Against a real master and terminal, with a stand-in issuer on the real ground protocol
//! (real QUIC, mutual TLS with the deployment's issuer certificate, the signed BIN list) that
//! refuses the first batch it is sent and approves every later one.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use inflight_e2e::{accepted_id, Deployment, SaleApp};
use inflight_net::framed::framed;
use inflight_net::{endpoint, tls};
use inflight_store::BinListSigner;
use inflight_wire::{
    AircraftMsg, AuthOutcome, AuthResult, BinList, HotList, HotListUpdate, IssuerMsg, GROUND_ALPN,
    GROUND_FRAME_BYTES_MAX, GROUND_PROTOCOL_VERSION,
};

/// Serves the ground protocol until the test ends: refuses the first batch, approves the rest.
async fn refusing_issuer(dep: &Deployment, batches_seen: Arc<AtomicU32>) -> tokio::task::JoinHandle<()> {
    let cfg = inflight_issuer::IssuerConfig::load(&dep.config("issuer")).expect("issuer config");
    let (version, rules) = inflight_issuer::config::load_programme(&cfg.programme_file).expect("programme");
    let signer = BinListSigner::from_hex_file(&cfg.signing_key_file).expect("signing key");
    let signed = signer.sign(&BinList {
        version,
        issuer: cfg.issuer_name.clone(),
        valid_from_unix_ms: 0,
        valid_until_unix_ms: u64::MAX,
        rules,
    });
    // An empty hot-card list, signed by the same key (the master fetches it after the BIN list).
    let mut no_entries = Vec::new();
    let head = inflight_core::hotlist::head_for(1, &cfg.issuer_name, (0, u64::MAX), [0; 32], &mut no_entries);
    let hot = HotList { head: signer.sign_hot_head(&head), entries: no_entries };
    let id = tls::Identity::from_pem_files(&cfg.cert_file, &cfg.key_file).expect("issuer certificate");
    let server = tls::server_config(id, tls::roots(&cfg.ca_file).expect("CA"), GROUND_ALPN).expect("TLS");
    let ep = endpoint::server(cfg.listen, server, cfg.timers).expect("endpoint");
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let (signed, hot, seen) = (signed.clone(), hot.clone(), batches_seen.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((s, r)) = conn.accept_bi().await else { return };
                let (mut w, mut r) = framed(s, r, GROUND_FRAME_BYTES_MAX);
                let mut batch = None;
                let mut items = Vec::new();
                while let Ok(Some(msg)) = r.recv::<AircraftMsg>().await {
                    let answer = match msg {
                        AircraftMsg::Hello { .. } => {
                            IssuerMsg::Hello { version: GROUND_PROTOCOL_VERSION, issuer: "stand-in".into() }
                        }
                        AircraftMsg::Ping { nonce } => IssuerMsg::Pong { nonce },
                        // This flight voids nothing and closes nothing: either here is a defect.
                        AircraftMsg::Reverse { .. } | AircraftMsg::ManifestPart { .. } => return,
                        AircraftMsg::FetchBinList { .. } => IssuerMsg::BinList(Some(signed.clone())),
                        AircraftMsg::FetchHotList { .. } => IssuerMsg::HotList(HotListUpdate::Full(hot.clone())),
                        AircraftMsg::BatchBegin(header) => {
                            batch = Some(header);
                            items.clear();
                            continue;
                        }
                        AircraftMsg::BatchItems { items: chunk, .. } => {
                            items.extend(chunk.into_iter().map(|i| i.id));
                            continue;
                        }
                        AircraftMsg::BatchEnd { batch: id } => {
                            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                                let _ = w
                                    .send(&IssuerMsg::BatchRefused {
                                        batch: id,
                                        reason: "stand-in refuses the first batch".into(),
                                    })
                                    .await;
                                w.finish();
                                let _ =
                                    tokio::time::timeout(Duration::from_millis(500), w.stream_mut().stopped()).await;
                                return;
                            }
                            let results: Vec<AuthResult> = items
                                .iter()
                                .map(|id| AuthResult {
                                    id: *id,
                                    outcome: AuthOutcome::Approved { auth_code: "000001".into() },
                                })
                                .collect();
                            let count = results.len() as u32;
                            let _ = w.send(&IssuerMsg::BatchResults { batch: id, first_seq: 0, results }).await;
                            batch = None;
                            IssuerMsg::BatchDone { batch: id, count }
                        }
                    };
                    if w.send(&answer).await.is_err() {
                        return;
                    }
                }
                drop(batch);
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_quarantined_and_later_batches_still_go() {
    let dep = Deployment::new(1);
    let seen = Arc::new(AtomicU32::new(0));
    let _issuer = refusing_issuer(&dep, seen.clone()).await;
    let _master = dep.start_master();
    let _slave = dep.start_slave(1);
    tokio::task::block_in_place(|| {
        dep.wait_bin_lists();
        dep.master_link("down");
        let card = dep.cards()[0].clone();
        let mut app = SaleApp::connect(&dep.slave_socket(1)).expect("socket");
        let first: Vec<String> = (0..3)
            .map(|i| accepted_id(&app.capture(&card, 100 + i, "3C").expect("answer")).expect("accepted"))
            .collect();
        dep.wait_for("the first payments at the master", Duration::from_secs(20), || dep.master_total() == 3);
        dep.master_link("auto");
        dep.wait_for("the first batch refused and quarantined", Duration::from_secs(30), || {
            dep.master_status(None)["payments"]["quarantined"] == 3
        });
        assert!(dep.log("master").contains("BATCH QUARANTINED"), "the crew is told");
        // Later sales go in a new batch, which the issuer answers; the quarantined ones stay.
        let later: Vec<String> = (0..2)
            .map(|i| accepted_id(&app.capture(&card, 200 + i, "3C").expect("answer")).expect("accepted"))
            .collect();
        dep.wait_for("the later payments decided and delivered", Duration::from_secs(30), || {
            later.iter().all(|id| dep.master_status(Some(id))["state"] == "delivered")
        });
        let status = dep.master_status(None);
        assert_eq!(status["payments"]["quarantined"], 3, "{status}");
        assert_eq!(status["payments"]["delivered"], 2, "{status}");
        for id in &first {
            assert_eq!(dep.master_status(Some(id))["state"], "stored", "{id} is kept, not decided");
            assert_eq!(dep.master_status(Some(id))["card_data_erased"], false, "kept for resolution");
        }
        assert_eq!(seen.load(Ordering::SeqCst), 2, "the refused batch was not offered again");
        // The crew's report shows them apart from what is merely pending.
        let out = std::process::Command::new(inflight_e2e::bin("inflight-master"))
            .args(["report", "--config"])
            .arg(dep.config("master"))
            .output()
            .expect("run report");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let outcomes = &report["currencies"][0]["totals"]["outcomes"];
        assert_eq!(
            outcomes["quarantined"],
            serde_json::json!({"count": 3, "amount_minor": 100 + 101 + 102}),
            "{report}"
        );
        assert_eq!(outcomes["approved"], serde_json::json!({"count": 2, "amount_minor": 200 + 201}), "{report}");
        assert_eq!(outcomes["pending"]["count"], 0, "{report}");
    });
}
