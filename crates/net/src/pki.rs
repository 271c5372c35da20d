//! A development PKI: an airline CA and the certificates of an aircraft and its terminals.
//! Production deployments use the airline's real CA; the file layout is the same.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

use crate::NetError;

/// A certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A CA able to issue certificates.
pub struct DevCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// Validity window of issued certificates, as (year, month, day) in UTC.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// First valid day.
    pub not_before: (i32, u8, u8),
    /// Last valid day.
    pub not_after: (i32, u8, u8),
}

impl Default for Validity {
    fn default() -> Self {
        Self { not_before: (2024, 1, 1), not_after: (2049, 12, 31) }
    }
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCa(<key>)")
    }
}

fn pki(e: rcgen::Error) -> NetError {
    NetError::Pki(e.to_string())
}

impl DevCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Self, NetError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut p, Validity::default());
        let key = KeyPair::generate().map_err(pki)?;
        let cert = p.self_signed(&key).map_err(pki)?;
        Ok(Self { cert, key })
    }

    /// Re-creates a CA from its name and private key (PEM), to issue more certificates later.
    /// Certificates it issues chain to the original CA certificate: same subject, same key.
    pub fn from_key(name: &str, key_pem: &str) -> Result<Self, NetError> {
        let key = KeyPair::from_pem(key_pem).map_err(pki)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut p, Validity::default());
        let cert = p.self_signed(&key).map_err(pki)?;
        Ok(Self { cert, key })
    }

    /// The CA's private key, PEM (development only: a real CA key never leaves its HSM).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a certificate for DNS-style `name`, usable as a TLS client, server, or both.
    pub fn issue(&self, name: &str, client: bool, server: bool, validity: Validity) -> Result<PemPair, NetError> {
        self.issue_names(&[name], client, server, validity)
    }

    /// Issues a certificate carrying several DNS-style names (the first is the common name).
    pub fn issue_names(
        &self,
        names: &[&str],
        client: bool,
        server: bool,
        validity: Validity,
    ) -> Result<PemPair, NetError> {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).map_err(pki)?;
        p.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or_default());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if client {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if server {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        set_validity(&mut p, validity);
        let key = KeyPair::generate().map_err(pki)?;
        let cert = p.signed_by(&key, &self.cert, &self.key).map_err(pki)?;
        Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A self-signed certificate for `name` (no CA at all), usable as a TLS client.
pub fn self_signed(name: &str) -> Result<PemPair, NetError> {
    let mut p = CertificateParams::new(vec![name.to_owned()]).map_err(pki)?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut p, Validity::default());
    let key = KeyPair::generate().map_err(pki)?;
    let cert = p.self_signed(&key).map_err(pki)?;
    Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn set_validity(p: &mut CertificateParams, v: Validity) {
    p.not_before = rcgen::date_time_ymd(v.not_before.0, v.not_before.1, v.not_before.2);
    p.not_after = rcgen::date_time_ymd(v.not_after.0, v.not_after.1, v.not_after.2);
}
