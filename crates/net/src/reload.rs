//! TLS material that changes on disk while a daemon runs: a new revocation list (a stolen
//! terminal shut out), a renewed certificate (short-lived certificates are the default). A
//! server polls its files and, when any changed, builds its configuration again, gives it to the
//! endpoint and closes the connections already up: every peer reconnects and is verified under
//! the new material (reconnecting is what peers do after any loss; nothing in flight is lost,
//! since everything is re-sent until acknowledged by id). A change that
//! does not build (a half-written file, a bad list) is logged and the previous configuration
//! kept; it is tried again at the next change.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use quinn::{Endpoint, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::NetError;

/// How often the files are looked at. A revocation takes effect within this long.
pub const TLS_RELOAD_POLL: Duration = Duration::from_secs(1);

/// What the files looked like: modification time, length and inode of each (`None`: missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<Option<(SystemTime, u64, u64)>>);

/// The stamp of `files` now.
pub fn stamp(files: &[PathBuf]) -> Stamp {
    Stamp(
        files
            .iter()
            .map(|f| {
                let m = std::fs::metadata(f).ok()?;
                #[cfg(unix)]
                let ino = std::os::unix::fs::MetadataExt::ino(&m);
                #[cfg(not(unix))]
                let ino = 0;
                Some((m.modified().ok()?, m.len(), ino))
            })
            .collect(),
    )
}

/// Until `cancel`: whenever `files` change, `build` a new server configuration, install it on
/// `ep`, then call `installed` (which closes the connections already up, so that every peer is
/// verified again under the new material: a revoked one is shut out, not just kept from
/// reconnecting). `what` names the endpoint in logs.
pub async fn watch_server(
    ep: Endpoint,
    files: Vec<PathBuf>,
    build: impl Fn() -> Result<ServerConfig, NetError>,
    installed: impl Fn(),
    what: &'static str,
    cancel: CancellationToken,
) {
    let mut seen = stamp(&files);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(TLS_RELOAD_POLL) => {}
        }
        let now = stamp(&files);
        if now == seen {
            continue;
        }
        seen = now;
        match build() {
            Ok(cfg) => {
                ep.set_server_config(Some(cfg));
                installed();
                tracing::info!(
                    endpoint = what,
                    "TLS material changed on disk; connections closed, peers reconnect and are verified again"
                );
            }
            Err(e) => tracing::error!(
                endpoint = what,
                error = %e,
                "TLS material changed on disk but does not load; keeping the previous one"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_or_removed_file_changes_the_stamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("crl.pem");
        std::fs::write(&f, "one").expect("write");
        let files = vec![f.clone()];
        let first = stamp(&files);
        assert_eq!(first, stamp(&files), "nothing changed");
        std::fs::write(&f, "longer").expect("write");
        assert_ne!(first, stamp(&files), "a new length");
        let second = stamp(&files);
        // Replaced by rename (how a CRL should be published): a new inode.
        let tmp = dir.path().join("crl.tmp");
        std::fs::write(&tmp, "longer").expect("write");
        std::fs::rename(&tmp, &f).expect("rename");
        assert_ne!(second, stamp(&files), "replaced by rename");
        std::fs::remove_file(&f).expect("remove");
        assert_eq!(stamp(&files), Stamp(vec![None]));
    }
}
