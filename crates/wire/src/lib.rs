//! The vocabulary of inflight: the types that cross a process boundary (payment records, the
//! messages of the terminal link) and how they are encoded, with the limits that bound them.
//!
//! This crate is pure. It knows nothing of sockets, clocks, tokio, quinn or sled. Every type that
//! can be decoded from bytes validates itself while decoding ("parse, don't validate"): a `Pan`
//! that exists has passed Luhn, a `Money` that exists is positive, a `TerminalId` is well formed.
//! Decoding arbitrary bytes never panics; it returns [`DecodeError`].

mod binlist;
mod card;
mod codec;
mod evidence;
mod ground;
mod hotlist;
mod ids;
mod money;
mod payment;
mod terminal;

pub use bincode::{Decode, Encode};
pub use binlist::{BinList, BinPrefix, BinRule, CardKind, SignedBinList, BIN_RULES_MAX};
pub use card::{
    mask_leading_digits, utc_date, CardError, Expiry, MaskedPan, Pan, MASK_HIDDEN_MIN, MASK_LEADING_MAX, MASK_TRAILING,
    PAN_DIGITS_MAX, PAN_DIGITS_MIN,
};
pub use codec::{decode, encode, DecodeError, PAYLOAD_BYTES_MAX};
pub use evidence::{
    bcd, CryptogramKind, EmvData, EntryMode, EvidenceError, Mcc, PointOfSale, TerminalType, CAT_LEVEL_IN_FLIGHT,
    EMV_TLV_BYTES_MAX,
};
pub use ground::{
    AircraftMsg, AuthOutcome, AuthResult, BatchHeader, BatchId, BatchItem, DeclineReason, IssuerMsg, ReversalOutcome,
    ReversalResult, SignedManifestAck, BATCH_CHUNK_MAX, BATCH_PAYMENTS_MAX, GROUND_ALPN, GROUND_FRAME_BYTES_MAX,
    GROUND_PROTOCOL_VERSION, MANIFEST_ACK_SIGNING_LABEL, MANIFEST_BYTES_MAX, MANIFEST_PART_BYTES_MAX,
};
pub use hotlist::{
    HotEntry, HotList, HotListHead, HotListUpdate, SignedHotHead, HOT_ENTRIES_MAX, HOT_ENTRY_BYTES,
    HOT_LIST_SIGNING_LABEL,
};
pub use ids::{IdError, PaymentId, TerminalId, TERMINAL_ID_BYTES_MAX};
pub use money::{Currency, Money, MoneyError, AMOUNT_MINOR_MAX};
pub use payment::{LineItem, Payment, PaymentError, LINE_ITEMS_MAX, SEAT_BYTES_MAX, SEAT_DIGIT_RUN_MAX, SKU_BYTES_MAX};
pub use terminal::{
    CancelOutcome, ErrorCode, MasterMsg, RefusalReason, TerminalMsg, Verdict, TERMINAL_ALPN, TERMINAL_FRAME_BYTES_MAX,
    TERMINAL_PROTOCOL_VERSION,
};
