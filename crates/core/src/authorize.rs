//! The issuer's authorization rule for one payment (DESIGN.md §3 "Authorization"): chip evidence
//! genuine and fresh (chip and contactless payments), card known, account open, captured at a
//! time the aircraft could have seen, card not expired and its expiry the one on file, BIN
//! enrolled, entry mode and cardholder verification as the programme requires, currency
//! accepted, within the programme's transaction limit, within the available credit or balance.
//! Deterministic: the same card file, rules and item always give the same outcome and auth code.
//!
//! The capture time comes from the terminal (corrected to the aircraft's clock), so it is
//! bounded here: a payment "captured" at time 0 would otherwise approve any expired card, and one
//! dated after the batch arrived cannot be real.

use inflight_wire::{AuthOutcome, BatchItem, BinList, CardKind, Currency, DeclineReason, EmvData, Expiry, PaymentId};

use crate::chip::{AtcWindow, IssuerMasterKey};

/// An account at the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Card kind.
    pub kind: CardKind,
    /// Card expiry on file.
    pub expiry: Expiry,
    /// Available credit (credit) or balance (debit, check), minor units.
    pub available_minor: u64,
    /// Account currency.
    pub currency: Currency,
    /// Whether the account may be charged.
    pub open: bool,
    /// A chip card: its chip is its evidence, so it is never taken keyed offline (a terminal
    /// that strips the chip data and labels the sale key-entered gets `entry_mode_not_allowed`).
    pub chip: bool,
}

/// The capture times the issuer accepts for a batch: from `not_before_unix_ms` (its receipt
/// less the longest a payment may wait on an aircraft) to `not_after_unix_ms` (its receipt plus
/// an allowance for clocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureBounds {
    /// Earliest plausible capture time.
    pub not_before_unix_ms: u64,
    /// Latest plausible capture time.
    pub not_after_unix_ms: u64,
}

impl CaptureBounds {
    /// How far after the issuer's clock a capture may be stamped (aircraft clocks drift).
    pub const CLOCK_ALLOWANCE_MS: u64 = 10 * 60 * 1000;

    /// The bounds for a batch received at `received_unix_ms`, for payments at most `age_max_ms`
    /// old.
    pub fn at_receipt(received_unix_ms: u64, age_max_ms: u64) -> Self {
        Self {
            not_before_unix_ms: received_unix_ms.saturating_sub(age_max_ms),
            not_after_unix_ms: received_unix_ms.saturating_add(Self::CLOCK_ALLOWANCE_MS),
        }
    }

    /// No bounds (tests of the other rules).
    pub const ANY: CaptureBounds = CaptureBounds { not_before_unix_ms: 0, not_after_unix_ms: u64::MAX };

    fn contains(&self, t: u64) -> bool {
        (self.not_before_unix_ms..=self.not_after_unix_ms).contains(&t)
    }
}

/// What the issuer holds of one card when it decides: its account, and the transaction counters
/// its chip has used.
#[derive(Debug, Clone, Copy, Default)]
pub struct CardFile<'a> {
    /// `None`: no account for this card.
    pub account: Option<&'a Account>,
    /// `None`: no chip payment of this card seen yet.
    pub atc: Option<AtcWindow>,
}

/// What an item is judged against besides its card: the programme, the plausible capture times,
/// and the key that verifies chip cryptograms (`None`: this issuer has none, so chip payments
/// cannot be verified and are declined `cryptogram_invalid`).
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The issuer's programme (BIN rules).
    pub programme: &'a BinList,
    /// Plausible capture times for the batch.
    pub bounds: CaptureBounds,
    /// The issuer master key for application cryptograms.
    pub chip_key: Option<&'a IssuerMasterKey>,
}

/// One item's authorization: the outcome, and the card's file after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Approved or declined.
    pub outcome: AuthOutcome,
    /// The account as it stands after (reduced when approved); `None` for an unknown card.
    pub account_after: Option<Account>,
    /// The counters after: `Some` when the item carried a genuine, fresh cryptogram (its counter
    /// is then used, whatever else is decided), else unchanged.
    pub atc_after: Option<AtcWindow>,
}

/// Decides one item against its card's file and the rules. The chip evidence is judged first:
/// an item whose cryptogram does not verify says nothing trustworthy about anything else, and a
/// replayed one is a copy of a payment already judged.
pub fn authorize(item: &BatchItem, card: CardFile<'_>, rules: &Rules<'_>) -> Authorization {
    let declined = |r, atc_after| Authorization {
        outcome: AuthOutcome::Declined(r),
        account_after: card.account.cloned(),
        atc_after,
    };
    let mut atc_after = card.atc;
    // Chip data is judged whenever it is there, whatever entry mode the item claims: a keyed
    // item carrying chip data (which no honest aircraft sends) must not pass a PIN claim or a
    // counter unverified.
    if item.pos.entry_mode.reads_chip() || item.emv.is_some() {
        let verified = match (&item.emv, rules.chip_key) {
            (Some(emv), Some(key)) => key.verify(&item.pan, item.amount, item.captured_unix_ms, emv).then_some(emv),
            _ => None,
        };
        let Some(emv) = verified else { return declined(DeclineReason::CryptogramInvalid, card.atc) };
        let Some(after) = AtcWindow::accept(card.atc, emv.atc()) else {
            return declined(DeclineReason::AtcReplayed, card.atc);
        };
        atc_after = Some(after);
    }
    let declined = |r| declined(r, atc_after);
    let Some(acct) = card.account else { return declined(DeclineReason::UnknownCard) };
    if !acct.open {
        return declined(DeclineReason::AccountBlocked);
    }
    if acct.chip && !item.pos.entry_mode.reads_chip() {
        return declined(DeclineReason::EntryModeNotAllowed);
    }
    if !rules.bounds.contains(item.captured_unix_ms) {
        return declined(DeclineReason::CaptureTimeOutOfBounds);
    }
    // Expiry is judged at capture time: the sale happened then, not when the aircraft landed.
    if item.expiry.is_expired_at(item.captured_unix_ms) || acct.expiry.is_expired_at(item.captured_unix_ms) {
        return declined(DeclineReason::Expired);
    }
    if item.expiry != acct.expiry {
        return declined(DeclineReason::ExpiryMismatch);
    }
    let Some(rule) = rules.programme.rule_for(&item.pan) else { return declined(DeclineReason::BinNotEnrolled) };
    // The seat refuses these already; judged again because the issuer trusts no terminal.
    if !rule.allows(item.pos.entry_mode) {
        return declined(DeclineReason::EntryModeNotAllowed);
    }
    if rule.cvm_required && !item.emv.as_ref().is_some_and(EmvData::pin_verified) {
        return declined(DeclineReason::CvmRequired);
    }
    let currency = item.amount.currency();
    if !rule.currencies.contains(&currency) || currency != acct.currency {
        return declined(DeclineReason::CurrencyNotAccepted);
    }
    let amount = item.amount.amount_minor();
    if amount > rule.txn_limit_minor {
        return declined(DeclineReason::OverTxnLimit);
    }
    if amount > acct.available_minor {
        return declined(DeclineReason::InsufficientFunds);
    }
    Authorization {
        outcome: AuthOutcome::Approved { auth_code: auth_code(item.id) },
        account_after: Some(Account { available_minor: acct.available_minor - amount, ..acct.clone() }),
        atc_after,
    }
}

/// A six-digit authorization code derived from the payment id (FNV-1a): stable across re-sends.
pub fn auth_code(id: PaymentId) -> String {
    let h =
        id.to_bytes().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{:06}", h % 1_000_000)
}

#[cfg(test)]
mod tests {
    use inflight_wire::{BinPrefix, BinRule, EntryMode, Money, Pan, PointOfSale};

    use super::*;
    use crate::chip::{ChipCard, ChipTxn};

    const CAPTURED: u64 = 1_795_564_800_000; // 2026-11-25
    /// The batch arrives a day later; payments may be up to 30 days old.
    const RECEIVED: u64 = CAPTURED + 86_400_000;
    const AGE_MAX: u64 = 30 * 86_400_000;

    fn eur() -> Currency {
        Currency::parse("EUR").expect("known")
    }

    fn programme() -> BinList {
        BinList {
            version: 1,
            issuer: "test".into(),
            valid_from_unix_ms: 0,
            valid_until_unix_ms: u64::MAX,
            rules: vec![BinRule {
                prefix: BinPrefix::parse("411111").expect("valid"),
                kind: CardKind::Credit,
                txn_limit_minor: 10_000,
                card_flight_limit_minor: 20_000,
                currencies: vec![eur(), Currency::parse("USD").expect("known")],
                entry_modes: EntryMode::ALL.to_vec(),
                cvm_required: false,
            }],
        }
    }

    fn item(pan: &str, amount: u64, cur: &str) -> BatchItem {
        BatchItem {
            id: PaymentId::mint(CAPTURED, [1; 10]),
            pan: Pan::parse(pan).expect("valid"),
            expiry: Expiry::parse("12/29").expect("valid"),
            amount: Money::new(amount, Currency::parse(cur).expect("known")).expect("valid"),
            captured_unix_ms: CAPTURED,
            late: false,
            pos: PointOfSale::LEGACY,
            deferred: true,
            emv: None,
        }
    }

    fn account(available: u64, open: bool) -> Account {
        Account {
            kind: CardKind::Credit,
            expiry: Expiry::parse("12/29").expect("valid"),
            available_minor: available,
            currency: eur(),
            open,
            chip: false,
        }
    }

    #[test]
    fn decision_table() {
        let p = programme();
        let visa = "4111111111111111";
        let cases: Vec<(BatchItem, Option<Account>, Result<u64, DeclineReason>)> = vec![
            (item(visa, 5_000, "EUR"), Some(account(8_000, true)), Ok(3_000)),
            (item(visa, 5_000, "EUR"), None, Err(DeclineReason::UnknownCard)),
            (item(visa, 5_000, "EUR"), Some(account(8_000, false)), Err(DeclineReason::AccountBlocked)),
            (
                BatchItem { expiry: Expiry::parse("10/26").expect("valid"), ..item(visa, 5_000, "EUR") },
                Some(account(8_000, true)),
                Err(DeclineReason::Expired),
            ),
            (item("5555555555554444", 5_000, "EUR"), Some(account(8_000, true)), Err(DeclineReason::BinNotEnrolled)),
            // A currency the programme takes but the account is not in.
            (item(visa, 5_000, "USD"), Some(account(8_000, true)), Err(DeclineReason::CurrencyNotAccepted)),
            (item(visa, 10_001, "EUR"), Some(account(80_000, true)), Err(DeclineReason::OverTxnLimit)),
            (item(visa, 8_001, "EUR"), Some(account(8_000, true)), Err(DeclineReason::InsufficientFunds)),
            (item(visa, 8_000, "EUR"), Some(account(8_000, true)), Ok(0)),
            (
                BatchItem { expiry: Expiry::parse("11/29").expect("valid"), ..item(visa, 5_000, "EUR") },
                Some(account(8_000, true)),
                Err(DeclineReason::ExpiryMismatch),
            ),
            // A capture stamped 0 would otherwise make any expired card look valid.
            (
                BatchItem {
                    captured_unix_ms: 0,
                    late: false,
                    expiry: Expiry::parse("10/26").expect("valid"),
                    ..item(visa, 5_000, "EUR")
                },
                Some(account(8_000, true)),
                Err(DeclineReason::CaptureTimeOutOfBounds),
            ),
            (
                BatchItem {
                    captured_unix_ms: RECEIVED + CaptureBounds::CLOCK_ALLOWANCE_MS + 1,
                    late: false,
                    ..item(visa, 5_000, "EUR")
                },
                Some(account(8_000, true)),
                Err(DeclineReason::CaptureTimeOutOfBounds),
            ),
            (
                BatchItem { captured_unix_ms: RECEIVED - AGE_MAX - 1, ..item(visa, 5_000, "EUR") },
                Some(account(8_000, true)),
                Err(DeclineReason::CaptureTimeOutOfBounds),
            ),
            // Within the clock allowance (10 minutes) after receipt: plausible.
            (
                BatchItem { captured_unix_ms: RECEIVED + 9 * 60 * 1000, ..item(visa, 5_000, "EUR") },
                Some(account(8_000, true)),
                Ok(3_000),
            ),
            // Exactly the programme's transaction limit is allowed.
            (item(visa, 10_000, "EUR"), Some(account(80_000, true)), Ok(70_000)),
        ];
        let rules = Rules { programme: &p, bounds: CaptureBounds::at_receipt(RECEIVED, AGE_MAX), chip_key: None };
        for (it, acct, want) in cases {
            let Authorization { outcome, account_after: after, atc_after } =
                authorize(&it, CardFile { account: acct.as_ref(), atc: None }, &rules);
            assert_eq!(atc_after, None, "no chip data");
            match (want, outcome) {
                (Ok(left), AuthOutcome::Approved { auth_code: code }) => {
                    assert_eq!(after.map(|a| a.available_minor), Some(left));
                    assert_eq!(code, auth_code(it.id), "deterministic");
                    assert_eq!(code.len(), 6);
                }
                (Err(r), AuthOutcome::Declined(got)) => {
                    assert_eq!(got, r);
                    assert_eq!(after, acct, "a decline changes nothing");
                }
                (want, got) => panic!("{it:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    fn chip_item(card: &ChipCard, atc: u16, amount: u64, pin: bool) -> BatchItem {
        let money = Money::new(amount, eur()).expect("valid");
        let emv = card.generate_ac(ChipTxn {
            atc,
            amount: money,
            unix_ms: CAPTURED,
            unpredictable: [4, 3, 2, 1],
            pin_verified: pin,
        });
        BatchItem {
            id: PaymentId::mint(CAPTURED, [atc as u8; 10]),
            pos: PointOfSale { entry_mode: EntryMode::Chip, ..PointOfSale::LEGACY },
            emv: Some(emv),
            ..item(VISA, amount, "EUR")
        }
    }

    const VISA: &str = "4111111111111111";

    /// The chip evidence: genuine and fresh approves; altered, replayed, unverifiable, or outside
    /// the programme's entry modes and CVM policy declines with its own reason.
    #[test]
    fn chip_evidence_decisions() {
        let imk = IssuerMasterKey::from_hex("2b7e151628aed2a6abf7158809cf4f3c").expect("valid");
        let card = ChipCard::new(&imk, &Pan::parse(VISA).expect("valid"), 0);
        let p = programme();
        let rules = Rules { programme: &p, bounds: CaptureBounds::ANY, chip_key: Some(&imk) };
        let acct = account(80_000, true);
        let file = |atc| CardFile { account: Some(&acct), atc };
        let outcome = |a: &Authorization| a.outcome.clone();

        let first = authorize(&chip_item(&card, 5, 1_000, false), file(None), &rules);
        assert!(matches!(first.outcome, AuthOutcome::Approved { .. }), "{first:?}");
        let seen = first.atc_after.expect("counter used");

        // The same chip data again (another payment id): a replay, the account untouched.
        let again = authorize(&chip_item(&card, 5, 1_000, false), file(Some(seen)), &rules);
        assert_eq!(again.outcome, AuthOutcome::Declined(DeclineReason::AtcReplayed));
        assert_eq!((again.account_after.as_ref(), again.atc_after), (Some(&acct), Some(seen)));

        // The amount altered after the card signed: the item's, or the item's and the chip data's.
        let mut altered = chip_item(&card, 6, 1_000, false);
        altered.amount = Money::new(1_001, eur()).expect("valid");
        let got = authorize(&altered, file(Some(seen)), &rules);
        assert_eq!(got.outcome, AuthOutcome::Declined(DeclineReason::CryptogramInvalid));
        assert_eq!(got.atc_after, Some(seen), "a forged cryptogram uses no counter");

        // A chip payment to an issuer without the chip key, or a chip entry mode without data.
        let keyless = Rules { chip_key: None, ..rules };
        assert_eq!(
            outcome(&authorize(&chip_item(&card, 6, 1_000, false), file(None), &keyless)),
            AuthOutcome::Declined(DeclineReason::CryptogramInvalid)
        );
        let bare = BatchItem { emv: None, ..chip_item(&card, 6, 1_000, false) };
        assert_eq!(
            outcome(&authorize(&bare, file(None), &rules)),
            AuthOutcome::Declined(DeclineReason::CryptogramInvalid)
        );

        // Declined for funds, the counter is still used: the card made that cryptogram.
        let poor = account(10, true);
        let got =
            authorize(&chip_item(&card, 7, 1_000, false), CardFile { account: Some(&poor), atc: Some(seen) }, &rules);
        assert_eq!(got.outcome, AuthOutcome::Declined(DeclineReason::InsufficientFunds));
        assert_eq!(AtcWindow::accept(got.atc_after, 7), None);

        // The chip card keyed (its chip data stripped by the terminal): never taken keyed.
        let chip_acct = Account { chip: true, ..account(80_000, true) };
        let stripped = BatchItem { pos: PointOfSale::LEGACY, emv: None, ..chip_item(&card, 20, 1_000, false) };
        assert_eq!(
            outcome(&authorize(&stripped, CardFile { account: Some(&chip_acct), atc: None }, &rules)),
            AuthOutcome::Declined(DeclineReason::EntryModeNotAllowed)
        );
        let tapped =
            authorize(&chip_item(&card, 21, 1_000, false), CardFile { account: Some(&chip_acct), atc: None }, &rules);
        assert!(matches!(tapped.outcome, AuthOutcome::Approved { .. }), "{tapped:?}");

        // Programme policy: chip only, PIN required.
        let mut strict = programme();
        strict.rules[0].entry_modes = vec![EntryMode::Chip];
        strict.rules[0].cvm_required = true;
        let strict_rules = Rules { programme: &strict, ..rules };
        assert_eq!(
            outcome(&authorize(&item(VISA, 1_000, "EUR"), file(None), &strict_rules)),
            AuthOutcome::Declined(DeclineReason::EntryModeNotAllowed)
        );
        assert_eq!(
            outcome(&authorize(&chip_item(&card, 8, 1_000, false), file(None), &strict_rules)),
            AuthOutcome::Declined(DeclineReason::CvmRequired)
        );
        let pin = authorize(&chip_item(&card, 9, 1_000, true), file(None), &strict_rules);
        assert!(matches!(pin.outcome, AuthOutcome::Approved { .. }), "{pin:?}");
    }

    /// The auth code is a stable function of the payment id: frozen, so a change is seen.
    #[test]
    fn auth_codes_are_frozen() {
        assert_eq!(auth_code(PaymentId::from_bytes([0; 16])), auth_code(PaymentId::from_bytes([0; 16])));
        let codes: Vec<String> = [[0u8; 16], [1; 16], [0xab; 16]].map(PaymentId::from_bytes).map(auth_code).to_vec();
        assert_eq!(codes, FROZEN_AUTH_CODES.map(String::from).to_vec());
    }

    const FROZEN_AUTH_CODES: [&str; 3] = ["701221", "000245", "505461"];
}
