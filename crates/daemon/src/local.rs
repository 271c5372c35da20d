//! Local sockets: JSON lines over a Unix domain socket, one request line, one answer line.
//!
//! Local APIs (capture, status, admin) never listen on network ports: a Unix socket is reachable
//! only on this machine and guarded by file permissions (0660 here: owner and group).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line accepted, in bytes. A capture request is a few hundred.
pub const REQUEST_BYTES_MAX: usize = 16 * 1024;
/// Longest answer line a client accepts (a whole ledger can be one answer).
pub const ANSWER_BYTES_MAX: usize = 512 << 20;

/// Binds a Unix socket at `path` with mode 0660, replacing a stale socket file left by a
/// previous run (but refusing if a live daemon answers on it).
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let l = UnixListener::bind(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    Ok(l)
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

/// Serves a JSON-lines API on `listener` until `cancel`: every line is parsed as JSON (a line
/// that is not JSON is passed as `null`, for the handler to refuse) and answered by `handle`.
pub async fn serve<H, F>(listener: UnixListener, cancel: tokio_util::sync::CancellationToken, handle: H)
where
    H: Fn(serde_json::Value) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = serde_json::Value> + Send,
{
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let handle = handle.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut line = String::new();
            while let Ok(Some(())) = read_line(&mut r, &mut line).await {
                let req = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
                if write_line(&mut w, &handle(req).await).await.is_err() {
                    return;
                }
            }
        });
    }
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
