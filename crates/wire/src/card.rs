//! Card data: the primary account number and its expiry. A `Pan` never prints in full.

use std::fmt;

use bincode::{Decode, Encode};

/// Why card data is invalid. The messages never contain the card number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// A card number is 12 to 19 decimal digits.
    #[error("card number must be 12-19 digits")]
    PanFormat,
    /// The Luhn check digit does not match.
    #[error("card number fails the Luhn check")]
    Luhn,
    /// An expiry is written `MM/YY` with a month 01-12.
    #[error("expiry must be MM/YY with month 01-12")]
    ExpiryFormat,
}

/// Fewest digits a card number has (ISO/IEC 7812).
pub const PAN_DIGITS_MIN: usize = 12;
/// Most digits a card number has (ISO/IEC 7812).
pub const PAN_DIGITS_MAX: usize = 19;
/// Most leading digits a masked card shows: the BIN (PCI DSS 3.4.1 allows at most BIN + last 4).
pub const MASK_LEADING_MAX: usize = 6;
/// Trailing digits a masked card shows: what a passenger recognises on a receipt.
pub const MASK_TRAILING: usize = 4;
/// Fewest digits a masked card hides. With fewer hidden, BIN + last 4 + Luhn leaves so few
/// candidates that the full number is guessed (a 12-digit card shown 6+4 hides 2 digits, one
/// of them fixed by the check digit: ten guesses).
pub const MASK_HIDDEN_MIN: usize = 6;

/// How many leading digits a card number of `len` digits shows when masked.
///
/// The rule: always the last [`MASK_TRAILING`] (4) digits; leading digits up to the BIN
/// ([`MASK_LEADING_MAX`], 6), but never so many that fewer than [`MASK_HIDDEN_MIN`] (6) digits
/// stay hidden: `min(6, len - 4 - 6)`. So 12 digits show 2 + 4 (6 hidden), 13 show 3 + 4, 14
/// show 4 + 4, 15 show 5 + 4, and 16 to 19 show 6 + 4 (6 to 9 hidden).
pub const fn mask_leading_digits(len: usize) -> usize {
    let room = len.saturating_sub(MASK_TRAILING + MASK_HIDDEN_MIN);
    if room < MASK_LEADING_MAX {
        room
    } else {
        MASK_LEADING_MAX
    }
}

/// A primary account number: 12-19 digits that pass the Luhn check.
///
/// `Debug` and `Display` show only the masked form ([`mask_leading_digits`]: at most the BIN
/// and the last 4, at least 6 digits hidden), so a `Pan` can sit
/// inside any struct that is logged. The full digits are reachable only through
/// [`Pan::expose_digits`], whose name makes every use easy to find in review.
#[derive(Clone, PartialEq, Eq, Hash, Encode)]
pub struct Pan(String);

impl Pan {
    /// Parses a card number. Spaces are not accepted: the sale app sends digits only.
    pub fn parse(s: &str) -> Result<Self, CardError> {
        if !(PAN_DIGITS_MIN..=PAN_DIGITS_MAX).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::PanFormat);
        }
        if !luhn_ok(s) {
            return Err(CardError::Luhn);
        }
        Ok(Self(s.to_owned()))
    }

    /// The full number. Only for encryption at rest, keyed hashing, and the issuer's look-up.
    pub fn expose_digits(&self) -> &str {
        &self.0
    }

    /// The first `n` digits (a BIN is 6 to 8), for eligibility checks.
    pub fn prefix(&self, n: usize) -> &str {
        &self.0[..n.min(self.0.len())]
    }

    /// The masked form kept after card data is erased (rule: [`mask_leading_digits`]).
    pub fn masked(&self) -> MaskedPan {
        let len = self.0.len();
        let lead = &self.0[..mask_leading_digits(len)];
        let last4 = &self.0[len - MASK_TRAILING..];
        MaskedPan { lead: lead.to_owned(), last4: last4.to_owned(), len: len as u8 }
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.masked(), f)
    }
}

impl<C> Decode<C> for Pan {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        // Bound the allocation before reading: a PAN is at most 19 bytes.
        let len = u64::decode(d)?;
        if len > PAN_DIGITS_MAX as u64 {
            return Err(bincode::error::DecodeError::OtherString(CardError::PanFormat.to_string()));
        }
        let mut buf = [0u8; PAN_DIGITS_MAX];
        let buf = &mut buf[..len as usize];
        bincode::de::read::Reader::read(d.reader(), buf)?;
        let s = std::str::from_utf8(buf)
            .map_err(|_| bincode::error::DecodeError::OtherString(CardError::PanFormat.to_string()))?;
        Pan::parse(s).map_err(|e| bincode::error::DecodeError::OtherString(e.to_string()))
    }
}
bincode::impl_borrow_decode!(Pan);

fn luhn_ok(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// A card number reduced to what may be shown and kept after card data is erased: the leading
/// digits [`mask_leading_digits`] allows (the BIN on a card of 16 digits or more) and the last 4.
#[derive(Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub struct MaskedPan {
    /// Leading digits (at most the six-digit BIN): identify the issuer and programme, not the
    /// card. Same encoding as the former `bin` field, so stored records still decode.
    pub lead: String,
    /// Last four digits: what a passenger recognises on a receipt.
    pub last4: String,
    /// Length of the full number, so the masked form has the card's shape.
    pub len: u8,
}

impl fmt::Display for MaskedPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Records stored before the rule kept six leading digits of every card: the rule is
        // applied again here, so such a record never shows more than it allows.
        let len = usize::from(self.len);
        let lead = self.lead.get(..mask_leading_digits(len)).unwrap_or("");
        let hidden = len.saturating_sub(lead.len() + self.last4.len());
        write!(f, "{lead}{}{}", "*".repeat(hidden), self.last4)
    }
}

impl fmt::Debug for MaskedPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MaskedPan({self})")
    }
}

/// A card's expiry: valid through the last day of `month` of `year`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode)]
pub struct Expiry {
    year: u16,
    month: u8,
}

impl Expiry {
    /// Parses `MM/YY` (years 2000-2099).
    pub fn parse(s: &str) -> Result<Self, CardError> {
        let b = s.as_bytes();
        if b.len() != 5 || b[2] != b'/' || ![b[0], b[1], b[3], b[4]].iter().all(u8::is_ascii_digit) {
            return Err(CardError::ExpiryFormat);
        }
        let month = (b[0] - b'0') * 10 + (b[1] - b'0');
        let year = 2000 + u16::from((b[3] - b'0') * 10 + (b[4] - b'0'));
        Self::new(year, month)
    }

    /// An expiry from a full year (2000-2099) and a month (1-12).
    pub fn new(year: u16, month: u8) -> Result<Self, CardError> {
        if !(1..=12).contains(&month) || !(2000..=2099).contains(&year) {
            return Err(CardError::ExpiryFormat);
        }
        Ok(Self { year, month })
    }

    /// True when the card can no longer be used at `unix_ms` (UTC): after its expiry month.
    pub fn is_expired_at(self, unix_ms: u64) -> bool {
        let (y, m) = year_month_utc(unix_ms);
        (y, m) > (i64::from(self.year), self.month)
    }

    /// Full year.
    pub fn year(self) -> u16 {
        self.year
    }

    /// Month, 1-12.
    pub fn month(self) -> u8 {
        self.month
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}/{:02}", self.month, self.year % 100)
    }
}

impl fmt::Debug for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expiry({self})")
    }
}

impl<C> Decode<C> for Expiry {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        let year = u16::decode(d)?;
        let month = u8::decode(d)?;
        Expiry::new(year, month).map_err(|e| bincode::error::DecodeError::OtherString(e.to_string()))
    }
}
bincode::impl_borrow_decode!(Expiry);

/// Calendar year and month (UTC) of a Unix time in milliseconds.
fn year_month_utc(unix_ms: u64) -> (i64, u8) {
    let (y, m, _) = utc_date(unix_ms);
    (y, m)
}

/// Calendar date (UTC) of a Unix time in milliseconds: year, month 1-12, day 1-31.
pub fn utc_date(unix_ms: u64) -> (i64, u8, u8) {
    // Howard Hinnant's civil-from-days algorithm.
    let z = (unix_ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pan_luhn_and_format() {
        assert!(Pan::parse("4111111111111111").is_ok());
        assert!(Pan::parse("5555555555554444").is_ok());
        assert_eq!(Pan::parse("4111111111111112"), Err(CardError::Luhn));
        assert_eq!(Pan::parse("41111111111"), Err(CardError::PanFormat));
        assert_eq!(Pan::parse("4111 1111 1111 1111"), Err(CardError::PanFormat));
        assert_eq!(Pan::parse("41111111111111111111"), Err(CardError::PanFormat));
    }

    #[test]
    fn pan_never_prints_in_full() {
        let pan = Pan::parse("4111111111111111").expect("valid test card");
        for shown in [format!("{pan}"), format!("{pan:?}"), format!("{:?}", Some(&pan))] {
            assert!(!shown.contains("4111111111111111"), "{shown}");
            assert!(shown.contains("411111") && shown.contains("1111"), "{shown}");
        }
        assert_eq!(pan.masked().to_string(), "411111******1111");
    }

    /// PCI DSS 3.4.1: at most the BIN and the last four, and never fewer than six digits hidden,
    /// for every length a `Pan` can have. Each case is checked for its shape, not only its count.
    #[test]
    fn masking_hides_at_least_six_digits_at_every_length() {
        let expected = [
            (12, "41******1111"),
            (13, "411******1111"),
            (14, "4111******1111"),
            (15, "41111******1111"),
            (16, "411111******1111"),
            (17, "411111*******1111"),
            (18, "411111********1111"),
            (19, "411111*********1111"),
        ];
        for (len, want) in expected {
            let pan = valid_pan(len);
            let shown = pan.masked().to_string();
            let shape = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "d");
            assert_eq!(shape(&shown), shape(want), "len {len}");
            assert!(shown.bytes().filter(|&b| b == b'*').count() >= 6, "{shown}");
            // Where a digit is shown, it is the card's own digit in its own place.
            let digits = pan.expose_digits();
            assert!(shown.bytes().zip(digits.bytes()).all(|(s, d)| s == b'*' || s == d), "{shown}");
            assert_eq!(format!("{pan}"), shown);
            assert_eq!(format!("{pan:?}"), format!("Pan({shown})"));
        }
    }

    /// A masked record stored before the rule (six leading digits of a 12-digit card) shows no
    /// more than the rule allows.
    #[test]
    fn old_masked_records_show_only_what_the_rule_allows() {
        let old = MaskedPan { lead: "411111".into(), last4: "1111".into(), len: 12 };
        assert_eq!(old.to_string(), "41******1111");
    }

    /// A Luhn-valid test card of `len` digits: 4, then 1s, then the check digit.
    fn valid_pan(len: usize) -> Pan {
        let body: String = std::iter::once('4').chain(std::iter::repeat_n('1', len - 2)).collect();
        (0..=9).find_map(|c| Pan::parse(&format!("{body}{c}")).ok()).expect("one check digit passes Luhn")
    }

    #[test]
    fn expiry_parse_and_compare() {
        let e = Expiry::parse("02/27").expect("valid expiry");
        assert_eq!((e.year(), e.month()), (2027, 2));
        assert_eq!(e.to_string(), "02/27");
        for bad in ["13/27", "00/27", "2/27", "02-27", "0a/27", ""] {
            assert_eq!(Expiry::parse(bad), Err(CardError::ExpiryFormat), "{bad}");
        }
        // 2027-02-28T23:59:59Z is still inside the month; 2027-03-01T00:00:00Z is past it.
        assert!(!e.is_expired_at(1_803_859_199_000));
        assert!(e.is_expired_at(1_803_859_200_000));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(year_month_utc(0), (1970, 1));
        assert_eq!(year_month_utc(951_782_400_000), (2000, 2)); // 2000-02-29
        assert_eq!(year_month_utc(1_798_761_600_000), (2027, 1)); // 2027-01-01
        assert_eq!(utc_date(951_782_400_000), (2000, 2, 29));
        assert_eq!(utc_date(1_798_761_599_999), (2026, 12, 31));
    }
}
