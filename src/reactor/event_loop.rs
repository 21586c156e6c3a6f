//! [`EventLoop`]: one thread, one epoll set, every connection.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use super::connections::Connections;
use super::output::Flushed;
use super::peer::Peer;
use super::timers::IdleTimers;
use crate::concurrency::Reactor;
use crate::error::RequestError;
use crate::framing::{Decoder, FrameBuf};
use crate::handler::{guarded, Conn, ConnId, MessageHandler, RequestContext};
use crate::server::{Core, ServeSummary};
use crate::sys::epoll::{self, Epoll, Event, HUP_OR_ERROR, READABLE, WRITABLE};
use crate::transport::{Accept, Incoming, Stream, Transport};

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

/// Serves `core`'s transport with `reactor`'s options until shutdown, then drains.
///
/// # Errors
/// The loop itself failing: `epoll_create1`/`epoll_wait` errors, or the listener breaking.
pub(crate) fn serve<T, H>(reactor: &Reactor, core: &mut Core<T, H>) -> io::Result<ServeSummary>
where
    T: Transport<Kind = Stream>,
    H: MessageHandler,
{
    let mut event_loop = EventLoop::new(reactor, core)?;
    let served = event_loop.run();
    let summary = event_loop.shut_down();
    served.map(|()| summary)
}

struct EventLoop<'c, T, H: MessageHandler> {
    core: &'c mut Core<T, H>,
    handler: Arc<H>,
    ctx: Arc<RequestContext>,
    epoll: Epoll,
    events: Vec<Event>,
    conns: Connections<H::Codec>,
    timers: IdleTimers,
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
    fn new(reactor: &Reactor, core: &'c mut Core<T, H>) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.add(core.shutdown.wake_fd().as_raw_fd(), READABLE, WAKE)?;
        let listener = match &core.transport {
            Some(t) => {
                let fd = t.as_fd().as_raw_fd();
                epoll.add(fd, READABLE, LISTENER)?;
                Some(fd)
            }
            None => None,
        };
        Ok(EventLoop {
            handler: core.handler.clone(),
            ctx: core.context(),
            epoll,
            events: Vec::with_capacity(EVENTS),
            conns: Connections::new(reactor.write_limit(), core.shutdown.clone()),
            timers: IdleTimers::new(core.stream.read_timeout),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            max_connections: reactor.connection_limit(),
            listening: listener.is_some(),
            listener,
            backoff_until: None,
            shutting_down: false,
            core,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        log::info!("serving on {} (reactor)", self.core.local_addr);
        while !self.core.shutdown.is_shutdown() {
            let wake_at = [self.timers.next_deadline(), self.backoff_until]
                .into_iter()
                .flatten()
                .min();
            let timeout = wake_at.map(|t| t.saturating_duration_since(Instant::now()));
            self.epoll.wait(&mut self.events, timeout)?;
            for i in 0..self.events.len() {
                let event = self.events[i];
                match epoll::token(&event) {
                    WAKE => self.core.shutdown.mark(),
                    LISTENER => self.accept()?,
                    token => self.ready(ConnId::from_token(token), epoll::readiness(&event)),
                }
                self.settle();
            }
            let now = Instant::now();
            let slab = &self.conns.slab;
            for id in self
                .timers
                .expire(now, |id| slab.get(id).map(|p| p.last_active))
            {
                log::debug!("closing idle connection {id}");
                self.conns.abort(id);
            }
            self.settle();
            if self.backoff_until.is_some_and(|t| t <= now) {
                self.backoff_until = None;
                self.update_listening();
            }
            if let Some(hook) = self.core.service.as_mut() {
                hook();
            }
        }
        Ok(())
    }

    /// Accepts up to a batch of pending connections.
    fn accept(&mut self) -> io::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            if self.conns.slab.len() >= self.max_connections {
                break;
            }
            let Some(transport) = self.core.transport.as_mut() else {
                break;
            };
            match transport.accept() {
                Ok(Accept::Ready(incoming)) => {
                    self.core.accepted();
                    self.open(incoming);
                }
                Ok(Accept::Refused(peer, err)) => self.ctx.report(peer.as_ref(), &err),
                Ok(Accept::WouldBlock) => break,
                Err(e) => {
                    let wait = self.core.accept_failed(e, &self.ctx)?;
                    if !wait.is_zero() {
                        self.backoff_until = Some(Instant::now() + wait);
                        break;
                    }
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

    /// Takes in one accepted connection: verify, make it non-blocking, watch it, `on_open`.
    fn open(&mut self, incoming: Incoming) {
        let Incoming { conn, peer } = incoming;
        if let Some(verify) = self.core.verify.as_mut() {
            if !verify(&peer) {
                log::info!("rejected {peer} (verify_request)");
                return;
            }
        }
        self.core.summary.requests += 1;
        let prepared = match conn.raw_fd() {
            Some(fd) => epoll::set_nonblocking(fd).map(|()| fd),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the reactor needs connections with a descriptor",
            )),
        };
        let fd = match prepared.and_then(|fd| {
            if self.core.stream.nodelay {
                conn.set_nodelay(true)?;
            }
            Ok(fd)
        }) {
            Ok(fd) => fd,
            Err(e) => {
                self.ctx
                    .report(Some(&peer), &RequestError::Handler(anyhow::Error::new(e)));
                return;
            }
        };
        let codec = self.handler.codec();
        let id = self
            .conns
            .slab
            .insert_with(|_| Peer::new(conn, fd, peer, codec));
        if let Err(e) = self.epoll.add(fd, READABLE, id.token()) {
            if let Some(peer) = self.conns.slab.remove(id) {
                self.ctx
                    .report(Some(&peer.addr), &RequestError::Handler(e.into()));
            }
            return;
        }
        self.timers.schedule(id, Instant::now());
        let handler = self.handler.clone();
        self.call(id, |conn| handler.on_open(conn));
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
                self.deliver(id, true);
                self.conns.close_gracefully(id);
            }
            Ok(n) => {
                peer.last_active = Instant::now();
                peer.input.extend_from_slice(&self.scratch[..n]);
                self.deliver(id, false);
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

    /// Hands every complete frame of `id`'s input to `on_message`, until the input runs out or the
    /// connection starts closing. At `eof`, the codec may also hand over a final partial frame.
    fn deliver(&mut self, id: ConnId, eof: bool) {
        loop {
            let Some(peer) = self.conns.slab.get_mut(id) else {
                return;
            };
            if peer.closing || peer.closed {
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
                    let err = anyhow::Error::new(e).context("undecodable input");
                    self.ctx
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
        let Some(mut conn) = Conn::new(id, &mut self.conns) else {
            return;
        };
        if let Err(e) = guarded(|| callback(&mut conn)) {
            self.ctx.report(Some(conn.peer()), &e);
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
                if written > 0 {
                    peer.last_active = Instant::now();
                }
                if flushed == Flushed::All && peer.closing {
                    self.conns.doomed.push(id);
                    return;
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

    /// Closes `id`: `on_close`, then it leaves the epoll set and the slab, and its socket is closed.
    fn close(&mut self, id: ConnId) {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        if peer.closed {
            return;
        }
        peer.closed = true;
        let handler = self.handler.clone();
        self.call(id, |conn| {
            handler.on_close(conn);
            Ok(())
        });
        if let Some(peer) = self.conns.slab.remove(id) {
            // Dropping `peer` closes the socket, which also leaves the epoll set; deleting first keeps
            // the set exact even if the descriptor was duplicated elsewhere.
            let _ = self.epoll.delete(peer.fd);
        }
        self.update_listening();
    }

    /// Closes the listener, stops reading, flushes what is queued until the shutdown timeout, then
    /// closes every connection.
    fn shut_down(&mut self) -> ServeSummary {
        self.shutting_down = true;
        let _ = self.epoll.delete(self.core.shutdown.wake_fd().as_raw_fd());
        let force = self.core.shutdown.force_fd().as_raw_fd();
        let watching_force = self.epoll.add(force, READABLE, FORCE).is_ok();
        if let Some(fd) = self.listener.take() {
            let _ = self.epoll.delete(fd);
        }
        self.core.transport = None;
        let in_flight = self.conns.slab.len();
        if in_flight > 0 {
            log::info!(
                "shutting down: flushing {in_flight} connection(s) for up to {:?}",
                self.core.shutdown_timeout
            );
        }
        let mut cursor = 0;
        while let Some(id) = self.conns.slab.nth_id_from(&mut cursor) {
            self.conns.close_gracefully(id);
        }
        self.settle();
        let deadline = Instant::now() + self.core.shutdown_timeout;
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
            let _ = self.epoll.delete(force);
        }
        let cut = self.conns.slab.len();
        if cut > 0 {
            log::warn!("shutdown timeout passed or forced: closing {cut} connection(s) with output pending");
        }
        let mut cursor = 0;
        while let Some(id) = self.conns.slab.nth_id_from(&mut cursor) {
            self.conns.abort(id);
        }
        self.settle();
        let mut summary = std::mem::take(&mut self.core.summary);
        summary.in_flight_at_shutdown = in_flight;
        summary.drained = in_flight.saturating_sub(cut);
        summary.cut = cut;
        log::info!("stopped serving on {}: {summary:?}", self.core.local_addr);
        summary
    }
}
