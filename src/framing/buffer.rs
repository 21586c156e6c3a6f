//! [`FrameBuf`]: the receive buffer decoders cut frames from.

use std::fmt;
use std::io::{self, Read};

/// A growable byte buffer that is cheap to consume from the front.
///
/// Bytes arrive at the back (from [`extend_from_slice`](Self::extend_from_slice)
/// or [`read_from`](Self::read_from)) and decoders remove whole frames from
/// the front. Consuming only moves a read offset; the live bytes are moved
/// back to the start of the allocation when the dead prefix is at least as
/// large as they are, so every byte is copied O(1) times on average instead of
/// once per frame (as `Vec::drain(..n)` would do).
///
/// # Examples
///
/// ```
/// use socketserver::framing::FrameBuf;
///
/// let mut buf = FrameBuf::new();
/// buf.extend_from_slice(b"hello world");
/// buf.consume(6);
/// assert_eq!(buf.as_slice(), b"world");
/// assert_eq!(buf.split_to(3), b"wor");
/// assert_eq!(buf.len(), 2);
/// ```
#[derive(Default, Clone)]
pub struct FrameBuf {
    /// Storage; `data[..]` is always initialised, so reads can target
    /// `data[end..]` without `unsafe`.
    data: Vec<u8>,
    /// Start of the live bytes.
    start: usize,
    /// End of the live bytes. Invariant: `start <= end <= data.len()`.
    end: usize,
}

impl FrameBuf {
    /// Creates an empty buffer without allocating.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    ///
    /// assert!(FrameBuf::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty buffer with room for `capacity` bytes, to avoid
    /// regrowing when the typical frame size is known.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    ///
    /// let buf = FrameBuf::with_capacity(4096);
    /// assert_eq!(buf.len(), 0);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            data: Vec::with_capacity(capacity),
            start: 0,
            end: 0,
        }
    }

    /// Number of buffered (not yet consumed) bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    ///
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(b"abc");
    /// assert_eq!(buf.len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether no bytes are buffered: at EOF this tells a clean end of stream
    /// from a truncated frame.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    ///
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(b"x");
    /// buf.consume(1);
    /// assert!(buf.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The buffered bytes, oldest first; decoders inspect this to find a
    /// frame boundary.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    ///
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(b"ab");
    /// buf.extend_from_slice(b"cd");
    /// assert_eq!(buf.as_slice(), b"abcd");
    /// ```
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Appends bytes received from the peer, e.g. a chunk handed over by an
    /// event loop.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    ///
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(b"chunk");
    /// assert_eq!(buf.as_slice(), b"chunk");
    /// ```
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        let new_end = self.end + bytes.len();
        self.data[self.end..new_end].copy_from_slice(bytes);
        self.end = new_end;
    }

    /// Discards the first `n` buffered bytes (all of them if `n` is larger
    /// than [`len`](Self::len)), e.g. a header that has been parsed.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    ///
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(b"abc");
    /// buf.consume(2);
    /// assert_eq!(buf.as_slice(), b"c");
    /// buf.consume(100);
    /// assert!(buf.is_empty());
    /// ```
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            // Empty: rewinding is free and keeps the buffer compact.
            self.start = 0;
            self.end = 0;
        }
    }

    /// Removes the first `n` buffered bytes (at most [`len`](Self::len)) and
    /// returns them as an owned frame.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    ///
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(b"frame+rest");
    /// assert_eq!(buf.split_to(5), b"frame");
    /// assert_eq!(buf.as_slice(), b"+rest");
    /// ```
    pub fn split_to(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.len());
        let frame = self.data[self.start..self.start + n].to_vec();
        self.consume(n);
        frame
    }

    /// Takes every buffered byte as one frame. When they fill most of the storage (a large read
    /// taken whole, as [`RawBytes`](super::RawBytes) does), the storage itself is handed over, without
    /// a copy; a few bytes in a large buffer are copied out instead, so a frame kept for long never
    /// holds much more memory than its length.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(b"a whole chunk");
    /// assert_eq!(buf.take(), b"a whole chunk");
    /// assert!(buf.is_empty());
    /// ```
    pub fn take(&mut self) -> Vec<u8> {
        if self.start == 0 && self.end * 2 >= self.data.len() {
            self.data.truncate(self.end);
            self.end = 0;
            return std::mem::take(&mut self.data);
        }
        self.split_to(self.len())
    }

    /// A buffer whose storage is `data` (its length is the room for reading; its bytes are not
    /// kept), for the event loop's pool of read buffers.
    pub(crate) fn from_storage(data: Vec<u8>) -> Self {
        Self {
            data,
            start: 0,
            end: 0,
        }
    }

    /// The storage, for the pool (whatever it still buffers is dropped).
    pub(crate) fn into_storage(self) -> Vec<u8> {
        self.data
    }

    /// How much storage it holds, in bytes.
    pub(crate) fn storage(&self) -> usize {
        self.data.len()
    }

    /// The room after the buffered bytes, to read into; [`filled`](Self::filled) then says how much
    /// was.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.end..]
    }

    /// `n` bytes were read into [`spare`](Self::spare).
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// Discards every buffered byte, e.g. after a fatal decode error.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    ///
    /// let mut buf = FrameBuf::new();
    /// buf.extend_from_slice(b"junk");
    /// buf.clear();
    /// assert!(buf.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.consume(self.len());
    }

    /// Performs one `read` of at most `max` bytes from `reader` straight into
    /// the buffer's spare room, without an intermediate copy, and returns the
    /// number of bytes read (`0` means end of stream, or `max == 0`).
    ///
    /// # Errors
    ///
    /// Returns whatever error `reader.read` returns, including
    /// [`io::ErrorKind::Interrupted`] and [`io::ErrorKind::WouldBlock`]; the
    /// buffer is unchanged in that case.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::FrameBuf;
    ///
    /// let mut buf = FrameBuf::new();
    /// let mut src: &[u8] = b"abcdef";
    /// assert_eq!(buf.read_from(&mut src, 4)?, 4);
    /// assert_eq!(buf.read_from(&mut src, 4)?, 2);
    /// assert_eq!(buf.read_from(&mut src, 4)?, 0);
    /// assert_eq!(buf.as_slice(), b"abcdef");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R, max: usize) -> io::Result<usize> {
        self.make_room(max);
        let spare = &mut self.data[self.end..self.end + max];
        // A misbehaving reader may claim more than it was given; never trust it.
        let n = reader.read(spare)?.min(max);
        self.end += n;
        Ok(n)
    }

    /// Ensures `data[end..end + additional]` exists, compacting first when
    /// the consumed prefix is at least as large as the live bytes (so the copy
    /// is paid for by bytes already consumed).
    fn make_room(&mut self, additional: usize) {
        if self.data.len() - self.end >= additional {
            return;
        }
        if self.start > 0 && self.start >= self.len() {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < additional {
            self.data.resize(self.end + additional, 0);
        }
    }
}

impl fmt::Debug for FrameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuf")
            .field("len", &self.len())
            .field("capacity", &self.data.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_then_extend_compacts_and_keeps_order() {
        let mut buf = FrameBuf::new();
        buf.extend_from_slice(b"0123456789");
        buf.consume(8);
        buf.extend_from_slice(b"abcdefghij");
        assert_eq!(buf.as_slice(), b"89abcdefghij");
        assert_eq!(buf.start, 0, "dead prefix was reclaimed");
    }

    #[test]
    fn steady_state_does_not_grow() {
        let mut buf = FrameBuf::new();
        for _ in 0..10_000 {
            buf.extend_from_slice(b"abcdefgh");
            buf.consume(5);
            if buf.len() > 100 {
                buf.consume(buf.len() - 3);
            }
        }
        assert!(
            buf.data.len() < 1024,
            "storage stayed small: {}",
            buf.data.len()
        );
    }

    #[test]
    fn take_hands_over_a_full_buffer_and_copies_a_sparse_one() {
        let mut buf = FrameBuf::from_storage(vec![0; 64]);
        buf.spare()[..40].fill(b'x');
        buf.filled(40);
        let taken = buf.take();
        assert_eq!(taken.len(), 40);
        assert_eq!(taken.capacity(), 64, "the storage itself");
        assert_eq!(buf.storage(), 0);
        let mut buf = FrameBuf::from_storage(vec![0; 64]);
        buf.spare()[..3].copy_from_slice(b"abc");
        buf.filled(3);
        let taken = buf.take();
        assert_eq!(taken, b"abc");
        assert!(taken.capacity() < 64, "a copy of the few bytes");
        assert_eq!(buf.storage(), 64, "the storage stays, for the pool");
    }

    #[test]
    fn lying_reader_cannot_overrun() {
        struct Liar;
        impl Read for Liar {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Ok(usize::MAX)
            }
        }
        let mut buf = FrameBuf::new();
        assert_eq!(buf.read_from(&mut Liar, 16).unwrap(), 16);
        assert_eq!(buf.len(), 16);
    }
}
