//! [`Peer`]: everything the event loop keeps about one connection.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use super::output::Output;
use crate::addr::Addr;
use crate::framing::FrameBuf;
use crate::layer::Session;
use crate::serving::{Outcome, Ticket};
use crate::state::ConnState;
use crate::sys::epoll::{EDGE, READ_CLOSED, READABLE, WRITABLE};
use crate::transport::{ConnInfo, Duplex};

/// One connection's state. Small on purpose (a few hundred bytes): an idle connection holds no buffer
/// storage, since both `input` and `output` allocate on their first byte and are released when empty.
#[derive(Debug)]
pub(crate) struct Peer<C> {
    pub(crate) io: Arc<dyn Duplex>,
    pub(crate) fd: RawFd,
    pub(crate) addr: Addr,
    /// The per-connection layers still working on the start of the stream (usually none); the
    /// handler's `on_open` runs once they are all done.
    pub(crate) layers: Vec<Box<dyn Session>>,
    /// What the layers learnt.
    pub(crate) info: ConnInfo,
    /// The handler's `on_open` ran, so its `on_close` will.
    pub(crate) greeted: bool,
    /// Where it is in its life, for the connection-state hook: `New` until its first bytes,
    /// `Active` while they are handled, `Idle` once every complete message was handled.
    pub(crate) state: ConnState,
    /// Counted among the paused connections in the figures.
    pub(crate) counted_paused: bool,
    /// When it was accepted, for the connection's duration.
    pub(crate) opened: Instant,
    /// How the connection ends so far: a callback that failed or panicked (or input that could not
    /// be decoded) makes it end as such.
    pub(crate) outcome: Outcome,
    /// Cut at the drain deadline: its end is counted as cut, not as finished.
    pub(crate) cut: bool,
    /// Its place in its peer's connection count, given back when it closes.
    _ticket: Ticket,
    /// Decodes this connection's input and encodes what is sent to it.
    pub(crate) codec: C,
    /// Received bytes not yet decoded into a frame (part of a frame, usually nothing).
    pub(crate) input: FrameBuf,
    pub(crate) output: Output,
    /// The epoll interest currently registered, so it is changed only when it must be.
    pub(crate) registered: u32,
    /// Reading is paused because the output queue reached the limit (the peer does not read).
    pub(crate) paused: bool,
    /// Held back: what its last message caused is queued for connections that are behind, so nothing
    /// more is read or decoded from it until they catch up (the sender is pushed back, not its
    /// readers disconnected).
    pub(crate) held: bool,
    /// The connections it is held back for (empty unless `held`), of any loop.
    pub(crate) waiting_on: Vec<super::id::ConnId>,
    /// Its output as other loops see it, when the reactor has several loops.
    pub(crate) backlog: Option<Arc<super::mesh::Backlog>>,
    /// The peer finished sending while held: once released, its last input is delivered and it
    /// closes.
    pub(crate) input_closed: bool,
    /// Since when output has been waiting for the socket (`None` while there is none), and when the
    /// socket last took a byte: a peer that takes nothing for the write timeout is closed.
    pub(crate) output_since: Option<Instant>,
    pub(crate) last_written: Instant,
    /// No more reading: close once the output is flushed (peer EOF, `Conn::close`, a failure, shutdown).
    pub(crate) closing: bool,
    /// The server is draining: the connection closes (once its output is out) at its next boundary
    /// between messages.
    pub(crate) close_at_boundary: bool,
    /// Being torn down: its `on_close` is running or done; nothing more is queued to it.
    pub(crate) closed: bool,
    /// Listed for a flush in the loop's pending work.
    pub(crate) dirty: bool,
    /// Listed for a flush once the coalescing delay is over.
    pub(crate) deferred: bool,
    /// A layer took over the stream with bytes already read: the loop reads again at once.
    pub(crate) reread: bool,
    /// A layer under the connection holds bytes of earlier writes its socket did not take yet (TLS
    /// records), with the output queue itself empty.
    pub(crate) io_pending: bool,
    /// The last time bytes were received from or sent to it, for the idle timeout.
    pub(crate) last_active: Instant,
    /// Its stream goes through a layer (TLS) that may hold input its socket no longer shows: the
    /// loop asks the layer after every read, and watches the socket level-triggered.
    pub(crate) wrapped: bool,
    /// Watched edge-triggered, and its last read may have left input in the socket (it filled its
    /// buffer, or the end of stream has come and is still to be read): epoll will not report that
    /// again, so the loop reads it again of its own accord.
    pub(crate) unread: bool,
    /// Listed among the connections the loop reads again without an event (`unread`).
    pub(crate) unread_listed: bool,
    /// Its peer's end of stream has come (edge-triggered only): a read that does not fill its buffer
    /// no longer means the socket holds nothing, since the end of stream is reported once, maybe
    /// with the last bytes, and only a read of its own returns it.
    pub(crate) read_closed: bool,
}

impl<C> Peer<C> {
    pub(crate) fn new(
        io: Arc<dyn Duplex>,
        addr: Addr,
        layers: Vec<Box<dyn Session>>,
        ticket: Ticket,
        codec: C,
    ) -> Self {
        let now = Instant::now();
        Peer {
            wrapped: !layers.is_empty(),
            unread: false,
            unread_listed: false,
            read_closed: false,
            fd: io.fd().as_raw_fd(),
            io,
            addr,
            layers,
            info: ConnInfo::default(),
            greeted: false,
            state: ConnState::New,
            counted_paused: false,
            opened: now,
            outcome: Outcome::Ok,
            cut: false,
            _ticket: ticket,
            codec,
            input: FrameBuf::new(),
            output: Output::default(),
            registered: READABLE,
            paused: false,
            held: false,
            waiting_on: Vec::new(),
            backlog: None,
            input_closed: false,
            output_since: None,
            last_written: now,
            closing: false,
            close_at_boundary: false,
            closed: false,
            dirty: false,
            deferred: false,
            reread: false,
            io_pending: false,
            last_active: now,
        }
    }

    /// How its socket is watched besides the interest: edge-triggered (reported once per change, which
    /// spares the kernel a second look at every reported socket on the next wait), unless a layer
    /// may hold input the socket no longer shows.
    pub(crate) fn trigger(&self) -> u32 {
        if self.wrapped { 0 } else { EDGE | READ_CLOSED }
    }

    /// Whether the loop should read from it now.
    pub(crate) fn reading(&self) -> bool {
        !self.paused && !self.held && !self.input_closed && !self.closing && !self.closed
    }

    /// Updates the pause state from the output queue (pause at `limit`, resume at half of it, so a
    /// connection hovering at the limit does not flip on every byte) and returns the epoll interest
    /// it needs now.
    pub(crate) fn wanted_interest(&mut self, limit: usize) -> u32 {
        let queued = self.output.len();
        if queued >= limit {
            self.paused = true;
        } else if queued <= limit / 2 {
            self.paused = false;
        }
        let mut interest = 0;
        if self.reading() {
            interest |= READABLE;
        }
        if !self.output.is_empty() || self.io_pending {
            interest |= WRITABLE;
        }
        interest
    }
}
