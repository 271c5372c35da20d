//! The payment record a terminal captures and the aircraft carries to the issuer.

use bincode::{Decode, Encode};

use crate::{EmvData, Expiry, Money, Pan, PaymentId, PointOfSale, TerminalId};

/// Most line items on one payment: a cabin sale is a handful of articles.
pub const LINE_ITEMS_MAX: usize = 32;
/// Longest seat or crew position label, in bytes ("12A", "crew-galley-2").
pub const SEAT_BYTES_MAX: usize = 16;
/// Longest article code on a line item, in bytes.
pub const SKU_BYTES_MAX: usize = 32;
/// Longest run of digits a seat label may hold: no seat or crew position needs more, and a
/// card number typed into the seat field (it reaches the crew's report and status in clear) has
/// many more.
pub const SEAT_DIGIT_RUN_MAX: usize = 5;

/// Why a payment record is malformed (beyond its card and money, which validate themselves).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// Seat labels are 1-16 printable ASCII characters, with no run of more than
    /// [`SEAT_DIGIT_RUN_MAX`] digits.
    #[error(
        "seat must be 1-{SEAT_BYTES_MAX} printable ASCII characters, with at most {SEAT_DIGIT_RUN_MAX} digits in a row"
    )]
    BadSeat,
    /// At most [`LINE_ITEMS_MAX`] line items, each with a 1-32 byte printable SKU and a quantity > 0.
    #[error("line items: at most {LINE_ITEMS_MAX}, each with a 1-{SKU_BYTES_MAX} character SKU and quantity > 0")]
    BadLineItems,
    /// A chip or contactless payment carries chip data; a key-entered one none.
    #[error("chip data must come with a chip or contactless entry mode, and only with one")]
    ChipDataMismatch,
}

/// One article of a sale. Informational: the issuer authorizes the payment's total.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LineItem {
    /// Article code from the airline's catalogue.
    pub sku: String,
    /// Number of units, at least 1.
    pub quantity: u32,
    /// Price of one unit in the payment's currency, minor units.
    pub unit_amount_minor: u64,
}

/// A captured card payment. Contains the full card number: it lives only inside TLS on the wire
/// and encrypted at rest; its `Debug` shows the masked number.
#[derive(Debug, Clone, PartialEq, Eq, Encode)]
pub struct Payment {
    /// Minted by the capturing terminal; the idempotency key everywhere after.
    pub id: PaymentId,
    /// The terminal that captured it; must match the certificate of the connection carrying it.
    pub terminal: TerminalId,
    /// Card number (no CVV, PIN or track data is ever taken).
    pub pan: Pan,
    /// Card expiry.
    pub expiry: Expiry,
    /// Amount and currency.
    pub amount: Money,
    /// Seat or crew position where the sale took place.
    pub seat: String,
    /// Capture time on the terminal's clock, milliseconds since the Unix epoch.
    pub captured_unix_ms: u64,
    /// Articles sold, informational.
    pub items: Vec<LineItem>,
    /// How and where it was taken (entry mode, terminal type, merchant category).
    pub pos: PointOfSale,
    /// The chip's data for a chip or contactless payment (card data: sealed at rest like the
    /// card number, erased with it).
    pub emv: Option<EmvData>,
}

impl Payment {
    /// Checks the fields whose types cannot carry their own limits.
    pub fn check_shape(seat: &str, items: &[LineItem]) -> Result<(), PaymentError> {
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        let digit_run = seat.as_bytes().split(|b| !b.is_ascii_digit()).map(<[u8]>::len).max().unwrap_or(0);
        if seat.is_empty() || seat.len() > SEAT_BYTES_MAX || !printable(seat) || digit_run > SEAT_DIGIT_RUN_MAX {
            return Err(PaymentError::BadSeat);
        }
        let items_ok = items.len() <= LINE_ITEMS_MAX
            && items
                .iter()
                .all(|i| !i.sku.is_empty() && i.sku.len() <= SKU_BYTES_MAX && printable(&i.sku) && i.quantity > 0);
        if !items_ok {
            return Err(PaymentError::BadLineItems);
        }
        Ok(())
    }

    /// Checks that chip data comes with, and only with, an entry mode that reads the chip.
    pub fn check_evidence(pos: &PointOfSale, emv: Option<&EmvData>) -> Result<(), PaymentError> {
        if pos.entry_mode.reads_chip() != emv.is_some() {
            return Err(PaymentError::ChipDataMismatch);
        }
        Ok(())
    }
}

impl<C> Decode<C> for Payment {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        let p = Payment {
            id: Decode::decode(d)?,
            terminal: Decode::decode(d)?,
            pan: Decode::decode(d)?,
            expiry: Decode::decode(d)?,
            amount: Decode::decode(d)?,
            seat: Decode::decode(d)?,
            captured_unix_ms: Decode::decode(d)?,
            items: Decode::decode(d)?,
            pos: Decode::decode(d)?,
            emv: Decode::decode(d)?,
        };
        Payment::check_shape(&p.seat, &p.items)
            .and_then(|()| Payment::check_evidence(&p.pos, p.emv.as_ref()))
            .map_err(|e| bincode::error::DecodeError::OtherString(e.to_string()))?;
        Ok(p)
    }
}
bincode::impl_borrow_decode!(Payment);
