//! A scanner for card data left anywhere in files: what the checkers (the simulator's and the
//! end-to-end tests') run over every store file, log and report of a flight.
//!
//! It looks for each test card number in every form a careless program could write it in:
//! ASCII digits (which also covers our bincode encoding of a `Pan` and of every record and frame
//! holding one: a length byte, then the digits), packed BCD in both nibble alignments, UTF-16LE;
//! and for every test payment the **unkeyed** digests an earlier version stored (SHA-256 over
//! the encoded payment; SHA-256 over an encoded batch item, which is also the old batch digest
//! of a one-payment batch). A digest of card data that someone holding the files could
//! recompute from a guess (BIN + last 4 leave about 10^5 candidates) confirms the card number as
//! surely as the number itself.

use std::path::{Path, PathBuf};

use inflight_wire::{encode, BatchItem, Payment};
use ring::digest;

/// Everything to look for, with a name for each that never shows the card number.
///
/// One pass over the bytes finds every form: needles are indexed by their first four bytes,
/// behind a table of their first two, so a scan of many megabytes costs a table read per byte
/// whatever the number of cards.
#[derive(Debug)]
pub struct CardScanner {
    /// Every byte string looked for (at least [`NEEDLE_MIN`] bytes), with what it is.
    needles: Vec<(Vec<u8>, String)>,
    /// Needle indexes by their first four bytes.
    by_prefix: std::collections::HashMap<[u8; 4], Vec<usize>>,
    /// Whether some needle starts with these two bytes (indexed by them as a big-endian u16).
    first_two: Vec<bool>,
}

/// Shortest needle: a card number in packed BCD is at least 6 bytes; digests are 32.
const NEEDLE_MIN: usize = 4;

impl Default for CardScanner {
    fn default() -> Self {
        Self { needles: Vec::new(), by_prefix: std::collections::HashMap::new(), first_two: vec![false; 1 << 16] }
    }
}

impl CardScanner {
    /// An empty scanner.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&mut self, needle: Vec<u8>, what: String) {
        if needle.len() < NEEDLE_MIN {
            return;
        }
        let prefix: [u8; 4] = needle[..4].try_into().expect("at least four bytes");
        self.first_two[usize::from(u16::from_be_bytes([prefix[0], prefix[1]]))] = true;
        self.by_prefix.entry(prefix).or_default().push(self.needles.len());
        self.needles.push((needle, what));
    }

    /// Looks for a card number in ASCII, packed BCD (both alignments) and UTF-16LE.
    pub fn add_pan(&mut self, pan: &str) {
        let name = masked(pan);
        self.add(pan.as_bytes().to_vec(), format!("card {name} in ASCII"));
        let digits: Vec<u8> = pan.bytes().map(|b| b - b'0').collect();
        for (pad_front, what) in [(false, "packed BCD"), (true, "packed BCD, shifted a nibble")] {
            let mut nibbles = digits.clone();
            if pad_front {
                nibbles.insert(0, 0);
            }
            if nibbles.len() % 2 == 1 {
                nibbles.push(0xf);
            }
            // The padding nibbles are not part of the number: match the whole bytes only.
            let bytes: Vec<u8> = nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
            let (start, end) = (usize::from(pad_front), bytes.len() - usize::from(nibbles.last() == Some(&0xf)));
            self.add(bytes[start..end].to_vec(), format!("card {name} in {what}"));
        }
        let utf16: Vec<u8> = pan.encode_utf16().flat_map(u16::to_le_bytes).collect();
        self.add(utf16, format!("card {name} in UTF-16LE"));
    }

    /// Looks for a payment's chip data: its application cryptogram (with its tag, and alone) and
    /// the whole TLV. Chip data is sealed like the card number and erased after delivery.
    pub fn add_chip_data(&mut self, emv: &inflight_wire::EmvData, name: &str) {
        let ac = emv.cryptogram();
        let mut tagged = vec![0x9F, 0x26, 0x08];
        tagged.extend_from_slice(&ac);
        self.add(tagged, format!("the chip cryptogram of {name}, as TLV"));
        self.add(ac.to_vec(), format!("the chip cryptogram of {name}"));
        self.add(emv.as_bytes().to_vec(), format!("the chip data of {name}"));
        self.add(emv.to_hex().into_bytes(), format!("the chip data of {name}, as hex"));
    }

    /// Looks for the unkeyed digests an earlier version kept of this payment.
    pub fn add_payment(&mut self, p: &Payment) {
        let name = format!("payment {} (card {})", p.id, p.pan.masked());
        self.add(sha256(&encode(p)).to_vec(), format!("unkeyed SHA-256 of {name}"));
        let item = BatchItem {
            id: p.id,
            pan: p.pan.clone(),
            expiry: p.expiry,
            amount: p.amount,
            captured_unix_ms: p.captured_unix_ms,
            late: false,
            deferred: true,
            emv: p.emv.clone(),
            pos: p.pos,
        };
        self.add(sha256(&encode(&item)).to_vec(), format!("unkeyed SHA-256 of the batch item of {name}"));
    }

    /// What of the card data is in `bytes`, if anything (the first finding).
    pub fn find(&self, bytes: &[u8]) -> Option<&str> {
        if bytes.len() < NEEDLE_MIN {
            return None;
        }
        for i in 0..=bytes.len() - NEEDLE_MIN {
            if !self.first_two[usize::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]))] {
                continue;
            }
            let prefix: [u8; 4] = bytes[i..i + 4].try_into().expect("four bytes in range");
            let Some(candidates) = self.by_prefix.get(&prefix) else { continue };
            for &k in candidates {
                let (needle, what) = &self.needles[k];
                if bytes[i..].starts_with(needle) {
                    return Some(what);
                }
            }
        }
        None
    }

    /// Every file under `dir` (recursively) holding card data, with what was found.
    pub fn scan_dir(&self, dir: &Path) -> Vec<(PathBuf, String)> {
        let mut files = Vec::new();
        collect(dir, &mut files);
        files
            .into_iter()
            .filter_map(|f| {
                let bytes = std::fs::read(&f).ok()?;
                self.find(&bytes).map(|what| (f, what.to_owned()))
            })
            .collect()
    }

    /// How many forms are looked for (for reports).
    pub fn len(&self) -> usize {
        self.needles.len()
    }

    /// True when nothing is looked for.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The name a finding gives a card: its masked form (the same rule as `Pan`'s), so a report
/// about a leak never leaks more than the masked record does.
fn masked(pan: &str) -> String {
    match inflight_wire::Pan::parse(pan) {
        Ok(p) => p.masked().to_string(),
        // Not a valid card: show its last four only.
        Err(_) => format!(
            "{}{}",
            "*".repeat(pan.len().saturating_sub(4)),
            pan.get(pan.len().saturating_sub(4)..).unwrap_or("")
        ),
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use inflight_wire::{Currency, Expiry, Money, Pan, PaymentId, TerminalId};

    use super::*;

    const PAN: &str = "4000110000000017";

    fn payment() -> Payment {
        Payment {
            id: PaymentId::from_bytes([3; 16]),
            terminal: TerminalId::parse("slave-1").expect("valid"),
            pan: Pan::parse(PAN).expect("valid"),
            expiry: Expiry::parse("12/30").expect("valid"),
            amount: Money::new(1_250, Currency::parse("EUR").expect("known")).expect("valid"),
            seat: "12A".into(),
            captured_unix_ms: 1_795_000_000_000,
            items: vec![],
            emv: None,
            pos: inflight_wire::PointOfSale::LEGACY,
        }
    }

    /// The scanner can fail: every form it claims to look for is found when present.
    #[test]
    fn finds_every_form_and_nothing_masked() {
        let mut s = CardScanner::new();
        s.add_pan(PAN);
        s.add_payment(&payment());
        let around = |b: &[u8]| [b"xx".as_slice(), b, b"yy".as_slice()].concat();
        assert!(s.find(&around(PAN.as_bytes())).is_some_and(|w| w.contains("ASCII")));
        assert!(s.find(&around(&[0x40, 0x00, 0x11, 0x00, 0x00, 0x00, 0x00, 0x17])).is_some_and(|w| w.contains("BCD")));
        let utf16: Vec<u8> = PAN.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(s.find(&around(&utf16)).is_some_and(|w| w.contains("UTF-16")));
        assert!(s.find(&around(&encode(&payment()))).is_some(), "the encoded payment holds the digits");
        let old_digest = sha256(&encode(&payment()));
        assert!(s.find(&around(&old_digest)).is_some_and(|w| w.contains("unkeyed SHA-256 of payment")));
        assert_eq!(s.find(b"400011******0017 and 4000 1100 0000 0017"), None, "masked or spaced is not the number");
        assert!(!s.find(&around(PAN.as_bytes())).unwrap_or_default().contains(PAN), "names never show the card");
    }
}
