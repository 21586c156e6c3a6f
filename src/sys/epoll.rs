//! `epoll(7)`: the readiness queue of the event-loop strategy.
//!
//! A thin, safe wrapper over the three epoll syscalls, kept next to the crate's other syscalls.
//! Descriptors are watched level-triggered unless registered with [`EDGE`]: level-triggered, one
//! that is still ready after a report is looked at again on the next wait (a second `poll` of the
//! socket in the kernel) and reported again; edge-triggered, it is reported once per change, and
//! whoever reads it must remember what it left unread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::context;

/// Readable (or the peer closed its side).
pub(crate) const READABLE: u32 = libc::EPOLLIN as u32;
/// Writable.
pub(crate) const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// Edge-triggered: reported when readiness changes (new bytes arrive, room opens up), not for as
/// long as it lasts.
pub(crate) const EDGE: u32 = libc::EPOLLET as u32;
/// The peer shut its side (its FIN came): asked for by edge-triggered watchers, which must read on
/// to the end of stream even after a read that did not fill its buffer.
pub(crate) const READ_CLOSED: u32 = libc::EPOLLRDHUP as u32;
/// Hung up or in error: reported whatever the interest, never needs asking for.
pub(crate) const HUP_OR_ERROR: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// One readiness report: the token the descriptor was registered with and what it is ready for.
pub(crate) type Event = libc::epoll_event;

/// The token of an event.
pub(crate) fn token(event: &Event) -> u64 {
    event.u64
}

/// The readiness bits of an event ([`READABLE`], [`WRITABLE`], [`HUP_OR_ERROR`]).
pub(crate) fn readiness(event: &Event) -> u32 {
    event.events
}

/// An epoll instance (close-on-exec).
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with an integer argument.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(context(io::Error::last_os_error(), "epoll_create1(2)"));
        }
        // SAFETY: the kernel just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call; a bad `fd` is an error
        // return (EBADF/ENOENT), never undefined behaviour.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            let name = match op {
                libc::EPOLL_CTL_ADD => "EPOLL_CTL_ADD",
                libc::EPOLL_CTL_MOD => "EPOLL_CTL_MOD",
                _ => "EPOLL_CTL_DEL",
            };
            return Err(context(
                io::Error::last_os_error(),
                format!("epoll_ctl(2) {name} for fd {fd}"),
            ));
        }
        Ok(())
    }

    /// Watches `fd` for `interest`, reporting it with `token`.
    pub(crate) fn add(&self, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest, token)
    }

    /// Changes what `fd` is watched for (an empty `interest` still reports hang-ups and errors).
    pub(crate) fn modify(&self, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest, token)
    }

    /// Stops watching `fd`. Closing a descriptor does this too, unless it was duplicated.
    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// `epoll_wait(2)` until `deadline` at the latest (`None` waits forever; one already past only
    /// looks), filling `events` (its capacity is the most reported at once). `now` is the caller's
    /// clock, read shortly before: an event loop reads it once a turn, not once more here. `EINTR`
    /// is retried with the time left, so a signal (the graceful-shutdown handler writes to an
    /// eventfd in this set) never looks like a timeout.
    pub(crate) fn wait_until(
        &self,
        events: &mut Vec<Event>,
        deadline: Option<Instant>,
        mut now: Instant,
    ) -> io::Result<()> {
        events.clear();
        let max = events.capacity().clamp(1, libc::c_int::MAX as usize);
        loop {
            let ms: libc::c_int = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(now);
                    // Round up, so a deadline 0.4 ms away does not spin through 0 ms waits.
                    left.as_micros()
                        .div_ceil(1000)
                        .min(libc::c_int::MAX as u128) as libc::c_int
                }
            };
            // SAFETY: `events` has room for `max` entries; the kernel writes at most that many, and
            // `set_len` below covers exactly the entries it reported.
            let n = unsafe {
                libc::epoll_wait(
                    self.fd.as_raw_fd(),
                    events.as_mut_ptr(),
                    max as libc::c_int,
                    ms,
                )
            };
            if n >= 0 {
                // SAFETY: the kernel initialised the first `n` (<= max <= capacity) entries.
                unsafe { events.set_len(n as usize) };
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(context(err, "epoll_wait(2)"));
            }
            now = Instant::now();
        }
    }
}

/// Puts a descriptor in non-blocking mode (`fcntl(2)` `F_SETFL` `O_NONBLOCK`), as an event loop needs
/// its connections: a read or write that would wait returns `WouldBlock` instead.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer descriptor; a bad one is an error return.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(context(
            io::Error::last_os_error(),
            format!("fcntl(2) O_NONBLOCK on fd {fd}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::EventFd;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn reports_a_ready_descriptor_with_its_token() {
        let epoll = Epoll::new().unwrap();
        let efd = EventFd::new(false).unwrap();
        let fd = efd.as_fd().as_raw_fd();
        epoll.add(fd, READABLE, 7).unwrap();
        let mut events = Vec::with_capacity(4);
        let soon = || {
            let now = Instant::now();
            (Some(now + Duration::from_millis(1)), now)
        };
        let (deadline, now) = soon();
        epoll.wait_until(&mut events, deadline, now).unwrap();
        assert!(events.is_empty());
        efd.notify();
        epoll.wait_until(&mut events, None, Instant::now()).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(token(&events[0]), 7);
        assert_ne!(readiness(&events[0]) & READABLE, 0);
        epoll.modify(fd, 0, 7).unwrap();
        let (deadline, now) = soon();
        epoll.wait_until(&mut events, deadline, now).unwrap();
        assert!(events.is_empty(), "no interest, no report");
        epoll.delete(fd).unwrap();
    }
}
