//! The decisions of inflight, as state machines with no I/O and no clock reads.
//!
//! Drivers (the slave and master daemons, tests, the simulator) feed events in with the current
//! time and carry out what comes back. Nothing here touches tokio, quinn, sled or the system
//! clock, so the same code runs in a unit test, a model-based test and a live daemon.
//!
//! - [`capture`]: is a sale app's request a payment this terminal may store?
//! - [`terminal`]: the terminal's capture → verdict wait → durable answer cycle, voids of
//!   payments never answered, results; it drives the [`outbox`].
//! - [`outbox`]: which stored payments a terminal must (re)send to the master, and when.
//! - [`aggregator`]: the master's verdict on each submitted payment, exactly once per id, the
//!   per-card-per-flight limit, and each payment's progress to the issuer and back.
//! - [`deadline`]: the deferred-authorization deadline: when a payment is late, when the crew
//!   is warned.
//! - [`uploader`]: the header of each batch the master seals, the checks on the issuer's
//!   answers, and the rule that a sealed batch is sent again unchanged until it is answered.
//! - [`link`]: is the ground link up? (probes with hysteresis, crew override)
//! - [`binlist`]: which signed BIN list to hold (renewals, expired lists never win).
//! - [`hotlist`]: the issuer's hot-card list: verified, delta-updated, looked up by keyed hash.
//! - [`authorize`]: the issuer's decision on one payment.
//! - [`batch`]: the batch header's digest.
//! - [`manifest`]: the flight's closing manifest (books per terminal and currency, a keyed chain
//!   over the payment ids, a seal) and its reconciliation with the issuer's decisions.
//! - [`issuer`]: the issuer's acceptance of a batch (header, chunks, count, digest, payment ids
//!   already decided) and its "already decided" guard on each item.

pub mod aggregator;
pub mod authorize;
pub mod batch;
pub mod binlist;
pub mod capture;
pub mod chip;
pub mod deadline;
pub mod fuzz;
pub mod hotlist;
pub mod issuer;
pub mod link;
pub mod manifest;
pub mod outbox;
pub mod terminal;
pub mod uploader;
