//! [`PreFork`]: a supervisor process and a fixed set of pre-forked worker processes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};

use super::{sealed, Concurrency, Dispatch, SpawnEnv};
use crate::error::RequestError;
use crate::handler::{RequestContext, Service};
use crate::server::{Core, Serve, ServeSummary, Server};
use crate::signals;
use crate::sys::{self, ChildExit, EventFd, Forked, PollFd, SharedCounters};
use crate::transport::Transport;

/// How long workers get between the `SIGTERM` and the `SIGKILL` once the drain deadline has passed.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// A worker that dies abnormally sooner than this after it started counts as crash-looping: its
/// replacement waits, doubling from [`RESPAWN_BACKOFF_MIN`] up to [`RESPAWN_BACKOFF_MAX`].
const STARTUP_GRACE: Duration = Duration::from_secs(1);
const RESPAWN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESPAWN_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Serves with a fixed number of pre-forked worker processes that each accept on the shared listener
/// and serve one request at a time: Apache's prefork MPM, Perl's `Net::Server::PreFork`, gunicorn's
/// sync workers.
///
/// The process that calls `serve_forever` becomes the *supervisor*: it forks the workers, runs no
/// handler code, and keeps the count right.
///
/// - **Replacement**: a worker that dies is replaced at once; if workers die within a second of
///   starting (a crash loop), replacements back off, doubling from 100 ms to 10 s, so the supervisor
///   never spins.
/// - **Recycling**: with [`max_requests`](Self::max_requests), a worker exits after that many requests
///   and is replaced (bounding the damage of a slow leak in a handler).
/// - **Shutdown** ([`ShutdownHandle`](crate::ShutdownHandle), or `SIGTERM` through
///   [`signals::shutdown_on_signals`]): every worker stops accepting, finishes its current request and
///   exits. Workers still running at the server's [shutdown
///   timeout](crate::Server::shutdown_timeout) get `SIGTERM` again (which now ends them), then
///   `SIGKILL` after a 2 s grace; all are reaped before `serve_forever` returns its summary in the
///   supervisor. A handler calling `req.server().shutdown()` in a worker stops the whole server.
/// - **Reload** ([`ReloadHandle::reload`], or `SIGHUP` through [`signals::reload_on_sighup`]): new
///   workers start at once, and the old ones finish their current request and exit.
/// - **One worker**: `SIGTERM`, `SIGINT` or `SIGHUP` sent to a worker makes that worker alone finish
///   its request and exit; the supervisor replaces it. A second `SIGTERM` ends it at once.
/// - **No zombies**: the supervisor reaps only its own workers, each through its `pidfd` — never
///   `waitpid(-1)`, so an unrelated child of the process keeps its exit status for its owner. Workers
///   get `SIGTERM` if the supervisor itself dies.
///
/// The server's hooks run where the requests are: `verify_request`, `service_actions` and the error
/// hook for request failures run in the workers; the error hook also hears, in the supervisor, of
/// workers that died abnormally ([`RequestError::ChildFailed`]).
///
/// Workers share one listening socket, so the kernel hands each connection (or datagram) to one idle
/// worker; a busy worker does not accept. The request count in the returned
/// [`ServeSummary`](crate::ServeSummary) is gathered from every worker through shared memory.
///
/// # Notes
/// As with [`Forking`](crate::Forking), start a `PreFork` server from a process that has **one
/// thread**: `fork(2)` copies only the calling thread. Requires Linux 5.3+ (`pidfd_open(2)`).
/// `PreFork` has no `handle_request`: its workers serve until shutdown.
///
/// # Examples
///
/// ```no_run
/// use socketserver::{signals, PreFork, Server, StreamRequest, Tcp};
///
/// let prefork = PreFork::new(4).max_requests(10_000);
/// signals::reload_on_sighup(&prefork.reload_handle())?;
/// let mut server = Server::new(prefork, Tcp::bind("127.0.0.1:0")?, |_r: &mut StreamRequest| Ok(()))?;
/// signals::shutdown_on_signals(&server.shutdown_handle())?;
/// let summary = server.serve_forever()?; // in the supervisor, after every worker is reaped
/// println!("served {} requests", summary.requests);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct PreFork {
    workers: usize,
    max_requests: Option<u64>,
    reload: ReloadHandle,
    running: Option<Supervisor>,
}

/// A cloneable, `Send` handle that asks a [`PreFork`] server to replace its workers gracefully:
/// new workers start at once, the old ones finish their current request and exit.
///
/// Like [`ShutdownHandle::shutdown`](crate::ShutdownHandle::shutdown), [`reload`](Self::reload) never
/// blocks and works from any thread, from a signal handler (see [`signals::reload_on_sighup`]) and
/// from inside a handler running in a worker: it writes an eventfd the supervisor polls.
///
/// # Examples
///
/// ```
/// let prefork = socketserver::PreFork::new(2);
/// let reload = prefork.reload_handle();
/// reload.reload(); // the supervisor replaces its workers on its next turn
/// ```
#[derive(Clone, Debug)]
pub struct ReloadHandle {
    wake: Arc<EventFd>,
}

impl ReloadHandle {
    /// Asks the supervisor to replace every worker gracefully. Non-blocking; requests made before the
    /// supervisor looks are merged into one reload.
    ///
    /// # Examples
    ///
    /// From another thread, e.g. one that watches a configuration file:
    ///
    /// ```
    /// let prefork = socketserver::PreFork::new(2);
    /// let reload = prefork.reload_handle();
    /// let watcher = std::thread::spawn(move || {
    ///     // ... the configuration changed:
    ///     reload.reload();
    ///     reload.reload(); // merged with the first if the supervisor has not looked yet
    /// });
    /// watcher.join().unwrap();
    /// ```
    pub fn reload(&self) {
        self.wake.notify();
    }

    /// The descriptor the supervisor polls; readable once a reload has been requested.
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

/// The supervisor's state while serving.
#[derive(Debug)]
struct Supervisor {
    target: usize,
    max_requests: Option<u64>,
    workers: Vec<Worker>,
    /// Counter 0: requests served by all workers; counter `1 + slot`: whether the worker holding
    /// `slot` is inside a request.
    stats: Arc<SharedCounters>,
    free_slots: Vec<usize>,
    backoff: Duration,
    respawn_at: Option<Instant>,
    pid: libc::pid_t,
}

#[derive(Debug)]
struct Worker {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    started: Instant,
    /// Told to finish its current request and exit; not replaced when it does.
    retiring: bool,
    slot: Option<usize>,
}

impl Default for PreFork {
    /// `2 × CPUs + 1` workers (gunicorn's rule of thumb for sync workers: one busy on the CPU while
    /// another waits on I/O), no recycling.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        PreFork::new(2 * cpus + 1)
    }
}

impl PreFork {
    /// A supervisor of `workers` worker processes (clamped to at least 1), never recycled.
    ///
    /// # Panics
    /// If the process cannot create an `eventfd(2)` for the reload handle (descriptor exhaustion at
    /// start-up).
    ///
    /// # Examples
    ///
    /// ```
    /// let _prefork = socketserver::PreFork::new(8);
    /// ```
    pub fn new(workers: usize) -> Self {
        PreFork {
            workers: workers.max(1),
            max_requests: None,
            reload: ReloadHandle {
                wake: Arc::new(EventFd::new(false).expect("eventfd(2) for the reload handle")),
            },
            running: None,
        }
    }

    /// Recycles each worker after it has served `requests` requests (`None`, the default: never).
    /// Clamped to at least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let _prefork = socketserver::PreFork::new(4).max_requests(1000);
    /// ```
    pub fn max_requests(mut self, requests: impl Into<Option<u64>>) -> Self {
        self.max_requests = requests.into().map(|r| r.max(1));
        self
    }

    /// A handle that replaces the workers gracefully (see [`ReloadHandle`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{signals, PreFork};
    /// let prefork = PreFork::new(2);
    /// signals::reload_on_sighup(&prefork.reload_handle())?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// The supervisor's loop: keeps `workers` workers alive until shutdown.
    fn supervise<T, H>(&mut self, core: &mut Core<T, H>) -> io::Result<()>
    where
        T: Transport,
        H: Service<T::Kind>,
    {
        if core.transport.is_none() {
            return Ok(());
        }
        let ctx = core.context();
        if self.running.is_none() {
            self.running = Some(Supervisor::new(self.workers, self.max_requests)?);
        }
        let Some(sup) = self.running.as_mut() else {
            return Ok(());
        };
        log::info!(
            "serving on {} with {} pre-forked workers",
            core.local_addr,
            sup.target
        );
        let mut fds = Vec::with_capacity(2 + 2 * sup.target);
        loop {
            if core.shutdown.is_shutdown() {
                return Ok(());
            }
            sup.top_up(core);
            fds.clear();
            fds.push(sys::readable(core.shutdown.wake_fd().as_raw_fd()));
            fds.push(sys::readable(self.reload.wake_fd().as_raw_fd()));
            fds.extend(
                sup.workers
                    .iter()
                    .map(|w| sys::readable(w.pidfd.as_raw_fd())),
            );
            let wait = sup
                .respawn_at
                .map(|t| t.saturating_duration_since(Instant::now()));
            sys::poll(&mut fds, wait)?;
            if fds.first().is_some_and(sys::is_ready) {
                core.shutdown.mark();
                return Ok(());
            }
            if fds.get(1).is_some_and(sys::is_ready) {
                self.reload.wake.take();
                sup.retire_all("reload");
            }
            if fds.iter().skip(2).any(sys::is_ready) {
                sup.reap(&ctx, false);
            }
        }
    }

    /// Closes the supervisor's listener and drains the workers; what `serve_forever` ends with.
    fn close<T, H>(&mut self, core: &mut Core<T, H>) -> ServeSummary
    where
        T: Transport,
    {
        core.transport = None;
        let Some(mut sup) = self.running.take() else {
            return ServeSummary::default();
        };
        let ctx = core.context();
        let in_flight = sup.busy();
        sup.retire_all("shutdown");
        log::info!(
            "shutting down: waiting up to {:?} for {} worker(s), {in_flight} in a request",
            core.shutdown_timeout,
            sup.workers.len()
        );
        sup.wait_workers(Instant::now() + core.shutdown_timeout, &ctx);
        let cut = sup.workers.len();
        if cut > 0 {
            log::warn!("drain deadline passed: sending SIGTERM to {cut} worker(s)");
            sup.signal_all(Signal::SIGTERM);
            sup.wait_workers(Instant::now() + KILL_GRACE, &ctx);
            if !sup.workers.is_empty() {
                log::warn!(
                    "{} worker(s) ignored SIGTERM: sending SIGKILL",
                    sup.workers.len()
                );
                sup.signal_all(Signal::SIGKILL);
                // SIGKILL cannot be ignored: this ends as soon as the kernel tears the workers down.
                while !sup.workers.is_empty() {
                    sup.wait_workers(Instant::now() + Duration::from_millis(100), &ctx);
                }
            }
        }
        let summary = ServeSummary {
            requests: sup.requests(),
            in_flight_at_shutdown: in_flight,
            drained: in_flight.saturating_sub(cut),
            cut,
        };
        log::info!("stopped serving on {}: {summary:?}", core.local_addr);
        summary
    }
}

impl Supervisor {
    fn new(target: usize, max_requests: Option<u64>) -> io::Result<Self> {
        // Room for a full set of workers plus a full set still retiring after a reload; a worker
        // beyond that (reloads in quick succession) simply is not counted as busy.
        let slots = 2 * target;
        Ok(Supervisor {
            target,
            max_requests,
            workers: Vec::with_capacity(slots),
            stats: Arc::new(SharedCounters::new(1 + slots)?),
            free_slots: (0..slots).rev().collect(),
            backoff: Duration::ZERO,
            respawn_at: None,
            pid: std::process::id() as libc::pid_t,
        })
    }

    /// Starts workers until `target` are serving, unless a crash back-off is pending.
    fn top_up<T, H>(&mut self, core: &mut Core<T, H>)
    where
        T: Transport,
        H: Service<T::Kind>,
    {
        if self.respawn_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.respawn_at = None;
        while self.workers.iter().filter(|w| !w.retiring).count() < self.target {
            if let Err(e) = self.spawn_worker(core) {
                log::error!("could not start a worker: {e}");
                self.back_off();
                return;
            }
        }
    }

    /// Forks one worker, which serves until it is told to stop and then exits.
    fn spawn_worker<T, H>(&mut self, core: &mut Core<T, H>) -> io::Result<()>
    where
        T: Transport,
        H: Service<T::Kind>,
    {
        // Block the signals the supervisor handles until the new worker has its own handlers: a
        // signal in between would run the supervisor's handler in the worker (and, for SIGTERM, shut
        // the whole server down through the shared eventfd).
        let blocked = signals::Blocked::new()?;
        let slot = self.free_slots.pop();
        let pid = match sys::fork() {
            Ok(Forked::Child) => self.become_worker(core, blocked.old_mask(), slot),
            Ok(Forked::Parent(pid)) => pid,
            Err(e) => {
                self.free_slots.extend(slot);
                return Err(e);
            }
        };
        drop(blocked);
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                // Without a pidfd the supervisor cannot watch this worker: end it now rather than
                // leave it unsupervised. Only happens on kernels older than 5.3.
                sys::kill(pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                self.free_slots.extend(slot);
                return Err(e);
            }
        };
        if let Some(busy) = slot.and_then(|s| self.stats.get(1 + s)) {
            busy.store(0, Ordering::SeqCst);
        }
        self.workers.push(Worker {
            pid,
            pidfd,
            started: Instant::now(),
            retiring: false,
            slot,
        });
        log::debug!("started worker {pid}");
        Ok(())
    }

    /// The worker side of the fork: never returns.
    fn become_worker<T, H>(&self, core: &mut Core<T, H>, mask: &SigSet, slot: Option<usize>) -> !
    where
        T: Transport,
        H: Service<T::Kind>,
    {
        // A panic must never unwind into the supervisor's code, which this process also holds.
        let result = catch_unwind(AssertUnwindSafe(|| self.serve_as_worker(core, mask, slot)));
        let code = match result {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                log::error!("worker {}: {e}", std::process::id());
                1
            }
            Err(_) => {
                log::error!("worker {} panicked", std::process::id());
                1
            }
        };
        sys::exit_child(code)
    }

    fn serve_as_worker<T, H>(
        &self,
        core: &mut Core<T, H>,
        mask: &SigSet,
        slot: Option<usize>,
    ) -> io::Result<()>
    where
        T: Transport,
        H: Service<T::Kind>,
    {
        signals::reset_in_child();
        // The siblings' pidfds belong to the supervisor.
        for w in &self.workers {
            sys::close_raw(w.pidfd.as_raw_fd());
        }
        let retire = EventFd::new(false)?;
        signals::retire_on_signals(sys::raw(&retire))?;
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None)
            .map_err(|e| sys::context(e.into(), "sigprocmask(2)"))?;
        // If the supervisor dies, retire rather than serve on unsupervised.
        sys::set_parent_death_signal(Signal::SIGTERM)?;
        if std::os::unix::process::parent_id() as libc::pid_t != self.pid {
            return Ok(()); // it died before the line above
        }
        let mut worker = WorkerLoop {
            retire,
            served: 0,
            max_requests: self.max_requests,
            stats: self.stats.clone(),
            slot,
        };
        core.run(&mut worker, None)?;
        Ok(())
    }

    /// Tells every serving worker to finish its current request and exit.
    fn retire_all(&mut self, why: &str) {
        let mut n = 0;
        for w in self.workers.iter_mut().filter(|w| !w.retiring) {
            sys::kill(w.pid, Signal::SIGTERM);
            w.retiring = true;
            n += 1;
        }
        if n > 0 {
            log::info!("{why}: retiring {n} worker(s)");
        }
    }

    fn signal_all(&self, sig: Signal) {
        for w in &self.workers {
            sys::kill(w.pid, sig);
        }
    }

    /// Reaps every worker that has exited, schedules replacements for the ones that were not retiring
    /// (unless `shutting_down`), and returns how many were reaped.
    fn reap(&mut self, ctx: &RequestContext, shutting_down: bool) -> usize {
        let mut exited = Vec::new();
        self.workers.retain(|w| match sys::try_reap(w.pid) {
            Ok(Some(exit)) => {
                exited.push((w.pid, w.started, w.retiring, w.slot, exit));
                false
            }
            Ok(None) => true,
            Err(e) => {
                log::warn!("{e}");
                true
            }
        });
        for &(pid, started, retiring, slot, exit) in &exited {
            if let Some(s) = slot {
                if let Some(busy) = self.stats.get(1 + s) {
                    busy.store(0, Ordering::SeqCst);
                }
                self.free_slots.push(s);
            }
            let clean = exit == ChildExit::Code(0);
            // During shutdown, a worker ended by a signal was cut by the supervisor itself.
            let cut = shutting_down && matches!(exit, ChildExit::Signal(_));
            if !clean && !cut {
                let how = match exit {
                    ChildExit::Code(code) => format!("worker {pid} exited with status {code}"),
                    ChildExit::Signal(sig) => format!("worker {pid} was killed by signal {sig}"),
                };
                ctx.report(None, &RequestError::ChildFailed(how));
            }
            if retiring || shutting_down {
                continue;
            }
            if !clean && started.elapsed() < STARTUP_GRACE {
                self.back_off();
            } else {
                self.backoff = Duration::ZERO;
                log::info!("worker {pid} exited: replacing it");
            }
        }
        exited.len()
    }

    /// Delays the next worker start, doubling the delay each time workers keep dying.
    fn back_off(&mut self) {
        self.backoff = (self.backoff * 2).clamp(RESPAWN_BACKOFF_MIN, RESPAWN_BACKOFF_MAX);
        log::warn!(
            "workers are dying at start-up: next worker in {:?}",
            self.backoff
        );
        self.respawn_at = Some(Instant::now() + self.backoff);
    }

    /// Waits, reaping, until every worker has exited or `deadline` passes.
    fn wait_workers(&mut self, deadline: Instant, ctx: &RequestContext) {
        while !self.workers.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let mut fds: Vec<PollFd> = self
                .workers
                .iter()
                .map(|w| sys::readable(w.pidfd.as_raw_fd()))
                .collect();
            if sys::poll(&mut fds, Some(deadline - now)).is_err() {
                break;
            }
            self.reap(ctx, true);
        }
    }

    /// How many workers are inside a request now.
    fn busy(&self) -> usize {
        self.workers
            .iter()
            .filter_map(|w| w.slot.and_then(|s| self.stats.get(1 + s)))
            .filter(|busy| busy.load(Ordering::SeqCst) != 0)
            .count()
    }

    /// Requests served by all workers so far.
    fn requests(&self) -> u64 {
        self.stats.get(0).map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl sealed::Sealed for PreFork {}
impl Concurrency for PreFork {}

impl<T, H> Serve<T, H> for PreFork
where
    T: Transport,
    H: Service<T::Kind>,
{
    fn serve_forever(server: &mut Server<Self, T, H>) -> io::Result<ServeSummary> {
        let Server { concurrency, core } = server;
        let supervised = concurrency.supervise(core);
        // Drain the workers whether the loop ended by shutdown or by an error.
        let summary = concurrency.close(core);
        supervised.map(|()| summary)
    }

    fn server_close(server: &mut Server<Self, T, H>) -> ServeSummary {
        let Server { concurrency, core } = server;
        concurrency.close(core)
    }
}

/// How one worker process runs the shared accept loop: one request at a time, inline, until it is
/// told to retire or has served `max_requests`.
#[derive(Debug)]
struct WorkerLoop {
    /// Written by the worker's retire signal handler; polled so an idle worker wakes at once.
    retire: EventFd,
    served: u64,
    max_requests: Option<u64>,
    stats: Arc<SharedCounters>,
    slot: Option<usize>,
}

impl sealed::Sealed for WorkerLoop {}
impl Concurrency for WorkerLoop {}

/// Clears a worker's busy flag when its request ends, however it ends.
struct Busy<'a>(Option<&'a std::sync::atomic::AtomicU64>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(busy) = self.0 {
            busy.store(0, Ordering::SeqCst);
        }
    }
}

impl Dispatch for WorkerLoop {
    const CONCURRENT_IN_PROCESS: bool = false;

    fn watch(&mut self, fds: &mut Vec<PollFd>) {
        fds.push(sys::readable(sys::raw(&self.retire)));
    }

    fn reap(&mut self, _ready: &[PollFd], _ctx: &RequestContext) {}

    fn has_capacity(&mut self) -> bool {
        !self.retiring()
    }

    fn spawn<F>(&mut self, job: F, _env: &SpawnEnv<'_>) -> io::Result<()>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        if let Some(requests) = self.stats.get(0) {
            requests.fetch_add(1, Ordering::SeqCst);
        }
        let busy = self.slot.and_then(|s| self.stats.get(1 + s));
        if let Some(b) = busy {
            b.store(1, Ordering::SeqCst);
        }
        let _busy = Busy(busy);
        self.served += 1;
        job();
        Ok(())
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn retiring(&self) -> bool {
        signals::retire_requested() || self.max_requests.is_some_and(|m| self.served >= m)
    }

    fn drain(
        &mut self,
        _deadline: Option<Instant>,
        _ctx: &RequestContext,
        _cut_connections: &mut dyn FnMut(),
    ) -> (usize, usize) {
        (0, 0)
    }
}
