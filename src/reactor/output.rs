//! [`Output`]: a connection's queue of bytes waiting for the socket to take them.

use std::io;

use crate::transport::Duplex;

/// Bytes queued for one connection, sent in order as the socket accepts them.
///
/// The storage is allocated on the first queued byte (or is the handler's own buffer, taken as it is)
/// and handed back as soon as everything has been sent, to the loop's small pool of buffers or freed,
/// so the tens of thousands of idle connections an event loop holds cost no buffer memory at all.
/// Sent bytes are dropped from the front by moving a cursor; the live bytes are moved back only when
/// the dead prefix is larger than they are, so each byte is copied O(1) times.
#[derive(Debug, Default)]
pub(crate) struct Output {
    buf: Vec<u8>,
    sent: usize,
}

/// What [`Output::flush`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything was sent; the storage is released.
    All,
    /// The socket is full; the rest waits for it to become writable.
    Partly,
}

impl Output {
    /// Bytes waiting to be sent.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.sent
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The vector to append encoded bytes to (compacted first if the sent prefix dominates).
    pub(crate) fn tail(&mut self) -> &mut Vec<u8> {
        if self.sent > 0 && self.sent >= self.len() {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        &mut self.buf
    }

    /// Whether no storage is held (nothing queued since the last was sent).
    pub(crate) fn unallocated(&self) -> bool {
        self.buf.capacity() == 0
    }

    /// Gives an unallocated queue `storage` (empty) to append to.
    pub(crate) fn provide(&mut self, storage: Vec<u8>) {
        debug_assert!(self.unallocated() && storage.is_empty());
        self.buf = storage;
        self.sent = 0;
    }

    /// Drops everything queued (an aborted connection), releasing the storage.
    pub(crate) fn clear(&mut self) {
        *self = Output::default();
    }

    /// Queues `bytes` as they are, taking the buffer itself when nothing else is queued (no copy).
    pub(crate) fn append_owned(&mut self, bytes: Vec<u8>) -> Option<Vec<u8>> {
        if self.is_empty() {
            let old = std::mem::replace(&mut self.buf, bytes);
            self.sent = 0;
            return Some(old).filter(|old| old.capacity() > 0);
        }
        self.tail().extend_from_slice(&bytes);
        Some(bytes)
    }

    /// Takes the storage once everything is sent, for reuse (`None` while bytes wait, or when there
    /// is none).
    pub(crate) fn take_storage(&mut self) -> Option<Vec<u8>> {
        if !self.is_empty() || self.buf.capacity() == 0 {
            return None;
        }
        self.sent = 0;
        Some(std::mem::take(&mut self.buf))
    }

    /// Writes as much as the non-blocking socket takes; returns how many bytes went and whether all did.
    /// Once all did, the storage is the caller's to [take](Self::take_storage) (for reuse) or drop.
    ///
    /// # Errors
    /// The socket's error (`EPIPE`, `ECONNRESET`): the peer is gone and the rest can never be sent.
    pub(crate) fn flush(&mut self, io: &dyn Duplex) -> io::Result<(usize, Flushed)> {
        let mut written = 0;
        while self.sent < self.buf.len() {
            match io.write(&self.buf[self.sent..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the socket accepted no bytes",
                    ));
                }
                Ok(n) => {
                    self.sent += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((written, Flushed::Partly));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((written, Flushed::All))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MockConn;

    #[test]
    fn compacts_and_releases() {
        let mut out = Output::default();
        assert_eq!(out.buf.capacity(), 0, "nothing allocated while idle");
        out.tail().extend_from_slice(b"hello");
        out.sent = 3;
        out.tail().extend_from_slice(b"!");
        assert_eq!(&out.buf[out.sent..], b"lo!");
        let conn = MockConn::new();
        let probe = conn.probe();
        assert_eq!(out.flush(&conn).unwrap(), (3, Flushed::All));
        assert_eq!(probe.written(), b"lo!");
        assert!(out.take_storage().is_some_and(|s| s.capacity() > 0));
        assert_eq!(out.buf.capacity(), 0, "released once drained");
        assert!(out.take_storage().is_none());
    }

    #[test]
    fn an_owned_buffer_is_queued_without_a_copy_when_nothing_waits() {
        let mut out = Output::default();
        let bytes = b"chunk".to_vec();
        let at = bytes.as_ptr();
        assert!(out.append_owned(bytes).is_none(), "nothing to give back");
        assert_eq!(out.buf.as_ptr(), at, "the buffer itself");
        let more = b"!".to_vec();
        assert_eq!(
            out.append_owned(more).as_deref(),
            Some(&b"!"[..]),
            "copied, handed back"
        );
        assert_eq!(&out.buf[..], b"chunk!");
    }
}
