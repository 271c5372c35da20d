//! The flight's passengers and their purchases, generated from the seed: pure data, so the same
//! seed always gives the same cards, accounts and captures.
//!
//! Amounts are fixed per card, so the outcome counts do not depend on the order in which
//! concurrent terminals reach the master or the issuer: a card's per-flight limit admits the
//! same number of equal payments whichever terminals they come from, and an account's balance
//! approves the same number of them.

use inflight_setup::luhn_card;
use serde::Serialize;

use crate::rng::Rng;

/// What kind of card a passenger holds, and so what should happen to their payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Enrolled credit card with room: approved.
    Credit,
    /// Enrolled debit card: approved while the balance lasts, then insufficient funds.
    Debit,
    /// Enrolled check card with a small balance.
    Check,
    /// Enrolled BIN, account blocked: declined.
    Blocked,
    /// Enrolled BIN, no account at the issuer: declined unknown card.
    Unknown,
    /// BIN not enrolled: refused at the seat.
    NotEnrolled,
    /// Expired card: refused at the seat.
    Expired,
    /// Amount over the BIN rule's per-transaction limit: refused at the seat.
    OverTxnLimit,
    /// A card shared by several seats (a family, a crew card): the per-flight limit bites.
    Shared,
}

/// One card in the flight.
#[derive(Debug, Clone, Serialize)]
pub struct SimCard {
    /// Card number (test data, never written by the daemons in clear).
    pub pan: String,
    /// MM/YY.
    pub expiry: String,
    /// credit, debit, check.
    pub kind: &'static str,
    /// Whether its BIN is enrolled.
    pub enrolled: bool,
    /// Issuer account: available amount (None: no account).
    pub available_minor: Option<u64>,
    /// open or blocked.
    pub status: &'static str,
    /// What every payment with this card is for.
    pub amount_minor: u64,
    /// Its profile.
    pub profile: Profile,
    /// How the passenger presents it: `chip` or `contactless` (every simulated card is a chip
    /// card: its chip data is made with the issuer's test master key, as a real card would).
    pub entry_mode: &'static str,
}

/// The flight: every card and, per terminal, which card each capture uses.
#[derive(Debug, Clone)]
pub struct Flight {
    /// Cards; captures refer to them by index.
    pub cards: Vec<SimCard>,
    /// For terminal `k` (index k-1): the card index of each capture, in order.
    pub captures: Vec<Vec<usize>>,
}

/// Shared cards, each used at several seats.
const SHARED_CARDS: usize = 4;

/// Generates the flight for `terminals` terminals of `per_terminal` captures each.
pub fn generate(seed: u64, terminals: u32, per_terminal: u32) -> Flight {
    let mut rng = Rng::new(seed);
    let mut cards = Vec::new();
    let mut serial = 1_000u64;
    let mut card = |rng: &mut Rng, profile: Profile| {
        serial += 1;
        let amounts = [1_500u64, 2_990, 4_500, 8_000, 12_500, 19_900];
        let amount = amounts[rng.below(amounts.len() as u64) as usize];
        let (prefix, kind, enrolled, available, status, expiry, amount_minor) = match profile {
            Profile::Credit => ("400011", "credit", true, Some(1_000_000), "open", "12/30", amount),
            Profile::Debit => ("510055", "debit", true, Some(20_000 + rng.below(60_000)), "open", "11/29", amount),
            Profile::Check => {
                ("650123", "check", true, Some(10_000 + rng.below(20_000)), "open", "10/28", amount.min(8_000))
            }
            Profile::Blocked => ("510055", "debit", true, Some(100_000), "blocked", "12/30", amount),
            Profile::Unknown => ("400011", "credit", true, None, "open", "12/30", amount),
            Profile::NotEnrolled => ("371449", "credit", false, Some(100_000), "open", "12/30", amount),
            Profile::Expired => ("400011", "credit", true, Some(100_000), "open", "01/24", amount),
            Profile::OverTxnLimit => ("400011", "credit", true, Some(5_000_000), "open", "12/30", 250_000),
            Profile::Shared => ("400011", "credit", true, Some(10_000_000), "open", "12/30", 45_000),
        };
        SimCard {
            pan: luhn_card(prefix, serial, 16),
            expiry: expiry.into(),
            kind,
            enrolled,
            available_minor: available,
            status,
            amount_minor,
            profile,
            // Every fourth card is tapped; from the serial, so the seed's draws are unchanged.
            entry_mode: if serial % 4 == 0 { "contactless" } else { "chip" },
        }
    };
    let shared: Vec<usize> = (0..SHARED_CARDS)
        .map(|_| {
            cards.push(card(&mut rng, Profile::Shared));
            cards.len() - 1
        })
        .collect();
    let mut captures = Vec::new();
    for _ in 0..terminals {
        // The passenger at this seat, and how they pay.
        let roll = rng.below(100);
        let profile = match roll {
            0..=51 => Profile::Credit,
            52..=66 => Profile::Debit,
            67..=71 => Profile::Check,
            72..=74 => Profile::Blocked,
            75..=77 => Profile::Unknown,
            78..=84 => Profile::NotEnrolled,
            85..=88 => Profile::Expired,
            89..=92 => Profile::OverTxnLimit,
            _ => Profile::Shared,
        };
        let own = if profile == Profile::Shared {
            shared[rng.below(SHARED_CARDS as u64) as usize]
        } else {
            cards.push(card(&mut rng, profile));
            cards.len() - 1
        };
        // Most purchases use the seat's card; some seats pay part with a shared card.
        let plan = (0..per_terminal)
            .map(|_| if rng.chance(0.03) { shared[rng.below(SHARED_CARDS as u64) as usize] } else { own })
            .collect();
        captures.push(plan);
    }
    Flight { cards, captures }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_flight_and_every_profile_appears() {
        let a = generate(7, 300, 10);
        let b = generate(7, 300, 10);
        assert_eq!(a.captures, b.captures);
        assert_eq!(
            a.cards.iter().map(|c| &c.pan).collect::<Vec<_>>(),
            b.cards.iter().map(|c| &c.pan).collect::<Vec<_>>()
        );
        let mut seen: Vec<Profile> = a.captures.iter().flatten().map(|&i| a.cards[i].profile).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9, "{seen:?}");
        assert_ne!(generate(8, 300, 10).captures, a.captures);
    }
}
