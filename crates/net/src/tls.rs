//! rustls configurations: ring only, TLS 1.3 only, mutual TLS, no 0-RTT.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::NetError;

/// The rustls client configuration, for crates that do not depend on rustls themselves.
pub use rustls::ClientConfig;

/// The one crypto provider. Every config is built with it explicitly, so a second provider in
/// the dependency tree can never make rustls panic at run time.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key, from PEM files.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads `cert` (one or more PEM certificates) and `key` (one PEM private key).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, NetError> {
        let chain = certs_from_pem(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| NetError::Pem { path: key.to_owned(), detail: e.to_string() })?;
        Ok(Self { chain, key })
    }
}

/// Reads every certificate in a PEM file; at least one is required.
pub fn certs_from_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| NetError::Pem { path: path.to_owned(), detail: e.to_string() })?
        .collect::<Result<_, _>>()
        .map_err(|e| NetError::Pem { path: path.to_owned(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(NetError::Pem { path: path.to_owned(), detail: "no certificate in file".into() });
    }
    Ok(certs)
}

/// The trust anchors of a CA file.
pub fn roots(ca: &Path) -> Result<Arc<RootCertStore>, NetError> {
    let mut store = RootCertStore::empty();
    for c in certs_from_pem(ca)? {
        store.add(c).map_err(|e| NetError::Pem { path: ca.to_owned(), detail: e.to_string() })?;
    }
    Ok(Arc::new(store))
}

/// Certificate revocation lists, from a PEM file of one or more `X509 CRL` blocks. A configured
/// file without one (empty, truncated mid-copy, DER, a certificate by mistake) is an error, never
/// "nothing revoked": that would switch revocation off silently. A CA with nothing revoked
/// publishes a list naming nobody (`inflight-setup crl`).
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, NetError> {
    let err = |e: rustls_pki_types::pem::Error| NetError::Pem { path: path.to_owned(), detail: e.to_string() };
    let list: Vec<_> =
        CertificateRevocationListDer::pem_file_iter(path).map_err(err)?.collect::<Result<_, _>>().map_err(err)?;
    if list.is_empty() {
        return Err(NetError::Pem {
            path: path.to_owned(),
            detail: "no revocation list (PEM \"X509 CRL\") in the file".into(),
        });
    }
    Ok(list)
}

/// A server config that requires a client certificate from `client_ca` and speaks `alpn`.
pub fn server_config(
    id: Identity,
    client_ca: Arc<RootCertStore>,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, NetError> {
    server_config_with_crls(id, client_ca, Vec::new(), None, alpn)
}

/// The files a server's TLS configuration is made of, read again whenever they change.
#[derive(Debug, Clone, Copy)]
pub struct ServerFiles<'a> {
    /// The one CA whose certificates clients must present.
    pub ca: &'a Path,
    /// That CA's revocation list, if configured.
    pub crl: Option<&'a Path>,
    /// The server's certificate chain.
    pub cert: &'a Path,
    /// Its key.
    pub key: &'a Path,
}

impl ServerFiles<'_> {
    /// Reads them into a server configuration accepting peers of `kind` only, speaking `alpn`.
    pub fn load(&self, kind: PeerKind, alpn: &[u8]) -> Result<rustls::ServerConfig, NetError> {
        let crls = self.crl.map(crls).transpose()?.unwrap_or_default();
        server_config_with_crls(Identity::from_pem_files(self.cert, self.key)?, roots(self.ca)?, crls, Some(kind), alpn)
    }

    /// The paths, for watching them.
    pub fn paths(&self) -> Vec<std::path::PathBuf> {
        [Some(self.ca), self.crl, Some(self.cert), Some(self.key)]
            .into_iter()
            .flatten()
            .map(Path::to_path_buf)
            .collect()
    }
}

/// Which kind of peer a server accepts, by the names its certificate carries: checked inside
/// the TLS verifier, so a certificate of the wrong kind fails the handshake before any
/// application byte (the CA split already keeps kinds apart; this holds even if one CA were
/// shared by mistake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// A terminal: a DNS name `<terminal-id>.terminal.inflight`.
    Terminal,
    /// An aircraft: a DNS name `<aircraft>.aircraft.inflight` (one label before the suffix).
    Aircraft,
}

impl PeerKind {
    /// Whether a certificate carrying `dns_names` is of this kind.
    pub fn accepts(self, dns_names: &[String]) -> bool {
        let suffix = match self {
            PeerKind::Terminal => crate::identity::TERMINAL_NAME_SUFFIX,
            PeerKind::Aircraft => crate::identity::AIRCRAFT_NAME_SUFFIX,
        };
        dns_names.iter().any(|n| {
            let Some(label) = n.strip_suffix(suffix).and_then(|l| l.strip_suffix('.')) else { return false };
            match self {
                PeerKind::Terminal => inflight_wire::TerminalId::parse(label).is_ok(),
                PeerKind::Aircraft => {
                    !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }
            }
        })
    }
}

/// The DNS names in a certificate's subject alternative name extension.
pub fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, NetError> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| NetError::Identity(format!("unparsable certificate: {e}")))?;
    let san = parsed.subject_alternative_name().map_err(|e| NetError::Identity(format!("bad names: {e}")))?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// When the leaf certificate in a PEM file stops being valid (its `notAfter`), in seconds since
/// the Unix epoch: what a daemon reports as its certificate's expiry.
pub fn leaf_not_after_unix_s(path: &Path) -> Result<i64, NetError> {
    let chain = certs_from_pem(path)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(chain[0].as_ref())
        .map_err(|e| NetError::Identity(format!("unparsable certificate: {e}")))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// A certificate's serial number (the bytes of its DER integer), as revocation lists name it.
pub fn serial(cert: &CertificateDer<'_>) -> Result<Vec<u8>, NetError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| NetError::Identity(format!("unparsable certificate: {e}")))?;
    Ok(parsed.raw_serial().to_vec())
}

/// Every serial number `crls` name (their signatures are checked by the verifiers; this set is
/// only used to close connections of revoked certificates, which can never let anyone in).
pub fn revoked_serials(
    crls: &[CertificateRevocationListDer<'_>],
) -> Result<std::collections::HashSet<Vec<u8>>, NetError> {
    let mut out = std::collections::HashSet::new();
    for crl in crls {
        let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| NetError::Tls(format!("unparsable revocation list: {e}")))?;
        out.extend(parsed.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()));
    }
    Ok(out)
}

/// webpki's client verifier, then [`PeerKind`]'s name rule.
#[derive(Debug)]
struct KindVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    kind: PeerKind,
}

impl rustls::server::danger::ClientCertVerifier for KindVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let names = dns_names(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if !self.kind.accepts(&names) {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// [`server_config`], refusing client certificates revoked by `crls` (at the handshake, before
/// any application byte). A revocation list only says which certificates are revoked: with one,
/// a client certificate whose issuer published no list here is refused too (unknown status),
/// so a list from the wrong CA shuts everyone out loudly rather than letting revoked ones in.
/// The list's `nextUpdate` is not enforced: an aircraft in flight cannot fetch a fresh one.
/// With `kind`, only client certificates of that kind of peer pass ([`PeerKind`]).
pub fn server_config_with_crls(
    id: Identity,
    client_ca: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    kind: Option<PeerKind>,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, NetError> {
    let p = provider();
    let mut builder = WebPkiClientVerifier::builder_with_provider(client_ca, p.clone());
    if !crls.is_empty() {
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    let mut verifier = builder.build().map_err(|e| NetError::Tls(e.to_string()))?;
    if let Some(kind) = kind {
        verifier = Arc::new(KindVerifier { inner: verifier, kind });
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain, id.key)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    // 0-RTT data can be replayed by an attacker; payments are never sent before the handshake.
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// A client config that presents `id`, trusts only `server_ca`, and speaks `alpn`.
pub fn client_config(
    id: Identity,
    server_ca: Arc<RootCertStore>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, NetError> {
    client_config_with_crls(id, server_ca, Vec::new(), alpn)
}

/// [`client_config`], refusing server certificates revoked by `crls` (see
/// [`server_config_with_crls`] for what a list implies).
pub fn client_config_with_crls(
    id: Identity,
    server_ca: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, NetError> {
    let cfg = client_builder(server_ca, crls)?
        .with_client_auth_cert(id.chain, id.key)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    Ok(finish_client(cfg, alpn))
}

/// A client config without a client certificate: only for tests of refusal at the handshake.
pub fn client_config_anonymous(server_ca: Arc<RootCertStore>, alpn: &[u8]) -> Result<rustls::ClientConfig, NetError> {
    Ok(finish_client(client_builder(server_ca, Vec::new())?.with_no_client_auth(), alpn))
}

/// The part every client config shares: ring, TLS 1.3, the server verified against `server_ca`.
fn client_builder(
    server_ca: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, NetError> {
    let p = provider();
    let mut builder = WebPkiServerVerifier::builder_with_provider(server_ca, p.clone());
    if !crls.is_empty() {
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = builder.build().map_err(|e| NetError::Tls(e.to_string()))?;
    Ok(rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_webpki_verifier(verifier))
}

fn finish_client(mut cfg: rustls::ClientConfig, alpn: &[u8]) -> rustls::ClientConfig {
    cfg.alpn_protocols = vec![alpn.to_vec()];
    // 0-RTT data can be replayed by an attacker; nothing is sent before the handshake completes.
    cfg.enable_early_data = false;
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn peer_kinds_by_name() {
        assert!(PeerKind::Terminal.accepts(&names(&["seat-12a.terminal.inflight"])));
        assert!(!PeerKind::Terminal.accepts(&names(&["terminal.inflight", ".terminal.inflight"])));
        assert!(!PeerKind::Terminal.accepts(&names(&["d-aixa.aircraft.inflight"])));
        assert!(!PeerKind::Terminal.accepts(&names(&["x.seat.terminal.inflightx"])));
        assert!(PeerKind::Aircraft.accepts(&names(&["master.d-aixa.aircraft.inflight", "d-aixa.aircraft.inflight"])));
        assert!(!PeerKind::Aircraft.accepts(&names(&["master.d-aixa.aircraft.inflight"])), "a server-only name");
        assert!(!PeerKind::Aircraft.accepts(&names(&["seat-1.terminal.inflight"])));
        assert!(!PeerKind::Aircraft.accepts(&[]));
    }

    /// Whether a client trusting `ca` with `crls` completes a handshake with a server using
    /// `server` (real QUIC on loopback).
    async fn client_accepts(
        ca: &crate::pki::DevCa,
        server: &crate::pki::PemPair,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> bool {
        let client_pair =
            ca.issue("seat-1.terminal.inflight", true, false, crate::pki::Validity::default()).expect("cert");
        let identity = |p: &crate::pki::PemPair| Identity {
            chain: vec![CertificateDer::from_pem_slice(p.cert_pem.as_bytes()).expect("cert")],
            key: PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).expect("key"),
        };
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("ca")).expect("root");
        let roots = Arc::new(roots);
        let server_tls = server_config(identity(server), roots.clone(), b"test").expect("server tls");
        let ep = crate::endpoint::server("127.0.0.1:0".parse().expect("addr"), server_tls, Default::default())
            .expect("server");
        let addr = ep.local_addr().expect("addr");
        let accept = tokio::spawn(async move {
            let conn = ep.accept().await.expect("incoming").await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            conn.is_ok()
        });
        let client_tls = client_config_with_crls(identity(&client_pair), roots, crls, b"test").expect("client tls");
        let cep = crate::endpoint::client("127.0.0.1:0".parse().expect("addr"), client_tls, Default::default())
            .expect("client");
        let ok = crate::endpoint::connect(&cep, addr, "master.x.aircraft.inflight", std::time::Duration::from_secs(3))
            .await
            .is_ok();
        accept.abort();
        ok
    }

    #[tokio::test]
    async fn a_client_refuses_a_revoked_server() {
        let ca = crate::pki::DevCa::new("aircraft CA").expect("ca");
        let server =
            ca.issue("master.x.aircraft.inflight", false, true, crate::pki::Validity::default()).expect("server cert");
        let crl = |revoked: &[crate::pki::Revoked]| {
            let pem = ca.crl(revoked, 1, 1_790_000_000, 30).expect("crl");
            vec![CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).expect("crl pem")]
        };
        assert!(client_accepts(&ca, &server, Vec::new()).await, "control: no list");
        assert!(client_accepts(&ca, &server, crl(&[])).await, "control: a list naming nobody");
        let revoked = crate::pki::Revoked { serial: server.serial.clone(), revoked_unix_s: 1_790_000_000 };
        assert!(!client_accepts(&ca, &server, crl(&[revoked])).await, "a revoked server must be refused");
        // A list from another CA says nothing about this server: refused (fail closed).
        let other = crate::pki::DevCa::new("another CA").expect("ca");
        let foreign = vec![CertificateRevocationListDer::from_pem_slice(
            other.crl(&[], 1, 1_790_000_000, 30).expect("crl").as_bytes(),
        )
        .expect("crl pem")];
        assert!(!client_accepts(&ca, &server, foreign).await, "unknown revocation status must be refused");
    }

    #[test]
    fn a_configured_revocation_file_without_a_list_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = crate::pki::DevCa::new("CA").expect("ca");
        for (name, text) in [("empty", String::new()), ("a certificate", ca.cert_pem()), ("garbage", "x".repeat(40))] {
            let p = dir.path().join("crl.pem");
            std::fs::write(&p, &text).expect("write");
            assert!(crls(&p).is_err(), "{name} must not read as 'nothing revoked'");
        }
        let p = dir.path().join("crl.pem");
        std::fs::write(&p, ca.crl(&[], 1, 1_790_000_000, 30).expect("crl")).expect("write");
        assert_eq!(crls(&p).expect("a list naming nobody").len(), 1);
    }

    #[test]
    fn revocation_lists_name_serials_as_certificates_carry_them() {
        let ca = crate::pki::DevCa::new("CA").expect("ca");
        let a = ca.issue("a.terminal.inflight", true, false, crate::pki::Validity::default()).expect("cert");
        let b = ca.issue("b.terminal.inflight", true, false, crate::pki::Validity::default()).expect("cert");
        let pem = ca
            .crl(
                &[crate::pki::Revoked { serial: a.serial.clone(), revoked_unix_s: 1_790_000_000 }],
                1,
                1_790_000_000,
                30,
            )
            .expect("crl");
        let crl = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).expect("pem");
        let revoked = revoked_serials(&[crl]).expect("parses");
        let der = |p: &crate::pki::PemPair| CertificateDer::from_pem_slice(p.cert_pem.as_bytes()).expect("pem");
        assert!(revoked.contains(&serial(&der(&a)).expect("serial")));
        assert!(!revoked.contains(&serial(&der(&b)).expect("serial")));
    }

    #[test]
    fn names_are_read_from_certificates() {
        let ca = crate::pki::DevCa::new("test CA").expect("ca");
        let pair = ca
            .issue_names(&["seat-1.terminal.inflight", "Other.Example"], true, false, crate::pki::Validity::default())
            .expect("cert");
        let der = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).expect("pem");
        assert_eq!(dns_names(&der).expect("names"), names(&["seat-1.terminal.inflight", "other.example"]));
    }
}
