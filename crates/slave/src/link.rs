//! The terminal's connection to the master: connect, say hello, carry frames both ways,
//! reconnect with exponential backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use inflight_net::framed::framed;
use inflight_net::{endpoint, Endpoint, NetError};
use inflight_wire::{ErrorCode, MasterMsg, TerminalMsg, TERMINAL_FRAME_BYTES_MAX, TERMINAL_PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SlaveConfig;
use crate::terminal::Event;

/// Why a session with the master ended (other than shutdown).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The network or the QUIC/TLS layer: the master is unreachable or the connection broke.
    #[error(transparent)]
    Net(#[from] NetError),
    /// No `Hello` within the connect timeout.
    #[error("no Hello from the master in time")]
    HelloTimeout,
    /// The master refused this terminal, or closed the link, with an error frame.
    #[error("the master {}: {code:?}: {message}", if *.at_hello { "refused this terminal" } else { "closed the link" })]
    Refused {
        /// Its error code.
        code: ErrorCode,
        /// Its message.
        message: String,
        /// At `Hello` (a configuration or certificate problem) or later.
        at_hello: bool,
    },
    /// The master's clock is too far from this terminal's to stamp captures with.
    #[error("the master's clock is out of bounds")]
    ClockOutOfBounds,
    /// The master broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl LinkError {
    /// Logs the end of a session at the level it deserves: a master that refuses this terminal
    /// needs an operator; a lost connection is routine in a cabin.
    fn log(&self) {
        match self {
            LinkError::Net(_) | LinkError::HelloTimeout => tracing::info!(error = %self, "link to master down"),
            LinkError::Refused { at_hello: true, .. } | LinkError::ClockOutOfBounds | LinkError::Protocol(_) => {
                tracing::error!(error = %self, "link to master refused")
            }
            LinkError::Refused { at_hello: false, .. } => tracing::warn!(error = %self, "link to master closed"),
        }
    }
}

/// Keeps a connection to the master up until `cancel`.
pub(crate) async fn run(
    cfg: Arc<SlaveConfig>,
    mut ep: Endpoint,
    events: mpsc::Sender<Event>,
    metrics: crate::metrics::SlaveMetrics,
    cancel: CancellationToken,
) {
    let mut backoff = cfg.reconnect_min;
    // Jitter source: differs per terminal and per start, so a cabin of terminals that lost the
    // master together does not reconnect in lock-step.
    let mut seed = inflight_daemon::unix_ms_now() ^ fnv(cfg.terminal_id.as_str());
    let files = crate::tls_files(&cfg);
    // None: the configuration the endpoint started with was built before any stamp was taken,
    // so the first attempt rebuilds it (a change in between is not missed).
    let mut tls_stamp: Option<inflight_net::reload::Stamp> = None;
    let mut failed: Option<inflight_net::reload::Stamp> = None;
    while !cancel.is_cancelled() {
        // A renewed certificate or a new revocation list takes effect at the next connection;
        // one that does not load is tried again at every attempt, logged once.
        let now = inflight_net::reload::stamp(&files);
        if tls_stamp.as_ref() != Some(&now) {
            match crate::client_tls(&cfg).and_then(|t| endpoint::client_config(t, cfg.timers)) {
                Ok(c) => {
                    ep.set_default_client_config(c);
                    if tls_stamp.is_some() {
                        tracing::info!("TLS material changed on disk; the next connection uses it");
                    }
                    tls_stamp = Some(now);
                    failed = None;
                }
                Err(e) => {
                    if failed.as_ref() != Some(&now) {
                        tracing::error!(error = %e, "TLS material changed on disk but does not load; keeping the previous one");
                        failed = Some(now);
                    }
                }
            }
        }
        let mut was_connected = false;
        // A connect attempt can take the whole connect timeout; shutdown does not wait for it.
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            r = session(&cfg, &ep, &events, &cancel, &mut was_connected) => r,
        };
        match result {
            Ok(()) => tracing::info!("link to master closed"),
            Err(e) => e.log(),
        }
        if was_connected {
            metrics.link_dropped();
            backoff = cfg.reconnect_min;
        }
        let delay = jitter(backoff, &mut seed);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
    ep.close(0u32.into(), b"terminal shutting down");
    // Draining lets the master see the close; it is bounded so shutdown stays prompt.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), ep.wait_idle()).await;
}

async fn session(
    cfg: &SlaveConfig,
    ep: &Endpoint,
    events: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
    was_connected: &mut bool,
) -> Result<(), LinkError> {
    let conn = endpoint::connect(ep, cfg.master_addr, &cfg.master_server_name, cfg.timers.connect).await?;
    let (send, recv) = conn.open_bi().await.map_err(|e| NetError::Connection(e.to_string()))?;
    let (mut w, mut r) = framed(send, recv, TERMINAL_FRAME_BYTES_MAX);
    w.send(&TerminalMsg::Hello { version: TERMINAL_PROTOCOL_VERSION, terminal: cfg.terminal_id.clone() }).await?;
    match tokio::time::timeout(cfg.timers.connect, r.recv::<MasterMsg>()).await {
        Err(_) => return Err(LinkError::HelloTimeout),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(None)) => return Err(LinkError::Protocol("the master closed the stream before Hello".into())),
        Ok(Ok(Some(MasterMsg::Hello { version, aircraft, unix_ms }))) if version == TERMINAL_PROTOCOL_VERSION => {
            let local_ms = inflight_daemon::unix_ms_now();
            let Some(offset_ms) = clock_offset(unix_ms, local_ms) else {
                // Either clock may be the wrong one; neither is trusted to stamp captures, and
                // the link is retried (with backoff) in case the master's clock gets fixed.
                tracing::error!(
                    master_unix_ms = unix_ms,
                    local_unix_ms = local_ms,
                    max_hours = CLOCK_OFFSET_MAX_MS / 3_600_000,
                    "the master's clock is too far from this terminal's: not using the link; set the clocks"
                );
                conn.close(1u32.into(), b"clock offset out of bounds");
                return Err(LinkError::ClockOutOfBounds);
            };
            tracing::info!(%aircraft, addr = %cfg.master_addr, clock_offset_ms = offset_ms, "connected to master");
            if events.send(Event::ClockOffset(offset_ms)).await.is_err() {
                return Ok(());
            }
        }
        Ok(Ok(Some(MasterMsg::Error { code, message }))) => {
            return Err(LinkError::Refused { code, message, at_hello: true })
        }
        Ok(Ok(Some(other))) => {
            return Err(LinkError::Protocol(format!("unexpected first frame from the master: {}", msg_name(&other))))
        }
    }
    let (tx, mut rx) = mpsc::channel(cfg.forward_window + crate::terminal::RESULT_ACKS_MAX);
    if events.send(Event::Connected { tx }).await.is_err() {
        return Ok(());
    }
    *was_connected = true;
    let result = async {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    conn.close(0u32.into(), b"terminal shutting down");
                    return Ok(());
                }
                msg = rx.recv() => {
                    let Some(msg) = msg else { return Ok(()) };
                    w.feed(&msg).await?;
                    // Drain what else is queued into the same flush.
                    while let Ok(m) = rx.try_recv() {
                        w.feed(&m).await?;
                    }
                    w.flush().await?;
                }
                msg = r.recv::<MasterMsg>() => match msg? {
                    Some(MasterMsg::Ack { id, verdict }) => {
                        if events.send(Event::Verdict { id, verdict }).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(MasterMsg::VoidAck { id, carried }) => {
                        if events.send(Event::VoidAck { id, carried }).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(MasterMsg::CancelAck { id, outcome }) => {
                        if events.send(Event::CancelAck { id, outcome }).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(MasterMsg::BinList(signed)) => {
                        if events.send(Event::BinList(signed)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(MasterMsg::HotList(list)) => {
                        if events.send(Event::HotList(*list)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(MasterMsg::Result { id, outcome }) => {
                        if events.send(Event::Result { id, outcome }).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(MasterMsg::Error { code, message }) => {
                        return Err(LinkError::Refused { code, message, at_hello: false });
                    }
                    Some(MasterMsg::Hello { .. }) => return Err(LinkError::Protocol("a second Hello from the master".into())),
                    None => return Err(LinkError::Protocol("the master finished the stream".into())),
                },
            }
        }
    }
    .await;
    let _ = events.send(Event::Disconnected).await;
    result
}

/// Largest offset between the master's clock and this terminal's that the terminal adopts. A
/// cabin's clocks may be hours apart (a time zone set wrong, a terminal that missed a sync: the
/// e2e tests play 5 hours); beyond two days one of them is broken (a reset to 1970, a peer's
/// garbage), and stamping every capture with it would put payments outside the issuer's window.
pub(crate) const CLOCK_OFFSET_MAX_MS: i64 = 48 * 3_600_000;

/// The master's clock minus this terminal's, in milliseconds, or `None` when the two are more
/// than [`CLOCK_OFFSET_MAX_MS`] apart. Computed without overflow for any `u64` the peer sends.
pub(crate) fn clock_offset(master_unix_ms: u64, local_unix_ms: u64) -> Option<i64> {
    let offset = i128::from(master_unix_ms) - i128::from(local_unix_ms);
    if offset.abs() > i128::from(CLOCK_OFFSET_MAX_MS) {
        return None;
    }
    i64::try_from(offset).ok()
}

fn msg_name(m: &MasterMsg) -> &'static str {
    match m {
        MasterMsg::Hello { .. } => "Hello (another protocol version)",
        MasterMsg::Ack { .. } => "Ack",
        MasterMsg::Error { .. } => "Error",
        MasterMsg::BinList(_) => "BinList",
        MasterMsg::Result { .. } => "Result",
        MasterMsg::VoidAck { .. } => "VoidAck",
        MasterMsg::CancelAck { .. } => "CancelAck",
        MasterMsg::HotList(_) => "HotList",
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A delay between half and all of `d` (xorshift; not for cryptography).
fn jitter(d: Duration, seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let half = d / 2;
    half + Duration::from_nanos(*seed % (half.as_nanos().max(1) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    /// A refusal says whose problem it is: at `Hello` this terminal's (configuration,
    /// certificate), later a link closed by the master; neither is a "connection lost".
    #[test]
    fn link_errors_say_what_ended_the_session() {
        let refused = LinkError::Refused { code: ErrorCode::WrongTerminal, message: "no".into(), at_hello: true };
        assert_eq!(refused.to_string(), "the master refused this terminal: WrongTerminal: no");
        let closed = LinkError::Refused { code: ErrorCode::Busy, message: "full".into(), at_hello: false };
        assert_eq!(closed.to_string(), "the master closed the link: Busy: full");
        assert_eq!(LinkError::ClockOutOfBounds.to_string(), "the master's clock is out of bounds");
        assert_eq!(
            msg_name(&MasterMsg::BinList(inflight_wire::SignedBinList { body: vec![], signature: vec![] })),
            "BinList"
        );
    }

    #[test]
    fn clock_offset_is_bounded_and_never_overflows() {
        assert_eq!(clock_offset(NOW, NOW), Some(0));
        let five_hours = 5 * 3_600_000;
        assert_eq!(clock_offset(NOW + five_hours, NOW), Some(five_hours as i64));
        assert_eq!(clock_offset(NOW - five_hours, NOW), Some(-(five_hours as i64)));
        let max = CLOCK_OFFSET_MAX_MS as u64;
        assert_eq!(clock_offset(NOW + max, NOW), Some(CLOCK_OFFSET_MAX_MS));
        assert_eq!(clock_offset(NOW - max, NOW), Some(-CLOCK_OFFSET_MAX_MS));
        assert_eq!(clock_offset(NOW + max + 1, NOW), None);
        assert_eq!(clock_offset(NOW - max - 1, NOW), None);
        // A terminal whose clock was reset to the epoch, and a peer's garbage.
        assert_eq!(clock_offset(NOW, 0), None);
        assert_eq!(clock_offset(u64::MAX, NOW), None);
        assert_eq!(clock_offset(u64::MAX, 0), None);
        assert_eq!(clock_offset(0, u64::MAX), None);
    }
}
