//! [`EventLoop`]: one thread, one epoll set, every connection.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use super::conn::Conn;
use super::id::ConnId;
use super::message::MessageHandler;
use super::output::Flushed;
use super::peer::Peer;
use super::registry::Registry;
use super::timers::IdleTimers;
use crate::error::{RequestError, guarded};
use crate::framing::{Decoder, FrameBuf};
use crate::layer::Progress;
use crate::serving::{Admitted, Core, Drained, Event, Next, Outcome, ServeSummary, Shared};
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
    handler: Arc<H>,
    shared: Arc<Shared>,
    epoll: Epoll,
    events: Vec<epoll::Event>,
    conns: Registry<H::Codec>,
    timers: IdleTimers,
    /// Write deadlines: a connection whose queued output has not moved for the write timeout.
    write_timers: IdleTimers,
    /// Senders held back until the connections they sent to catch up.
    held: Vec<ConnId>,
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
        let shared = core.shared().clone();
        Ok(EventLoop {
            handler: core.handler().clone(),
            conns: Registry::new(options.write_buffer_limit, shared.shutdown().clone()),
            timers: IdleTimers::new(core.stream_options().read_timeout),
            write_timers: IdleTimers::new(core.stream_options().write_timeout),
            held: Vec::new(),
            shared,
            epoll,
            events: Vec::with_capacity(EVENTS),
            layer_deadlines: BinaryHeap::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            max_connections: options.max_connections,
            listening: listener.is_some(),
            listener,
            backoff_until: None,
            shutting_down: false,
            core,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        self.core.serving(&" (reactor)");
        while !self.core.shutdown().is_shutdown() {
            let wake_at = [
                self.timers.next_deadline(),
                self.write_timers.next_deadline(),
                self.layer_deadlines.peek().map(|Reverse((at, _))| *at),
                self.backoff_until,
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
            if self.backoff_until.is_some_and(|t| t <= now) {
                self.backoff_until = None;
                self.update_listening();
            }
            self.core.service_actions();
        }
        Ok(())
    }

    /// Closes connections that idled out, and those whose layers did not get what they needed in time.
    fn expire(&mut self, now: Instant) {
        let slab = &self.conns.slab;
        for id in self
            .timers
            .expire(now, |id| slab.get(id).map(|p| p.last_active))
        {
            log::debug!("closing idle connection {id}");
            self.conns.abort(id);
        }
        let write_timeout = self.write_timers.timeout();
        let slab = &self.conns.slab;
        let stalled = self.write_timers.expire(now, |id| {
            slab.get(id)
                .and_then(|p| p.output_since.map(|_| p.last_written))
        });
        for id in stalled {
            if let Some(peer) = self.conns.slab.get(id) {
                let error = RequestError::Connection(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the peer took none of its queued output for {:?} (write_timeout)",
                        write_timeout.unwrap_or_default()
                    ),
                ));
                self.shared.report(Some(&peer.addr), &error);
            }
            self.conns.abort(id);
        }
        while let Some(&Reverse((at, id))) = self.layer_deadlines.peek() {
            if at > now {
                break;
            }
            self.layer_deadlines.pop();
            let Some(peer) = self.conns.slab.get_mut(id) else {
                continue; // closed since
            };
            let Some(layer) = peer.layers.first() else {
                continue; // done since
            };
            let error = layer.timed_out();
            peer.failed = true;
            self.shared.report(Some(&peer.addr), &error);
            self.conns.abort(id);
        }
    }

    /// Accepts up to a batch of pending connections.
    fn accept(&mut self) -> io::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            if self.conns.slab.len() >= self.max_connections {
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
        let want = !self.shutting_down
            && self.backoff_until.is_none()
            && self.conns.slab.len() < self.max_connections;
        if want != self.listening {
            let interest = if want { READABLE } else { 0 };
            match self.epoll.modify(fd, interest, LISTENER) {
                Ok(()) => self.listening = want,
                Err(e) => log::warn!("{e}"),
            }
        }
    }

    /// Takes in one admitted connection: make it non-blocking, watch it, start its layers, and — if
    /// none is waiting for anything — `on_open`.
    fn open(&mut self, admitted: Admitted<Incoming>) {
        let Admitted { request, ticket } = admitted;
        let Incoming { conn, peer, .. } = request;
        if let Err(e) = epoll::set_nonblocking(conn.fd().as_raw_fd()) {
            self.shared
                .report(Some(&peer), &RequestError::Connection(e));
            return;
        }
        self.shared.emit(Event::Started { peer: &peer });
        let layers = self.shared.layers.sessions(&peer);
        let deadline = layers.iter().map(|l| l.deadline()).min();
        let codec = self.handler.codec();
        let id = self
            .conns
            .slab
            .insert_with(|_| Peer::new(conn, peer, layers, ticket, codec));
        let fd = self.conns.slab.get(id).map(|p| p.fd);
        if let Some(Err(e)) = fd.map(|fd| self.epoll.add(fd, READABLE, id.token())) {
            if let Some(peer) = self.conns.slab.remove(id) {
                self.shared
                    .report(Some(&peer.addr), &RequestError::Connection(e));
                self.finished(&peer.addr, peer.opened, Outcome::Failed);
            }
            return;
        }
        self.timers.schedule(id, Instant::now());
        match deadline {
            Some(deadline) => self.layer_deadlines.push(Reverse((deadline, id))),
            None => self.opened(id),
        }
    }

    /// Every layer is done with `id`: the handler sees the connection.
    fn opened(&mut self, id: ConnId) {
        let handler = self.handler.clone();
        self.call(id, |conn| handler.on_open(conn));
    }

    fn finished(&self, peer: &crate::addr::Addr, opened: Instant, outcome: Outcome) {
        self.shared.emit(Event::Finished {
            peer,
            elapsed: opened.elapsed(),
            outcome,
        });
    }

    /// Handles one readiness report for connection `id`.
    fn ready(&mut self, id: ConnId, readiness: u32) {
        let Some(peer) = self.conns.slab.get(id) else {
            return; // closed earlier in this batch
        };
        let reading = peer.reading();
        if readiness & HUP_OR_ERROR != 0 {
            // Reset or fully shut: take what was received, then nothing more can be sent.
            if reading {
                self.read(id);
            }
            self.conns.abort(id);
            return;
        }
        if readiness & WRITABLE != 0 {
            self.conns.mark_dirty(id);
        }
        if readiness & READABLE != 0 && reading {
            self.read(id);
        }
    }

    /// One read from `id`, and the delivery of every frame it completed.
    fn read(&mut self, id: ConnId) {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        match peer.io.read(&mut self.scratch) {
            Ok(0) => {
                if peer.held {
                    // Its last messages wait for the connections it is held back for.
                    peer.input_closed = true;
                    self.conns.mark_dirty(id);
                    return;
                }
                if peer.layers.is_empty() {
                    self.deliver(id, true);
                }
                self.conns.close_gracefully(id);
            }
            Ok(n) => {
                peer.last_active = Instant::now();
                peer.input.extend_from_slice(&self.scratch[..n]);
                if self.advance_layers(id) {
                    self.deliver(id, false);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                log::debug!("reading from {}: {e}", peer.addr);
                self.conns.abort(id);
            }
        }
    }

    /// Feeds `id`'s input to its layers; returns whether they are all done (so the input is the
    /// handler's). The last layer finishing opens the connection to the handler.
    fn advance_layers(&mut self, id: ConnId) -> bool {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return false;
        };
        if peer.layers.is_empty() {
            return true;
        }
        while let Some(layer) = peer.layers.first_mut() {
            match layer.advance(&mut peer.input, &mut peer.addr, &mut peer.info) {
                Ok(Progress::Pending) => return false,
                Ok(Progress::Done) => {
                    peer.layers.remove(0);
                }
                Err(e) => {
                    peer.failed = true;
                    let addr = peer.addr.clone();
                    self.shared.report(Some(&addr), &e);
                    self.conns.abort(id);
                    return false;
                }
            }
        }
        peer.layers = Vec::new();
        self.opened(id);
        true
    }

    /// Hands every complete frame of `id`'s input to `on_message`, until the input runs out or the
    /// connection starts closing. At `eof`, the codec may also hand over a final partial frame.
    fn deliver(&mut self, id: ConnId, eof: bool) {
        loop {
            let Some(peer) = self.conns.slab.get_mut(id) else {
                return;
            };
            if peer.closing || peer.closed || peer.held {
                return;
            }
            let decoded = if eof {
                peer.codec.decode_eof(&mut peer.input)
            } else {
                peer.codec.decode(&mut peer.input)
            };
            match decoded {
                Ok(Some(message)) => {
                    let handler = self.handler.clone();
                    self.call(id, |conn| handler.on_message(conn, message));
                }
                Ok(None) => {
                    peer.release_input_if_empty();
                    return;
                }
                Err(e) => {
                    // The stream can no longer be split into frames: say why, and hang up.
                    peer.input = FrameBuf::new();
                    peer.failed = true;
                    let err = anyhow::Error::new(e).context("undecodable input");
                    self.shared
                        .report(Some(&peer.addr), &RequestError::Handler(err));
                    self.conns.close_gracefully(id);
                    return;
                }
            }
        }
    }

    /// Runs one handler callback for `id`; a failure or panic is reported and closes the connection.
    fn call(
        &mut self,
        id: ConnId,
        callback: impl FnOnce(&mut Conn<'_, H::Codec>) -> anyhow::Result<()>,
    ) {
        self.conns.backed_up.clear();
        let Some(mut conn) = Conn::new(id, &mut self.conns) else {
            return;
        };
        if let Err(e) = guarded(|| callback(&mut conn)) {
            self.shared.report(Some(conn.peer()), &e);
            if let Some(peer) = self.conns.slab.get_mut(id) {
                peer.failed = true;
            }
            self.conns.close_gracefully(id);
        }
        self.hold_if_backed_up(id);
    }

    /// Holds sender `id` back when its callback took other connections past half their output limit:
    /// nothing more is read or decoded from it until they are down to a quarter. So a burst from one
    /// connection is paced by its slowest *reading* receiver instead of disconnecting receivers that
    /// cannot keep up with the loop; one that does not read at all is closed by its write timeout,
    /// which releases the sender.
    fn hold_if_backed_up(&mut self, id: ConnId) {
        if self.conns.backed_up.is_empty() {
            return;
        }
        let mut receivers = std::mem::take(&mut self.conns.backed_up);
        receivers.sort_unstable();
        receivers.dedup();
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        if peer.closing || peer.closed {
            return;
        }
        if !peer.held {
            peer.held = true;
            self.held.push(id);
        }
        peer.waiting_on = receivers;
        self.conns.mark_dirty(id); // stop reading it
    }

    /// A held sender whose receivers have caught up (or gone), if any, taken off the held list.
    fn next_released(&mut self) -> Option<ConnId> {
        let low_water = self.conns.limit / 4;
        let slab = &mut self.conns.slab;
        let mut released = None;
        self.held.retain(|&id| {
            if released.is_some() {
                return true;
            }
            let Some(waiting_on) = slab.get(id).map(|p| p.waiting_on.clone()) else {
                return false; // closed since
            };
            let behind: Vec<ConnId> = waiting_on
                .into_iter()
                .filter(|&r| {
                    slab.get(r)
                        .is_some_and(|p| !p.closed && p.output.len() > low_water)
                })
                .collect();
            if let Some(peer) = slab.get_mut(id) {
                if behind.is_empty() {
                    peer.held = false;
                    peer.waiting_on = Vec::new();
                    released = Some(id);
                    return false;
                }
                peer.waiting_on = behind;
            }
            true
        });
        released
    }

    /// Lets a sender go on: its buffered input is decoded, reading resumes, and if it had finished
    /// sending meanwhile, it closes now.
    fn release(&mut self, id: ConnId) {
        let Some(peer) = self.conns.slab.get(id) else {
            return;
        };
        let eof = peer.input_closed;
        self.conns.mark_dirty(id); // read it again
        self.deliver(id, eof);
        if eof {
            self.conns.close_gracefully(id);
        }
    }

    /// Carries out what the last callbacks and events left to do: flush dirty connections (updating
    /// their epoll interest, pausing or resuming reading), close doomed ones. Closing runs `on_close`,
    /// which may leave more work, so this runs until both lists are empty.
    fn settle(&mut self) {
        loop {
            if let Some(id) = self.conns.dirty.pop() {
                self.flush(id);
            } else if let Some(id) = self.conns.doomed.pop() {
                self.close(id);
            } else if let Some(id) = self.next_released() {
                self.release(id);
            } else {
                return;
            }
        }
    }

    fn flush(&mut self, id: ConnId) {
        let limit = self.conns.limit;
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        peer.dirty = false;
        if peer.closed {
            return;
        }
        match peer.output.flush(&*peer.io) {
            Ok((written, flushed)) => {
                let now = Instant::now();
                if written > 0 {
                    peer.last_active = now;
                    peer.last_written = now;
                }
                if flushed == Flushed::All {
                    peer.output_since = None;
                    if peer.closing {
                        self.conns.doomed.push(id);
                        return;
                    }
                } else if peer.output_since.is_none() {
                    peer.output_since = Some(now);
                    peer.last_written = now;
                    self.write_timers.schedule(id, now);
                }
            }
            Err(e) => {
                log::debug!("writing to {}: {e}", peer.addr);
                self.conns.abort(id);
                return;
            }
        }
        let interest = peer.wanted_interest(limit);
        if interest != peer.registered {
            match self.epoll.modify(peer.fd, interest, id.token()) {
                Ok(()) => peer.registered = interest,
                Err(e) => {
                    log::warn!("{e}");
                    self.conns.abort(id);
                }
            }
        }
    }

    /// Closes `id`: `on_close` (if the handler saw it open), then it leaves the epoll set and the
    /// slab, and its socket is closed.
    fn close(&mut self, id: ConnId) {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        if peer.closed {
            return;
        }
        peer.closed = true;
        if peer.layers.is_empty() {
            let handler = self.handler.clone();
            self.call(id, |conn| {
                handler.on_close(conn);
                Ok(())
            });
        }
        if let Some(peer) = self.conns.slab.remove(id) {
            // Dropping `peer` closes the socket, which also leaves the epoll set; deleting first keeps
            // the set exact even if the descriptor was duplicated elsewhere.
            let _ = self.epoll.delete(peer.fd);
            let outcome = if peer.failed {
                Outcome::Failed
            } else {
                Outcome::Ok
            };
            self.finished(&peer.addr, peer.opened, outcome);
        }
        self.update_listening();
    }

    /// Closes the listener, stops reading, flushes what is queued until the shutdown timeout, then
    /// closes every connection; returns the run's summary.
    fn shut_down(&mut self) -> Option<ServeSummary> {
        self.shutting_down = true;
        let _ = self
            .epoll
            .delete(self.core.shutdown().wake_fd().as_raw_fd());
        let shared = self.shared.clone();
        let force = shared.shutdown().force_fd();
        let watching_force = self.epoll.add(force.as_raw_fd(), READABLE, FORCE).is_ok();
        if let Some(fd) = self.listener.take() {
            let _ = self.epoll.delete(fd);
        }
        if !self.core.close_listener() {
            return None;
        }
        let in_flight = self.conns.slab.len();
        self.core.draining(in_flight);
        let mut cursor = 0;
        while let Some(id) = self.conns.slab.nth_id_from(&mut cursor) {
            self.conns.close_gracefully(id);
        }
        self.settle();
        let deadline = self.core.drain_deadline();
        let mut forced = false;
        while self.conns.slab.len() > 0 && !forced {
            let now = Instant::now();
            if now >= deadline
                || self
                    .epoll
                    .wait(&mut self.events, Some(deadline - now))
                    .is_err()
            {
                break;
            }
            for i in 0..self.events.len() {
                let event = self.events[i];
                let token = epoll::token(&event);
                if token == FORCE {
                    forced = true;
                } else if token != WAKE && token != LISTENER {
                    self.ready(ConnId::from_token(token), epoll::readiness(&event));
                }
                self.settle();
            }
        }
        if watching_force {
            let _ = self.epoll.delete(force.as_fd().as_raw_fd());
        }
        let cut = self.conns.slab.len();
        let mut cursor = 0;
        while let Some(id) = self.conns.slab.nth_id_from(&mut cursor) {
            if let Some(peer) = self.conns.slab.get(id) {
                self.shared.emit(Event::Cut {
                    peer: Some(&peer.addr),
                    how: "the connection, with output pending,",
                });
            }
            self.conns.abort(id);
        }
        self.settle();
        Some(self.core.finish(Drained {
            in_flight,
            finished: in_flight.saturating_sub(cut),
            cut,
        }))
    }
}
