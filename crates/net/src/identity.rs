//! Identities bound to certificates.
//!
//! A terminal's certificate carries the DNS-style name `<terminal-id>.terminal.inflight`. The
//! TLS handshake proves the peer holds the key of a certificate from the airline CA; this module
//! then checks that the certificate carries the name of the terminal id the peer claims. A
//! terminal can therefore only ever speak as itself.

use inflight_wire::TerminalId;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::NetError;

/// Suffix of terminal certificate names.
pub const TERMINAL_NAME_SUFFIX: &str = "terminal.inflight";

/// The certificate name of a terminal.
pub fn terminal_cert_name(id: &TerminalId) -> String {
    format!("{id}.{TERMINAL_NAME_SUFFIX}")
}

/// The verified leaf certificate of a connection's peer.
pub fn peer_leaf(conn: &quinn::Connection) -> Result<CertificateDer<'static>, NetError> {
    let any = conn.peer_identity().ok_or_else(|| NetError::Identity("peer presented no certificate".into()))?;
    let chain = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| NetError::Identity("unexpected peer identity type".into()))?;
    chain.first().cloned().ok_or_else(|| NetError::Identity("empty certificate chain".into()))
}

/// Suffix of aircraft certificate names.
pub const AIRCRAFT_NAME_SUFFIX: &str = "aircraft.inflight";

/// The certificate name an aircraft presents to the issuer.
pub fn aircraft_cert_name(aircraft: &str) -> String {
    format!("{}.{AIRCRAFT_NAME_SUFFIX}", aircraft.to_ascii_lowercase())
}

/// Checks that `leaf` (already verified against the CA by the handshake) names terminal `id`.
pub fn check_terminal(leaf: &CertificateDer<'_>, id: &TerminalId) -> Result<(), NetError> {
    check_name(leaf, &terminal_cert_name(id))
        .map_err(|_| NetError::Identity(format!("certificate is not terminal {id}'s")))
}

/// A peer's certificate, as the handshake verified it.
pub type PeerCertificate = CertificateDer<'static>;

/// The label under which an aircraft signs a closed flight's manifest with its certificate's
/// key: the signature can never pass for one made in a TLS handshake or for anything else.
pub const MANIFEST_SIGNING_LABEL: &[u8] = b"inflight/v1/manifest\0";

/// Signs a manifest (its JSON) with the private key in `key_file`: the aircraft's certificate
/// key (ECDSA P-256, PKCS#8 PEM), the one its issuer sees at every handshake.
pub fn sign_manifest(key_file: &std::path::Path, json: &[u8]) -> Result<Vec<u8>, NetError> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    use rustls_pki_types::pem::PemObject as _;
    let bad = |what: &str| NetError::Identity(format!("{}: {what}", key_file.display()));
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(key_file)
        .map_err(|_| bad("not a PKCS#8 PEM private key"))?;
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.secret_pkcs8_der(), &rng)
        .map_err(|_| bad("not an ECDSA P-256 key"))?;
    let signature = pair.sign(&rng, &[MANIFEST_SIGNING_LABEL, json].concat()).map_err(|_| bad("signing failed"))?;
    Ok(signature.as_ref().to_vec())
}

/// Whether `signature` over a manifest's `json` was made by the key of `leaf` (the certificate
/// the aircraft presented, already verified against its CA by the handshake).
pub fn verify_manifest(leaf: &CertificateDer<'_>, json: &[u8], signature: &[u8]) -> bool {
    webpki::EndEntityCert::try_from(leaf).is_ok_and(|cert| {
        cert.verify_signature(webpki::ring::ECDSA_P256_SHA256, &[MANIFEST_SIGNING_LABEL, json].concat(), signature)
            .is_ok()
    })
}

/// Checks that `leaf` (already verified against the CA by the handshake) names `aircraft`.
pub fn check_aircraft(leaf: &CertificateDer<'_>, aircraft: &str) -> Result<(), NetError> {
    check_name(leaf, &aircraft_cert_name(aircraft))
        .map_err(|_| NetError::Identity(format!("certificate is not aircraft {aircraft}'s")))
}

fn check_name(leaf: &CertificateDer<'_>, name: &str) -> Result<(), NetError> {
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| NetError::Identity(format!("unparsable certificate: {e}")))?;
    let name = ServerName::try_from(name.to_owned()).map_err(|e| NetError::Identity(e.to_string()))?;
    cert.verify_is_valid_for_subject_name(&name).map_err(|e| NetError::Identity(e.to_string()))
}
