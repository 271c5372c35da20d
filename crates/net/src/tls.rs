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

/// Certificate revocation lists, from a PEM file of one or more `X509 CRL` blocks. An empty
/// file is allowed (nothing revoked yet); a file that does not parse is an error.
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, NetError> {
    let err = |e: rustls_pki_types::pem::Error| NetError::Pem { path: path.to_owned(), detail: e.to_string() };
    CertificateRevocationListDer::pem_file_iter(path).map_err(err)?.collect::<Result<_, _>>().map_err(err)
}

/// A server config that requires a client certificate from `client_ca` and speaks `alpn`.
pub fn server_config(
    id: Identity,
    client_ca: Arc<RootCertStore>,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, NetError> {
    server_config_with_crls(id, client_ca, Vec::new(), alpn)
}

/// [`server_config`], refusing client certificates revoked by `crls` (at the handshake, before
/// any application byte). A revocation list only says which certificates are revoked: with one,
/// a client certificate whose issuer published no list here is refused too (unknown status),
/// so a list from the wrong CA shuts everyone out loudly rather than letting revoked ones in.
/// The list's `nextUpdate` is not enforced: an aircraft in flight cannot fetch a fresh one.
pub fn server_config_with_crls(
    id: Identity,
    client_ca: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, NetError> {
    let p = provider();
    let mut builder = WebPkiClientVerifier::builder_with_provider(client_ca, p.clone());
    if !crls.is_empty() {
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = builder.build().map_err(|e| NetError::Tls(e.to_string()))?;
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
