//! `inflight-issuer`: the card issuer's ground server.
//!
//! It publishes the signed BIN list of cards enrolled for in-flight payment, and authorizes the
//! consolidated batches aircraft upload: every payment decided exactly once (by payment id,
//! whatever batch carries it), every decision durable before any result is sent, a batch id
//! re-used with different content refused. Its ledger lists every decision.
//!
//! The binary (`main.rs`) only parses the command line and calls into here.

pub mod check;
pub mod config;
mod metrics;
mod server;

use std::sync::Arc;

use inflight_daemon::{DaemonError, ExitClass, Shutdown, Slots};
use inflight_net::{endpoint, tls, NetError};
use inflight_store::{AccountLine, BinListSigner, CardVault, IssuerStore, LedgerLine, StoreError};
use inflight_wire::{AuthOutcome, BinList, ReversalOutcome, GROUND_ALPN};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub use crate::config::IssuerConfig;
use crate::server::Shared;

/// Most aircraft connections at once (authenticated; handshakes are admitted apart, by
/// `inflight_net::admission`).
pub const AIRCRAFT_MAX: usize = 4096;

/// QUIC close code: the issuer serves `AIRCRAFT_MAX` connections already; retry later.
const CLOSE_BUSY: u32 = 2;
/// QUIC close code: a newer connection with the same certificate replaced this one.
const CLOSE_REPLACED: u32 = 3;

/// Connections one aircraft certificate may hold at once: its master probes the ground every
/// second on short connections while it uploads on another, and on a lossy link a probe whose
/// close was lost lingers until the idle timeout (5 s by default). A newer one past this closes
/// the oldest, which is the upload when probes linger: so this leaves room for the idle timeout's
/// worth of probes.
pub const CONNECTIONS_PER_AIRCRAFT_MAX: usize = 8;

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// The store or a key could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS material or the socket could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The programme or accounts file is invalid.
    #[error("{}", .0.join("\n"))]
    Data(Vec<String>),
    /// `metrics_listen` cannot be listened on (in use, an interface not up yet): exit 69, so a
    /// supervisor retries it (a value that does not parse is a config error, 64).
    #[error(transparent)]
    Metrics(#[from] inflight_daemon::metrics::MetricsBindError),
    /// The admin socket could not be bound.
    #[error("admin socket {path}: {detail}")]
    Socket {
        /// The socket path.
        path: std::path::PathBuf,
        /// What failed.
        detail: String,
    },
}

impl DaemonError for IssuerError {
    fn exit_class(&self) -> ExitClass {
        match self {
            IssuerError::Store(_) => ExitClass::Io,
            IssuerError::Data(_) => ExitClass::Config,
            IssuerError::Metrics(_) => ExitClass::Unavailable,
            IssuerError::Net(_) | IssuerError::Socket { .. } => ExitClass::Unavailable,
        }
    }
}

/// Opens the issuer's store.
pub fn open_store(cfg: &IssuerConfig) -> Result<IssuerStore, StoreError> {
    IssuerStore::open(&cfg.data_dir, CardVault::from_key_file(&cfg.card_key_file)?, cfg.cache_bytes)
}

/// Runs the daemon until `cancel`.
pub async fn run(cfg: IssuerConfig, cancel: CancellationToken) -> Result<(), IssuerError> {
    let (version, rules) = config::load_programme(&cfg.programme_file).map_err(IssuerError::Data)?;
    let signer = Arc::new(BinListSigner::from_hex_file(&cfg.signing_key_file)?);
    let chip_key = cfg.chip_key_file.as_deref().map(inflight_store::chip_master_key_from_file).transpose()?;
    if chip_key.is_none() {
        tracing::warn!("no chip_key_file: chip and contactless payments cannot be verified and will be declined cryptogram_invalid");
    }
    let store = Arc::new(open_store(&cfg)?);
    let metrics = metrics::IssuerMetrics::new();
    store.observe_commits(metrics.commit_observer());
    if !store.accounts_imported()? {
        let config::Accounts { accounts, lost } =
            config::load_accounts(&cfg.accounts_file).map_err(IssuerError::Data)?;
        // Cards reported lost are on the hot-card list from the start. Listed before the
        // accounts are marked imported: a crash between the two imports again on the next start
        // (listing is idempotent), never leaves lost cards unlisted.
        let (_, full) = store.add_hot_cards(&lost.iter().collect::<Vec<_>>())?;
        let _ = store.import_accounts(&accounts)?;
        store.durable(store.latest()).await?;
        if full > 0 {
            tracing::warn!(not_listed = full, "hot-card list full: some lost cards are not listed");
        }
        tracing::info!(accounts = accounts.len(), lost = lost.len(), "accounts imported");
    }
    let programme = windowed(
        BinList { version, issuer: cfg.issuer_name.clone(), valid_from_unix_ms: 0, valid_until_unix_ms: 0, rules },
        cfg.bin_list_validity,
        inflight_daemon::unix_ms_now(),
    );
    let signed = std::sync::Mutex::new(signer.sign(&programme));
    metrics.bin_list(programme.version, programme.valid_until_unix_ms);
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(inflight_daemon::metrics::bind(addr).await?),
        None => None,
    };
    let ep = endpoint::server_with(cfg.listen, aircraft_server_config(&cfg)?)?;
    let admin = inflight_daemon::local::bind(&cfg.admin_socket, cfg.admin_access.clone())
        .await
        .map_err(|e| IssuerError::Socket { path: cfg.admin_socket.clone(), detail: e.to_string() })?;
    tracing::info!(
        issuer = %cfg.issuer_name,
        version = env!("CARGO_PKG_VERSION"),
        listen = %ep.local_addr().map_or_else(|_| cfg.listen.to_string(), |a| a.to_string()),
        bin_list_version = programme.version,
        bins = programme.rules.len(),
        metrics = %metrics_listener.as_ref().and_then(|l| l.local_addr().ok()).map_or_else(|| "off".into(), |a| a.to_string()),
        "inflight-issuer running"
    );
    // Every socket is bound: a `Type=notify` unit is started now (nothing without systemd).
    inflight_daemon::runner::notify_ready();
    let validity = cfg.bin_list_validity;
    let shared = Arc::new(Shared {
        cfg,
        store: store.clone(),
        programme,
        chip_key,
        signed,
        items_budget: tokio::sync::Semaphore::new(server::ITEMS_IN_MEMORY_MAX),
        metrics: metrics.clone(),
        signer: signer.clone(),
    });
    let shutdown = Shutdown::new(cancel);
    // Renewal: the same version signed again with a fresh window, every quarter of the validity,
    // so a fleet that sees the ground never holds an expired list.
    {
        let (shared, stop) = (shared.clone(), shutdown.clone());
        shutdown.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(validity / 4) => {}
                }
                let list = windowed(shared.programme.clone(), validity, inflight_daemon::unix_ms_now());
                let renewed = signer.sign(&list);
                *shared.signed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = renewed;
                shared.metrics.bin_list(list.version, list.valid_until_unix_ms);
                tracing::info!(
                    version = list.version,
                    valid_until_unix_ms = list.valid_until_unix_ms,
                    "BIN list renewed"
                );
            }
        });
    }
    if let Some(l) = metrics_listener {
        let shared = shared.clone();
        shutdown.spawn(inflight_daemon::metrics::serve(l, shutdown.clone(), move || {
            let shared = shared.clone();
            async move { shared.metrics.scrape(&shared.cfg) }
        }));
    }
    let slots = Slots::new(AIRCRAFT_MAX);
    {
        let store = store.clone();
        // No crew ops: ledger and accounts only read.
        shutdown.spawn(inflight_daemon::local::serve(admin, &[], shutdown.clone(), move |req| {
            let store = store.clone();
            async move { admin_answer(&store, req) }
        }));
    }
    let gate = inflight_net::admission::Gate::new(inflight_net::admission::Limits::GROUND);
    let peers = inflight_net::admission::PeerConnections::new(CONNECTIONS_PER_AIRCRAFT_MAX);
    {
        let c = shared.cfg.clone();
        let files = aircraft_tls_files(&c).paths();
        let (live, crl) = (peers.clone(), c.crl_file.clone());
        // Revoked certificates are refused at registration from the start, too.
        live.revoke_from(crl.as_deref(), CLOSE_REPLACED.into());
        let build = move || aircraft_server_config(&c);
        let installed = move || live.revoke_from(crl.as_deref(), CLOSE_REPLACED.into());
        shutdown.spawn(inflight_net::reload::watch_server(
            ep.clone(),
            files,
            build,
            installed,
            "aircraft",
            tls_triggers(),
            shutdown.token(),
        ));
    }
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            i = ep.accept() => match i { Some(i) => i, None => break },
        };
        let Some((incoming, slot)) = gate.admit(incoming, "aircraft") else {
            metrics.handshake_refused(metrics::Refusal::NotAdmitted);
            continue;
        };
        let (shared, slots, peers, gate) = (shared.clone(), slots.clone(), peers.clone(), gate.clone());
        let cancel = shutdown.token();
        shutdown.spawn(async move {
            let conn = match inflight_net::admission::handshake(incoming, slot, shared.cfg.timers.connect).await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::info!(error = %e, "aircraft handshake failed");
                    shared.metrics.handshake_refused(metrics::Refusal::Handshake);
                    return;
                }
            };
            gate.authenticated(conn.remote_address().ip());
            // Only authenticated connections count against the limit.
            let Some(_slot) = slots.try_take() else {
                tracing::warn!(remote = %conn.remote_address(), max = AIRCRAFT_MAX, "aircraft limit reached; refusing connection");
                conn.close(CLOSE_BUSY.into(), b"aircraft limit reached");
                shared.metrics.handshake_refused(metrics::Refusal::AircraftLimit);
                return;
            };
            let _registered = match peers.register(&conn, CLOSE_REPLACED.into()) {
                Ok(r) => r,
                Err(e) => {
                    conn.close(1u32.into(), e.to_string().as_bytes());
                    shared.metrics.handshake_refused(metrics::Refusal::Identity);
                    return;
                }
            };
            server::serve(shared, conn, cancel).await
        });
    }
    // Sessions end between exchanges (a batch begun is finished and answered within the grace),
    // then the endpoint, then the store.
    tracing::info!("shutting down: finishing aircraft sessions");
    shutdown.drain().await;
    ep.close(0u32.into(), b"issuer shutting down");
    store.close();
    let _ = std::fs::remove_file(&shared.cfg.admin_socket);
    tracing::info!("inflight-issuer stopped");
    Ok(())
}

/// The aircraft side's QUIC configuration, from the files (built again when they change).
fn aircraft_server_config(cfg: &IssuerConfig) -> Result<inflight_net::ServerConfig, NetError> {
    endpoint::server_config(aircraft_tls_files(cfg).load(tls::PeerKind::Aircraft, GROUND_ALPN)?, cfg.timers)
}

fn aircraft_tls_files(cfg: &IssuerConfig) -> tls::ServerFiles<'_> {
    tls::ServerFiles { ca: &cfg.ca_file, crl: cfg.crl_file.as_deref(), cert: &cfg.cert_file, key: &cfg.key_file }
}

/// `list` with a validity window starting now (less an allowance for clocks that run behind the
/// issuer's) and lasting `validity`.
fn windowed(list: BinList, validity: std::time::Duration, now_unix_ms: u64) -> BinList {
    BinList {
        valid_from_unix_ms: now_unix_ms.saturating_sub(3_600_000),
        valid_until_unix_ms: now_unix_ms + validity.as_millis() as u64,
        ..list
    }
}

/// One request on the issuer's admin socket (README "Admin API"): `{"op":"ledger"}` or
/// `{"op":"accounts"}`. Both only read. Field names are a stable interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Every decided payment.
    Ledger,
    /// Every account, with its opening and available amounts.
    Accounts,
}

impl AdminRequest {
    /// The op's name, which is also the key of the answer's array.
    pub fn op(self) -> &'static str {
        match self {
            AdminRequest::Ledger => "ledger",
            AdminRequest::Accounts => "accounts",
        }
    }
}

/// The ops, for a `bad_request` answer.
const ADMIN_OPS: &str = "expected {\"op\":\"ledger\"} or {\"op\":\"accounts\"}";

fn admin_answer(store: &IssuerStore, req: Value) -> Value {
    let req = match inflight_daemon::local::parse_request::<AdminRequest>(req, ADMIN_OPS) {
        Ok(r) => r,
        Err(bad_request) => return bad_request,
    };
    let lines = match req {
        AdminRequest::Ledger => store.ledger().map(|l| l.iter().map(ledger_json).collect::<Vec<_>>()),
        AdminRequest::Accounts => store.accounts().map(|l| l.iter().map(account_json).collect::<Vec<_>>()),
    };
    match lines {
        Ok(lines) => json!({ req.op(): lines }),
        Err(e) => json!({ "error": "storage_error", "detail": e.to_string() }),
    }
}

/// One ledger line as JSON (DESIGN.md §8 field names).
pub fn ledger_json(l: &LedgerLine) -> Value {
    let mut v = json!({
        "payment_id": l.payment_id.to_string(),
        "batch_id": l.batch_id.to_string(),
        "card": l.card.to_string(),
        "amount_minor": l.amount.amount_minor(),
        "currency": l.amount.currency().as_str(),
        // Always present: a checker can tell "on time" from a field it forgot to read.
        "late": l.late,
    });
    match &l.outcome {
        AuthOutcome::Approved { auth_code } => {
            v["outcome"] = json!("approved");
            v["auth_code"] = json!(auth_code);
        }
        AuthOutcome::Declined(r) => {
            v["outcome"] = json!("declined");
            v["reason"] = json!(r.as_str());
        }
    }
    // A sale app voided it after it was sealed: an approval is then shown `reversed` (its amount
    // released to the account), a decline keeps its outcome.
    match l.reversed {
        Some(ReversalOutcome::Reversed { released_minor }) => {
            v["outcome"] = json!("reversed");
            v["released_minor"] = json!(released_minor);
            v["reversed"] = json!(true);
        }
        Some(_) => v["reversed"] = json!(true),
        None => {}
    }
    v
}

/// One account as JSON (DESIGN.md §8 field names).
pub fn account_json(a: &AccountLine) -> Value {
    json!({
        "card": a.card.to_string(),
        "currency": a.currency.as_str(),
        "opening_minor": a.opening_minor,
        "available_minor": a.available_minor,
    })
}

/// The ledger: from the running daemon, or read from the store when it is stopped.
pub async fn ledger(cfg: &IssuerConfig) -> Result<Vec<Value>, String> {
    lines(cfg, AdminRequest::Ledger, |store| Ok(store.ledger()?.iter().map(ledger_json).collect())).await
}

/// Most bytes of a manifest file `inflight-issuer reconcile` reads: a manifest of
/// `MANIFEST_PAYMENTS_MAX` payments, pretty-printed, is under this.
pub const MANIFEST_FILE_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Why `inflight-issuer reconcile` could not compare (each with its exit code).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The manifest file cannot be read or is not a manifest (exit 64).
    #[error("--manifest {path}: {detail}")]
    BadManifest {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The ledger could not be read (exit 69).
    #[error("{0}")]
    Ledger(String),
}

impl ReconcileError {
    /// The documented exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            ReconcileError::BadManifest { .. } => inflight_daemon::EXIT_CONFIG,
            ReconcileError::Ledger(_) => inflight_daemon::EXIT_UNAVAILABLE,
        }
    }
}

/// The issuer's side of a closed flight: the aircraft's manifest (`inflight-master close-flight`,
/// as a file) against what this issuer decided (its ledger, from the running daemon or its
/// store), scoped to the batches that carried the flight. Returns the answer (JSON: `flight`,
/// `chain`, `payments`, `decisions`, `mismatches`); mismatches are listed, never fixed.
pub async fn reconcile(cfg: &IssuerConfig, manifest_file: &std::path::Path) -> Result<Value, ReconcileError> {
    let bad = |detail: String| ReconcileError::BadManifest { path: manifest_file.display().to_string(), detail };
    let size = std::fs::metadata(manifest_file).map_err(|e| bad(e.to_string()))?.len();
    if size > MANIFEST_FILE_BYTES_MAX {
        return Err(bad(format!("{size} bytes, more than a manifest holds ({MANIFEST_FILE_BYTES_MAX})")));
    }
    let text = std::fs::read(manifest_file).map_err(|e| bad(e.to_string()))?;
    let m = parse_manifest(&text).map_err(bad)?;
    let ledger = ledger(cfg).await.map_err(ReconcileError::Ledger)?;
    reconcile_with(&m, &ledger).map_err(ReconcileError::Ledger)
}

/// A manifest's JSON, checked for its version.
pub fn parse_manifest(text: &[u8]) -> Result<inflight_core::manifest::Manifest, String> {
    use inflight_core::manifest::{self, Manifest};
    let m: Manifest = serde_json::from_slice(text).map_err(|e| format!("not a flight manifest: {e}"))?;
    if m.manifest_version != manifest::MANIFEST_VERSION {
        return Err(format!(
            "manifest_version {} (this issuer reads {})",
            m.manifest_version,
            manifest::MANIFEST_VERSION
        ));
    }
    Ok(m)
}

/// The issuer's answer to manifest `m` given its ledger (`ledger_json` lines): `flight`, `chain`,
/// `payments`, `decisions`, `mismatches` (listed, never fixed). The command line's
/// `reconcile` and the ground link's acknowledgement are this one function.
pub fn reconcile_with(m: &inflight_core::manifest::Manifest, ledger: &[Value]) -> Result<Value, String> {
    use inflight_core::manifest;
    let ledger: Vec<manifest::LedgerDecision> = ledger
        .iter()
        .map(ledger_decision)
        .collect::<Option<_>>()
        .ok_or_else(|| "a ledger line this version cannot read".to_owned())?;
    let scope = manifest::issuer_scope(m, &ledger);
    let mismatches = manifest::reconcile(m, &scope);
    Ok(json!({
        "flight": m.flight,
        "chain": m.chain,
        "payments": m.payments.len(),
        "decisions": scope.len(),
        "mismatches": mismatches,
    }))
}

/// A ledger line (`ledger_json`) as a decision to reconcile.
fn ledger_decision(l: &Value) -> Option<inflight_core::manifest::LedgerDecision> {
    use inflight_core::manifest::{IssuerDecision, IssuerOutcome, LedgerDecision};
    Some(LedgerDecision {
        batch: l["batch_id"].as_str()?.to_owned(),
        decision: IssuerDecision {
            id: inflight_wire::PaymentId::parse(l["payment_id"].as_str()?).ok()?,
            currency: inflight_wire::Currency::parse(l["currency"].as_str()?).ok()?,
            amount_minor: l["amount_minor"].as_u64()?,
            outcome: match l["outcome"].as_str()? {
                "approved" => IssuerOutcome::Approved,
                "declined" => IssuerOutcome::Declined,
                "reversed" => IssuerOutcome::Reversed,
                _ => return None,
            },
        },
    })
}

/// The accounts: from the running daemon, or read from the store when it is stopped.
pub async fn accounts(cfg: &IssuerConfig) -> Result<Vec<Value>, String> {
    lines(cfg, AdminRequest::Accounts, |store| Ok(store.accounts()?.iter().map(account_json).collect())).await
}

/// Asks the running daemon for `req` (its answer holds an array under the op's name), or, when
/// no daemon answers, opens the store and reads it with `read`.
async fn lines(
    cfg: &IssuerConfig,
    req: AdminRequest,
    read: impl FnOnce(&IssuerStore) -> Result<Vec<Value>, StoreError>,
) -> Result<Vec<Value>, String> {
    let op = req.op();
    match inflight_daemon::local::request::<_, Value>(&cfg.admin_socket, &req).await {
        Ok(v) => v.get(op).and_then(Value::as_array).cloned().ok_or_else(|| format!("unexpected answer: {v}")),
        Err(e) if !inflight_daemon::local::daemon_absent(&e) => Err(format!("the daemon did not answer: {e}")),
        Err(_) => {
            let store = open_store(cfg).map_err(|e| e.to_string())?;
            let lines = read(&store).map_err(|e| e.to_string());
            store.close();
            lines
        }
    }
}

/// When the server's TLS files are looked at: every second and on each SIGHUP.
fn tls_triggers() -> inflight_net::reload::Triggers {
    let mut triggers = inflight_net::reload::Triggers::new(inflight_daemon::runner::on_hangup());
    if let Some(poll) = inflight_daemon::tls_reload_poll_hook() {
        triggers.poll = poll;
    }
    triggers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_exit_with_the_documented_codes() {
        let code = |e: IssuerError| e.exit_class().code();
        assert_eq!(code(IssuerError::Store(StoreError::Io("disk".into()))), inflight_daemon::EXIT_IO);
        assert_eq!(code(IssuerError::Data(vec!["bin #1: bad prefix".into()])), inflight_daemon::EXIT_CONFIG);
        assert_eq!(code(IssuerError::Net(NetError::Tls("key".into()))), inflight_daemon::EXIT_UNAVAILABLE);
        let socket = IssuerError::Socket { path: "/run/i".into(), detail: "in use".into() };
        assert_eq!(code(socket), inflight_daemon::EXIT_UNAVAILABLE);
    }

    fn parse(v: Value) -> Result<AdminRequest, Value> {
        inflight_daemon::local::parse_request(v, ADMIN_OPS)
    }

    #[test]
    fn admin_requests_keep_their_wire_format() {
        assert_eq!(parse(json!({"op": "ledger"})), Ok(AdminRequest::Ledger));
        assert_eq!(parse(json!({"op": "accounts"})), Ok(AdminRequest::Accounts));
        // Fields an older or newer client adds are ignored, as before.
        assert_eq!(parse(json!({"op": "ledger", "since": 3})), Ok(AdminRequest::Ledger));
        assert_eq!(serde_json::to_string(&AdminRequest::Ledger).expect("json"), r#"{"op":"ledger"}"#);
        assert_eq!(serde_json::to_string(&AdminRequest::Accounts).expect("json"), r#"{"op":"accounts"}"#);
    }

    #[test]
    fn unknown_and_malformed_admin_requests_are_bad_requests() {
        for bad in [json!({"op": "drop"}), json!({"op": 3}), json!({}), json!([1]), json!("ledger"), Value::Null] {
            let answer = parse(bad.clone()).expect_err("refused");
            assert_eq!(answer["error"], "bad_request", "{bad}: {answer}");
            let detail = answer["detail"].as_str().expect("a detail");
            assert!(detail.contains(ADMIN_OPS), "{bad}: the answer names the ops: {detail}");
        }
        let unknown = parse(json!({"op": "drop"})).expect_err("refused");
        assert!(unknown["detail"].as_str().is_some_and(|d| d.contains("unknown variant `drop`")), "{unknown}");
    }
}
