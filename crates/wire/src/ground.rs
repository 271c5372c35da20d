//! The ground link (master ↔ issuer): the signed BIN list, the probe, and the consolidated
//! authorization batch with its results.
//!
//! A batch is announced by a header (id, count, totals, digest) and streamed in chunks; the
//! issuer decides every item, stores the decisions durably, and only then streams results back.
//! The same batch id always carries the same content: the issuer answers a known batch from its
//! stored results, refuses a known id with different content, and never decides a payment id
//! twice, whichever batch it arrives in.

use std::fmt;

use bincode::{Decode, Encode};

use crate::{Currency, EmvData, Expiry, HotListUpdate, Money, Pan, PaymentId, PointOfSale, SignedBinList};

/// ALPN protocol name of the ground link.
pub const GROUND_ALPN: &[u8] = b"inflight-ground/1";
/// Version carried in `Hello`. 2: the header's digest covers no card data; decline reasons
/// `capture_time_out_of_bounds` and `expiry_mismatch`. 3: reversals (`AircraftMsg::Reverse`,
/// `IssuerMsg::Reversed`). 4: `BatchItem::late` (the deferred-authorization deadline). 5: the
/// hot-card list (`AircraftMsg::FetchHotList`, `IssuerMsg::HotList`). 6: card-present evidence
/// (`BatchItem::pos`, `deferred`, `emv`; BIN rules' entry modes and CVM; decline reasons
/// `cryptogram_invalid`, `atc_replayed`, `entry_mode_not_allowed`, `cvm_required`), and the
/// closed flight's manifest (`AircraftMsg::ManifestPart`, `IssuerMsg::ManifestAck`).
pub const GROUND_PROTOCOL_VERSION: u16 = 6;
/// Largest frame on the ground link: a chunk of items or results, or a BIN list. A chunk of
/// [`BATCH_CHUNK_MAX`] items with chip data is up to about 115 KiB (each item at most about 225
/// bytes: the chip data, every tag once, is at most 152); `tests/format.rs` encodes the largest.
pub const GROUND_FRAME_BYTES_MAX: usize = 128 * 1024;
/// Items or results per chunk frame.
pub const BATCH_CHUNK_MAX: usize = 512;
/// Most payments in one batch. A flight's sales are far fewer; past this the master seals
/// several batches one after the other.
pub const BATCH_PAYMENTS_MAX: u32 = 1_000_000;

/// The id of a batch, minted by the master like a payment id (capture-time prefix + random).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct BatchId(pub [u8; 16]);

impl BatchId {
    /// When the master sealed the batch: the time prefix it minted the id with (milliseconds
    /// since the Unix epoch, as in a payment id). Fixed for every re-send of the batch, which
    /// is why an item's `late` is judged against it.
    pub fn sealed_unix_ms(self) -> u64 {
        PaymentId::from_bytes(self.0).unix_ms()
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchId({self})")
    }
}

/// What a batch is: recorded durably by the master before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BatchHeader {
    /// The batch.
    pub id: BatchId,
    /// The aircraft that captured it.
    pub aircraft: String,
    /// The flight it was captured on.
    pub flight: String,
    /// Number of items.
    pub count: u32,
    /// Total per currency, minor units.
    pub totals: Vec<(Currency, u64)>,
    /// SHA-256 over the card-free fields of the items in order (payment id, amount, currency,
    /// capture time): the same id must always carry this content. Card data is compared per
    /// payment id by each side under its own key, never hashed in the clear.
    pub digest: [u8; 32],
}

/// One payment in a batch: what the issuer needs to authorize it, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BatchItem {
    /// The payment (idempotency key at the issuer).
    pub id: PaymentId,
    /// Card number.
    pub pan: Pan,
    /// Card expiry.
    pub expiry: Expiry,
    /// Amount.
    pub amount: Money,
    /// When it was captured (terminal clock).
    pub captured_unix_ms: u64,
    /// Sealed after its deferred-authorization deadline (capture + the master's
    /// `deadline.window_secs`, 24 h by default): carried anyway, never dropped; the issuer
    /// records it. Not covered by the header's digest nor by the issuer's content digest: it
    /// describes the delivery, not the payment.
    pub late: bool,
    /// How and where it was taken.
    pub pos: PointOfSale,
    /// A deferred authorization: the card was present, but the issuer decides later, offline
    /// from the sale. Always true from an aircraft; explicit so the issuer never has to infer it.
    pub deferred: bool,
    /// The chip's data (chip and contactless payments), whose cryptogram the issuer verifies.
    pub emv: Option<EmvData>,
}

/// Why the issuer declined a payment. Stable names via [`DeclineReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub enum DeclineReason {
    /// No account for this card.
    UnknownCard,
    /// The account is blocked or closed.
    AccountBlocked,
    /// The card expired before the capture.
    Expired,
    /// The card's BIN is not enrolled for in-flight payment.
    BinNotEnrolled,
    /// The currency is not accepted for this card.
    CurrencyNotAccepted,
    /// Over the available credit or balance.
    InsufficientFunds,
    /// Over the programme's per-transaction limit.
    OverTxnLimit,
    /// Captured at a time the aircraft could not have seen: after the batch reached the issuer
    /// (beyond a clock allowance), or longer ago than the issuer accepts.
    CaptureTimeOutOfBounds,
    /// The card's expiry is not the one on file.
    ExpiryMismatch,
    /// The chip's application cryptogram does not verify over the item's data (an amount or
    /// currency altered after the card signed it, or chip data that is not the card's), or a
    /// chip entry mode without chip data.
    CryptogramInvalid,
    /// The chip's transaction counter was seen before for this card, or is far behind the
    /// highest seen: a replayed cryptogram.
    AtcReplayed,
    /// The programme does not take this entry mode offline.
    EntryModeNotAllowed,
    /// The programme requires the cardholder's PIN, verified by the chip, and it was not.
    CvmRequired,
}

impl DeclineReason {
    /// Stable machine-readable name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::UnknownCard => "unknown_card",
            DeclineReason::AccountBlocked => "account_blocked",
            DeclineReason::Expired => "expired",
            DeclineReason::BinNotEnrolled => "bin_not_enrolled",
            DeclineReason::CurrencyNotAccepted => "currency_not_accepted",
            DeclineReason::InsufficientFunds => "insufficient_funds",
            DeclineReason::OverTxnLimit => "over_txn_limit",
            DeclineReason::CaptureTimeOutOfBounds => "capture_time_out_of_bounds",
            DeclineReason::ExpiryMismatch => "expiry_mismatch",
            DeclineReason::CryptogramInvalid => "cryptogram_invalid",
            DeclineReason::AtcReplayed => "atc_replayed",
            DeclineReason::EntryModeNotAllowed => "entry_mode_not_allowed",
            DeclineReason::CvmRequired => "cvm_required",
        }
    }
}

/// The issuer's decision on one payment.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum AuthOutcome {
    /// Approved, with the issuer's authorization code.
    Approved {
        /// Six-character authorization code.
        auth_code: String,
    },
    /// Declined.
    Declined(DeclineReason),
}

/// One result, as returned.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AuthResult {
    /// The payment.
    pub id: PaymentId,
    /// The decision.
    pub outcome: AuthOutcome,
}

/// Master → issuer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum AircraftMsg {
    /// First frame.
    Hello {
        /// Must equal [`GROUND_PROTOCOL_VERSION`].
        version: u16,
        /// The aircraft (also bound to its certificate).
        aircraft: String,
    },
    /// Link probe.
    Ping {
        /// Echoed in `Pong`.
        nonce: u64,
    },
    /// Asks for the current BIN list unless the master already has `have_version` or newer.
    FetchBinList {
        /// The version the master holds.
        have_version: Option<u64>,
    },
    /// Announces a batch; its items follow.
    BatchBegin(BatchHeader),
    /// A chunk of items, in batch order from `first_seq`.
    BatchItems {
        /// The batch.
        batch: BatchId,
        /// Position of the first item in the batch.
        first_seq: u32,
        /// At most [`BATCH_CHUNK_MAX`] items.
        items: Vec<BatchItem>,
    },
    /// All items sent.
    BatchEnd {
        /// The batch.
        batch: BatchId,
    },
    /// Reverse these payments (voided by their sale app after they were sealed into a batch
    /// the issuer has answered). Idempotent per payment id; answered by `Reversed` once durable.
    Reverse {
        /// At most [`BATCH_CHUNK_MAX`] payment ids.
        ids: Vec<PaymentId>,
    },
    /// Asks for the hot-card list: only what changed since `have_version` when the issuer can,
    /// else the whole list. Answered by `IssuerMsg::HotList`.
    FetchHotList {
        /// The version the master holds.
        have_version: Option<u64>,
    },
    /// A part of a closed flight's manifest (its JSON, as `inflight-master close-flight`
    /// prints it), parts in order from 0; the issuer answers the last with `ManifestAck`.
    ManifestPart {
        /// The flight.
        flight: String,
        /// This part's position, from 0.
        part: u32,
        /// Whether it is the last part.
        last: bool,
        /// At most [`MANIFEST_PART_BYTES_MAX`] bytes of the manifest's JSON.
        bytes: Vec<u8>,
        /// On the last part: the aircraft's signature over the whole JSON, with its
        /// certificate's key (empty on the others).
        signature: Vec<u8>,
    },
}

/// Most bytes of a manifest in one `ManifestPart` frame.
pub const MANIFEST_PART_BYTES_MAX: usize = 96 * 1024;
/// Most bytes of a whole manifest the issuer takes over the ground link (a flight of
/// 100,000 payments, at about 250 bytes each in JSON).
pub const MANIFEST_BYTES_MAX: usize = 32 * 1024 * 1024;
/// The issuer signs its acknowledgement of a manifest under this label (Ed25519, the BIN
/// list's key): it can never pass for a BIN list or a hot list head.
pub const MANIFEST_ACK_SIGNING_LABEL: &[u8] = b"inflight/v1/manifest-ack\0";

/// The issuer's acknowledgement of a closed flight's manifest: `body` is JSON (`flight`,
/// `chain`, `payments`, `decisions`, `mismatches`, as `inflight-issuer reconcile` prints it),
/// `signature` Ed25519 over [`MANIFEST_ACK_SIGNING_LABEL`] ++ `body`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedManifestAck {
    /// The acknowledgement, JSON.
    pub body: Vec<u8>,
    /// Ed25519 signature over the label and `body`.
    pub signature: Vec<u8>,
}

/// What the issuer did with one reversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum ReversalOutcome {
    /// The payment was approved: its amount is released to the account (once, however often
    /// the reversal comes).
    Reversed {
        /// The amount released, minor units of the payment's currency.
        released_minor: u64,
    },
    /// The payment was declined: nothing was charged, nothing to release.
    NotCharged,
    /// The issuer has not decided this payment (its batch never reached it, or was refused):
    /// nothing recorded; the master keeps the reversal.
    Unknown,
}

/// One reversal's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct ReversalResult {
    /// The payment.
    pub id: PaymentId,
    /// What the issuer did.
    pub outcome: ReversalOutcome,
}

/// Issuer → master.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum IssuerMsg {
    /// First frame.
    Hello {
        /// Must equal [`GROUND_PROTOCOL_VERSION`].
        version: u16,
        /// The issuer's name.
        issuer: String,
    },
    /// Probe answer.
    Pong {
        /// From the `Ping`.
        nonce: u64,
    },
    /// The current list, or `None` when the master's version is current.
    BinList(Option<SignedBinList>),
    /// A chunk of results, in batch order from `first_seq`. Sent only after every decision of
    /// the batch is durable at the issuer.
    BatchResults {
        /// The batch.
        batch: BatchId,
        /// Position of the first result.
        first_seq: u32,
        /// At most [`BATCH_CHUNK_MAX`] results.
        results: Vec<AuthResult>,
    },
    /// Every result of the batch has been sent.
    BatchDone {
        /// The batch.
        batch: BatchId,
        /// Number of results sent.
        count: u32,
    },
    /// The batch is refused (its id was used with other content, or its items do not match its
    /// header). Nothing of it was decided under this id.
    BatchRefused {
        /// The batch.
        batch: BatchId,
        /// Why.
        reason: String,
    },
    /// The issuer closes the link.
    Error {
        /// Why.
        message: String,
    },
    /// The results of a `Reverse`, in its order, sent once every reversal is durable. (After
    /// `Error`, so that every earlier message keeps its encoding.)
    Reversed {
        /// One per id of the `Reverse`.
        results: Vec<ReversalResult>,
    },
    /// The answer to `FetchHotList`: a delta from the master's version, or the whole list.
    HotList(HotListUpdate),
    /// The answer to a manifest's last `ManifestPart`: what the issuer found comparing it with
    /// its decisions, signed.
    ManifestAck(SignedManifestAck),
}
