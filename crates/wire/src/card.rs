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

/// A primary account number: 12-19 digits that pass the Luhn check.
///
/// `Debug` and `Display` show only the BIN (first 6 digits) and the last 4, so a `Pan` can sit
/// inside any struct that is logged. The full digits are reachable only through
/// [`Pan::expose_digits`], whose name makes every use easy to find in review.
#[derive(Clone, PartialEq, Eq, Hash, Encode)]
pub struct Pan(String);

impl Pan {
    /// Parses a card number. Spaces are not accepted: the sale app sends digits only.
    pub fn parse(s: &str) -> Result<Self, CardError> {
        if !(12..=19).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
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

    /// The masked form kept after card data is erased.
    pub fn masked(&self) -> MaskedPan {
        let last4 = &self.0[self.0.len() - 4..];
        MaskedPan { bin: self.0[..6].to_owned(), last4: last4.to_owned(), len: self.0.len() as u8 }
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
        if len > 19 {
            return Err(bincode::error::DecodeError::OtherString(CardError::PanFormat.to_string()));
        }
        let mut buf = [0u8; 19];
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

/// A card number reduced to what may be shown and kept after card data is erased: BIN + last 4.
#[derive(Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub struct MaskedPan {
    /// First six digits: identifies the issuer and programme, not the card.
    pub bin: String,
    /// Last four digits: what a passenger recognises on a receipt.
    pub last4: String,
    /// Length of the full number, so the masked form has the card's shape.
    pub len: u8,
}

impl fmt::Display for MaskedPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = usize::from(self.len).saturating_sub(10);
        write!(f, "{}{}{}", self.bin, "*".repeat(hidden), self.last4)
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
    // Howard Hinnant's civil-from-days algorithm.
    let z = (unix_ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
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
    }
}
