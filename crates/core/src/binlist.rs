//! Which signed BIN list a terminal or the master should hold.
//!
//! The issuer renews its list well before it expires: a new version when the rules change, or
//! the same version re-signed with a later validity window (a renewal). A holder takes an
//! incoming (signature-verified) list when it is valid now and better than the one it holds:
//! any valid list beats an expired or missing one, and among valid lists the higher
//! `(version, valid_until)` wins. So a renewal replaces the list it renews, and a newer list
//! that has expired (or is not yet valid) never displaces a valid one.

use inflight_wire::BinList;

/// Whether `incoming` should replace `current` at `now_unix_ms` (the holder's best clock).
pub fn prefer(current: Option<&BinList>, incoming: &BinList, now_unix_ms: u64) -> bool {
    if !incoming.is_valid_at(now_unix_ms) {
        return false;
    }
    match current {
        None => true,
        Some(cur) if !cur.is_valid_at(now_unix_ms) => true,
        Some(cur) => (incoming.version, incoming.valid_until_unix_ms) > (cur.version, cur.valid_until_unix_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(version: u64, from: u64, until: u64) -> BinList {
        BinList { version, issuer: "bank".into(), valid_from_unix_ms: from, valid_until_unix_ms: until, rules: vec![] }
    }

    #[test]
    fn renewals_replace_and_expired_lists_never_win() {
        let v1 = list(1, 0, 100);
        assert!(prefer(None, &v1, 50));
        assert!(!prefer(None, &v1, 101), "an expired list is never installed");
        // The same version re-signed with a later window: a renewal, taken.
        let v1_renewed = list(1, 40, 200);
        assert!(prefer(Some(&v1), &v1_renewed, 60));
        assert!(!prefer(Some(&v1_renewed), &v1, 60), "an older window never replaces a newer one");
        assert!(!prefer(Some(&v1), &v1, 60), "the same list is not installed again");
        // Once the held list has expired, any valid one replaces it, even a lower version.
        let v0 = list(0, 0, 1_000);
        assert!(!prefer(Some(&v1), &v0, 60));
        assert!(prefer(Some(&v1), &v0, 150));
        // A newer version that has already expired, or is not valid yet, never blocks a valid one.
        let v2_expired = list(2, 0, 30);
        assert!(!prefer(Some(&v1_renewed), &v2_expired, 60));
        let v3_future = list(3, 500, 900);
        assert!(!prefer(Some(&v1_renewed), &v3_future, 60));
        assert!(prefer(Some(&v1_renewed), &list(2, 0, 150), 60), "a higher valid version wins");
    }
}
