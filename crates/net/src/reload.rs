//! TLS material that changes on disk while a daemon runs: a new revocation list (a stolen
//! terminal shut out), a renewed certificate (short-lived certificates are the default). A
//! server polls its files and, when any changed, builds its configuration again, gives it to the
//! endpoint, and closes the connections already up whose certificate the new revocation lists
//! name (nothing in flight is lost by a close: everything is re-sent until acknowledged by id).
//! A change that
//! does not build (a half-written file, a bad list) is logged and the previous configuration
//! kept; it is tried again at the next change.

use std::path::PathBuf;
use std::time::Duration;

use quinn::{ClientConfig, Endpoint, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::NetError;

/// How often the files are looked at. A revocation takes effect within this long.
pub const TLS_RELOAD_POLL: Duration = Duration::from_secs(1);

/// What the files hold: a digest of each one's bytes (or of why it could not be read). By
/// content, so a rewrite that keeps the time and length (`cp -p`) is seen, and re-publishing the
/// same bytes (or `touch`) is not a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<Result<[u8; 32], std::io::ErrorKind>>);

/// The stamp of `files` now.
pub fn stamp(files: &[PathBuf]) -> Stamp {
    Stamp(
        files
            .iter()
            .map(|f| {
                let bytes = std::fs::read(f).map_err(|e| e.kind())?;
                let mut d = [0u8; 32];
                d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
                Ok(d)
            })
            .collect(),
    )
}

/// When [`watch_server`] looks at its files.
#[derive(Debug)]
pub struct Triggers {
    /// Every this long ([`TLS_RELOAD_POLL`] in the daemons).
    pub poll: Duration,
    /// And at once whenever this moves (the daemon's SIGHUP counter).
    pub nudge: tokio::sync::watch::Receiver<u64>,
}

impl Triggers {
    /// Every [`TLS_RELOAD_POLL`], and on each move of `nudge`.
    pub fn new(nudge: tokio::sync::watch::Receiver<u64>) -> Self {
        Self { poll: TLS_RELOAD_POLL, nudge }
    }
}

/// Until `cancel`: whenever `files` change (looked at every `poll`, and at once when `nudge`
/// moves: the daemon's SIGHUP), `build` a new server configuration, install it on `ep`, then
/// call `installed` (which closes the connections already up whose certificate is now revoked:
/// a revoked peer is shut out, not just kept from reconnecting). `what` names the endpoint in
/// logs. A nudge with nothing changed on disk is logged as such.
pub async fn watch_server(
    ep: Endpoint,
    files: Vec<PathBuf>,
    build: impl Fn() -> Result<ServerConfig, NetError>,
    installed: impl Fn(),
    what: &'static str,
    triggers: Triggers,
    cancel: CancellationToken,
) {
    let Triggers { poll, mut nudge } = triggers;
    let mut seen = stamp(&files);
    let mut failed: Option<Stamp> = None;
    // A nudge whose sender is gone (a daemon run without SIGHUP handling) leaves the poll.
    let mut nudges = true;
    loop {
        let nudged = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(poll) => false,
            r = nudge.changed(), if nudges => {
                nudges = r.is_ok();
                nudges
            }
        };
        let now = stamp(&files);
        if now == seen {
            if nudged {
                tracing::info!(endpoint = what, "reload asked: TLS files unchanged on disk");
            }
            continue;
        }
        // Until it loads, a change is tried again at every poll (a file still being copied, a
        // mode fixed afterwards); the error is logged once per distinct content.
        match build() {
            Ok(cfg) => {
                ep.set_server_config(Some(cfg));
                installed();
                seen = now;
                failed = None;
                tracing::info!(
                    endpoint = what,
                    on = if nudged { "reload" } else { "poll" },
                    "TLS material changed on disk; new handshakes use it"
                );
            }
            Err(e) => {
                if failed.as_ref() != Some(&now) {
                    tracing::error!(
                        endpoint = what,
                        error = %e,
                        "TLS material changed on disk but does not load; keeping the previous one"
                    );
                    failed = Some(now);
                }
            }
        }
    }
}

/// How a client configuration is built from its files.
pub type BuildClient = Box<dyn Fn() -> Result<ClientConfig, NetError> + Send + Sync>;

/// A client configuration read again from its files when they changed, checked at each use (a
/// connection attempt): a renewed certificate or a new revocation list needs no restart.
pub struct ClientTls {
    files: Vec<PathBuf>,
    build: BuildClient,
    current: std::sync::Mutex<(Stamp, ClientConfig)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds the first configuration (an error here stops the daemon at start).
    pub fn new(files: Vec<PathBuf>, build: BuildClient) -> Result<Self, NetError> {
        let stamp = stamp(&files);
        let cfg = build()?;
        Ok(Self { files, build, current: std::sync::Mutex::new((stamp, cfg)) })
    }

    /// The configuration to connect with: rebuilt first if the files changed (if the new files
    /// do not load, the previous configuration is kept and the error logged).
    pub fn current(&self, what: &'static str) -> ClientConfig {
        let now = stamp(&self.files);
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.0 != now {
            match (self.build)() {
                Ok(cfg) => {
                    cur.0 = now;
                    cur.1 = cfg;
                    tracing::info!(link = what, "TLS material changed on disk; the next connection uses it");
                }
                Err(e) => tracing::error!(
                    link = what,
                    error = %e,
                    "TLS material changed on disk but does not load; keeping the previous one"
                ),
            }
        }
        cur.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_follows_content_not_times() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("crl.pem");
        std::fs::write(&f, "one").expect("write");
        let files = vec![f.clone()];
        let first = stamp(&files);
        assert_eq!(first, stamp(&files), "nothing changed");
        std::fs::write(&f, "two").expect("write");
        assert_ne!(first, stamp(&files), "same length, new content");
        let second = stamp(&files);
        // The same bytes published again (by rename, as a CRL should be): no change.
        let tmp = dir.path().join("crl.tmp");
        std::fs::write(&tmp, "two").expect("write");
        std::fs::rename(&tmp, &f).expect("rename");
        assert_eq!(second, stamp(&files), "same content");
        std::fs::remove_file(&f).expect("remove");
        assert_eq!(stamp(&files), Stamp(vec![Err(std::io::ErrorKind::NotFound)]));
    }

    /// With a poll of an hour, only the nudge can make the watcher look: it does, at once, and
    /// installs what changed.
    #[tokio::test]
    async fn a_nudge_reloads_changed_files_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = crate::pki::DevCa::new("CA").expect("ca");
        let pair = ca.issue("server.test", false, true, crate::pki::Validity::default()).expect("cert");
        let (ca_file, cert, key) = (dir.path().join("ca.pem"), dir.path().join("s.pem"), dir.path().join("s.key"));
        std::fs::write(&ca_file, ca.cert_pem()).expect("write");
        std::fs::write(&cert, &pair.cert_pem).expect("write");
        std::fs::write(&key, &pair.key_pem).expect("write");
        let files = crate::tls::ServerFiles { ca: &ca_file, crl: None, cert: &cert, key: &key };
        let first = files.load(crate::tls::PeerKind::Terminal, b"test").expect("tls");
        let ep =
            crate::endpoint::server("127.0.0.1:0".parse().expect("addr"), first, Default::default()).expect("endpoint");
        let installed = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let cancel = CancellationToken::new();
        let watcher = {
            let (paths, installed) = (files.paths(), installed.clone());
            let (ca_file, cert, key) = (ca_file.clone(), cert.clone(), key.clone());
            let build = move || {
                let files = crate::tls::ServerFiles { ca: &ca_file, crl: None, cert: &cert, key: &key };
                crate::endpoint::server_config(files.load(crate::tls::PeerKind::Terminal, b"test")?, Default::default())
            };
            let triggers = Triggers { poll: Duration::from_secs(3600), nudge: rx };
            tokio::spawn(watch_server(
                ep.clone(),
                paths,
                build,
                move || {
                    installed.fetch_add(1, Ordering::SeqCst);
                },
                "test",
                triggers,
                cancel.clone(),
            ))
        };
        // The watcher takes its first stamp when it first runs (this runtime has one thread: at
        // this test's next await), so the files change after that.
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(&ca_file, ca.cert_pem() + "\n").expect("rewrite");
        tx.send_modify(|n| *n += 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while installed.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the nudge did not reload the changed files");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A nudge with nothing changed installs nothing.
        tx.send_modify(|n| *n += 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(installed.load(Ordering::SeqCst), 1);
        cancel.cancel();
        watcher.await.expect("watcher ends on cancel");
    }

    #[test]
    fn a_client_configuration_is_rebuilt_only_when_its_files_change_and_kept_when_they_break() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = crate::pki::DevCa::new("CA").expect("ca");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).expect("write");
        let builds = Arc::new(AtomicUsize::new(0));
        let (b, f) = (builds.clone(), ca_file.clone());
        let build: BuildClient = Box::new(move || {
            b.fetch_add(1, Ordering::SeqCst);
            let tls = crate::tls::client_config_anonymous(crate::tls::roots(&f)?, b"test")?;
            crate::endpoint::client_config(tls, Default::default())
        });
        let tls = ClientTls::new(vec![ca_file.clone()], build).expect("first build");
        let _ = tls.current("test");
        let _ = tls.current("test");
        assert_eq!(builds.load(Ordering::SeqCst), 1, "unchanged files are not read again");
        std::fs::write(&ca_file, ca.cert_pem() + "\n").expect("rewrite");
        let _ = tls.current("test");
        assert_eq!(builds.load(Ordering::SeqCst), 2, "changed files are");
        std::fs::write(&ca_file, "broken").expect("break");
        let _ = tls.current("test");
        assert_eq!(builds.load(Ordering::SeqCst), 3, "tried, failed, previous kept (no panic)");
        let _ = tls.current("test");
        assert_eq!(builds.load(Ordering::SeqCst), 4, "a change that failed is tried again");
    }
}
