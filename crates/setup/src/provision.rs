//! Provisioning with the airline's and issuer's own CAs: three trust domains, enrolment,
//! revocation and revocation lists.
//!
//! - **Three CAs**, each trusted by exactly one kind of verifier: the *terminal CA* signs
//!   seatback and crew terminals (only masters trust it), the *aircraft CA* signs aircraft servers
//!   (terminals and the issuer trust it), the *issuer CA* signs the issuer (only masters trust
//!   it). A terminal certificate therefore cannot even complete a handshake with the issuer.
//! - **Enrolment** issues a short-lived certificate ([`LEAF_VALIDITY_DAYS`]) with a random serial
//!   and records it in `pki/registry.json`; enrolling the same name again is the renewal path.
//! - **Revocation** records the serial and publishes the CA's revocation list
//!   (`pki/<role>-ca.crl.pem`), which the daemons re-read without a restart.
//!
//! Files are written whole and renamed into place; keys are created with mode 0600 (never
//! chmod-ed after the write), and a symlink at a destination is replaced, never followed.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use inflight_net::pki::{DevCa, PemPair, Revoked, Validity, LEAF_VALIDITY_DAYS};
use serde::{Deserialize, Serialize};

/// The three trust domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Seatback and crew terminals (TLS clients of the master).
    Terminal,
    /// Aircraft servers (TLS servers to terminals, clients of the issuer).
    Aircraft,
    /// The issuer (TLS server to aircraft).
    Issuer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Terminal, Role::Aircraft, Role::Issuer];

    /// Stable name: `terminal`, `aircraft`, `issuer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Terminal => "terminal",
            Role::Aircraft => "aircraft",
            Role::Issuer => "issuer",
        }
    }

    /// Parses [`Role::as_str`].
    pub fn parse(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: terminal, aircraft or issuer"))
    }

    /// The start of the CA's common name; [`create_cas`] adds a random tag to make it unique,
    /// recorded in the registry (a CA is re-created from its key and name to issue more).
    pub fn ca_name(self) -> &'static str {
        match self {
            Role::Terminal => "inflight terminal CA",
            Role::Aircraft => "inflight aircraft CA",
            Role::Issuer => "inflight issuer CA",
        }
    }

    /// `pki/<role>-ca.pem`, relative to the deployment folder.
    pub fn ca_cert(self) -> String {
        format!("pki/{}-ca.pem", self.as_str())
    }

    /// `pki/<role>-ca.key`.
    pub fn ca_key(self) -> String {
        format!("pki/{}-ca.key", self.as_str())
    }

    /// `pki/<role>-ca.crl.pem`: the CA's revocation list.
    pub fn crl(self) -> String {
        format!("pki/{}-ca.crl.pem", self.as_str())
    }
}

/// What a CA issued and revoked (`pki/registry.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Registry {
    /// Every certificate issued, renewals included.
    pub issued: Vec<Issued>,
    /// Every certificate revoked.
    pub revoked: Vec<RevokedEntry>,
    /// Number of the last revocation list published, per role.
    pub crl_numbers: std::collections::BTreeMap<String, u64>,
    /// Each CA's common name (unique per deployment), per role.
    #[serde(default)]
    pub ca_names: std::collections::BTreeMap<String, String>,
}

/// One issued certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    /// Its file stem under `pki/` (a terminal id, `master`, `issuer`).
    pub name: String,
    /// Its trust domain.
    pub role: Role,
    /// Serial number, hex.
    pub serial: String,
    /// Last valid day, `YYYY-MM-DD`.
    pub not_after: String,
}

/// One revoked certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedEntry {
    /// Its trust domain (whose list names it).
    pub role: Role,
    /// Serial number, hex.
    pub serial: String,
    /// When, Unix seconds.
    pub revoked_unix_s: u64,
    /// The name it was issued to.
    pub name: String,
}

fn registry_path(dir: &Path) -> PathBuf {
    dir.join("pki/registry.json")
}

/// Reads the registry (empty when there is none yet).
pub fn load_registry(dir: &Path) -> anyhow::Result<Registry> {
    let p = registry_path(dir);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not a valid registry", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

fn save_registry(dir: &Path, reg: &Registry) -> anyhow::Result<()> {
    write_file(&registry_path(dir), &(serde_json::to_string_pretty(reg)? + "\n"), false)
}

fn now_unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Creates the three CAs (certificate and key each) and an empty revocation list for each.
/// Refuses to overwrite a CA that exists.
pub fn create_cas(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("pki"))?;
    for role in Role::ALL {
        if dir.join(role.ca_key()).exists() {
            anyhow::bail!("{} exists: a CA is never overwritten", dir.join(role.ca_key()).display());
        }
    }
    // Unique names: revocation lists are matched to their CA by name, so two CAs of the same
    // name (an issuer serving several airlines, a CA rollover) must never meet in one verifier.
    let mut reg = load_registry(dir)?;
    let tag = hex(&inflight_net::pki::random_bytes::<6>()?);
    for role in Role::ALL {
        let name = format!("{} {tag}", role.ca_name());
        let ca = DevCa::new(&name)?;
        reg.ca_names.insert(role.as_str().into(), name);
        save_registry(dir, &reg)?;
        write_file(&dir.join(role.ca_key()), &ca.key_pem(), true)?;
        write_file(&dir.join(role.ca_cert()), &ca.cert_pem(), false)?;
    }
    for role in Role::ALL {
        publish_crl(dir, role)?;
    }
    Ok(())
}

/// The CA of `role` in `dir`, able to issue certificates and revocation lists. Its name is read
/// from its certificate (what issued certificates must name as their issuer), never guessed.
pub fn load_ca(dir: &Path, role: Role) -> anyhow::Result<DevCa> {
    let p = dir.join(role.ca_key());
    let key = read_key_file(&p)?;
    let cert_path = dir.join(role.ca_cert());
    let cert = std::fs::read_to_string(&cert_path).with_context(|| format!("cannot read {}", cert_path.display()))?;
    let name = inflight_net::pki::subject_common_name(&cert)
        .with_context(|| cert_path.display().to_string())?
        .ok_or_else(|| anyhow::anyhow!("{} has no common name", cert_path.display()))?;
    DevCa::from_key(&name, &key).with_context(|| format!("{} is not a CA key", p.display()))
}

/// The default file stem and the DNS names of a certificate of `role` for `id`: a terminal id,
/// an aircraft id (its server name and its client name), or the issuer (its server name).
pub fn names_for(role: Role, id: &str) -> anyhow::Result<(String, Vec<String>)> {
    Ok(match role {
        Role::Terminal => {
            let t = inflight_wire::TerminalId::parse(id).map_err(|e| anyhow::anyhow!("terminal id {id:?}: {e}"))?;
            (id.to_owned(), vec![inflight_net::identity::terminal_cert_name(&t)])
        }
        Role::Aircraft => {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                anyhow::bail!("aircraft id {id:?} must be letters, digits and '-'");
            }
            (
                format!("master-{id}"),
                vec![crate::master_server_name(id), inflight_net::identity::aircraft_cert_name(id)],
            )
        }
        Role::Issuer => (id.to_owned(), vec![crate::ISSUER_SERVER_NAME.to_owned()]),
    })
}

fn check_stem(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        anyhow::bail!("name {name:?} must be letters, digits, '-' or '_'");
    }
    // A leaf must never be written over a CA's files or the registry.
    if name.ends_with("-ca") || name == "registry" {
        anyhow::bail!("name {name:?} is reserved (CA files end in -ca; the registry is registry.json)");
    }
    Ok(())
}

/// (client, server) usages of a role's certificates.
fn usages(role: Role) -> (bool, bool) {
    match role {
        Role::Terminal => (true, false),
        Role::Aircraft => (true, true),
        Role::Issuer => (false, true),
    }
}

fn record(dir: &Path, role: Role, name: &str, serial: &[u8], validity: Validity) -> anyhow::Result<()> {
    let mut reg = load_registry(dir)?;
    let (y, m, d) = validity.not_after;
    reg.issued.push(Issued {
        name: name.into(),
        role,
        serial: hex(serial),
        not_after: format!("{y:04}-{m:02}-{d:02}"),
    });
    save_registry(dir, &reg)
}

/// Issues a certificate of `role` under `dns_names` (the first is the common name), its key made
/// here, and writes them as `pki/<name>.pem` and `pki/<name>.key`, replacing older ones
/// (renewal). For a development deployment; devices use [`request`] and the CA [`sign`].
pub fn enroll(dir: &Path, role: Role, name: &str, dns_names: &[&str]) -> anyhow::Result<PemPair> {
    check_stem(name)?;
    let ca = load_ca(dir, role)?;
    let (client, server) = usages(role);
    let validity = Validity::days_from(now_unix_s(), LEAF_VALIDITY_DAYS);
    let pair = ca.issue_names(dns_names, client, server, validity)?;
    // Recorded before it exists anywhere: a crash can leave a recorded certificate that was
    // never delivered (harmless, revocable), never an issued one nobody can revoke.
    record(dir, role, name, &pair.serial, validity)?;
    write_file(&dir.join(format!("pki/{name}.key")), &pair.key_pem, true)?;
    write_file(&dir.join(format!("pki/{name}.pem")), &pair.cert_pem, false)?;
    Ok(pair)
}

/// On the device: a new private key `pki/<name>.key` (mode 0600; it never leaves the device) and
/// a certificate signing request `pki/<name>.csr.pem` for the CA. Returns the request's path.
pub fn request(dir: &Path, role: Role, id: &str, name: Option<&str>) -> anyhow::Result<PathBuf> {
    let (stem, names) = names_for(role, id)?;
    let stem = name.map_or(stem, str::to_owned);
    check_stem(&stem)?;
    std::fs::create_dir_all(dir.join("pki"))?;
    let (key, csr) = inflight_net::pki::key_and_request(&names[0])?;
    write_file(&dir.join(format!("pki/{stem}.key")), &key, true)?;
    let out = dir.join(format!("pki/{stem}.csr.pem"));
    write_file(&out, &csr, false)?;
    Ok(out)
}

/// At the CA: signs the request in `csr_file` as a certificate of `role` for `id` (the names are
/// the CA's: `id` decides them, not the request), records it, and writes it to `out`.
pub fn sign(dir: &Path, role: Role, id: &str, csr_file: &Path, out: &Path) -> anyhow::Result<()> {
    let (stem, names) = names_for(role, id)?;
    let out_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if ["-ca.pem", "-ca.key", "-ca.crl.pem", "registry.json"].iter().any(|r| out_name.ends_with(r)) {
        anyhow::bail!("{} is reserved for a CA or the registry; choose another --out", out.display());
    }
    let csr = std::fs::read_to_string(csr_file).with_context(|| format!("cannot read {}", csr_file.display()))?;
    let ca = load_ca(dir, role)?;
    let (client, server) = usages(role);
    let validity = Validity::days_from(now_unix_s(), LEAF_VALIDITY_DAYS);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (cert, serial) =
        ca.sign_request(&csr, &refs, client, server, validity).with_context(|| csr_file.display().to_string())?;
    record(dir, role, &stem, &serial, validity)?;
    write_file(out, &cert, false)
}

/// Revokes every certificate issued to `name` that is not revoked yet, and publishes the new
/// revocation list of its CA. Returns how many were revoked.
pub fn revoke(dir: &Path, role: Role, name: &str) -> anyhow::Result<usize> {
    let mut reg = load_registry(dir)?;
    let now = now_unix_s();
    let fresh: Vec<Issued> = reg
        .issued
        .iter()
        .filter(|i| i.role == role && i.name == name && !reg.revoked.iter().any(|r| r.serial == i.serial))
        .cloned()
        .collect();
    if fresh.is_empty() {
        anyhow::bail!(
            "no unrevoked {} certificate issued to {name:?} in {}",
            role.as_str(),
            registry_path(dir).display()
        );
    }
    for i in &fresh {
        reg.revoked.push(RevokedEntry {
            role: i.role,
            serial: i.serial.clone(),
            revoked_unix_s: now,
            name: name.into(),
        });
    }
    save_registry(dir, &reg)?;
    let mut roles: Vec<Role> = fresh.iter().map(|i| i.role).collect();
    roles.dedup();
    for role in roles {
        publish_crl(dir, role)?;
    }
    Ok(fresh.len())
}

/// Signs and writes `role`'s revocation list from the registry, numbered one past the last.
pub fn publish_crl(dir: &Path, role: Role) -> anyhow::Result<PathBuf> {
    let mut reg = load_registry(dir)?;
    let ca = load_ca(dir, role)?;
    let revoked: Vec<Revoked> = reg
        .revoked
        .iter()
        .filter(|r| r.role == role)
        .map(|r| Ok(Revoked { serial: unhex(&r.serial)?, revoked_unix_s: r.revoked_unix_s }))
        .collect::<anyhow::Result<_>>()?;
    let number = reg.crl_numbers.get(role.as_str()).copied().unwrap_or(0) + 1;
    // The number is taken before the list is written: a crash can skip a number, never reuse one.
    reg.crl_numbers.insert(role.as_str().into(), number);
    save_registry(dir, &reg)?;
    let pem = ca.crl(&revoked, number, now_unix_s(), LEAF_VALIDITY_DAYS)?;
    let path = dir.join(role.crl());
    write_file(&path, &pem, false)?;
    Ok(path)
}

/// Reads a PEM key file: UTF-8 text, or a clear error naming the file (never a panic).
fn read_key_file(p: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not a PEM text file", p.display()))
}

/// Writes `text` to `path` whole: into a new file beside it (created with its final mode, 0600
/// for a secret, and refused if anything exists there, symlinks included), synced, then renamed
/// over `path` (which replaces a symlink rather than following it).
pub fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    // The rename itself is durable only once the folder is synced.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("serial {s:?} is not hex");
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(Into::into)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrol_revoke_and_publish() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_cas(dir.path()).expect("CAs");
        assert!(create_cas(dir.path()).is_err(), "a CA is never overwritten");
        let a = enroll(dir.path(), Role::Terminal, "seat-1", &["seat-1.terminal.inflight"]).expect("enrol");
        let b = enroll(dir.path(), Role::Terminal, "seat-1", &["seat-1.terminal.inflight"]).expect("renew");
        assert_ne!(a.serial, b.serial);
        let crl_before = std::fs::read_to_string(dir.path().join(Role::Terminal.crl())).expect("crl");
        assert!(revoke(dir.path(), Role::Aircraft, "seat-1").is_err(), "names are per role");
        assert_eq!(revoke(dir.path(), Role::Terminal, "seat-1").expect("revoke"), 2, "both certificates of the name");
        assert!(revoke(dir.path(), Role::Terminal, "seat-1").is_err(), "nothing left to revoke");
        let crl_after = std::fs::read_to_string(dir.path().join(Role::Terminal.crl())).expect("crl");
        assert_ne!(crl_before, crl_after);
        assert_eq!(inflight_net::tls::crls(&dir.path().join(Role::Terminal.crl())).expect("parses").len(), 1);
        let reg = load_registry(dir.path()).expect("registry");
        assert_eq!(reg.crl_numbers["terminal"], 2);
        assert_eq!(reg.revoked.len(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private_from_creation_and_symlinks_are_replaced_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep me").expect("write");
        let key = dir.path().join("k.key");
        std::os::unix::fs::symlink(&target, &key).expect("symlink");
        write_file(&key, "secret", true).expect("written");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me", "the symlink was not followed");
        let meta = std::fs::symlink_metadata(&key).expect("meta");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_key_made_on_the_device_is_certified_by_the_ca_without_leaving_it() {
        let device = tempfile::tempdir().expect("tempdir");
        let ca_dir = tempfile::tempdir().expect("tempdir");
        create_cas(ca_dir.path()).expect("CAs");
        let csr = request(device.path(), Role::Terminal, "seat-9", None).expect("request");
        let cert = device.path().join("pki/seat-9.pem");
        sign(ca_dir.path(), Role::Terminal, "seat-9", &csr, &cert).expect("signed");
        assert!(!ca_dir.path().join("pki/seat-9.key").exists(), "the key stays on the device");
        // The certificate and the device's key make a working identity, named by the CA.
        let id = inflight_net::tls::Identity::from_pem_files(&cert, &device.path().join("pki/seat-9.key")).expect("id");
        let names = inflight_net::tls::dns_names(&id.chain[0]).expect("names");
        assert_eq!(names, vec!["seat-9.terminal.inflight".to_owned()]);
        assert!(inflight_net::tls::PeerKind::Terminal.accepts(&names));
        assert_eq!(load_registry(ca_dir.path()).expect("registry").issued[0].name, "seat-9");
        // A request whose signature does not verify (tampered) is refused.
        let text = std::fs::read_to_string(&csr).expect("csr");
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mid = lines.len() / 2;
        lines[mid] = lines[mid].chars().rev().collect();
        let bad = device.path().join("bad.csr.pem");
        std::fs::write(&bad, lines.join("\n")).expect("write");
        assert!(sign(ca_dir.path(), Role::Terminal, "seat-9", &bad, &cert).is_err());
    }

    #[test]
    fn a_leaf_is_never_written_over_a_ca_or_the_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_cas(dir.path()).expect("CAs");
        let ca_before = std::fs::read_to_string(dir.path().join(Role::Terminal.ca_key())).expect("key");
        for stem in ["terminal-ca", "aircraft-ca", "registry"] {
            assert!(enroll(dir.path(), Role::Terminal, stem, &["terminal-ca.terminal.inflight"]).is_err(), "{stem}");
        }
        assert!(request(dir.path(), Role::Terminal, "terminal-ca", None).is_err());
        assert_eq!(std::fs::read_to_string(dir.path().join(Role::Terminal.ca_key())).expect("key"), ca_before);
        // Aircraft default to a file of their own: two aircraft at one CA do not overwrite.
        assert_eq!(names_for(Role::Aircraft, "d-aixa").expect("names").0, "master-d-aixa");
    }

    #[test]
    fn every_deployment_s_cas_have_names_of_their_own() {
        let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        create_cas(a.path()).expect("CAs");
        create_cas(b.path()).expect("CAs");
        let (ra, rb) = (load_registry(a.path()).expect("registry"), load_registry(b.path()).expect("registry"));
        assert_eq!(ra.ca_names.len(), 3);
        for role in Role::ALL {
            assert_ne!(ra.ca_names[role.as_str()], rb.ca_names[role.as_str()], "{}", role.as_str());
        }
        // Certificates issued later chain to the CA made first (same name, same key).
        let pair = enroll(a.path(), Role::Terminal, "seat-1", &["seat-1.terminal.inflight"]).expect("enrol");
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read_to_string(a.path().join(Role::Terminal.ca_cert())).expect("ca");
        use rustls::pki_types::pem::PemObject;
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).expect("pem")).expect("root");
        let leaf = rustls::pki_types::CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).expect("pem");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            inflight_net::tls::provider(),
        )
        .build()
        .expect("verifier");
        verifier.verify_client_cert(&leaf, &[], rustls::pki_types::UnixTime::now()).expect("chains to its CA");
    }

    #[test]
    fn the_ca_is_named_from_its_certificate_even_without_the_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_cas(dir.path()).expect("CAs");
        std::fs::remove_file(dir.path().join("pki/registry.json")).expect("remove");
        let pair = enroll(dir.path(), Role::Terminal, "seat-1", &["seat-1.terminal.inflight"]).expect("enrol");
        let ca = std::fs::read_to_string(dir.path().join(Role::Terminal.ca_cert())).expect("ca");
        assert_eq!(
            inflight_net::pki::subject_common_name(&ca).expect("ca name"),
            issuer_common_name(&pair.cert_pem),
            "issued under the CA's own name"
        );
        let out = dir.path().join("pki/terminal-ca.pem");
        let csr = request(dir.path(), Role::Terminal, "seat-2", None).expect("request");
        assert!(sign(dir.path(), Role::Terminal, "seat-2", &csr, &out).is_err(), "never over a CA's certificate");
    }

    fn issuer_common_name(cert_pem: &str) -> Option<String> {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("pem");
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).expect("cert");
        let name = c.issuer().iter_common_name().next().and_then(|a| a.as_str().ok()).map(str::to_owned);
        name
    }

    #[test]
    fn a_broken_ca_key_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_cas(dir.path()).expect("CAs");
        std::fs::write(dir.path().join(Role::Terminal.ca_key()), [0xffu8, 0xfe, b'\n']).expect("write");
        let e = enroll(dir.path(), Role::Terminal, "x", &["x.terminal.inflight"]).expect_err("refused");
        assert!(format!("{e:#}").contains("not a PEM text file"), "{e:#}");
        std::fs::write(dir.path().join(Role::Terminal.ca_key()), "not a key").expect("write");
        let e = enroll(dir.path(), Role::Terminal, "x", &["x.terminal.inflight"]).expect_err("refused");
        assert!(format!("{e:#}").contains("not a CA key"), "{e:#}");
    }
}
