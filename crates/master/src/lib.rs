//! `inflight-master`: the aircraft server daemon.
//!
//! It accepts terminals over QUIC with mutual TLS (the terminal id comes from the certificate),
//! stores every submitted payment exactly once in sled, and acks each by id only after it is
//! durable. The ground link, the BIN list and the authorization batch come with the issuer.
//!
//! The binary (`main.rs`) only parses the command line and calls into here.

pub mod config;
mod conn;
pub mod ingest;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use inflight_net::{endpoint, tls, NetError};
use inflight_store::{CardVault, MasterStore, StoreError};
use inflight_wire::{PaymentId, Verdict, TERMINAL_ALPN};
use serde_json::{json, Value};
use tokio::io::BufReader;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::config::MasterConfig;
use crate::ingest::{Ingest, INGEST_QUEUE_MAX};

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS material or the socket could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The admin socket could not be bound.
    #[error("admin socket {path}: {detail}")]
    Socket {
        /// The socket path.
        path: std::path::PathBuf,
        /// What failed.
        detail: String,
    },
}

/// Opens the master's store.
pub fn open_store(cfg: &MasterConfig) -> Result<MasterStore, StoreError> {
    let vault = CardVault::from_key_file(&cfg.card_key_file)?;
    MasterStore::open(&cfg.data_dir, vault, cfg.cache_bytes)
}

/// Runs the daemon until `cancel`.
pub async fn run(cfg: MasterConfig, cancel: CancellationToken) -> Result<(), MasterError> {
    let cfg = Arc::new(cfg);
    let store = Arc::new(open_store(&cfg)?);
    let agg = ingest::restore(&store)?;
    let id = tls::Identity::from_pem_files(&cfg.cert_file, &cfg.key_file)?;
    let server_tls = tls::server_config(id, tls::roots(&cfg.ca_file)?, TERMINAL_ALPN)?;
    let ep = endpoint::server(cfg.listen, server_tls, cfg.timers)?;
    let admin = inflight_daemon::local::bind(&cfg.admin_socket)
        .await
        .map_err(|e| MasterError::Socket { path: cfg.admin_socket.clone(), detail: e.to_string() })?;
    let counts = agg.counts();
    tracing::info!(
        aircraft = %cfg.aircraft_id,
        version = env!("CARGO_PKG_VERSION"),
        listen = %ep.local_addr().map_or_else(|_| cfg.listen.to_string(), |a| a.to_string()),
        admin = %cfg.admin_socket.display(),
        stored = counts.stored,
        refused = counts.refused,
        "inflight-master running"
    );

    let tasks = TaskTracker::new();
    let (ingest_tx, ingest_rx) = mpsc::channel(INGEST_QUEUE_MAX);
    let ingest_cancel = CancellationToken::new();
    let ingest_task = tokio::spawn(ingest::run(agg, store.clone(), ingest_rx, ingest_cancel.clone()));
    let connected = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(Semaphore::new(cfg.terminals_max));
    {
        let (ingest_tx, connected, cancel, admin_store) =
            (ingest_tx.clone(), connected.clone(), cancel.clone(), store.clone());
        tasks.spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = cancel.cancelled() => break,
                    c = admin.accept() => c,
                };
                if let Ok((stream, _)) = conn {
                    tokio::spawn(serve_admin(stream, ingest_tx.clone(), connected.clone(), admin_store.clone()));
                }
            }
        });
    }
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => break,
            i = ep.accept() => match i { Some(i) => i, None => break },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), max = cfg.terminals_max, "terminal limit reached; refusing connection");
            incoming.refuse();
            continue;
        };
        let (cfg, ingest_tx, connected, cancel) = (cfg.clone(), ingest_tx.clone(), connected.clone(), cancel.clone());
        tasks.spawn(async move {
            let _permit = permit;
            match incoming.await {
                Ok(conn) => conn::serve(cfg, conn, ingest_tx, connected, cancel).await,
                Err(e) => tracing::warn!(error = %e, "terminal handshake failed"),
            }
        });
    }
    tracing::info!("shutting down: closing terminal connections");
    tasks.close();
    if tokio::time::timeout(std::time::Duration::from_secs(5), tasks.wait()).await.is_err() {
        tracing::warn!("shutdown grace period over");
    }
    drop(ingest_tx);
    // Acks already decided are flushed before the actor stops; then the store closes.
    ingest_cancel.cancel();
    let _ = ingest_task.await;
    ep.close(0u32.into(), b"master shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ep.wait_idle()).await;
    store.close();
    let _ = std::fs::remove_file(&cfg.admin_socket);
    tracing::info!("inflight-master stopped");
    Ok(())
}

async fn serve_admin(
    stream: tokio::net::UnixStream,
    ingest: mpsc::Sender<Ingest>,
    connected: Arc<AtomicUsize>,
    store: Arc<MasterStore>,
) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    while let Ok(Some(())) = inflight_daemon::local::read_line(&mut r, &mut line).await {
        let req = serde_json::from_str::<Value>(&line).unwrap_or(Value::Null);
        let answer = match (req.get("op").and_then(Value::as_str), req.get("payment_id").and_then(Value::as_str)) {
            (Some("status"), Some(id)) => payment_json(&store, id),
            (Some("status"), None) => {
                let (reply, rx) = oneshot::channel();
                if ingest.send(Ingest::Counts { reply }).await.is_err() {
                    json!({ "error": "shutting_down" })
                } else {
                    match rx.await {
                        Ok(c) => status_json(c.stored, c.refused, connected.load(Ordering::Relaxed), true),
                        Err(_) => json!({ "error": "shutting_down" }),
                    }
                }
            }
            _ => {
                json!({ "error": "bad_request", "detail": "expected {\"op\":\"status\"} with an optional \"payment_id\"" })
            }
        };
        if inflight_daemon::local::write_line(&mut w, &answer).await.is_err() {
            return;
        }
    }
}

/// One payment as the crew sees it: masked card, verdict, flags.
fn payment_json(store: &MasterStore, id: &str) -> Value {
    let pid = match PaymentId::parse(id) {
        Ok(p) => p,
        Err(e) => return json!({ "error": "bad_request", "detail": e.to_string() }),
    };
    match store.view(pid) {
        Ok(None) => json!({ "payment_id": id, "error": "unknown_payment" }),
        Err(e) => json!({ "error": "storage_error", "detail": e.to_string() }),
        Ok(Some((v, verdict, flags))) => {
            let (state, reason) = match verdict {
                Verdict::Stored => ("stored", None),
                Verdict::Refused(r) => ("refused", Some(r.as_str())),
            };
            json!({
                "payment_id": id,
                "terminal": v.terminal.as_str(),
                "state": state,
                "reason": reason,
                "flags": flags.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "card": v.card.to_string(),
                "amount_minor": v.amount.amount_minor(),
                "currency": v.amount.currency().as_str(),
                "seat": v.seat,
                "captured_unix_ms": v.captured_unix_ms,
                "card_data_erased": v.card_data_erased,
            })
        }
    }
}

/// The status document (DESIGN.md §8). The ground link and batches come with the issuer; until
/// then every stored payment is pending.
fn status_json(stored: u64, refused: u64, terminals_connected: usize, running: bool) -> Value {
    json!({
        "daemon_running": running,
        "link": "down",
        "bin_list_version": null,
        "terminals_connected": terminals_connected,
        "payments": {
            "total": stored,
            "pending": stored,
            "in_batch": 0,
            "decided": 0,
            "delivered": 0,
            "refused": refused,
        },
    })
}

/// The status JSON (of the master, or of one payment): from the running daemon, or read from
/// the store when it is stopped.
pub async fn status(cfg: &MasterConfig, payment: Option<String>) -> Result<Value, String> {
    let mut req = json!({ "op": "status" });
    if let Some(p) = &payment {
        req["payment_id"] = json!(p);
    }
    match inflight_daemon::local::request::<_, Value>(&cfg.admin_socket, &req).await {
        Ok(v) => Ok(v),
        Err(_) => {
            let store = open_store(cfg).map_err(|e| e.to_string())?;
            let v = match payment {
                Some(p) => payment_json(&store, &p),
                None => {
                    let c = store.counts().map_err(|e| e.to_string())?;
                    status_json(c.stored, c.refused, 0, false)
                }
            };
            store.close();
            Ok(v)
        }
    }
}
