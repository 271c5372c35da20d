//! quinn endpoints with our socket settings and timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    ClientConfig, Connection, Endpoint, EndpointConfig, IdleTimeout, ServerConfig, TokioRuntime, TransportConfig,
    VarInt,
};

use crate::NetError;

/// Send and receive buffer of every endpoint's UDP socket. The kernel default drops packets
/// when hundreds of terminals connect at once (seen: 1-7 s to connect 500); 4 MiB does not.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Most bidirectional streams a peer may open at once on one connection. Both links (terminal
/// and ground) use exactly one per connection; allowing more only let one peer make the server
/// buffer more (a stolen key once took 380 KiB per connection this way).
pub const BIDI_STREAMS_MAX: u32 = 1;

/// Connection attempts quinn holds for the accept loop at once (which answers each at once).
pub const INCOMING_MAX: usize = 4_096;

/// Bytes quinn buffers for one connection attempt before the accept loop answers it: a
/// handshake's first flight, never 0-RTT data.
pub const INCOMING_BUFFER_BYTES: u64 = 16 << 10;

/// Timers of a link, set explicitly rather than inherited from library defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTimers {
    /// Keep-alive ping interval: keeps NAT-less cabin links and idle connections warm.
    pub keep_alive: Duration,
    /// A connection silent for this long is dead.
    pub idle: Duration,
    /// Give up a connection attempt after this long; on a server, the deadline of each
    /// incoming handshake.
    pub connect: Duration,
    /// Flow-control window per connection, bytes (`None`: quinn's defaults, sized for bulk
    /// transfers). The terminal link carries small frames with a bounded number in flight, so
    /// a small window bounds what a thousand connections can make the master buffer.
    pub window_bytes: Option<u32>,
}

/// Flow-control window of the terminal link. Frames are small and a terminal has at most its
/// forward window of payments in flight, so 256 KiB keeps the link busy while bounding what a
/// cabin of connections can make the master buffer.
pub const TERMINAL_WINDOW_BYTES: u32 = 256 << 10;

impl Default for LinkTimers {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(2),
            idle: Duration::from_secs(10),
            connect: Duration::from_secs(3),
            window_bytes: None,
        }
    }
}

fn transport(t: LinkTimers) -> Result<Arc<TransportConfig>, NetError> {
    let mut tc = TransportConfig::default();
    tc.keep_alive_interval(Some(t.keep_alive));
    tc.max_idle_timeout(Some(IdleTimeout::try_from(t.idle).map_err(|e| NetError::Tls(format!("idle timeout: {e}")))?));
    tc.max_concurrent_bidi_streams(VarInt::from_u32(BIDI_STREAMS_MAX));
    tc.max_concurrent_uni_streams(VarInt::from_u32(0));
    if let Some(w) = t.window_bytes {
        tc.receive_window(VarInt::from_u32(w));
        tc.stream_receive_window(VarInt::from_u32(w));
        tc.send_window(u64::from(w));
        // The terminal link sends no unreliable datagrams: no buffer for them.
        tc.datagram_receive_buffer_size(None);
    }
    Ok(Arc::new(tc))
}

fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, NetError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |e: std::io::Error| NetError::Socket { addr, detail: e.to_string() };
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max without failing.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    sock.bind(&addr.into()).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    Ok(sock.into())
}

/// A server endpoint bound to `addr`.
pub fn server(addr: SocketAddr, tls: rustls::ServerConfig, timers: LinkTimers) -> Result<Endpoint, NetError> {
    server_with(addr, server_config(tls, timers)?)
}

/// A server endpoint bound to `addr` with a ready [`server_config`].
pub fn server_with(addr: SocketAddr, cfg: ServerConfig) -> Result<Endpoint, NetError> {
    Endpoint::new(EndpointConfig::default(), Some(cfg), udp_socket(addr)?, Arc::new(TokioRuntime))
        .map_err(|e| NetError::Socket { addr, detail: e.to_string() })
}

/// The QUIC server configuration of [`server`]; give a new one to `Endpoint::set_server_config`
/// to change certificates or revocation lists without a restart (new handshakes use it).
pub fn server_config(tls: rustls::ServerConfig, timers: LinkTimers) -> Result<ServerConfig, NetError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut cfg = ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport(timers)?);
    // Connection attempts waiting for the accept loop (which answers each at once, see
    // `admission`): quinn's default of 65,536 with 10 MiB each is sized for 0-RTT, which we
    // refuse. Past the bound quinn refuses new attempts itself.
    cfg.max_incoming(INCOMING_MAX);
    cfg.incoming_buffer_size(INCOMING_BUFFER_BYTES);
    cfg.incoming_buffer_size_total(INCOMING_MAX as u64 * INCOMING_BUFFER_BYTES);
    Ok(cfg)
}

/// A client endpoint on an ephemeral port of `bind` (use `0.0.0.0:0` or `127.0.0.1:0`).
pub fn client(bind: SocketAddr, tls: rustls::ClientConfig, timers: LinkTimers) -> Result<Endpoint, NetError> {
    let cfg = client_config(tls, timers)?;
    let mut ep = Endpoint::new(EndpointConfig::default(), None, udp_socket(bind)?, Arc::new(TokioRuntime))
        .map_err(|e| NetError::Socket { addr: bind, detail: e.to_string() })?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// A client endpoint on an ephemeral port of `bind` with no default configuration: every
/// connection names its own ([`connect_with`]).
pub fn client_bare(bind: SocketAddr) -> Result<Endpoint, NetError> {
    Endpoint::new(EndpointConfig::default(), None, udp_socket(bind)?, Arc::new(TokioRuntime))
        .map_err(|e| NetError::Socket { addr: bind, detail: e.to_string() })
}

/// The QUIC client configuration of [`client`]; give a new one to
/// `Endpoint::set_default_client_config` to change certificates or revocation lists.
pub fn client_config(tls: rustls::ClientConfig, timers: LinkTimers) -> Result<ClientConfig, NetError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut cfg = ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport(timers)?);
    Ok(cfg)
}

/// Connects to `addr`, verifying the server's certificate for `server_name`, within `timeout`.
pub async fn connect(
    ep: &Endpoint,
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<Connection, NetError> {
    connect_inner(ep, None, addr, server_name, timeout).await
}

/// [`connect`] with a given client configuration instead of the endpoint's default.
pub async fn connect_with(
    ep: &Endpoint,
    cfg: ClientConfig,
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<Connection, NetError> {
    connect_inner(ep, Some(cfg), addr, server_name, timeout).await
}

async fn connect_inner(
    ep: &Endpoint,
    cfg: Option<ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<Connection, NetError> {
    let err = |detail: String| NetError::Connect { addr, detail };
    let connecting = match cfg {
        Some(c) => ep.connect_with(c, addr, server_name),
        None => ep.connect(addr, server_name),
    }
    .map_err(|e| err(e.to_string()))?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(_) => Err(err(format!("no handshake within {timeout:?}"))),
    }
}
