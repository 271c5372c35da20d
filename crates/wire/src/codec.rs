//! Encoding and decoding of every message and record: bincode 2, with a decode limit and trailing
//! bytes rejected.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bincode::{Decode, Encode};

/// Largest payload accepted by [`decode`]: the largest link frame (the ground link's). It bounds
/// what any length prefix inside a payload can make the decoder allocate.
pub const PAYLOAD_BYTES_MAX: usize = 128 * 1024;

// Every frame a link accepts must decode.
const _: () = assert!(crate::GROUND_FRAME_BYTES_MAX <= PAYLOAD_BYTES_MAX);
const _: () = assert!(crate::TERMINAL_FRAME_BYTES_MAX <= PAYLOAD_BYTES_MAX);

type Config = Configuration<LittleEndian, Varint, Limit<PAYLOAD_BYTES_MAX>>;

const CONFIG: Config = bincode::config::standard().with_limit::<PAYLOAD_BYTES_MAX>();

/// Why bytes did not decode into a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is larger than [`PAYLOAD_BYTES_MAX`].
    #[error("payload of {0} bytes is over the {PAYLOAD_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    /// The bytes are not a valid value (truncated, unknown tag, invalid field...).
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A valid value was followed by extra bytes.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

/// Encodes a value. Values built from this crate's types are always encodable.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    // Encoding into a Vec fails only for a value over the limit, which no type here can reach
    // (every variable-length field is bounded well below PAYLOAD_BYTES_MAX).
    bincode::encode_to_vec(value, CONFIG).expect("wire values are bounded below the encode limit")
}

/// Decodes exactly one value from `bytes`: no more, no less.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > PAYLOAD_BYTES_MAX {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let (value, used) = bincode::decode_from_slice(bytes, CONFIG).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}
