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
