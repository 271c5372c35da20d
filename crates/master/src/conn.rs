//! One terminal's connection: authenticate, say hello, read submissions, write acks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use inflight_net::framed::{framed, FrameReader, FrameWriter};
use inflight_net::{identity, Connection, NetError};
use inflight_wire::{
    ErrorCode, MasterMsg, TerminalId, TerminalMsg, TERMINAL_FRAME_BYTES_MAX, TERMINAL_PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::aircraft::{Event, Outgoing, CONN_OUTGOING_MAX};
use crate::config::MasterConfig;
use inflight_core::aggregator::TerminalRef;

/// Serves one terminal until it goes away, misbehaves, or `cancel`.
pub async fn serve(
    cfg: Arc<MasterConfig>,
    conn: Connection,
    events: mpsc::Sender<Event>,
    connected: Arc<AtomicUsize>,
    cancel: CancellationToken,
) {
    let remote = conn.remote_address();
    let (terminal, w, r) = match tokio::time::timeout(cfg.hello_timeout, handshake(&cfg, &conn)).await {
        Ok(Ok(x)) => x,
        Ok(Err((code, e))) => {
            tracing::warn!(%remote, error = %e, "terminal refused");
            // The refusal's error frame was sent: let the terminal read it before the close.
            inflight_net::framed::close_after_final(&conn, code.as_u32().into(), e.to_string().as_bytes()).await;
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "terminal sent no Hello in time");
            conn.close(ErrorCode::Protocol.as_u32().into(), b"no Hello in time");
            return;
        }
    };
    // Shared by every event of this connection (one allocation, not one per payment).
    let terminal: TerminalRef = Arc::new(terminal);
    connected.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%terminal, %remote, "terminal connected");
    let (out_tx, out_rx) = mpsc::channel(CONN_OUTGOING_MAX);
    let writer = tokio::spawn(write_loop(conn.clone(), w, out_rx));
    let serial = conn.stable_id() as u64;
    let _ = events.send(Event::Connected { terminal: terminal.clone(), serial, tx: out_tx.clone() }).await;
    let why = read_loop(&terminal, r, &events, &out_tx, &cancel).await;
    let _ = events.send(Event::Disconnected { terminal: terminal.clone(), serial }).await;
    match &why {
        Ok(()) => tracing::info!(%terminal, "terminal disconnected"),
        Err((code, msg)) => {
            tracing::warn!(%terminal, ?code, error = %msg, "closing terminal connection");
            let _ = out_tx.try_send(Outgoing::Close(*code, msg.clone()));
        }
    }
    drop(out_tx);
    let _ = writer.await;
    conn.close(0u32.into(), b"bye");
    connected.fetch_sub(1, Ordering::Relaxed);
}

type Refusal = (ErrorCode, NetError);

/// Sends an error frame and finishes the stream, returning the refusal for the caller to close.
async fn refuse(w: &mut FrameWriter, code: ErrorCode, message: String) -> Refusal {
    w.send_final(&MasterMsg::Error { code, message: message.clone() }).await;
    (code, NetError::Connection(message))
}

/// Accepts the terminal's stream, checks its `Hello` against its certificate, answers `Hello`.
async fn handshake(cfg: &MasterConfig, conn: &Connection) -> Result<(TerminalId, FrameWriter, FrameReader), Refusal> {
    let leaf = identity::peer_leaf(conn).map_err(|e| (ErrorCode::WrongTerminal, e))?;
    let (send, recv) =
        conn.accept_bi().await.map_err(|e| (ErrorCode::Protocol, NetError::Connection(e.to_string())))?;
    let (mut w, mut r) = framed(send, recv, TERMINAL_FRAME_BYTES_MAX);
    let (version, terminal) = match r.recv::<TerminalMsg>().await {
        Ok(Some(TerminalMsg::Hello { version, terminal })) => (version, terminal),
        Ok(Some(_)) => return Err(refuse(&mut w, ErrorCode::Protocol, "first frame must be Hello".into()).await),
        Ok(None) => return Err((ErrorCode::Protocol, NetError::Connection("stream ended before Hello".into()))),
        Err(e) => return Err(refuse(&mut w, ErrorCode::Malformed, e.to_string()).await),
    };
    if version != TERMINAL_PROTOCOL_VERSION {
        return Err(refuse(
            &mut w,
            ErrorCode::VersionMismatch,
            format!("protocol version {version} not supported; this master speaks {TERMINAL_PROTOCOL_VERSION}"),
        )
        .await);
    }
    if let Err(e) = identity::check_terminal(&leaf, &terminal) {
        return Err(refuse(&mut w, ErrorCode::WrongTerminal, format!("claimed terminal {terminal}: {e}")).await);
    }
    w.send(&MasterMsg::Hello {
        version: TERMINAL_PROTOCOL_VERSION,
        aircraft: cfg.aircraft_id.clone(),
        unix_ms: inflight_daemon::unix_ms_now(),
    })
    .await
    .map_err(|e| (ErrorCode::Protocol, e))?;
    Ok((terminal, w, r))
}

async fn read_loop(
    terminal: &TerminalRef,
    mut r: FrameReader,
    events: &mpsc::Sender<Event>,
    out: &mpsc::Sender<Outgoing>,
    cancel: &CancellationToken,
) -> Result<(), (ErrorCode, String)> {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return Err((ErrorCode::ShuttingDown, "master shutting down".into())),
            msg = r.recv::<TerminalMsg>() => msg,
        };
        match msg {
            Ok(None) => return Ok(()),
            Err(NetError::Frame(e)) => return Err((ErrorCode::Malformed, e)),
            Err(e) => {
                tracing::debug!(%terminal, error = %e, "terminal stream ended");
                return Ok(());
            }
            Ok(Some(TerminalMsg::Hello { .. })) => return Err((ErrorCode::Protocol, "second Hello".into())),
            Ok(Some(TerminalMsg::Submit { payment, answered })) => {
                if payment.terminal != **terminal {
                    return Err((
                        ErrorCode::WrongTerminal,
                        format!("payment carries terminal id {}, connection is {terminal}", payment.terminal),
                    ));
                }
                let submit = Event::Submit {
                    terminal: terminal.clone(),
                    payment: Box::new(payment),
                    answered,
                    reply: out.clone(),
                };
                if events.send(submit).await.is_err() {
                    return Err((ErrorCode::ShuttingDown, "master shutting down".into()));
                }
            }
            Ok(Some(TerminalMsg::Void { id })) => {
                if events.send(Event::Void { terminal: terminal.clone(), id, reply: out.clone() }).await.is_err() {
                    return Err((ErrorCode::ShuttingDown, "master shutting down".into()));
                }
            }
            Ok(Some(TerminalMsg::Cancel { id })) => {
                if events.send(Event::Cancel { terminal: terminal.clone(), id, reply: out.clone() }).await.is_err() {
                    return Err((ErrorCode::ShuttingDown, "master shutting down".into()));
                }
            }
            Ok(Some(TerminalMsg::ResultAck { id })) => {
                if events.send(Event::ResultAck { terminal: terminal.clone(), id }).await.is_err() {
                    return Err((ErrorCode::ShuttingDown, "master shutting down".into()));
                }
            }
        }
    }
}

async fn write_loop(conn: Connection, mut w: FrameWriter, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(first) = rx.recv().await {
        let mut close = None;
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        for m in batch {
            let r = match m {
                Outgoing::Msg(m) => w.feed(&m).await,
                Outgoing::Close(code, message) => {
                    let r = w.feed(&MasterMsg::Error { code, message }).await;
                    close = Some(code);
                    r
                }
            };
            if r.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
        if let Some(code) = close {
            // Give the error frame a moment to reach the terminal before the close (closing
            // a QUIC connection may discard data still in flight).
            w.finish_final().await;
            if code == ErrorCode::ShuttingDown {
                // The terminal learns it from the frame or the close; shutdown does not wait.
                conn.close(code.as_u32().into(), b"master shutting down");
            } else {
                inflight_net::framed::close_after_final(&conn, code.as_u32().into(), b"closed by master").await;
            }
            return;
        }
    }
}
