//! Message framing over byte streams: solving the "sticky packet" (粘包)
//! problem.
//!
//! # The problem
//!
//! TCP (and any `SOCK_STREAM` socket, including Unix stream sockets) delivers
//! an ordered stream of *bytes*, not of messages. Two `send` calls of 5 bytes
//! each may arrive as one 10-byte `recv` ("sticky packets", 粘包), as 3 + 7
//! bytes ("half packets", 半包), or as ten 1-byte reads; the kernel, Nagle's
//! algorithm, the network and the peer's buffer sizes all decide, and they
//! decide differently on every run. A handler that treats one `recv` as one
//! message works on localhost and fails in production.
//!
//! Two popular "fixes" are wrong:
//!
//! * **Sleeping between sends** only makes coalescing less likely on an idle
//!   loopback; it guarantees nothing (a slow reader still sees both messages
//!   at once, a congested path still splits them), and it throttles
//!   throughput.
//! * **An ad-hoc sentinel** such as appending `##` breaks as soon as a
//!   payload contains the sentinel, and the reader must still handle a
//!   sentinel split across two reads (`#` | `#`). Delimiters only work when
//!   the protocol guarantees the delimiter never occurs in a payload and the
//!   reader buffers properly, which is exactly what [`Lines`] does.
//!
//! # The remedies
//!
//! The sender must encode where each message ends, and the receiver must
//! buffer bytes until a whole message is there:
//!
//! 1. **Length prefix** ([`LengthPrefixed`]): a 4-byte big-endian length,
//!    then the payload. Binary safe; the usual choice for new protocols.
//! 2. **Delimiter** ([`Lines`]): messages end with `\n` (`\r\n` accepted).
//!    Human readable; payloads must not contain the delimiter.
//! 3. **Fixed size** ([`FixedSize`]): every record has the same length.
//!
//! Every decoder enforces a maximum frame size *before* buffering the
//! payload, so a peer cannot make the server allocate unbounded memory.
//!
//! # Using it
//!
//! A [`Decoder`] cuts frames off the front of a [`FrameBuf`]; an [`Encoder`]
//! appends an item and its framing to a `Vec<u8>`. In a blocking stream
//! handler, wrap the stream in a [`FramedReader`] and send with
//! [`write_frame`]:
//!
//! ```
//! use socketserver::framing::{write_frame, FramedReader, LengthPrefixed};
//!
//! // Two messages written back to back arrive as one undivided byte stream...
//! let mut wire = Vec::new();
//! write_frame(&mut wire, &mut LengthPrefixed::new(), b"hello")?;
//! write_frame(&mut wire, &mut LengthPrefixed::new(), b"world")?;
//!
//! // ...and the reader recovers the boundaries.
//! let mut reader = FramedReader::new(wire.as_slice(), LengthPrefixed::new());
//! assert_eq!(reader.read_frame()?, Some(b"hello".to_vec()));
//! assert_eq!(reader.read_frame()?, Some(b"world".to_vec()));
//! assert_eq!(reader.read_frame()?, None); // clean EOF
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! In a non-blocking event loop, append each chunk as it arrives and decode
//! until the decoder asks for more bytes:
//!
//! ```
//! use socketserver::framing::{Decoder, FrameBuf, Lines};
//!
//! let mut decoder = Lines::new();
//! let mut buf = FrameBuf::new();
//! let mut frames = Vec::new();
//! for chunk in [&b"GET /a\r\nGE"[..], b"T /b\n", b"QUIT"] {
//!     buf.extend_from_slice(chunk);
//!     while let Some(line) = decoder.decode(&mut buf)? {
//!         frames.push(line);
//!     }
//! }
//! // At EOF, `Lines` hands out a final line that lacks its newline.
//! frames.extend(decoder.decode_eof(&mut buf)?);
//! assert_eq!(frames, [&b"GET /a"[..], b"GET /b", b"QUIT"]);
//! # Ok::<(), socketserver::framing::FrameError>(())
//! ```

mod blocking;
mod buffer;
mod error;
mod fixed;
mod length;
mod lines;
mod raw;

pub use self::blocking::{FramedReader, read_length_prefixed, write_frame, write_length_prefixed};
pub use self::buffer::FrameBuf;
pub use self::error::FrameError;
pub use self::fixed::FixedSize;
pub use self::length::{DEFAULT_MAX_FRAME_LEN, HEADER_LEN, LengthPrefixed};
pub use self::lines::{DEFAULT_MAX_LINE_LEN, Lines};
pub use self::raw::RawBytes;

/// Splits a byte stream into frames, incrementally.
///
/// Implementations look at the front of the buffer, and either remove exactly
/// one complete frame from it, or leave it untouched and report that more
/// bytes are needed. Because the decoder never reads from a socket itself, the
/// same codec serves blocking handlers (through [`FramedReader`]) and event
/// loops (by feeding [`FrameBuf::extend_from_slice`]).
///
/// # Examples
///
/// ```
/// use socketserver::framing::{Decoder, FixedSize, FrameBuf};
///
/// let mut decoder = FixedSize::new(2);
/// let mut buf = FrameBuf::new();
/// buf.extend_from_slice(b"abc");
/// assert_eq!(decoder.decode(&mut buf)?, Some(b"ab".to_vec()));
/// assert_eq!(decoder.decode(&mut buf)?, None); // "c" waits for its partner
/// assert_eq!(buf.as_slice(), b"c");
/// # Ok::<(), socketserver::framing::FrameError>(())
/// ```
pub trait Decoder {
    /// What one decoded frame is.
    type Frame;

    /// Removes one complete frame from the front of `buf`, or returns
    /// `Ok(None)` (consuming nothing) if `buf` does not hold one yet.
    ///
    /// # Errors
    ///
    /// Returns [`FrameError::TooLarge`] as soon as the buffered bytes prove
    /// the frame exceeds the codec's limit. Errors are fatal for the stream.
    fn decode(&mut self, buf: &mut FrameBuf) -> Result<Option<Self::Frame>, FrameError>;

    /// Like [`decode`](Self::decode), but called once the peer has closed its
    /// side, so no more bytes will arrive. Returns `Ok(None)` on a clean end
    /// (nothing left over).
    ///
    /// # Errors
    ///
    /// The default implementation returns [`FrameError::Truncated`] when
    /// bytes of an incomplete frame remain, plus any error of `decode`.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{Decoder, FrameBuf, FrameError, LengthPrefixed};
    ///
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(&[0, 0, 0, 9, b'h', b'i']); // promises 9 bytes, has 2
    /// let err = LengthPrefixed::new().decode_eof(&mut buf).unwrap_err();
    /// assert_eq!(err, FrameError::Truncated { pending: 6 });
    /// ```
    fn decode_eof(&mut self, buf: &mut FrameBuf) -> Result<Option<Self::Frame>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(FrameError::Truncated { pending: buf.len() }),
        }
    }
}

/// Appends an item, with its framing, to an output buffer.
///
/// Encoding into a `Vec<u8>` (rather than writing to a socket) lets the caller
/// batch several frames into one `write`, and lets an event loop queue the
/// bytes until the socket is writable.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{Encoder, Lines};
///
/// let mut out = Vec::new();
/// Lines::new().encode(b"one", &mut out)?;
/// Lines::new().encode(b"two", &mut out)?;
/// assert_eq!(out, b"one\ntwo\n");
/// # Ok::<(), socketserver::framing::FrameError>(())
/// ```
pub trait Encoder<Item: ?Sized> {
    /// Appends the framed `item` to `out`.
    ///
    /// # Errors
    ///
    /// Returns an error, leaving `out` unchanged, when `item` cannot be framed
    /// so that the matching decoder gets it back unchanged (too long, contains
    /// the delimiter, wrong record size).
    fn encode(&mut self, item: &Item, out: &mut Vec<u8>) -> Result<(), FrameError>;

    /// Whether [`encode`](Self::encode) appends the item's own bytes, unframed
    /// ([`RawBytes`]): then an owned buffer can be sent as it is, without a copy
    /// (the event loop's `Conn::send_vec`). `false` unless a codec says so.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{Encoder, Lines, RawBytes};
    /// assert!(Encoder::<[u8]>::verbatim(&RawBytes));
    /// assert!(!Encoder::<[u8]>::verbatim(&Lines::new()));
    /// ```
    fn verbatim(&self) -> bool {
        false
    }
}
