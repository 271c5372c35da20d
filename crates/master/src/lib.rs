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
use inflight_wire::TERMINAL_ALPN;
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
        let (ingest_tx, connected, cancel) = (ingest_tx.clone(), connected.clone(), cancel.clone());
        tasks.spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = cancel.cancelled() => break,
                    c = admin.accept() => c,
                };
                if let Ok((stream, _)) = conn {
                    tokio::spawn(serve_admin(stream, ingest_tx.clone(), connected.clone()));
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

async fn serve_admin(stream: tokio::net::UnixStream, ingest: mpsc::Sender<Ingest>, connected: Arc<AtomicUsize>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    while let Ok(Some(())) = inflight_daemon::local::read_line(&mut r, &mut line).await {
        let answer = match serde_json::from_str::<Value>(&line).ok().and_then(|v| v.get("op").and_then(Value::as_str).map(str::to_owned)).as_deref() {
            Some("status") => {
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
            _ => json!({ "error": "bad_request", "detail": "expected {\"op\":\"status\"}" }),
        };
        if inflight_daemon::local::write_line(&mut w, &answer).await.is_err() {
            return;
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

/// The status JSON: from the running daemon, or read from the store when it is stopped.
pub async fn status(cfg: &MasterConfig) -> Result<Value, String> {
    match inflight_daemon::local::request::<_, Value>(&cfg.admin_socket, &json!({ "op": "status" })).await {
        Ok(v) => Ok(v),
        Err(_) => {
            let store = open_store(cfg).map_err(|e| e.to_string())?;
            let c = store.counts().map_err(|e| e.to_string())?;
            store.close();
            Ok(status_json(c.stored, c.refused, 0, false))
        }
    }
}
