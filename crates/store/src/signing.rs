//! Ed25519 signatures on the BIN list: the issuer signs, terminals and the master verify.

use std::path::Path;

use inflight_wire::{decode, encode, BinList, HotListHead, SignedBinList, SignedHotHead};
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::StoreError;

/// Why a signed list was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinListError {
    /// The signature does not verify under the issuer's public key.
    #[error("BIN list signature does not verify with the issuer's key")]
    BadSignature,
    /// The signed body is not a valid list.
    #[error("BIN list body is malformed: {0}")]
    Malformed(String),
}

/// The issuer's signing key (PKCS#8, hex-encoded in a 0600 file).
#[derive(Debug)]
pub struct BinListSigner {
    key: Ed25519KeyPair,
}

impl BinListSigner {
    /// Generates a new key; returns its PKCS#8 bytes (to be written to the key file).
    pub fn generate() -> Result<Vec<u8>, StoreError> {
        let rng = ring::rand::SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| StoreError::Io("key generation failed".into()))
    }

    /// Loads the key from PKCS#8 bytes.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        Ed25519KeyPair::from_pkcs8(der).map(|key| Self { key }).map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))
    }

    /// Loads the key from a hex file (mode 0600 required).
    pub fn from_hex_file(path: &Path) -> Result<Self, StoreError> {
        let der = crate::vault::read_secret_hex(path)?;
        Self::from_pkcs8(&der).map_err(|detail| StoreError::Key { path: path.to_owned(), detail })
    }

    /// The public key, 32 bytes.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.key.public_key().as_ref());
        out
    }

    /// Signs a list.
    pub fn sign(&self, list: &BinList) -> SignedBinList {
        let body = encode(list);
        let signature = self.key.sign(&body).as_ref().to_vec();
        SignedBinList { body, signature }
    }
}

impl BinListSigner {
    /// Signs a hot-card list head (under its domain label, so it can never pass for a BIN list;
    /// verified by `inflight_core::hotlist::HotSet`).
    pub fn sign_hot_head(&self, head: &HotListHead) -> SignedHotHead {
        let body = inflight_core::hotlist::encode_head(head);
        let signature = self.key.sign(&inflight_core::hotlist::signing_input(&body)).as_ref().to_vec();
        SignedHotHead { body, signature }
    }
}

impl BinListSigner {
    /// Signs the acknowledgement of a flight's manifest (under its own domain label:
    /// [`inflight_wire::MANIFEST_ACK_SIGNING_LABEL`]).
    pub fn sign_manifest_ack(&self, body: Vec<u8>) -> inflight_wire::SignedManifestAck {
        let signature = self.key.sign(&[inflight_wire::MANIFEST_ACK_SIGNING_LABEL, &body].concat()).as_ref().to_vec();
        inflight_wire::SignedManifestAck { body, signature }
    }
}

/// Whether `ack` is signed by the issuer's key `public_key`, as a manifest acknowledgement.
pub fn verify_manifest_ack(public_key: &[u8; 32], ack: &inflight_wire::SignedManifestAck) -> bool {
    UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(&[inflight_wire::MANIFEST_ACK_SIGNING_LABEL, &ack.body].concat(), &ack.signature)
        .is_ok()
}

/// Verifies `signed` with the issuer's public key and decodes it.
pub fn verify_bin_list(public_key: &[u8; 32], signed: &SignedBinList) -> Result<BinList, BinListError> {
    UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(&signed.body, &signed.signature)
        .map_err(|_| BinListError::BadSignature)?;
    decode(&signed.body).map_err(|e| BinListError::Malformed(e.to_string()))
}

/// Parses a public key written as 64 hex digits.
pub fn parse_public_key_hex(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    // ASCII hex digits only before slicing by byte index (a multi-byte character would be cut).
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("issuer public key must be 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| "issuer public key must be 64 hex digits".to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use inflight_wire::{BinPrefix, BinRule, CardKind, Currency};

    use super::*;

    #[test]
    fn a_public_key_with_non_ascii_text_is_an_error_not_a_panic() {
        // 64 bytes, but 'é' is two bytes: slicing by byte index would cut it in half.
        let s = format!("a{}{}", "é", "0".repeat(61));
        assert_eq!(s.len(), 64);
        assert!(parse_public_key_hex(&s).is_err());
        assert!(parse_public_key_hex(&"0".repeat(64)).is_ok());
    }

    #[test]
    fn sign_verify_and_tamper() {
        let signer = BinListSigner::from_pkcs8(&BinListSigner::generate().expect("keygen")).expect("key");
        let list = BinList {
            version: 3,
            issuer: "bank".into(),
            valid_from_unix_ms: 1,
            valid_until_unix_ms: 2,
            rules: vec![BinRule {
                prefix: BinPrefix::parse("400011").expect("valid"),
                kind: CardKind::Credit,
                txn_limit_minor: 1,
                card_flight_limit_minor: 2,
                currencies: vec![Currency::parse("EUR").expect("known")],
                cvm_required: false,
                entry_modes: inflight_wire::EntryMode::ALL.to_vec(),
            }],
        };
        let signed = signer.sign(&list);
        assert_eq!(verify_bin_list(&signer.public_key(), &signed), Ok(list));
        let mut tampered = signed.clone();
        let last = tampered.body.len() - 1;
        tampered.body[last] ^= 1;
        assert_eq!(verify_bin_list(&signer.public_key(), &tampered), Err(BinListError::BadSignature));
        let other = BinListSigner::from_pkcs8(&BinListSigner::generate().expect("keygen")).expect("key");
        assert_eq!(verify_bin_list(&other.public_key(), &signed), Err(BinListError::BadSignature));
    }

    #[test]
    fn the_issuer_key_signs_hot_list_heads_that_cannot_pass_for_a_bin_list() {
        let signer = BinListSigner::from_pkcs8(&BinListSigner::generate().expect("keygen")).expect("key");
        let mut entries = vec![inflight_wire::HotEntry([5; 8])];
        let head = inflight_core::hotlist::head_for(2, "bank", (0, 10), [1; 32], &mut entries);
        let signed = signer.sign_hot_head(&head);
        let list = inflight_wire::HotList { head: signed.clone(), entries };
        let set = inflight_core::hotlist::HotSet::verify(&signer.public_key(), &list).expect("verifies");
        assert_eq!(set.head(), &head);
        // The same bytes and signature presented as a BIN list do not verify (domain label).
        let as_bin = SignedBinList { body: signed.body, signature: signed.signature };
        assert_eq!(verify_bin_list(&signer.public_key(), &as_bin), Err(BinListError::BadSignature));
    }
}
