//! [`Threading`]: a thread per request.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::in_flight::{CUT_GRACE, InFlight};
use super::sealed::{Strategy, Workers};
use super::starvation::Load;
use super::{Concurrency, NotStarted, PerRequest, Spawn, accept_loop};
use crate::handler::sealed::Handles;
use crate::serving::stats::Gauge;
use crate::serving::{Core, Drained, Job, ServeSummary, Shape, Shared};
use crate::sys::{self, PollFd};
use crate::transport::Transport;

/// Serves each request on a thread of its own: Python's `ThreadingMixIn`.
///
/// A request never waits for a thread: it gets an idle one at once, or a new one. A thread that has
/// finished its request waits up to [`thread_idle_timeout`](Self::thread_idle_timeout) (default 2 s) for
/// another before it exits, so a burst of short requests — connection churn, a datagram per request —
/// reuses threads instead of paying for a new one each (set it to zero for Python's exact one thread per
/// request). Threads are joined as they exit, so memory follows the peak of requests in flight, never the
/// number of requests served (Python before 3.7 kept every thread object).
///
/// A cap, [`max_threads`](Self::max_threads) (default [`DEFAULT_MAX_THREADS`](Self::DEFAULT_MAX_THREADS)),
/// bounds the requests running at once: at the cap the server stops accepting and the kernel's backlog
/// holds new connections until one finishes — a connection storm cannot create unbounded threads, as it
/// can under Python's `ThreadingMixIn`. Raise it for many long-lived connections (or use `Reactor`).
///
/// With [`block_on_close`](Self::block_on_close) (the default, as in Python 3.7+), closing the server
/// waits for running requests, up to the server's shutdown timeout.
///
/// # Examples
///
/// ```
/// use socketserver::{Server, StreamRequest, Tcp, Threading};
///
/// let strategy = Threading::new().max_threads(64);
/// let _server = Server::new(strategy, Tcp::bind("127.0.0.1:0")?, |_r: &mut StreamRequest| Ok(()))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Threading {
    max_threads: Option<usize>,
    block_on_close: bool,
    thread_idle_timeout: Duration,
    /// Every thread, running a request or idle, until it has exited and been joined.
    threads: HashMap<u64, JoinHandle<()>>,
    next_id: u64,
    exited_tx: Sender<u64>,
    exited_rx: Receiver<u64>,
    /// A rendezvous channel: handing a request over succeeds only if an idle thread is waiting.
    idle_tx: Sender<Task>,
    idle_rx: Receiver<Task>,
    /// Requests running now (not threads: idle threads run none), with their connections.
    in_flight: Arc<InFlight>,
}

/// One request, as a thread runs it: its job, and its place in [`InFlight`] (released when the task is
/// dropped, after running or not).
type Task = Box<dyn FnOnce() + Send>;

/// Sends the thread's id when it exits, however it exits, so the loop can join it.
struct Exited {
    id: u64,
    tx: Sender<u64>,
}

impl Drop for Exited {
    fn drop(&mut self) {
        let _ = self.tx.send(self.id);
    }
}

impl Default for Threading {
    fn default() -> Self {
        Threading::new()
    }
}

impl Threading {
    /// The default cap on live request threads.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Threading;
    /// assert_eq!(Threading::DEFAULT_MAX_THREADS, 1024);
    /// // Many long-lived connections: raise the cap rather than remove it.
    /// let _t = Threading::new().max_threads(4 * Threading::DEFAULT_MAX_THREADS);
    /// ```
    pub const DEFAULT_MAX_THREADS: usize = 1024;

    /// How long, by default, a thread that finished its request waits for another before it exits.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(socketserver::Threading::DEFAULT_THREAD_IDLE_TIMEOUT, Duration::from_secs(2));
    /// ```
    pub const DEFAULT_THREAD_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

    /// A thread per request, at most [`DEFAULT_MAX_THREADS`](Self::DEFAULT_MAX_THREADS) at once, finished
    /// threads reused for [`DEFAULT_THREAD_IDLE_TIMEOUT`](Self::DEFAULT_THREAD_IDLE_TIMEOUT), blocking on
    /// close.
    ///
    /// # Examples
    ///
    /// ```
    /// let _t = socketserver::Threading::new();
    /// ```
    pub fn new() -> Self {
        let (exited_tx, exited_rx) = crossbeam_channel::unbounded();
        let (idle_tx, idle_rx) = crossbeam_channel::bounded(0);
        Threading {
            max_threads: Some(Self::DEFAULT_MAX_THREADS),
            block_on_close: true,
            thread_idle_timeout: Self::DEFAULT_THREAD_IDLE_TIMEOUT,
            threads: HashMap::new(),
            next_id: 0,
            exited_tx,
            exited_rx,
            idle_tx,
            idle_rx,
            in_flight: Arc::default(),
        }
    }

    /// Caps the number of requests running at once, each on its own thread (`None` removes the cap).
    /// Clamped to at least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let _t = socketserver::Threading::new().max_threads(100);
    /// ```
    pub fn max_threads(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_threads = max.into().map(|m| m.max(1));
        self
    }

    /// Whether closing the server waits for running requests (default `true`). With `false`, running
    /// threads are left to finish on their own.
    ///
    /// # Examples
    ///
    /// ```
    /// let _t = socketserver::Threading::new().block_on_close(false);
    /// ```
    pub fn block_on_close(mut self, block: bool) -> Self {
        self.block_on_close = block;
        self
    }

    /// How long a thread that finished its request waits for another before it exits.
    ///
    /// The default, [`DEFAULT_THREAD_IDLE_TIMEOUT`](Self::DEFAULT_THREAD_IDLE_TIMEOUT), lets a burst of
    /// short requests reuse threads instead of paying for a new one each; `Duration::ZERO` gives
    /// Python's exact behaviour, one new thread per request.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let _strict = socketserver::Threading::new().thread_idle_timeout(Duration::ZERO);
    /// ```
    pub fn thread_idle_timeout(mut self, timeout: Duration) -> Self {
        self.thread_idle_timeout = timeout;
        self
    }

    /// Joins the threads that have exited; returns how many.
    fn join_exited(&mut self) -> usize {
        let mut n = 0;
        while let Ok(id) = self.exited_rx.try_recv() {
            if let Some(handle) = self.threads.remove(&id) {
                // The thread sent its id as its last act; this join returns at once.
                let _ = handle.join();
                n += 1;
            }
        }
        n
    }

    fn running(&self) -> usize {
        self.in_flight.count()
    }

    fn at_cap(&self) -> bool {
        self.max_threads.is_some_and(|max| self.running() >= max)
    }

    /// Starts a thread whose first request is `task`. On failure the task is dropped, which closes its
    /// connection and takes it out of the in-flight count.
    fn start_thread(&mut self, task: Task) -> io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let exited = Exited {
            id,
            tx: self.exited_tx.clone(),
        };
        let idle = self.idle_rx.clone();
        let keep = self.thread_idle_timeout;
        let handle = std::thread::Builder::new()
            .spawn(move || {
                let _exited = exited;
                let mut task = task;
                loop {
                    task();
                    match idle.recv_timeout(keep) {
                        Ok(next) => task = next,
                        Err(_) => break,
                    }
                }
            })
            .map_err(|e| sys::context(e, "spawning a request thread"))?;
        self.threads.insert(id, handle);
        Ok(())
    }

    /// Lets the idle threads go: replacing the rendezvous channel disconnects the old one, so every
    /// thread waiting on it exits at once.
    fn retire_idle(&mut self) {
        let (tx, rx) = crossbeam_channel::bounded(0);
        self.idle_tx = tx;
        self.idle_rx = rx;
    }
}

impl<T: Transport, H: Handles<T::Kind>> Strategy<T, H> for Threading {
    const NAME: &'static str = "Threading";
    const SHAPE: Shape = Shape::Threads;

    fn serve(&mut self, core: &mut Core<T, H>) -> io::Result<()> {
        accept_loop::serve(self, core)
    }

    fn close(&mut self, core: &mut Core<T, H>) -> ServeSummary {
        accept_loop::close(self, core)
    }
}

impl<T: Transport, H: Handles<T::Kind>> Concurrency<T, H> for Threading {}
impl PerRequest for Threading {}

impl Workers for Threading {
    fn has_capacity(&mut self) -> bool {
        !self.at_cap()
    }

    fn watch(&mut self, fds: &mut Vec<PollFd>, capped: bool) {
        if let Some(max) = self.max_threads.filter(|_| capped) {
            self.in_flight.watch(fds, max);
        }
    }

    fn reap(&mut self, ready: &[PollFd], shared: &Shared) {
        if !ready.is_empty() {
            self.in_flight.reset();
        }
        if self.join_exited() > 0 {
            shared
                .counters()
                .set(Gauge::WorkersLive, self.threads.len() as u64);
        }
    }

    fn start<F>(&mut self, job: Job<F>, spawn: &mut Spawn<'_>) -> Result<(), NotStarted>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let peer = job.peer;
        if let Err(error) = self.in_flight.ensure() {
            return Err(NotStarted {
                error,
                peer: Box::new(peer),
            });
        }
        let entry = self.in_flight.enter(&peer, job.cutter.as_ref());
        let (run, ticket) = (job.run, job.ticket);
        let task: Task = Box::new(move || {
            run();
            drop((entry, ticket));
        });
        // An idle thread takes it at once if one is waiting; otherwise a new thread starts.
        let task = match self.idle_tx.try_send(task) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(task) | TrySendError::Disconnected(task)) => task,
        };
        let started = self.start_thread(task);
        spawn
            .shared
            .counters()
            .set(Gauge::WorkersLive, self.threads.len() as u64);
        started.map_err(|error| NotStarted {
            error,
            peer: Box::new(peer),
        })
    }

    fn in_flight(&self) -> usize {
        self.running()
    }

    fn load(&self) -> Option<Load> {
        Some(Load {
            busy: self.running(),
            workers: self.max_threads?,
            queued: 0,
            knob: "Threading::max_threads",
        })
    }

    fn drain(&mut self, deadline: Option<Instant>, shared: &Shared) -> Drained {
        self.join_exited();
        // Without block_on_close, running requests finish on their own, their threads detached.
        let drained = match deadline.filter(|_| self.block_on_close) {
            Some(deadline) => self.in_flight.drain(deadline, shared),
            None => {
                // Detached: nothing lingers.
                self.in_flight.close_idle();
                self.in_flight.end_linger();
                Drained {
                    in_flight: self.running(),
                    finished: self.running(),
                    cut: 0,
                }
            }
        };
        self.retire_idle();
        // Idle threads exit at once now; join them (bounded), and detach whatever still runs — a
        // handler that ignores its socket's errors cannot be stopped.
        let grace = Instant::now() + CUT_GRACE;
        while self.threads.len() > self.running() && Instant::now() < grace {
            match self.exited_rx.recv_timeout(grace - Instant::now()) {
                Ok(id) => {
                    if let Some(handle) = self.threads.remove(&id) {
                        let _ = handle.join();
                    }
                }
                Err(_) => break,
            }
        }
        self.threads.clear();
        shared.counters().set(Gauge::WorkersLive, 0);
        drained
    }
}
