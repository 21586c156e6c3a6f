//! [`Phase`]: whether a stream connection's handler is inside a request or between two, shared by
//! the request and whoever drains the server. It lives with the transport's plumbing because a
//! connection carries it from accept to handler ([`Incoming`](super::Incoming)).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use super::Duplex;

/// Whether a stream connection's handler is inside a request or between two, shared by the
/// request (which says so) and whoever drains the server (which ends the idle ones).
///
/// A drain and a handler going idle race; both sides use sequentially consistent operations in
/// opposite orders — the drain marks the phase draining, then looks whether it is idle; the handler
/// marks it idle, then (at its next read) looks whether it is draining — so at least one of them
/// sees the other, and an idle connection is never left waiting for a request that cannot come.
///
/// Which of the two ends an idle connection is decided by one compare-and-swap: the drain takes it
/// from idle to [`shut`](Self::shut) (and sends the peer end of stream), the handler's read takes it
/// from idle to busy when a request's first bytes arrive. Bytes that arrive on a connection the
/// drain took are a request this server will not answer: they are read and dropped while the
/// connection [lingers](crate::StreamRequest::idle) until its peer closes too, so the peer sees end
/// of stream and sends the request again on a new connection, as HTTP clients do — never a reset.
#[derive(Debug, Default)]
pub(crate) struct Phase {
    /// [`BUSY`], [`IDLE`] or [`SHUT`].
    at: AtomicU8,
    /// Bytes of a first request have arrived. Until then the connection is new, not idle: its client
    /// has just connected, and its request is on its way (Go's `StateNew`), so a drain lets it come.
    started: AtomicBool,
    draining: AtomicBool,
    /// Cut at the drain deadline: the state hook has heard `Cut`, and hears nothing more.
    cut: AtomicBool,
    /// The connection as its handler reads and writes it, once the layers ran (TLS wraps it): a
    /// drain ends an idle connection through it, so its peer hears TLS's `close_notify` first.
    layered: OnceLock<Arc<dyn Duplex>>,
}

/// Inside a request (and before the first).
const BUSY: u8 = 0;
/// Between requests, waiting for the next one.
const IDLE: u8 = 1;
/// Ended by a drain at a boundary: its writing side is shut, and its reads only linger.
const SHUT: u8 = 2;

impl Phase {
    /// The handler waits for the next request; returns whether it was busy until now.
    pub(crate) fn set_idle(&self) -> bool {
        self.at
            .compare_exchange(BUSY, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Bytes of a request arrived; returns whether it was idle until now. A connection the drain
    /// shut stays shut.
    pub(crate) fn set_busy(&self) -> bool {
        self.started.store(true, Ordering::Relaxed);
        self.at
            .compare_exchange(IDLE, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Between two requests: idle, after a first one.
    pub(crate) fn is_idle(&self) -> bool {
        self.at.load(Ordering::SeqCst) == IDLE && self.started.load(Ordering::Relaxed)
    }

    /// A drain is on: the connection is to end at a boundary. Returns whether it is at one now.
    pub(crate) fn drain(&self) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        self.is_idle()
    }

    /// Takes an idle connection from its handler, to end it: returns whether it was still idle (no
    /// read took a next request's first bytes in the meantime). The caller then shuts its writing
    /// side; the handler's reads linger and end.
    pub(crate) fn shut(&self) -> bool {
        self.started.load(Ordering::Relaxed)
            && self
                .at
                .compare_exchange(IDLE, SHUT, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// Records that a forked child's drain took the connection (its signal handler cannot reach the
    /// phase).
    pub(crate) fn set_shut(&self) {
        self.at.store(SHUT, Ordering::SeqCst);
    }

    /// The layers ran: `conn` is the connection as the handler sees it.
    pub(crate) fn set_layered(&self, conn: Arc<dyn Duplex>) {
        let _ = self.layered.set(conn);
    }

    /// The connection as the handler sees it, once the layers ran.
    pub(crate) fn layered(&self) -> Option<&Arc<dyn Duplex>> {
        self.layered.get()
    }

    /// Whether a drain ended the connection at a boundary.
    pub(crate) fn is_shut(&self) -> bool {
        self.at.load(Ordering::SeqCst) == SHUT
    }

    /// The drain deadline cut the connection.
    pub(crate) fn set_cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Whether the handler's next read is to end the connection (unless a next request is already
    /// arriving): it is between requests, and a drain is on — of this server, or (in a forked child)
    /// of this process.
    pub(crate) fn closing(&self) -> bool {
        self.is_idle()
            && (self.draining.load(Ordering::SeqCst) || crate::sys::signal::draining_child())
    }
}
