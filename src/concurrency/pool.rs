//! [`Pool`]: a fixed set of worker threads fed by a bounded queue.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::in_flight::InFlight;
use super::sealed::{Strategy, Workers};
use super::starvation::Load;
use super::{Concurrency, NotStarted, PerRequest, Spawn, accept_loop};
use crate::handler::sealed::Handles;
use crate::serving::stats::Gauge;
use crate::serving::{Core, Drained, Job, ServeSummary, Shape, Shared};
use crate::sys::{self, PollFd};
use crate::transport::Transport;

/// One accepted request, ready to run on a worker: its job, and its place in [`InFlight`] (released
/// when the task is dropped, after running or unserved).
type Task = Box<dyn FnOnce() + Send>;

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
    jobs: Sender<Task>,
    /// A receiver kept by the pool itself, to throw away tasks still queued at a drain deadline.
    queue: Receiver<Task>,
    threads: Vec<JoinHandle<()>>,
    /// Requests queued or running, with their connections.
    in_flight: Arc<InFlight>,
    capacity: usize,
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
            .is_some_and(|r| r.in_flight.count() >= r.capacity)
    }

    /// Starts the queue and the workers on first use.
    fn start_pool(&mut self) -> io::Result<&mut Running> {
        if self.running.is_none() {
            let capacity = self.capacity();
            // Room for every accepted request, so that handing one over never blocks the acceptor:
            // `has_capacity` keeps the queued and running requests at or below `capacity`.
            let (jobs, queue) = crossbeam_channel::bounded(capacity);
            let in_flight = Arc::new(InFlight::default());
            in_flight.ensure()?;
            let mut running = Running {
                jobs,
                queue,
                threads: Vec::with_capacity(self.workers),
                in_flight,
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
        std::thread::Builder::new()
            .name("pool-worker".into())
            .spawn(move || work(&queue))
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
}

/// A worker's life: take tasks until the pool closes the queue and it is empty.
fn work(queue: &Receiver<Task>) {
    for task in queue.iter() {
        // Tasks catch their handler's panics themselves; this catch keeps the worker alive should
        // anything else in a task unwind.
        if catch_unwind(AssertUnwindSafe(task)).is_err() {
            log::error!("a request task panicked outside its handler; the worker goes on");
        }
    }
}

impl<T: Transport, H: Handles<T::Kind>> Strategy<T, H> for Pool {
    const NAME: &'static str = "Pool";
    const SHAPE: Shape = Shape::Threads;

    fn serve(&mut self, core: &mut Core<T, H>) -> io::Result<()> {
        accept_loop::serve(self, core)
    }

    fn close(&mut self, core: &mut Core<T, H>) -> ServeSummary {
        accept_loop::close(self, core)
    }
}

impl<T: Transport, H: Handles<T::Kind>> Concurrency<T, H> for Pool {}
impl PerRequest for Pool {}

impl Workers for Pool {
    fn has_capacity(&mut self) -> bool {
        !self.at_cap()
    }

    fn watch(&mut self, fds: &mut Vec<PollFd>, capped: bool) {
        if let Some(running) = self.running.as_ref().filter(|_| capped) {
            running.in_flight.watch(fds, running.capacity);
        }
    }

    fn reap(&mut self, ready: &[PollFd], _shared: &Shared) {
        if let Some(running) = self.running.as_mut() {
            if !ready.is_empty() {
                running.in_flight.reset();
            }
            running.replace_dead_workers();
        }
    }

    fn start<F>(&mut self, job: Job<F>, spawn: &mut Spawn<'_>) -> Result<(), NotStarted>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let workers = self.workers as u64;
        let running = match self.start_pool() {
            Ok(running) => running,
            Err(error) => {
                return Err(NotStarted {
                    error,
                    peer: Box::new(job.peer),
                });
            }
        };
        let counters = spawn.shared.counters();
        counters.set(Gauge::WorkersLive, workers);
        counters.add_gauge(Gauge::Queued, 1);
        let shared = spawn.shared.clone();
        let entry = running.in_flight.enter(&job.peer, job.cutter.as_ref());
        let (run, ticket) = (job.run, job.ticket);
        let task: Task = Box::new(move || {
            shared.counters().add_gauge(Gauge::Queued, -1);
            run();
            drop((entry, ticket));
        });
        if running.jobs.try_send(task).is_err() {
            counters.add_gauge(Gauge::Queued, -1);
            // Cannot happen while `has_capacity` is respected (the queue has room for every accepted
            // request); refuse the request (dropping the task closes the connection) rather than block
            // the acceptor.
            return Err(NotStarted {
                error: io::Error::new(io::ErrorKind::WouldBlock, "the pool's queue is full"),
                peer: Box::new(job.peer),
            });
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.running.as_ref().map_or(0, |r| r.in_flight.count())
    }

    fn load(&self) -> Option<Load> {
        let in_flight = self.in_flight();
        Some(Load {
            busy: in_flight.min(self.workers),
            workers: self.workers,
            queued: in_flight.saturating_sub(self.workers),
            knob: "the pool's workers (Pool::new)",
        })
    }

    fn drain(&mut self, deadline: Option<Instant>, shared: &Shared) -> Drained {
        let Some(Running {
            jobs,
            queue,
            threads,
            in_flight,
            ..
        }) = self.running.take()
        else {
            return Drained::default();
        };
        // Closing the sending side makes every worker leave its loop once the queue is empty.
        drop(jobs);
        in_flight.close_idle();
        let before = in_flight.count();
        let Some(deadline) = deadline.filter(|_| self.block_on_close) else {
            // Detached: the workers finish the queue on their own, and nothing lingers.
            in_flight.end_linger();
            return Drained {
                in_flight: before,
                finished: before,
                cut: 0,
            };
        };
        let force = shared.shutdown().force_fd();
        let drained = if in_flight.wait_lingering(deadline, &force) {
            Drained {
                in_flight: before,
                finished: before,
                cut: 0,
            }
        } else {
            // Requests still queued are dropped unserved (their connections close); running ones have
            // their connections shut down so that their blocked reads and writes return.
            let queued = queue.try_iter().count();
            shared.counters().set(Gauge::Queued, 0);
            let cut = queued + in_flight.drain(Instant::now(), shared).cut;
            Drained {
                in_flight: before,
                finished: before.saturating_sub(cut),
                cut,
            }
        };
        if in_flight.count() == 0 {
            // The queue is closed and empty: every worker is leaving its loop, so these joins are quick.
            for thread in threads {
                let _ = thread.join();
            }
        }
        // Otherwise a handler ignores its socket's errors and cannot be stopped: the workers are
        // detached and end when it returns.
        drained
    }
}
