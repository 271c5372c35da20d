//! `inflight-slave`: the terminal daemon on each seatback and crew position.
//!
//! It takes payments from the sale app over a local Unix socket, checks them
//! (`inflight-core::capture`), stores them durably in its own sled outbox before answering,
//! forwards them to the master over one QUIC connection with pipelined, id-carrying acks, and
//! re-sends whatever the master has not acked after any disconnect or restart.
//!
//! The binary (`main.rs`) only parses the command line and calls into here.

mod answer;
pub mod api;
pub mod check;
pub mod config;
mod link;
mod metrics;
mod terminal;

use crate::terminal::VoidOf;
use std::path::Path;
use std::sync::Arc;

use inflight_core::capture::CaptureRequest;
use inflight_daemon::{DaemonError, ExitClass, Shutdown};
use inflight_net::{endpoint, tls, NetError};
use inflight_store::{CardVault, SlaveStore, StoreError};
use inflight_wire::{LineItem, PaymentId, TERMINAL_ALPN};
use serde_json::{json, Value};
use tokio::io::BufReader;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api::{CaptureAnswer, CaptureBody, Request};
pub use crate::config::SlaveConfig;
use crate::terminal::{Event, Terminal, EVENTS_MAX};

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum SlaveError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS material or the socket could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The card number given as `--pan -` could not be read from standard input. The message
    /// never holds what was read.
    #[error("--pan -: {0}")]
    PanInput(&'static str),
    /// `metrics_listen` cannot be listened on (in use, an interface not up yet): exit 69, so a
    /// supervisor retries it (a value that does not parse is a config error, 64).
    #[error(transparent)]
    Metrics(#[from] inflight_daemon::metrics::MetricsBindError),
    /// The capture socket could not be bound.
    #[error("capture socket {path}: {detail}")]
    Socket {
        /// The socket path.
        path: std::path::PathBuf,
        /// What failed.
        detail: String,
    },
}

impl DaemonError for SlaveError {
    fn exit_class(&self) -> ExitClass {
        match self {
            SlaveError::Store(_) => ExitClass::Io,
            SlaveError::Net(_) | SlaveError::Socket { .. } => ExitClass::Unavailable,
            SlaveError::PanInput(_) => ExitClass::Config,
            SlaveError::Metrics(_) => ExitClass::Unavailable,
        }
    }
}

/// Opens the terminal's store.
pub fn open_store(cfg: &SlaveConfig) -> Result<SlaveStore, StoreError> {
    let vault = CardVault::from_key_file(&cfg.card_key_file)?;
    SlaveStore::open(&cfg.data_dir, vault, cfg.cache_bytes)
}

/// The TLS configuration towards the master, from the files (read again before a connection
/// attempt when they changed: a renewed certificate, a new revocation list).
pub(crate) fn client_tls(cfg: &SlaveConfig) -> Result<tls::ClientConfig, NetError> {
    let id = tls::Identity::from_pem_files(&cfg.cert_file, &cfg.key_file)?;
    let crls = cfg.crl_file.as_deref().map(tls::crls).transpose()?.unwrap_or_default();
    tls::client_config_with_crls(id, tls::roots(&cfg.ca_file)?, crls, TERMINAL_ALPN)
}

/// The files [`client_tls`] reads.
pub(crate) fn tls_files(cfg: &SlaveConfig) -> Vec<std::path::PathBuf> {
    [Some(&cfg.ca_file), cfg.crl_file.as_ref(), Some(&cfg.cert_file), Some(&cfg.key_file)]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

/// Runs the daemon until `cancel`.
pub async fn run(cfg: SlaveConfig, cancel: CancellationToken) -> Result<(), SlaveError> {
    let cfg = Arc::new(cfg);
    let store = Arc::new(open_store(&cfg)?);
    let metrics = metrics::SlaveMetrics::new();
    store.observe_commits(metrics.commit_observer());
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(inflight_daemon::metrics::bind(addr).await?),
        None => None,
    };
    let client_tls = client_tls(&cfg)?;
    let bind = if cfg.master_addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let ep = endpoint::client(bind.parse().expect("literal socket address"), client_tls, cfg.timers)?;
    let listener = inflight_daemon::local::bind(&cfg.capture_socket, cfg.capture_access.clone())
        .await
        .map_err(|e| SlaveError::Socket { path: cfg.capture_socket.clone(), detail: e.to_string() })?;

    let (tx, rx) = mpsc::channel(EVENTS_MAX);
    let actor = Terminal::restore(cfg.clone(), store.clone(), tx.clone())?;
    tracing::info!(
        terminal = %cfg.terminal_id,
        version = env!("CARGO_PKG_VERSION"),
        socket = %cfg.capture_socket.display(),
        master = %cfg.master_addr,
        metrics = %metrics_listener.as_ref().and_then(|l| l.local_addr().ok()).map_or_else(|| "off".into(), |a| a.to_string()),
        "inflight-slave running"
    );
    // Every socket is bound: a `Type=notify` unit is started now (nothing without systemd).
    inflight_daemon::runner::notify_ready();

    let shutdown = Shutdown::new(cancel);
    // The actor is not one of the drained tasks: it outlives the link task, so that the link's
    // last events are handled, and the capture connections, so that their sale apps are
    // answered; it is stopped after the drain.
    let actor_cancel = CancellationToken::new();
    let actor_task = tokio::spawn(actor.run(rx, actor_cancel.clone()));
    shutdown.spawn(link::run(cfg.clone(), ep, tx.clone(), metrics.clone(), shutdown.token()));
    if let Some(l) = metrics_listener {
        let (cfg, events, metrics, store) = (cfg.clone(), tx.clone(), metrics.clone(), store.clone());
        shutdown.spawn(inflight_daemon::metrics::serve(l, shutdown.clone(), move || {
            let (cfg, events, metrics, store) = (cfg.clone(), events.clone(), metrics.clone(), store.clone());
            async move { metrics.scrape(&cfg, &events, &store).await }
        }));
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            // Only allowed peers, at most LOCAL_CONNECTIONS_MAX at once (the listener answers
            // the others); the sale app's ops (capture, status) need nothing more.
            conn = listener.accept() => match conn {
                Ok(admitted) => {
                    shutdown.spawn(serve_local(admitted, tx.clone(), metrics.clone(), shutdown.token()));
                }
                Err(e) => tracing::warn!(error = %e, "capture socket accept failed"),
            },
        }
    }
    // Stop taking captures, let the link close (it closes its endpoint), then stop the actor (it
    // answers any sale app still waiting: those payments are durable and queued), then the store.
    drop(listener);
    let _ = std::fs::remove_file(&cfg.capture_socket);
    shutdown.drain().await;
    actor_cancel.cancel();
    let _ = actor_task.await;
    store.close();
    tracing::info!("inflight-slave stopped");
    Ok(())
}

async fn serve_local(
    admitted: inflight_daemon::local::Admitted,
    events: mpsc::Sender<Event>,
    metrics: metrics::SlaveMetrics,
    cancel: CancellationToken,
) {
    // The connection's slot is held until this task ends.
    let inflight_daemon::local::Admitted { stream, .. } = admitted;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        let got = tokio::select! {
            _ = cancel.cancelled() => return,
            got = inflight_daemon::local::read_line(&mut r, &mut line) => got,
        };
        match got {
            Ok(Some(())) => {}
            Ok(None) => return,
            Err(e) => {
                let _ = inflight_daemon::local::write_line(
                    &mut w,
                    &json!({"error": "bad_request", "detail": e.to_string()}),
                )
                .await;
                return;
            }
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            // serde's message may quote input; never echo it for captures (it could hold a PAN).
            Err(e) => {
                json!({ "error": "bad_request", "detail": format!("not a valid request (line {}, column {})", e.line(), e.column()) })
            }
            Ok(Request::Capture(body)) => capture_answer(body, &events, &metrics).await,
            Ok(Request::Status { payment_id }) => status_answer(payment_id, &events).await,
            Ok(Request::Void { payment_id, request_id }) => void_answer(payment_id, request_id, &events).await,
        };
        if inflight_daemon::local::write_line(&mut w, &answer).await.is_err() {
            return;
        }
    }
}

async fn capture_answer(body: CaptureBody, events: &mpsc::Sender<Event>, metrics: &metrics::SlaveMetrics) -> Value {
    let taken = tokio::time::Instant::now();
    let request_id = body.request_id;
    let req = CaptureRequest {
        pan: body.pan,
        expiry: body.expiry,
        amount_minor: body.amount_minor,
        currency: body.currency,
        seat: body.seat,
        items: body
            .items
            .into_iter()
            .map(|i| LineItem { sku: i.sku, quantity: i.quantity, unit_amount_minor: i.unit_amount_minor })
            .collect(),
        entry_mode: body.entry_mode,
        emv: body.emv,
        mcc: body.mcc,
    };
    let (reply, rx) = oneshot::channel();
    if events.send(Event::Capture { req, request_id, reply }).await.is_err() {
        return json!({ "error": "shutting_down" });
    }
    match rx.await {
        Ok(a) => {
            metrics.answered(a.told(), taken.elapsed());
            a.into_inner()
        }
        Err(_) => json!({ "error": "shutting_down" }),
    }
}

async fn void_answer(payment_id: Option<String>, request_id: Option<String>, events: &mpsc::Sender<Event>) -> Value {
    let which = match (payment_id, request_id) {
        (Some(p), None) => match PaymentId::parse(&p) {
            Ok(id) => VoidOf::Payment(id),
            Err(e) => return json!({ "error": "bad_request", "detail": e.to_string() }),
        },
        (None, Some(r)) if inflight_core::terminal::request_id_ok(&r) => VoidOf::Request(r),
        (None, Some(_)) => {
            return json!({ "error": "bad_request", "detail": "request_id must be 1-64 printable ASCII characters" })
        }
        _ => return json!({ "error": "bad_request", "detail": "void needs exactly one of payment_id and request_id" }),
    };
    let (reply, rx) = oneshot::channel();
    if events.send(Event::Void { which, reply }).await.is_err() {
        return json!({ "error": "shutting_down" });
    }
    match rx.await {
        Ok(a) => a.into_inner(),
        Err(_) => json!({ "error": "shutting_down" }),
    }
}

/// Asks the running daemon (through its capture socket) to void a payment.
pub async fn void_via_socket(
    socket: &Path,
    payment_id: Option<String>,
    request_id: Option<String>,
) -> std::io::Result<Value> {
    inflight_daemon::local::request(socket, &Request::Void { payment_id, request_id }).await
}

async fn status_answer(payment_id: Option<String>, events: &mpsc::Sender<Event>) -> Value {
    let payment = match payment_id.as_deref().map(PaymentId::parse) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => return json!({ "error": "bad_request", "detail": e.to_string() }),
    };
    let (reply, rx) = oneshot::channel();
    if events.send(Event::Status { payment, reply }).await.is_err() {
        return json!({ "error": "shutting_down" });
    }
    rx.await.unwrap_or_else(|_| json!({ "error": "shutting_down" }))
}

/// Longest line `--pan -` reads from standard input, in bytes: a 19-digit card number with
/// room for surrounding whitespace and a CRLF. A longer line is refused, not truncated.
pub const PAN_LINE_BYTES_MAX: usize = 64;

/// Reads the card number for `inflight-slave capture --pan -`: one line, whitespace trimmed.
/// The number is checked by the daemon like any capture; here only the reading can fail, and
/// no error holds the input. Reading from stdin keeps the number out of `ps`,
/// `/proc/<pid>/cmdline` and shell history.
pub fn read_pan_line(input: impl std::io::BufRead) -> Result<String, SlaveError> {
    read_secret_line(
        input,
        PAN_LINE_BYTES_MAX,
        "the line on standard input is too long for a card number",
        "no card number on standard input",
    )
}

/// One line of card data from `input`, trimmed: at most `max` bytes, not empty. The errors are
/// the caller's words and never quote the input.
fn read_secret_line(
    input: impl std::io::BufRead,
    max: usize,
    too_long: &'static str,
    empty: &'static str,
) -> Result<String, SlaveError> {
    use std::io::BufRead as _;
    let mut raw = Vec::new();
    input
        .take(max as u64 + 1)
        .read_until(b'\n', &mut raw)
        .map_err(|_| SlaveError::PanInput("cannot read standard input"))?;
    if raw.len() > max {
        return Err(SlaveError::PanInput(too_long));
    }
    let line = String::from_utf8(raw).map_err(|_| SlaveError::PanInput("standard input is not text"))?;
    match line.trim() {
        "" => Err(SlaveError::PanInput(empty)),
        value => Ok(value.to_owned()),
    }
}

/// Reads chip data (TLV as hexadecimal) from one line of `input`: `--emv -`, after the card
/// number's line when that is read from standard input too. The daemon validates it.
pub fn read_emv_line(input: impl std::io::BufRead) -> Result<String, SlaveError> {
    read_secret_line(
        input,
        EMV_LINE_BYTES_MAX,
        "the chip data line on standard input is too long",
        "no chip data on standard input",
    )
}

/// Longest line `--emv -` reads: the largest chip data as hex, with room for white space.
const EMV_LINE_BYTES_MAX: usize = 2 * inflight_wire::EMV_TLV_BYTES_MAX + 16;

/// Asks the running daemon (through its capture socket) to capture a payment.
pub async fn capture_via_socket(socket: &Path, body: CaptureBody) -> std::io::Result<CaptureAnswer> {
    inflight_daemon::local::request(socket, &Request::Capture(body)).await
}

/// The status JSON: from the running daemon, or read from the store when it is stopped.
pub async fn status(cfg: &SlaveConfig, payment: Option<String>) -> Result<Value, String> {
    let req = Request::Status { payment_id: payment.clone() };
    match inflight_daemon::local::request::<_, Value>(&cfg.capture_socket, &req).await {
        Ok(v) => Ok(v),
        Err(e) if !inflight_daemon::local::daemon_absent(&e) => Err(format!("the daemon did not answer: {e}")),
        Err(_) => {
            // Daemon not running: the store is not locked, read it directly.
            let store = open_store(cfg).map_err(|e| e.to_string())?;
            let v = match payment {
                Some(p) => {
                    let id = PaymentId::parse(&p).map_err(|e| e.to_string())?;
                    match store.view(id).map_err(|e| e.to_string())? {
                        Some(v) => terminal::view_json(&v),
                        None => json!({ "payment_id": p, "error": "unknown_payment" }),
                    }
                }
                None => {
                    let c = store.counts().map_err(|e| e.to_string())?;
                    json!({
                        "terminal_id": cfg.terminal_id.as_str(),
                        "daemon_running": false,
                        "master_connected": false,
                        "payments": {
                            "captured": c.captured,
                            "forwarded": c.forwarded,
                            "refused": c.refused,
                            "voided": c.voided,
                        },
                    })
                }
            };
            store.close();
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_exit_with_the_documented_codes() {
        assert_eq!(SlaveError::Store(StoreError::Io("disk".into())).exit_class().code(), inflight_daemon::EXIT_IO);
        assert_eq!(SlaveError::Net(NetError::Tls("key".into())).exit_class().code(), inflight_daemon::EXIT_UNAVAILABLE);
        let socket = SlaveError::Socket { path: "/run/s".into(), detail: "in use".into() };
        assert_eq!(socket.exit_class().code(), inflight_daemon::EXIT_UNAVAILABLE);
        assert_eq!(SlaveError::PanInput("none").exit_class().code(), inflight_daemon::EXIT_CONFIG);
    }

    #[test]
    fn the_card_number_is_one_trimmed_line_and_errors_never_hold_it() {
        let read = |b: &[u8]| read_pan_line(b);
        assert_eq!(read(b"4111111111111111\n").expect("read"), "4111111111111111");
        assert_eq!(read(b"  4111111111111111 \r\nsecond line\n").expect("read"), "4111111111111111");
        assert_eq!(read(b"4111111111111111").expect("no newline is fine"), "4111111111111111");
        for bad in [&b""[..], b"\n", b"   \n", &[b'4'; PAN_LINE_BYTES_MAX + 1], b"41111111\xff11111111\n"] {
            let e = read(bad).expect_err("refused").to_string();
            assert!(e.starts_with("--pan -: ") && !e.contains("4111"), "{e}");
        }
        let long = format!("{}4111111111111111\n", " ".repeat(PAN_LINE_BYTES_MAX));
        assert!(read(long.as_bytes()).is_err(), "a line over the bound is refused, not cut");
    }
}
