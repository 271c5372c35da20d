//! The issuer's list of card BINs enrolled for in-flight payment, with its risk rules.
//!
//! The list travels as [`SignedBinList`]: the encoded [`BinList`] bytes and an Ed25519 signature
//! over exactly those bytes. Verification (in `inflight-store`, which holds the crypto) happens
//! before the body is decoded and trusted.

use std::fmt;

use bincode::{Decode, Encode};

use crate::{Currency, EntryMode, Pan};

/// Most rules in one list: an issuer enrolls a few programmes, not thousands.
pub const BIN_RULES_MAX: usize = 1024;

/// The kind of card a BIN is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum CardKind {
    /// Credit: authorized against a credit limit.
    Credit,
    /// Debit: authorized against the account balance.
    Debit,
    /// Check card: debit with a balance check.
    Check,
}

impl CardKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            CardKind::Credit => "credit",
            CardKind::Debit => "debit",
            CardKind::Check => "check",
        }
    }

    /// Parses `credit`, `debit` or `check`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "credit" => Ok(CardKind::Credit),
            "debit" => Ok(CardKind::Debit),
            "check" => Ok(CardKind::Check),
            // Never quote the input: in a file with shifted columns it may be a card number.
            _ => Err("card kind must be credit, debit or check".into()),
        }
    }
}

/// A BIN prefix: 6 to 8 digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode)]
pub struct BinPrefix(String);

impl BinPrefix {
    /// Parses 6-8 decimal digits.
    pub fn parse(s: &str) -> Result<Self, String> {
        if (6..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            // Never quote the input: it may be a whole card number.
            Err(format!("BIN prefix must be 6-8 digits, not {} characters", s.len()))
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `pan` starts with this prefix.
    pub fn matches(&self, pan: &Pan) -> bool {
        pan.expose_digits().starts_with(&self.0)
    }
}

impl fmt::Debug for BinPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BinPrefix({})", self.0)
    }
}

impl<C> Decode<C> for BinPrefix {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        let s = String::decode(d)?;
        BinPrefix::parse(&s).map_err(bincode::error::DecodeError::OtherString)
    }
}
bincode::impl_borrow_decode!(BinPrefix);

/// One enrolled BIN and its risk rules.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BinRule {
    /// Cards whose number starts with this.
    pub prefix: BinPrefix,
    /// Card kind of the programme.
    pub kind: CardKind,
    /// Largest single payment, minor units.
    pub txn_limit_minor: u64,
    /// Largest total per card per flight, across all terminals, minor units.
    pub card_flight_limit_minor: u64,
    /// Currencies accepted for these cards.
    pub currencies: Vec<Currency>,
    /// How these cards may be read for an offline payment (at most the three modes).
    pub entry_modes: Vec<EntryMode>,
    /// Whether the cardholder's PIN must have been verified by the chip (offline PIN): a
    /// key-entered payment can then never qualify.
    pub cvm_required: bool,
}

impl BinRule {
    /// Whether this programme takes `mode` offline.
    pub fn allows(&self, mode: EntryMode) -> bool {
        self.entry_modes.contains(&mode)
    }
}

/// The list itself.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BinList {
    /// Increases with every change; terminals keep the highest valid version.
    pub version: u64,
    /// Issuer name, for logs and reports.
    pub issuer: String,
    /// Not valid before, milliseconds since the Unix epoch.
    pub valid_from_unix_ms: u64,
    /// Not valid after, milliseconds since the Unix epoch.
    pub valid_until_unix_ms: u64,
    /// The enrolled BINs.
    pub rules: Vec<BinRule>,
}

impl BinList {
    /// The rule for `pan`: the longest matching prefix.
    pub fn rule_for(&self, pan: &Pan) -> Option<&BinRule> {
        self.rules.iter().filter(|r| r.prefix.matches(pan)).max_by_key(|r| r.prefix.as_str().len())
    }

    /// Whether the list may be used at `unix_ms`.
    pub fn is_valid_at(&self, unix_ms: u64) -> bool {
        (self.valid_from_unix_ms..=self.valid_until_unix_ms).contains(&unix_ms)
    }
}

/// A list as signed by the issuer: `body` is the encoded [`BinList`], `signature` an Ed25519
/// signature over `body`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedBinList {
    /// Encoded `BinList`.
    pub body: Vec<u8>,
    /// Ed25519 signature over `body`.
    pub signature: Vec<u8>,
}
