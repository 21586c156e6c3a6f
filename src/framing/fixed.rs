//! Remedy 3: every record has the same, agreed size.

use super::{Decoder, Encoder, FrameBuf, FrameError};

/// Frames as fixed-size records, e.g. a C `struct` sent verbatim.
///
/// No header and no delimiter are needed, because both sides agree on the
/// size; the buffer never holds more than one incomplete record.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{Decoder, Encoder, FixedSize, FrameBuf};
///
/// let mut codec = FixedSize::new(4);
/// let mut wire = Vec::new();
/// codec.encode(&7u32.to_be_bytes(), &mut wire)?;
///
/// let mut buf = FrameBuf::new();
/// buf.extend_from_slice(&wire);
/// assert_eq!(codec.decode(&mut buf)?, Some(vec![0, 0, 0, 7]));
/// # Ok::<(), socketserver::framing::FrameError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedSize {
    size: usize,
}

impl FixedSize {
    /// Creates a codec for records of exactly `size` bytes.
    ///
    /// # Panics
    ///
    /// Panics if `size` is 0: empty records carry no information and a
    /// decoder producing them from no input would never ask for more bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FixedSize;
    ///
    /// assert_eq!(FixedSize::new(16).size(), 16);
    /// ```
    pub fn new(size: usize) -> Self {
        assert!(size > 0, "FixedSize records must not be empty");
        Self { size }
    }

    /// The record size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FixedSize;
    ///
    /// assert_eq!(FixedSize::new(3).size(), 3);
    /// ```
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Decoder for FixedSize {
    type Frame = Vec<u8>;

    fn decode(&mut self, buf: &mut FrameBuf) -> Result<Option<Vec<u8>>, FrameError> {
        if buf.len() < self.size {
            return Ok(None);
        }
        Ok(Some(buf.split_to(self.size)))
    }
}

impl Encoder<[u8]> for FixedSize {
    fn encode(&mut self, item: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        if item.len() != self.size {
            return Err(FrameError::WrongSize {
                len: item.len(),
                expected: self.size,
            });
        }
        out.extend_from_slice(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_stream_into_records() {
        let mut codec = FixedSize::new(3);
        let mut buf = FrameBuf::new();
        buf.extend_from_slice(b"abcdefg");
        assert_eq!(codec.decode(&mut buf), Ok(Some(b"abc".to_vec())));
        assert_eq!(codec.decode(&mut buf), Ok(Some(b"def".to_vec())));
        assert_eq!(codec.decode(&mut buf), Ok(None));
        assert_eq!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated { pending: 1 })
        );
    }

    #[test]
    fn encodes_exact_bytes_and_checks_size() {
        let mut out = Vec::new();
        let mut codec = FixedSize::new(2);
        codec.encode(b"hi", &mut out).unwrap();
        assert_eq!(out, b"hi");
        assert_eq!(
            codec.encode(b"abc", &mut out),
            Err(FrameError::WrongSize {
                len: 3,
                expected: 2
            })
        );
        assert_eq!(out, b"hi");
    }

    #[test]
    #[should_panic(expected = "must not be empty")]
    fn zero_size_is_a_programming_error() {
        let _ = FixedSize::new(0);
    }
}
