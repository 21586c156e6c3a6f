//! [`EventLoop`]: one thread, one epoll set, its connections. The loop owns the sockets' readiness
//! and the timers; what happens to a connection's bytes is the [`Engine`]'s.
//!
//! A `Reactor` runs one loop per thread ([`LoopOptions::threads`]). The first loop, on the thread
//! that called `serve_forever`, holds the server's [`Core`]: it accepts, admits and places each new
//! connection on the loop serving the fewest ([`Mesh::place`]), handing it over as mail; it also runs
//! the server's once-a-turn duties (heartbeat, `service_actions`) and ends the run. Every loop serves
//! its own connections and drains them itself at shutdown.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use std::sync::Arc;

use super::engine::{Engine, Flush};
use super::id::ConnId;
use super::linger::Lingering;
use super::mesh::{Mail, Mesh};
use super::message::MessageHandler;
use super::timers::IdleTimers;
use crate::error::RequestError;
use crate::serving::stats::Gauge;
use crate::serving::{Admitted, Core, Drained, Event, Next, ServeSummary, Shared};
use crate::sys::epoll::{self, Epoll, HUP_OR_ERROR, READ_CLOSED, READABLE, WRITABLE};
use crate::transport::{Incoming, Stream, Transport};

/// The epoll token of the shutdown eventfd. Connection tokens are `generation << 32 | slot`, which
/// could only reach these values with four billion slots.
const WAKE: u64 = u64::MAX;
/// The epoll token of the listener.
const LISTENER: u64 = u64::MAX - 1;
/// The epoll token of the "force" eventfd, watched while draining: a forced shutdown ends the drain.
const FORCE: u64 = u64::MAX - 2;
/// The epoll token of the loop's mailbox (mail from the other loops).
const MAIL: u64 = u64::MAX - 3;
/// How many bytes one read takes from one connection (one that fills it is read again, up to
/// [`READ_BURST`] more times in a turn; the rest waits for the next turn).
const READ_CHUNK: usize = super::registry::BUFFER;
/// How many more full buffers one readiness report may read from a connection, each written out
/// before the next is read: a stream keeps flowing (1 MiB at most) before the loop turns to the rest.
const READ_BURST: usize = 15;
/// How many times one readiness report reads a connection again because a layer holds input (each
/// read decrypts at least one TLS record; a layer that held input forever must not hold the loop).
const LAYER_REREADS: usize = 64;
/// How many connections one listener wake-up accepts before serving the others again.
const ACCEPT_BATCH: usize = 64;
/// How many readiness reports one `epoll_wait` returns at most.
const EVENTS: usize = 1024;

/// The `Reactor` strategy's options, as the loop needs them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopOptions {
    pub(crate) max_connections: usize,
    pub(crate) write_buffer_limit: usize,
    /// How many loops, each on a thread of its own.
    pub(crate) threads: usize,
    /// How long others' output may wait for more to join it.
    pub(crate) coalesce: std::time::Duration,
}

/// Serves `core` until shutdown, then drains; returns how serving ended and, once the loops have
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
    if options.threads <= 1 {
        let mut event_loop = match EventLoop::new(options, Role::Leader(core), None) {
            Ok(event_loop) => event_loop,
            Err(e) => return (Err(e), None),
        };
        let served = event_loop.run();
        let summary = event_loop.shut_down();
        return (served, summary);
    }
    let mesh = match Mesh::new(options.threads) {
        Ok(mesh) => mesh,
        Err(e) => return (Err(e), None),
    };
    let handler = core.handler().clone();
    let shared = core.shared().clone();
    let stop = shared.shutdown().clone();
    std::thread::scope(|scope| {
        // A panic in this loop (not a handler's: those are caught) must not leave the scope waiting
        // forever for the other loops: they are told to stop as it unwinds.
        let _stop_the_others = StopOnUnwind(&stop);
        let mut others = Vec::with_capacity(mesh.loops() - 1);
        let mut started = Ok(());
        for shard in 1..mesh.loops() as u16 {
            let (handler, shared, mesh) = (handler.clone(), shared.clone(), mesh.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("reactor-{shard}"))
                .spawn_scoped(scope, move || {
                    serve_other::<T, H>(options, handler, shared, mesh, shard)
                });
            match spawned {
                Ok(handle) => others.push(handle),
                Err(e) => {
                    started = Err(crate::sys::context(e, "spawning an event-loop thread"));
                    break;
                }
            }
        }
        let leader = started.and_then(|()| {
            EventLoop::new(options, Role::Leader(&mut *core), Some((mesh.clone(), 0)))
        });
        let (served, summary) = match leader {
            Ok(mut event_loop) => {
                let served = event_loop.run();
                let summary = event_loop.shut_down_leader(&mut others);
                // Another loop's failure is the run's, as the only loop's would be.
                let served = match event_loop.failed.take() {
                    Some(e) => served.and(Err(e)),
                    None => served,
                };
                (served, summary)
            }
            Err(e) => {
                // The loops that started end with the run.
                core.shutdown().shutdown();
                let _ = join_all(&mut others);
                (Err(e), None)
            }
        };
        (served, summary)
    })
}

/// Asks the server to stop if it is dropped while its thread unwinds from a panic.
struct StopOnUnwind<'a>(&'a crate::shutdown::ShutdownHandle);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.shutdown();
        }
    }
}

/// Runs loop `shard` (not the first) on this thread: serves what it is given until shutdown, then
/// drains; returns what its drain did.
fn serve_other<T, H>(
    options: LoopOptions,
    handler: Arc<H>,
    shared: Arc<Shared>,
    mesh: Arc<Mesh>,
    shard: u16,
) -> io::Result<Drained>
where
    T: Transport<Kind = Stream>,
    H: MessageHandler,
{
    let stop = shared.shutdown().clone();
    let role: Role<'_, T, H> = Role::Other { handler, shared };
    let result =
        EventLoop::new(options, role, Some((mesh.clone(), shard))).and_then(|mut event_loop| {
            let served = event_loop.run();
            let drained = event_loop.drain();
            served.map(|()| drained)
        });
    if result.is_err() {
        // One loop failing ends the run, as the only loop's failure would: the others drain, and
        // `serve_forever` returns the error.
        mesh.close(shard);
        stop.shutdown();
    }
    result
}

/// Waits for the other loops; returns what their drains did, added up, or the first failure.
fn join_all(
    others: &mut Vec<std::thread::ScopedJoinHandle<'_, io::Result<Drained>>>,
) -> io::Result<Drained> {
    let mut total = Drained::default();
    let mut failed = None;
    for handle in others.drain(..) {
        match handle.join() {
            Ok(Ok(drained)) => total += drained,
            Ok(Err(e)) => {
                failed.get_or_insert(e);
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    failed.map_or(Ok(total), Err)
}

/// What a loop is besides a loop: the first holds the server's core (the listener and the run's
/// duties); the others only what serving their connections needs.
enum Role<'c, T, H> {
    Leader(&'c mut Core<T, H>),
    Other {
        handler: Arc<H>,
        shared: Arc<Shared>,
    },
}

/// How one read of a connection ended.
enum ReadEnd {
    /// A layer holds more input the socket will not report: read again now.
    Again,
    /// Done; `full`: the read filled its buffer, so more is likely waiting in the socket.
    Done { full: bool },
}

struct EventLoop<'c, T, H: MessageHandler> {
    /// The server's core, in the first loop only.
    core: Option<&'c mut Core<T, H>>,
    engine: Engine<H>,
    /// The reactor's loops, when there are several.
    mesh: Option<Arc<Mesh>>,
    /// This loop's number.
    shard: u16,
    /// Mail taken from the mailbox, being carried out (kept for its capacity).
    inbox: Vec<Mail>,
    /// The figures this loop last added in (its share of the server-wide gauges).
    published: (u64, u64),
    /// Connections handed to this loop after its drain began.
    adopted_while_draining: usize,
    /// How another loop failed, once the first loop has joined them.
    failed: Option<io::Error>,
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
    /// Edge-triggered connections left with input in their sockets (a burst ended, or their output
    /// fell behind): epoll will not report them again, so the loop reads them again after the
    /// events of the turn, and does not sleep while there are any.
    unread: Vec<ConnId>,
    /// The list `unread` is swapped with while it is read (so neither is allocated again).
    unread_spare: Vec<ConnId>,
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
    fn new(
        options: LoopOptions,
        role: Role<'c, T, H>,
        mesh: Option<(Arc<Mesh>, u16)>,
    ) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let (core, handler, shared) = match role {
            Role::Leader(core) => {
                let (handler, shared) = (core.handler().clone(), core.shared().clone());
                (Some(core), handler, shared)
            }
            Role::Other { handler, shared } => (None, handler, shared),
        };
        epoll.add(shared.shutdown().wake_fd().as_raw_fd(), READABLE, WAKE)?;
        let listener = match core.as_ref().and_then(|core| core.listener()) {
            Some(fd) => {
                let fd = fd.as_raw_fd();
                epoll.add(fd, READABLE, LISTENER)?;
                Some(fd)
            }
            None => None,
        };
        let shard = mesh.as_ref().map_or(0, |(_, shard)| *shard);
        if let Some((mesh, shard)) = &mesh {
            epoll.add(mesh.wake_fd(*shard).as_raw_fd(), READABLE, MAIL)?;
        }
        let opts = shared.env.stream.clone();
        let mut engine = Engine::new(handler, shared, options.write_buffer_limit, mesh.clone());
        engine.conns.coalesce = options.coalesce;
        Ok(EventLoop {
            engine,
            mesh: mesh.map(|(mesh, _)| mesh),
            shard,
            inbox: Vec::new(),
            published: (0, 0),
            adopted_while_draining: 0,
            failed: None,
            timers: IdleTimers::new(opts.read_timeout),
            write_timers: IdleTimers::new(opts.write_timeout),
            epoll,
            events: Vec::with_capacity(EVENTS),
            layer_deadlines: BinaryHeap::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            unread: Vec::new(),
            unread_spare: Vec::new(),
            max_connections: options.max_connections,
            listening: listener.is_some(),
            listener,
            backoff_until: None,
            shutting_down: false,
            lingering: Lingering::default(),
            core,
        })
    }

    /// Connections open in every loop (the connection cap counts them all).
    fn open_connections(&self) -> usize {
        self.engine.conns.connections()
    }

    fn run(&mut self) -> io::Result<()> {
        if let Some(core) = self.core.as_mut() {
            match &self.mesh {
                Some(mesh) => core.serving(&format_args!(" (reactor, {} loops)", mesh.loops())),
                None => core.serving(&" (reactor)"),
            }
        }
        while !self.engine.shared().shutdown().is_shutdown() {
            let wake_at = [
                self.timers.next_deadline(),
                self.write_timers.next_deadline(),
                self.layer_deadlines.peek().map(|Reverse((at, _))| *at),
                self.backoff_until,
                self.core.as_ref().and_then(|core| core.heartbeat_at()),
                self.engine.conns.deferred_until(),
            ]
            .into_iter()
            .flatten()
            .min();
            self.wait(wake_at)?;
            for i in 0..self.events.len() {
                let event = self.events[i];
                match epoll::token(&event) {
                    WAKE => self.engine.shared().shutdown().mark(),
                    LISTENER => self.accept()?,
                    MAIL => self.receive_mail(),
                    token => self.ready(
                        ConnId::from_token(self.shard, token),
                        epoll::readiness(&event),
                    ),
                }
                // Mail first: the other loops start on their share (a broadcast's other half, a
                // connection handed over) while this one writes its own.
                self.post_mail();
                self.settle();
            }
            self.read_unread();
            let now = self.tick();
            self.expire(now);
            if self.engine.conns.deferred_until().is_some_and(|t| t <= now) {
                self.engine.conns.release_deferred();
            }
            self.settle();
            self.post_mail();
            self.publish_figures();
            if self.backoff_until.is_some_and(|t| t <= now) {
                self.backoff_until = None;
                self.update_listening();
            }
            if let Some(core) = self.core.as_mut() {
                core.service_actions();
            }
        }
        Ok(())
    }

    /// Waits for events, for at most `timeout`. Output waiting for company
    /// ([`Reactor::coalesce`](crate::Reactor::coalesce)) waits only while there is other work:
    /// when nothing is ready, it is written before the loop sleeps.
    fn wait(&mut self, wake_at: Option<Instant>) -> io::Result<()> {
        let now = self.engine.conns.now;
        if !self.unread.is_empty() {
            // Input is waiting: only a look at what else is ready.
            self.epoll.wait_until(&mut self.events, Some(now), now)?;
            self.tick();
            return Ok(());
        }
        if self.engine.conns.deferred_until().is_some() {
            self.epoll.wait_until(&mut self.events, Some(now), now)?;
            if !self.events.is_empty() {
                self.tick();
                return Ok(());
            }
            self.engine.conns.release_deferred();
            self.settle();
            // Closing a connection runs `on_close`, which may have sent to other loops.
            self.post_mail();
        }
        self.epoll.wait_until(&mut self.events, wake_at, now)?;
        self.tick();
        Ok(())
    }

    /// Reads the clock for the loop: what the connections' activity is stamped with until the next
    /// reading (twice a turn: after the wait, and after the turn's events), rather than a clock read
    /// for every read and write.
    fn tick(&mut self) -> Instant {
        self.engine.conns.now = Instant::now();
        self.engine.conns.now
    }

    /// Carries out the mail other loops sent this one.
    fn receive_mail(&mut self) {
        let Some(mesh) = &self.mesh else { return };
        let mut inbox = std::mem::take(&mut self.inbox);
        mesh.take(self.shard, &mut inbox);
        for mail in inbox.drain(..) {
            self.carry_out(mail);
        }
        self.inbox = inbox;
    }

    fn carry_out(&mut self, mail: Mail) {
        match mail {
            Mail::Adopt(admitted) => {
                if let Some(id) = self.open(admitted)
                    && self.shutting_down
                {
                    // Given just as the drain began: closes at its first boundary, like the rest.
                    self.adopted_while_draining += 1;
                    self.engine.close_at_boundary(id);
                }
            }
            Mail::Room => self.update_listening(),
            mail => self.engine.apply(mail),
        }
    }

    /// Posts the mail this turn produced for other loops. A connection handed to a loop that has
    /// ended (a drain racing an accept) is served here instead.
    fn post_mail(&mut self) {
        let Some(mesh) = self.mesh.clone() else {
            return;
        };
        let mut orphans = Vec::new();
        self.engine.conns.outbox.post(&mesh, |shard, mail| {
            if let Mail::Adopt(admitted) = mail {
                mesh.closed_one(shard);
                orphans.push(admitted);
            }
        });
        for admitted in orphans {
            mesh.adopt_here(self.shard);
            self.carry_out(Mail::Adopt(admitted));
        }
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

    /// Adds the change in the loop's running totals to the server's figures (at most two atomic
    /// adds a turn, whatever the number of connections; each loop adds its own share).
    fn publish_figures(&mut self) {
        let now = (
            self.engine.conns.paused as u64,
            self.engine.conns.queued_bytes as u64,
        );
        if now == self.published {
            return;
        }
        let counters = self.engine.shared().counters();
        let (paused, queued) = self.published;
        counters.add_gauge(Gauge::Paused, now.0.wrapping_sub(paused) as i64);
        counters.add_gauge(Gauge::QueuedBytes, now.1.wrapping_sub(queued) as i64);
        self.published = now;
    }

    /// Accepts up to a batch of pending connections.
    fn accept(&mut self) -> io::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            if self.open_connections() >= self.max_connections {
                break;
            }
            let Some(core) = self.core.as_mut() else {
                break;
            };
            match core.next()? {
                Next::Admitted(admitted) => self.place(admitted),
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

    /// Gives an admitted connection to the loop serving the fewest: this one, or another by mail.
    fn place(&mut self, admitted: Admitted<Incoming>) {
        let Some(mesh) = &self.mesh else {
            self.open(admitted);
            return;
        };
        match mesh.place() {
            shard if shard == self.shard => {
                self.open(admitted);
            }
            shard => self.engine.conns.outbox.push(shard, Mail::Adopt(admitted)),
        }
    }

    /// Takes in one admitted connection: non-blocking, watched, then the engine's.
    fn open(&mut self, admitted: Admitted<Incoming>) -> Option<ConnId> {
        let Admitted { request, ticket } = admitted;
        let Incoming { conn, peer, .. } = request;
        let fd = conn.fd().as_raw_fd();
        if let Err(e) = epoll::set_nonblocking(fd) {
            self.engine
                .shared()
                .report(Some(&peer), &RequestError::Connection(e));
            if let Some(mesh) = &self.mesh {
                mesh.closed_one(self.shard);
            }
            return None;
        }
        let id = self.engine.insert(conn, peer, ticket)?;
        let trigger = self.engine.conns.slab.get(id).map_or(0, |p| p.trigger());
        // Watched before the handler's `on_open` runs, so that whatever it queues is flushed. (Input
        // that came with the connection is reported at once, edge-triggered or not.)
        if let Err(e) = self.epoll.add(fd, READABLE | trigger, id.token()) {
            self.engine.fail(id, &RequestError::Connection(e));
            return None;
        }
        self.timers.schedule(id, self.engine.conns.now);
        if let Some(deadline) = self.engine.start(id) {
            self.layer_deadlines.push(Reverse((deadline, id)));
        }
        Some(id)
    }

    /// Handles one readiness report for connection `id`.
    fn ready(&mut self, id: ConnId, readiness: u32) {
        let Some(peer) = self.engine.conns.slab.get_mut(id) else {
            return; // closed earlier in this batch
        };
        if readiness & READ_CLOSED != 0 {
            peer.read_closed = true;
            peer.unread = true; // its end of stream, at least
        }
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
            self.read_burst(id);
        }
    }

    /// Reads `id` once, and on while each read fills its buffer and the output keeps up, up to
    /// [`READ_BURST`] more times. One left with input its socket will not report again is listed
    /// to be read after this turn's events.
    fn read_burst(&mut self, id: ConnId) {
        let mut burst = READ_BURST;
        while self.read(id) && burst > 0 && self.keeps_up(id) {
            burst -= 1;
        }
        self.list_unread(id);
    }

    /// Lists `id` to be read again without an event if it may hold input and is being read. (One
    /// whose reading is paused needs no listing: resuming registers its interest in reading again,
    /// and epoll then looks at the socket and reports what it holds, edge-triggered or not.)
    fn list_unread(&mut self, id: ConnId) {
        if let Some(peer) = self.engine.conns.slab.get_mut(id)
            && peer.unread
            && !peer.unread_listed
            && peer.reading()
        {
            peer.unread_listed = true;
            self.unread.push(id);
        }
    }

    /// Reads the connections left with input in earlier reads, each up to a burst, in the order
    /// they were left. Those left again wait for the next turn, after its events.
    fn read_unread(&mut self) {
        if self.unread.is_empty() {
            return;
        }
        let spare = std::mem::take(&mut self.unread_spare);
        let mut listed = std::mem::replace(&mut self.unread, spare);
        for id in listed.drain(..) {
            let Some(peer) = self.engine.conns.slab.get_mut(id) else {
                continue; // closed since
            };
            peer.unread_listed = false;
            if peer.unread && peer.reading() {
                self.read_burst(id);
                self.post_mail();
                self.settle();
            }
        }
        self.unread_spare = listed;
    }

    /// After a read that filled its buffer: writes what the handler queued, and tells whether the
    /// connection should be read again at once — its output all out, and it still reading. A thread
    /// serving a stream reads and writes in turn for as long as its time slice lasts; reading one
    /// buffer per connection per turn instead leaves the peer's socket half empty, so its reader
    /// sleeps and is woken for every buffer (a wake-up, often of an idle CPU, per 64 KiB).
    fn keeps_up(&mut self, id: ConnId) -> bool {
        self.post_mail();
        self.settle();
        self.engine
            .conns
            .slab
            .get(id)
            .is_some_and(|peer| peer.reading() && peer.output.is_empty() && !peer.io_pending)
    }

    /// Reads from `id` once, and again at once while a layer holds input the socket will not report
    /// again. Returns whether the last read filled its buffer, so more is likely waiting.
    fn read(&mut self, id: ConnId) -> bool {
        for _ in 0..LAYER_REREADS {
            match self.read_once(id) {
                ReadEnd::Again => {}
                ReadEnd::Done { full } => return full,
            }
        }
        false
    }

    /// One read from `id`, handed to the engine: straight into its input buffer when that is free,
    /// else into the loop's scratch buffer (a layer or a partial frame is in the way).
    fn read_once(&mut self, id: ConnId) -> ReadEnd {
        let Some(peer) = self.engine.conns.slab.get_mut(id) else {
            return ReadEnd::Done { full: false };
        };
        // A read may have advanced a layer with no bytes for the handler (a TLS handshake), and left
        // it records to send.
        let layered = !peer.layers.is_empty();
        // A stream through a layer (TLS) may leave input in the layer, long after the handshake.
        let wrapped = peer.wrapped;
        let read_closed = peer.read_closed;
        let mut full = false;
        let result = match self.engine.read_target(id) {
            Some((io, buf)) => io.read(buf).map(|n| {
                full = n == buf.len();
                (n, true)
            }),
            None => match self.engine.conns.slab.get_mut(id) {
                Some(peer) => peer.io.read(&mut self.scratch).map(|n| {
                    full = n == self.scratch.len();
                    (n, false)
                }),
                None => return ReadEnd::Done { full: false },
            },
        };
        // Whether the socket may still hold input (of a connection watched edge-triggered, for which
        // epoll will not say so again): after a read that filled its buffer; after any read that
        // brought bytes once the end of stream has come (it is reported once, maybe with the last
        // bytes, and only a read of its own returns it); after an interrupted one. Not after the end
        // of stream itself, nor `WouldBlock`, nor a failure.
        let more = !wrapped
            && match &result {
                Ok((0, _)) => false,
                Ok(_) => full || read_closed,
                Err(e) => e.kind() == io::ErrorKind::Interrupted,
            };
        match result {
            Ok((0, _)) => self.engine.input_ended(id),
            Ok((n, true)) => self.engine.received_in_place(id, n),
            Ok((n, false)) => self.engine.received(id, &self.scratch[..n]),
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
        // A read that brought nothing leaves no read buffer behind.
        self.engine.trim_input(id);
        if let Some(peer) = self.engine.conns.slab.get_mut(id) {
            peer.unread = more;
        }
        if wrapped {
            self.engine.conns.mark_dirty(id);
            // A layer that took over with bytes already read, or one holding input from this read
            // (TLS records that came together, of which the read decrypted the first): the socket
            // will not report that input again, so it is read now.
            if self.engine.take_reread(id) || self.layer_holds_input(id) {
                return ReadEnd::Again;
            }
        }
        ReadEnd::Done { full }
    }

    /// Whether `id` is being read and a layer holds input for it that its socket no longer shows
    /// (while the layer handshakes, and after).
    fn layer_holds_input(&self, id: ConnId) -> bool {
        self.engine
            .conns
            .slab
            .get(id)
            .is_some_and(|peer| peer.reading() && peer.io.holds_input())
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
                    self.write_timers.schedule(id, self.engine.conns.now);
                }
                let Some(peer) = self.engine.conns.slab.get_mut(id) else {
                    return;
                };
                if interest != peer.registered {
                    let resumed = interest & READABLE != 0 && peer.registered & READABLE == 0;
                    match self
                        .epoll
                        .modify(peer.fd, interest | peer.trigger(), id.token())
                    {
                        Ok(()) => peer.registered = interest,
                        Err(e) => {
                            log::warn!("{e}");
                            self.engine.conns.abort(id);
                        }
                    }
                    // Reading resumes (its output drained, or a held-back sender was let go): input
                    // a layer holds is not in the socket, and epoll will not report it.
                    if resumed && self.layer_holds_input(id) {
                        self.read(id);
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
            // The accepting loop stopped watching its listener at the cap: tell it there is room.
            if self.shard != 0
                && let Some(mesh) = &self.mesh
            {
                let open = mesh.open();
                if open < self.max_connections && open + mesh.loops() >= self.max_connections {
                    self.engine.conns.outbox.push(0, Mail::Room);
                }
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

    /// The only loop's end: closes the listener, drains, and returns the run's summary.
    fn shut_down(&mut self) -> Option<ServeSummary> {
        self.shut_down_leader(&mut Vec::new())
    }

    /// The first loop's end: closes the listener, drains its connections while the `others` drain
    /// theirs, and returns the run's summary (`None` if the run had been ended before).
    fn shut_down_leader(
        &mut self,
        others: &mut Vec<std::thread::ScopedJoinHandle<'_, io::Result<Drained>>>,
    ) -> Option<ServeSummary> {
        self.shutting_down = true;
        let several = self.mesh.is_some();
        let core = self.core.as_mut()?;
        if several {
            // Every loop sees the shutdown, also when this one's run ended for an error.
            core.shutdown().shutdown();
        }
        if let Some(fd) = self.listener.take() {
            let _ = self.epoll.delete(fd);
        }
        if !core.close_listener() {
            let _ = self.drain();
            let _ = join_all(others);
            return None;
        }
        let in_flight = self.open_connections();
        if let Some(core) = self.core.as_mut() {
            core.draining(in_flight);
        }
        let mut drained = self.drain();
        match join_all(others) {
            Ok(theirs) => drained += theirs,
            Err(e) => self.failed = Some(e),
        }
        self.publish_figures();
        Some(self.core.as_mut()?.finish(drained))
    }

    /// Closes each of this loop's connections once it is between messages and its output is
    /// flushed, until the shutdown timeout; then cuts the rest. Mail keeps flowing meanwhile, until
    /// the loop closes its mailbox with nothing left to serve. Returns what the drain did.
    fn drain(&mut self) -> Drained {
        self.shutting_down = true;
        let shared = self.engine.shared().clone();
        let _ = self.epoll.delete(shared.shutdown().wake_fd().as_raw_fd());
        let force = shared.shutdown().force_fd();
        let watching_force = self.epoll.add(force.as_raw_fd(), READABLE, FORCE).is_ok();
        let in_flight = self.engine.conns.slab.len();
        // Nothing waits for more company once draining: everything queued goes out now.
        self.engine.conns.coalesce = std::time::Duration::ZERO;
        self.engine.conns.release_deferred();
        self.close_at_boundaries();
        self.post_mail();
        let deadline = shared.drain_deadline();
        let mut forced = false;
        let mut lingered = self.lingering.expire(&self.epoll, Instant::now());
        loop {
            let busy = self.engine.conns.slab.len() > 0 || !self.lingering.is_empty();
            if !busy && !self.close_mailbox() {
                break;
            }
            let now = Instant::now();
            if forced || now >= deadline {
                break;
            }
            if !busy {
                continue; // the mailbox held connections: serve them
            }
            let wake = lingered.map_or(deadline, |l| l.min(deadline));
            // Input left unread: only a look at what else is ready.
            let wake = if self.unread.is_empty() { wake } else { now };
            if self
                .epoll
                .wait_until(&mut self.events, Some(wake), now)
                .is_err()
            {
                break;
            }
            self.tick();
            for i in 0..self.events.len() {
                let event = self.events[i];
                let token = epoll::token(&event);
                if token == FORCE {
                    forced = true;
                } else if token == MAIL {
                    self.receive_mail();
                } else if let Some(fd) = Lingering::fd_of(token) {
                    self.lingering.ready(&self.epoll, fd);
                } else if token != WAKE && token != LISTENER {
                    self.ready(
                        ConnId::from_token(self.shard, token),
                        epoll::readiness(&event),
                    );
                }
                self.settle();
            }
            self.read_unread();
            self.post_mail();
            lingered = self.lingering.expire(&self.epoll, Instant::now());
        }
        self.lingering.clear(&self.epoll);
        if watching_force {
            let _ = self.epoll.delete(force.as_fd().as_raw_fd());
        }
        // Connections still in the mailbox are taken in, to be cut with the rest.
        self.close_mailbox();
        let cut = self.engine.conns.slab.len();
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
        // Senders elsewhere held back for the connections just cut go on.
        self.post_mail();
        self.publish_figures();
        let in_flight = in_flight + self.adopted_while_draining;
        Drained {
            in_flight,
            finished: in_flight.saturating_sub(cut),
            cut,
        }
    }

    /// This loop has nothing left to serve: it takes no more mail. Returns whether what was still in
    /// its mailbox gave it connections to serve first. (The only loop has no mailbox.)
    fn close_mailbox(&mut self) -> bool {
        let Some(mesh) = self.mesh.clone() else {
            return false;
        };
        let before = self.engine.conns.slab.len();
        for mail in mesh.close(self.shard) {
            self.carry_out(mail);
        }
        self.settle();
        self.engine.conns.slab.len() > before
    }
}
