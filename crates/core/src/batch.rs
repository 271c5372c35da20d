//! The batch header's digest: what the aircraft seals and the issuer checks a batch against.

use inflight_wire::BatchItem;
use ring::digest;

/// SHA-256 over the card-free part of a batch's items, in order: payment id, amount, currency
/// and capture time. It is on the wire in the batch header and stored on both sides, so it
/// must not cover the card number or expiry: a plain hash over a batch of one or a few payments
/// would be brute-forced from BIN + last 4. The card data of each item is compared per payment
/// id instead, by each side under its own key (`inflight_store`'s `item_digest`).
#[derive(Clone)]
pub struct BatchDigest(digest::Context);

impl std::fmt::Debug for BatchDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchDigest")
    }
}

impl Default for BatchDigest {
    fn default() -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        // Domain separation from any other SHA-256 use.
        ctx.update(b"inflight/v1/batch-settlement-fields");
        Self(ctx)
    }
}

impl BatchDigest {
    /// Adds the next item: only its card-free fields.
    pub fn update(&mut self, item: &BatchItem) {
        self.0.update(&item.id.to_bytes());
        self.0.update(&item.amount.amount_minor().to_be_bytes());
        self.0.update(item.amount.currency().as_str().as_bytes());
        self.0.update(&item.captured_unix_ms.to_be_bytes());
    }

    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}
