//! Local sockets: JSON lines over a Unix domain socket, one request line, one answer line.
//!
//! Local APIs (capture, status, admin) never listen on network ports: a Unix socket is reachable
//! only on this machine. Who may use one is decided twice:
//! - by the socket file's mode, set before the socket is reachable at its path: 0600 (only the
//!   daemon's user) unless the socket's [`Access`] allows other users or groups, then 0660
//!   (owner and group; other users must share the socket's group to connect at all);
//! - per connection and per op, by the peer's credentials as the kernel reports them
//!   (`SO_PEERCRED`: the peer's effective uid and gid when it connected; supplementary groups
//!   are not reported, so a gid in a list matches a peer's primary or effective group only)
//!   against the socket's [`Access`] lists ([`permits`]). Root and the daemon's own user may do
//!   everything; some ops are crew ops and need the crew lists.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::runner::{Shutdown, Slot, Slots};
use crate::ConfigReader;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line accepted, in bytes. A capture request is a few hundred.
pub const REQUEST_BYTES_MAX: usize = 16 * 1024;
/// Longest answer line a client accepts (a whole ledger can be one answer).
pub const ANSWER_BYTES_MAX: usize = 512 << 20;
/// Most connections one local socket serves at once. A sale app or a crew tool holds one or a
/// few; beyond this a connection is answered `{"error":"busy"}` and closed, so a stuck or
/// hostile local client cannot make the daemon hold unbounded tasks and buffers.
pub const LOCAL_CONNECTIONS_MAX: usize = 64;
/// Most ids in one access list of a config.
pub const ACCESS_IDS_MAX: usize = 64;
/// Root may use every socket: it can read the stores and keys anyway.
pub const ROOT_UID: u32 = 0;
/// Mode of a socket only its owner may connect to.
pub const SOCKET_MODE_OWNER: u32 = 0o600;
/// Mode of a socket that other allowed users reach through its group.
pub const SOCKET_MODE_GROUP: u32 = 0o660;
/// Mode of the private directory a socket is bound in before it is moved into place.
const BIND_DIR_MODE: u32 = 0o700;

/// Why a local socket could not be bound. Every message names the path.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Something that is not a socket sits at the path: it is never deleted.
    #[error("{}: exists and is not a socket; refusing to replace it (remove it or fix the configured path)", path.display())]
    NotASocket {
        /// The configured path.
        path: PathBuf,
    },
    /// A daemon answers on the socket already.
    #[error("{}: in use by a running daemon", path.display())]
    InUse {
        /// The configured path.
        path: PathBuf,
    },
    /// A file-system or socket call failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The configured path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Which local users may use one socket (config: `<table>.allowed_uids`, `allowed_gids`,
/// `crew_uids`, `crew_gids`). Root and the daemon's own user are always allowed everything and
/// need not be listed; with every list empty (the default) nobody else is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Users who may use the socket's ordinary ops (the sale app; status and reports).
    pub allowed_uids: Vec<u32>,
    /// Groups (primary or effective gid of the peer) who may use the ordinary ops.
    pub allowed_gids: Vec<u32>,
    /// Users who may also use the crew ops (on the master: `link`, `flight`).
    pub crew_uids: Vec<u32>,
    /// Groups who may also use the crew ops.
    pub crew_gids: Vec<u32>,
}

impl Access {
    /// Reads `<table>.allowed_uids` and `<table>.allowed_gids`, and, for a socket that has crew
    /// ops, `<table>.crew_uids` and `<table>.crew_gids` (elsewhere they are unknown keys).
    pub fn read(r: &mut ConfigReader, table: &str, has_crew_ops: bool) -> Self {
        let mut list = |k: &str| r.id_list_or_empty(&format!("{table}.{k}"), ACCESS_IDS_MAX);
        let (allowed_uids, allowed_gids) = (list("allowed_uids"), list("allowed_gids"));
        let (crew_uids, crew_gids) =
            if has_crew_ops { (list("crew_uids"), list("crew_gids")) } else { (vec![], vec![]) };
        Self { allowed_uids, allowed_gids, crew_uids, crew_gids }
    }

    /// The socket file's mode: owner only unless someone else is allowed.
    pub fn socket_mode(&self) -> u32 {
        let others = [&self.allowed_uids, &self.allowed_gids, &self.crew_uids, &self.crew_gids];
        if others.iter().all(|l| l.is_empty()) {
            SOCKET_MODE_OWNER
        } else {
            SOCKET_MODE_GROUP
        }
    }
}

/// What an op needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// An ordinary op: capture and status for the sale app, status and reports for the crew.
    Use,
    /// An op that changes how the daemon behaves (the master's link override, flight id).
    Crew,
}

/// A connected peer, as the kernel reports it (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// Whether `peer` may use an op of `kind`: a `trusted` uid (root, the daemon's own user) may do
/// everything; crew ops need the peer's uid in `crew_uids` or gid in `crew_gids`; ordinary ops
/// need it in the crew lists or the allowed lists.
pub fn permits(access: &Access, trusted: &[u32], peer: Peer, kind: OpKind) -> bool {
    if trusted.contains(&peer.uid) {
        return true;
    }
    let crew = access.crew_uids.contains(&peer.uid) || access.crew_gids.contains(&peer.gid);
    match kind {
        OpKind::Crew => crew,
        OpKind::Use => crew || access.allowed_uids.contains(&peer.uid) || access.allowed_gids.contains(&peer.gid),
    }
}

/// A socket's access lists and the uids it trusts.
#[derive(Debug)]
struct Policy {
    access: Access,
    /// Root and the socket's owner (the daemon's user).
    trusted: [u32; 2],
}

/// A bound local socket that admits only allowed peers, at most [`LOCAL_CONNECTIONS_MAX`] at
/// once.
#[derive(Debug)]
pub struct LocalListener {
    listener: UnixListener,
    path: PathBuf,
    policy: Arc<Policy>,
    slots: Slots,
}

/// An admitted connection: its stream, its peer, and its slot (freed when dropped).
#[derive(Debug)]
pub struct Admitted {
    /// The connection.
    pub stream: UnixStream,
    /// Who connected.
    pub peer: Peer,
    _slot: Slot,
}

/// Tells the private bind directories of one process apart.
static BIND_SEQ: AtomicU64 = AtomicU64::new(0);

/// Binds a Unix socket at `path` for peers allowed by `access`.
///
/// The socket is never reachable at `path` with a wider mode than [`Access::socket_mode`]: it
/// is bound inside a fresh private directory (0700) next to `path`, given its mode there, and
/// renamed into place. (Setting the mode after binding at `path` left a window in which the
/// socket had the umask's mode; changing the umask instead would affect every thread.)
///
/// What sits at `path` already: a stale socket left by a previous run is replaced; a socket a
/// live daemon answers on is [`LocalError::InUse`]; anything else (a file, a directory, a link)
/// is [`LocalError::NotASocket`] and is left alone. (Between this check and the rename another
/// process could create a file at `path`; the rename would replace it. Whoever can do that can
/// write to the socket's directory, which should be the daemon's own.)
pub async fn bind(path: &Path, access: Access) -> Result<LocalListener, LocalError> {
    let io = |source: std::io::Error| LocalError::Io { path: path.to_owned(), source };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(LocalError::InUse { path: path.to_owned() });
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        Ok(_) => return Err(LocalError::NotASocket { path: path.to_owned() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    // A short name, so that the temporary path fits a socket address wherever `path` does.
    let private = dir.join(format!(".bind-{}-{}", std::process::id(), BIND_SEQ.fetch_add(1, Ordering::Relaxed)));
    std::fs::DirBuilder::new().mode(BIND_DIR_MODE).create(&private).map_err(io)?;
    let tmp = private.join("s");
    let bound = (|| {
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(access.socket_mode()))?;
        let owner = std::fs::metadata(&tmp)?.uid();
        std::fs::rename(&tmp, path)?;
        Ok((listener, owner))
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    let (listener, owner) = bound.map_err(io)?;
    Ok(LocalListener {
        listener,
        path: path.to_owned(),
        policy: Arc::new(Policy { access, trusted: [ROOT_UID, owner] }),
        slots: Slots::new(LOCAL_CONNECTIONS_MAX),
    })
}

impl LocalListener {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `peer` may use an op of `kind` on this socket.
    pub fn permits(&self, peer: Peer, kind: OpKind) -> bool {
        permits(&self.policy.access, &self.policy.trusted, peer, kind)
    }

    /// The next admitted connection. A peer not allowed on this socket at all is answered
    /// `{"error":"forbidden"}` and closed; a connection over [`LOCAL_CONNECTIONS_MAX`] is
    /// answered `{"error":"busy"}` and closed; both are logged (uid and gid only: nothing the
    /// peer sent is read).
    pub async fn accept(&self) -> std::io::Result<Admitted> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            let peer = match stream.peer_cred() {
                Ok(c) => Peer { uid: c.uid(), gid: c.gid() },
                Err(e) => {
                    tracing::warn!(socket = %self.path.display(), error = %e, "local peer without credentials; closing");
                    continue;
                }
            };
            if !self.permits(peer, OpKind::Use) {
                tracing::warn!(socket = %self.path.display(), uid = peer.uid, gid = peer.gid, "local peer refused: not allowed on this socket");
                answer_and_close(&stream, &forbidden(peer, None));
                continue;
            }
            let Some(slot) = self.slots.try_take() else {
                tracing::warn!(socket = %self.path.display(), uid = peer.uid, max = LOCAL_CONNECTIONS_MAX, "local connection limit reached; refusing");
                answer_and_close(
                    &stream,
                    &json!({ "error": "busy", "detail": format!("more than {LOCAL_CONNECTIONS_MAX} connections") }),
                );
                continue;
            };
            return Ok(Admitted { stream, peer, _slot: slot });
        }
    }
}

/// The answer to a refused peer (and op).
pub fn forbidden(peer: Peer, op: Option<&str>) -> serde_json::Value {
    let detail = match op {
        None => format!("uid {} (gid {}) may not use this socket", peer.uid, peer.gid),
        Some(op) => format!("uid {} (gid {}) may not use the crew op {}", peer.uid, peer.gid, crate::log_escape(op)),
    };
    json!({ "error": "forbidden", "detail": detail })
}

/// Best effort, never waits: a refused peer gets one answer line if its socket buffer has room.
fn answer_and_close(stream: &UnixStream, answer: &serde_json::Value) {
    if let Ok(mut line) = serde_json::to_vec(answer) {
        line.push(b'\n');
        let _ = stream.try_write(&line);
    }
}

/// Reads one request line: `Ok(None)` at end of input; an error for an over-long line.
pub async fn read_line(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    buf: &mut String,
) -> std::io::Result<Option<()>> {
    read_line_max(r, buf, REQUEST_BYTES_MAX).await
}

async fn read_line_max(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    buf: &mut String,
    max: usize,
) -> std::io::Result<Option<()>> {
    buf.clear();
    let mut limited = (&mut *r).take(max as u64 + 1);
    let n = limited.read_line(buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if n > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("line over {max} bytes")));
    }
    Ok(Some(()))
}

/// Writes one answer line.
pub async fn write_line<T: Serialize>(w: &mut tokio::net::unix::OwnedWriteHalf, v: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

/// Serves a JSON-lines API on `listener` until `shutdown` is cancelled: every line is parsed as
/// JSON (a line that is not JSON is passed as `null`, for the handler to refuse) and answered by
/// `handle`. An op named in `crew_ops` (the request's `"op"`) is answered
/// `{"error":"forbidden"}` unless the peer may use crew ops ([`permits`]). Each connection is a
/// task of `shutdown` holding its slot (the runner's shape: accept, take a slot, spawn on the
/// tracker); it ends between requests once the daemon stops, so the drain does not wait for an
/// idle client.
pub async fn serve<H, F>(listener: LocalListener, crew_ops: &'static [&'static str], shutdown: Shutdown, handle: H)
where
    H: Fn(serde_json::Value) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = serde_json::Value> + Send,
{
    // Connection tasks share the policy, not the listener: once `cancel` ends this loop the
    // listener closes even while connections finish.
    let path: Arc<Path> = Arc::from(listener.path());
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok(Admitted { stream, peer, _slot }) = conn else { continue };
        let (handle, policy, path, stop) = (handle.clone(), listener.policy.clone(), path.clone(), shutdown.clone());
        shutdown.spawn(async move {
            let _slot = _slot;
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut line = String::new();
            loop {
                let got = tokio::select! {
                    _ = stop.cancelled() => return,
                    got = read_line(&mut r, &mut line) => got,
                };
                let Ok(Some(())) = got else { return };
                let req = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
                let op = req.get("op").and_then(serde_json::Value::as_str).unwrap_or("");
                let answer = if crew_ops.contains(&op) && !permits(&policy.access, &policy.trusted, peer, OpKind::Crew)
                {
                    tracing::warn!(socket = %path.display(), uid = peer.uid, gid = peer.gid, op, "local peer refused a crew op");
                    forbidden(peer, Some(op))
                } else {
                    handle(req).await
                };
                if write_line(&mut w, &answer).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// A request line (as [`serve`] passes it) read into an API's request enum (serde, tagged by
/// `"op"`), or the answer to give instead: `{"error":"bad_request","detail":...}` naming what
/// was wrong (an unknown op, a missing or mistyped field, a line that is not JSON) followed by
/// `ops`, the API's list of ops.
pub fn parse_request<R: DeserializeOwned>(req: serde_json::Value, ops: &str) -> Result<R, serde_json::Value> {
    if req.is_null() {
        return Err(json!({ "error": "bad_request", "detail": format!("not a JSON request; {ops}") }));
    }
    serde_json::from_value(req).map_err(|e| json!({ "error": "bad_request", "detail": format!("{e}; {ops}") }))
}

/// Whether a failed [`request`] means no daemon is running there (no socket, or nobody
/// listening): only then may a command read the daemon's store itself. Any other failure (a
/// daemon that is there but did not answer) must not: opening the store would hold its lock
/// and could keep the daemon from restarting (found by review).
pub fn daemon_absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused)
}

/// Client side: sends one request and reads one answer.
pub async fn request<Q: Serialize, A: DeserializeOwned>(path: &Path, req: &Q) -> std::io::Result<A> {
    let s = UnixStream::connect(path).await?;
    let (r, mut w) = s.into_split();
    write_line(&mut w, req).await?;
    let mut r = BufReader::new(r);
    let mut buf = String::new();
    match read_line_max(&mut r, &mut buf, ANSWER_BYTES_MAX).await? {
        None => {
            Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "daemon closed the socket without answering"))
        }
        Some(()) => serde_json::from_str(&buf).map_err(std::io::Error::other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: u32 = 1000;
    const SALE_APP: Peer = Peer { uid: 2001, gid: 3001 };
    const CREW: Peer = Peer { uid: 2002, gid: 3002 };
    const STRANGER: Peer = Peer { uid: 2003, gid: 3003 };

    #[test]
    fn who_may_use_which_op() {
        let trusted = [ROOT_UID, OWNER];
        let closed = Access::default();
        for kind in [OpKind::Use, OpKind::Crew] {
            assert!(permits(&closed, &trusted, Peer { uid: ROOT_UID, gid: 5 }, kind), "root");
            assert!(permits(&closed, &trusted, Peer { uid: OWNER, gid: 5 }, kind), "the daemon's own user");
            for p in [SALE_APP, CREW, STRANGER] {
                assert!(!permits(&closed, &trusted, p, kind), "{p:?} {kind:?} with empty lists");
            }
        }
        let by_uid = Access { allowed_uids: vec![SALE_APP.uid], crew_uids: vec![CREW.uid], ..Access::default() };
        let by_gid = Access { allowed_gids: vec![SALE_APP.gid], crew_gids: vec![CREW.gid], ..Access::default() };
        for a in [by_uid, by_gid] {
            assert!(permits(&a, &trusted, SALE_APP, OpKind::Use));
            assert!(!permits(&a, &trusted, SALE_APP, OpKind::Crew), "the sale app may not change the link");
            assert!(permits(&a, &trusted, CREW, OpKind::Use), "crew may do what the sale app may");
            assert!(permits(&a, &trusted, CREW, OpKind::Crew));
            assert!(!permits(&a, &trusted, STRANGER, OpKind::Use));
            assert!(!permits(&a, &trusted, STRANGER, OpKind::Crew));
        }
        // A uid listed as a gid (or the reverse) is not a match.
        let crossed = Access { allowed_gids: vec![SALE_APP.uid], ..Access::default() };
        assert!(!permits(&crossed, &trusted, SALE_APP, OpKind::Use));
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn the_socket_has_its_mode_from_the_start_and_no_bind_directory_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/a.sock");
        let l = bind(&path, Access::default()).await.expect("bind");
        assert!(std::fs::symlink_metadata(&path).expect("stat").file_type().is_socket());
        assert_eq!(mode(&path), SOCKET_MODE_OWNER, "owner only when nobody else is allowed");
        drop(l);
        let open = Access { allowed_gids: vec![3001], ..Access::default() };
        let _l = bind(&path, open).await.expect("bind over the stale socket");
        assert_eq!(mode(&path), SOCKET_MODE_GROUP, "owner and group when others are allowed");
        let left: Vec<_> =
            std::fs::read_dir(dir.path().join("run")).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("a.sock")], "only the socket is left");
        assert!(UnixStream::connect(&path).await.is_ok(), "the renamed socket accepts connections");
    }

    #[tokio::test]
    async fn what_is_not_a_socket_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ledger.csv");
        std::fs::write(&file, "precious").expect("write");
        let e = bind(&file, Access::default()).await.expect_err("a regular file is refused");
        assert!(matches!(e, LocalError::NotASocket { .. }), "{e}");
        assert!(e.to_string().contains(&file.display().to_string()) && e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).expect("still there"), "precious");
        let sub = dir.path().join("adir");
        std::fs::create_dir(&sub).expect("mkdir");
        assert!(matches!(bind(&sub, Access::default()).await, Err(LocalError::NotASocket { .. })));
        assert!(sub.is_dir());
        // A live socket is in use; once its daemon is gone, the stale socket is replaced.
        let live_path = dir.path().join("live.sock");
        let live = std::os::unix::net::UnixListener::bind(&live_path).expect("bind");
        assert!(matches!(bind(&live_path, Access::default()).await, Err(LocalError::InUse { .. })));
        drop(live);
        assert!(bind(&live_path, Access::default()).await.is_ok());
    }

    async fn ask(s: &mut BufReader<UnixStream>, req: serde_json::Value) -> serde_json::Value {
        let mut line = serde_json::to_vec(&req).expect("json");
        line.push(b'\n');
        s.get_mut().write_all(&line).await.expect("write");
        let mut answer = String::new();
        s.read_line(&mut answer).await.expect("read");
        serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null)
    }

    async fn connect(path: &Path) -> BufReader<UnixStream> {
        BufReader::new(UnixStream::connect(path).await.expect("connect"))
    }

    fn serve_ok(l: LocalListener) -> tokio_util::sync::CancellationToken {
        let cancel = tokio_util::sync::CancellationToken::new();
        let shutdown = Shutdown::new(cancel.clone());
        tokio::spawn(serve(l, &["link"], shutdown, |req| async move { json!({ "ok": req["op"] }) }));
        cancel
    }

    #[tokio::test]
    async fn connections_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.sock");
        let cancel = serve_ok(bind(&path, Access::default()).await.expect("bind"));
        let mut held = Vec::new();
        for _ in 0..LOCAL_CONNECTIONS_MAX {
            let mut c = connect(&path).await;
            assert_eq!(ask(&mut c, json!({"op": "status"})).await, json!({"ok": "status"}));
            held.push(c);
        }
        let mut over = connect(&path).await;
        let mut answer = String::new();
        over.read_line(&mut answer).await.expect("read");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&answer).expect("json")["error"], "busy", "{answer}");
        assert_eq!(over.read_line(&mut answer).await.expect("read"), 0, "closed after the answer");
        // A slot freed is a slot for the next client.
        drop(held.pop());
        let mut ok = false;
        for _ in 0..50 {
            let mut c = connect(&path).await;
            if ask(&mut c, json!({"op": "status"})).await == json!({"ok": "status"}) {
                ok = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(ok, "the freed slot was never reused");
        cancel.cancel();
    }

    /// The admin loop and its connections are tasks of the daemon's shutdown: the drain waits
    /// for them, and an idle client does not hold it for the grace.
    #[tokio::test]
    async fn connections_are_drained_on_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.sock");
        let shutdown = Shutdown::new(tokio_util::sync::CancellationToken::new());
        let l = bind(&path, Access::default()).await.expect("bind");
        shutdown.spawn(serve(l, &[], shutdown.clone(), |req| async move { json!({ "ok": req["op"] }) }));
        let mut idle = connect(&path).await;
        assert_eq!(ask(&mut idle, json!({"op": "status"})).await, json!({"ok": "status"}));
        assert_eq!(shutdown.tasks_running(), 2, "the loop and the connection are tracked");
        let start = std::time::Instant::now();
        assert_eq!(shutdown.drain().await, crate::runner::Drained::AllDone);
        assert!(start.elapsed() < crate::SHUTDOWN_GRACE / 2, "an idle client held the drain");
        let mut rest = String::new();
        assert_eq!(idle.read_line(&mut rest).await.expect("read"), 0, "the idle connection was closed");
    }

    /// Refusals through the real socket. The tests run as the socket's owner (often root), who
    /// may do everything, so the listener here trusts nobody: the peer is then an ordinary user.
    #[tokio::test]
    async fn refused_peers_and_ops_get_forbidden() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sock");
        let untrusting = |mut l: LocalListener| {
            l.policy = Arc::new(Policy { access: l.policy.access.clone(), trusted: [u32::MAX; 2] });
            l
        };
        let me = || std::fs::metadata(&path).expect("stat").uid();

        let cancel = serve_ok(untrusting(bind(&path, Access::default()).await.expect("bind")));
        let mut c = connect(&path).await;
        let mut answer = String::new();
        c.read_line(&mut answer).await.expect("read");
        let v: serde_json::Value = serde_json::from_str(&answer).expect("json");
        assert_eq!(v["error"], "forbidden", "{v}");
        assert_eq!(c.read_line(&mut answer).await.expect("read"), 0, "closed");
        cancel.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;

        let _ = std::fs::remove_file(&path);
        let l = bind(&path, Access::default()).await.expect("bind");
        let sale_app = Access { allowed_uids: vec![me()], ..Access::default() };
        let l = LocalListener { policy: Arc::new(Policy { access: sale_app, trusted: [u32::MAX; 2] }), ..l };
        let cancel = serve_ok(l);
        let mut c = connect(&path).await;
        assert_eq!(ask(&mut c, json!({"op": "status"})).await, json!({"ok": "status"}));
        let v = ask(&mut c, json!({"op": "link", "mode": "up"})).await;
        assert_eq!(v["error"], "forbidden", "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| d.contains("crew op link")), "{v}");
        assert_eq!(ask(&mut c, json!({"op": "status"})).await, json!({"ok": "status"}), "the connection goes on");
        cancel.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;

        let _ = std::fs::remove_file(&path);
        let l = bind(&path, Access::default()).await.expect("bind");
        let crew = Access { crew_uids: vec![me()], ..Access::default() };
        let l = LocalListener { policy: Arc::new(Policy { access: crew, trusted: [u32::MAX; 2] }), ..l };
        let cancel = serve_ok(l);
        let mut c = connect(&path).await;
        assert_eq!(ask(&mut c, json!({"op": "link", "mode": "up"})).await, json!({"ok": "link"}));
        cancel.cancel();
    }
}
