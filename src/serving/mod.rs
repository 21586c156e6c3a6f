//! The serving policy: what every serving loop — the blocking accept loop, the `Reactor`'s event loop,
//! each `PreFork` worker and its supervisor — does the same way, written once.
//!
//! - **Admission** ([`Core::next`]): accept, classify accept failures (retry, back off, give up), run
//!   `verify_request` and the per-peer limit, count.
//! - **A request's life** ([`Core::job`], [`Shared::serve`]): started, the per-connection layers, the
//!   handler, finished with its duration and outcome, failures reported.
//! - **Events** ([`events`]): every one of the above passes through [`Shared::emit`].
//! - **The end** ([`Core::finish`]): the summary, built from the counters and the strategy's drain.
//!
//! `Core` is everything a server is besides its strategy. Its state is private: loops go through its
//! methods.

use std::io;
use std::net::Shutdown;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::addr::Addr;
use crate::error::RequestError;
use crate::handler::{Env, StreamOptions, sealed::Handles};
use crate::layer::Layers;
use crate::notify::Notifier;
use crate::pidfile::PidFile;
use crate::shutdown::ShutdownHandle;
use crate::transport::sealed::KindOf;
use crate::transport::{Accept, Duplex, Kind, Request, Transport};

mod events;
mod peers;
pub mod stats;
mod summary;

pub(crate) use events::{ErrorHook, Event, Outcome, Rejection, StateHook};
pub(crate) use peers::Ticket;
pub(crate) use summary::Drained;
pub use summary::{HandleOutcome, ServeSummary};

use crate::state::ConnState;
use crate::transport::Phase;
use events::Events;
use peers::PeerLimit;
pub(crate) use stats::Shape;
use stats::{Counter, Counters, Stats};

/// The request type of transport `T`.
pub(crate) type RequestOf<T> = <<T as crate::transport::sealed::Listen>::Kind as KindOf>::Request;

type VerifyHook = Box<dyn FnMut(&Addr) -> bool + Send>;
type PlainHook = Box<dyn FnMut() + Send>;

/// The first delay after a failed `accept(2)` (Go's `net/http` uses the same 5 ms doubling to 1 s).
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long shutdown waits for in-flight requests before cutting them, unless told otherwise.
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// What every request of a server shares, wherever it runs: a worker thread, a forked child, a
/// pre-forked worker. Cheap to clone into workers (it is behind an `Arc`).
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// What a request sees of the server.
    pub(crate) env: Env,
    /// The per-connection layers, in order.
    pub(crate) layers: Layers,
    /// How long a drain lets in-flight requests finish (`Server::shutdown_timeout`).
    drain_timeout: Duration,
    events: Events,
    peers: Arc<PeerLimit>,
}

impl Shared {
    /// What requests served outside a server share (the test driver's): default options, a fresh
    /// shutdown handle, and `on_error` for the error hook.
    ///
    /// # Errors
    /// `eventfd(2)` or `mmap(2)` failing.
    pub(crate) fn standalone(
        on_error: ErrorHook,
        strategy: &'static str,
        shape: Shape,
    ) -> io::Result<Shared> {
        let local = Addr::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut events = Events::new(Stats::new(Counters::new()?, strategy, shape, local));
        events.set_error_hook(on_error);
        Ok(Shared {
            env: Env::standalone()?,
            layers: Layers::default(),
            drain_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            events,
            peers: Arc::new(PeerLimit::new(None)),
        })
    }

    /// Reports an event (see [`events`]).
    pub(crate) fn emit(&self, event: Event<'_>) {
        self.events.emit(event);
    }

    /// Reports a failure through the error hook.
    pub(crate) fn report(&self, peer: Option<&Addr>, error: &RequestError) {
        self.emit(Event::Failed { peer, error });
    }

    /// Tells the connection-state hook, if there is one, that `peer`'s connection is now `state`.
    pub(crate) fn state(&self, peer: &Addr, state: ConnState) {
        if self.events.wants_states() {
            self.emit(Event::State { peer, state });
        }
    }

    /// The figures.
    pub(crate) fn counters(&self) -> &Counters {
        self.events.stats().counters()
    }

    pub(crate) fn shutdown(&self) -> &ShutdownHandle {
        &self.env.shutdown
    }

    /// How long a drain waits for requests in flight.
    pub(crate) fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// The deadline of a drain that starts now.
    pub(crate) fn drain_deadline(&self) -> Instant {
        Instant::now() + self.drain_timeout
    }

    /// Serves one request from start to end: the layers, then the handler; reports how it went.
    /// Returns whether it succeeded. This is the one body every blocking strategy runs for a request,
    /// on whatever thread or process it chose.
    ///
    /// A request cut at a drain deadline has already been counted as cut, its state told: when its
    /// handler returns (its reads and writes having failed), that end is neither counted nor reported.
    pub(crate) fn serve<K: Kind, H: Handles<K>>(
        &self,
        handler: &H,
        request: <K as KindOf>::Request,
        cut: &AtomicBool,
    ) -> bool {
        let peer = request.peer().clone();
        let started = Instant::now();
        self.emit(Event::Started { peer: &peer });
        self.state(&peer, ConnState::Active);
        let result = request
            .layered(|incoming| self.layers.establish(incoming))
            .and_then(|request| handler.serve(request, &self.env));
        // Whoever sets the mark first owns the request's end: this return, or the drain's cut.
        if cut.swap(true, Ordering::SeqCst) {
            if let Err(error) = &result {
                log::debug!("request from {peer}, cut, ended with: {error}");
            }
            return false;
        }
        if let Err(error) = &result {
            self.report(Some(&peer), error);
        }
        self.emit(Event::Finished {
            peer: &peer,
            elapsed: started.elapsed(),
            outcome: Outcome::of(&result),
        });
        self.state(&peer, ConnState::Closed);
        result.is_ok()
    }
}

/// One accepted request that passed admission, on its way to a worker.
#[derive(Debug)]
pub(crate) struct Admitted<R> {
    pub(crate) request: R,
    pub(crate) ticket: Ticket,
}

/// What [`Core::next`] found.
#[derive(Debug)]
pub(crate) enum Next<R> {
    /// A request to serve.
    Admitted(Admitted<R>),
    /// Nothing is pending: wait for the listener.
    Idle,
    /// Something was refused, rejected or failed transiently: try again at once.
    Again,
    /// Accepting failed for lack of a resource (`EMFILE`): wait this long before accepting again.
    BackOff(Duration),
    /// The listener is closed.
    Closed,
}

/// A request ready for a worker: what to run, and what a strategy may need to know about it.
pub(crate) struct Job<F> {
    /// Serves the request and reports its failures; returns whether it succeeded.
    pub(crate) run: F,
    /// Who the request is from, for the strategy's own reports (a child cut at a deadline).
    pub(crate) peer: Addr,
    /// For stream requests: how a strategy running requests in this process cuts one at the drain
    /// deadline.
    pub(crate) cutter: Option<Cutter>,
    /// The request's place in its peer's count: dropped when the request is over for this server.
    pub(crate) ticket: Ticket,
}

/// Cuts one request at a drain deadline: marks it cut first — so that its handler's return, once
/// its reads and writes fail, is not counted a second time — then shuts its connection down. The
/// mark is shared with the request, and whichever side sets it first owns the request's end, so a
/// request finishing just as the deadline passes is counted once, as one or the other.
#[derive(Clone)]
pub(crate) struct Cutter {
    conn: Arc<dyn Duplex>,
    mark: Arc<AtomicBool>,
    phase: Option<Arc<Phase>>,
}

impl Cutter {
    /// A drain began: closes the connection now if its handler waits between requests with nothing
    /// of a next one arrived (its read returns end of stream, and the request ends well), or at its
    /// next boundary otherwise — as Go's `Shutdown` does, and HTTP servers ending keep-alive during a
    /// drain: a client opens a new connection for its next request.
    ///
    /// Closing is lingering: the peer is sent end of stream, and the handler's waiting read drops
    /// what still comes until the peer closes too ([`end_linger`](Self::end_linger) bounds it).
    pub(crate) fn close_if_idle(&self) {
        if let Some(phase) = &self.phase
            && phase.drain()
            && !crate::transport::has_input(&**phase.layered().unwrap_or(&self.conn))
            && phase.shut()
        {
            // Through the layers (TLS says `close_notify` before the end of stream).
            let _ = phase
                .layered()
                .unwrap_or(&self.conn)
                .shutdown(Shutdown::Write);
        }
    }

    /// Ends the lingering of a connection [`close_if_idle`](Self::close_if_idle) closed, whose peer
    /// has not closed in turn: its handler's read returns end of stream now.
    pub(crate) fn end_linger(&self) {
        if self.phase.as_ref().is_some_and(|phase| phase.is_shut()) {
            let _ = self.conn.shutdown(Shutdown::Read);
        }
    }

    /// Cuts the request unless it has ended already; returns whether it did.
    pub(crate) fn cut(&self) -> bool {
        if self.mark.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Some(phase) = &self.phase {
            phase.set_cut();
        }
        let _ = self.conn.shutdown(Shutdown::Both);
        true
    }
}

impl std::fmt::Debug for Cutter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cutter")
            .field("cut", &self.mark.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<F> std::fmt::Debug for Job<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Everything a server is besides its strategy: the transport, the handler, the hooks, the options,
/// and the policy every serving loop applies through its methods.
///
/// Kept apart from the strategy so that a strategy's own serving code (a pre-forked worker, an event
/// loop) can borrow the two independently.
pub(crate) struct Core<T, H> {
    transport: Option<T>,
    handler: Arc<H>,
    local_addr: Addr,
    shared: Arc<Shared>,
    timeout: Option<Duration>,
    verify: Option<VerifyHook>,
    on_timeout: Option<PlainHook>,
    service: Option<PlainHook>,
    backoff: Duration,
    /// `Accepted` as counted when the last summary was made, so each summary counts its own run.
    counted: u64,
    closed: bool,
    /// systemd's notifications, and when the watchdog is next due.
    notify: Option<Notify>,
    /// Written once ready, removed at the end.
    pid_file: Option<PidFile>,
    /// Whether this server has been ready once (an upgrade's successor counts its servers).
    announced: bool,
}

/// A server's systemd notifier and its watchdog schedule.
#[derive(Debug)]
struct Notify {
    notifier: Notifier,
    next_ping: Option<Instant>,
}

impl<T: Transport, H> Core<T, H> {
    /// A core serving `transport` with `handler` and the default options, for strategy `strategy`
    /// (its name and the shape of its figures).
    ///
    /// # Errors
    /// `getsockname(2)`, `eventfd(2)` or `mmap(2)` failing.
    pub(crate) fn new(
        transport: T,
        handler: H,
        strategy: &'static str,
        shape: Shape,
    ) -> io::Result<Self> {
        let local_addr = transport.local_addr()?;
        let stats = Stats::new(Counters::new()?, strategy, shape, local_addr.clone());
        Ok(Core {
            transport: Some(transport),
            handler: Arc::new(handler),
            local_addr,
            shared: Arc::new(Shared {
                env: Env {
                    shutdown: ShutdownHandle::new()?,
                    stream: StreamOptions::default(),
                    on_state: None,
                },
                layers: Layers::default(),
                drain_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
                events: Events::new(stats),
                peers: Arc::new(PeerLimit::new(None)),
            }),
            timeout: None,
            verify: None,
            on_timeout: None,
            service: None,
            backoff: Duration::ZERO,
            counted: 0,
            closed: false,
            notify: None,
            pid_file: None,
            announced: false,
        })
    }
}

impl<T, H> Core<T, H> {
    // ---- configuration (the server's builder methods) ----

    /// The shared part, to change before serving (a copy is made if workers of an earlier run still
    /// hold the old one).
    fn shared_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.shared)
    }

    pub(crate) fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    pub(crate) fn set_shutdown_timeout(&mut self, timeout: Duration) {
        self.shared_mut().drain_timeout = timeout;
    }

    pub(crate) fn stream_options_mut(&mut self) -> &mut StreamOptions {
        &mut self.shared_mut().env.stream
    }

    pub(crate) fn layers_mut(&mut self) -> &mut Layers {
        &mut self.shared_mut().layers
    }

    pub(crate) fn set_max_connections_per_peer(&mut self, max: Option<usize>) {
        self.shared_mut().peers = Arc::new(PeerLimit::new(max));
    }

    pub(crate) fn set_verify(&mut self, hook: VerifyHook) {
        self.verify = Some(hook);
    }

    pub(crate) fn set_error_hook(&mut self, hook: ErrorHook) {
        self.shared_mut().events.set_error_hook(hook);
    }

    pub(crate) fn set_state_hook(&mut self, hook: StateHook) {
        let shared = self.shared_mut();
        shared.env.on_state = Some(hook.clone());
        shared.events.set_state_hook(hook);
    }

    pub(crate) fn set_timeout_hook(&mut self, hook: PlainHook) {
        self.on_timeout = Some(hook);
    }

    pub(crate) fn set_notifier(&mut self, notifier: Option<Notifier>) {
        self.notify = notifier.map(|notifier| Notify {
            notifier,
            next_ping: None,
        });
    }

    pub(crate) fn set_pid_file(&mut self, pid_file: PidFile) {
        self.pid_file = Some(pid_file);
    }

    pub(crate) fn set_service_hook(&mut self, hook: PlainHook) {
        self.service = Some(hook);
    }

    // ---- what loops read ----

    pub(crate) fn local_addr(&self) -> &Addr {
        &self.local_addr
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The live figures.
    pub(crate) fn stats(&self) -> Stats {
        self.shared.events.stats().clone()
    }

    pub(crate) fn shutdown(&self) -> &ShutdownHandle {
        &self.shared.env.shutdown
    }

    pub(crate) fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    pub(crate) fn stream_options(&self) -> &StreamOptions {
        &self.shared.env.stream
    }

    /// `handle_request`'s wait for a request.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The deadline of a drain that starts now.
    pub(crate) fn drain_deadline(&self) -> Instant {
        self.shared.drain_deadline()
    }

    // ---- hooks ----

    /// Python's `service_actions`, once per turn of a serving loop.
    pub(crate) fn service_actions(&mut self) {
        if let Some(hook) = self.service.as_mut() {
            hook();
        }
        self.heartbeat();
    }

    // ---- systemd ----

    /// Tells systemd (if it listens) `state`; a failure is logged, never fatal.
    fn tell_systemd(&self, state: &str) {
        if let Some(n) = &self.notify
            && let Err(e) = n.notifier.send(state)
        {
            log::warn!("{e}");
        }
    }

    /// The loop is alive: pings systemd's watchdog if a ping is due (every half its interval),
    /// with the live figures as the status line.
    pub(crate) fn heartbeat(&mut self) {
        let Some(n) = self.notify.as_mut() else {
            return;
        };
        let Some(interval) = n.notifier.watchdog_interval() else {
            return;
        };
        let now = Instant::now();
        if n.next_ping.is_some_and(|due| now < due) {
            return;
        }
        n.next_ping = Some(now + interval / 2);
        let s = self.shared.events.stats().snapshot();
        let state = format!(
            "WATCHDOG=1\nSTATUS=serving on {} ({}): {} open, {} served, {} failed",
            self.local_addr,
            s.strategy,
            s.open,
            s.requests.finished,
            s.requests.failed + s.requests.panicked
        );
        self.tell_systemd(&state);
    }

    /// When the serving loop must wake for its next watchdog ping, if there is a watchdog.
    pub(crate) fn heartbeat_at(&self) -> Option<Instant> {
        let n = self.notify.as_ref()?;
        n.notifier.watchdog_interval()?;
        Some(n.next_ping.unwrap_or_else(Instant::now))
    }

    /// A reload began (`PreFork`): systemd's `RELOADING=1`.
    pub(crate) fn reloading(&self) {
        self.tell_systemd(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
            crate::notify::monotonic_usec()
        ));
        // What the layers read from files (TLS certificates) is read again, before new workers fork.
        self.shared.layers.reload();
    }

    /// Python's `handle_timeout`: `handle_request` saw no request in time.
    pub(crate) fn timed_out(&mut self) {
        if let Some(hook) = self.on_timeout.as_mut() {
            hook();
        }
    }

    /// A serving loop starts; `how` describes it for the log (" with 4 workers").
    pub(crate) fn serving(&mut self, how: &dyn std::fmt::Display) {
        self.shared.emit(Event::Serving {
            local: &self.local_addr,
            how,
        });
        self.ready();
    }

    /// Ready to serve (again, after a reload): the PID file names this process, systemd hears
    /// `READY=1`, and an upgrading predecessor learns it (once per server).
    pub(crate) fn ready(&mut self) {
        if !std::mem::replace(&mut self.announced, true) {
            crate::activation::server_ready();
        }
        if let Some(pid_file) = &self.pid_file
            && let Err(e) = pid_file.write()
        {
            log::error!("{e}");
        }
        let strategy = self.shared.events.stats().snapshot().strategy;
        self.tell_systemd(&format!(
            "READY=1\nSTATUS=serving on {} ({strategy})",
            self.local_addr
        ));
    }

    // ---- the end ----

    /// Stops accepting: closes the listener (new connections are refused from now on). Returns
    /// whether this is the first close, after which the caller drains and calls
    /// [`finish`](Self::finish); a second close has nothing to drain.
    pub(crate) fn close_listener(&mut self) -> bool {
        self.transport = None;
        let first = !std::mem::replace(&mut self.closed, true);
        if first {
            self.tell_systemd("STOPPING=1\nSTATUS=draining");
        }
        first
    }

    /// Whether [`close_listener`](Self::close_listener) has run.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// For a worker process that is a copy of this one (a forked child): lets go of its copy of the
    /// listener, so a slow child cannot keep the port accepting after the server has shut down.
    /// Whatever a request still holds of the socket (a datagram's reply socket) stays open.
    pub(crate) fn release_listener_copy(&mut self) {
        drop(self.transport.take());
    }

    /// A drain began with `in_flight` requests.
    pub(crate) fn draining(&self, in_flight: usize) {
        if in_flight > 0 {
            self.shared.emit(Event::Draining {
                in_flight,
                timeout: self.shared.drain_timeout,
            });
        }
    }

    /// Builds the run's summary from the counters and what the strategy's drain did, and reports the
    /// end of serving.
    pub(crate) fn finish(&mut self, drained: Drained) -> ServeSummary {
        let accepted = self.shared.counters().get(Counter::Accepted);
        let summary = ServeSummary {
            requests: accepted - self.counted,
            in_flight_at_shutdown: drained.in_flight,
            drained: drained.finished,
            cut: drained.cut,
        };
        self.counted = accepted;
        if let Some(pid_file) = &self.pid_file {
            pid_file.remove();
        }
        self.shared.emit(Event::Stopped {
            local: &self.local_addr,
            summary: &summary,
        });
        summary
    }
}

impl<T: Transport, H> Core<T, H> {
    /// The listener's descriptor, while it is open.
    pub(crate) fn listener(&self) -> Option<BorrowedFd<'_>> {
        use crate::transport::sealed::Listen;
        self.transport.as_ref().map(Listen::as_fd)
    }

    /// Takes the next request from the transport and decides whether it is served: the admission
    /// policy of every serving loop.
    ///
    /// # Errors
    /// The listener itself broke (`EBADF`, `EINVAL`, …): serving cannot go on.
    pub(crate) fn next(&mut self) -> io::Result<Next<RequestOf<T>>> {
        let Some(transport) = self.transport.as_mut() else {
            return Ok(Next::Closed);
        };
        match transport.accept() {
            Ok(Accept::Ready(request)) => {
                self.backoff = Duration::ZERO;
                Ok(self.admit(request))
            }
            Ok(Accept::Refused(peer, error)) => {
                self.shared.report(peer.as_ref(), &error);
                Ok(Next::Again)
            }
            Ok(Accept::WouldBlock) => Ok(Next::Idle),
            Err(e) => self.accept_failed(e),
        }
    }

    /// `verify_request`, then the per-peer limit; a refused request is dropped here, which closes its
    /// connection at once.
    fn admit(&mut self, request: RequestOf<T>) -> Next<RequestOf<T>> {
        let peer = request.peer();
        if let Some(verify) = self.verify.as_mut()
            && !verify(peer)
        {
            self.shared.emit(Event::Rejected {
                peer,
                by: Rejection::Verify,
            });
            return Next::Again;
        }
        let Some(ticket) = self.shared.peers.enter(peer) else {
            let limit = self.shared.peers.max().unwrap_or(0);
            self.shared.emit(Event::Rejected {
                peer,
                by: Rejection::PerPeer { limit },
            });
            return Next::Again;
        };
        self.shared.emit(Event::Accepted { peer });
        self.shared.state(peer, ConnState::New);
        Next::Admitted(Admitted { request, ticket })
    }

    /// Classifies an accept failure: retry at once, back off, or give up.
    fn accept_failed(&mut self, err: io::Error) -> io::Result<Next<RequestOf<T>>> {
        match err.raw_os_error() {
            // The peer gave up before we accepted, or a signal: nothing wrong with the server.
            Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EAGAIN) => Ok(Next::Again),
            // The listener itself is broken: serving cannot go on.
            Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT) => {
                Err(err)
            }
            // EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unknown: report and back off.
            _ => {
                self.shared.report(None, &RequestError::Accept(err));
                Ok(Next::BackOff(self.back_off()))
            }
        }
    }

    /// The next delay before accepting again after a failure for lack of a resource, doubling, so a
    /// full descriptor table (or process table) does not spin the CPU on an always-readable listener.
    pub(crate) fn back_off(&mut self) -> Duration {
        self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.backoff
    }

    /// A worker for `peer`'s request could not be started: report it as such, and back off as for
    /// descriptor exhaustion (a process or memory limit does not lift at once either).
    pub(crate) fn spawn_failed(&mut self, peer: &Addr, err: io::Error) -> Duration {
        self.shared.report(Some(peer), &RequestError::Spawn(err));
        self.back_off()
    }

    /// Wraps an admitted request as a job for a blocking strategy's worker.
    pub(crate) fn job(
        &self,
        admitted: Admitted<RequestOf<T>>,
    ) -> Job<impl FnOnce() -> bool + Send + 'static + use<T, H>>
    where
        H: Handles<T::Kind>,
    {
        let Admitted { request, ticket } = admitted;
        let peer = request.peer().clone();
        let mark = Arc::new(AtomicBool::new(false));
        let cutter = request.connection().map(|conn| Cutter {
            conn: conn.clone(),
            mark: mark.clone(),
            phase: request.phase().cloned(),
        });
        let shared = self.shared.clone();
        let handler = self.handler.clone();
        Job {
            run: move || shared.serve::<T::Kind, H>(&handler, request, &mark),
            peer,
            cutter,
            ticket,
        }
    }
}
