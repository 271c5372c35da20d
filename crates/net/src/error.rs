use std::path::PathBuf;

/// Everything that can go wrong at the network boundary.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the configuration (bad key, no usable certificate...).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The socket could not be created or bound.
    #[error("socket {addr}: {detail}")]
    Socket {
        /// The address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        detail: String,
    },
    /// The connection attempt failed or timed out.
    #[error("connect to {addr}: {detail}")]
    Connect {
        /// The peer.
        addr: std::net::SocketAddr,
        /// What failed.
        detail: String,
    },
    /// The peer's certificate does not carry the identity it claims.
    #[error("peer identity: {0}")]
    Identity(String),
    /// The connection or stream broke.
    #[error("connection: {0}")]
    Connection(String),
    /// A frame was over the link's limit or did not decode.
    #[error("bad frame: {0}")]
    Frame(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Pki(String),
}
