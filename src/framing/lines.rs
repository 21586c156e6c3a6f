//! Remedy 2: a delimiter after every payload (`\n`, with `\r\n` accepted).

use super::{Decoder, Encoder, FrameBuf, FrameError};

/// Default limit on a line's content: 64 KiB.
///
/// # Examples
///
/// ```
/// use socketserver::framing::{Decoder, FrameBuf, Lines, DEFAULT_MAX_LINE_LEN};
/// assert_eq!(DEFAULT_MAX_LINE_LEN, 64 * 1024);
/// let mut buf = FrameBuf::new();
/// buf.extend_from_slice(&vec![b'a'; DEFAULT_MAX_LINE_LEN + 1]); // no `\n` in sight
/// assert!(Lines::new().decode(&mut buf).is_err());
/// ```
pub const DEFAULT_MAX_LINE_LEN: usize = 64 * 1024;

/// Frames as lines terminated by `\n`; a `\r` right before the `\n` is part
/// of the terminator, so both Unix and network (`\r\n`) line endings decode.
///
/// Frames are bytes (`Vec<u8>`), not `String`: the codec is binary safe apart
/// from the terminator, and the caller decides whether to require UTF-8.
///
/// * **Limit.** A line's content (without its terminator) may be at most
///   [`max_line_len`](Self::max_line_len) bytes. The decoder fails as soon as
///   that many bytes have arrived without a terminator, so it never buffers
///   more than `max_line_len + 1` bytes of one line.
/// * **EOF.** Like [`std::io::BufRead::lines`], a final line without `\n`
///   is returned as is by [`decode_eof`](Decoder::decode_eof) (including a
///   trailing `\r`, which only counts as a terminator before `\n`).
/// * **Encoding** appends `\n` and rejects items that contain `\n` or end
///   in `\r`, which would not decode back to the same bytes.
///
/// The decoder remembers how far it has already searched for `\n`, so a long
/// line arriving in small chunks is scanned once, not once per chunk; use one
/// `Lines` value per [`FrameBuf`].
///
/// # Examples
///
/// ```
/// use socketserver::framing::{Decoder, FrameBuf, Lines};
///
/// let mut lines = Lines::new();
/// let mut buf = FrameBuf::new();
/// buf.extend_from_slice(b"HELO example.org\r\nQUIT\n");
/// assert_eq!(lines.decode(&mut buf)?, Some(b"HELO example.org".to_vec()));
/// assert_eq!(lines.decode(&mut buf)?, Some(b"QUIT".to_vec()));
/// assert_eq!(lines.decode(&mut buf)?, None);
/// # Ok::<(), socketserver::framing::FrameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Lines {
    max_line_len: usize,
    /// Bytes at the front of the buffer already known to hold no `\n`.
    scanned: usize,
}

impl Lines {
    /// Creates a codec with the [`DEFAULT_MAX_LINE_LEN`] limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{Lines, DEFAULT_MAX_LINE_LEN};
    ///
    /// assert_eq!(Lines::new().max_line_len(), DEFAULT_MAX_LINE_LEN);
    /// ```
    pub fn new() -> Self {
        Self::with_max_line_len(DEFAULT_MAX_LINE_LEN)
    }

    /// Creates a codec that rejects lines longer than `max` bytes (terminator
    /// not counted); pick the longest line the protocol really needs.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::{Decoder, FrameBuf, FrameError, Lines};
    ///
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(b"abcd"); // no newline yet, but already too long
    /// let err = Lines::with_max_line_len(3).decode(&mut buf).unwrap_err();
    /// assert_eq!(err, FrameError::TooLarge { len: 4, max: 3 });
    ///
    /// // The length is the line's own, not what happens to be buffered behind it:
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(b"abcdef\r\nnext line\nand another\n");
    /// let err = Lines::with_max_line_len(3).decode(&mut buf).unwrap_err();
    /// assert_eq!(err, FrameError::TooLarge { len: 6, max: 3 });
    /// ```
    pub fn with_max_line_len(max: usize) -> Self {
        Self {
            max_line_len: max,
            scanned: 0,
        }
    }

    /// The longest line content this codec accepts, in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Lines;
    ///
    /// assert_eq!(Lines::with_max_line_len(80).max_line_len(), 80);
    /// ```
    pub fn max_line_len(&self) -> usize {
        self.max_line_len
    }

    fn too_large(&self, len: usize) -> FrameError {
        FrameError::TooLarge {
            len,
            max: self.max_line_len,
        }
    }
}

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for Lines {
    type Frame = Vec<u8>;

    fn decode(&mut self, buf: &mut FrameBuf) -> Result<Option<Vec<u8>>, FrameError> {
        let bytes = buf.as_slice();
        // A `\n` further out than content + `\r` + `\n` would end a too-long line.
        let window = bytes.len().min(self.max_line_len.saturating_add(2));
        let from = self.scanned.min(window);
        let Some(offset) = bytes[from..window].iter().position(|&b| b == b'\n') else {
            self.scanned = window;
            // Fail now if the line is already provably too long (a trailing
            // `\r` may still turn out to be part of the terminator). The length
            // reported is the line's own when its end has arrived (later lines may be
            // buffered behind it), else what has arrived of it.
            let line = match bytes[window..].iter().position(|&b| b == b'\n') {
                Some(offset) => &bytes[..window + offset],
                None => bytes,
            };
            let content = match line.last() {
                Some(b'\r') => line.len() - 1,
                _ => line.len(),
            };
            if content > self.max_line_len {
                return Err(self.too_large(content));
            }
            return Ok(None);
        };
        let newline = from + offset;
        let content = match newline.checked_sub(1).map(|i| bytes[i]) {
            Some(b'\r') => newline - 1,
            _ => newline,
        };
        if content > self.max_line_len {
            return Err(self.too_large(content));
        }
        self.scanned = 0;
        let line = buf.split_to(content);
        buf.consume(newline + 1 - content);
        Ok(Some(line))
    }

    /// Returns the next line, or the final unterminated line verbatim.
    fn decode_eof(&mut self, buf: &mut FrameBuf) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        if buf.len() > self.max_line_len {
            return Err(self.too_large(buf.len()));
        }
        self.scanned = 0;
        Ok(Some(buf.split_to(buf.len())))
    }
}

impl Encoder<[u8]> for Lines {
    fn encode(&mut self, item: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        if item.len() > self.max_line_len {
            return Err(self.too_large(item.len()));
        }
        if let Some(index) = item.iter().position(|&b| b == b'\n') {
            return Err(FrameError::DelimiterInPayload { index });
        }
        if item.last() == Some(&b'\r') {
            let index = item.len() - 1;
            return Err(FrameError::DelimiterInPayload { index });
        }
        out.reserve(item.len() + 1);
        out.extend_from_slice(item);
        out.push(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut Lines, bytes: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut buf = FrameBuf::new();
        buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        while let Some(line) = codec.decode_eof(&mut buf)? {
            frames.push(line);
        }
        Ok(frames)
    }

    #[test]
    fn encodes_exact_bytes() {
        let mut out = Vec::new();
        Lines::new().encode(b"a\rb", &mut out).unwrap();
        Lines::new().encode(b"", &mut out).unwrap();
        assert_eq!(out, b"a\rb\n\n");
    }

    #[test]
    fn crlf_and_lf_both_terminate() {
        let frames = decode_all(&mut Lines::new(), b"one\r\ntwo\n\r\n\nx\ry\n").unwrap();
        assert_eq!(frames, [&b"one"[..], b"two", b"", b"", b"x\ry"]);
    }

    #[test]
    fn cr_split_from_lf_across_chunks() {
        let mut codec = Lines::with_max_line_len(3);
        let mut buf = FrameBuf::new();
        buf.extend_from_slice(b"abc\r");
        assert_eq!(
            codec.decode(&mut buf),
            Ok(None),
            "\\r may start a terminator"
        );
        buf.extend_from_slice(b"\n");
        assert_eq!(codec.decode(&mut buf), Ok(Some(b"abc".to_vec())));
    }

    #[test]
    fn final_line_without_newline_is_returned_at_eof() {
        let frames = decode_all(&mut Lines::new(), b"a\nlast\r").unwrap();
        assert_eq!(frames, [&b"a"[..], b"last\r"]);
    }

    #[test]
    fn limit_enforced_before_newline_arrives() {
        let mut codec = Lines::with_max_line_len(4);
        let mut buf = FrameBuf::new();
        buf.extend_from_slice(b"abcd");
        assert_eq!(codec.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"e");
        assert_eq!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { len: 5, max: 4 })
        );
        assert_eq!(buf.len(), 5, "nothing beyond the limit was buffered");
    }

    #[test]
    fn too_long_complete_line_is_rejected() {
        let err = decode_all(&mut Lines::with_max_line_len(2), b"abc\nok\n");
        assert_eq!(err, Err(FrameError::TooLarge { len: 3, max: 2 }));
    }

    #[test]
    fn incremental_scan_finds_newline_in_later_chunk() {
        let mut codec = Lines::new();
        let mut buf = FrameBuf::new();
        for chunk in [&b"ab"[..], b"cd", b"e\nfg"] {
            buf.extend_from_slice(chunk);
            if let Some(line) = codec.decode(&mut buf).unwrap() {
                assert_eq!(line, b"abcde");
            }
        }
        assert_eq!(buf.as_slice(), b"fg");
    }

    #[test]
    fn encode_rejects_unrepresentable_lines() {
        let mut out = Vec::new();
        let mut codec = Lines::with_max_line_len(8);
        assert_eq!(
            codec.encode(b"a\nb", &mut out),
            Err(FrameError::DelimiterInPayload { index: 1 })
        );
        assert_eq!(
            codec.encode(b"ab\r", &mut out),
            Err(FrameError::DelimiterInPayload { index: 2 })
        );
        assert_eq!(
            codec.encode(b"123456789", &mut out),
            Err(FrameError::TooLarge { len: 9, max: 8 })
        );
        assert!(out.is_empty());
    }
}
