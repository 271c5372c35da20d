//! Identifiers: who captured a payment, and which payment it is.

use std::fmt;

use bincode::{Decode, Encode};

/// Longest terminal id accepted, in bytes. Ids go into certificate names and log lines.
pub const TERMINAL_ID_BYTES_MAX: usize = 32;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A terminal id must be 1 to 32 bytes of `a-z`, `0-9` and `-`, not starting with `-`.
    #[error("terminal id must be 1-{TERMINAL_ID_BYTES_MAX} characters of a-z, 0-9 and '-', not starting with '-'")]
    BadTerminalId,
    /// A payment id is 32 lowercase hex digits.
    #[error("payment id must be 32 hex digits")]
    BadPaymentId,
}

/// The identity of a terminal (a seatback or crew position), bound to its TLS certificate.
///
/// The restricted alphabet lets the id appear in a DNS-style certificate name
/// (`<id>.terminal.inflight`) and in logs without escaping.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode)]
pub struct TerminalId(String);

impl TerminalId {
    /// Parses and validates a terminal id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= TERMINAL_ID_BYTES_MAX
            && !s.starts_with('-')
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::BadTerminalId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TerminalId({})", self.0)
    }
}

impl<C> Decode<C> for TerminalId {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        let s = String::decode(d)?;
        TerminalId::parse(&s).map_err(|e| bincode::error::DecodeError::OtherString(e.to_string()))
    }
}
bincode::impl_borrow_decode!(TerminalId);

/// The id of one payment, minted by the terminal that captured it.
///
/// 16 bytes: 6 bytes of capture time in milliseconds since the Unix epoch (big-endian, so ids
/// sort by capture time in a store), then 10 random bytes. The random part makes ids unique
/// across terminals, restarts and store wipes without any coordination; the time prefix keeps
/// store scans in capture order. The id is the idempotency key of every later step.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct PaymentId([u8; 16]);

impl PaymentId {
    /// Builds an id from its capture time and 10 random bytes (the caller supplies randomness,
    /// keeping this crate free of I/O).
    pub fn mint(unix_ms: u64, random: [u8; 10]) -> Self {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&random);
        Self(b)
    }

    /// The id from its 16 stored bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(b)
    }

    /// The 16 bytes, as used for store keys.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// Parses the 32-hex-digit text form.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(IdError::BadPaymentId);
        }
        let mut b = [0u8; 16];
        for (i, out) in b.iter_mut().enumerate() {
            let hi = hex_val(s[2 * i]).ok_or(IdError::BadPaymentId)?;
            let lo = hex_val(s[2 * i + 1]).ok_or(IdError::BadPaymentId)?;
            *out = hi << 4 | lo;
        }
        Ok(Self(b))
    }

    /// Capture time encoded in the id, in milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> u64 {
        let mut t = [0u8; 8];
        t[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(t)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaymentId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_ids() {
        for ok in ["t1", "seat-12a", "crew-1", "a", &"a".repeat(32)] {
            assert!(TerminalId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-t", "T1", "t 1", "t.1", &"a".repeat(33), "t/../x"] {
            assert_eq!(TerminalId::parse(bad), Err(IdError::BadTerminalId), "{bad}");
        }
    }

    #[test]
    fn payment_id_text_round_trip_and_time_order() {
        let a = PaymentId::mint(1_700_000_000_000, [0xff; 10]);
        let b = PaymentId::mint(1_700_000_000_001, [0x00; 10]);
        assert!(a < b, "ids sort by capture time first");
        assert_eq!(a.unix_ms(), 1_700_000_000_000);
        assert_eq!(PaymentId::parse(&a.to_string()), Ok(a));
        assert_eq!(PaymentId::parse("zz"), Err(IdError::BadPaymentId));
        assert_eq!(PaymentId::parse(&"g".repeat(32)), Err(IdError::BadPaymentId));
    }
}
