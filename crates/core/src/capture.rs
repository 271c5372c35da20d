//! Capture validation on the terminal.

use std::collections::BTreeMap;
use std::fmt;

use crate::hotlist::HotSet;
use inflight_wire::{
    BinList, CardError, CryptogramKind, Currency, EmvData, EntryMode, Expiry, LineItem, Mcc, Money, Pan, Payment,
    PaymentError, PointOfSale, TerminalType,
};

/// A sale app's request, as received: strings and numbers not yet trusted.
#[derive(Clone)]
pub struct CaptureRequest {
    /// Card number as typed or read; never logged (this type has no derived `Debug`).
    pub pan: String,
    /// `MM/YY`.
    pub expiry: String,
    /// Integer minor units.
    pub amount_minor: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// Seat or crew position.
    pub seat: String,
    /// Articles sold.
    pub items: Vec<LineItem>,
    /// `chip`, `contactless` or `key_entered`; absent: `chip` with chip data, else `key_entered`.
    pub entry_mode: Option<String>,
    /// The chip's data as TLV in hexadecimal (card data: never logged).
    pub emv: Option<String>,
    /// Merchant category code of what was sold; absent: the terminal's own.
    pub mcc: Option<String>,
}

impl fmt::Debug for CaptureRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureRequest")
            .field("pan", &"<redacted>")
            .field("amount_minor", &self.amount_minor)
            .field("currency", &self.currency)
            .field("seat", &self.seat)
            .field("entry_mode", &self.entry_mode)
            .field("emv", &self.emv.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// The terminal's own risk caps: how much it may hold that the master has not yet acknowledged.
/// They bound the airline's exposure on a terminal cut off from the aircraft server, and its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalCaps {
    /// Most payments held un-forwarded.
    pub stored_payments_max: u64,
    /// Most money held un-forwarded, per currency, in minor units.
    pub stored_amount_minor_max: u64,
    /// Largest single payment, in minor units of its currency.
    pub txn_amount_minor_max: u64,
}

/// What a terminal is, for the point of sale of every payment it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// Crew (attended) or seatback (unattended).
    pub terminal_type: TerminalType,
    /// Merchant category of a sale that names none.
    pub mcc: Mcc,
}

impl Default for Site {
    fn default() -> Self {
        Site { terminal_type: TerminalType::UnattendedOfflineOnly, mcc: Mcc::DUTY_FREE }
    }
}

/// What the terminal currently holds un-forwarded, maintained by the driver from its store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Payments captured and not yet acknowledged by the master.
    pub payments: u64,
    /// Their total per currency, in minor units.
    pub amount_minor: BTreeMap<Currency, u64>,
}

impl Holdings {
    /// Counts a newly captured payment.
    pub fn add(&mut self, m: Money) {
        self.payments += 1;
        *self.amount_minor.entry(m.currency()).or_default() += m.amount_minor();
    }

    /// Releases a payment the master acknowledged (or refused).
    pub fn remove(&mut self, m: Money) {
        self.payments = self.payments.saturating_sub(1);
        if let Some(v) = self.amount_minor.get_mut(&m.currency()) {
            *v = v.saturating_sub(m.amount_minor());
        }
    }
}

/// Why a capture is refused at the terminal. [`Refusal::as_str`] gives the stable reason code
/// returned to the sale app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// Not 12-19 digits.
    BadPan,
    /// Fails the Luhn check.
    Luhn,
    /// Not `MM/YY`.
    BadExpiry,
    /// Past its expiry month.
    Expired,
    /// Zero, negative or over the absolute maximum.
    BadAmount,
    /// Not a known ISO 4217 code.
    BadCurrency,
    /// Over the per-transaction limit (the terminal's, or the BIN rule's).
    OverTxnLimit,
    /// The terminal holds no signed, currently valid BIN list: every card is refused.
    NoValidBinList,
    /// The card's BIN is not on the issuer's list.
    BinNotEnrolled,
    /// The BIN rule does not accept this currency.
    CurrencyNotAccepted,
    /// The card is on the issuer's hot-card list (blocked, lost, or declined `account_blocked`
    /// on an earlier flight): not accepted offline.
    HotCard,
    /// Seat label malformed.
    BadSeat,
    /// Line items malformed.
    BadItems,
    /// Not `chip`, `contactless` or `key_entered`.
    BadEntryMode,
    /// Chip data malformed (not TLV, an unknown or forbidden tag, a required one missing, too
    /// long), or sent with a key-entered payment.
    BadChipData,
    /// A chip or contactless payment without chip data.
    ChipDataMissing,
    /// The chip signed another amount or currency than the payment's.
    ChipDataMismatch,
    /// The chip declined the payment itself (an application authentication cryptogram).
    ChipDeclined,
    /// Not a four-digit merchant category code, or an airline's.
    BadMcc,
    /// The card's programme does not take this entry mode offline.
    EntryModeNotAllowed,
    /// The card's programme requires the PIN, verified by the chip, and it was not.
    CvmRequired,
    /// The terminal holds as many payments, or as much money, as its caps allow.
    TerminalStoreFull,
    /// The terminal could not store the payment durably (disk full, I/O error).
    StorageError,
}

impl Refusal {
    /// Stable machine-readable reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadPan => "bad_pan",
            Refusal::Luhn => "luhn",
            Refusal::BadExpiry => "bad_expiry",
            Refusal::Expired => "expired",
            Refusal::BadAmount => "bad_amount",
            Refusal::BadCurrency => "bad_currency",
            Refusal::OverTxnLimit => "over_txn_limit",
            Refusal::NoValidBinList => "no_valid_bin_list",
            Refusal::BinNotEnrolled => "bin_not_enrolled",
            Refusal::CurrencyNotAccepted => "currency_not_accepted",
            Refusal::HotCard => "hot_card",
            Refusal::BadSeat => "bad_seat",
            Refusal::BadItems => "bad_items",
            Refusal::BadEntryMode => "bad_entry_mode",
            Refusal::BadChipData => "bad_chip_data",
            Refusal::ChipDataMissing => "chip_data_missing",
            Refusal::ChipDataMismatch => "chip_data_mismatch",
            Refusal::ChipDeclined => "chip_declined",
            Refusal::BadMcc => "bad_mcc",
            Refusal::EntryModeNotAllowed => "entry_mode_not_allowed",
            Refusal::CvmRequired => "cvm_required",
            Refusal::TerminalStoreFull => "terminal_store_full",
            Refusal::StorageError => "storage_error",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that passed every terminal check: ready to be given an id and stored.
#[derive(Debug, Clone)]
pub struct ValidCapture {
    /// The card.
    pub pan: Pan,
    /// Its expiry, not passed at capture time.
    pub expiry: Expiry,
    /// The amount.
    pub amount: Money,
    /// Seat or crew position.
    pub seat: String,
    /// Articles sold.
    pub items: Vec<LineItem>,
    /// How and where it was taken.
    pub pos: PointOfSale,
    /// The chip's data, for a chip or contactless payment.
    pub emv: Option<EmvData>,
}

/// Checks a capture request at `now_unix_ms` against the issuer's BIN list and hot-card list,
/// the caps and what the terminal holds. Checks run cheapest and most specific first, so the
/// reason names the first thing wrong. Without a BIN list valid at `now_unix_ms`, every card is
/// refused (fail closed); without a hot-card list, none is refused for being hot (the hot list
/// only removes cards the BIN list admits; see `crate::hotlist` on expired lists).
///
/// Chip data is checked for its shape and against the payment (amount, currency, the card's
/// own decision); its cryptogram cannot be: a terminal holds no card key. The issuer verifies it.
pub fn validate(
    req: &CaptureRequest,
    now_unix_ms: u64,
    bins: Option<&BinList>,
    hot: Option<&HotSet>,
    site: Site,
    caps: &TerminalCaps,
    held: &Holdings,
) -> Result<ValidCapture, Refusal> {
    let pan = Pan::parse(&req.pan).map_err(|e| match e {
        CardError::Luhn => Refusal::Luhn,
        _ => Refusal::BadPan,
    })?;
    let expiry = Expiry::parse(&req.expiry).map_err(|_| Refusal::BadExpiry)?;
    if expiry.is_expired_at(now_unix_ms) {
        return Err(Refusal::Expired);
    }
    let currency = Currency::parse(&req.currency).map_err(|_| Refusal::BadCurrency)?;
    let amount = Money::new(req.amount_minor, currency).map_err(|_| Refusal::BadAmount)?;
    if amount.amount_minor() > caps.txn_amount_minor_max {
        return Err(Refusal::OverTxnLimit);
    }
    let (pos, emv) = evidence(req, amount, site)?;
    let bins = bins.filter(|b| b.is_valid_at(now_unix_ms)).ok_or(Refusal::NoValidBinList)?;
    let rule = bins.rule_for(&pan).ok_or(Refusal::BinNotEnrolled)?;
    if !rule.allows(pos.entry_mode) {
        return Err(Refusal::EntryModeNotAllowed);
    }
    if rule.cvm_required && !emv.as_ref().is_some_and(EmvData::pin_verified) {
        return Err(Refusal::CvmRequired);
    }
    if !rule.currencies.contains(&currency) {
        return Err(Refusal::CurrencyNotAccepted);
    }
    if amount.amount_minor() > rule.txn_limit_minor {
        return Err(Refusal::OverTxnLimit);
    }
    if hot.is_some_and(|h| h.contains(&pan)) {
        return Err(Refusal::HotCard);
    }
    Payment::check_shape(&req.seat, &req.items).map_err(|e| match e {
        PaymentError::BadSeat => Refusal::BadSeat,
        PaymentError::BadLineItems => Refusal::BadItems,
        PaymentError::ChipDataMismatch => Refusal::BadChipData,
    })?;
    let held_amount = held.amount_minor.get(&currency).copied().unwrap_or(0);
    if held.payments >= caps.stored_payments_max || held_amount + amount.amount_minor() > caps.stored_amount_minor_max {
        return Err(Refusal::TerminalStoreFull);
    }
    Ok(ValidCapture { pan, expiry, amount, seat: req.seat.clone(), items: req.items.clone(), pos, emv })
}

/// The point of sale and chip data of a request, checked against each other and the amount.
fn evidence(req: &CaptureRequest, amount: Money, site: Site) -> Result<(PointOfSale, Option<EmvData>), Refusal> {
    let emv = req.emv.as_deref().map(EmvData::from_hex).transpose().map_err(|_| Refusal::BadChipData)?;
    let entry_mode = match req.entry_mode.as_deref() {
        Some(m) => EntryMode::parse(m).map_err(|_| Refusal::BadEntryMode)?,
        None if emv.is_some() => EntryMode::Chip,
        None => EntryMode::KeyEntered,
    };
    let mcc = match req.mcc.as_deref() {
        Some(m) => Mcc::parse(m).map_err(|_| Refusal::BadMcc)?,
        None => site.mcc,
    };
    match (&emv, entry_mode.reads_chip()) {
        (None, true) => return Err(Refusal::ChipDataMissing),
        (Some(_), false) => return Err(Refusal::BadChipData),
        (Some(e), true) => {
            if e.amount_minor() != amount.amount_minor() || e.currency_numeric() != amount.currency().numeric() {
                return Err(Refusal::ChipDataMismatch);
            }
            if !matches!(e.cryptogram_kind(), CryptogramKind::Arqc | CryptogramKind::Tc) {
                return Err(Refusal::ChipDeclined);
            }
        }
        (None, false) => {}
    }
    Ok((PointOfSale { entry_mode, terminal_type: site.terminal_type, mcc }, emv))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25T00:00:00Z.
    const NOW: u64 = 1_795_564_800_000;

    fn bins() -> BinList {
        use inflight_wire::{BinPrefix, BinRule, CardKind};
        BinList {
            version: 1,
            issuer: "test".into(),
            valid_from_unix_ms: NOW - 1,
            valid_until_unix_ms: NOW + 86_400_000,
            rules: vec![
                BinRule {
                    prefix: BinPrefix::parse("411111").expect("valid"),
                    kind: CardKind::Credit,
                    txn_limit_minor: 5_000,
                    card_flight_limit_minor: 10_000,
                    currencies: vec![Currency::parse("EUR").expect("known"), Currency::parse("USD").expect("known")],
                    entry_modes: EntryMode::ALL.to_vec(),
                    cvm_required: false,
                },
                BinRule {
                    prefix: BinPrefix::parse("55555555").expect("valid"),
                    kind: CardKind::Debit,
                    txn_limit_minor: 1_000,
                    card_flight_limit_minor: 2_000,
                    currencies: vec![Currency::parse("EUR").expect("known")],
                    entry_modes: EntryMode::ALL.to_vec(),
                    cvm_required: false,
                },
            ],
        }
    }

    /// `validate` with the test BIN list, no hot list, the default site and [`caps`].
    fn valid(r: &CaptureRequest, held: &Holdings) -> Result<ValidCapture, Refusal> {
        validate(r, NOW, Some(&bins()), None, Site::default(), &caps(), held)
    }

    fn caps() -> TerminalCaps {
        TerminalCaps { stored_payments_max: 3, stored_amount_minor_max: 10_000, txn_amount_minor_max: 5_000 }
    }

    fn req(pan: &str, expiry: &str, amount: u64, cur: &str) -> CaptureRequest {
        CaptureRequest {
            pan: pan.into(),
            expiry: expiry.into(),
            amount_minor: amount,
            currency: cur.into(),
            seat: "12A".into(),
            items: vec![],
            entry_mode: None,
            emv: None,
            mcc: None,
        }
    }

    /// One table: input, then the expected outcome.
    #[test]
    fn validation_table() {
        let held = Holdings::default();
        let cases: &[(CaptureRequest, Result<(), Refusal>)] = &[
            (req("4111111111111111", "12/29", 1250, "EUR"), Ok(())),
            (req("4111111111111112", "12/29", 1250, "EUR"), Err(Refusal::Luhn)),
            (req("41111111", "12/29", 1250, "EUR"), Err(Refusal::BadPan)),
            (req("4111111111111111", "13/29", 1250, "EUR"), Err(Refusal::BadExpiry)),
            (req("4111111111111111", "10/26", 1250, "EUR"), Err(Refusal::Expired)),
            (req("4111111111111111", "11/26", 1250, "EUR"), Ok(())), // valid through end of month
            (req("4111111111111111", "12/29", 0, "EUR"), Err(Refusal::BadAmount)),
            (req("4111111111111111", "12/29", 5_001, "EUR"), Err(Refusal::OverTxnLimit)),
            (req("4111111111111111", "12/29", 5_000, "EUR"), Ok(())),
            (req("4111111111111111", "12/29", 100, "XXX"), Err(Refusal::BadCurrency)),
            (
                CaptureRequest { seat: String::new(), ..req("4111111111111111", "12/29", 100, "EUR") },
                Err(Refusal::BadSeat),
            ),
            // A card number typed into the seat field would reach the crew's report in clear.
            (
                CaptureRequest { seat: "4111111111111111".into(), ..req("4111111111111111", "12/29", 100, "EUR") },
                Err(Refusal::BadSeat),
            ),
            (
                CaptureRequest { seat: "crew-411111".into(), ..req("4111111111111111", "12/29", 100, "EUR") },
                Err(Refusal::BadSeat),
            ),
            (CaptureRequest { seat: "row-12345".into(), ..req("4111111111111111", "12/29", 100, "EUR") }, Ok(())),
            (
                CaptureRequest {
                    items: vec![LineItem { sku: "A".into(), quantity: 0, unit_amount_minor: 1 }],
                    ..req("4111111111111111", "12/29", 100, "EUR")
                },
                Err(Refusal::BadItems),
            ),
        ];
        for (r, want) in cases {
            let got = valid(r, &held).map(|_| ());
            assert_eq!(&got, want, "{r:?}");
        }
    }

    #[test]
    fn bin_list_rules_and_fail_closed() {
        let held = Holdings::default();
        let check = |r: CaptureRequest, bins: Option<&BinList>| {
            validate(&r, NOW, bins, None, Site::default(), &caps(), &held).map(|_| ())
        };
        let list = bins();
        assert_eq!(check(req("378282246310005", "12/29", 100, "EUR"), Some(&list)), Err(Refusal::BinNotEnrolled));
        assert_eq!(check(req("5555555555554444", "12/29", 100, "USD"), Some(&list)), Err(Refusal::CurrencyNotAccepted));
        assert_eq!(check(req("5555555555554444", "12/29", 1_001, "EUR"), Some(&list)), Err(Refusal::OverTxnLimit));
        assert_eq!(check(req("5555555555554444", "12/29", 1_000, "EUR"), Some(&list)), Ok(()));
        assert_eq!(check(req("4111111111111111", "12/29", 100, "EUR"), None), Err(Refusal::NoValidBinList));
        let expired = BinList { valid_until_unix_ms: NOW - 1, ..bins() };
        assert_eq!(check(req("4111111111111111", "12/29", 100, "EUR"), Some(&expired)), Err(Refusal::NoValidBinList));
        let future = BinList { valid_from_unix_ms: NOW + 1, ..bins() };
        assert_eq!(check(req("4111111111111111", "12/29", 100, "EUR"), Some(&future)), Err(Refusal::NoValidBinList));
        // Card format is still reported first: a typo is a typo, list or not.
        assert_eq!(check(req("4111111111111112", "12/29", 100, "EUR"), None), Err(Refusal::Luhn));
    }

    #[test]
    fn caps_bound_what_the_terminal_holds() {
        let eur = Currency::parse("EUR").expect("known");
        let mut held = Holdings::default();
        held.add(Money::new(5_000, eur).expect("valid"));
        held.add(Money::new(4_000, eur).expect("valid"));
        let r = req("4111111111111111", "12/29", 1_001, "EUR");
        assert_eq!(
            validate(&r, NOW, Some(&bins()), None, Site::default(), &caps(), &held).map(|_| ()),
            Err(Refusal::TerminalStoreFull)
        );
        // Another currency has its own amount cap...
        assert!(valid(&req("4111111111111111", "12/29", 1_001, "USD"), &held).is_ok());
        // ...but the count cap is shared.
        held.add(Money::new(1, eur).expect("valid"));
        assert_eq!(
            valid(&req("4111111111111111", "12/29", 1, "USD"), &held).map(|_| ()),
            Err(Refusal::TerminalStoreFull)
        );
        held.remove(Money::new(5_000, eur).expect("valid"));
        assert!(validate(&r, NOW, Some(&bins()), None, Site::default(), &caps(), &held).is_ok());
    }

    /// Chip data and the programme's policy: each problem has its own reason; the cryptogram
    /// itself is left to the issuer.
    #[test]
    fn chip_evidence_and_entry_mode_policy() {
        use crate::chip::{ChipCard, ChipTxn, IssuerMasterKey};
        let held = Holdings::default();
        let imk = IssuerMasterKey::from_bytes([7; 16]);
        let pan = "5555555555554444";
        let card = ChipCard::new(&imk, &Pan::parse(pan).expect("valid"), 0);
        let eur = Currency::parse("EUR").expect("known");
        let tlv = |amount: u64, pin: bool| {
            let money = Money::new(amount, eur).expect("valid");
            card.generate_ac(ChipTxn { atc: 1, amount: money, unix_ms: NOW, unpredictable: [1; 4], pin_verified: pin })
                .to_hex()
        };
        let chip =
            |amount: u64, pin: bool| CaptureRequest { emv: Some(tlv(amount, pin)), ..req(pan, "12/29", amount, "EUR") };
        let mut strict = bins();
        strict.rules[1].entry_modes = vec![EntryMode::Chip, EntryMode::Contactless];
        strict.rules[1].cvm_required = true;
        let check = |r: &CaptureRequest, list: &BinList| {
            validate(r, NOW, Some(list), None, Site::default(), &caps(), &held).map(|v| (v.pos.entry_mode, v.pos.mcc))
        };
        let open = bins();
        // Chip data makes a chip payment; the terminal's merchant category unless the sale names one.
        assert_eq!(check(&chip(500, false), &open), Ok((EntryMode::Chip, Mcc::DUTY_FREE)));
        let food =
            CaptureRequest { mcc: Some("5812".into()), entry_mode: Some("contactless".into()), ..chip(500, false) };
        assert_eq!(check(&food, &open), Ok((EntryMode::Contactless, Mcc::RESTAURANTS)));
        let cases: Vec<(CaptureRequest, &BinList, Refusal)> = vec![
            (CaptureRequest { entry_mode: Some("swipe".into()), ..chip(500, false) }, &open, Refusal::BadEntryMode),
            (CaptureRequest { emv: Some("9f2601".into()), ..chip(500, false) }, &open, Refusal::BadChipData),
            (
                CaptureRequest { entry_mode: Some("key_entered".into()), ..chip(500, false) },
                &open,
                Refusal::BadChipData,
            ),
            (
                CaptureRequest { entry_mode: Some("chip".into()), ..req(pan, "12/29", 500, "EUR") },
                &open,
                Refusal::ChipDataMissing,
            ),
            (CaptureRequest { emv: Some(tlv(400, false)), ..chip(500, false) }, &open, Refusal::ChipDataMismatch),
            (CaptureRequest { currency: "USD".into(), ..chip(500, false) }, &open, Refusal::ChipDataMismatch),
            (CaptureRequest { mcc: Some("4511".into()), ..chip(500, false) }, &open, Refusal::BadMcc),
            (req(pan, "12/29", 500, "EUR"), &strict, Refusal::EntryModeNotAllowed),
            (chip(500, false), &strict, Refusal::CvmRequired),
        ];
        for (r, list, want) in cases {
            assert_eq!(check(&r, list), Err(want), "{r:?}");
        }
        assert_eq!(check(&chip(500, true), &strict), Ok((EntryMode::Chip, Mcc::DUTY_FREE)), "PIN verified by the chip");
        // The card declined it itself (an AAC in 9F27).
        let aac = tlv(500, false).replacen("9f270180", "9f270100", 1);
        assert_eq!(check(&CaptureRequest { emv: Some(aac), ..chip(500, false) }, &open), Err(Refusal::ChipDeclined));
    }

    #[test]
    fn debug_never_shows_the_card() {
        let shown = format!("{:?}", req("4111111111111111", "12/29", 1, "EUR"));
        assert!(!shown.contains("4111111111111111"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("EUR"), "the rest is shown: {shown}");
    }

    /// The reasons are a stable interface (README, sale apps match on them).
    #[test]
    fn refusal_names_are_stable() {
        let names = [
            (Refusal::BadPan, "bad_pan"),
            (Refusal::Luhn, "luhn"),
            (Refusal::Expired, "expired"),
            (Refusal::NoValidBinList, "no_valid_bin_list"),
            (Refusal::BinNotEnrolled, "bin_not_enrolled"),
            (Refusal::OverTxnLimit, "over_txn_limit"),
            (Refusal::TerminalStoreFull, "terminal_store_full"),
            (Refusal::StorageError, "storage_error"),
        ];
        for (r, name) in names {
            assert_eq!((r.as_str(), r.to_string()), (name, name.to_owned()));
        }
    }

    /// Exactly the terminal's amount cap may be held.
    #[test]
    fn the_amount_cap_is_inclusive() {
        let eur = Currency::parse("EUR").expect("known");
        let mut held = Holdings::default();
        held.add(Money::new(6_000, eur).expect("valid"));
        assert!(valid(&req("4111111111111111", "12/29", 4_000, "EUR"), &held).is_ok());
    }

    #[test]
    fn a_hot_card_is_refused_after_the_bin_checks_and_others_pass() {
        let held = Holdings::default();
        let hot = crate::hotlist::test_set(&["4111111111111111"]);
        let check = |pan: &str, amount| {
            validate(&req(pan, "12/29", amount, "USD"), NOW, Some(&bins()), Some(&hot), Site::default(), &caps(), &held)
                .map(|_| ())
        };
        assert_eq!(check("4111111111111111", 100), Err(Refusal::HotCard));
        assert_eq!(Refusal::HotCard.as_str(), "hot_card");
        assert_eq!(check("4111111111111129", 100), Ok(()), "another card of the same BIN passes");
        // More specific reasons first: the hot card over the BIN's limit is refused for that.
        assert_eq!(check("4111111111111111", 1_000_000), Err(Refusal::OverTxnLimit));
    }
}
