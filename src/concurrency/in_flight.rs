//! [`InFlight`]: the requests a strategy runs in this process — on threads ([`Threading`],
//! [`Pool`]) or inline ([`Sequential`]) — with their connections, so that a loop at the cap can sleep
//! until one finishes and a drain deadline can cut the ones still running.
//!
//! [`Threading`]: super::Threading
//! [`Pool`]: super::Pool
//! [`Sequential`]: super::Sequential

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::addr::Addr;
use crate::serving::{Cutter, Drained, Event, Shared};
use crate::sys::{self, EventFd, PollFd};

/// How long requests whose connections were cut get to return before the drain gives up on them (a
/// handler that ignores its socket's errors cannot be stopped; its thread is then left detached).
pub(crate) const CUT_GRACE: Duration = Duration::from_secs(1);

/// Requests running (or queued) in this process, and their connections.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    /// Set by a loop only while it waits for a request to finish, so that finishing requests pay for
    /// the eventfd write only when someone is listening.
    waiting: AtomicBool,
    /// Created by [`ensure`](Self::ensure) before the first request, so constructing a strategy cannot
    /// fail.
    finished: OnceLock<EventFd>,
    conns: Mutex<Conns>,
}

#[derive(Debug, Default)]
struct Conns {
    next: u64,
    open: HashMap<u64, (Addr, Cutter)>,
}

/// One request's place in [`InFlight`]: counted and (for a stream request) its connection listed, until
/// dropped — however the request ends.
#[derive(Debug)]
pub(crate) struct Entry {
    in_flight: Arc<InFlight>,
    conn: Option<u64>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(id) = self.conn {
            self.in_flight.conns.lock().open.remove(&id);
        }
        self.in_flight.count.fetch_sub(1, Ordering::SeqCst);
        if self.in_flight.waiting.load(Ordering::SeqCst) {
            self.in_flight.notify();
        }
    }
}

impl InFlight {
    /// Creates the "request finished" eventfd if it does not exist yet; call before the first request.
    ///
    /// # Errors
    /// `eventfd(2)` failing.
    pub(crate) fn ensure(&self) -> io::Result<()> {
        if self.finished.get().is_none() {
            let _ = self.finished.set(EventFd::new(false)?);
        }
        Ok(())
    }

    /// Counts a request from `peer` and lists its connection (if it has one) for cutting.
    pub(crate) fn enter(self: &Arc<Self>, peer: &Addr, cutter: Option<&Cutter>) -> Entry {
        self.count.fetch_add(1, Ordering::SeqCst);
        let conn = cutter.map(|cutter| {
            let mut conns = self.conns.lock();
            let id = conns.next;
            conns.next += 1;
            conns.open.insert(id, (peer.clone(), cutter.clone()));
            id
        });
        Entry {
            in_flight: self.clone(),
            conn,
        }
    }

    /// How many requests are running (or queued).
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn notify(&self) {
        if let Some(fd) = self.finished.get() {
            fd.notify();
        }
    }

    fn poll_fd(&self) -> PollFd {
        self.finished
            .get()
            .map_or_else(|| sys::readable_raw(-1), sys::readable)
    }

    /// Loop side, before a poll at the cap: announces the wait, then, unless `count() >= cap` still
    /// holds, makes the eventfd readable so the poll returns at once; and adds it to `fds`.
    ///
    /// Announcing first closes the race with a request that finishes in between: it either sees the
    /// announcement and writes the eventfd, or finished before — and the check sees it.
    pub(crate) fn watch(&self, fds: &mut Vec<PollFd>, cap: usize) {
        self.waiting.store(true, Ordering::SeqCst);
        if self.count() < cap {
            self.notify();
        }
        fds.push(self.poll_fd());
    }

    /// Loop side, after the poll: stops waiting and consumes the notification.
    pub(crate) fn reset(&self) {
        self.waiting.store(false, Ordering::SeqCst);
        if let Some(fd) = self.finished.get() {
            fd.take();
        }
    }

    /// Sleeps until no request is left, `deadline` passes, or `force` (a forced shutdown) becomes
    /// readable; returns whether none is left.
    pub(crate) fn wait_idle(&self, deadline: Instant, force: Option<&impl AsFd>) -> bool {
        self.waiting.store(true, Ordering::SeqCst);
        let idle = loop {
            // Checked after announcing the wait: a request finishing from now on writes the eventfd.
            if self.count() == 0 {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            let force = force.map_or_else(|| sys::readable_raw(-1), sys::readable);
            let mut fds = [self.poll_fd(), force];
            if sys::poll(&mut fds, Some(deadline - now)).is_err() || sys::is_ready(&fds[1]) {
                break self.count() == 0;
            }
            if let Some(fd) = self.finished.get() {
                fd.take();
            }
        };
        self.reset();
        idle
    }

    /// [`wait_idle`](Self::wait_idle) after [`close_idle`](Self::close_idle): the connections it
    /// closed linger until their peers close too, for [`LINGER`](sys::LINGER) at most; then their
    /// reads end, and the wait goes on for the requests still running.
    pub(crate) fn wait_lingering(&self, deadline: Instant, force: &impl AsFd) -> bool {
        let lingered = deadline.min(Instant::now() + sys::LINGER);
        if self.wait_idle(lingered, Some(force)) {
            return true;
        }
        self.end_linger();
        self.wait_idle(deadline, Some(force))
    }

    /// Shuts down every listed connection, so the reads and writes blocking their handlers fail at
    /// once; returns how many requests were running.
    pub(crate) fn cut(&self, shared: &Shared) -> usize {
        let running = self.count();
        for (peer, cutter) in self.conns.lock().open.values() {
            if cutter.cut() {
                shared.emit(Event::Cut {
                    peer: Some(peer),
                    how: "the connection",
                });
            }
        }
        running
    }

    /// Closes every connection whose handler waits between requests, and marks the others to close
    /// at their next boundary: the start of a drain (Go's `Shutdown` closing idle connections).
    pub(crate) fn close_idle(&self) {
        for (_, cutter) in self.conns.lock().open.values() {
            cutter.close_if_idle();
        }
    }

    /// Ends the lingering of the connections [`close_idle`](Self::close_idle) closed whose peers
    /// have not closed in turn.
    pub(crate) fn end_linger(&self) {
        for (_, cutter) in self.conns.lock().open.values() {
            cutter.end_linger();
        }
    }

    /// The drain of a strategy running requests in this process: closes the idle connections, waits
    /// until `deadline` (or a forced shutdown), then cuts what is left and gives it [`CUT_GRACE`] to
    /// return.
    pub(crate) fn drain(&self, deadline: Instant, shared: &Shared) -> Drained {
        self.close_idle();
        let in_flight = self.count();
        let force = shared.shutdown().force_fd();
        if self.wait_lingering(deadline, &force) {
            return Drained {
                in_flight,
                finished: in_flight,
                cut: 0,
            };
        }
        let cut = self.cut(shared).min(in_flight);
        self.wait_idle(
            Instant::now() + CUT_GRACE,
            None::<&std::os::fd::BorrowedFd<'_>>,
        );
        Drained {
            in_flight,
            finished: in_flight - cut,
            cut,
        }
    }
}
