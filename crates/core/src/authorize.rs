//! The issuer's authorization rule for one payment (DESIGN.md §3 "Authorization"):
//! card known, account open, captured at a time the aircraft could have seen, card not expired
//! and its expiry the one on file, BIN enrolled, currency accepted, within the programme's
//! transaction limit, within the available credit or balance. Deterministic: the same account,
//! programme, item and bounds always give the same outcome and auth code.
//!
//! The capture time comes from the terminal (corrected to the aircraft's clock), so it is
//! bounded here: a payment "captured" at time 0 would otherwise approve any expired card, and one
//! dated after the batch arrived cannot be real.

use inflight_wire::{AuthOutcome, BatchItem, BinList, CardKind, Currency, DeclineReason, Expiry, PaymentId};

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

/// Decides one item against its account (`None`: unknown card), the issuer's programme and the
/// plausible capture times. Returns the outcome and the account as it stands after (reduced when
/// approved).
pub fn authorize(
    item: &BatchItem,
    account: Option<&Account>,
    programme: &BinList,
    bounds: CaptureBounds,
) -> (AuthOutcome, Option<Account>) {
    let declined = |r| (AuthOutcome::Declined(r), account.cloned());
    let Some(acct) = account else { return declined(DeclineReason::UnknownCard) };
    if !acct.open {
        return declined(DeclineReason::AccountBlocked);
    }
    if !bounds.contains(item.captured_unix_ms) {
        return declined(DeclineReason::CaptureTimeOutOfBounds);
    }
    // Expiry is judged at capture time: the sale happened then, not when the aircraft landed.
    if item.expiry.is_expired_at(item.captured_unix_ms) || acct.expiry.is_expired_at(item.captured_unix_ms) {
        return declined(DeclineReason::Expired);
    }
    if item.expiry != acct.expiry {
        return declined(DeclineReason::ExpiryMismatch);
    }
    let Some(rule) = programme.rule_for(&item.pan) else { return declined(DeclineReason::BinNotEnrolled) };
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
    let after = Account { available_minor: acct.available_minor - amount, ..acct.clone() };
    (AuthOutcome::Approved { auth_code: auth_code(item.id) }, Some(after))
}

/// A six-digit authorization code derived from the payment id (FNV-1a): stable across re-sends.
pub fn auth_code(id: PaymentId) -> String {
    let h =
        id.to_bytes().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{:06}", h % 1_000_000)
}

#[cfg(test)]
mod tests {
    use inflight_wire::{BinPrefix, BinRule, Money, Pan};

    use super::*;

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
        }
    }

    fn account(available: u64, open: bool) -> Account {
        Account {
            kind: CardKind::Credit,
            expiry: Expiry::parse("12/29").expect("valid"),
            available_minor: available,
            currency: eur(),
            open,
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
        let bounds = CaptureBounds::at_receipt(RECEIVED, AGE_MAX);
        for (it, acct, want) in cases {
            let (outcome, after) = authorize(&it, acct.as_ref(), &p, bounds);
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

    /// The auth code is a stable function of the payment id: frozen, so a change is seen.
    #[test]
    fn auth_codes_are_frozen() {
        assert_eq!(auth_code(PaymentId::from_bytes([0; 16])), auth_code(PaymentId::from_bytes([0; 16])));
        let codes: Vec<String> = [[0u8; 16], [1; 16], [0xab; 16]].map(PaymentId::from_bytes).map(auth_code).to_vec();
        assert_eq!(codes, FROZEN_AUTH_CODES.map(String::from).to_vec());
    }

    const FROZEN_AUTH_CODES: [&str; 3] = ["701221", "000245", "505461"];
}
