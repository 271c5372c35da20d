//! Prometheus metrics: the registry every daemon builds once, the metrics all three share (store
//! and certificate), and the `GET /metrics` server on `metrics_listen`.
//!
//! Metrics never slow the payment path: counters and histograms are atomic updates made where
//! the event happens; gauges that describe state are set at scrape time, from a snapshot the
//! daemon already keeps, which the daemon asks for with a bounded wait ([`SNAPSHOT_WAIT`]).
//! The text is encoded by the `prometheus` crate in the Prometheus text format 0.0.4 (what
//! `promtool check metrics` reads), never written by hand. No label ever holds a payment id, a
//! card number or anything else a peer chooses: label values come from closed sets in our code.
//!
//! The HTTP side is a small, strict HTTP/1.1 responder: one request per connection, a request
//! head of at most [`REQUEST_HEAD_BYTES_MAX`] read and answered within [`REQUEST_TIME_MAX`],
//! at most [`METRICS_CONNECTIONS_MAX`] connections at once (more are closed at once), `GET
//! /metrics` answered 200 and anything else 404 or 405. It runs in its own tasks; a slow or
//! hostile scraper holds one connection slot until its deadline, nothing else.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use prometheus;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::runner::{Shutdown, Slots};
use crate::ConfigReader;

/// The `Content-Type` of what [`Metrics::render`] encodes (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Most scrape connections served at once. Prometheus holds one; more are closed at once.
pub const METRICS_CONNECTIONS_MAX: usize = 4;
/// Longest request head read (request line and headers). A scraper's is a few hundred bytes.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Longest a connection may take, from accept to the last byte of the answer.
pub const REQUEST_TIME_MAX: Duration = Duration::from_secs(5);
/// Longest a scrape waits for the daemon's snapshot (the actor's status); past it the state
/// gauges keep their last values and the scrape is answered anyway.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(1);
/// Most files counted for a store's size on disk (sled keeps a handful).
const STORE_FILES_MAX: usize = 10_000;

/// Buckets of latencies on the payment path, in seconds (0.5 ms to 5 s).
pub const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Buckets of whole-batch durations, in seconds (10 ms to 5 min).
pub const BATCH_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Buckets of group-commit sizes, in writes.
pub const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0];

/// Why the metrics server could not start: the address is in use or not available (exit 69, so
/// that a supervisor retries: found by review, a busy monitoring port stopped a payment daemon for
/// good with 64).
#[derive(Debug, thiserror::Error)]
#[error("metrics_listen {addr}: cannot listen: {source}")]
pub struct MetricsBindError {
    /// The configured address.
    pub addr: SocketAddr,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

/// Reads `metrics_listen`: absent, no metrics server; present, a `host:port` to serve
/// `GET /metrics` on (an error when it does not parse).
pub fn read_listen(r: &mut ConfigReader) -> Option<SocketAddr> {
    r.optional_socket_addr("metrics_listen")
}

/// One daemon's registry: every metric is registered here once, at start.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    registry: Registry,
}

/// Why registering cannot fail: names are literals checked by the tests, each registered once.
const REGISTERED: &str = "metric names are valid literals, each registered once per registry";

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter (`name` ends in `_total`).
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        let c = IntCounter::with_opts(Opts::new(name, help)).expect(REGISTERED);
        self.registry.register(Box::new(c.clone())).expect(REGISTERED);
        c
    }

    /// A family of counters by `labels` (closed sets of values only).
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect(REGISTERED);
        self.registry.register(Box::new(c.clone())).expect(REGISTERED);
        c
    }

    /// A gauge.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let g = IntGauge::with_opts(Opts::new(name, help)).expect(REGISTERED);
        self.registry.register(Box::new(g.clone())).expect(REGISTERED);
        g
    }

    /// A family of gauges by `labels` (closed sets of values only).
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect(REGISTERED);
        self.registry.register(Box::new(g.clone())).expect(REGISTERED);
        g
    }

    /// A histogram with `buckets` (upper bounds, increasing).
    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect(REGISTERED);
        self.registry.register(Box::new(h.clone())).expect(REGISTERED);
        h
    }

    /// Every metric, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The metrics every daemon has: its store (size, group commits) and its own certificate.
#[derive(Debug, Clone)]
pub struct Common {
    store_size: IntGauge,
    certificate_expiry: IntGauge,
    commit_writes: Histogram,
    commit_seconds: Histogram,
}

impl Common {
    /// Registers them in `m`.
    pub fn new(m: &Metrics) -> Self {
        Self {
            store_size: m.gauge("inflight_store_size_bytes", "Bytes the daemon's store takes on disk."),
            certificate_expiry: m.gauge(
                "inflight_certificate_expiry_seconds",
                "Seconds until this daemon's own TLS certificate expires (negative once expired).",
            ),
            commit_writes: m.histogram(
                "inflight_store_group_commit_writes",
                "Writes made durable by one group commit (one flush and fsync).",
                GROUP_BUCKETS,
            ),
            commit_seconds: m.histogram(
                "inflight_store_fsync_duration_seconds",
                "Duration of one group commit's flush and fsync of the store's data file.",
                LATENCY_BUCKETS,
            ),
        }
    }

    /// Records one group commit (called by the store's flusher thread: two atomic updates).
    pub fn group_committed(&self, writes: u64, took: Duration) {
        self.commit_writes.observe(writes as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// Sets the gauges at scrape time: the store's size under `data_dir`, and the seconds until
    /// the certificate's `not_after` (left as it was when the certificate cannot be read).
    pub fn refresh(&self, data_dir: &Path, cert_not_after_unix_s: Option<i64>) {
        self.store_size.set(i64::try_from(dir_bytes(data_dir)).unwrap_or(i64::MAX));
        if let Some(t) = cert_not_after_unix_s {
            self.certificate_expiry.set(t - (crate::unix_ms_now() / 1000) as i64);
        }
    }
}

/// Bytes of the files under `dir` (recursively, at most [`STORE_FILES_MAX`] entries); what
/// cannot be read counts nothing.
pub fn dir_bytes(dir: &Path) -> u64 {
    let (mut total, mut seen, mut todo) = (0u64, 0usize, vec![dir.to_owned()]);
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            seen += 1;
            if seen > STORE_FILES_MAX {
                return total;
            }
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Binds `addr` for [`serve`]; failing is [`MetricsBindError`] (exit 69 for the caller).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsBindError> {
    TcpListener::bind(addr).await.map_err(|source| MetricsBindError { addr, source })
}

/// Serves `GET /metrics` on `listener` until `shutdown`, answering with what `render` makes.
/// Spawn it with [`Shutdown::spawn`]; every connection is a task of `shutdown` too.
pub async fn serve<F, Fut>(listener: TcpListener, shutdown: Shutdown, render: F)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = String> + Send,
{
    let slots = Slots::new(METRICS_CONNECTIONS_MAX);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.try_take() else {
            // Closed at once: a scraper retries at its next interval.
            continue;
        };
        let (render, stop) = (render.clone(), shutdown.clone());
        shutdown.spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::timeout(REQUEST_TIME_MAX, answer(stream, render)) => {}
            }
        });
    }
}

/// Reads one request head and answers it; the connection is then closed.
async fn answer<F, Fut>(mut stream: TcpStream, render: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let route = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if let Some(route) = route(&head) {
            break route;
        }
    };
    let response = match route {
        Route::Metrics => response(200, "OK", CONTENT_TYPE, &render().await),
        other => {
            let (code, reason) = other.status();
            response(code, reason, "text/plain; charset=utf-8", &format!("{reason}\n"))
        }
    };
    if stream.write_all(&response).await.is_ok() {
        let _ = stream.shutdown().await;
    }
}

/// An HTTP/1.1 response that closes the connection.
fn response(code: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    let allow = if code == 405 { "Allow: GET\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// What a request head is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`: 200 and the metrics.
    Metrics,
    /// Not a well-formed HTTP/1.x request head: 400.
    BadRequest,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
    /// No end of the head within [`REQUEST_HEAD_BYTES_MAX`]: 431.
    HeadTooLarge,
    /// Not HTTP/1.0 or HTTP/1.1: 505.
    VersionNotSupported,
}

impl Route {
    /// The status code and reason phrase.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Route::Metrics => (200, "OK"),
            Route::BadRequest => (400, "Bad Request"),
            Route::NotFound => (404, "Not Found"),
            Route::MethodNotAllowed => (405, "Method Not Allowed"),
            Route::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Route::VersionNotSupported => (505, "HTTP Version Not Supported"),
        }
    }
}

/// Routes the request head read so far: `None` while it is incomplete (no blank line yet) and
/// under [`REQUEST_HEAD_BYTES_MAX`]. Pure: the whole HTTP parsing of the server.
pub fn route(buf: &[u8]) -> Option<Route> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (buf.len() >= REQUEST_HEAD_BYTES_MAX).then_some(Route::HeadTooLarge);
    };
    if end + 4 > REQUEST_HEAD_BYTES_MAX {
        return Some(Route::HeadTooLarge);
    }
    let Ok(head) = std::str::from_utf8(&buf[..end]) else { return Some(Route::BadRequest) };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    // Every header line is `name: value` with a token name.
    let headers_ok = lines.all(|l| {
        l.split_once(':').is_some_and(|(name, _)| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        })
    });
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else { return Some(Route::BadRequest) };
    if !headers_ok || method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !target.starts_with('/') {
        return Some(Route::BadRequest);
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => return Some(Route::VersionNotSupported),
        _ => return Some(Route::BadRequest),
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Some(match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(r("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"), Some(Route::Metrics));
        assert_eq!(r("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Some(Route::Metrics));
        assert_eq!(r("GET /metrics HTTP/1.1\r\nHost: x\r\n"), None, "head not finished");
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Some(Route::NotFound));
        assert_eq!(r("GET /metrics/x HTTP/1.1\r\n\r\n"), Some(Route::NotFound));
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Some(Route::MethodNotAllowed));
        assert_eq!(r("GET /metrics HTTP/2.0\r\n\r\n"), Some(Route::VersionNotSupported));
        for bad in [
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "get /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /metrics FTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nbad name: x\r\n\r\n",
            "\r\n\r\n",
        ] {
            assert_eq!(r(bad), Some(Route::BadRequest), "{bad:?}");
        }
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nX: \xff\r\n\r\n"), Some(Route::BadRequest));
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(REQUEST_HEAD_BYTES_MAX));
        assert_eq!(r(&long), Some(Route::HeadTooLarge));
        assert_eq!(r(&format!("{long}\r\n\r\n")), Some(Route::HeadTooLarge));
        assert_eq!(Route::MethodNotAllowed.status(), (405, "Method Not Allowed"));
    }

    #[test]
    fn metrics_render_in_the_text_format_with_help_and_type() {
        let m = Metrics::new();
        let c = m.counter_vec("inflight_test_things_total", "Things.", &["kind"]);
        c.with_label_values(&["a"]).inc_by(3);
        let common = Common::new(&m);
        common.group_committed(5, Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains("# HELP inflight_test_things_total Things.\n"), "{text}");
        assert!(text.contains("# TYPE inflight_test_things_total counter\n"), "{text}");
        assert!(text.contains("inflight_test_things_total{kind=\"a\"} 3\n"), "{text}");
        assert!(text.contains("inflight_store_group_commit_writes_bucket{le=\"8\"} 1\n"), "{text}");
        assert!(text.contains("inflight_store_fsync_duration_seconds_count 1\n"), "{text}");
    }

    #[test]
    fn store_size_counts_files_below_the_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), [0u8; 100]).expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/b"), [0u8; 23]).expect("write");
        assert_eq!(dir_bytes(dir.path()), 123);
        assert_eq!(dir_bytes(&dir.path().join("absent")), 0);
    }

    #[tokio::test]
    async fn the_server_answers_scrapes_and_refuses_the_rest() {
        let listener = bind("127.0.0.1:0".parse().expect("literal")).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new(tokio_util::sync::CancellationToken::new());
        shutdown.spawn(serve(listener, shutdown.clone(), || async { "up 1\n".to_owned() }));
        let get = |req: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(req.as_bytes()).await.expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")), "{ok}");
        assert!(ok.contains("Content-Length: 5\r\n") && ok.ends_with("\r\n\r\nup 1\n"), "{ok}");
        let nope = get("GET /admin HTTP/1.1\r\n\r\n").await;
        assert!(nope.starts_with("HTTP/1.1 404 Not Found\r\n"), "{nope}");
        let post = get("DELETE /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET\r\n"), "{post}");
        assert!(matches!(
            bind(addr).await,
            Err(MetricsBindError { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse
        ));
        shutdown.drain().await;
    }
}
