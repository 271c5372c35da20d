//! A small PKI: CAs, the certificates they issue (each with a random serial number), and the
//! revocation lists they sign. `inflight-setup` uses it for a development deployment and for
//! the provisioning commands an airline runs with its own CAs.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};

use crate::NetError;

/// A certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// The certificate's serial number: what a revocation list names.
    pub serial: Vec<u8>,
}

/// Bytes of a random serial number (RFC 5280 allows up to 20; 16 random bytes never collide).
const SERIAL_BYTES: usize = 16;

/// `N` bytes from the system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], NetError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut b).map_err(|_| NetError::Pki("system random source failed".into()))?;
    Ok(b)
}

/// A fresh random serial number, positive as RFC 5280 requires.
fn random_serial() -> Result<Vec<u8>, NetError> {
    let mut s = random_bytes::<SERIAL_BYTES>()?.to_vec();
    s[0] = (s[0] & 0x7f) | 0x01;
    Ok(s)
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

/// How long a terminal, aircraft or issuer certificate is valid by default: short, so that a
/// lost key stops working on its own even where no revocation list reaches; renewed by
/// enrolling again (README, "Certificates in production").
pub const LEAF_VALIDITY_DAYS: u32 = 30;

/// How long a CA certificate is valid by default.
pub const CA_VALIDITY_DAYS: u32 = 3_650;

impl Validity {
    /// From a day before `now_unix_s` (clocks differ) to `days` after it.
    pub fn days_from(now_unix_s: u64, days: u32) -> Self {
        let today = (now_unix_s / 86_400) as i64;
        Self { not_before: civil_from_days(today - 1), not_after: civil_from_days(today + i64::from(days)) }
    }
}

/// The (year, month, day) of a day counted from 1970-01-01 (proleptic Gregorian calendar;
/// H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// One revoked certificate, as a revocation list names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Its serial number.
    pub serial: Vec<u8>,
    /// When it was revoked, Unix seconds.
    pub revoked_unix_s: u64,
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
        let (p, serial) = leaf_params(names, client, server, validity)?;
        let key = KeyPair::generate().map_err(pki)?;
        let cert = p.signed_by(&key, &self.cert, &self.key).map_err(pki)?;
        Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem(), serial })
    }

    /// Signs a certificate signing request (PEM): the request's signature must verify (the
    /// requester holds the key), and only its public key is used. The names, usages and validity
    /// are the CA's decision, never the request's. Returns the certificate (PEM) and its serial.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        names: &[&str],
        client: bool,
        server: bool,
        validity: Validity,
    ) -> Result<(String, Vec<u8>), NetError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| NetError::Pki(format!("not a valid certificate signing request: {e}")))?;
        let (p, serial) = leaf_params(names, client, server, validity)?;
        csr.params = p;
        let cert = csr.signed_by(&self.cert, &self.key).map_err(pki)?;
        Ok((cert.pem(), serial))
    }

    /// A revocation list naming `revoked`, numbered `number` (larger than any list before it),
    /// issued at `now_unix_s`, PEM. Its `nextUpdate` is set `next_update_days` ahead; the
    /// daemons do not enforce it (an aircraft in flight cannot fetch a newer one).
    pub fn crl(
        &self,
        revoked: &[Revoked],
        number: u64,
        now_unix_s: u64,
        next_update_days: u32,
    ) -> Result<String, NetError> {
        let day = |unix_s: u64| {
            let (y, m, d) = civil_from_days((unix_s / 86_400) as i64);
            rcgen::date_time_ymd(y, m, d)
        };
        let params = CertificateRevocationListParams {
            this_update: day(now_unix_s),
            next_update: day(now_unix_s + u64::from(next_update_days.max(1)) * 86_400),
            crl_number: SerialNumber::from(number.to_be_bytes().to_vec()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&r.serial),
                    revocation_time: day(r.revoked_unix_s),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.cert, &self.key).map_err(pki)?.pem().map_err(pki)
    }
}

/// The parameters of a leaf certificate: names, usages, validity, a fresh serial.
fn leaf_params(
    names: &[&str],
    client: bool,
    server: bool,
    validity: Validity,
) -> Result<(CertificateParams, Vec<u8>), NetError> {
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
    let serial = random_serial()?;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok((p, serial))
}

/// A new private key (PEM) and a certificate signing request for `name` signed with it (PEM):
/// made on the device, so that the key never leaves it.
pub fn key_and_request(name: &str) -> Result<(String, String), NetError> {
    let mut p = CertificateParams::new(vec![name.to_owned()]).map_err(pki)?;
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().map_err(pki)?;
    let csr = p.serialize_request(&key).map_err(pki)?.pem().map_err(pki)?;
    Ok((key.serialize_pem(), csr))
}

/// The common name in a certificate's subject (PEM), if it has one.
pub fn subject_common_name(cert_pem: &str) -> Result<Option<String>, NetError> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| NetError::Pki(format!("not a PEM certificate: {e}")))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| NetError::Pki(format!("unparsable certificate: {e}")))?;
    let cn = parsed.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).map(str::to_owned);
    Ok(cn)
}

/// A self-signed certificate for `name` (no CA at all), usable as a TLS client.
pub fn self_signed(name: &str) -> Result<PemPair, NetError> {
    let mut p = CertificateParams::new(vec![name.to_owned()]).map_err(pki)?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    set_validity(&mut p, Validity::default());
    let serial = random_serial()?;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    let key = KeyPair::generate().map_err(pki)?;
    let cert = p.self_signed(&key).map_err(pki)?;
    Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem(), serial })
}

fn set_validity(p: &mut CertificateParams, v: Validity) {
    p.not_before = rcgen::date_time_ymd(v.not_before.0, v.not_before.1, v.not_before.2);
    p.not_after = rcgen::date_time_ymd(v.not_after.0, v.not_after.1, v.not_after.2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_from_unix_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2000-03-01 (a leap year's February behind it) and 2026-11-27.
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
    }

    #[test]
    fn short_lived_validity_starts_yesterday() {
        let v = Validity::days_from(20_784 * 86_400 + 3_600, 30);
        assert_eq!(v.not_before, (2026, 11, 26));
        assert_eq!(v.not_after, (2026, 12, 27));
    }
}
