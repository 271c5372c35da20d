//! The terminal link (slave ↔ master): one enum per direction.
//!
//! One long-lived QUIC connection per terminal carries one bidirectional stream of
//! length-delimited frames. The first frame each way is `Hello`. Every state change is
//! confirmed by an application ack carrying the payment id: transport success alone never
//! counts as delivery, because closing a QUIC connection can drop data already sent.

use std::fmt;

use bincode::{Decode, Encode};

use crate::{AuthOutcome, HotList, Payment, PaymentId, SignedBinList, TerminalId};

/// ALPN protocol name of the terminal link.
pub const TERMINAL_ALPN: &[u8] = b"inflight-terminal/1";
/// Version carried in `Hello`; a peer speaking another version gets an error frame, then close.
/// 2: `Verdict::Held`, `TerminalMsg::Void`, `MasterMsg::VoidAck` (a payment is carried only once
/// its terminal confirms the sale app was told `accepted`). 3: refusals `terminal_full` and
/// `aircraft_full`, close codes `Busy` and `Replaced`. 4: `TerminalMsg::Cancel` and
/// `MasterMsg::CancelAck` (a sale app voids a payment it was told `accepted` for). 5:
/// `MasterMsg::HotList` (the issuer's signed hot-card list). 6: `Payment::pos` and `emv`
/// (card-present evidence), BIN rules' entry modes and CVM.
pub const TERMINAL_PROTOCOL_VERSION: u16 = 6;
/// Largest frame on the terminal link. A payment with its maximum line items is under 2 KiB;
/// 16 KiB leaves room for growth while bounding what one peer can make us buffer.
pub const TERMINAL_FRAME_BYTES_MAX: usize = 16 * 1024;

/// Terminal → master.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum TerminalMsg {
    /// First frame. The claimed id must match the terminal's certificate.
    Hello {
        /// Must equal [`TERMINAL_PROTOCOL_VERSION`].
        version: u16,
        /// The terminal's id, as in its certificate.
        terminal: TerminalId,
    },
    /// A captured payment, durable on the terminal. Sent again (same id) until acked.
    Submit {
        /// The payment.
        payment: Payment,
        /// True when the terminal has durably recorded that its sale app is told `accepted`:
        /// the master must then carry the payment to the issuer whatever its own checks say,
        /// recording them as flags. False: the master may refuse it, and must not seal it into a
        /// batch until the same payment comes again with `answered: true` (a sale app that was
        /// never told `accepted` is never charged). Re-sending a stored payment with `true` is
        /// how the terminal confirms it.
        answered: bool,
    },
    /// The terminal has durably stored the issuer's result for `id`.
    ResultAck {
        /// The payment.
        id: PaymentId,
    },
    /// The terminal voided `id`: its sale app was never told `accepted` and no retry claimed it
    /// in time. The master must never carry it; it answers `Ack` with `Refused(Voided)` once
    /// that is durable (or `Stored` if the terminal had confirmed it answered, which an honest
    /// terminal never voids).
    Void {
        /// The payment.
        id: PaymentId,
    },
    /// The sale app voided `id`, a payment it was told `accepted` for (the passenger changed
    /// their mind). Sent only after the master acked the payment `Stored`, and again until
    /// `CancelAck`. The master never seals it if it is not sealed yet; otherwise it has the
    /// issuer reverse it once decided.
    Cancel {
        /// The payment.
        id: PaymentId,
    },
}

/// Master → terminal.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum MasterMsg {
    /// First frame.
    Hello {
        /// Must equal [`TERMINAL_PROTOCOL_VERSION`].
        version: u16,
        /// The aircraft this master runs on.
        aircraft: String,
        /// The master's clock, milliseconds since the Unix epoch. The aircraft server's clock is
        /// the cabin's reference: a terminal whose own clock is off judges expiry and BIN-list
        /// validity, and stamps captures, with the master's time instead.
        unix_ms: u64,
    },
    /// The master's durable verdict on one payment. Sent only after the verdict is on disk;
    /// sent again, identically, for a re-sent payment.
    Ack {
        /// The payment this answers.
        id: PaymentId,
        /// What the master did with it.
        verdict: Verdict,
    },
    /// The master is closing this connection because of what the terminal sent.
    Error {
        /// Machine-readable cause.
        code: ErrorCode,
        /// Human-readable detail (never card data).
        message: String,
    },
    /// The issuer's current signed BIN list: sent on connect and on change.
    BinList(SignedBinList),
    /// The issuer's decision on one of this terminal's payments; sent until `ResultAck`.
    Result {
        /// The payment.
        id: PaymentId,
        /// Approved or declined.
        outcome: AuthOutcome,
    },
    /// The master's durable answer to a `Void`.
    VoidAck {
        /// The payment.
        id: PaymentId,
        /// False: voided (or never held), it will never be carried. True: the terminal had
        /// confirmed its sale app was told `accepted`, so the master carries it regardless.
        carried: bool,
    },
    /// The master's durable answer to a `Cancel`.
    CancelAck {
        /// The payment.
        id: PaymentId,
        /// What became of it.
        outcome: CancelOutcome,
    },
    /// The issuer's hot-card list the master holds (sent on connect and whenever it changes).
    /// The terminal verifies the issuer's signature itself. (Last, so every earlier message
    /// keeps its encoding.) Boxed: every queued frame is as large as the largest variant, and a
    /// master queues acks for a thousand terminals (the box encodes as the list itself).
    HotList(Box<HotList>),
}

/// What the master did with a sale app's void of a payment it was told `accepted` for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum CancelOutcome {
    /// Not yet sealed into a batch: it never will be; nothing is charged.
    Voided,
    /// Already sealed into a batch (maybe decided): the issuer is asked to reverse it once it
    /// has decided it, releasing the funds if it approved.
    ReversalPending,
}

impl CancelOutcome {
    /// Stable machine-readable name.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelOutcome::Voided => "voided",
            CancelOutcome::ReversalPending => "reversal_pending",
        }
    }
}

/// What the master did with a submitted payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum Verdict {
    /// Stored durably, and the terminal has confirmed its sale app was told `accepted`: it will
    /// be carried to the issuer.
    Stored,
    /// Refused by an aircraft-wide check; it will not be carried (the terminal had not answered).
    Refused(RefusalReason),
    /// Stored durably, but not carried until the terminal sends it again marked `answered`
    /// (its sale app told `accepted`); voided if it never does.
    Held,
}

/// Why the master refused a payment. Stable machine-readable names via [`RefusalReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum RefusalReason {
    /// The card's total on this flight, across all terminals, would exceed its limit.
    OverCardFlightLimit,
    /// A payment with this id but different content is already stored: a terminal bug, refused
    /// loudly rather than guessed at.
    IdConflict,
    /// The terminal voided it: its sale app was never told `accepted`. Never carried.
    Voided,
    /// The terminal holds as many open payments at the master as one terminal may (a broken
    /// or stolen terminal): this one is not stored.
    TerminalFull,
    /// The aircraft holds as many open payments as it may, and this terminal its fair share of
    /// them: this one is not stored.
    AircraftFull,
}

impl RefusalReason {
    /// The reason's stable name, as used in JSON answers.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::OverCardFlightLimit => "over_card_flight_limit",
            RefusalReason::IdConflict => "id_conflict",
            RefusalReason::Voided => "voided",
            RefusalReason::TerminalFull => "terminal_full",
            RefusalReason::AircraftFull => "aircraft_full",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection is being closed, in an `Error` frame and as the QUIC close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum ErrorCode {
    /// `Hello` carried another protocol version.
    VersionMismatch = 1,
    /// A frame did not decode, or was over the size limit.
    Malformed = 2,
    /// The terminal claimed an id its certificate does not carry, or submitted under another id.
    WrongTerminal = 3,
    /// A valid message arrived where the protocol does not allow it (e.g. no `Hello` first).
    Protocol = 4,
    /// The master is shutting down.
    ShuttingDown = 5,
    /// The master serves as many terminals as it may (`terminals_max`): retry later.
    Busy = 6,
    /// A newer connection with the same certificate replaced this one.
    Replaced = 7,
}

impl ErrorCode {
    /// The code as a QUIC application close code.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}
