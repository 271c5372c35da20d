//! Who gets a handshake at all: the gate in front of every server endpoint.
//!
//! A QUIC Initial costs an attacker one datagram, from any source address it likes, and costs
//! the server a TLS state until the handshake ends. Counting such half-open handshakes against
//! the terminal limit (as the master once did) let a 2 Mbit/s spoofed flood keep every terminal
//! out. So handshakes are admitted here, apart from the authenticated connections a daemon
//! counts afterwards:
//!
//! - at most [`HANDSHAKES_MAX`] in progress at once, and [`HANDSHAKES_PER_ADDRESS_MAX`] from one
//!   IP address;
//! - once [`RETRY_ABOVE`] are in progress, a source that has not proven its address is sent a
//!   QUIC Retry (stateless: it costs the server nothing to send and nothing to forget), so a
//!   spoofed flood never holds more than [`RETRY_ABOVE`] slots while real peers, which answer
//!   the Retry, get through;
//! - every admitted handshake has a deadline ([`handshake`]).
//!
//! The decision itself is the pure [`decide`]; [`Gate`] keeps the counts.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{Connection, Incoming};

use crate::NetError;

/// Most handshakes in progress at once on one endpoint. A handshake costs a TLS state (a few
/// KiB); terminals finish theirs in milliseconds, so this is far above what a cabin needs while
/// bounding what a flood can hold.
pub const HANDSHAKES_MAX: usize = 256;

/// Most handshakes in progress from one IP address. Above [`RETRY_ABOVE`] so that sources that
/// never proved their address (spoofed ones among them) cannot fill a real terminal's share.
pub const HANDSHAKES_PER_ADDRESS_MAX: usize = 64;

/// Past this many handshakes in progress, unvalidated sources must answer a QUIC Retry first.
/// Below it the extra round trip is not worth paying.
pub const RETRY_ABOVE: usize = 16;

const _: () = assert!(RETRY_ABOVE < HANDSHAKES_PER_ADDRESS_MAX && HANDSHAKES_PER_ADDRESS_MAX <= HANDSHAKES_MAX);

/// Log refused handshakes at most this often (a flood must not become a flood of log lines).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What to do with one connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Start the handshake.
    Handshake,
    /// Ask the source to prove its address first (QUIC Retry).
    Retry,
    /// Refuse it (QUIC `CONNECTION_REFUSED`): the peer retries later.
    Refuse(Refusal),
}

/// Why a connection attempt was refused before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// [`HANDSHAKES_MAX`] are in progress.
    HandshakesFull,
    /// [`HANDSHAKES_PER_ADDRESS_MAX`] are in progress from the same address.
    AddressFull,
}

impl Refusal {
    /// Stable name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HandshakesFull => "handshakes_full",
            Refusal::AddressFull => "address_full",
        }
    }
}

/// Decides on one connection attempt, given the handshakes in progress (in all, and from its
/// address) and whether its source address is proven (it echoed a Retry token) or can be asked
/// to prove it.
pub fn decide(in_progress: usize, from_address: usize, address_validated: bool, may_retry: bool) -> Admission {
    if in_progress >= RETRY_ABOVE && !address_validated && may_retry {
        return Admission::Retry;
    }
    if in_progress >= HANDSHAKES_MAX {
        return Admission::Refuse(Refusal::HandshakesFull);
    }
    if from_address >= HANDSHAKES_PER_ADDRESS_MAX {
        return Admission::Refuse(Refusal::AddressFull);
    }
    Admission::Handshake
}

/// The handshakes in progress on one endpoint.
#[derive(Debug, Default)]
pub struct Gate {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    refused_since_log: u64,
    last_log: Option<Instant>,
}

/// A handshake's place in the gate, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Gate>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.gate.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&self.address);
            }
        }
    }
}

impl Gate {
    /// A gate with nothing in progress.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Handshakes in progress now.
    pub fn in_progress(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Admits, retries or refuses `incoming`. `Some` holds the admitted attempt and its slot;
    /// `None` means it was answered (Retry or refusal) and is gone.
    pub fn admit(self: &Arc<Self>, incoming: Incoming, what: &str) -> Option<(Incoming, Slot)> {
        let address = incoming.remote_address().ip();
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let from_address = c.by_address.get(&address).copied().unwrap_or(0);
        match decide(c.total, from_address, incoming.remote_address_validated(), incoming.may_retry()) {
            Admission::Handshake => {
                c.total += 1;
                *c.by_address.entry(address).or_insert(0) += 1;
                drop(c);
                Some((incoming, Slot { gate: self.clone(), address }))
            }
            Admission::Retry => {
                drop(c);
                // Fails only if the attempt already carried a token, which `decide` excludes.
                let _ = incoming.retry();
                None
            }
            Admission::Refuse(why) => {
                c.refused_since_log += 1;
                let now = Instant::now();
                if c.last_log.is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_INTERVAL) {
                    tracing::warn!(
                        refused = c.refused_since_log,
                        last_reason = why.as_str(),
                        in_progress = c.total,
                        "{what} handshakes refused: too many in progress"
                    );
                    c.refused_since_log = 0;
                    c.last_log = Some(now);
                }
                drop(c);
                incoming.refuse();
                None
            }
        }
    }
}

/// Runs an admitted handshake to completion within `deadline`; the slot is given back when it
/// ends either way. Dropping the unfinished handshake closes it.
pub async fn handshake(incoming: Incoming, slot: Slot, deadline: Duration) -> Result<Connection, NetError> {
    let remote = incoming.remote_address();
    let err = |detail: String| NetError::Connect { addr: remote, detail };
    let connecting = incoming.accept().map_err(|e| err(e.to_string()))?;
    let out = match tokio::time::timeout(deadline, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(_) => Err(err(format!("no handshake within {deadline:?}"))),
    };
    drop(slot);
    out
}

/// The live connections of each peer certificate, at most `per_peer_max` each: registering one
/// more closes the oldest. A stolen key therefore buys a bounded amount of memory (that many
/// connections' flow-control windows and streams), however many times it connects, and an
/// honest peer that reconnects after a silent link loss replaces its stale connection at once
/// instead of waiting for the idle timeout. Terminals get one each; an aircraft, which probes
/// the ground on short connections while uploading on another, a few.
#[derive(Debug)]
pub struct PeerConnections {
    per_peer_max: usize,
    live: Mutex<HashMap<[u8; 32], VecDeque<Connection>>>,
}

/// A connection's entry in [`PeerConnections`], removed when dropped.
#[derive(Debug)]
pub struct Registration {
    peers: Arc<PeerConnections>,
    key: [u8; 32],
    id: usize,
}

impl PeerConnections {
    /// No connections yet; at most `per_peer_max` (at least 1) per certificate.
    pub fn new(per_peer_max: usize) -> Arc<Self> {
        Arc::new(Self { per_peer_max: per_peer_max.max(1), live: Mutex::default() })
    }

    /// Records `conn` under its certificate, closing (with `code`) the oldest connection of the
    /// same certificate if that makes one too many. The certificate was verified by the
    /// handshake; it is keyed by a hash of its bytes (a public document, not a secret).
    pub fn register(self: &Arc<Self>, conn: &Connection, code: quinn::VarInt) -> Result<Registration, NetError> {
        let leaf = crate::identity::peer_leaf(conn)?;
        let mut key = [0u8; 32];
        key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref()).as_ref());
        let replaced = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            let conns = live.entry(key).or_default();
            conns.push_back(conn.clone());
            if conns.len() > self.per_peer_max {
                conns.pop_front()
            } else {
                None
            }
        };
        if let Some(old) = replaced {
            tracing::info!(
                remote = %conn.remote_address(),
                old_remote = %old.remote_address(),
                "a newer connection with the same certificate replaces the oldest one"
            );
            old.close(code, b"replaced by a newer connection with the same certificate");
        }
        Ok(Registration { peers: self.clone(), key, id: conn.stable_id() })
    }

    /// Closes every registered connection with `code` (after new TLS material: each peer then
    /// reconnects and is verified again).
    pub fn close_all(&self, code: quinn::VarInt, reason: &[u8]) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for c in live.values().flatten() {
            c.close(code, reason);
        }
    }

    /// Connections registered now, in all.
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).values().map(VecDeque::len).sum()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.peers.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conns) = live.get_mut(&self.key) {
            conns.retain(|c| c.stable_id() != self.id);
            if conns.is_empty() {
                live.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_endpoint_handshakes_at_once() {
        assert_eq!(decide(0, 0, false, true), Admission::Handshake);
        assert_eq!(decide(RETRY_ABOVE - 1, RETRY_ABOVE - 1, false, true), Admission::Handshake);
    }

    #[test]
    fn a_busy_endpoint_asks_unproven_sources_for_a_retry() {
        assert_eq!(decide(RETRY_ABOVE, 0, false, true), Admission::Retry);
        // Even when full: a Retry costs nothing and lets a real peer come back validated.
        assert_eq!(decide(HANDSHAKES_MAX, HANDSHAKES_PER_ADDRESS_MAX, false, true), Admission::Retry);
        // Proven sources skip it.
        assert_eq!(decide(RETRY_ABOVE, 0, true, false), Admission::Handshake);
    }

    #[test]
    fn limits_in_all_and_per_address_refuse() {
        assert_eq!(decide(HANDSHAKES_MAX, 0, true, false), Admission::Refuse(Refusal::HandshakesFull));
        assert_eq!(decide(HANDSHAKES_MAX - 1, HANDSHAKES_PER_ADDRESS_MAX - 1, true, false), Admission::Handshake);
        assert_eq!(
            decide(HANDSHAKES_MAX - 1, HANDSHAKES_PER_ADDRESS_MAX, true, false),
            Admission::Refuse(Refusal::AddressFull)
        );
        // A source that cannot be asked to retry (it already echoed a token that was no good)
        // is held to the same limits.
        assert_eq!(decide(HANDSHAKES_MAX, 0, false, false), Admission::Refuse(Refusal::HandshakesFull));
    }

    #[test]
    fn unproven_sources_never_reach_an_address_limit() {
        // Whatever the counts, an unvalidated source that may be retried either handshakes
        // while fewer than RETRY_ABOVE are in progress, or is retried: so unproven attempts
        // from one address never exceed RETRY_ABOVE < HANDSHAKES_PER_ADDRESS_MAX, and a
        // spoofer cannot use up a real terminal's address share.
        for total in 0..=HANDSHAKES_MAX + 1 {
            for from in [0, RETRY_ABOVE, HANDSHAKES_PER_ADDRESS_MAX] {
                let a = decide(total, from, false, true);
                assert!(a != Admission::Refuse(Refusal::AddressFull) || from >= HANDSHAKES_PER_ADDRESS_MAX);
                if total >= RETRY_ABOVE {
                    assert_eq!(a, Admission::Retry);
                }
            }
        }
    }

    #[tokio::test]
    async fn slots_are_given_back() {
        let gate = Gate::new();
        let addr: IpAddr = "10.0.0.1".parse().expect("literal");
        {
            let mut c = gate.counts.lock().expect("fresh lock");
            c.total = 1;
            c.by_address.insert(addr, 1);
        }
        let slot = Slot { gate: gate.clone(), address: addr };
        assert_eq!(gate.in_progress(), 1);
        drop(slot);
        assert_eq!(gate.in_progress(), 0);
        assert!(gate.counts.lock().expect("lock").by_address.is_empty());
    }
}
