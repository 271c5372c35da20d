//! Money: an amount in integer minor units of an ISO 4217 currency. No floating point anywhere.

use std::fmt;

use bincode::{Decode, Encode};

/// Largest amount accepted for one payment, in minor units (10^11: a billion in a 2-decimal
/// currency). Keeps every sum of a flight's payments far from `u64` overflow.
pub const AMOUNT_MINOR_MAX: u64 = 100_000_000_000;

/// Why an amount or currency is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Amounts are positive and at most [`AMOUNT_MINOR_MAX`].
    #[error("amount must be between 1 and {AMOUNT_MINOR_MAX} minor units")]
    BadAmount,
    /// The currency is not a known ISO 4217 code.
    #[error("currency must be a known ISO 4217 code")]
    BadCurrency,
}

/// ISO 4217 codes this system takes, with their minor-unit exponent and numeric code (what chip
/// data carries in tag 5F2A). Travel currencies an airline meets on board; extend as routes
/// require.
const KNOWN_CURRENCIES: &[(&str, u8, u16)] = &[
    ("AED", 2, 784),
    ("AUD", 2, 36),
    ("BRL", 2, 986),
    ("CAD", 2, 124),
    ("CHF", 2, 756),
    ("CNY", 2, 156),
    ("CZK", 2, 203),
    ("DKK", 2, 208),
    ("EUR", 2, 978),
    ("GBP", 2, 826),
    ("HKD", 2, 344),
    ("HUF", 2, 348),
    ("INR", 2, 356),
    ("JPY", 0, 392),
    ("KRW", 0, 410),
    ("MXN", 2, 484),
    ("NOK", 2, 578),
    ("NZD", 2, 554),
    ("PLN", 2, 985),
    ("QAR", 2, 634),
    ("SAR", 2, 682),
    ("SEK", 2, 752),
    ("SGD", 2, 702),
    ("THB", 2, 764),
    ("TRY", 2, 949),
    ("USD", 2, 840),
    ("ZAR", 2, 710),
];

/// A known ISO 4217 currency code.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a three-letter code; it must be one this system knows.
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        KNOWN_CURRENCIES
            .iter()
            .find(|(code, ..)| *code == s)
            .map(|(code, ..)| {
                let b = code.as_bytes();
                Self([b[0], b[1], b[2]])
            })
            .ok_or(MoneyError::BadCurrency)
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only codes from KNOWN_CURRENCIES (ASCII) are ever constructed.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Number of minor-unit digits (2 for EUR, 0 for JPY).
    pub fn exponent(&self) -> u8 {
        KNOWN_CURRENCIES.iter().find(|(c, ..)| c.as_bytes() == self.0).map_or(2, |(_, e, _)| *e)
    }

    /// The ISO 4217 numeric code (978 for EUR), as EMV tag 5F2A carries it.
    pub fn numeric(&self) -> u16 {
        // Every constructed code is in the table.
        KNOWN_CURRENCIES.iter().find(|(c, ..)| c.as_bytes() == self.0).map_or(0, |(.., n)| *n)
    }

    /// The currency with ISO 4217 numeric code `n`, if this system knows it.
    pub fn from_numeric(n: u16) -> Option<Self> {
        KNOWN_CURRENCIES.iter().find(|(.., k)| *k == n).and_then(|(c, ..)| Self::parse(c).ok())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<C> Decode<C> for Currency {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        let b = <[u8; 3]>::decode(d)?;
        let s = std::str::from_utf8(&b).map_err(|_| bad(MoneyError::BadCurrency))?;
        Currency::parse(s).map_err(bad)
    }
}
bincode::impl_borrow_decode!(Currency);

/// A positive amount of a known currency, in integer minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode)]
pub struct Money {
    amount_minor: u64,
    currency: Currency,
}

impl Money {
    /// An amount between 1 and [`AMOUNT_MINOR_MAX`] minor units.
    pub fn new(amount_minor: u64, currency: Currency) -> Result<Self, MoneyError> {
        if amount_minor == 0 || amount_minor > AMOUNT_MINOR_MAX {
            return Err(MoneyError::BadAmount);
        }
        Ok(Self { amount_minor, currency })
    }

    /// The amount in minor units (cents for EUR).
    pub fn amount_minor(&self) -> u64 {
        self.amount_minor
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

impl<C> Decode<C> for Money {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        let amount_minor = u64::decode(d)?;
        let currency = Currency::decode(d)?;
        Money::new(amount_minor, currency).map_err(bad)
    }
}
bincode::impl_borrow_decode!(Money);

fn bad(e: MoneyError) -> bincode::error::DecodeError {
    bincode::error::DecodeError::OtherString(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies() {
        assert_eq!(Currency::parse("EUR").map(|c| c.exponent()), Ok(2));
        assert_eq!(Currency::parse("JPY").map(|c| c.exponent()), Ok(0));
        for bad in ["eur", "XXX", "EURO", ""] {
            assert_eq!(Currency::parse(bad), Err(MoneyError::BadCurrency), "{bad}");
        }
    }

    #[test]
    fn amounts() {
        let eur = Currency::parse("EUR").expect("known");
        assert_eq!(Money::new(0, eur), Err(MoneyError::BadAmount));
        assert_eq!(Money::new(AMOUNT_MINOR_MAX + 1, eur), Err(MoneyError::BadAmount));
        assert_eq!(Money::new(1250, eur).map(|m| m.amount_minor()), Ok(1250));
    }
}
