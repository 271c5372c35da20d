//! Who gets a handshake at all: the gate in front of every server endpoint.
//!
//! A QUIC Initial costs an attacker one datagram, from any source address it likes, and costs
//! the server a TLS state until the handshake ends. Counting such half-open handshakes against
//! the terminal limit (as the master once did) let a 2 Mbit/s spoofed flood keep every terminal
//! out. So handshakes are admitted here, apart from the authenticated connections a daemon
//! counts afterwards:
//!
//! - at most [`Limits::handshakes_max`] in progress at once, and a few from one address (more
//!   from an address that authenticated lately: a cabin behind one address);
//! - once [`Limits::retry_above`] are in progress, a source that has not proven its address is
//!   sent a QUIC Retry (stateless: it costs the server nothing to send and nothing to forget), so
//!   a spoofed flood never holds more than that many slots while real peers, which answer the
//!   Retry, get through;
//! - every admitted handshake has a deadline ([`handshake`]).
//!
//! The decision itself is the pure [`decide`]; [`Gate`] keeps the counts.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{Connection, Incoming};

use crate::NetError;

/// The gate's limits, per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most handshakes in progress at once.
    pub handshakes_max: usize,
    /// Most in progress from one address (an IPv4 address or an IPv6 /64) that authenticated
    /// recently ([`KNOWN_ADDRESS_TTL`]): a cabin's terminals behind one address reconnecting at
    /// once.
    pub per_known_address_max: usize,
    /// Most in progress from any other address: what one attacker address can hold, even after
    /// answering a Retry.
    pub per_unknown_address_max: usize,
    /// Past this many in progress, unvalidated sources must answer a QUIC Retry first. Below it
    /// the extra round trip is not worth paying.
    pub retry_above: usize,
}

impl Limits {
    /// The master's terminal side: a cabin of at most a few thousand terminals, finishing their
    /// handshakes in milliseconds. A handshake costs a TLS state (a few KiB), so 256 in progress
    /// is far above what a cabin needs while bounding what a flood can hold; an attacker needs 32
    /// unknown addresses that answer Retries to fill it.
    pub const TERMINALS: Limits =
        Limits { handshakes_max: 256, per_known_address_max: 64, per_unknown_address_max: 8, retry_above: 16 };

    /// The issuer's side: up to `AIRCRAFT_MAX` aircraft probing about once a second over
    /// satellite round trips, often from one provider's address: no per-address limit to speak
    /// of, and Retries only under real pressure.
    pub const GROUND: Limits = Limits {
        handshakes_max: 4_096,
        per_known_address_max: 4_096,
        per_unknown_address_max: 4_096,
        retry_above: 1_024,
    };
}

/// How long an address that authenticated counts as known.
pub const KNOWN_ADDRESS_TTL: Duration = Duration::from_secs(3_600);

/// Most known addresses remembered (the oldest is forgotten first).
pub const KNOWN_ADDRESSES_MAX: usize = 4_096;

/// Handshakes are counted per IPv4 address, and per IPv6 /64 (one host is given a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(std::net::Ipv6Addr::from(o))
            }
        },
    }
}

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

/// What one connection attempt is, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Proven handshakes in progress from its address.
    pub from_address: usize,
    /// Its address authenticated recently.
    pub known_address: bool,
    /// It echoed a Retry token: its address is proven.
    pub address_validated: bool,
    /// It may be asked to prove its address (it has not been already).
    pub may_retry: bool,
}

/// Decides on one connection attempt, given the handshakes in progress in all.
///
/// An attempt whose source address is not proven is never refused for its address (a spoofer
/// could otherwise use up a real terminal's share by forging its address): it is admitted while
/// few handshakes are in progress and sent a Retry otherwise. Per-address limits count and apply
/// to proven attempts only.
pub fn decide(limits: &Limits, in_progress: usize, a: Attempt) -> Admission {
    if !a.address_validated {
        return if in_progress < limits.retry_above.min(limits.handshakes_max) {
            Admission::Handshake
        } else if a.may_retry {
            Admission::Retry
        } else {
            // It echoed a token that did not validate: quinn has answered it already.
            Admission::Refuse(Refusal::HandshakesFull)
        };
    }
    if in_progress >= limits.handshakes_max {
        return Admission::Refuse(Refusal::HandshakesFull);
    }
    let per_address = if a.known_address { limits.per_known_address_max } else { limits.per_unknown_address_max };
    if a.from_address >= per_address {
        return Admission::Refuse(Refusal::AddressFull);
    }
    Admission::Handshake
}

/// The handshakes in progress on one endpoint, and the addresses that authenticated lately.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    known: HashMap<IpAddr, Instant>,
    refused_since_log: u64,
    last_log: Option<Instant>,
}

/// A handshake's place in the gate, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Gate>,
    /// Counted against this address (proven attempts only).
    address: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.gate.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(address) = self.address {
            if let Some(n) = c.by_address.get_mut(&address) {
                *n -= 1;
                if *n == 0 {
                    c.by_address.remove(&address);
                }
            }
        }
    }
}

impl Gate {
    /// A gate with nothing in progress.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, counts: Mutex::default() })
    }

    /// Records that a peer at `ip` finished a handshake (its certificate verified): its address
    /// is known for [`KNOWN_ADDRESS_TTL`].
    pub fn authenticated(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.known.len() >= KNOWN_ADDRESSES_MAX && !c.known.contains_key(&address_key(ip)) {
            c.known.retain(|_, t| now.duration_since(*t) < KNOWN_ADDRESS_TTL);
            if c.known.len() >= KNOWN_ADDRESSES_MAX {
                if let Some(oldest) = c.known.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                    c.known.remove(&oldest);
                }
            }
        }
        c.known.insert(address_key(ip), now);
    }

    /// Handshakes in progress now.
    pub fn in_progress(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Admits, retries or refuses `incoming`. `Some` holds the admitted attempt and its slot;
    /// `None` means it was answered (Retry or refusal) and is gone.
    pub fn admit(self: &Arc<Self>, incoming: Incoming, what: &str) -> Option<(Incoming, Slot)> {
        let address = address_key(incoming.remote_address().ip());
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let attempt = Attempt {
            from_address: c.by_address.get(&address).copied().unwrap_or(0),
            known_address: c.known.get(&address).is_some_and(|t| t.elapsed() < KNOWN_ADDRESS_TTL),
            address_validated: incoming.remote_address_validated(),
            may_retry: incoming.may_retry(),
        };
        match decide(&self.limits, c.total, attempt) {
            Admission::Handshake => {
                c.total += 1;
                let counted = attempt.address_validated.then_some(address);
                if let Some(a) = counted {
                    *c.by_address.entry(a).or_insert(0) += 1;
                }
                drop(c);
                Some((incoming, Slot { gate: self.clone(), address: counted }))
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
    live: Mutex<Live>,
}

#[derive(Debug, Default)]
struct Live {
    by_cert: HashMap<[u8; 32], VecDeque<Connection>>,
    /// Serial numbers of revoked certificates: refused at registration (a handshake that began
    /// under the previous revocation list and ends after the new one is installed) and closed
    /// when a new list names them.
    revoked: std::collections::HashSet<Vec<u8>>,
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

    /// Reads the revocation list in `crl` (if configured) and installs what it revokes
    /// ([`PeerConnections::set_revoked`]); a list that does not read is logged and changes
    /// nothing (the verifier keeps the previous one too).
    pub fn revoke_from(&self, crl: Option<&std::path::Path>, code: quinn::VarInt) {
        let Some(path) = crl else { return };
        match crate::tls::crls(path).and_then(|l| crate::tls::revoked_serials(&l)) {
            Ok(serials) => {
                let n = serials.len();
                let closed = self.set_revoked(serials, code);
                tracing::info!(revoked = n, closed, "revocation list installed");
            }
            Err(e) => tracing::error!(error = %e, "revocation list does not read; nothing changed"),
        }
    }

    /// Installs the serial numbers now revoked, and closes (with `code`) every registered
    /// connection whose certificate they name. Returns how many were closed.
    pub fn set_revoked(&self, serials: std::collections::HashSet<Vec<u8>>, code: quinn::VarInt) -> usize {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.revoked = serials;
        let mut closed = 0;
        let Live { by_cert, revoked } = &mut *live;
        for conns in by_cert.values() {
            for c in conns {
                let revoked_now = crate::identity::peer_leaf(c)
                    .ok()
                    .and_then(|leaf| crate::tls::serial(&leaf).ok())
                    .is_some_and(|s| revoked.contains(&s));
                if revoked_now {
                    c.close(code, b"certificate revoked");
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Records `conn` under its certificate, closing (with `code`) the oldest connection of the
    /// same certificate if that makes one too many. The certificate was verified by the
    /// handshake; it is keyed by a hash of its bytes (a public document, not a secret).
    pub fn register(self: &Arc<Self>, conn: &Connection, code: quinn::VarInt) -> Result<Registration, NetError> {
        let leaf = crate::identity::peer_leaf(conn)?;
        let serial = crate::tls::serial(&leaf)?;
        let mut key = [0u8; 32];
        key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref()).as_ref());
        let replaced = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            if live.revoked.contains(&serial) {
                return Err(NetError::Identity("certificate revoked".into()));
            }
            let conns = live.by_cert.entry(key).or_default();
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

    /// Connections registered now, in all.
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).by_cert.values().map(VecDeque::len).sum()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.peers.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conns) = live.by_cert.get_mut(&self.key) {
            conns.retain(|c| c.stable_id() != self.id);
            if conns.is_empty() {
                live.by_cert.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits::TERMINALS;

    fn attempt(from_address: usize, known: bool, validated: bool) -> Attempt {
        Attempt { from_address, known_address: known, address_validated: validated, may_retry: !validated }
    }

    #[test]
    fn a_quiet_endpoint_handshakes_at_once() {
        assert_eq!(decide(&L, 0, attempt(0, false, false)), Admission::Handshake);
        assert_eq!(decide(&L, L.retry_above - 1, attempt(0, false, false)), Admission::Handshake);
    }

    #[test]
    fn a_busy_endpoint_asks_unproven_sources_for_a_retry() {
        assert_eq!(decide(&L, L.retry_above, attempt(0, true, false)), Admission::Retry);
        // Even when full: a Retry costs nothing and lets a real peer come back validated.
        assert_eq!(decide(&L, L.handshakes_max, attempt(L.per_known_address_max, true, false)), Admission::Retry);
        // Proven sources skip it.
        assert_eq!(decide(&L, L.retry_above, attempt(0, false, true)), Admission::Handshake);
    }

    #[test]
    fn unproven_attempts_are_never_refused_for_their_address() {
        // A spoofer forging a terminal's address gets Retries, never uses up that address.
        for total in 0..=L.handshakes_max + 1 {
            for from in [0, L.per_unknown_address_max, L.per_known_address_max, 10_000] {
                for known in [false, true] {
                    let a = decide(&L, total, attempt(from, known, false));
                    assert_ne!(a, Admission::Refuse(Refusal::AddressFull));
                    if total >= L.retry_above {
                        assert_eq!(a, Admission::Retry);
                    }
                }
            }
        }
    }

    #[test]
    fn limits_in_all_and_per_address_refuse_proven_attempts() {
        assert_eq!(decide(&L, L.handshakes_max, attempt(0, true, true)), Admission::Refuse(Refusal::HandshakesFull));
        let almost = L.handshakes_max - 1;
        assert_eq!(decide(&L, almost, attempt(L.per_known_address_max - 1, true, true)), Admission::Handshake);
        assert_eq!(
            decide(&L, almost, attempt(L.per_known_address_max, true, true)),
            Admission::Refuse(Refusal::AddressFull)
        );
        // An address that never authenticated gets a few, not a cabin's worth.
        assert_eq!(decide(&L, almost, attempt(L.per_unknown_address_max - 1, false, true)), Admission::Handshake);
        assert_eq!(
            decide(&L, almost, attempt(L.per_unknown_address_max, false, true)),
            Admission::Refuse(Refusal::AddressFull)
        );
    }

    #[test]
    fn an_attacker_needs_many_addresses_to_fill_the_terminal_side() {
        // Proven (Retry-answering) attempts from unknown addresses, one address after another,
        // until the gate refuses one for being full.
        let (mut in_progress, mut addresses) = (0, 0);
        'fill: loop {
            addresses += 1;
            for from in 0.. {
                match decide(&L, in_progress, attempt(from, false, true)) {
                    Admission::Handshake => in_progress += 1,
                    Admission::Refuse(Refusal::AddressFull) => break,
                    _ => break 'fill,
                }
            }
        }
        assert!(addresses >= 32, "{addresses} addresses fill the gate");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("literal");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("literal");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("literal");
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().expect("literal");
        assert_eq!(address_key(mapped), "10.0.0.7".parse::<IpAddr>().expect("literal"));
    }

    #[test]
    fn known_addresses_are_bounded() {
        let gate = Gate::new(L);
        for i in 0..(KNOWN_ADDRESSES_MAX as u32 + 10) {
            gate.authenticated(IpAddr::V4(std::net::Ipv4Addr::from(i)));
        }
        assert_eq!(gate.counts.lock().expect("lock").known.len(), KNOWN_ADDRESSES_MAX);
    }

    #[tokio::test]
    async fn slots_are_given_back() {
        let gate = Gate::new(L);
        let addr: IpAddr = "10.0.0.1".parse().expect("literal");
        {
            let mut c = gate.counts.lock().expect("fresh lock");
            c.total = 1;
            c.by_address.insert(addr, 1);
        }
        let slot = Slot { gate: gate.clone(), address: Some(addr) };
        assert_eq!(gate.in_progress(), 1);
        drop(slot);
        assert_eq!(gate.in_progress(), 0);
        assert!(gate.counts.lock().expect("lock").by_address.is_empty());
    }
}
