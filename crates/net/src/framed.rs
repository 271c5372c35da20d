//! Length-delimited frames over a QUIC stream, each holding one bincode message.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use inflight_wire::{Decode, Encode};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::NetError;

/// The codec of a link: 4-byte big-endian length prefix, frames over `frame_bytes_max` refused
/// before they are buffered.
pub fn codec(frame_bytes_max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_length(4).max_frame_length(frame_bytes_max).new_codec()
}

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
        FrameWriter { inner: FramedWrite::new(send, codec(frame_bytes_max)) },
        FrameReader { inner: FramedRead::new(recv, codec(frame_bytes_max)) },
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
}
