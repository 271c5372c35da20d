//! The network boundary of inflight: the only crate that knows quinn and rustls.
//!
//! - [`tls`]: rustls configurations with exactly one crypto provider (ring), TLS 1.3 only,
//!   mutual authentication, no 0-RTT; certificates and keys read from PEM files.
//! - [`admission`]: which connection attempts get a handshake (bounded, per address, QUIC Retry
//!   under pressure, a deadline), and one live connection per peer certificate.
//! - [`endpoint`]: quinn endpoints on sockets with large buffers, explicit keep-alive and idle
//!   timeouts, and our own connect timeout.
//! - [`identity`]: who is on the other end, taken from its verified certificate.
//! - [`framed`]: length-delimited frames with a maximum size, carrying `inflight-wire` messages.
//! - [`reload`]: certificates and revocation lists picked up from disk without a restart
//!   (polled, and at once on a nudge: SIGHUP).
//! - [`check`]: what `<daemon> check` verifies of TLS files beyond loading them (dates, names,
//!   usages, which CA signed a revocation list).
//! - [`pki`]: a development CA and certificates, for `inflight-setup` and tests.
//!
//! What it is not: it makes no payment decisions and stores nothing.

pub mod admission;
pub mod check;
pub mod endpoint;
mod error;
pub mod framed;
pub mod identity;
pub mod pki;
pub mod reload;
pub mod tls;

pub use error::NetError;
pub use quinn::{Connection, Endpoint, ServerConfig};
