//! `inflight-master`: the aircraft server daemon.
//!
//! It accepts terminals over QUIC with mutual TLS (the terminal id comes from the certificate),
//! stores every submitted payment exactly once in sled, and acks each by id only after it is
//! durable. It watches the ground link; when it is up it fetches the issuer's signed BIN list
//! (pushed to every terminal) and uploads one consolidated batch of everything pending, re-sent
//! identically after any failure. Results are stored and pushed to their terminals; card data is
//! erased once a terminal confirms its result.
//!
//! The binary (`main.rs`) only parses the command line and calls into here.

mod aircraft;
pub mod check;
pub mod config;
mod conn;
mod ground;
mod metrics;
pub mod report;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use inflight_core::link::LinkOverride;
use inflight_core::manifest::{self, CloseError, Manifest, ManifestKey};
use inflight_daemon::{DaemonError, ExitClass, Shutdown, Slots};
use inflight_net::{admission, endpoint, tls, NetError};
use inflight_store::{CardVault, MasterStore, StoreError};
use inflight_wire::{AuthOutcome, ErrorCode, PaymentId, Verdict, GROUND_ALPN, TERMINAL_ALPN};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::aircraft::{Event, EVENTS_MAX};
pub use crate::config::MasterConfig;
use crate::ground::LinkState;

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS material or the socket could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
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

impl DaemonError for MasterError {
    fn exit_class(&self) -> ExitClass {
        match self {
            MasterError::Store(_) => ExitClass::Io,
            MasterError::Net(_) | MasterError::Socket { .. } => ExitClass::Unavailable,
            MasterError::Metrics(_) => ExitClass::Unavailable,
        }
    }
}

/// How long, once the endpoints are closed, the master waits for the terminals to see the close
/// (bounded so that shutdown stays prompt).
const ENDPOINT_IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a newly authenticated terminal waits for a slot when all are taken: long enough for
/// the stale connection it just replaced to give its slot back.
const REPLACED_SLOT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Opens the master's store.
pub fn open_store(cfg: &MasterConfig) -> Result<MasterStore, StoreError> {
    let vault = CardVault::from_key_file(&cfg.card_key_file)?;
    MasterStore::open(&cfg.data_dir, vault, cfg.cache_bytes)
}

/// Runs the daemon until `cancel`.
pub async fn run(cfg: MasterConfig, cancel: CancellationToken) -> Result<(), MasterError> {
    let cfg = Arc::new(cfg);
    let store = Arc::new(open_store(&cfg)?);
    let metrics = metrics::MasterMetrics::new();
    store.observe_commits(metrics.commit_observer());
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(inflight_daemon::metrics::bind(addr).await?),
        None => None,
    };
    let (actor, writer) = aircraft::restore(
        store.clone(),
        cfg.flight_id.clone(),
        &cfg.ground.issuer_public_key,
        cfg.payment_age_flag,
        cfg.deadline,
        cfg.limits(),
        metrics.clone(),
    )?;
    let mode = store.setting("link_override")?.and_then(|m| LinkOverride::parse(&m).ok()).unwrap_or_default();
    let link = LinkState::new(&cfg, mode, metrics.clone());
    let ground_tls = {
        let c = cfg.clone();
        let build: inflight_net::reload::BuildClient =
            Box::new(move || endpoint::client_config(ground_tls_config(&c)?, c.ground.timers));
        let files = [
            Some(&cfg.ground.issuer_ca_file),
            cfg.ground.issuer_crl_file.as_ref(),
            Some(&cfg.cert_file),
            Some(&cfg.key_file),
        ];
        Arc::new(inflight_net::reload::ClientTls::new(files.into_iter().flatten().cloned().collect(), build)?)
    };
    let ep = endpoint::server_with(cfg.listen, terminal_server_config(&cfg)?)?;
    let bind = if cfg.ground.issuer_addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let ground_ep = ground::GroundEndpoint {
        ep: endpoint::client_bare(bind.parse().expect("literal socket address"))?,
        tls: ground_tls,
    };
    let admin = inflight_daemon::local::bind(&cfg.admin_socket, cfg.admin_access.clone())
        .await
        .map_err(|e| MasterError::Socket { path: cfg.admin_socket.clone(), detail: e.to_string() })?;
    tracing::info!(
        aircraft = %cfg.aircraft_id,
        version = env!("CARGO_PKG_VERSION"),
        listen = %ep.local_addr().map_or_else(|_| cfg.listen.to_string(), |a| a.to_string()),
        admin = %cfg.admin_socket.display(),
        issuer = %cfg.ground.issuer_addr,
        link_override = mode.as_str(),
        metrics = %metrics_listener.as_ref().and_then(|l| l.local_addr().ok()).map_or_else(|| "off".into(), |a| a.to_string()),
        "inflight-master running"
    );
    // Every socket is bound: a `Type=notify` unit is started now (nothing without systemd).
    inflight_daemon::runner::notify_ready();

    let shutdown = Shutdown::new(cancel);
    let (events_tx, events_rx) = mpsc::channel(EVENTS_MAX);
    let actor_cancel = CancellationToken::new();
    let actor_task = tokio::spawn(actor.run(events_rx, actor_cancel.clone()));
    let writer_task = tokio::spawn(aircraft::run_writer(store.clone(), writer));
    shutdown.spawn(ground::probe_loop(cfg.clone(), ground_ep.clone(), link.clone(), shutdown.token()));
    shutdown.spawn(ground::upload_loop(
        cfg.clone(),
        ground_ep.clone(),
        link.clone(),
        store.clone(),
        events_tx.clone(),
        metrics.clone(),
        shutdown.token(),
    ));
    if let Some(listener) = metrics_listener {
        let (cfg, events, link, metrics) = (cfg.clone(), events_tx.clone(), link.clone(), metrics.clone());
        shutdown.spawn(inflight_daemon::metrics::serve(listener, shutdown.clone(), move || {
            let (cfg, events, link, metrics) = (cfg.clone(), events.clone(), link.clone(), metrics.clone());
            async move { metrics.scrape(&cfg, &events, &link).await }
        }));
    }
    let connected = Arc::new(AtomicUsize::new(0));
    // Only authenticated connections take a terminal slot; handshakes are admitted by `gate`.
    let slots = Slots::new(cfg.terminals_max);
    let gate = admission::Gate::new(admission::Limits::TERMINALS);
    // One connection per terminal certificate: a newer one closes the older.
    let peers = admission::PeerConnections::new(1);
    {
        let c = cfg.clone();
        let files = terminal_tls_files(&cfg).paths();
        let build = move || terminal_server_config(&c);
        let (live, crl) = (peers.clone(), cfg.crl_file.clone());
        // Revoked certificates are refused at registration from the start, too.
        live.revoke_from(crl.as_deref(), ErrorCode::Replaced.as_u32().into());
        let installed = move || live.revoke_from(crl.as_deref(), ErrorCode::Replaced.as_u32().into());
        shutdown.spawn(inflight_net::reload::watch_server(
            ep.clone(),
            files,
            build,
            installed,
            "terminals",
            tls_triggers(),
            shutdown.token(),
        ));
    }
    {
        let admin_ctx = Admin {
            events: events_tx.clone(),
            connected: connected.clone(),
            store: store.clone(),
            link: link.clone(),
            cfg: cfg.clone(),
            reporting: Arc::default(),
        };
        shutdown.spawn(inflight_daemon::local::serve(admin, CREW_OPS, shutdown.clone(), move |req| {
            let ctx = admin_ctx.clone();
            async move { admin_answer(&ctx, req).await }
        }));
    }
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            i = ep.accept() => match i { Some(i) => i, None => break },
        };
        let Some((incoming, slot)) = gate.admit(incoming, "terminal") else {
            metrics.handshake_refused(metrics::Refusal::NotAdmitted);
            continue;
        };
        let (cfg, events_tx, connected, cancel) = (cfg.clone(), events_tx.clone(), connected.clone(), shutdown.token());
        let metrics = metrics.clone();
        let (slots, peers, gate) = (slots.clone(), peers.clone(), gate.clone());
        shutdown.spawn(async move {
            let conn = match admission::handshake(incoming, slot, cfg.timers.connect).await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::info!(error = %e, "terminal handshake failed");
                    metrics.handshake_refused(metrics::Refusal::Handshake);
                    return;
                }
            };
            gate.authenticated(conn.remote_address().ip());
            // Registered first: a terminal reconnecting after a silent link loss replaces its
            // stale connection, which gives its slot back, before it asks for one.
            let registered = match peers.register(&conn, ErrorCode::Replaced.as_u32().into()) {
                Ok(r) => r,
                Err(e) => {
                    conn.close(ErrorCode::WrongTerminal.as_u32().into(), e.to_string().as_bytes());
                    metrics.handshake_refused(metrics::Refusal::Identity);
                    return;
                }
            };
            let Some(_slot) = slots.take_within(REPLACED_SLOT_WAIT).await else {
                tracing::warn!(remote = %conn.remote_address(), max = cfg.terminals_max, "terminal limit reached; refusing connection");
                conn.close(ErrorCode::Busy.as_u32().into(), b"terminal limit reached");
                metrics.handshake_refused(metrics::Refusal::TerminalLimit);
                return;
            };
            let _registered = registered;
            conn::serve(cfg, conn, events_tx, connected, cancel).await
        });
    }
    tracing::info!("shutting down: closing terminal connections and the ground link");
    shutdown.drain().await;
    drop(events_tx);
    // Acks already decided are flushed before the actor stops; then the store closes.
    actor_cancel.cancel();
    let _ = actor_task.await;
    let _ = writer_task.await;
    ep.close(0u32.into(), b"master shutting down");
    ground_ep.ep.close(0u32.into(), b"master shutting down");
    let _ = tokio::time::timeout(ENDPOINT_IDLE_WAIT, ep.wait_idle()).await;
    store.close();
    let _ = std::fs::remove_file(&cfg.admin_socket);
    tracing::info!("inflight-master stopped");
    Ok(())
}

/// The terminal side's QUIC configuration, from the files (built again when they change).
fn terminal_server_config(cfg: &MasterConfig) -> Result<inflight_net::ServerConfig, NetError> {
    endpoint::server_config(terminal_tls_files(cfg).load(tls::PeerKind::Terminal, TERMINAL_ALPN)?, cfg.timers)
}

/// The ground side's TLS configuration (towards the issuer), from the files (read again before
/// a connection when they changed).
fn ground_tls_config(c: &MasterConfig) -> Result<tls::ClientConfig, NetError> {
    tls::client_config_with_crls(
        tls::Identity::from_pem_files(&c.cert_file, &c.key_file)?,
        tls::roots(&c.ground.issuer_ca_file)?,
        c.ground.issuer_crl_file.as_deref().map(tls::crls).transpose()?.unwrap_or_default(),
        GROUND_ALPN,
    )
}

fn terminal_tls_files(cfg: &MasterConfig) -> tls::ServerFiles<'_> {
    tls::ServerFiles { ca: &cfg.ca_file, crl: cfg.crl_file.as_deref(), cert: &cfg.cert_file, key: &cfg.key_file }
}

/// What the admin API reaches.
#[derive(Clone)]
struct Admin {
    events: mpsc::Sender<Event>,
    connected: Arc<AtomicUsize>,
    store: Arc<MasterStore>,
    link: LinkState,
    /// The configured flight (before the crew sets one) and the age flag, for reports.
    cfg: Arc<MasterConfig>,
    /// A report is being built: one at a time (each is a full scan of the store; found by
    /// review: 64 at once could exhaust the master's memory mid-flight).
    reporting: Arc<std::sync::atomic::AtomicBool>,
}

/// Admin ops that change how the master behaves: only the crew lists may use them
/// (`[admin] crew_uids`, `crew_gids`); status and reports need the allowed lists.
pub const CREW_OPS: &[&str] = &["link", "flight"];

/// One request on the master's admin socket (README "Admin API"). Field names are a stable
/// interface; fields may be added, never renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    /// The master's status, or one payment's.
    Status {
        /// A payment id (32 hex digits); absent for the master's summary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment_id: Option<String>,
    },
    /// Crew op: the ground-link override, `auto`, `up` or `down`.
    Link {
        /// `auto`, `up` or `down`.
        mode: String,
    },
    /// Crew op: the flight stamped on new payments.
    Flight {
        /// 1-16 letters, digits and '-'.
        flight: String,
    },
    /// The crew's flight report (JSON form), of `flight` or of the current flight.
    Report {
        /// 1-16 letters, digits and '-'; absent for the current flight.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flight: Option<String>,
    },
    /// The closing manifest of `flight` (or of the current flight); refused with `pending`
    /// while payments of it are pending, unless `force`. With `send`, the manifest is queued
    /// for the issuer (durably) and sent over the ground link until it acknowledges it; without,
    /// it changes nothing.
    CloseFlight {
        /// 1-16 letters, digits and '-'; absent for the current flight.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flight: Option<String>,
        /// Close even with payments pending (they are listed as pending).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
        /// Queue the manifest for the issuer's acknowledgement (refused with `force`: a
        /// manifest with payments pending is not the flight's last word).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        send: bool,
    },
}

impl AdminRequest {
    /// The op's name on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            AdminRequest::Status { .. } => "status",
            AdminRequest::Link { .. } => "link",
            AdminRequest::Flight { .. } => "flight",
            AdminRequest::Report { .. } => "report",
            AdminRequest::CloseFlight { .. } => "close_flight",
        }
    }
}

/// The ops, for a `bad_request` answer.
const ADMIN_OPS: &str =
    "ops: status [payment_id], link {mode}, flight {flight}, report [flight], close_flight [flight] [force] [send]";

async fn admin_answer(ctx: &Admin, req: Value) -> Value {
    let req = match inflight_daemon::local::parse_request::<AdminRequest>(req, ADMIN_OPS) {
        Ok(r) => r,
        Err(bad_request) => return bad_request,
    };
    match req {
        AdminRequest::Status { payment_id: Some(id) } => payment_json(&ctx.store, &ctx.cfg.deadline, &id),
        AdminRequest::Status { payment_id: None } => {
            let (reply, rx) = oneshot::channel();
            if ctx.events.send(Event::Status { reply }).await.is_err() {
                return json!({ "error": "shutting_down" });
            }
            match rx.await {
                Ok(snap) => {
                    let mut v = status_json(
                        &snap.counts,
                        snap.bin_list_version,
                        snap.terminals.max(ctx.connected.load(Ordering::Relaxed)),
                        true,
                    );
                    scan_json(&mut v, &snap.scan);
                    v["hot_list_version"] = json!(snap.hot_list.map(|h| h.0));
                    v["hot_list_entries"] = json!(snap.hot_list.map(|h| h.1));
                    v["payments"]["reversal_pending"] = json!(snap.reversals.0);
                    v["payments"]["reversed"] = json!(snap.reversals.1);
                    v["link"] = json!(if ctx.link.is_up() { "up" } else { "down" });
                    v["link_override"] = json!(ctx.link.mode().as_str());
                    v
                }
                Err(_) => json!({ "error": "shutting_down" }),
            }
        }
        AdminRequest::Link { mode } => match LinkOverride::parse(&mode) {
            Ok(mode) => match ctx.store.set_setting("link_override", mode.as_str()) {
                Ok(t) => match ctx.store.durable(t).await {
                    Ok(()) => {
                        ctx.link.set_override(mode);
                        json!({ "link_override": mode.as_str(), "link": if ctx.link.is_up() { "up" } else { "down" } })
                    }
                    Err(e) => json!({ "error": "storage_error", "detail": e.to_string() }),
                },
                Err(e) => json!({ "error": "storage_error", "detail": e.to_string() }),
            },
            Err(e) => json!({ "error": "bad_request", "detail": e }),
        },
        AdminRequest::Flight { flight } => match config::parse_flight_id(&flight) {
            Ok(flight) => {
                let (reply, rx) = oneshot::channel();
                if ctx.events.send(Event::SetFlight { flight: flight.clone(), reply }).await.is_err() {
                    return json!({ "error": "shutting_down" });
                }
                match rx.await {
                    Ok(Ok(())) => json!({ "flight": flight }),
                    Ok(Err(e)) => json!({ "error": "storage_error", "detail": e.to_string() }),
                    Err(_) => json!({ "error": "shutting_down" }),
                }
            }
            Err(e) => json!({ "error": "bad_request", "detail": e }),
        },
        AdminRequest::Report { flight } => {
            if let Some(Err(e)) = flight.as_deref().map(config::parse_flight_id) {
                return json!({ "error": "bad_request", "detail": format!("flight {e}") });
            }
            if ctx.reporting.swap(true, Ordering::AcqRel) {
                return json!({ "error": "busy", "detail": "another report is being built; ask again" });
            }
            let (store, cfg, reporting) = (ctx.store.clone(), ctx.cfg.clone(), ctx.reporting.clone());
            // A full scan of the store: off the async workers.
            let built = tokio::task::spawn_blocking(move || {
                let r = flight_report(&store, &cfg, flight.as_deref());
                reporting.store(false, Ordering::Release);
                r
            })
            .await;
            match built {
                Ok(Ok(r)) => {
                    serde_json::to_value(&r).unwrap_or_else(|e| json!({ "error": "internal", "detail": e.to_string() }))
                }
                Ok(Err(e)) => json!({ "error": "storage_error", "detail": e.to_string() }),
                Err(e) => json!({ "error": "internal", "detail": e.to_string() }),
            }
        }
        AdminRequest::CloseFlight { flight, force, send } => {
            if let Some(Err(e)) = flight.as_deref().map(config::parse_flight_id) {
                return json!({ "error": "bad_request", "detail": format!("flight {e}") });
            }
            if force && send {
                return json!({ "error": "bad_request", "detail": "send with force: a manifest with payments pending is not sent to the issuer" });
            }
            // The same full scan as a report: under the same one-at-a-time guard.
            if ctx.reporting.swap(true, Ordering::AcqRel) {
                return json!({ "error": "busy", "detail": "a report or manifest is being built; ask again" });
            }
            let (store, cfg, reporting) = (ctx.store.clone(), ctx.cfg.clone(), ctx.reporting.clone());
            let built = tokio::task::spawn_blocking(move || {
                let r = flight_manifest(&store, &cfg, flight.as_deref(), force)
                    .and_then(|m| closing_answer(&store, &cfg, &m, send));
                reporting.store(false, Ordering::Release);
                r
            })
            .await;
            match built {
                Ok(Ok((answer, ticket))) => {
                    if let Some(t) = ticket {
                        // Queued only once durable: the ground session sends what the store holds.
                        if let Err(e) = ctx.store.durable(t).await {
                            return json!({ "error": "storage_error", "detail": e.to_string() });
                        }
                    }
                    answer
                }
                Ok(Err(ReportError::NotClosable(e))) => close_error_json(&e),
                Ok(Err(e)) => json!({ "error": "storage_error", "detail": e.to_string() }),
                Err(e) => json!({ "error": "internal", "detail": e.to_string() }),
            }
        }
    }
}

/// The answer to `close-flight`: the manifest, with `queued_for_issuer` (sent over the ground
/// link until acknowledged) and `issuer_ack` (the issuer's acknowledgement, once it came: its
/// findings and whether its signature verifies with the issuer's key). With `send`, the
/// manifest is queued first; the ticket is that write's.
pub fn closing_answer(
    store: &MasterStore,
    cfg: &MasterConfig,
    m: &Manifest,
    send: bool,
) -> Result<(Value, Option<inflight_store::Ticket>), ReportError> {
    let json = serde_json::to_vec(m).unwrap_or_default();
    let ticket = if send { Some(store.queue_manifest(&m.flight, &json)?) } else { None };
    let mut answer =
        serde_json::to_value(m).unwrap_or_else(|e| json!({ "error": "internal", "detail": e.to_string() }));
    answer["queued_for_issuer"] = json!(store.manifest_queued(&m.flight)?);
    if let Some(ack) = store.manifest_ack(&m.flight)? {
        let valid = inflight_store::verify_manifest_ack(&cfg.ground.issuer_public_key, &ack);
        let mut found: Value = serde_json::from_slice(&ack.body).unwrap_or(Value::Null);
        found["signature_valid"] = json!(valid);
        // The acknowledgement is of the manifest sent, whose chain it names: a later close with
        // other books has another chain.
        found["matches_this_manifest"] = json!(found["chain"] == json!(m.chain));
        answer["issuer_ack"] = found;
    }
    Ok((answer, ticket))
}

/// A refused close as the admin socket answers it.
fn close_error_json(e: &CloseError) -> Value {
    match e {
        CloseError::Pending { flight, pending } => {
            json!({ "error": "pending", "flight": flight, "pending": pending, "detail": e.to_string() })
        }
        CloseError::TooMany { .. } => json!({ "error": "internal", "detail": e.to_string() }),
    }
}

/// The closing manifest of `flight` (default: the current flight, as for reports) from the
/// store, as of now, keyed with the store's manifest key. Reads only masked records.
pub fn flight_manifest(
    store: &MasterStore,
    cfg: &MasterConfig,
    flight: Option<&str>,
    force: bool,
) -> Result<Manifest, ReportError> {
    let flight = match flight {
        Some(f) => f.to_owned(),
        None => store.setting("flight")?.unwrap_or_else(|| cfg.flight_id.clone()),
    };
    let (rows, _flights) = store.report_rows(&flight)?;
    let now_unix_ms = inflight_daemon::unix_ms_now();
    let payments = report::manifest_payments(&flight, &rows);
    let key = ManifestKey::new(store.manifest_key());
    manifest::close(&flight, &payments, &key, now_unix_ms, force).map_err(ReportError::NotClosable)
}

/// The closing manifest of `flight` (default: the current one), as `closing_answer` gives it:
/// from the running daemon, or read from the store when it is stopped; refused while payments
/// are pending unless `force`; with `send`, queued for the issuer.
pub async fn close_flight(
    cfg: &MasterConfig,
    flight: Option<String>,
    force: bool,
    send: bool,
) -> Result<Value, ReportError> {
    if let Some(f) = &flight {
        config::parse_flight_id(f).map_err(ReportError::BadFlight)?;
    }
    match admin_request(cfg, &AdminRequest::CloseFlight { flight: flight.clone(), force, send }).await {
        // The same refusal, in the same words, whether the daemon runs or not.
        Ok(v) if v["error"] == "pending" => match (v["flight"].as_str(), v["pending"].as_u64()) {
            (Some(f), Some(pending)) => {
                Err(ReportError::NotClosable(CloseError::Pending { flight: f.to_owned(), pending }))
            }
            _ => Err(ReportError::Daemon(v)),
        },
        Ok(v) if v.get("error").is_some() => Err(ReportError::Daemon(v)),
        Ok(v) => Ok(v),
        Err(e) if !inflight_daemon::local::daemon_absent(&e) => Err(ReportError::Unreachable(e.to_string())),
        Err(_) => {
            let store = open_store(cfg)?;
            let answer = async {
                let m = flight_manifest(&store, cfg, flight.as_deref(), force)?;
                let (answer, ticket) = closing_answer(&store, cfg, &m, send)?;
                if let Some(t) = ticket {
                    store.durable(t).await?;
                }
                Ok(answer)
            }
            .await;
            store.close();
            answer
        }
    }
}

/// The report of `flight` (default: the current flight, as the crew last set it, else the
/// config's `flight_id`) from the store, as of now. Reads only masked card data.
pub fn flight_report(
    store: &MasterStore,
    cfg: &MasterConfig,
    flight: Option<&str>,
) -> Result<report::FlightReport, StoreError> {
    let flight = match flight {
        Some(f) => f.to_owned(),
        None => store.setting("flight")?.unwrap_or_else(|| cfg.flight_id.clone()),
    };
    let (rows, flights) = store.report_rows(&flight)?;
    let as_of = report::AsOf {
        now_unix_ms: inflight_daemon::unix_ms_now(),
        aged_after_ms: cfg.payment_age_flag.as_millis() as u64,
        deadline: cfg.deadline,
    };
    Ok(report::build(&flight, &flights, &rows, &as_of))
}

/// Why `inflight-master report` could not make a report (each with its exit code).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The flight asked for is not a flight id (exit 64).
    #[error("--flight {0}")]
    BadFlight(&'static str),
    /// The daemon is stopped and its store cannot be opened or read (exit 74).
    #[error("the store cannot be read: {0}")]
    Store(#[from] StoreError),
    /// The daemon's socket is there but it did not answer (exit 69): its store is not read
    /// behind its back.
    #[error("the daemon did not answer: {0}")]
    Unreachable(String),
    /// The running daemon refused or failed the request: exit 64 (`bad_request`), 69
    /// (`forbidden`, `busy`, `shutting_down`), 74 (`storage_error`), 75 (`pending`: a flight
    /// closed with payments pending), else 70.
    #[error("the daemon answered {0}")]
    Daemon(Value),
    /// The flight cannot be closed (read from the stopped daemon's store): exit 75 while
    /// payments are pending, else 70.
    #[error("{0}")]
    NotClosable(CloseError),
}

impl ReportError {
    /// The documented exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            ReportError::BadFlight(_) => inflight_daemon::EXIT_CONFIG,
            ReportError::Store(_) => inflight_daemon::EXIT_IO,
            ReportError::Unreachable(_) => inflight_daemon::EXIT_UNAVAILABLE,
            ReportError::Daemon(v) => match v["error"].as_str() {
                Some("bad_request") => inflight_daemon::EXIT_CONFIG,
                Some("forbidden" | "busy" | "shutting_down") => inflight_daemon::EXIT_UNAVAILABLE,
                Some("storage_error") => inflight_daemon::EXIT_IO,
                Some("pending") => inflight_daemon::EXIT_TEMPFAIL,
                _ => inflight_daemon::EXIT_SOFTWARE,
            },
            ReportError::NotClosable(CloseError::Pending { .. }) => inflight_daemon::EXIT_TEMPFAIL,
            ReportError::NotClosable(CloseError::TooMany { .. }) => inflight_daemon::EXIT_SOFTWARE,
        }
    }
}

/// The report of `flight` (default: the current one): from the running daemon, or read from
/// the store when it is stopped. Either way the same computation on the same records.
pub async fn report(cfg: &MasterConfig, flight: Option<String>) -> Result<report::FlightReport, ReportError> {
    if let Some(f) = &flight {
        config::parse_flight_id(f).map_err(ReportError::BadFlight)?;
    }
    match admin_request(cfg, &AdminRequest::Report { flight: flight.clone() }).await {
        Ok(v) if v.get("error").is_some() => Err(ReportError::Daemon(v)),
        Ok(v) => serde_json::from_value(v.clone()).map_err(|_| ReportError::Daemon(v)),
        Err(e) if !inflight_daemon::local::daemon_absent(&e) => Err(ReportError::Unreachable(e.to_string())),
        Err(_) => {
            let store = open_store(cfg)?;
            let r = flight_report(&store, cfg, flight.as_deref());
            store.close();
            Ok(r?)
        }
    }
}

/// One payment as the crew sees it: masked card, verdict, flags, outcome.
fn payment_json(store: &MasterStore, deadline: &inflight_core::deadline::Deadline, id: &str) -> Value {
    let pid = match PaymentId::parse(id) {
        Ok(p) => p,
        Err(e) => return json!({ "error": "bad_request", "detail": e.to_string() }),
    };
    match store.view(pid) {
        Ok(None) => json!({ "payment_id": id, "error": "unknown_payment" }),
        Err(e) => json!({ "error": "storage_error", "detail": e.to_string() }),
        Ok(Some(v)) => {
            let (state, reason) = match v.verdict {
                Verdict::Stored if v.delivered => ("delivered", None),
                Verdict::Stored if v.outcome.is_some() => ("decided", None),
                Verdict::Stored | Verdict::Held => ("stored", None),
                Verdict::Refused(inflight_wire::RefusalReason::Voided) => ("voided", None),
                Verdict::Refused(r) => ("refused", Some(r.as_str())),
            };
            let mut out = json!({
                "payment_id": id,
                "terminal": v.payment.terminal.as_str(),
                "flight": v.flight,
                "state": state,
                "reason": reason,
                "flags": v.flags.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "card": v.payment.card.to_string(),
                "amount_minor": v.payment.amount.amount_minor(),
                "currency": v.payment.amount.currency().as_str(),
                "seat": v.payment.seat,
                "captured_unix_ms": v.payment.captured_unix_ms,
                // When it must be sealed for the issuer by, or be sent `late` (README, "The 24-hour deadline").
                "deadline_unix_ms": deadline.due_unix_ms(v.payment.captured_unix_ms),
                "card_data_erased": v.payment.card_data_erased,
                "entry_mode": v.payment.pos.entry_mode.as_str(),
                "terminal_type": v.payment.pos.terminal_type.as_str(),
                "mcc": v.payment.pos.mcc.to_string(),
            });
            outcome_fields(&mut out, v.outcome.as_ref());
            match store.reversal(pid) {
                Ok(Some(r)) => reversal_fields(&mut out, r),
                Ok(None) => {}
                Err(e) => return json!({ "error": "storage_error", "detail": e.to_string() }),
            }
            out
        }
    }
}

/// Adds `void`: `reversal_pending` (its sale app voided it after it was sealed; the issuer has
/// not answered the reversal yet), `reversed` (the issuer released the amount) or
/// `reversed_not_charged` (it had declined it), with `released_minor` when reversed.
fn reversal_fields(out: &mut Value, r: inflight_core::aggregator::Reversal) {
    use inflight_core::aggregator::Reversal;
    use inflight_wire::ReversalOutcome;
    match r {
        Reversal::Requested | Reversal::Done(ReversalOutcome::Unknown) => out["void"] = json!("reversal_pending"),
        Reversal::Done(ReversalOutcome::Reversed { released_minor }) => {
            out["void"] = json!("reversed");
            out["released_minor"] = json!(released_minor);
        }
        Reversal::Done(ReversalOutcome::NotCharged) => out["void"] = json!("reversed_not_charged"),
    }
}

/// Adds `outcome` (`approved`/`declined`) and `auth_code` or `decline_reason`.
pub fn outcome_fields(out: &mut Value, outcome: Option<&AuthOutcome>) {
    match outcome {
        Some(AuthOutcome::Approved { auth_code }) => {
            out["outcome"] = json!("approved");
            out["auth_code"] = json!(auth_code);
        }
        Some(AuthOutcome::Declined(r)) => {
            out["outcome"] = json!("declined");
            out["decline_reason"] = json!(r.as_str());
        }
        None => {}
    }
}

/// The status document (DESIGN.md §8).
fn status_json(
    c: &inflight_core::aggregator::Counts,
    bin_list_version: Option<u64>,
    terminals_connected: usize,
    running: bool,
) -> Value {
    json!({
        "daemon_running": running,
        "link": "down",
        "bin_list_version": bin_list_version,
        "terminals_connected": terminals_connected,
        "payments": {
            "total": c.total,
            "pending": c.pending,
            "in_batch": c.in_batch,
            "quarantined": c.quarantined,
            "decided": c.decided,
            "delivered": c.delivered,
            "refused": c.refused,
            "unconfirmed": c.unconfirmed,
            "voided": c.voided,
        },
    })
}

/// The status document's counts that need a scan of the index: `aged`, and the carried
/// payments against their deferred-authorization deadline (`deadline_soon`: the crew's warning;
/// `deadline_missed`: sealed, or to be sealed, after it: carried with `late: true`).
fn scan_json(v: &mut Value, scan: &aircraft::Scan) {
    v["payments"]["aged"] = json!(scan.aged);
    v["payments"]["deadline_soon"] = json!(scan.deadline.soon);
    v["payments"]["deadline_missed"] = json!(scan.deadline.missed);
}

/// The status JSON (of the master, or of one payment): from the running daemon, or read from
/// the store when it is stopped.
pub async fn status(cfg: &MasterConfig, payment: Option<String>) -> Result<Value, String> {
    let req = AdminRequest::Status { payment_id: payment.clone() };
    match admin_request(cfg, &req).await {
        Ok(v) => Ok(v),
        Err(e) if !inflight_daemon::local::daemon_absent(&e) => Err(format!("the daemon did not answer: {e}")),
        Err(_) => {
            let store = open_store(cfg).map_err(|e| e.to_string())?;
            let v = match payment {
                Some(p) => payment_json(&store, &cfg.deadline, &p),
                None => {
                    let mut agg = inflight_core::aggregator::Aggregator::new();
                    for (id, e) in store.index().map_err(|e| e.to_string())? {
                        agg.restore(id, e);
                    }
                    for (id, r) in store.reversals().map_err(|e| e.to_string())? {
                        agg.restore_reversal(id, r);
                    }
                    let version = store
                        .bin_list()
                        .map_err(|e| e.to_string())?
                        .and_then(|s| inflight_store::verify_bin_list(&cfg.ground.issuer_public_key, &s).ok())
                        .map(|l| l.version);
                    let mut v = status_json(&agg.counts(), version, 0, false);
                    let hot = store
                        .hot_list()
                        .map_err(|e| e.to_string())?
                        .and_then(|l| inflight_core::hotlist::HotSet::verify(&cfg.ground.issuer_public_key, &l).ok());
                    v["hot_list_version"] = json!(hot.as_ref().map(|h| h.version()));
                    v["hot_list_entries"] = json!(hot.as_ref().map(|h| h.len()));
                    let (pending, done) = agg.reversal_counts();
                    v["payments"]["reversal_pending"] = json!(pending);
                    v["payments"]["reversed"] = json!(done);
                    let now = inflight_daemon::unix_ms_now();
                    let scan = aircraft::Scan {
                        aged: agg.aged(now, cfg.payment_age_flag.as_millis() as u64),
                        deadline: agg.deadline_counts(now, &cfg.deadline),
                    };
                    scan_json(&mut v, &scan);
                    v["link_override"] = json!(store
                        .setting("link_override")
                        .map_err(|e| e.to_string())?
                        .unwrap_or_else(|| "auto".into()));
                    v
                }
            };
            store.close();
            Ok(v)
        }
    }
}

/// Sends one admin request to the running daemon.
pub async fn admin_request(cfg: &MasterConfig, req: &AdminRequest) -> std::io::Result<Value> {
    inflight_daemon::local::request::<_, Value>(&cfg.admin_socket, req).await
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

    fn parse(v: Value) -> Result<AdminRequest, Value> {
        inflight_daemon::local::parse_request(v, ADMIN_OPS)
    }

    #[test]
    fn admin_requests_keep_their_wire_format() {
        let id = "019ab5c0d2f17a4b8c9d0e1f2a3b4c5d";
        let cases = [
            (json!({"op": "status"}), AdminRequest::Status { payment_id: None }, r#"{"op":"status"}"#.to_owned()),
            (
                json!({"op": "status", "payment_id": id}),
                AdminRequest::Status { payment_id: Some(id.into()) },
                format!(r#"{{"op":"status","payment_id":"{id}"}}"#),
            ),
            (
                json!({"op": "link", "mode": "up"}),
                AdminRequest::Link { mode: "up".into() },
                r#"{"op":"link","mode":"up"}"#.into(),
            ),
            (
                json!({"op": "flight", "flight": "IF200"}),
                AdminRequest::Flight { flight: "IF200".into() },
                r#"{"op":"flight","flight":"IF200"}"#.into(),
            ),
            (json!({"op": "report"}), AdminRequest::Report { flight: None }, r#"{"op":"report"}"#.into()),
            (
                json!({"op": "report", "flight": "IF200"}),
                AdminRequest::Report { flight: Some("IF200".into()) },
                r#"{"op":"report","flight":"IF200"}"#.into(),
            ),
            (
                json!({"op": "close_flight"}),
                AdminRequest::CloseFlight { flight: None, force: false, send: false },
                r#"{"op":"close_flight"}"#.into(),
            ),
            (
                json!({"op": "close_flight", "send": true}),
                AdminRequest::CloseFlight { flight: None, force: false, send: true },
                r#"{"op":"close_flight","send":true}"#.into(),
            ),
            (
                json!({"op": "close_flight", "flight": "IF200", "force": true}),
                AdminRequest::CloseFlight { flight: Some("IF200".into()), force: true, send: false },
                r#"{"op":"close_flight","flight":"IF200","force":true}"#.into(),
            ),
        ];
        for (wire, req, text) in cases {
            assert_eq!(parse(wire.clone()).as_ref(), Ok(&req), "{wire}");
            assert_eq!(serde_json::to_string(&req).expect("json"), text);
            assert_eq!(wire["op"], req.op());
        }
    }

    #[test]
    fn crew_ops_are_the_ops_that_change_the_master() {
        let link = AdminRequest::Link { mode: "up".into() };
        let flight = AdminRequest::Flight { flight: "IF1".into() };
        let status = AdminRequest::Status { payment_id: None };
        assert!(CREW_OPS.contains(&link.op()) && CREW_OPS.contains(&flight.op()));
        assert!(!CREW_OPS.contains(&status.op()));
        assert_eq!(CREW_OPS.len(), 2);
    }

    #[test]
    fn unknown_and_malformed_admin_requests_are_bad_requests() {
        for bad in [
            json!({"op": "reboot"}),
            json!({"op": "link"}),
            json!({"op": "link", "mode": 1}),
            json!({"op": "flight"}),
            json!({"op": "status", "payment_id": 5}),
            json!({"op": "report", "flight": 5}),
            json!({"op": "close_flight", "force": "yes"}),
            json!({"mode": "up"}),
            json!([]),
            Value::Null,
        ] {
            let answer = parse(bad.clone()).expect_err("refused");
            assert_eq!(answer["error"], "bad_request", "{bad}: {answer}");
            assert!(answer["detail"].as_str().is_some_and(|d| d.contains(ADMIN_OPS)), "{bad}: {answer}");
        }
        let unknown = parse(json!({"op": "reboot"})).expect_err("refused");
        assert!(unknown["detail"].as_str().is_some_and(|d| d.contains("unknown variant `reboot`")), "{unknown}");
        let missing = parse(json!({"op": "link"})).expect_err("refused");
        assert!(missing["detail"].as_str().is_some_and(|d| d.contains("missing field `mode`")), "{missing}");
    }

    #[test]
    fn report_errors_exit_with_the_documented_codes() {
        let code = |e: ReportError| e.exit_code();
        assert_eq!(code(ReportError::BadFlight("bad")), inflight_daemon::EXIT_CONFIG);
        assert_eq!(code(ReportError::Store(StoreError::Io("disk".into()))), inflight_daemon::EXIT_IO);
        let daemon = |error: &str| code(ReportError::Daemon(json!({ "error": error })));
        assert_eq!(daemon("bad_request"), inflight_daemon::EXIT_CONFIG);
        assert_eq!(daemon("forbidden"), inflight_daemon::EXIT_UNAVAILABLE);
        assert_eq!(daemon("storage_error"), inflight_daemon::EXIT_IO);
        assert_eq!(daemon("internal"), inflight_daemon::EXIT_SOFTWARE);
        assert_eq!(daemon("pending"), inflight_daemon::EXIT_TEMPFAIL);
        let pending = CloseError::Pending { flight: "IF1".into(), pending: 2 };
        assert_eq!(close_error_json(&pending)["error"], "pending");
        assert_eq!(code(ReportError::NotClosable(pending)), inflight_daemon::EXIT_TEMPFAIL);
    }

    #[test]
    fn errors_exit_with_the_documented_codes() {
        let store = MasterError::Store(StoreError::Io("disk".into()));
        assert_eq!(store.exit_class().code(), inflight_daemon::EXIT_IO);
        let net = MasterError::Net(NetError::Tls("bad key".into()));
        assert_eq!(net.exit_class().code(), inflight_daemon::EXIT_UNAVAILABLE);
        let socket = MasterError::Socket { path: "/run/x".into(), detail: "in use".into() };
        assert_eq!(socket.exit_class().code(), inflight_daemon::EXIT_UNAVAILABLE);
    }
}
