//! The one error type shared by every codec.

use std::error::Error;
use std::fmt;
use std::io;

/// Why a frame could not be decoded or encoded.
///
/// Decoding errors are *fatal* for the stream: once a peer has sent an
/// oversized or truncated frame, the decoder can no longer tell where the
/// next frame starts, so the connection should be closed.
///
/// Converting into [`io::Error`] (for the blocking helpers and `?` in stream
/// handlers) maps [`Truncated`](FrameError::Truncated) to
/// [`io::ErrorKind::UnexpectedEof`] and everything else to
/// [`io::ErrorKind::InvalidData`]; the original `FrameError` stays reachable
/// through [`io::Error::get_ref`].
///
/// # Examples
///
/// ```
/// use socketserver::framing::FrameError;
/// use std::io;
///
/// let err = FrameError::TooLarge { len: 10, max: 4 };
/// assert_eq!(err.to_string(), "frame of 10 bytes exceeds the limit of 4 bytes");
/// assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidData);
///
/// let eof = io::Error::from(FrameError::Truncated { pending: 3 });
/// assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame is longer than the configured limit. When decoding, `len` is
    /// the length a header announced, or a lower bound (the bytes seen so
    /// far) for delimiter-based frames; it is reported *before* the payload
    /// is buffered.
    TooLarge {
        /// Announced or observed frame length in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    Truncated {
        /// Bytes of the incomplete frame left in the buffer.
        pending: usize,
    },
    /// An item to encode contains the delimiter (or another byte sequence the
    /// decoder would strip), so it would not survive the round trip.
    DelimiterInPayload {
        /// Offset of the offending byte in the item.
        index: usize,
    },
    /// An item to encode does not have the fixed record size.
    WrongSize {
        /// Length of the item.
        len: usize,
        /// The record size the codec requires.
        expected: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
            Self::Truncated { pending } => {
                write!(f, "stream ended inside a frame ({pending} bytes pending)")
            }
            Self::DelimiterInPayload { index } => {
                write!(f, "payload contains the frame delimiter at offset {index}")
            }
            Self::WrongSize { len, expected } => {
                write!(f, "record of {len} bytes, expected exactly {expected}")
            }
        }
    }
}

impl Error for FrameError {}

impl From<FrameError> for io::Error {
    fn from(err: FrameError) -> Self {
        let kind = match err {
            FrameError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}
