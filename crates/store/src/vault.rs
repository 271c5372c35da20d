//! Card data at rest: sealed with an AEAD under a key file, looked up by a keyed hash.

use std::fmt;
use std::path::Path;

use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::StoreError;

/// A key file holds 32 random bytes as 64 hex digits (and an optional trailing newline).
pub const KEY_FILE_HEX_LEN: usize = 64;

/// Seals and opens card data; computes the keyed card hash and keyed content digests.
///
/// Subkeys are derived from the key file with HMAC-SHA256 under fixed labels, so the
/// encryption key, the look-up key, the content key, the hot-list key and the manifest key are
/// independent.
///
/// Why every digest here is keyed: a card number has few unknown digits once BIN and last 4 are
/// known (about 10^5 after Luhn), times ~120 expiries. A plain SHA-256 over anything holding a
/// PAN is therefore brute-forced in seconds; an HMAC under a key the attacker lacks is not.
pub struct CardVault {
    aead: LessSafeKey,
    card_key: hmac::Key,
    content_key: hmac::Key,
    /// The hot-card list's HMAC key. It is published with the list (terminals hash the cards
    /// they are given with it), so it is derived apart from every key that stays here.
    hot_list_key: [u8; 32],
    /// The flight manifest's key (`inflight_core::manifest::ManifestKey`): it keys the hash
    /// chain and the seal of a closed flight's manifest, and never leaves the aircraft.
    manifest_key: [u8; 32],
    rng: SystemRandom,
}

impl fmt::Debug for CardVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardVault(<keys>)")
    }
}

/// Sealed card data as stored: a random nonce and the ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) struct Sealed {
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

impl CardVault {
    /// Reads the key file. It must be 64 hex digits and, on Unix, not readable by group or others.
    pub fn from_key_file(path: &Path) -> Result<Self, StoreError> {
        let key = read_secret_hex(path)?;
        let key: [u8; 32] = key.try_into().map_err(|_| StoreError::Key {
            path: path.to_owned(),
            detail: format!("must hold {KEY_FILE_HEX_LEN} hex digits"),
        })?;
        Ok(Self::from_key(&key))
    }

    /// A vault from raw key material.
    pub fn from_key(key: &[u8; 32]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, key);
        let derive = |label: &[u8]| hmac::sign(&root, label);
        let aead_key = derive(b"inflight/v1/card-aead");
        let card_key = derive(b"inflight/v1/card-hash");
        let content_key = derive(b"inflight/v1/content-digest");
        let mut hot_list_key = [0u8; 32];
        hot_list_key.copy_from_slice(derive(b"inflight/v1/hot-list-key").as_ref());
        let mut manifest_key = [0u8; 32];
        manifest_key.copy_from_slice(derive(b"inflight/v1/manifest-key").as_ref());
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, aead_key.as_ref())
            .expect("HMAC-SHA256 output is 32 bytes, the ChaCha20-Poly1305 key length");
        Self {
            aead: LessSafeKey::new(unbound),
            card_key: hmac::Key::new(hmac::HMAC_SHA256, card_key.as_ref()),
            content_key: hmac::Key::new(hmac::HMAC_SHA256, content_key.as_ref()),
            hot_list_key,
            manifest_key,
            rng: SystemRandom::new(),
        }
    }

    /// Encrypts `plain`, binding it to `aad` (the record's key) so a sealed blob cannot be
    /// moved to another record.
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Sealed, StoreError> {
        let mut nonce = [0u8; 12];
        self.rng.fill(&mut nonce).map_err(|_| StoreError::Io("system random source failed".into()))?;
        let mut buf = plain.to_vec();
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aead::Aad::from(aad), &mut buf)
            .map_err(|_| StoreError::Io("encryption failed".into()))?;
        Ok(Sealed { nonce, ciphertext: buf })
    }

    /// Decrypts a sealed blob; fails on any tampering or the wrong key.
    pub(crate) fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, StoreError> {
        let mut buf = sealed.ciphertext.clone();
        let plain = self
            .aead
            .open_in_place(Nonce::assume_unique_for_key(sealed.nonce), aead::Aad::from(aad), &mut buf)
            .map_err(|_| StoreError::Corrupt {
                key: hex(aad),
                detail: "card data does not decrypt (wrong key file or tampered)".into(),
            })?;
        Ok(plain.to_vec())
    }

    /// The keyed hash of a card number: equal cards give equal hashes, and without the key file
    /// the hash reveals nothing (a plain hash of a 16-digit number is brute-forced in minutes).
    pub fn card_hash(&self, pan_digits: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.card_key, pan_digits.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The keyed digest of a record's encoding (which may hold card data): equal for an honest
    /// re-send, different for another payment re-using the id, and useless to anyone without the
    /// key file for confirming a guessed card number.
    pub fn content_digest(&self, encoded: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.content_key, encoded);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The key of the hot-card list's entries (`inflight_core::hotlist::entry_for`). Public by
    /// design: it travels in the signed list. HMAC derivation keeps the key file unrecoverable
    /// from it, and the same key file always gives the same list key, so the list survives an
    /// issuer restart and deltas stay possible.
    pub fn hot_list_key(&self) -> [u8; 32] {
        self.hot_list_key
    }

    /// The key of the flight manifest's chain and seal: derived apart (another label), so it
    /// reveals neither the key file nor any other subkey; the same key file gives the same key,
    /// so a manifest can be verified again after a restart.
    pub fn manifest_key(&self) -> [u8; 32] {
        self.manifest_key
    }

    /// Fills `buf` from the system's secure random source.
    pub fn random(&self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.rng.fill(buf).map_err(|_| StoreError::Io("system random source failed".into()))
    }
}

/// The issuer master key for chip cryptograms from its key file: 32 hex digits (AES-128), held
/// like every other key (a regular file, not readable by others).
pub fn chip_master_key_from_file(path: &Path) -> Result<inflight_core::chip::IssuerMasterKey, StoreError> {
    let key: [u8; 16] = read_secret_hex(path)?
        .try_into()
        .map_err(|_| StoreError::Key { path: path.to_owned(), detail: "must hold 32 hex digits (AES-128)".into() })?;
    Ok(inflight_core::chip::IssuerMasterKey::from_bytes(key))
}

/// Reads a secret written as hex digits (and an optional trailing newline) from a regular file
/// (not a symbolic link) that only its owner may read, owned by this process's user.
pub(crate) fn read_secret_hex(path: &Path) -> Result<Vec<u8>, StoreError> {
    let err = |detail: String| StoreError::Key { path: path.to_owned(), detail };
    let meta = std::fs::symlink_metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.file_type().is_symlink() {
        return Err(err("is a symbolic link; name the key file itself".into()));
    }
    if !meta.is_file() {
        return Err(err("is not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(err(format!("mode {:o} lets others read it; chmod 600", mode & 0o777)));
        }
        // /proc/self belongs to the process's effective user (Linux); elsewhere, not checked.
        if let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) {
            if meta.uid() != me && me != 0 {
                return Err(err(format!("owned by uid {}, not by this daemon's user (uid {me})", meta.uid())));
            }
        }
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| err("must hold hex digits only".into()))?.trim_end();
    // ASCII hex digits only before slicing by byte index (a multi-byte character would be cut).
    if text.is_empty() || text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err("must hold an even number of hex digits".into()));
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| err("must hold hex digits only".into()))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let p = dir.join(name);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&p).expect("create");
        f.write_all(text.as_bytes()).expect("write");
        p
    }

    #[test]
    fn a_non_ascii_or_symlinked_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Even length in bytes, but 'é' straddles a two-digit boundary.
        let p = secret_file(dir.path(), "k1", &format!("a{}0", "é"));
        let e = read_secret_hex(&p).expect_err("refused");
        assert!(e.to_string().contains("hex digits"), "{e}");
        // A symlink to a real key is refused, not followed.
        let real = secret_file(dir.path(), "real", &"00".repeat(32));
        assert!(read_secret_hex(&real).is_ok());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let e = read_secret_hex(&link).expect_err("refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn seal_open_and_tamper() {
        let v = CardVault::from_key(&[7; 32]);
        let s = v.seal(b"id-1", b"4111111111111111").expect("seal");
        assert!(!s.ciphertext.windows(16).any(|w| w == b"4111111111111111"));
        assert_eq!(v.open(b"id-1", &s).expect("open"), b"4111111111111111");
        assert!(v.open(b"id-2", &s).is_err(), "bound to its record");
        let other = CardVault::from_key(&[8; 32]);
        assert!(other.open(b"id-1", &s).is_err(), "wrong key");
        assert_eq!(v.card_hash("4111111111111111"), v.card_hash("4111111111111111"));
        assert_ne!(v.card_hash("4111111111111111"), other.card_hash("4111111111111111"));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_must_be_private_and_well_formed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        std::fs::write(&p, "ab".repeat(32)).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(
            matches!(CardVault::from_key_file(&p), Err(StoreError::Key { detail, .. }) if detail.contains("chmod 600"))
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(CardVault::from_key_file(&p).is_ok());
        std::fs::write(&p, "zz").expect("write");
        assert!(CardVault::from_key_file(&p).is_err());
    }
}
