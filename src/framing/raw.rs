//! No framing at all: whatever bytes arrived are the frame.

use super::{Decoder, Encoder, FrameBuf, FrameError};

/// The framing-free codec: each decode hands over every byte buffered so far, and encoding appends the
/// bytes unchanged.
///
/// For byte-stream protocols that have no messages (echo, a proxy, a tunnel) served by a message
/// handler: the peer sees exactly the bytes sent, in order, with no header or delimiter added. Frame
/// boundaries follow the reads, so never rely on them.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{Decoder, Encoder, FrameBuf, RawBytes};
///
/// let mut buf = FrameBuf::new();
/// buf.extend_from_slice(b"any bytes\n\0at all");
/// assert_eq!(RawBytes.decode(&mut buf)?, Some(b"any bytes\n\0at all".to_vec()));
/// assert_eq!(RawBytes.decode(&mut buf)?, None); // nothing buffered
///
/// let mut out = Vec::new();
/// RawBytes.encode(b"as is", &mut out)?;
/// assert_eq!(out, b"as is");
/// # Ok::<(), socketserver::framing::FrameError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawBytes;

impl Decoder for RawBytes {
    type Frame = Vec<u8>;

    fn decode(&mut self, buf: &mut FrameBuf) -> Result<Option<Vec<u8>>, FrameError> {
        if buf.is_empty() {
            return Ok(None);
        }
        Ok(Some(buf.take()))
    }
}

impl Encoder<[u8]> for RawBytes {
    fn encode(&mut self, item: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        out.extend_from_slice(item);
        Ok(())
    }

    fn verbatim(&self) -> bool {
        true
    }
}
