//! [`EventLoop`]: one thread, one epoll set, every connection. The loop owns the sockets' readiness
//! and the timers; what happens to a connection's bytes is the [`Engine`]'s.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use super::engine::{Engine, Flush};
use super::id::ConnId;
use super::linger::Lingering;
use super::message::MessageHandler;
use super::timers::IdleTimers;
use crate::error::RequestError;
use crate::serving::stats::Gauge;
use crate::serving::{Admitted, Core, Drained, Event, Next, ServeSummary};
use crate::sys::epoll::{self, Epoll, HUP_OR_ERROR, READABLE, WRITABLE};
use crate::transport::{Incoming, Stream, Transport};

/// The epoll token of the shutdown eventfd. Connection tokens are `generation << 32 | slot`, which
/// could only reach these values with four billion slots.
const WAKE: u64 = u64::MAX;
/// The epoll token of the listener.
const LISTENER: u64 = u64::MAX - 1;
/// The epoll token of the "force" eventfd, watched while draining: a forced shutdown ends the drain.
const FORCE: u64 = u64::MAX - 2;
/// How many bytes one read takes from one connection per turn: large enough for throughput, small
/// enough that one busy peer cannot starve the others (the rest is read on the next turn).
const READ_CHUNK: usize = 64 * 1024;
/// How many connections one listener wake-up accepts before serving the others again.
const ACCEPT_BATCH: usize = 64;
/// How many readiness reports one `epoll_wait` returns at most.
const EVENTS: usize = 1024;

/// The `Reactor` strategy's options, as the loop needs them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopOptions {
    pub(crate) max_connections: usize,
    pub(crate) write_buffer_limit: usize,
}

/// Serves `core` until shutdown, then drains; returns how serving ended and, once the loop has
/// drained, the run's summary.
pub(crate) fn serve<T, H>(
    options: LoopOptions,
    core: &mut Core<T, H>,
) -> (io::Result<()>, Option<ServeSummary>)
where
    T: Transport<Kind = Stream>,
    H: MessageHandler,
{
    if core.is_closed() {
        return (Ok(()), None);
    }
    let mut event_loop = match EventLoop::new(options, core) {
        Ok(event_loop) => event_loop,
        Err(e) => return (Err(e), None),
    };
    let served = event_loop.run();
    let summary = event_loop.shut_down();
    (served, summary)
}

struct EventLoop<'c, T, H: MessageHandler> {
    core: &'c mut Core<T, H>,
    engine: Engine<H>,
    epoll: Epoll,
    events: Vec<epoll::Event>,
    /// Idle deadlines (the read timeout).
    timers: IdleTimers,
    /// Write deadlines: a connection whose queued output has not moved for the write timeout.
    write_timers: IdleTimers,
    /// Connections whose layers are still waiting for the start of the stream, by deadline.
    layer_deadlines: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Every read lands here first; only the bytes of an unfinished frame are kept per connection.
    scratch: Box<[u8]>,
    max_connections: usize,
    /// The listener's descriptor while it is registered.
    listener: Option<RawFd>,
    /// Whether the listener's readability is being watched now.
    listening: bool,
    /// After an accept failure (`EMFILE`), accepting resumes at this time.
    backoff_until: Option<Instant>,
    shutting_down: bool,
    /// Connections the drain closed, until their peers close too.
    lingering: Lingering,
}

impl<'c, T, H> EventLoop<'c, T, H>
where
    T: Transport<Kind = Stream>,
    H: MessageHandler,
{
    fn new(options: LoopOptions, core: &'c mut Core<T, H>) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.add(core.shutdown().wake_fd().as_raw_fd(), READABLE, WAKE)?;
        let listener = match core.listener() {
            Some(fd) => {
                let fd = fd.as_raw_fd();
                epoll.add(fd, READABLE, LISTENER)?;
                Some(fd)
            }
            None => None,
        };
        let opts = core.stream_options();
        Ok(EventLoop {
            engine: Engine::new(
                core.handler().clone(),
                core.shared().clone(),
                options.write_buffer_limit,
            ),
            timers: IdleTimers::new(opts.read_timeout),
            write_timers: IdleTimers::new(opts.write_timeout),
            epoll,
            events: Vec::with_capacity(EVENTS),
            layer_deadlines: BinaryHeap::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            max_connections: options.max_connections,
            listening: listener.is_some(),
            listener,
            backoff_until: None,
            shutting_down: false,
            lingering: Lingering::default(),
            core,
        })
    }

    fn open_connections(&self) -> usize {
        self.engine.conns.slab.len()
    }

    fn run(&mut self) -> io::Result<()> {
        self.core.serving(&" (reactor)");
        while !self.core.shutdown().is_shutdown() {
            let wake_at = [
                self.timers.next_deadline(),
                self.write_timers.next_deadline(),
                self.layer_deadlines.peek().map(|Reverse((at, _))| *at),
                self.backoff_until,
                self.core.heartbeat_at(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = wake_at.map(|t| t.saturating_duration_since(Instant::now()));
            self.epoll.wait(&mut self.events, timeout)?;
            for i in 0..self.events.len() {
                let event = self.events[i];
                match epoll::token(&event) {
                    WAKE => self.core.shutdown().mark(),
                    LISTENER => self.accept()?,
                    token => self.ready(ConnId::from_token(token), epoll::readiness(&event)),
                }
                self.settle();
            }
            let now = Instant::now();
            self.expire(now);
            self.settle();
            self.publish_figures();
            if self.backoff_until.is_some_and(|t| t <= now) {
                self.backoff_until = None;
                self.update_listening();
            }
            self.core.service_actions();
        }
        Ok(())
    }

    /// Closes connections that idled out, that took none of their output for the write timeout, and
    /// those whose layers did not get what they needed in time.
    fn expire(&mut self, now: Instant) {
        let slab = &self.engine.conns.slab;
        let idle = self
            .timers
            .expire(now, |id| slab.get(id).map(|p| p.last_active));
        for id in idle {
            log::debug!("closing idle connection {id}");
            self.engine.conns.abort(id);
        }
        let slab = &self.engine.conns.slab;
        let stalled = self.write_timers.expire(now, |id| {
            slab.get(id)
                .and_then(|p| p.output_since.map(|_| p.last_written))
        });
        let write_timeout = self.write_timers.timeout().unwrap_or_default();
        for id in stalled {
            let error = RequestError::Stalled(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("it took none of its queued output for {write_timeout:?} (write_timeout)"),
            ));
            self.engine.fail(id, &error);
        }
        while let Some(&Reverse((at, id))) = self.layer_deadlines.peek() {
            if at > now {
                break;
            }
            self.layer_deadlines.pop();
            self.engine.layer_timed_out(id);
        }
    }

    /// Hands the loop's running totals to the figures (two stores a turn, whatever the number of
    /// connections).
    fn publish_figures(&self) {
        let counters = self.engine.shared().counters();
        counters.set(Gauge::Paused, self.engine.conns.paused as u64);
        counters.set(Gauge::QueuedBytes, self.engine.conns.queued_bytes as u64);
    }

    /// Accepts up to a batch of pending connections.
    fn accept(&mut self) -> io::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            if self.open_connections() >= self.max_connections {
                break;
            }
            match self.core.next()? {
                Next::Admitted(admitted) => self.open(admitted),
                Next::Again => {}
                Next::Idle | Next::Closed => break,
                Next::BackOff(wait) => {
                    self.backoff_until = Some(Instant::now() + wait);
                    break;
                }
            }
        }
        self.update_listening();
        Ok(())
    }

    /// Watches the listener only while a connection may be accepted: not at the connection cap (so
    /// the kernel's backlog holds the excess), not while backing off, not once shutting down.
    fn update_listening(&mut self) {
        let Some(fd) = self.listener else { return };
        let at_cap = self.open_connections() >= self.max_connections;
        let want = !self.shutting_down && self.backoff_until.is_none() && !at_cap;
        if want != self.listening {
            if at_cap && self.listening {
                self.engine.shared().emit(Event::Capped);
            }
            let interest = if want { READABLE } else { 0 };
            match self.epoll.modify(fd, interest, LISTENER) {
                Ok(()) => self.listening = want,
                Err(e) => log::warn!("{e}"),
            }
        }
    }

    /// Takes in one admitted connection: non-blocking, watched, then the engine's.
    fn open(&mut self, admitted: Admitted<Incoming>) {
        let Admitted { request, ticket } = admitted;
        let Incoming { conn, peer, .. } = request;
        let fd = conn.fd().as_raw_fd();
        if let Err(e) = epoll::set_nonblocking(fd) {
            self.engine
                .shared()
                .report(Some(&peer), &RequestError::Connection(e));
            return;
        }
        let Some(id) = self.engine.insert(conn, peer, ticket) else {
            return;
        };
        // Watched before the handler's `on_open` runs, so that whatever it queues is flushed.
        if let Err(e) = self.epoll.add(fd, READABLE, id.token()) {
            self.engine.fail(id, &RequestError::Connection(e));
            return;
        }
        self.timers.schedule(id, Instant::now());
        if let Some(deadline) = self.engine.start(id) {
            self.layer_deadlines.push(Reverse((deadline, id)));
        }
    }

    /// Handles one readiness report for connection `id`.
    fn ready(&mut self, id: ConnId, readiness: u32) {
        let Some(peer) = self.engine.conns.slab.get(id) else {
            return; // closed earlier in this batch
        };
        let reading = peer.reading();
        if readiness & HUP_OR_ERROR != 0 {
            // Reset or fully shut: take what was received, then nothing more can be sent.
            if reading {
                self.read(id);
            }
            self.engine.conns.abort(id);
            return;
        }
        if readiness & WRITABLE != 0 {
            self.engine.conns.mark_dirty(id);
        }
        if readiness & READABLE != 0 && reading {
            self.read(id);
        }
    }

    /// One read from `id`, handed to the engine.
    fn read(&mut self, id: ConnId) {
        let Some(peer) = self.engine.conns.slab.get_mut(id) else {
            return;
        };
        // A read may have advanced a layer with no bytes for the handler (a TLS handshake), and left
        // it records to send.
        let layered = !peer.layers.is_empty();
        let result = peer.io.read(&mut self.scratch);
        match result {
            Ok(0) => self.engine.input_ended(id),
            Ok(n) => self.engine.received(id, &self.scratch[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                if layered {
                    self.engine.received(id, &[]);
                }
            }
            Err(e) => {
                if layered {
                    self.engine.received(id, &[]); // the layer reports why
                } else if let Some(peer) = self.engine.conns.slab.get(id) {
                    log::debug!("reading from {}: {e}", peer.addr);
                }
                self.engine.conns.abort(id);
            }
        }
        if layered {
            self.engine.conns.mark_dirty(id);
            if self.engine.take_reread(id) {
                self.read(id);
            }
        }
    }

    /// Carries out what the last callbacks and events left to do: flush dirty connections (updating
    /// their epoll interest, pausing or resuming reading), close doomed ones, let held-back senders
    /// go on once their receivers caught up. Each of these may leave more work, so this runs until
    /// there is none.
    fn settle(&mut self) {
        loop {
            if let Some(id) = self.engine.conns.dirty.pop() {
                self.flush(id);
            } else if let Some(id) = self.engine.conns.doomed.pop() {
                self.close(id);
            } else if !self.engine.release_one() {
                return;
            }
        }
    }

    fn flush(&mut self, id: ConnId) {
        match self.engine.flush(id) {
            Flush::Nothing => {}
            Flush::Close => self.engine.conns.doomed.push(id),
            Flush::Open {
                interest,
                started_waiting,
            } => {
                if started_waiting {
                    self.write_timers.schedule(id, Instant::now());
                }
                let Some(peer) = self.engine.conns.slab.get_mut(id) else {
                    return;
                };
                if interest != peer.registered {
                    match self.epoll.modify(peer.fd, interest, id.token()) {
                        Ok(()) => peer.registered = interest,
                        Err(e) => {
                            log::warn!("{e}");
                            self.engine.conns.abort(id);
                        }
                    }
                }
            }
        }
    }

    /// Closes `id` through the engine, and forgets its descriptor.
    fn close(&mut self, id: ConnId) {
        if let Some(peer) = self.engine.close(id) {
            // Dropping `peer` closes the socket, which also leaves the epoll set; deleting first keeps
            // the set exact even if the descriptor was duplicated elsewhere.
            let _ = self.epoll.delete(peer.fd);
            // A drain's close lingers: a message crossing it must not meet a reset.
            if self.shutting_down && !peer.cut {
                let until = Instant::now() + crate::sys::LINGER;
                self.lingering
                    .start(&self.epoll, peer.io.clone(), peer.fd, until);
            }
        }
        self.update_listening();
    }

    /// The drain began: closes every connection between messages (after its queued output), and
    /// marks the others to close at their next boundary.
    fn close_at_boundaries(&mut self) {
        let mut cursor = 0;
        while let Some(id) = self.engine.conns.slab.nth_id_from(&mut cursor) {
            self.engine.close_at_boundary(id);
        }
        self.settle();
    }

    /// Closes the listener; closes each connection once it is between messages and its output is
    /// flushed, until the shutdown timeout; then cuts the rest. Returns the run's summary.
    fn shut_down(&mut self) -> Option<ServeSummary> {
        self.shutting_down = true;
        let _ = self
            .epoll
            .delete(self.core.shutdown().wake_fd().as_raw_fd());
        let shared = self.core.shared().clone();
        let force = shared.shutdown().force_fd();
        let watching_force = self.epoll.add(force.as_raw_fd(), READABLE, FORCE).is_ok();
        if let Some(fd) = self.listener.take() {
            let _ = self.epoll.delete(fd);
        }
        if !self.core.close_listener() {
            return None;
        }
        let in_flight = self.open_connections();
        self.core.draining(in_flight);
        self.close_at_boundaries();
        let deadline = self.core.drain_deadline();
        let mut forced = false;
        let mut lingered = self.lingering.expire(&self.epoll, Instant::now());
        while (self.open_connections() > 0 || !self.lingering.is_empty()) && !forced {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wake = lingered.map_or(deadline, |l| l.min(deadline));
            if self.epoll.wait(&mut self.events, Some(wake - now)).is_err() {
                break;
            }
            for i in 0..self.events.len() {
                let event = self.events[i];
                let token = epoll::token(&event);
                if token == FORCE {
                    forced = true;
                } else if let Some(fd) = Lingering::fd_of(token) {
                    self.lingering.ready(&self.epoll, fd);
                } else if token != WAKE && token != LISTENER {
                    self.ready(ConnId::from_token(token), epoll::readiness(&event));
                }
                self.settle();
            }
            lingered = self.lingering.expire(&self.epoll, Instant::now());
        }
        self.lingering.clear(&self.epoll);
        if watching_force {
            let _ = self.epoll.delete(force.as_fd().as_raw_fd());
        }
        let cut = self.open_connections();
        let conns = &mut self.engine.conns;
        let mut cursor = 0;
        while let Some(id) = conns.slab.nth_id_from(&mut cursor) {
            if let Some(peer) = conns.slab.get_mut(id) {
                peer.cut = true;
                shared.emit(Event::Cut {
                    peer: Some(&peer.addr),
                    how: "the connection, with a message or output pending,",
                });
            }
            conns.abort(id);
        }
        self.settle();
        self.publish_figures();
        Some(self.core.finish(Drained {
            in_flight,
            finished: in_flight.saturating_sub(cut),
            cut,
        }))
    }
}
