//! [`Slot`]: how a worker that finishes wakes a serving loop waiting at its strategy's cap.
//!
//! Shared by the in-process strategies ([`Threading`](super::Threading), [`Pool`](super::Pool)): at
//! the cap the loop stops polling the listener and polls this eventfd instead, so it sleeps until a
//! worker frees a slot — no busy loop, and no eventfd write per request when nobody waits.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::sys::{self, EventFd, PollFd};

/// A "slot freed" notifier between workers and the serving loop.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// Set by the serving loop only while it waits, so that workers pay for the eventfd write only
    /// when someone is listening.
    waiting: AtomicBool,
    /// Created by [`ensure`](Slot::ensure) before the first worker starts, so that constructing a
    /// strategy cannot fail.
    freed: OnceLock<EventFd>,
}

impl Slot {
    /// Creates the eventfd if it does not exist yet; call before starting a worker.
    pub(super) fn ensure(&self) -> io::Result<()> {
        if self.freed.get().is_none() {
            let _ = self.freed.set(EventFd::new(false)?);
        }
        Ok(())
    }

    /// The eventfd's descriptor (-1, which `poll` ignores, before [`ensure`](Slot::ensure)).
    fn fd(&self) -> RawFd {
        self.freed.get().map(sys::raw).unwrap_or(-1)
    }

    fn notify(&self) {
        if let Some(fd) = self.freed.get() {
            fd.notify();
        }
    }

    /// Worker side: a slot was freed (a request finished, a worker ended).
    pub(super) fn release(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            self.notify();
        }
    }

    /// Loop side, before a poll at the cap: announces the wait, then asks `still_full` (which may
    /// collect finished workers) and adds the eventfd to `fds`.
    ///
    /// Announcing first closes the race with a worker that finishes in between: it either sees the
    /// announcement and writes the eventfd, or finished before and `still_full` sees it — in which case
    /// the eventfd is written here, so the poll returns at once instead of sleeping with no listener.
    pub(super) fn watch(&self, fds: &mut Vec<PollFd>, still_full: impl FnOnce() -> bool) {
        self.waiting.store(true, Ordering::SeqCst);
        if !still_full() {
            self.notify();
        }
        fds.push(sys::readable(self.fd()));
    }

    /// Loop side, after the poll: stops waiting and consumes the notification.
    pub(super) fn reset(&self) {
        self.waiting.store(false, Ordering::SeqCst);
        if let Some(fd) = self.freed.get() {
            fd.take();
        }
    }

    /// Sleeps until `done` holds, `deadline` passes, or `force` (an eventfd: a forced shutdown) becomes
    /// readable, waking each time a slot is freed; returns whether `done` held.
    pub(super) fn wait_until(
        &self,
        deadline: Instant,
        force: Option<RawFd>,
        mut done: impl FnMut() -> bool,
    ) -> bool {
        self.waiting.store(true, Ordering::SeqCst);
        let held = loop {
            // Checked after announcing the wait: a release from now on writes the eventfd.
            if done() {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            let mut fds = [sys::readable(self.fd()), sys::readable(force.unwrap_or(-1))];
            if sys::poll(&mut fds, Some(deadline - now)).is_err() || sys::is_ready(&fds[1]) {
                break done();
            }
            if let Some(fd) = self.freed.get() {
                fd.take();
            }
        };
        self.reset();
        held
    }
}
