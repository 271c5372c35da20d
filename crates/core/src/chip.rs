//! The chip's application cryptogram, as an issuer's authorization engine verifies it (AES
//! variant), and the application transaction counter's replay window.
//!
//! Key hierarchy (the shape of EMV Book 2, Annex A1.3-A1.4; AES-128 throughout):
//! - the issuer master key (IMK) lives only at the issuer (and the simulator's card factory);
//! - a card's master key is `AES(IMK)[Y || Y ⊕ FF..FF]`, `Y` the rightmost 16 digits of
//!   PAN ‖ PAN sequence number as 8 bytes of BCD (Option A's input, one AES block);
//! - the session key of one transaction is `AES(MK)[ATC || F0 || 00..00]` (common session key
//!   derivation, diversified by the ATC alone);
//! - the cryptogram is the first 8 bytes of AES-CMAC (ISO/IEC 9797-1 MAC algorithm 5) under the
//!   session key over [`covered_data`].
//!
//! A terminal holds none of these keys: it can read chip data and pass it on, never make it. So
//! an amount or currency changed after the card signed, or chip data copied onto another card
//! number, fails verification at the issuer (`cryptogram_invalid`); the same chip data sent twice
//! shows an ATC seen before (`atc_replayed`).

use std::fmt;

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use bincode::{Decode, Encode};
use cmac::{Cmac, Mac};
use inflight_wire::{bcd, utc_date, EmvData, Money, Pan};

/// An AES-128 key, never printed.
#[derive(Clone, PartialEq, Eq)]
struct Key([u8; 16]);

impl Key {
    fn encrypt(&self, block: [u8; 16]) -> [u8; 16] {
        let cipher = Aes128::new(&self.0.into());
        let mut b = block.into();
        cipher.encrypt_block(&mut b);
        b.into()
    }
}

/// Why a key file's text is not a key. Never quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a chip master key is 32 hexadecimal digits (AES-128)")]
pub struct KeyError;

/// The issuer's master key for application cryptograms.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerMasterKey(Key);

impl fmt::Debug for IssuerMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IssuerMasterKey(<secret>)")
    }
}

impl IssuerMasterKey {
    /// The key from its bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(Key(b))
    }

    /// The key from 32 hexadecimal digits (surrounding white space ignored).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.len() != 32 {
            return Err(KeyError);
        }
        let mut b = [0u8; 16];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or(KeyError)?, 16).map_err(|_| KeyError)?;
        }
        Ok(Self::from_bytes(b))
    }

    /// The card's own master key.
    /// The card's own master key: `pan_sequence` is 0-99 (5F34 is n2); a larger value is
    /// another card's (it cannot come from chip data, which is checked to be BCD).
    pub fn card_key(&self, pan: &Pan, pan_sequence: u8) -> CardKey {
        let digits = format!("{}{:02}", pan.expose_digits(), pan_sequence);
        let tail = &digits[digits.len().saturating_sub(16)..];
        let y = bcd(tail.parse::<u64>().unwrap_or(0), 8);
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(&y);
        for (i, b) in y.iter().enumerate() {
            block[8 + i] = b ^ 0xFF;
        }
        CardKey(Key(self.0.encrypt(block)))
    }

    /// Whether `emv` is what the card `pan` made for this item: a purchase (9C = 00) of the
    /// item's amount and currency, on the item's capture date (one day either way, for time
    /// zones and midnight), and its cryptogram verifies under the card's key. The cryptogram
    /// covers the date and type, so a terminal cannot change them; comparing them with the
    /// item stops a cryptogram collected one day being sold as another day's payment, or a
    /// refund's as a purchase.
    pub fn verify(&self, pan: &Pan, amount: Money, captured_unix_ms: u64, emv: &EmvData) -> bool {
        if emv.amount_minor() != amount.amount_minor() || emv.currency_numeric() != amount.currency().numeric() {
            return false;
        }
        if emv.get(0x9C) != Some(&[0x00][..]) {
            return false;
        }
        let on = |unix_ms: u64| emv.get(0x9A) == Some(&emv_date(unix_ms)[..]);
        const DAY_MS: u64 = 86_400_000;
        if !(on(captured_unix_ms) || on(captured_unix_ms.saturating_sub(DAY_MS)) || on(captured_unix_ms + DAY_MS)) {
            return false;
        }
        let want = self.card_key(pan, emv.pan_sequence()).cryptogram(emv.atc(), &covered_data(emv));
        // Compared without an early exit: the verifier must not tell a forger how many bytes matched.
        want.iter().zip(emv.cryptogram()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// EMV tag 9A for the UTC date of `unix_ms`: YYMMDD in BCD.
fn emv_date(unix_ms: u64) -> Vec<u8> {
    let (y, m, d) = utc_date(unix_ms);
    bcd((y.rem_euclid(100) as u64) * 10_000 + u64::from(m) * 100 + u64::from(d), 3)
}

/// A card's master key (ICC MK AC).
#[derive(Clone, PartialEq, Eq)]
pub struct CardKey(Key);

impl fmt::Debug for CardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardKey(<secret>)")
    }
}

impl CardKey {
    fn session_key(&self, atc: u16) -> Key {
        let mut r = [0u8; 16];
        r[..2].copy_from_slice(&atc.to_be_bytes());
        r[2] = 0xF0;
        Key(self.0.encrypt(r))
    }

    /// The cryptogram of transaction `atc` over `data`.
    pub fn cryptogram(&self, atc: u16, data: &[u8]) -> [u8; 8] {
        let sk = self.session_key(atc);
        let mut mac = <Cmac<Aes128> as KeyInit>::new(&sk.0.into());
        mac.update(data);
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&tag[..8]);
        out
    }
}

/// The data the cryptogram covers, in this order (EMV's recommended minimum for CDOL1, plus the
/// CVM results, so that they cannot be changed after the card signed): amount
/// authorised (9F02), amount other (9F03), terminal country (9F1A), TVR (95), currency (5F2A),
/// date (9A), transaction type (9C), unpredictable number (9F37), AIP (82), ATC (9F36), issuer
/// application data (9F10), CVM results (9F34). An optional tag that is absent counts as zeros.
pub fn covered_data(emv: &EmvData) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    for (tag, absent_len) in [
        (0x9F02, 6),
        (0x9F03, 6),
        (0x9F1A, 2),
        (0x95, 5),
        (0x5F2A, 2),
        (0x9A, 3),
        (0x9C, 1),
        (0x9F37, 4),
        (0x82, 2),
        (0x9F36, 2),
        (0x9F10, 0),
        (0x9F34, 3),
    ] {
        match emv.get(tag) {
            Some(v) => out.extend_from_slice(v),
            None => out.extend(std::iter::repeat_n(0u8, absent_len)),
        }
    }
    out
}

/// A test card's chip: what a card reader talks to. Used by the simulator and the tests, which
/// hold the issuer's master key; nothing on the aircraft does.
#[derive(Debug, Clone)]
pub struct ChipCard {
    key: CardKey,
    pan_sequence: u8,
}

/// One transaction as a card reader asks the chip for it.
#[derive(Debug, Clone, Copy)]
pub struct ChipTxn {
    /// The card's transaction counter for this one (the card increments it every time).
    pub atc: u16,
    /// Amount and currency the terminal asked for.
    pub amount: Money,
    /// When (UTC), for tag 9A.
    pub unix_ms: u64,
    /// The terminal's unpredictable number.
    pub unpredictable: [u8; 4],
    /// Whether the cardholder entered their PIN and the chip verified it (offline PIN).
    pub pin_verified: bool,
}

impl ChipCard {
    /// The chip of card `pan` issued under `imk`.
    pub fn new(imk: &IssuerMasterKey, pan: &Pan, pan_sequence: u8) -> Self {
        Self { key: imk.card_key(pan, pan_sequence), pan_sequence }
    }

    /// The chip data of a GENERATE AC answered with an ARQC (the card asks for the issuer's
    /// decision: a deferred authorization).
    pub fn generate_ac(&self, t: ChipTxn) -> EmvData {
        let date = emv_date(t.unix_ms);
        let amount = bcd(t.amount.amount_minor(), 6);
        let currency = bcd(u64::from(t.amount.currency().numeric()), 2);
        let cvm: [u8; 3] = if t.pin_verified { [0x01, 0x00, 0x02] } else { [0x1F, 0x00, 0x02] };
        let iad = [0x06, 0x01, 0x11, 0x03, 0xA0, 0x00, 0x00];
        let atc = t.atc.to_be_bytes();
        let psn = bcd(u64::from(self.pan_sequence % 100), 1);
        let tvr = [0x00, 0x00, 0x00, 0x80, 0x00]; // "transaction exceeds floor limit": offline terminal
        let mut tags: Vec<(u16, &[u8])> = vec![
            (0x9F27, &[0x80]),
            (0x9F10, &iad),
            (0x9F36, &atc),
            (0x95, &tvr),
            (0x9A, &date),
            (0x9C, &[0x00]),
            (0x9F02, &amount),
            (0x5F2A, &currency),
            (0x9F37, &t.unpredictable),
            (0x9F34, &cvm),
            (0x5F34, &psn),
        ];
        // The cryptogram covers data that is all present above; made over a draft without it.
        let mut draft = tags.clone();
        draft.push((0x9F26, &[0u8; 8]));
        let draft = EmvData::from_tags(&draft).unwrap_or_else(|e| unreachable!("chip data is well formed: {e}"));
        let ac = self.key.cryptogram(t.atc, &covered_data(&draft));
        tags.insert(0, (0x9F26, &ac));
        EmvData::from_tags(&tags).unwrap_or_else(|e| unreachable!("chip data is well formed: {e}"))
    }
}

/// The transaction counters seen of one card: the highest, and which of the [`AtcWindow::SPAN`]
/// below it. Payments of one card reach the issuer out of order (several terminals, batches
/// sealed at different times, a quarantined batch, a diversion), so a lower counter is not by
/// itself a replay; one seen before is, and so is one further back than the window (it can no
/// longer be told from a replay). The window is wide enough for a card's every use within the
/// issuer's capture age (30 days: a card is used a few times a day), so a genuine late payment
/// is never mistaken for a replay; 130 bytes per chip card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct AtcWindow {
    highest: u16,
    /// Bit `i` of the whole (word `i / 64`, bit `i % 64`): counter `highest - i` was seen (bit 0
    /// is `highest` itself).
    seen: [u64; ATC_WINDOW_WORDS],
}

const ATC_WINDOW_WORDS: usize = 16;

impl AtcWindow {
    /// How far below the highest counter a counter is still accepted once.
    pub const SPAN: u16 = (ATC_WINDOW_WORDS * 64) as u16;

    fn bit(&self, back: u16) -> bool {
        self.seen[usize::from(back / 64)] & (1 << (back % 64)) != 0
    }

    fn set(&mut self, back: u16) {
        self.seen[usize::from(back / 64)] |= 1 << (back % 64);
    }

    /// The window after counter `atc`, or `None` when `atc` is a replay (seen, or too far back).
    pub fn accept(window: Option<AtcWindow>, atc: u16) -> Option<AtcWindow> {
        let Some(w) = window else {
            let mut first = AtcWindow { highest: atc, seen: [0; ATC_WINDOW_WORDS] };
            first.set(0);
            return Some(first);
        };
        if atc > w.highest {
            // Every seen counter moves `shift` further back; those beyond the window fall off.
            let shift = atc - w.highest;
            let mut moved = AtcWindow { highest: atc, seen: [0; ATC_WINDOW_WORDS] };
            for back in 0..Self::SPAN {
                if w.bit(back) {
                    if let Some(b) = back.checked_add(shift).filter(|b| *b < Self::SPAN) {
                        moved.set(b);
                    }
                }
            }
            moved.set(0);
            return Some(moved);
        }
        let back = w.highest - atc;
        if back >= Self::SPAN || w.bit(back) {
            return None;
        }
        let mut next = w;
        next.set(back);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use inflight_wire::Currency;

    use super::*;

    fn imk() -> IssuerMasterKey {
        IssuerMasterKey::from_hex("000102030405060708090a0b0c0d0e0f").expect("valid")
    }

    fn pan() -> Pan {
        Pan::parse("4000110000010016").expect("valid")
    }

    fn eur(n: u64) -> Money {
        Money::new(n, Currency::parse("EUR").expect("known")).expect("valid")
    }

    /// 2026-11-27, midday.
    const T: u64 = 1_795_737_600_000 + 12 * 3_600_000;

    fn txn(atc: u16, amount: Money) -> ChipTxn {
        ChipTxn { atc, amount, unix_ms: T, unpredictable: [1, 2, 3, 4], pin_verified: false }
    }

    #[test]
    fn the_issuer_verifies_what_the_card_made_and_nothing_altered() {
        let card = ChipCard::new(&imk(), &pan(), 1);
        let emv = card.generate_ac(txn(7, eur(2990)));
        assert!(imk().verify(&pan(), eur(2990), T, &emv));
        assert_eq!(emv.atc(), 7);
        assert_eq!(emv.get(0x9A), Some(&[0x26, 0x11, 0x27][..]), "2026-11-27");
        // The item's amount or currency changed after the card signed.
        assert!(!imk().verify(&pan(), eur(2991), T, &emv));
        let usd = Money::new(2990, Currency::parse("USD").expect("known")).expect("valid");
        assert!(!imk().verify(&pan(), usd, T, &emv));
        // The chip data's amount changed to match (a hostile terminal): the cryptogram fails.
        let forged = card.generate_ac(txn(7, eur(2990)));
        let mut tags: Vec<(u16, Vec<u8>)> =
            [0x9F26, 0x9F27, 0x9F10, 0x9F36, 0x95, 0x9A, 0x9C, 0x5F2A, 0x9F37, 0x9F34, 0x5F34]
                .iter()
                .map(|t| (*t, forged.get(*t).expect("present").to_vec()))
                .collect();
        tags.push((0x9F02, bcd(2991, 6)));
        let refs: Vec<(u16, &[u8])> = tags.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        let forged = EmvData::from_tags(&refs).expect("well formed");
        assert!(!imk().verify(&pan(), eur(2991), T, &forged));
        // Captured on another day than the card signed (a day either way is allowed).
        assert!(imk().verify(&pan(), eur(2990), T + 86_400_000, &emv), "the next day (time zones)");
        assert!(!imk().verify(&pan(), eur(2990), T + 2 * 86_400_000, &emv), "two days later");
        assert!(!imk().verify(&pan(), eur(2990), T - 2 * 86_400_000, &emv), "two days earlier");
        // Another card's number, another issuer's key.
        let other = Pan::parse("4000110000020015").expect("valid");
        assert!(!imk().verify(&other, eur(2990), T, &emv));
        let other_imk = IssuerMasterKey::from_hex("ff0102030405060708090a0b0c0d0e0f").expect("valid");
        assert!(!other_imk.verify(&pan(), eur(2990), T, &emv));
        // The PAN sequence number changed (another card of that number): another key.
        let psn_tags: Vec<(u16, Vec<u8>)> =
            [0x9F26, 0x9F27, 0x9F10, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x5F2A, 0x9F37, 0x9F34]
                .iter()
                .map(|t| (*t, emv.get(*t).expect("present").to_vec()))
                .chain([(0x5F34, vec![0x02])])
                .collect();
        let refs: Vec<(u16, &[u8])> = psn_tags.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        assert!(!imk().verify(&pan(), eur(2990), T, &EmvData::from_tags(&refs).expect("well formed")));
        // The PIN claim is covered: flipping the CVM results breaks the cryptogram.
        let pin = card.generate_ac(ChipTxn { pin_verified: true, ..txn(8, eur(2990)) });
        assert!(pin.pin_verified() && imk().verify(&pan(), eur(2990), T, &pin));
    }

    #[test]
    fn keys_are_derived_per_card_and_per_transaction() {
        let a = imk().card_key(&pan(), 1);
        assert_ne!(a, imk().card_key(&pan(), 2), "PAN sequence number");
        assert_ne!(a, imk().card_key(&Pan::parse("4000110000020015").expect("valid"), 1));
        assert_ne!(a.cryptogram(1, b"x"), a.cryptogram(2, b"x"), "session key per ATC");
        assert_eq!(format!("{a:?}"), "CardKey(<secret>)");
        assert_eq!(format!("{:?}", imk()), "IssuerMasterKey(<secret>)");
        assert!(IssuerMasterKey::from_hex("00").is_err());
        assert!(IssuerMasterKey::from_hex(&"g".repeat(32)).is_err());
    }

    #[test]
    fn counters_are_accepted_once_in_any_order_within_the_window() {
        let mut w = AtcWindow::accept(None, 10).expect("first");
        w = AtcWindow::accept(Some(w), 12).expect("forward");
        w = AtcWindow::accept(Some(w), 11).expect("late arrival, not seen");
        assert_eq!(AtcWindow::accept(Some(w), 11), None, "seen");
        assert_eq!(AtcWindow::accept(Some(w), 12), None, "seen (the highest)");
        assert_eq!(AtcWindow::accept(Some(w), 10), None, "seen (the first)");
        w = AtcWindow::accept(Some(w), 12 + AtcWindow::SPAN - 1).expect("far forward");
        assert!(AtcWindow::accept(Some(w), 13).is_some(), "still inside the window");
        assert_eq!(AtcWindow::accept(Some(w), 11), None, "behind the window: going backwards");
        assert_eq!(AtcWindow::accept(Some(w), 12), None, "seen, and still inside after the move");
        let far = AtcWindow::accept(Some(w), 5000).expect("jump");
        assert_eq!(AtcWindow::accept(Some(far), 5000 - AtcWindow::SPAN), None);
        assert!(AtcWindow::accept(Some(far), 5000 - AtcWindow::SPAN + 1).is_some());
    }

    /// A card's payments arriving in any order, hundreds apart (a late batch, a diversion): each
    /// accepted once, none a replay; the same again, every one refused.
    #[test]
    fn hundreds_of_counters_out_of_order_are_each_accepted_once() {
        let mut w = None;
        let order: Vec<u16> = (1..=600).rev().step_by(2).chain((1..=600).step_by(2)).collect();
        for atc in &order {
            w = Some(AtcWindow::accept(w, *atc).unwrap_or_else(|| panic!("{atc} refused")));
        }
        for atc in &order {
            assert_eq!(AtcWindow::accept(w, *atc), None, "{atc} accepted twice");
        }
    }
}
