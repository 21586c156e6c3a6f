//! [`Pool`]: a fixed set of worker threads fed by a bounded queue.

use std::io;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::slot::Slot;
use super::{sealed, Concurrency, Dispatch, SpawnEnv};
use crate::handler::RequestContext;
use crate::sys::{self, PollFd};

/// How long workers whose connections were cut get to return before they are detached.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// One accepted request, ready to run on a worker.
type Job = Box<dyn FnOnce() -> bool + Send>;

/// Serves requests on a fixed number of worker threads fed by a bounded queue: a thread pool, the
/// shape of Java's `ThreadPoolExecutor` or Python's `concurrent.futures.ThreadPoolExecutor` behind a
/// `socketserver`.
///
/// Compared with [`Threading`](crate::Threading), no thread is created per request (threads are
/// started once, on the first request, and reused), and memory is bounded by construction: at most
/// [`workers`](Self::new) requests run and at most [`queue_capacity`](Self::queue_capacity) more wait
/// in the queue. When both are full the server stops accepting and sleeps until a worker finishes a
/// request; new connections wait in the kernel's listen backlog meanwhile (backpressure, not
/// buffering).
///
/// A worker survives its requests: a handler's panic is reported to the error hook and the worker
/// takes the next request (a worker thread that ended anyway is replaced). With
/// [`block_on_close`](Self::block_on_close) (the default), shutdown lets queued and running requests
/// finish up to the server's shutdown timeout, then cuts the connections still open.
///
/// Works with stream and datagram transports alike. Swapping `Threading` for `Pool` is a one-type
/// change: `Server<Pool, Tcp, Echo>`.
///
/// # Examples
///
/// ```
/// use socketserver::{Pool, Server, StreamRequest, Tcp};
///
/// let strategy = Pool::new(16).queue_capacity(64);
/// let _server = Server::new(strategy, Tcp::bind("127.0.0.1:0")?, |_r: &mut StreamRequest| Ok(()))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Pool {
    workers: usize,
    queue_capacity: Option<usize>,
    block_on_close: bool,
    running: Option<Running>,
}

/// The started pool: its queue and its threads.
#[derive(Debug)]
struct Running {
    jobs: Sender<Job>,
    /// A receiver kept by the pool itself, to throw away jobs still queued at a drain deadline.
    queue: Receiver<Job>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    capacity: usize,
}

/// What the serving loop and the workers share.
#[derive(Debug)]
struct Shared {
    /// Requests queued or running.
    in_flight: AtomicUsize,
    slot: Slot,
}

impl Default for Pool {
    /// [`DEFAULT_WORKERS_PER_CPU`](Self::DEFAULT_WORKERS_PER_CPU) workers per CPU (handlers usually
    /// block on I/O, so more threads than cores keep the CPUs busy), the default queue, blocking on
    /// close.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pool::new(cpus * Self::DEFAULT_WORKERS_PER_CPU)
    }
}

impl Pool {
    /// Workers per CPU in [`Pool::default`].
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Pool;
    /// assert_eq!(Pool::DEFAULT_WORKERS_PER_CPU, 4);
    /// // The default pool, but on half of the CPUs:
    /// let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    /// let _pool = Pool::new((cpus / 2).max(1) * Pool::DEFAULT_WORKERS_PER_CPU);
    /// ```
    pub const DEFAULT_WORKERS_PER_CPU: usize = 4;

    /// Queued requests per worker when no [`queue_capacity`](Self::queue_capacity) is set.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Pool;
    /// assert_eq!(Pool::DEFAULT_QUEUE_PER_WORKER, 4);
    /// // Eight workers and twice the default queue:
    /// let _pool = Pool::new(8).queue_capacity(8 * 2 * Pool::DEFAULT_QUEUE_PER_WORKER);
    /// ```
    pub const DEFAULT_QUEUE_PER_WORKER: usize = 4;

    /// A pool of `workers` threads (clamped to at least 1) with a queue of
    /// [`DEFAULT_QUEUE_PER_WORKER`](Self::DEFAULT_QUEUE_PER_WORKER) requests per worker, blocking on
    /// close. No thread starts until the first request.
    ///
    /// # Examples
    ///
    /// ```
    /// let _pool = socketserver::Pool::new(8);
    /// ```
    pub fn new(workers: usize) -> Self {
        Pool {
            workers: workers.max(1),
            queue_capacity: None,
            block_on_close: true,
            running: None,
        }
    }

    /// How many accepted requests may wait for a free worker (zero: hand each request straight to an
    /// idle worker). Beyond that the server stops accepting until a worker is free.
    ///
    /// # Examples
    ///
    /// ```
    /// let _pool = socketserver::Pool::new(4).queue_capacity(0);
    /// ```
    pub fn queue_capacity(mut self, requests: usize) -> Self {
        self.queue_capacity = Some(requests);
        self
    }

    /// Whether closing the server waits for queued and running requests (default `true`). With
    /// `false`, the workers are left to finish the queue on their own.
    ///
    /// # Examples
    ///
    /// ```
    /// let _pool = socketserver::Pool::new(4).block_on_close(false);
    /// ```
    pub fn block_on_close(mut self, block: bool) -> Self {
        self.block_on_close = block;
        self
    }

    /// The most requests accepted at once: every worker busy and the queue full.
    fn capacity(&self) -> usize {
        let queue = self
            .queue_capacity
            .unwrap_or(self.workers * Self::DEFAULT_QUEUE_PER_WORKER);
        self.workers + queue
    }

    fn at_cap(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.shared.in_flight.load(Ordering::SeqCst) >= r.capacity)
    }

    /// Starts the queue and the workers on first use.
    fn start(&mut self) -> io::Result<&mut Running> {
        if self.running.is_none() {
            let capacity = self.capacity();
            // Room for every accepted request, so that handing one over never blocks the acceptor:
            // `has_capacity` keeps the queued and running requests at or below `capacity`.
            let (jobs, queue) = crossbeam_channel::bounded(capacity);
            let slot = Slot::default();
            slot.ensure()?;
            let shared = Arc::new(Shared {
                in_flight: AtomicUsize::new(0),
                slot,
            });
            let mut running = Running {
                jobs,
                queue,
                threads: Vec::with_capacity(self.workers),
                shared,
                capacity,
            };
            for _ in 0..self.workers {
                let worker = running.spawn_worker()?;
                running.threads.push(worker);
            }
            self.running = Some(running);
        }
        self.running
            .as_mut()
            .ok_or_else(|| io::Error::other("the pool did not start"))
    }
}

impl Running {
    fn spawn_worker(&self) -> io::Result<JoinHandle<()>> {
        let queue = self.queue.clone();
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("pool-worker".into())
            .spawn(move || work(&queue, &shared))
            .map_err(|e| sys::context(e, "spawning a pool worker thread"))
    }

    /// Replaces worker threads that ended (only a panic escaping the job's own catch could end one).
    fn replace_dead_workers(&mut self) {
        for i in 0..self.threads.len() {
            let dead = self.threads.get(i).is_some_and(JoinHandle::is_finished);
            if !dead {
                continue;
            }
            match self.spawn_worker() {
                Ok(fresh) => {
                    let old = std::mem::replace(&mut self.threads[i], fresh);
                    let _ = old.join();
                    log::warn!("replaced a pool worker thread that ended");
                }
                Err(e) => log::warn!("{e}"),
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }
}

/// A worker's life: take jobs until the pool closes the queue and it is empty.
fn work(queue: &Receiver<Job>, shared: &Shared) {
    for job in queue.iter() {
        let _done = Done(shared);
        // Jobs catch their handler's panics themselves; this catch keeps the worker alive should
        // anything else in a job unwind.
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            log::error!("a request job panicked outside its handler; the worker goes on");
        }
    }
}

/// Marks one job finished, however it finished, and wakes a loop waiting for a slot.
struct Done<'a>(&'a Shared);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.slot.release();
    }
}

impl sealed::Sealed for Pool {}
impl Concurrency for Pool {}

impl Dispatch for Pool {
    const CONCURRENT_IN_PROCESS: bool = true;

    fn watch(&mut self, fds: &mut Vec<PollFd>) {
        if let Some(running) = self.running.as_ref().filter(|_| self.at_cap()) {
            let shared = &running.shared;
            let capacity = running.capacity;
            shared
                .slot
                .watch(fds, || shared.in_flight.load(Ordering::SeqCst) >= capacity);
        }
    }

    fn reap(&mut self, ready: &[PollFd], _ctx: &RequestContext) {
        if let Some(running) = self.running.as_mut() {
            if !ready.is_empty() {
                running.shared.slot.reset();
            }
            running.replace_dead_workers();
        }
    }

    fn has_capacity(&mut self) -> bool {
        !self.at_cap()
    }

    fn spawn<F>(&mut self, job: F, _env: &SpawnEnv<'_>) -> io::Result<()>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let running = self.start()?;
        running.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = running.jobs.try_send(Box::new(job)) {
            // Cannot happen while `has_capacity` is respected (the queue has room for every accepted
            // request); refuse the request rather than block the acceptor.
            running.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            drop(e.into_inner()); // closes the connection
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the pool's queue is full",
            ));
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.running.as_ref().map_or(0, Running::in_flight)
    }

    fn drain(
        &mut self,
        deadline: Option<Instant>,
        ctx: &RequestContext,
        cut_connections: &mut dyn FnMut(),
    ) -> (usize, usize) {
        let Some(Running {
            jobs,
            queue,
            threads,
            shared,
            ..
        }) = self.running.take()
        else {
            return (0, 0);
        };
        // Closing the sending side makes every worker leave its loop once the queue is empty.
        drop(jobs);
        let Some(deadline) = deadline.filter(|_| self.block_on_close) else {
            return (0, 0); // detached: the workers finish the queue on their own
        };
        let before = shared.in_flight.load(Ordering::SeqCst);
        let idle = || shared.in_flight.load(Ordering::SeqCst) == 0;
        let mut cut = 0;
        let force = ctx.shutdown.force_fd().as_raw_fd();
        if !shared.slot.wait_until(deadline, Some(force), idle) {
            cut = shared.in_flight.load(Ordering::SeqCst);
            log::warn!("drain deadline passed: cutting {cut} request(s)");
            // Requests still queued are dropped unserved (their connections close); running ones have
            // their connections shut down so that their blocked reads and writes return.
            for job in queue.try_iter() {
                drop(job);
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            cut_connections();
            shared
                .slot
                .wait_until(Instant::now() + CUT_GRACE, None, idle);
        }
        if idle() {
            // The queue is closed and empty: every worker is leaving its loop, so these joins are quick.
            for thread in threads {
                let _ = thread.join();
            }
        }
        // Otherwise a handler ignores its socket's errors and cannot be stopped: the workers are
        // detached and end when it returns.
        (before.saturating_sub(cut), cut)
    }
}
