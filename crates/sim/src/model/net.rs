//! The network between two nodes: connections that come and go. Within a connection frames
//! arrive in order, after a delay (a QUIC stream); when it breaks, each frame still on the way
//! is lost or, sometimes, still handled late by the receiver (a reader task that had it already)
//! — which is how re-sends become duplicates and arrive out of order across connections.

use crate::rng::Rng;

/// One link between two nodes (`A`: terminal or master side, `B`: master or issuer side).
#[derive(Debug, Clone)]
pub struct Link {
    /// The current connection; frames of older ones are stale.
    pub epoch: u64,
    /// Whether the current connection is up.
    pub connected: bool,
    /// A connection attempt is on its way.
    pub connecting: bool,
    /// No connection possible before this time (a partition or black-out).
    pub blocked_until: u64,
    /// Earliest delivery per direction, so frames of one connection stay in order.
    next_free: [u64; 2],
    /// One-way delay range, ms.
    delay: (u64, u64),
    /// Chance that a frame of a broken connection is still handled.
    late: f64,
}

/// Which way a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Towards the server side (terminal → master, master → issuer).
    Up = 0,
    /// Towards the client side.
    Down = 1,
}

impl Link {
    /// A link with no connection yet.
    pub fn new(delay: (u64, u64), late: f64) -> Self {
        Self { epoch: 0, connected: false, connecting: false, blocked_until: 0, next_free: [0; 2], delay, late }
    }

    /// When a frame sent now on the current connection arrives, or `None` without one.
    pub fn send(&mut self, rng: &mut Rng, now: u64, dir: Dir) -> Option<u64> {
        if !self.connected {
            return None;
        }
        let d = self.delay.0 + rng.below(self.delay.1 - self.delay.0 + 1);
        let at = (now + d).max(self.next_free[dir as usize]);
        self.next_free[dir as usize] = at;
        Some(at)
    }

    /// Whether a frame of connection `epoch` arriving now is handled.
    pub fn handled(&self, rng: &mut Rng, epoch: u64) -> bool {
        (epoch == self.epoch && self.connected) || rng.chance(self.late)
    }

    /// A new connection is up.
    pub fn open(&mut self, now: u64) {
        self.epoch += 1;
        self.connected = true;
        self.connecting = false;
        self.next_free = [now; 2];
    }

    /// The connection broke (both ends learn it).
    pub fn close(&mut self) {
        self.connected = false;
    }
}
