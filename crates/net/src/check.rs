//! Checks of TLS files beyond what loading them checks, for `<daemon> check`: a daemon loads a
//! certificate that has expired, or a revocation list from another CA, and only its peers'
//! handshakes fail. Each function reads one file (or a CA and its list) and says what is
//! wrong, never what is in it beyond names and dates.
//!
//! What is checked here:
//! - a daemon's own certificate: parses; valid now (a [`Note::Warning`] when it ends within
//!   [`CERT_EXPIRY_WARNING`]); carries the names and usages its peers check;
//! - a CA file: every certificate parses, is a CA, and is valid now;
//! - a revocation list: parses ([`crate::tls::crls`], as the daemon reads it), and each list in
//!   the file is issued and signed by a CA of the configured CA file (a list from another CA
//!   would refuse every peer: revocation status unknown).
//!
//! What is not: that a daemon's own certificate chains to the CA its peers trust. That CA is
//! the peers' configuration (the master's certificate comes from the aircraft CA, which only
//! terminals and the issuer hold), so it is checked there, by the handshake.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// A certificate valid for less than this is reported as a warning (leaves live 30 days by
/// default, `inflight_net::pki::LEAF_VALIDITY_DAYS`: a week is time to renew, not an emergency).
pub const CERT_EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);

/// One thing found about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The daemon would not start, or its peers would refuse it.
    Problem(String),
    /// Worth acting on soon.
    Warning(String),
}

impl Note {
    /// (whether it is a problem, what it says).
    pub fn into_parts(self) -> (bool, String) {
        match self {
            Note::Problem(s) => (true, s),
            Note::Warning(s) => (false, s),
        }
    }
}

/// What was found about one file a config key names: `(is a problem, what)` each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFindings {
    /// The config key (`tls.ca_file`, `ground.issuer_crl_file`).
    pub key: String,
    /// The file.
    pub file: PathBuf,
    /// What was found.
    pub findings: Vec<(bool, String)>,
}

/// The TLS files of one side of a daemon, under config keys `<prefix>cert_file` (when `own`
/// gives its own certificate and what its peers expect of it), `<prefix>ca_file` and
/// `<prefix>crl_file`: every daemon's `check` asks the same three questions (the private key's
/// mode and owner are the caller's, which knows who runs it).
pub fn tls_files(
    prefix: &str,
    own: Option<(&Path, &Expect<'_>)>,
    ca: &Path,
    crl: Option<&Path>,
    now_unix_s: u64,
) -> Vec<FileFindings> {
    let of = |key: &str, file: &Path, notes: Vec<Note>| FileFindings {
        key: format!("{prefix}{key}"),
        file: file.to_owned(),
        findings: notes.into_iter().map(Note::into_parts).collect(),
    };
    let mut out = Vec::new();
    if let Some((cert, expect)) = own {
        out.push(of("cert_file", cert, own_certificate(cert, now_unix_s, expect)));
    }
    out.push(of("ca_file", ca, ca_file(ca, now_unix_s)));
    if let Some(crl) = crl {
        out.push(of("crl_file", crl, crl_file(crl, ca)));
    }
    out
}

/// What a daemon's own certificate must carry for its peers to accept it.
#[derive(Debug, Clone, Default)]
pub struct Expect<'a> {
    /// DNS names its peers check (each must be on the certificate).
    pub names: &'a [String],
    /// Used as a TLS client (extended key usage `clientAuth`).
    pub client: bool,
    /// Used as a TLS server (`serverAuth`).
    pub server: bool,
}

/// Checks a daemon's own certificate file (the leaf is the first certificate) at `now_unix_s`.
pub fn own_certificate(path: &Path, now_unix_s: u64, expect: &Expect<'_>) -> Vec<Note> {
    let certs = match crate::tls::certs_from_pem(path) {
        Ok(c) => c,
        Err(e) => return vec![Note::Problem(e.to_string())],
    };
    let mut notes = Vec::new();
    let Some(leaf) = certs.first() else { return notes };
    let parsed = match X509Certificate::from_der(leaf.as_ref()) {
        Ok((_, c)) => c,
        Err(e) => return vec![Note::Problem(format!("unparsable certificate: {e}"))],
    };
    validity(&parsed, now_unix_s, "the certificate", &mut notes);
    match crate::tls::dns_names(leaf) {
        Ok(have) => {
            for n in expect.names {
                if !have.iter().any(|h| h == n) {
                    notes.push(Note::Problem(format!(
                        "does not carry the name {n} that its peers check (it carries: {})",
                        if have.is_empty() { "none".to_owned() } else { have.join(", ") }
                    )));
                }
            }
        }
        Err(e) => notes.push(Note::Problem(e.to_string())),
    }
    let eku = parsed.extended_key_usage().ok().flatten().map(|e| e.value);
    let usage = |want: bool, has: Option<bool>, what: &str, notes: &mut Vec<Note>| {
        // No extension at all: any usage is allowed.
        if want && has == Some(false) {
            notes.push(Note::Problem(format!("its extended key usage does not allow {what}")));
        }
    };
    usage(expect.client, eku.map(|e| e.client_auth || e.any), "TLS client authentication", &mut notes);
    usage(expect.server, eku.map(|e| e.server_auth || e.any), "TLS server authentication", &mut notes);
    notes
}

/// Checks a CA file: every certificate parses, is a CA, and is valid at `now_unix_s`.
pub fn ca_file(path: &Path, now_unix_s: u64) -> Vec<Note> {
    let certs = match crate::tls::certs_from_pem(path) {
        Ok(c) => c,
        Err(e) => return vec![Note::Problem(e.to_string())],
    };
    let mut notes = Vec::new();
    for (i, der) in certs.iter().enumerate() {
        let which = if certs.len() == 1 { "the CA certificate".to_owned() } else { format!("certificate #{}", i + 1) };
        match X509Certificate::from_der(der.as_ref()) {
            Ok((_, c)) => {
                if !c.is_ca() {
                    notes.push(Note::Problem(format!("{which} is not a CA certificate")));
                }
                validity(&c, now_unix_s, &which, &mut notes);
            }
            Err(e) => notes.push(Note::Problem(format!("{which}: unparsable: {e}"))),
        }
    }
    notes
}

/// Checks a revocation list file against the CA file it belongs with: it loads as the daemon
/// loads it, and each list is issued by a CA of `ca_path` and carries that CA's signature.
pub fn crl_file(crl_path: &Path, ca_path: &Path) -> Vec<Note> {
    let lists = match crate::tls::crls(crl_path) {
        Ok(l) => l,
        Err(e) => return vec![Note::Problem(e.to_string())],
    };
    let Ok(ca_ders) = CertificateDer::pem_file_iter(ca_path).map(|i| i.flatten().collect::<Vec<_>>()) else {
        // The CA file's own check reports it.
        return vec![];
    };
    let cas: Vec<X509Certificate<'_>> =
        ca_ders.iter().filter_map(|d| X509Certificate::from_der(d.as_ref()).ok().map(|(_, c)| c)).collect();
    let mut notes = Vec::new();
    for (i, der) in lists.iter().enumerate() {
        let which =
            if lists.len() == 1 { "the revocation list".to_owned() } else { format!("revocation list #{}", i + 1) };
        let crl = match CertificateRevocationList::from_der(der.as_ref()) {
            Ok((_, c)) => c,
            Err(e) => {
                notes.push(Note::Problem(format!("{which}: unparsable: {e}")));
                continue;
            }
        };
        let issuer = crl.issuer();
        let signed = cas
            .iter()
            .filter(|ca| ca.subject().as_raw() == issuer.as_raw())
            .any(|ca| crl.verify_signature(ca.public_key()).is_ok());
        if !signed {
            notes.push(Note::Problem(format!(
                "{which} is not issued and signed by the CA in {} (issuer: {issuer}); with it every peer \
                 would be refused",
                ca_path.display()
            )));
        }
    }
    notes
}

/// Whether `c` is valid at `now_unix_s`; a warning when it ends within [`CERT_EXPIRY_WARNING`].
fn validity(c: &X509Certificate<'_>, now_unix_s: u64, which: &str, notes: &mut Vec<Note>) {
    let now = i64::try_from(now_unix_s).unwrap_or(i64::MAX);
    let (from, until) = (c.validity().not_before, c.validity().not_after);
    if now < from.timestamp() {
        notes.push(Note::Problem(format!("{which} is not valid before {from}")));
    } else if now > until.timestamp() {
        notes.push(Note::Problem(format!("{which} expired on {until}")));
    } else {
        let left = until.timestamp() - now;
        if left < CERT_EXPIRY_WARNING.as_secs() as i64 {
            notes.push(Note::Warning(format!("{which} expires on {until}, in {} day(s): renew it", left / 86_400)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{DevCa, Revoked, Validity};

    const NOW: u64 = 1_790_000_000; // 2026-09-21

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn own_certificates_dates_names_and_usages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::new("CA").expect("ca");
        let names = vec!["seat-1.terminal.inflight".to_owned()];
        let client = Expect { names: &names, client: true, server: false };
        let good = ca.issue(&names[0], true, false, Validity::days_from(NOW, 30)).expect("cert");
        assert_eq!(own_certificate(&write(dir.path(), "good.pem", &good.cert_pem), NOW, &client), vec![]);

        let expired = ca
            .issue(&names[0], true, false, Validity { not_before: (2020, 1, 1), not_after: (2020, 12, 31) })
            .expect("c");
        let notes = own_certificate(&write(dir.path(), "expired.pem", &expired.cert_pem), NOW, &client);
        assert!(matches!(&notes[..], [Note::Problem(p)] if p.contains("expired on")), "{notes:?}");

        let ending = ca.issue(&names[0], true, false, Validity::days_from(NOW, 3)).expect("cert");
        let notes = own_certificate(&write(dir.path(), "ending.pem", &ending.cert_pem), NOW, &client);
        assert!(matches!(&notes[..], [Note::Warning(w)] if w.contains("renew")), "{notes:?}");

        let future = ca.issue(&names[0], true, false, Validity { not_before: (2040, 1, 1), not_after: (2041, 1, 1) });
        let notes = own_certificate(&write(dir.path(), "future.pem", &future.expect("c").cert_pem), NOW, &client);
        assert!(matches!(&notes[..], [Note::Problem(p)] if p.contains("not valid before")), "{notes:?}");

        let other = ca.issue("seat-2.terminal.inflight", false, true, Validity::days_from(NOW, 30)).expect("cert");
        let notes = own_certificate(&write(dir.path(), "other.pem", &other.cert_pem), NOW, &client);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(matches!(&notes[0], Note::Problem(p) if p.contains("seat-1.terminal.inflight")), "{notes:?}");
        assert!(matches!(&notes[1], Note::Problem(p) if p.contains("client authentication")), "{notes:?}");

        let notes = own_certificate(&write(dir.path(), "junk.pem", "junk"), NOW, &client);
        assert!(matches!(&notes[..], [Note::Problem(_)]), "{notes:?}");
    }

    #[test]
    fn ca_files_hold_valid_ca_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::new("CA").expect("ca");
        assert_eq!(ca_file(&write(dir.path(), "ca.pem", &ca.cert_pem()), NOW), vec![]);
        let leaf = ca.issue("x.terminal.inflight", true, false, Validity::days_from(NOW, 30)).expect("cert");
        let notes = ca_file(&write(dir.path(), "leaf.pem", &leaf.cert_pem), NOW);
        assert!(matches!(&notes[..], [Note::Problem(p)] if p.contains("not a CA")), "{notes:?}");
        // DevCa certificates end in 2049.
        let notes = ca_file(&dir.path().join("ca.pem"), 2_600_000_000);
        assert!(matches!(&notes[..], [Note::Problem(p)] if p.contains("expired")), "{notes:?}");
    }

    #[test]
    fn a_revocation_list_must_come_from_the_configured_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::new("terminal CA").expect("ca");
        let ca_path = write(dir.path(), "ca.pem", &ca.cert_pem());
        let revoked = [Revoked { serial: vec![1, 2, 3], revoked_unix_s: NOW }];
        let own = write(dir.path(), "own.crl.pem", &ca.crl(&revoked, 1, NOW, 30).expect("crl"));
        assert_eq!(crl_file(&own, &ca_path), vec![]);

        let other = DevCa::new("aircraft CA").expect("ca");
        let foreign = write(dir.path(), "foreign.crl.pem", &other.crl(&[], 1, NOW, 30).expect("crl"));
        let notes = crl_file(&foreign, &ca_path);
        assert!(matches!(&notes[..], [Note::Problem(p)] if p.contains("not issued and signed")), "{notes:?}");

        // Same name, other key: the name matches, the signature does not.
        let impostor = DevCa::new("terminal CA").expect("ca");
        let forged = write(dir.path(), "forged.crl.pem", &impostor.crl(&[], 1, NOW, 30).expect("crl"));
        let notes = crl_file(&forged, &ca_path);
        assert!(matches!(&notes[..], [Note::Problem(p)] if p.contains("not issued and signed")), "{notes:?}");

        let notes = crl_file(&write(dir.path(), "empty.crl.pem", ""), &ca_path);
        assert!(matches!(&notes[..], [Note::Problem(_)]), "{notes:?}");
    }
}
