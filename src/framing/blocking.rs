//! Blocking helpers for stream handlers that own a `Read`/`Write` stream.

use std::io::{self, Read, Write};

use super::{Decoder, Encoder, FrameBuf, FrameError, HEADER_LEN, LengthPrefixed};

/// How much [`FramedReader`] asks the stream for per `read` call.
const READ_CHUNK: usize = 8 * 1024;

/// Reads whole frames from a blocking stream.
///
/// Bytes that arrive after the end of a frame (the start of the next
/// message) stay in the reader's [`FrameBuf`] for the next
/// [`read_frame`](Self::read_frame) call, so nothing is lost, however the
/// peer's writes were split or merged in transit. Wrap the handler's stream
/// (or `&mut` of its `BufReader`) once and read every frame through it.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{FramedReader, Lines};
///
/// let stream: &[u8] = b"first\r\nsecond\n";
/// let mut reader = FramedReader::new(stream, Lines::new());
/// assert_eq!(reader.read_frame()?, Some(b"first".to_vec()));
/// assert_eq!(reader.read_frame()?, Some(b"second".to_vec()));
/// assert_eq!(reader.read_frame()?, None);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct FramedReader<R, D> {
    reader: R,
    decoder: D,
    buf: FrameBuf,
    /// Called before waiting for a message with nothing of it buffered: the stream is between
    /// messages (what [`StreamRequest::framed`](crate::StreamRequest::framed) tells the server).
    at_boundary: Option<fn(&mut R)>,
}

impl<R, D> FramedReader<R, D> {
    /// Wraps `reader`, decoding its bytes with `decoder`.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{FixedSize, FramedReader};
    ///
    /// let reader = FramedReader::new(&b"abcd"[..], FixedSize::new(2));
    /// assert!(reader.buffer().is_empty());
    /// ```
    pub fn new(reader: R, decoder: D) -> Self {
        Self {
            reader,
            decoder,
            buf: FrameBuf::new(),
            at_boundary: None,
        }
    }

    /// As [`new`](Self::new), calling `at_boundary` on the stream each time the reader is about to
    /// wait for a message of which nothing has arrived.
    pub(crate) fn with_boundaries(reader: R, decoder: D, at_boundary: fn(&mut R)) -> Self {
        Self {
            at_boundary: Some(at_boundary),
            ..Self::new(reader, decoder)
        }
    }

    /// The wrapped stream, e.g. to query its peer address.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{FramedReader, Lines};
    ///
    /// let reader = FramedReader::new(&b"x\n"[..], Lines::new());
    /// assert_eq!(reader.get_ref(), b"x\n");
    /// ```
    pub fn get_ref(&self) -> &R {
        &self.reader
    }

    /// The wrapped stream, mutably, e.g. to write a reply on the same socket.
    /// Reading from it directly would bypass the bytes buffered here.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{FramedReader, Lines};
    /// use std::io::Cursor;
    ///
    /// let mut reader = FramedReader::new(Cursor::new(b"x\n".to_vec()), Lines::new());
    /// reader.get_mut().set_position(0);
    /// ```
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// Bytes received but not yet returned as a frame.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{FixedSize, FramedReader};
    ///
    /// let mut reader = FramedReader::new(&b"abc"[..], FixedSize::new(2));
    /// assert_eq!(reader.read_frame()?, Some(b"ab".to_vec()));
    /// assert_eq!(reader.buffer(), b"c");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn buffer(&self) -> &[u8] {
        self.buf.as_slice()
    }

    /// Unwraps the stream, the decoder and the not-yet-decoded bytes, e.g.
    /// to switch protocols mid-connection without losing data.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{FramedReader, Lines};
    ///
    /// let mut reader = FramedReader::new(&b"UPGRADE\n\x00\x01"[..], Lines::new());
    /// assert_eq!(reader.read_frame()?, Some(b"UPGRADE".to_vec()));
    /// let (_stream, _lines, leftover) = reader.into_parts();
    /// assert_eq!(leftover.as_slice(), b"\x00\x01");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_parts(self) -> (R, D, FrameBuf) {
        (self.reader, self.decoder, self.buf)
    }
}

impl<R: Read, D: Decoder> FramedReader<R, D> {
    /// Blocks until one whole frame has arrived and returns it; returns
    /// `Ok(None)` when the peer closed the stream between frames.
    ///
    /// Retries reads interrupted by signals. On a non-blocking stream, a
    /// [`io::ErrorKind::WouldBlock`] error is returned and the call can simply
    /// be repeated later: partial frames are kept.
    ///
    /// # Errors
    ///
    /// Returns the stream's I/O errors, and decoder errors converted with
    /// `From<FrameError> for io::Error`: [`io::ErrorKind::InvalidData`] for an
    /// oversized frame, [`io::ErrorKind::UnexpectedEof`] when the stream ends
    /// inside a frame. Decoder errors are fatal; close the connection.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{FramedReader, LengthPrefixed};
    /// use std::io::ErrorKind;
    ///
    /// let truncated: &[u8] = &[0, 0, 0, 5, b'a'];
    /// let mut reader = FramedReader::new(truncated, LengthPrefixed::new());
    /// assert_eq!(reader.read_frame().unwrap_err().kind(), ErrorKind::UnexpectedEof);
    /// ```
    pub fn read_frame(&mut self) -> io::Result<Option<D::Frame>> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if let Some(at_boundary) = self.at_boundary.filter(|_| self.buf.is_empty()) {
                at_boundary(&mut self.reader);
            }
            match self.buf.read_from(&mut self.reader, READ_CHUNK) {
                Ok(0) => return Ok(self.decoder.decode_eof(&mut self.buf)?),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Encodes `item` with `encoder` and writes it with a single `write_all`.
///
/// Writing header and payload together (rather than in two `write` calls)
/// avoids a Nagle/delayed-ACK stall on TCP.
///
/// # Errors
///
/// Returns the encoder's error as [`io::ErrorKind::InvalidData`] (nothing is
/// written then), or the writer's I/O error.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{write_frame, Lines};
///
/// let mut wire = Vec::new();
/// write_frame(&mut wire, &mut Lines::new(), b"PING")?;
/// assert_eq!(wire, b"PING\n");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_frame<W, E, I>(writer: &mut W, encoder: &mut E, item: &I) -> io::Result<()>
where
    W: Write + ?Sized,
    E: Encoder<I> + ?Sized,
    I: ?Sized,
{
    let mut out = Vec::new();
    encoder.encode(item, &mut out)?;
    writer.write_all(&out)
}

/// Writes `payload` as one length-prefixed frame (see [`LengthPrefixed`]).
///
/// # Errors
///
/// Returns [`io::ErrorKind::InvalidData`] if `payload` is longer than
/// `u32::MAX` bytes, or the writer's I/O error.
///
/// # Examples
///
/// ```
/// use socketserver::framing::write_length_prefixed;
///
/// let mut wire = Vec::new();
/// write_length_prefixed(&mut wire, b"hi")?;
/// assert_eq!(wire, [0, 0, 0, 2, b'h', b'i']);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_length_prefixed<W: Write + ?Sized>(writer: &mut W, payload: &[u8]) -> io::Result<()> {
    write_frame(
        writer,
        &mut LengthPrefixed::with_max_frame_len(usize::MAX),
        payload,
    )
}

/// Reads exactly one length-prefixed frame of at most `max` bytes, or
/// `Ok(None)` on a clean EOF before its first byte.
///
/// It never reads past the end of the frame, so it needs no state between
/// calls and can be mixed with other reads on the same stream. Each frame
/// costs at least two `read` calls, so give it a `BufReader` rather than a
/// raw socket; for many frames [`FramedReader`] is more efficient.
///
/// # Errors
///
/// Returns [`io::ErrorKind::InvalidData`] if the header announces more than
/// `max` bytes (before reading or allocating the payload),
/// [`io::ErrorKind::UnexpectedEof`] if the stream ends inside the frame, or
/// the reader's I/O error.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{read_length_prefixed, write_length_prefixed};
///
/// let mut wire = Vec::new();
/// write_length_prefixed(&mut wire, b"one")?;
/// write_length_prefixed(&mut wire, b"two")?;
///
/// let mut stream = wire.as_slice();
/// assert_eq!(read_length_prefixed(&mut stream, 1024)?, Some(b"one".to_vec()));
/// assert_eq!(read_length_prefixed(&mut stream, 1024)?, Some(b"two".to_vec()));
/// assert_eq!(read_length_prefixed(&mut stream, 1024)?, None);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_length_prefixed<R: Read + ?Sized>(
    reader: &mut R,
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated { pending: filled }.into()),
            Ok(n) => filled += n.min(HEADER_LEN - filled),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let announced = u32::from_be_bytes(header);
    let len = usize::try_from(announced).unwrap_or(usize::MAX);
    let max = LengthPrefixed::with_max_frame_len(max).max_frame_len();
    if len > max {
        return Err(FrameError::TooLarge { len, max }.into());
    }
    // `take` stops at the frame end; `read_to_end` grows the buffer as bytes
    // actually arrive instead of trusting the header with one big allocation.
    let mut payload = Vec::new();
    reader
        .take(u64::from(announced))
        .read_to_end(&mut payload)?;
    if payload.len() < len {
        let pending = HEADER_LEN + payload.len();
        return Err(FrameError::Truncated { pending }.into());
    }
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::super::FixedSize;
    use super::*;

    /// Hands out one byte per call and fails every other call with
    /// `Interrupted`, the harshest legal behaviour of a blocking stream.
    struct Trickle<'a> {
        data: &'a [u8],
        interrupt: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = out.len().min(self.data.len()).min(1);
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn framed_reader_survives_one_byte_reads_and_interrupts() {
        let data = [0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0];
        let trickle = Trickle {
            data: &data,
            interrupt: false,
        };
        let mut reader = FramedReader::new(trickle, LengthPrefixed::new());
        assert_eq!(reader.read_frame().unwrap(), Some(b"hi".to_vec()));
        assert_eq!(reader.read_frame().unwrap(), Some(Vec::new()));
        assert_eq!(reader.read_frame().unwrap(), None);
    }

    #[test]
    fn read_length_prefixed_does_not_over_read() {
        let data = [0, 0, 0, 1, b'x', b'r', b'e', b's', b't'];
        let mut stream = Trickle {
            data: &data,
            interrupt: false,
        };
        let frame = read_length_prefixed(&mut stream, 16).unwrap();
        assert_eq!(frame, Some(b"x".to_vec()));
        assert_eq!(stream.data, b"rest");
    }

    #[test]
    fn read_length_prefixed_rejects_before_reading_payload() {
        let data = [0x7f, 0xff, 0xff, 0xff, b'p'];
        let mut stream = &data[..];
        let err = read_length_prefixed(&mut stream, 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(stream, b"p", "payload untouched");
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<FrameError>());
        assert_eq!(
            inner,
            Some(&FrameError::TooLarge {
                len: 0x7fff_ffff,
                max: 1024
            })
        );
    }

    #[test]
    fn read_length_prefixed_truncation() {
        for data in [&[0, 0][..], &[0, 0, 0, 3, b'a']] {
            let err = read_length_prefixed(&mut &data[..], 16).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn write_frame_writes_nothing_on_encode_error() {
        let mut wire = Vec::new();
        let err = write_frame(&mut wire, &mut FixedSize::new(2), b"abc").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(wire.is_empty());
    }
}
