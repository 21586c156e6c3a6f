//! Remedy 1: a length header in front of every payload.

use super::{Decoder, Encoder, FrameBuf, FrameError};

/// Size of the length header: a `u32` in network (big-endian) byte order.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{Encoder, LengthPrefixed, HEADER_LEN};
/// let mut wire = Vec::new();
/// LengthPrefixed::new().encode(b"payload", &mut wire)?;
/// assert_eq!(wire.len(), HEADER_LEN + b"payload".len());
/// # Ok::<(), socketserver::framing::FrameError>(())
/// ```
pub const HEADER_LEN: usize = 4;

/// Default limit on a payload: 8 MiB.
///
/// # Examples
///
/// A header announcing more than the limit is refused before any payload is buffered:
///
/// ```
/// use socketserver::framing::{Decoder, FrameBuf, LengthPrefixed, DEFAULT_MAX_FRAME_LEN};
/// assert_eq!(DEFAULT_MAX_FRAME_LEN, 8 * 1024 * 1024);
/// let mut buf = FrameBuf::new();
/// buf.extend_from_slice(&(DEFAULT_MAX_FRAME_LEN as u32 + 1).to_be_bytes());
/// assert!(LengthPrefixed::new().decode(&mut buf).is_err());
/// ```
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// Frames as a 4-byte big-endian payload length followed by the payload.
///
/// This is the most robust framing for binary protocols: any payload bytes
/// are allowed, and the receiver knows how much to wait for. Because the
/// length comes from the peer, it is checked against
/// [`max_frame_len`](Self::max_frame_len) as soon as the 4 header bytes
/// arrive, before a single payload byte is buffered.
///
/// The decoder is stateless, so one value can be shared by reader and writer.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{Decoder, Encoder, FrameBuf, LengthPrefixed};
///
/// let mut codec = LengthPrefixed::new();
/// let mut wire = Vec::new();
/// codec.encode(b"hi", &mut wire)?;
/// assert_eq!(wire, [0, 0, 0, 2, b'h', b'i']);
///
/// let mut buf = FrameBuf::new();
/// buf.extend_from_slice(&wire);
/// assert_eq!(codec.decode(&mut buf)?, Some(b"hi".to_vec()));
/// # Ok::<(), socketserver::framing::FrameError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPrefixed {
    max_frame_len: usize,
}

impl LengthPrefixed {
    /// Creates a codec with the [`DEFAULT_MAX_FRAME_LEN`] limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{LengthPrefixed, DEFAULT_MAX_FRAME_LEN};
    ///
    /// assert_eq!(LengthPrefixed::new().max_frame_len(), DEFAULT_MAX_FRAME_LEN);
    /// ```
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// Creates a codec that rejects payloads longer than `max` bytes; pick the
    /// largest message the protocol really needs. Values above `u32::MAX`
    /// (the largest length the header can express) are lowered to it.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{Encoder, FrameError, LengthPrefixed};
    ///
    /// let mut codec = LengthPrefixed::with_max_frame_len(3);
    /// let err = codec.encode(b"four", &mut Vec::new()).unwrap_err();
    /// assert_eq!(err, FrameError::TooLarge { len: 4, max: 3 });
    /// ```
    pub fn with_max_frame_len(max: usize) -> Self {
        let header_max = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
        Self {
            max_frame_len: max.min(header_max),
        }
    }

    /// The largest payload this codec accepts, in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::LengthPrefixed;
    ///
    /// assert_eq!(LengthPrefixed::with_max_frame_len(10).max_frame_len(), 10);
    /// ```
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

impl Default for LengthPrefixed {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for LengthPrefixed {
    type Frame = Vec<u8>;

    fn decode(&mut self, buf: &mut FrameBuf) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(header) = buf.as_slice().first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let announced = u32::from_be_bytes(*header);
        // Lossless on 32- and 64-bit targets; saturates (and is rejected) elsewhere.
        let len = usize::try_from(announced).unwrap_or(usize::MAX);
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if buf.len() - HEADER_LEN < len {
            return Ok(None);
        }
        buf.consume(HEADER_LEN);
        Ok(Some(buf.split_to(len)))
    }
}

impl Encoder<[u8]> for LengthPrefixed {
    fn encode(&mut self, item: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let too_large = FrameError::TooLarge {
            len: item.len(),
            max: self.max_frame_len,
        };
        if item.len() > self.max_frame_len {
            return Err(too_large);
        }
        let header = u32::try_from(item.len()).map_err(|_| too_large)?;
        out.reserve(HEADER_LEN + item.len());
        out.extend_from_slice(&header.to_be_bytes());
        out.extend_from_slice(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf_of(bytes: &[u8]) -> FrameBuf {
        let mut buf = FrameBuf::new();
        buf.extend_from_slice(bytes);
        buf
    }

    #[test]
    fn encodes_exact_bytes() {
        let mut out = Vec::new();
        let mut codec = LengthPrefixed::new();
        codec.encode(b"", &mut out).unwrap();
        codec.encode(b"abc", &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn decodes_sticky_and_half_packets() {
        let mut codec = LengthPrefixed::new();
        let mut buf = buf_of(&[0, 0, 0, 1, b'x', 0, 0, 0, 3, b'y']);
        assert_eq!(codec.decode(&mut buf), Ok(Some(b"x".to_vec())));
        assert_eq!(codec.decode(&mut buf), Ok(None));
        assert_eq!(buf.as_slice(), [0, 0, 0, 3, b'y'], "partial frame kept");
        buf.extend_from_slice(b"z!");
        assert_eq!(codec.decode(&mut buf), Ok(Some(b"yz!".to_vec())));
        assert!(buf.is_empty());
    }

    #[test]
    fn header_split_across_chunks() {
        let mut codec = LengthPrefixed::new();
        let mut buf = FrameBuf::new();
        for byte in [0, 0, 1, 0] {
            assert_eq!(codec.decode(&mut buf), Ok(None));
            buf.extend_from_slice(&[byte]);
        }
        assert_eq!(codec.decode(&mut buf), Ok(None), "waits for 256 bytes");
    }

    #[test]
    fn oversize_length_rejected_with_only_the_header_buffered() {
        let mut codec = LengthPrefixed::with_max_frame_len(1024 * 1024);
        let mut buf = buf_of(&[0xff, 0xff, 0xff, 0xff]); // claims ~4 GiB
        assert_eq!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge {
                len: 0xffff_ffff,
                max: 1024 * 1024
            })
        );
        assert_eq!(buf.len(), HEADER_LEN);
    }

    #[test]
    fn exactly_max_is_accepted() {
        let mut codec = LengthPrefixed::with_max_frame_len(2);
        let mut buf = buf_of(&[0, 0, 0, 2, 7, 8]);
        assert_eq!(codec.decode(&mut buf), Ok(Some(vec![7, 8])));
    }

    #[test]
    fn eof_inside_header_or_payload_is_truncated() {
        let mut codec = LengthPrefixed::new();
        let mut buf = buf_of(&[0, 0]);
        assert_eq!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated { pending: 2 })
        );
        let mut buf = buf_of(&[0, 0, 0, 5, 1]);
        assert_eq!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated { pending: 5 })
        );
        assert_eq!(codec.decode_eof(&mut FrameBuf::new()), Ok(None));
    }

    #[test]
    fn encode_rejects_oversize_and_leaves_output_untouched() {
        let mut out = b"keep".to_vec();
        let err = LengthPrefixed::with_max_frame_len(1).encode(b"ab", &mut out);
        assert_eq!(err, Err(FrameError::TooLarge { len: 2, max: 1 }));
        assert_eq!(out, b"keep");
    }
}
