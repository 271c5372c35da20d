//! Length-delimited frames over a QUIC stream, each holding one bincode message.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use inflight_wire::{Decode, Encode};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::NetError;

/// How long a peer is given to read a stream's last frame (an error or refusal frame) before
/// the connection closes: closing a QUIC connection may discard data still in flight, so the
/// sender finishes the stream and waits this long for the peer to take everything. Each step
/// of [`FrameWriter::send_final`] is bounded by it, so a peer that stopped reading cannot hold
/// the sender.
pub const FINAL_FRAME_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// How long, after a final frame, the sender waits for the peer to close the connection
/// itself ([`close_after_final`]) before closing it. Closing a QUIC connection discards what the
/// peer has received but not yet read, so closing as soon as the frame is acknowledged lost it
/// whenever the peer's reader was slower than the round trip (seen under load); a peer that read
/// the frame closes at once, one that does not is held at most this long.
pub const PEER_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Closes `conn` after a final frame ([`FrameWriter::send_final`]): once the peer closes it, or
/// after [`PEER_CLOSE_GRACE`].
pub async fn close_after_final(conn: &quinn::Connection, code: quinn::VarInt, reason: &[u8]) {
    let _ = tokio::time::timeout(PEER_CLOSE_GRACE, conn.closed()).await;
    conn.close(code, reason);
}

/// The codec of a link: 4-byte big-endian length prefix, frames over `frame_bytes_max` refused
/// before they are buffered.
pub fn codec(frame_bytes_max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_length(4).max_frame_length(frame_bytes_max).new_codec()
}

/// Initial buffer of each half of a framed stream (tokio-util's default is 8 KiB). A master holds
/// two per terminal, a thousand terminals at once, and their frames are a few hundred bytes: 2
/// KiB holds a forward window of acks, and a buffer grows when a larger frame (a batch chunk)
/// needs it. It is also the writer's flush threshold: past it, frames fed go out at once.
pub const FRAME_BUFFER_BYTES: usize = 2 << 10;

/// The receiving half of a framed stream.
#[derive(Debug)]
pub struct FrameReader {
    inner: FramedRead<quinn::RecvStream, LengthDelimitedCodec>,
}

/// The sending half of a framed stream.
#[derive(Debug)]
pub struct FrameWriter {
    inner: FramedWrite<quinn::SendStream, LengthDelimitedCodec>,
}

/// Wraps a bidirectional stream.
pub fn framed(send: quinn::SendStream, recv: quinn::RecvStream, frame_bytes_max: usize) -> (FrameWriter, FrameReader) {
    (
        FrameWriter { inner: FramedWrite::with_capacity(send, codec(frame_bytes_max), FRAME_BUFFER_BYTES) },
        FrameReader { inner: FramedRead::with_capacity(recv, codec(frame_bytes_max), FRAME_BUFFER_BYTES) },
    )
}

impl FrameReader {
    /// The next message; `Ok(None)` when the peer finished the stream cleanly.
    pub async fn recv<T: Decode<()>>(&mut self) -> Result<Option<T>, NetError> {
        match self.inner.next().await {
            None => Ok(None),
            // The codec reports a frame over the limit as InvalidData and a stream that ends
            // inside a frame as Other; every other kind is the connection going away.
            Some(Err(e)) if matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::Other) => {
                Err(NetError::Frame(e.to_string()))
            }
            Some(Err(e)) => Err(NetError::Connection(e.to_string())),
            Some(Ok(frame)) => inflight_wire::decode(&frame).map(Some).map_err(|e| NetError::Frame(e.to_string())),
        }
    }
}

impl FrameWriter {
    /// Sends one message as one frame.
    pub async fn send<T: Encode>(&mut self, msg: &T) -> Result<(), NetError> {
        self.send_raw(Bytes::from(inflight_wire::encode(msg))).await
    }

    /// Sends raw bytes as one frame (tests use it to send garbage).
    pub async fn send_raw(&mut self, frame: Bytes) -> Result<(), NetError> {
        self.inner.send(frame).await.map_err(|e| NetError::Connection(e.to_string()))
    }

    /// Queues one message without flushing; call [`FrameWriter::flush`] after a burst.
    pub async fn feed<T: Encode>(&mut self, msg: &T) -> Result<(), NetError> {
        self.inner.feed(Bytes::from(inflight_wire::encode(msg))).await.map_err(|e| NetError::Connection(e.to_string()))
    }

    /// Flushes queued frames.
    pub async fn flush(&mut self) -> Result<(), NetError> {
        SinkExt::<Bytes>::flush(&mut self.inner).await.map_err(|e: std::io::Error| NetError::Connection(e.to_string()))
    }

    /// The underlying stream, for writing bytes that are not frames (tests of bad input).
    pub fn stream_mut(&mut self) -> &mut quinn::SendStream {
        self.inner.get_mut()
    }

    /// Finishes the stream: no more frames.
    pub fn finish(&mut self) {
        let _ = self.inner.get_mut().finish();
    }

    /// Sends `msg` as the stream's last frame (an error frame before a close), finishes the
    /// stream and waits for the peer to read it: at most [`FINAL_FRAME_GRACE`] for the send and
    /// as long again for the peer. Best effort (the connection is closing anyway): nothing is
    /// reported. The caller closes the connection next.
    pub async fn send_final<T: Encode>(&mut self, msg: &T) {
        let _ = tokio::time::timeout(FINAL_FRAME_GRACE, self.send(msg)).await;
        self.finish_final().await;
    }

    /// Finishes the stream after frames already flushed (the last one an error frame) and waits
    /// at most [`FINAL_FRAME_GRACE`] for the peer to read them; see [`FrameWriter::send_final`].
    pub async fn finish_final(&mut self) {
        self.finish();
        let _ = tokio::time::timeout(FINAL_FRAME_GRACE, self.inner.get_mut().stopped()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;
    use crate::pki::{DevCa, PemPair, Validity};
    use crate::tls::Identity;

    const ALPN: &[u8] = b"test";
    const FRAME_MAX: usize = 1 << 16;

    fn identity(p: &PemPair) -> Identity {
        Identity {
            chain: vec![CertificateDer::from_pem_slice(p.cert_pem.as_bytes()).expect("cert")],
            key: PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).expect("key"),
        }
    }

    /// A connected loopback pair: (server endpoint, server connection, client endpoint, client
    /// connection).
    async fn pair() -> (quinn::Endpoint, quinn::Connection, quinn::Endpoint, quinn::Connection) {
        let ca = DevCa::new("test CA").expect("ca");
        let server = ca.issue("master.x.aircraft.inflight", false, true, Validity::default()).expect("cert");
        let client = ca.issue("seat-1.terminal.inflight", true, false, Validity::default()).expect("cert");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("ca")).expect("root");
        let roots = Arc::new(roots);
        let stls = crate::tls::server_config(identity(&server), roots.clone(), ALPN).expect("server tls");
        let sep =
            crate::endpoint::server("127.0.0.1:0".parse().expect("addr"), stls, Default::default()).expect("server");
        let addr = sep.local_addr().expect("addr");
        let ctls = crate::tls::client_config_with_crls(identity(&client), roots, Vec::new(), ALPN).expect("tls");
        let cep =
            crate::endpoint::client("127.0.0.1:0".parse().expect("addr"), ctls, Default::default()).expect("client");
        let accept = {
            let sep = sep.clone();
            tokio::spawn(async move { sep.accept().await.expect("incoming").await.expect("handshake") })
        };
        let cconn = crate::endpoint::connect(&cep, addr, "master.x.aircraft.inflight", Duration::from_secs(3))
            .await
            .expect("connect");
        (sep, accept.await.expect("accept"), cep, cconn)
    }

    /// The refusal pattern of every server: last frame, then close at once. The peer reads the
    /// frame, and then the end of the stream.
    #[tokio::test]
    async fn a_final_frame_reaches_the_peer_before_the_close() {
        let (_sep, sconn, _cep, cconn) = pair().await;
        let (cs, cr) = cconn.open_bi().await.expect("open");
        let (mut cw, mut cr) = framed(cs, cr, FRAME_MAX);
        cw.send(&7u32).await.expect("hello");
        let (ss, sr) = sconn.accept_bi().await.expect("accept");
        let (mut sw, mut sr) = framed(ss, sr, FRAME_MAX);
        assert_eq!(sr.recv::<u32>().await.expect("frame"), Some(7));
        let reader = tokio::spawn(async move { (cr.recv::<String>().await, cr.recv::<String>().await) });
        sw.send_final(&"refused: wrong terminal".to_owned()).await;
        sconn.close(1u32.into(), b"refused");
        let (first, end) = reader.await.expect("reader");
        assert_eq!(first.expect("the final frame arrived"), Some("refused: wrong terminal".to_owned()));
        assert!(matches!(end, Ok(None)), "then the stream ends: {end:?}");
    }

    /// A peer that never reads cannot hold the sender longer than the grace allows.
    #[tokio::test]
    async fn a_peer_that_does_not_read_holds_the_sender_for_the_grace_at_most() {
        let (_sep, sconn, _cep, cconn) = pair().await;
        let (cs, cr) = cconn.open_bi().await.expect("open");
        let (mut cw, _cr) = framed(cs, cr, FRAME_MAX);
        cw.send(&7u32).await.expect("hello");
        let (ss, sr) = sconn.accept_bi().await.expect("accept");
        let (mut sw, _sr) = framed(ss, sr, FRAME_MAX);
        let start = Instant::now();
        sw.send_final(&"x".repeat(FRAME_MAX - 64)).await;
        assert!(start.elapsed() <= FINAL_FRAME_GRACE * 2 + Duration::from_millis(200), "{:?}", start.elapsed());
        drop(cconn);
    }
}
