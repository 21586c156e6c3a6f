//! [`Slot`]: how a worker that finishes wakes a serving loop waiting at its strategy's cap.
//!
//! Shared by the in-process strategies ([`Threading`](super::Threading), [`Pool`](super::Pool)): at
//! the cap the loop stops polling the listener and polls this eventfd instead, so it sleeps until a
//! worker frees a slot — no busy loop, and no eventfd write per request when nobody waits.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::sys::{self, EventFd, PollFd};

/// A "slot freed" notifier between workers and the serving loop.
#[derive(Debug)]
pub(super) struct Slot {
    /// Set by the serving loop only while it waits, so that workers pay for the eventfd write only
    /// when someone is listening.
    waiting: AtomicBool,
    freed: EventFd,
}

impl Slot {
    /// A notifier nobody waits on yet.
    pub(super) fn new() -> io::Result<Slot> {
        Ok(Slot {
            waiting: AtomicBool::new(false),
            freed: EventFd::new(false)?,
        })
    }

    /// Worker side: a slot was freed (a request finished, a worker ended).
    pub(super) fn release(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            self.freed.notify();
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
            self.freed.notify();
        }
        fds.push(sys::readable(sys::raw(&self.freed)));
    }

    /// Loop side, after the poll: stops waiting and consumes the notification.
    pub(super) fn reset(&self) {
        self.waiting.store(false, Ordering::SeqCst);
        self.freed.take();
    }

    /// Sleeps until `done` holds or `deadline` passes, waking each time a slot is freed; returns
    /// whether `done` held.
    pub(super) fn wait_until(&self, deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
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
            let mut fds = [sys::readable(sys::raw(&self.freed))];
            if sys::poll(&mut fds, Some(deadline - now)).is_err() {
                break done();
            }
            self.freed.take();
        };
        self.reset();
        held
    }
}
