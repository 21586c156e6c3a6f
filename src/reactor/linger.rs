//! [`Lingering`]: the connections a draining loop has closed, kept open until their peers close too.
//!
//! A drain closes each connection at a message boundary. A peer may have sent its next message just
//! then: closing a socket with bytes unread makes the kernel answer with a reset, so the peer sees
//! "connection reset" instead of end of stream and cannot tell a lost request from a clean close.
//! So the loop sends end of stream (`SHUT_WR`), keeps the socket, and reads and drops whatever still
//! comes until the peer closes in turn or [`LINGER`](crate::sys::LINGER) passes (Apache's
//! `lingering_close`, nginx's `lingering_timeout`). By then the handler has seen the connection
//! close; lingering is the socket's business only.

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use crate::sys::epoll::{Epoll, READABLE};
use crate::transport::Duplex;

/// The first epoll token of a lingering socket; socket `fd` has `FIRST - fd`. Connection tokens are
/// `generation << 32 | slot`, which could only reach these values with two billion slots.
const FIRST: u64 = u64::MAX - 4;
const LAST: u64 = FIRST - i32::MAX as u64;

/// Closed connections waiting for their peers' end of stream, each until its deadline.
#[derive(Debug, Default)]
pub(crate) struct Lingering {
    socks: HashMap<RawFd, (Arc<dyn Duplex>, Instant)>,
}

impl Lingering {
    /// Sends end of stream on `io` (descriptor `fd`, out of the epoll set) and keeps it, watched for
    /// input, until its peer closes or `until`. A socket that cannot be watched closes at once.
    pub(crate) fn start(&mut self, epoll: &Epoll, io: Arc<dyn Duplex>, fd: RawFd, until: Instant) {
        if io.shutdown(Shutdown::Write).is_ok() && epoll.add(fd, READABLE, token(fd)).is_ok() {
            self.socks.insert(fd, (io, until));
        }
    }

    /// The lingering socket an epoll token names, if it names one.
    pub(crate) fn fd_of(token: u64) -> Option<RawFd> {
        (LAST..=FIRST)
            .contains(&token)
            .then(|| RawFd::try_from(FIRST - token).ok())
            .flatten()
    }

    /// `fd` is readable: drops what came; closes it once its peer has closed (or it failed).
    pub(crate) fn ready(&mut self, epoll: &Epoll, fd: RawFd) {
        let Some((io, _)) = self.socks.get(&fd) else {
            return;
        };
        let mut sink = [0u8; 4096];
        let done = loop {
            match io.read(&mut sink) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break e.kind() != io::ErrorKind::WouldBlock,
            }
        };
        if done {
            self.close(epoll, fd);
        }
    }

    /// Closes the sockets whose deadline has passed; returns the next deadline.
    pub(crate) fn expire(&mut self, epoll: &Epoll, now: Instant) -> Option<Instant> {
        let due: Vec<RawFd> = self
            .socks
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in due {
            self.close(epoll, fd);
        }
        self.socks.values().map(|(_, until)| *until).min()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    /// Closes every lingering socket.
    pub(crate) fn clear(&mut self, epoll: &Epoll) {
        for fd in self.socks.keys() {
            let _ = epoll.delete(*fd);
        }
        self.socks.clear();
    }

    fn close(&mut self, epoll: &Epoll, fd: RawFd) {
        if self.socks.remove(&fd).is_some() {
            let _ = epoll.delete(fd);
        }
    }
}

fn token(fd: RawFd) -> u64 {
    FIRST - u64::try_from(fd).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_descriptor_and_nothing_else() {
        for fd in [0, 3, 1000, i32::MAX] {
            assert_eq!(Lingering::fd_of(token(fd)), Some(fd));
        }
        // The loop's own tokens and connection tokens are not lingering sockets.
        for other in [
            u64::MAX,
            u64::MAX - 1,
            u64::MAX - 2,
            0,
            1 << 32 | 7,
            LAST - 1,
        ] {
            assert_eq!(Lingering::fd_of(other), None, "{other:#x}");
        }
    }
}
