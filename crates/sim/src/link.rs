//! A userspace link emulator: a UDP relay between clients and one upstream server that can
//! delay (with jitter), drop, duplicate and black-hole datagrams, seeded and reproducible in its
//! decisions. `tc netem` is not available on our machines; this stands in for the radio link
//! between aircraft and ground, or for the cabin network between terminals and the master.
//!
//! Each client gets its own upstream socket (as a NAT would), so the server sees one peer per
//! client and replies reach the right one.

use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::rng::Rng;

/// Most datagrams waiting in the delay line of one direction; beyond it, datagrams are dropped
/// (as a real link's queue would).
pub const DELAY_LINE_MAX: usize = 65_536;
/// Most clients one relay serves.
pub const CLIENTS_MAX: usize = 4096;

/// What the link does to datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairments {
    /// One-way delay.
    pub delay: Duration,
    /// Extra random delay, uniform in 0..jitter.
    pub jitter: Duration,
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
}

impl Default for Impairments {
    fn default() -> Self {
        Self { delay: Duration::ZERO, jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0 }
    }
}

/// Counters of what crossed the link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Bytes from clients to the server, as sent by clients (before loss).
    pub up_bytes: AtomicU64,
    /// Bytes from the server to clients.
    pub down_bytes: AtomicU64,
    /// Datagrams dropped (loss, black-hole, full delay line).
    pub dropped: AtomicU64,
    /// Client → server paths created (one per client, one more per client after each rebind).
    pub paths: AtomicU64,
}

/// A running relay.
#[derive(Debug, Clone)]
pub struct LinkEmulator {
    /// Where clients send.
    pub addr: SocketAddr,
    blackhole: Arc<AtomicBool>,
    /// Black-holes only server → client datagrams (requests arrive, answers are lost).
    down_blackhole: Arc<AtomicBool>,
    /// Bumped to give every client a new source port towards the server (NAT rebinding).
    generation: Arc<AtomicU64>,
    impairments: Arc<Mutex<Impairments>>,
    /// What crossed it.
    pub stats: Arc<LinkStats>,
}

/// Each client's upstream socket, with the rebind generation it was made in.
type Paths = HashMap<SocketAddr, (u64, Arc<UdpSocket>)>;

struct Delayed {
    at: Instant,
    seq: u64,
    to: SocketAddr,
    via: Arc<UdpSocket>,
    bytes: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Earliest first in a max-heap.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

impl LinkEmulator {
    /// Starts a relay on loopback to `upstream`, until `cancel`.
    pub async fn start(
        upstream: SocketAddr,
        impairments: Impairments,
        seed: u64,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let link = Self {
            addr,
            blackhole: Arc::new(AtomicBool::new(false)),
            down_blackhole: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(AtomicU64::new(0)),
            impairments: Arc::new(Mutex::new(impairments)),
            stats: Arc::new(LinkStats::default()),
        };
        let (line_tx, line_rx) = mpsc::channel::<Delayed>(DELAY_LINE_MAX);
        tokio::spawn(delay_line(line_rx, cancel.clone()));
        tokio::spawn(link.clone().front_loop(front, upstream, line_tx, Rng::new(seed), cancel));
        Ok(link)
    }

    /// Black-holes everything (both directions) while `on`.
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::Relaxed);
    }

    /// Drops only what the server sends back while `on`: the server acts, its answers are lost.
    pub fn set_down_blackhole(&self, on: bool) {
        self.down_blackhole.store(on, Ordering::Relaxed);
    }

    /// Every client's traffic reaches the server from a new source port from now on, as when a
    /// NAT rebinds; QUIC must migrate its connections.
    pub fn rebind(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the link is black-holed.
    pub fn is_blackholed(&self) -> bool {
        self.blackhole.load(Ordering::Relaxed)
    }

    /// Changes the impairments from now on.
    pub fn set_impairments(&self, i: Impairments) {
        *self.impairments.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = i;
    }

    fn impairments(&self) -> Impairments {
        *self.impairments.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides the fate of one datagram: the delivery times (none: dropped; two: duplicated).
    fn schedule(&self, rng: &mut Rng, now: Instant) -> Vec<Instant> {
        if self.is_blackholed() {
            return vec![];
        }
        let i = self.impairments();
        if i.loss > 0.0 && rng.chance(i.loss) {
            return vec![];
        }
        let jitter = |rng: &mut Rng| {
            if i.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(rng.below(i.jitter.as_nanos() as u64))
            }
        };
        let mut out = vec![now + i.delay + jitter(rng)];
        if i.duplicate > 0.0 && rng.chance(i.duplicate) {
            out.push(now + i.delay + jitter(rng));
        }
        out
    }

    async fn front_loop(
        self,
        front: Arc<UdpSocket>,
        upstream: SocketAddr,
        line: mpsc::Sender<Delayed>,
        mut rng: Rng,
        cancel: CancellationToken,
    ) {
        let clients: Mutex<Paths> = Mutex::default();
        let mut buf = vec![0u8; 65_536];
        let mut seq = 0u64;
        loop {
            let (n, from) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = front.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
            };
            self.stats.up_bytes.fetch_add(n as u64, Ordering::Relaxed);
            let generation = self.generation.load(Ordering::Relaxed);
            let back = {
                let mut map = clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match map.get(&from) {
                    Some((g, s)) if *g == generation => s.clone(),
                    None if map.len() >= CLIENTS_MAX => continue,
                    _ => {
                        let Ok(std_sock) = std::net::UdpSocket::bind("127.0.0.1:0") else { continue };
                        let _ = std_sock.set_nonblocking(true);
                        let Ok(sock) = UdpSocket::from_std(std_sock) else { continue };
                        let sock = Arc::new(sock);
                        map.insert(from, (generation, sock.clone()));
                        self.stats.paths.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(self.clone().back_loop(
                            sock.clone(),
                            front.clone(),
                            from,
                            line.clone(),
                            rng.fork(seq),
                            cancel.clone(),
                        ));
                        sock
                    }
                }
            };
            for at in self.schedule(&mut rng, Instant::now()) {
                seq += 1;
                if line
                    .try_send(Delayed { at, seq, to: upstream, via: back.clone(), bytes: buf[..n].to_vec() })
                    .is_err()
                {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            if self.is_blackholed() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Replies from the server to one client.
    async fn back_loop(
        self,
        back: Arc<UdpSocket>,
        front: Arc<UdpSocket>,
        client: SocketAddr,
        line: mpsc::Sender<Delayed>,
        mut rng: Rng,
        cancel: CancellationToken,
    ) {
        let mut buf = vec![0u8; 65_536];
        let mut seq = 1u64 << 62;
        loop {
            let n = tokio::select! {
                _ = cancel.cancelled() => return,
                r = back.recv(&mut buf) => match r { Ok(n) => n, Err(_) => continue },
            };
            self.stats.down_bytes.fetch_add(n as u64, Ordering::Relaxed);
            if self.down_blackhole.load(Ordering::Relaxed) {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            for at in self.schedule(&mut rng, Instant::now()) {
                seq += 1;
                if line.try_send(Delayed { at, seq, to: client, via: front.clone(), bytes: buf[..n].to_vec() }).is_err()
                {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Sends each datagram at its time.
async fn delay_line(mut rx: mpsc::Receiver<Delayed>, cancel: CancellationToken) {
    let mut heap: BinaryHeap<Delayed> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|d| d.at);
        tokio::select! {
            _ = cancel.cancelled() => return,
            d = rx.recv() => match d {
                Some(d) => heap.push(d),
                None => return,
            },
            _ = async { match next { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                let now = Instant::now();
                while heap.peek().is_some_and(|d| d.at <= now) {
                    if let Some(d) = heap.pop() {
                        let _ = d.via.send_to(&d.bytes, d.to).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = s.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn relays_delays_and_blackholes() {
        let cancel = CancellationToken::new();
        let server = echo_server().await;
        let link = LinkEmulator::start(
            server,
            Impairments { delay: Duration::from_millis(30), ..Default::default() },
            1,
            cancel.clone(),
        )
        .await
        .expect("relay");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let t = Instant::now();
        client.send_to(b"ping", link.addr).await.expect("send");
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .expect("echo in time")
            .expect("recv");
        assert_eq!(&buf[..n], b"ping");
        assert!(t.elapsed() >= Duration::from_millis(60), "delayed both ways: {:?}", t.elapsed());
        link.set_blackhole(true);
        client.send_to(b"lost", link.addr).await.expect("send");
        assert!(tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await.is_err(), "black-holed");
        link.set_blackhole(false);
        client.send_to(b"back", link.addr).await.expect("send");
        let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .expect("echo in time")
            .expect("recv");
        assert_eq!(&buf[..n], b"back");
        cancel.cancel();
    }

    #[tokio::test]
    async fn loss_and_duplication_follow_their_rates() {
        let cancel = CancellationToken::new();
        let server = echo_server().await;
        let link = LinkEmulator::start(server, Impairments { loss: 0.5, ..Default::default() }, 42, cancel.clone())
            .await
            .expect("relay");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        for _ in 0..400 {
            client.send_to(b"x", link.addr).await.expect("send");
        }
        let mut got = 0;
        let mut buf = [0u8; 16];
        while tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await.is_ok() {
            got += 1;
        }
        // Each echo crosses the link twice: about a quarter comes back.
        assert!((50..150).contains(&got), "{got} of 400");
        cancel.cancel();
    }
}
