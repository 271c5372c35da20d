//! The capture API: JSON lines on the terminal's Unix socket. Field names are a stable
//! interface (README "Capture API"); fields may be added, never renamed.

use serde::{Deserialize, Serialize};

/// One request line.
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Take a payment.
    Capture(CaptureBody),
    /// Void a payment (by its id or the sale's request id): never carried if the master has not
    /// sealed it into a batch, else reversed by the issuer.
    Void {
        /// A payment id (32 hex digits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment_id: Option<String>,
        /// The sale app's request id of the capture.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// The terminal's state, or one payment's.
    Status {
        /// A payment id (32 hex digits); absent for the terminal summary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment_id: Option<String>,
    },
}

/// A capture request. `pan` is never logged or echoed.
#[derive(Deserialize, Serialize)]
pub struct CaptureBody {
    /// Card number, digits only.
    pub pan: String,
    /// `MM/YY`.
    pub expiry: String,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// Seat or crew position.
    pub seat: String,
    /// Articles sold.
    #[serde(default)]
    pub items: Vec<Item>,
    /// The sale app's own id for this sale (1-64 printable characters). A capture retried with
    /// the same id (after a timeout, a crash, a lost answer) gets the first capture's answer and
    /// never makes a second payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// How the card was read: `chip`, `contactless` or `key_entered`. Absent: `chip` when `emv`
    /// is given, else `key_entered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_mode: Option<String>,
    /// The card reader's chip data, BER-TLV as hexadecimal (card data: never logged or echoed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emv: Option<String>,
    /// Merchant category code of what was sold (four digits); absent: the terminal's
    /// `merchant_category`. A sale of several categories is one capture per category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcc: Option<String>,
}

impl std::fmt::Debug for CaptureBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureBody")
            .field("amount_minor", &self.amount_minor)
            .field("currency", &self.currency)
            .field("entry_mode", &self.entry_mode)
            .field("mcc", &self.mcc)
            .finish_non_exhaustive()
    }
}

/// A line item.
#[derive(Debug, Deserialize, Serialize)]
pub struct Item {
    /// Article code.
    pub sku: String,
    /// Units.
    pub quantity: u32,
    /// Price per unit, minor units.
    pub unit_amount_minor: u64,
}

/// The answer to a capture.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureAnswer {
    /// The payment's id; absent when refused before an id was minted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// `accepted` or `rejected`.
    pub outcome: String,
    /// Machine-readable reason when rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True when this answers a retry of an earlier capture with the same request id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}
