//! How a payment was taken, and the chip's own evidence of it: what lets an issuer trust an
//! offline record more than a key-entered card number.
//!
//! - [`PointOfSale`] (in clear, kept after delivery): the entry mode, the terminal type (EMV tag
//!   9F35, and CAT level 4, in-flight commerce), and the merchant category code of what was sold.
//! - [`EmvData`] (card data: sealed at rest, erased after delivery like the card number): the
//!   EMV tags the card reader produced, as BER-TLV, validated while parsed and decoded.

use std::fmt;

use bincode::{Decode, Encode};

/// Largest chip data block, in bytes: the tags below, each once at its longest, take 152; a reader
/// that sends more is sending something else.
pub const EMV_TLV_BYTES_MAX: usize = 252;

/// The card acceptor terminal (CAT) level of every inflight terminal: level 4, in-flight
/// commerce (the schemes' name for terminals on board that store payments for deferred
/// authorization).
pub const CAT_LEVEL_IN_FLIGHT: u8 = 4;

/// How the card data was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub enum EntryMode {
    /// Contact chip (EMV), with chip data.
    Chip,
    /// Contactless chip, with chip data.
    Contactless,
    /// The number typed in: no chip data, the weakest evidence.
    KeyEntered,
}

impl EntryMode {
    /// Every mode, in their stable order.
    pub const ALL: [EntryMode; 3] = [EntryMode::Chip, EntryMode::Contactless, EntryMode::KeyEntered];

    /// Stable name (capture API, BIN rules, reports).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryMode::Chip => "chip",
            EntryMode::Contactless => "contactless",
            EntryMode::KeyEntered => "key_entered",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Result<Self, EvidenceError> {
        Self::ALL.into_iter().find(|m| m.as_str() == s).ok_or(EvidenceError::EntryMode)
    }

    /// Whether a payment taken this way must carry chip data.
    pub fn reads_chip(self) -> bool {
        matches!(self, EntryMode::Chip | EntryMode::Contactless)
    }
}

/// What kind of terminal took the payment: EMV terminal type (tag 9F35), merchant-controlled
/// and offline only, as every inflight terminal is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum TerminalType {
    /// A crew terminal: attended, offline only (9F35 = 23).
    AttendedOfflineOnly,
    /// A seatback terminal: unattended, offline only (9F35 = 26).
    UnattendedOfflineOnly,
}

impl TerminalType {
    /// The EMV terminal type code (tag 9F35).
    pub fn emv_code(self) -> u8 {
        match self {
            TerminalType::AttendedOfflineOnly => 0x23,
            TerminalType::UnattendedOfflineOnly => 0x26,
        }
    }

    /// Stable name (terminal configuration).
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalType::AttendedOfflineOnly => "attended",
            TerminalType::UnattendedOfflineOnly => "unattended",
        }
    }

    /// Parses `attended` or `unattended`.
    pub fn parse(s: &str) -> Result<Self, EvidenceError> {
        match s {
            "attended" => Ok(TerminalType::AttendedOfflineOnly),
            "unattended" => Ok(TerminalType::UnattendedOfflineOnly),
            _ => Err(EvidenceError::TerminalType),
        }
    }
}

/// A merchant category code (ISO 18245): four digits naming what was sold. Airline codes
/// (3000-3350, 4511) name tickets, not what is sold on board: they are refused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode)]
pub struct Mcc(u16);

impl Mcc {
    /// Duty-free stores: the default for on-board retail.
    pub const DUTY_FREE: Mcc = Mcc(5309);
    /// Eating places and restaurants: meals and drinks served on board.
    pub const RESTAURANTS: Mcc = Mcc(5812);

    /// A code from its number.
    pub fn new(code: u16) -> Result<Self, EvidenceError> {
        if code > 9999 {
            return Err(EvidenceError::Mcc);
        }
        if (3000..=3350).contains(&code) || code == 4511 {
            return Err(EvidenceError::AirlineMcc);
        }
        Ok(Self(code))
    }

    /// Parses exactly four digits.
    pub fn parse(s: &str) -> Result<Self, EvidenceError> {
        if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EvidenceError::Mcc);
        }
        Self::new(s.parse().map_err(|_| EvidenceError::Mcc)?)
    }

    /// The code.
    pub fn code(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Mcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl fmt::Debug for Mcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mcc({self})")
    }
}

impl<C> Decode<C> for Mcc {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        Mcc::new(u16::decode(d)?).map_err(|e| bincode::error::DecodeError::OtherString(e.to_string()))
    }
}
bincode::impl_borrow_decode!(Mcc);

/// How and where a payment was taken: kept in clear, for the issuer's decision and the books.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct PointOfSale {
    /// How the card was read.
    pub entry_mode: EntryMode,
    /// The terminal's type; its CAT level is always [`CAT_LEVEL_IN_FLIGHT`].
    pub terminal_type: TerminalType,
    /// What was sold (one code per payment: a sale of several categories is several payments,
    /// as an authorization carries one merchant category).
    pub mcc: Mcc,
}

impl PointOfSale {
    /// What records stored before point-of-sale data existed were: typed card numbers at a
    /// seatback, duty-free.
    pub const LEGACY: PointOfSale = PointOfSale {
        entry_mode: EntryMode::KeyEntered,
        terminal_type: TerminalType::UnattendedOfflineOnly,
        mcc: Mcc::DUTY_FREE,
    };
}

/// Why evidence is invalid. Never quotes a value: chip data is card data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// Not a known entry mode name.
    #[error("entry mode must be chip, contactless or key_entered")]
    EntryMode,
    /// Not a known terminal type name.
    #[error("terminal type must be attended or unattended")]
    TerminalType,
    /// Not four digits.
    #[error("merchant category code must be four digits")]
    Mcc,
    /// An airline's code.
    #[error("merchant category code names airline tickets (3000-3350, 4511), not on-board sales")]
    AirlineMcc,
    /// Not hexadecimal.
    #[error("chip data must be hexadecimal digits, two per byte")]
    Hex,
    /// Over [`EMV_TLV_BYTES_MAX`].
    #[error("chip data over {EMV_TLV_BYTES_MAX} bytes")]
    TooLong,
    /// A tag or length runs past the end, or a length is neither in the short form (under 128)
    /// nor `81 xx` for 128-255.
    #[error("chip data is not well-formed BER-TLV")]
    Malformed,
    /// A tag inflight does not take (its name, never its value).
    #[error("chip data carries tag {0} which is not taken")]
    UnknownTag(String),
    /// A tag that carries the card number, track data or the cardholder's name: never taken.
    #[error("chip data carries tag {0}, which holds the card number, track data or a name: never taken")]
    ForbiddenTag(&'static str),
    /// A tag twice.
    #[error("chip data carries tag {0} twice")]
    DuplicateTag(&'static str),
    /// A tag of the wrong length.
    #[error("chip data tag {0} has the wrong length")]
    TagLength(&'static str),
    /// A tag an authorization needs is missing.
    #[error("chip data lacks tag {0}")]
    MissingTag(&'static str),
    /// A numeric tag that is not binary-coded decimal.
    #[error("chip data tag {0} is not binary-coded decimal")]
    NotBcd(&'static str),
}

/// One tag inflight takes: its name, its length bounds, whether an authorization needs it.
struct TagSpec {
    tag: u16,
    name: &'static str,
    len: (usize, usize),
    required: bool,
}

const fn spec(tag: u16, name: &'static str, min: usize, max: usize, required: bool) -> TagSpec {
    TagSpec { tag, name, len: (min, max), required }
}

/// The tags taken (EMV Book 3 Annex A names and lengths). The required ones are what an issuer
/// needs to verify the application cryptogram and judge the transaction.
const TAGS: &[TagSpec] = &[
    spec(0x9F26, "9F26", 8, 8, true),  // application cryptogram
    spec(0x9F27, "9F27", 1, 1, true),  // cryptogram information data
    spec(0x9F10, "9F10", 1, 32, true), // issuer application data
    spec(0x9F36, "9F36", 2, 2, true),  // application transaction counter
    spec(0x95, "95", 5, 5, true),      // terminal verification results
    spec(0x9A, "9A", 3, 3, true),      // transaction date YYMMDD
    spec(0x9C, "9C", 1, 1, true),      // transaction type
    spec(0x9F02, "9F02", 6, 6, true),  // amount authorised, n12
    spec(0x5F2A, "5F2A", 2, 2, true),  // transaction currency code, n3
    spec(0x9F37, "9F37", 4, 4, true),  // unpredictable number
    spec(0x9F34, "9F34", 3, 3, true),  // CVM results
    spec(0x5F34, "5F34", 1, 1, true),  // PAN sequence number
    spec(0x82, "82", 2, 2, false),     // application interchange profile
    spec(0x84, "84", 5, 16, false),    // dedicated file (AID)
    spec(0x9F03, "9F03", 6, 6, false), // amount other
    spec(0x9F1A, "9F1A", 2, 2, false), // terminal country code
    spec(0x9F33, "9F33", 3, 3, false), // terminal capabilities
    spec(0x9F35, "9F35", 1, 1, false), // terminal type
    spec(0x9F09, "9F09", 2, 2, false), // application version number
];

/// Tags never taken: 5A (the card number: it travels once, sealed, as the payment's `pan`),
/// 57 and 9F6B (track 2 equivalent data), 5F20 (cardholder name), 5F24 (expiry: the payment's).
const FORBIDDEN: &[(u16, &str)] = &[(0x5A, "5A"), (0x57, "57"), (0x9F6B, "9F6B"), (0x5F20, "5F20"), (0x5F24, "5F24")];

/// Chip data as the card reader produced it: primitive BER-TLV objects, each a tag from
/// [`TAGS`] at most once, every required tag present, at most [`EMV_TLV_BYTES_MAX`] bytes. Its
/// `Debug` shows the tags only: the values are card data.
#[derive(Clone, PartialEq, Eq, Hash, Encode)]
pub struct EmvData(Vec<u8>);

impl EmvData {
    /// Validates TLV bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, EvidenceError> {
        if bytes.len() > EMV_TLV_BYTES_MAX {
            return Err(EvidenceError::TooLong);
        }
        let mut seen = Vec::new();
        for (tag, value) in Tlv(bytes) {
            let (tag, value) = (tag?, value);
            if let Some((_, name)) = FORBIDDEN.iter().find(|(t, _)| *t == tag) {
                return Err(EvidenceError::ForbiddenTag(name));
            }
            let spec =
                TAGS.iter().find(|s| s.tag == tag).ok_or_else(|| EvidenceError::UnknownTag(format!("{tag:X}")))?;
            if seen.contains(&tag) {
                return Err(EvidenceError::DuplicateTag(spec.name));
            }
            if !(spec.len.0..=spec.len.1).contains(&value.len()) {
                return Err(EvidenceError::TagLength(spec.name));
            }
            if matches!(tag, 0x9F02 | 0x9F03 | 0x5F2A | 0x9A | 0x5F34) && !is_bcd(value) {
                return Err(EvidenceError::NotBcd(spec.name));
            }
            seen.push(tag);
        }
        if let Some(missing) = TAGS.iter().find(|s| s.required && !seen.contains(&s.tag)) {
            return Err(EvidenceError::MissingTag(missing.name));
        }
        Ok(Self(bytes.to_vec()))
    }

    /// Validates TLV written as hexadecimal (`--emv`, the capture API's `emv`).
    pub fn from_hex(s: &str) -> Result<Self, EvidenceError> {
        if s.len() % 2 != 0 {
            return Err(EvidenceError::Hex);
        }
        if s.len() > 2 * EMV_TLV_BYTES_MAX {
            return Err(EvidenceError::TooLong);
        }
        let nibble = |b: u8| (b as char).to_digit(16).ok_or(EvidenceError::Hex);
        let bytes = s
            .as_bytes()
            .chunks(2)
            .map(|p| Ok(((nibble(p[0])? << 4) | nibble(p[1])?) as u8))
            .collect::<Result<Vec<u8>, EvidenceError>>()?;
        Self::parse(&bytes)
    }

    /// Builds chip data from tags (a card or a test); validated like any other.
    pub fn from_tags(tags: &[(u16, &[u8])]) -> Result<Self, EvidenceError> {
        let mut out = Vec::new();
        for (tag, value) in tags {
            if *tag > 0xFF {
                out.extend_from_slice(&tag.to_be_bytes());
            } else {
                out.push(*tag as u8);
            }
            if value.len() > 0x7F {
                out.push(0x81);
            }
            out.push(value.len() as u8);
            out.extend_from_slice(value);
        }
        Self::parse(&out)
    }

    /// The TLV bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The TLV as hexadecimal.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A tag's value.
    pub fn get(&self, tag: u16) -> Option<&[u8]> {
        Tlv(&self.0).find_map(|(t, v)| (t == Ok(tag)).then_some(v))
    }

    fn required(&self, tag: u16) -> &[u8] {
        // Validated at construction: every required tag is present.
        self.get(tag).unwrap_or(&[])
    }

    /// Application transaction counter (9F36).
    pub fn atc(&self) -> u16 {
        let v = self.required(0x9F36);
        u16::from_be_bytes([v.first().copied().unwrap_or(0), v.get(1).copied().unwrap_or(0)])
    }

    /// The application cryptogram (9F26).
    pub fn cryptogram(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out.copy_from_slice(&self.required(0x9F26)[..8]);
        out
    }

    /// The kind of cryptogram (9F27, top two bits): what the card decided.
    pub fn cryptogram_kind(&self) -> CryptogramKind {
        match self.required(0x9F27).first().copied().unwrap_or(0) & 0xC0 {
            0x40 => CryptogramKind::Tc,
            0x80 => CryptogramKind::Arqc,
            0x00 => CryptogramKind::Aac,
            _ => CryptogramKind::Rfu,
        }
    }

    /// The amount the card signed (9F02), in minor units.
    pub fn amount_minor(&self) -> u64 {
        bcd_value(self.required(0x9F02))
    }

    /// The currency the card signed (5F2A), ISO 4217 numeric.
    pub fn currency_numeric(&self) -> u16 {
        bcd_value(self.required(0x5F2A)) as u16
    }

    /// PAN sequence number (5F34, n2: 0-99): which card of that number this is. Part of the
    /// card's key, so a changed one breaks the cryptogram.
    pub fn pan_sequence(&self) -> u8 {
        bcd_value(self.required(0x5F34)) as u8
    }

    /// Whether the CVM results (9F34) say the cardholder's PIN was verified by the card
    /// (offline PIN, plaintext or enciphered: methods 01, 03, 04, 05; result 02 successful).
    /// Online PIN (02) cannot be verified on an aircraft without a ground link.
    pub fn pin_verified(&self) -> bool {
        let v = self.required(0x9F34);
        v.len() == 3 && matches!(v[0] & 0x3F, 0x01 | 0x03 | 0x04 | 0x05) && v[2] == 0x02
    }
}

impl fmt::Debug for EmvData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tags: Vec<String> = Tlv(&self.0).filter_map(|(t, _)| t.ok()).map(|t| format!("{t:X}")).collect();
        write!(f, "EmvData(tags {})", tags.join(","))
    }
}

impl<C> Decode<C> for EmvData {
    fn decode<D: bincode::de::Decoder<Context = C>>(d: &mut D) -> Result<Self, bincode::error::DecodeError> {
        // Bound the allocation before reading.
        let len = u64::decode(d)?;
        if len > EMV_TLV_BYTES_MAX as u64 {
            return Err(bincode::error::DecodeError::OtherString(EvidenceError::TooLong.to_string()));
        }
        let mut buf = vec![0u8; len as usize];
        bincode::de::read::Reader::read(d.reader(), &mut buf)?;
        EmvData::parse(&buf).map_err(|e| bincode::error::DecodeError::OtherString(e.to_string()))
    }
}
bincode::impl_borrow_decode!(EmvData);

/// What the card decided, from 9F27.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptogramKind {
    /// Transaction certificate: approved offline by the card.
    Tc,
    /// Authorization request cryptogram: the card asks for the issuer's decision.
    Arqc,
    /// Application authentication cryptogram: declined by the card.
    Aac,
    /// Reserved value.
    Rfu,
}

/// An iterator over primitive TLV objects: `(Ok(tag), value)`, or one `Err` and then nothing.
struct Tlv<'a>(&'a [u8]);

impl<'a> Iterator for Tlv<'a> {
    type Item = (Result<u16, EvidenceError>, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        match split_tlv(self.0) {
            Ok((tag, value, rest)) => {
                self.0 = rest;
                Some((Ok(tag), value))
            }
            Err(e) => {
                self.0 = &[];
                Some((Err(e), &[]))
            }
        }
    }
}

/// One TLV object off the front: one- or two-byte tags (primitive only), lengths in the short
/// form or `81 xx`.
fn split_tlv(b: &[u8]) -> Result<(u16, &[u8], &[u8]), EvidenceError> {
    let first = *b.first().ok_or(EvidenceError::Malformed)?;
    if first & 0x20 != 0 {
        // Constructed objects (templates) are not taken: the reader sends the tags themselves.
        return Err(EvidenceError::Malformed);
    }
    let (tag, rest) = if first & 0x1F == 0x1F {
        let second = *b.get(1).ok_or(EvidenceError::Malformed)?;
        if second & 0x80 != 0 {
            return Err(EvidenceError::Malformed);
        }
        (u16::from_be_bytes([first, second]), &b[2..])
    } else {
        (u16::from(first), &b[1..])
    };
    let (len, rest) = match rest.first().copied().ok_or(EvidenceError::Malformed)? {
        l @ 0..=0x7F => (usize::from(l), &rest[1..]),
        // The long form only where the short one cannot say it: one encoding per content.
        0x81 => match *rest.get(1).ok_or(EvidenceError::Malformed)? {
            l @ 0x80..=0xFF => (usize::from(l), &rest[2..]),
            _ => return Err(EvidenceError::Malformed),
        },
        _ => return Err(EvidenceError::Malformed),
    };
    if rest.len() < len {
        return Err(EvidenceError::Malformed);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn is_bcd(v: &[u8]) -> bool {
    v.iter().all(|b| b >> 4 <= 9 && b & 0x0F <= 9)
}

fn bcd_value(v: &[u8]) -> u64 {
    v.iter().fold(0u64, |acc, b| acc * 100 + u64::from(b >> 4) * 10 + u64::from(b & 0x0F))
}

/// `n` as binary-coded decimal in `len` bytes (most significant first): how EMV writes amounts
/// (9F02, n12 in 6 bytes), currency codes (5F2A) and dates (9A).
pub fn bcd(n: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut n = n;
    for b in out.iter_mut().rev() {
        *b = (((n / 10 % 10) << 4) | (n % 10)) as u8;
        n /= 100;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Tags = Vec<(u16, Vec<u8>)>;

    fn good_tags() -> Tags {
        vec![
            (0x9F26, vec![1, 2, 3, 4, 5, 6, 7, 8]),
            (0x9F27, vec![0x80]),
            (0x9F10, vec![0x06, 0x01, 0x0A, 0x03, 0xA0, 0x00, 0x00]),
            (0x9F36, vec![0x00, 0x2A]),
            (0x95, vec![0; 5]),
            (0x9A, bcd(261127, 3)),
            (0x9C, vec![0x00]),
            (0x9F02, bcd(2990, 6)),
            (0x5F2A, bcd(978, 2)),
            (0x9F37, vec![9, 8, 7, 6]),
            (0x9F34, vec![0x1F, 0x00, 0x02]),
            (0x5F34, vec![0x01]),
        ]
    }

    fn build(tags: &[(u16, Vec<u8>)]) -> Result<EmvData, EvidenceError> {
        let refs: Vec<(u16, &[u8])> = tags.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        EmvData::from_tags(&refs)
    }

    #[test]
    fn well_formed_chip_data_reads_back() {
        let e = build(&good_tags()).expect("valid");
        assert_eq!(e.atc(), 42);
        assert_eq!(e.amount_minor(), 2990);
        assert_eq!(e.currency_numeric(), 978);
        assert_eq!(e.cryptogram(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(e.cryptogram_kind(), CryptogramKind::Arqc);
        assert_eq!(e.pan_sequence(), 1);
        assert!(!e.pin_verified());
        assert_eq!(EmvData::from_hex(&e.to_hex()), Ok(e.clone()));
        assert_eq!(EmvData::from_hex(&e.to_hex().to_uppercase()), Ok(e.clone()));
        let shown = format!("{e:?}");
        assert!(shown.starts_with("EmvData(tags 9F26,9F27"), "{shown}");
        assert!(!shown.contains("0102030405060708"), "{shown}");
        let bytes = crate::encode(&e);
        assert_eq!(crate::decode::<EmvData>(&bytes).expect("round trip"), e);
    }

    #[test]
    fn each_malformation_has_its_own_error() {
        let with = |f: &dyn Fn(&mut Tags)| {
            let mut t = good_tags();
            f(&mut t);
            build(&t)
        };
        assert_eq!(with(&|t| t.retain(|(g, _)| *g != 0x9F26)), Err(EvidenceError::MissingTag("9F26")));
        assert_eq!(with(&|t| t.push((0x9F36, vec![0, 1]))), Err(EvidenceError::DuplicateTag("9F36")));
        assert_eq!(with(&|t| t[0].1.push(9)), Err(EvidenceError::TagLength("9F26")));
        assert_eq!(with(&|t| t.push((0x9F7C, vec![1]))), Err(EvidenceError::UnknownTag("9F7C".into())));
        assert_eq!(with(&|t| t.push((0x5A, vec![0x41, 0x11]))), Err(EvidenceError::ForbiddenTag("5A")));
        assert_eq!(with(&|t| t.push((0x57, vec![0x41]))), Err(EvidenceError::ForbiddenTag("57")));
        assert_eq!(with(&|t| t[7].1 = vec![0, 0, 0, 0, 0x2A, 0x90]), Err(EvidenceError::NotBcd("9F02")));
        let good = build(&good_tags()).expect("valid").as_bytes().to_vec();
        assert_eq!(EmvData::parse(&good[..good.len() - 1]), Err(EvidenceError::Malformed));
        assert_eq!(EmvData::parse(&[0x70, 0x00]), Err(EvidenceError::Malformed), "a template");
        // `81 xx` only for lengths the short form cannot say: one encoding per content.
        assert_eq!(EmvData::parse(&[0x9C, 0x81, 0x01, 0x00]), Err(EvidenceError::Malformed));
        assert_eq!(with(&|t| t[11].1 = vec![0x1A]), Err(EvidenceError::NotBcd("5F34")));
        assert_eq!(EmvData::parse(&vec![0x9C; EMV_TLV_BYTES_MAX + 1]), Err(EvidenceError::TooLong));
        assert_eq!(EmvData::from_hex("9f2"), Err(EvidenceError::Hex));
        assert_eq!(EmvData::from_hex("zz"), Err(EvidenceError::Hex));
        // Decoding validates too: a record with a template inside does not decode.
        let mut bytes = crate::encode(&EmvData(vec![0x70, 0x00]));
        assert!(crate::decode::<EmvData>(&bytes).is_err());
        bytes = crate::encode(&EmvData(vec![0x9C; 300]));
        assert!(crate::decode::<EmvData>(&bytes).is_err());
    }

    #[test]
    fn error_messages_never_quote_values() {
        let mut t = good_tags();
        t.push((0x5A, b"\x41\x11\x11\x11\x11\x11\x11\x11".to_vec()));
        let e = build(&t).expect_err("PAN tag refused").to_string();
        assert!(!e.contains("4111"), "{e}");
    }

    #[test]
    fn pin_is_verified_only_by_an_offline_pin_method_that_succeeded() {
        let with_cvm = |cvm: [u8; 3]| {
            let mut t = good_tags();
            t[10].1 = cvm.to_vec();
            build(&t).expect("valid").pin_verified()
        };
        assert!(with_cvm([0x01, 0x00, 0x02]), "plaintext offline PIN, successful");
        assert!(with_cvm([0x44, 0x03, 0x02]), "enciphered offline PIN (apply-next bit set), successful");
        assert!(!with_cvm([0x01, 0x00, 0x01]), "PIN failed");
        assert!(!with_cvm([0x02, 0x00, 0x00]), "online PIN: nobody verified it");
        assert!(!with_cvm([0x1E, 0x00, 0x00]), "signature");
        assert!(!with_cvm([0x1F, 0x00, 0x02]), "no CVM");
    }

    #[test]
    fn merchant_categories_exclude_airline_codes() {
        assert_eq!(Mcc::parse("5309").map(Mcc::code), Ok(5309));
        assert_eq!(Mcc::parse("4511"), Err(EvidenceError::AirlineMcc));
        assert_eq!(Mcc::parse("3001"), Err(EvidenceError::AirlineMcc));
        assert_eq!(Mcc::parse("530"), Err(EvidenceError::Mcc));
        assert_eq!(Mcc::parse("53a9"), Err(EvidenceError::Mcc));
        assert!(crate::decode::<Mcc>(&crate::encode(&4511u16)).is_err());
        assert_eq!(Mcc::DUTY_FREE.to_string(), "5309");
    }

    #[test]
    fn bcd_writes_what_it_reads() {
        assert_eq!(bcd(2990, 6), vec![0, 0, 0, 0, 0x29, 0x90]);
        assert_eq!(bcd_value(&bcd(978, 2)), 978);
        assert_eq!(EntryMode::parse("key_entered"), Ok(EntryMode::KeyEntered));
        assert_eq!(EntryMode::parse("swipe"), Err(EvidenceError::EntryMode));
    }
}
