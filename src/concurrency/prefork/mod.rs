//! [`PreFork`]: a supervisor process and a fixed set of pre-forked worker processes.
//!
//! The supervisor lives here; each worker's own life (its signals, its accept loop) in [`worker`].

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Concurrency;
use super::children::{Child, Children};
use super::sealed::Strategy;
use super::starvation::{Load, Starvation};
use crate::error::RequestError;
use crate::handler::sealed::Handles;
use crate::serving::stats::Gauge;
use crate::serving::{Core, Drained, Event, ServeSummary, Shape, Shared};
use crate::sys::signal::Poke;
use crate::sys::{self, ChildExit, EventFd, SharedCounters};
use crate::transport::Transport;

mod worker;

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
///   [`signals::shutdown_on_signals`](crate::signals::shutdown_on_signals)): every worker stops accepting, finishes its current request and
///   exits. Workers still running at the server's [shutdown
///   timeout](crate::Server::shutdown_timeout) get `SIGTERM` again (which now ends them), then
///   `SIGKILL` after a 2 s grace; all are reaped before `serve_forever` returns its summary in the
///   supervisor. A handler calling `req.server().shutdown()` in a worker stops the whole server.
/// - **Reload** ([`ReloadHandle::reload`], or `SIGHUP` through [`signals::reload_on_sighup`](crate::signals::reload_on_sighup)): new
///   workers start at once, and the old ones finish their current request and exit. The supervisor
///   reads the server's TLS certificates again first (`Server::tls`, the `tls` feature), so the
///   new workers serve the renewed ones.
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
    max_requests_jitter: u64,
    worker_timeout: Option<Duration>,
    spare: Option<(usize, usize)>,
    max_workers: Option<usize>,
    reload: ReloadHandle,
    size: SizeHandle,
    running: Option<Supervisor>,
}

/// A cloneable, `Send` handle that grows or shrinks a [`PreFork`] server by one worker, as `SIGTTIN`
/// and `SIGTTOU` do for gunicorn and Perl's `Net::Server` (see
/// [`signals::resize_on_ttin_ttou`](crate::signals::resize_on_ttin_ttou)). Never blocks; works from
/// any thread and from a signal handler.
///
/// # Examples
///
/// ```
/// let prefork = socketserver::PreFork::new(2);
/// let size = prefork.size_handle();
/// size.grow(); // three workers from the supervisor's next turn
/// ```
#[derive(Clone, Debug)]
pub struct SizeHandle {
    grow: Arc<EventFd>,
    shrink: Arc<EventFd>,
}

impl SizeHandle {
    /// One more worker (up to [`max_workers`](PreFork::max_workers)).
    ///
    /// # Examples
    ///
    /// See [`SizeHandle`].
    pub fn grow(&self) {
        self.grow.notify();
    }

    /// One worker fewer (down to one, or the minimum of spare workers): an idle worker retires, or,
    /// with none idle, a busy one once its request is done.
    ///
    /// # Examples
    ///
    /// ```
    /// socketserver::PreFork::new(4).size_handle().shrink();
    /// ```
    pub fn shrink(&self) {
        self.shrink.notify();
    }

    pub(crate) fn grow_poke(&self) -> Poke {
        Poke::eventfd(self.grow.as_fd())
    }

    pub(crate) fn shrink_poke(&self) -> Poke {
        Poke::eventfd(self.shrink.as_fd())
    }
}

/// How often a supervisor that sizes itself, or watches for stuck workers, looks at its workers; a
/// sizing step (one worker started, one retired) at most this often.
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);

/// The default ceiling for a server that sizes itself or grows on `SIGTTIN` (Apache's
/// `MaxRequestWorkers`).
const DEFAULT_MAX_WORKERS: usize = 256;

/// A cloneable, `Send` handle that asks a [`PreFork`] server to replace its workers gracefully:
/// new workers start at once, the old ones finish their current request and exit.
///
/// Like [`ShutdownHandle::shutdown`](crate::ShutdownHandle::shutdown), [`reload`](Self::reload) never
/// blocks and works from any thread, from a signal handler (see [`signals::reload_on_sighup`](crate::signals::reload_on_sighup)) and
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

    /// What a signal handler does to ask for a reload.
    pub(crate) fn poke(&self) -> Poke {
        Poke::eventfd(self.wake.as_fd())
    }

    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
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
        let eventfd = || Arc::new(EventFd::new(false).expect("eventfd(2) for a PreFork handle"));
        PreFork {
            workers: workers.max(1),
            max_requests: None,
            max_requests_jitter: 0,
            worker_timeout: None,
            spare: None,
            max_workers: None,
            reload: ReloadHandle { wake: eventfd() },
            size: SizeHandle {
                grow: eventfd(),
                shrink: eventfd(),
            },
            running: None,
        }
    }

    /// Adds a random `0..=jitter` to each worker's [`max_requests`](Self::max_requests), so that
    /// workers started together are not all recycled together (gunicorn's `max_requests_jitter`).
    ///
    /// # Examples
    ///
    /// ```
    /// let _prefork = socketserver::PreFork::new(4).max_requests(1000).max_requests_jitter(50);
    /// ```
    pub fn max_requests_jitter(mut self, jitter: u64) -> Self {
        self.max_requests_jitter = jitter;
        self
    }

    /// Stops a worker that has been busy on *one request* for longer than `timeout` — `SIGTERM`, then
    /// `SIGKILL` two seconds later — reports it, and starts a replacement at once (gunicorn's worker
    /// `timeout`). Off (`None`) by default.
    ///
    /// Not the same as the server's [`read_timeout`](crate::Server::read_timeout) and
    /// [`write_timeout`](crate::Server::write_timeout), which bound one socket operation and end the
    /// request with an error the handler sees, nor its
    /// [`connection_timeout`](crate::Server::connection_timeout), which bounds a connection's socket
    /// operations as a whole: those only act when the handler touches its socket. `worker_timeout`
    /// is the supervisor's last resort against a handler stuck anywhere — in a loop, on a lock, on
    /// another service — and costs the process.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let _prefork = socketserver::PreFork::new(4).worker_timeout(Duration::from_secs(30));
    /// ```
    pub fn worker_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.worker_timeout = timeout.into();
        self
    }

    /// Sizes the server by its idle workers, as Apache's prefork MPM and `Net::Server::PreFork` do:
    /// a worker is started when fewer than `min` are idle, and an idle one retired when more than
    /// `max` are, one step each at most every 100 ms, between `min` workers (at least one) and
    /// [`max_workers`](Self::max_workers). The count given to [`new`](Self::new) is the number to
    /// start with.
    ///
    /// # Examples
    ///
    /// ```
    /// let _prefork = socketserver::PreFork::new(4).spare(2, 8).max_workers(64);
    /// ```
    pub fn spare(mut self, min: usize, max: usize) -> Self {
        self.spare = Some((min, max.max(min)));
        self
    }

    /// The most workers the server grows to, by [`spare`](Self::spare) sizing or `SIGTTIN` (default:
    /// 256, or the starting count if that is larger).
    ///
    /// # Examples
    ///
    /// ```
    /// let _prefork = socketserver::PreFork::new(4).spare(1, 4).max_workers(16);
    /// ```
    pub fn max_workers(mut self, max: usize) -> Self {
        self.max_workers = Some(max.max(1));
        self
    }

    /// A handle that grows or shrinks the server by one worker (see [`SizeHandle`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{signals, PreFork};
    /// let prefork = PreFork::new(2);
    /// signals::resize_on_ttin_ttou(&prefork.size_handle())?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn size_handle(&self) -> SizeHandle {
        self.size.clone()
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
}

impl<T: Transport, H: Handles<T::Kind>> Strategy<T, H> for PreFork {
    const NAME: &'static str = "PreFork";
    const SHAPE: Shape = Shape::Processes;

    /// The supervisor's loop: keeps `workers` workers alive until shutdown.
    fn serve(&mut self, core: &mut Core<T, H>) -> io::Result<()> {
        if core.is_closed() {
            return Ok(());
        }
        if self.running.is_none() {
            self.running = Some(Supervisor::new(self)?);
        }
        let Some(sup) = self.running.as_mut() else {
            return Ok(());
        };
        let mut fds = Vec::with_capacity(2 + 2 * sup.target);
        let mut starvation = Starvation::default();
        // Ready (for systemd, for an upgrade) once the workers are up: first start, and reloads.
        let mut announce = true;
        loop {
            if core.shutdown().is_shutdown() {
                return Ok(());
            }
            sup.top_up(core);
            if announce {
                announce = false;
                core.serving(&format_args!(" with {} pre-forked workers", sup.target));
            }
            fds.clear();
            fds.push(sys::readable(core.shutdown().wake_fd()));
            fds.push(sys::readable(self.reload.wake_fd()));
            fds.push(sys::readable(self.size.grow.as_fd()));
            fds.push(sys::readable(self.size.shrink.as_fd()));
            sup.workers.watch(&mut fds);
            let load = Load {
                busy: sup.busy(),
                workers: sup.target,
                queued: 0,
                knob: "the number of workers (PreFork::new)",
            };
            // A worker becoming busy does not wake the supervisor: it looks every second.
            let recheck = starvation
                .observe(Some(load), core.listener())
                .or_else(|| Some(Instant::now() + Duration::from_secs(1)));
            let supervise = sup.supervises().then(|| Instant::now() + SUPERVISE_EVERY);
            let wait = [sup.respawn_at, recheck, core.heartbeat_at(), supervise]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_duration_since(Instant::now()));
            sys::poll(&mut fds, wait)?;
            if fds.first().is_some_and(sys::is_ready) {
                core.shutdown().mark();
                return Ok(());
            }
            if fds.get(1).is_some_and(sys::is_ready) {
                self.reload.wake.take();
                core.reloading();
                sup.retire_all("reload");
                sup.top_up(core);
                core.ready();
            }
            if fds.get(2).is_some_and(sys::is_ready) && self.size.grow.take() {
                sup.resize(1);
            }
            if fds.get(3).is_some_and(sys::is_ready) && self.size.shrink.take() {
                sup.resize(-1);
            }
            if fds.iter().skip(4).any(sys::is_ready) {
                sup.reap(core.shared(), false);
            }
            sup.supervise(core.shared());
            core.heartbeat();
        }
    }

    /// Closes the supervisor's listener and drains the workers.
    fn close(&mut self, core: &mut Core<T, H>) -> ServeSummary {
        if !core.close_listener() {
            return ServeSummary::default();
        }
        let Some(mut sup) = self.running.take() else {
            return core.finish(Drained::default());
        };
        let shared = core.shared().clone();
        let in_flight = sup.busy();
        sup.retire_all("shutdown");
        core.draining(in_flight);
        // Idle workers leave at once; busy ones finish their request (a signal never interrupts it:
        // the request's reads and writes retry) until the deadline.
        let force = shared.shutdown().force_fd();
        let mut exited = Vec::new();
        sup.workers
            .wait(core.drain_deadline(), Some(&force), |w, exit| {
                exited.push((w, exit))
            });
        sup.after_exits(exited, &shared, true);
        let cut = sup.workers.len();
        for w in sup.workers.iter() {
            shared.emit(Event::Cut {
                peer: None,
                how: &format!("worker {}", w.pid),
            });
            shared.emit(Event::ChildKilled);
        }
        let mut exited = Vec::new();
        sup.workers.terminate(|w, exit| exited.push((w, exit)));
        sup.after_exits(exited, &shared, true);
        shared.counters().set(Gauge::WorkersLive, 0);
        core.finish(Drained {
            in_flight,
            finished: in_flight.saturating_sub(cut),
            cut,
        })
    }
}

impl<T: Transport, H: Handles<T::Kind>> Concurrency<T, H> for PreFork {}

/// The supervisor's state while serving.
#[derive(Debug)]
struct Supervisor {
    /// How many workers to keep serving now (sizing and `SIGTTIN`/`SIGTTOU` move it).
    target: usize,
    /// Its bounds.
    min_target: usize,
    max_target: usize,
    spare: Option<(usize, usize)>,
    worker_timeout: Option<Duration>,
    /// When the last sizing step was taken.
    sized_at: Instant,
    max_requests: Option<u64>,
    max_requests_jitter: u64,
    workers: Children<WorkerMeta>,
    /// One flag per slot: whether the worker holding the slot is inside a request.
    busy: Arc<SharedCounters>,
    free_slots: Vec<usize>,
    backoff: Duration,
    respawn_at: Option<Instant>,
    pid: libc::pid_t,
}

/// What the supervisor keeps about one worker.
#[derive(Debug)]
struct WorkerMeta {
    started: Instant,
    /// Told to finish its current request and exit; not replaced when it does.
    retiring: bool,
    /// Stopped for outliving `worker_timeout` on a request: when it was sent `SIGTERM` (it gets
    /// `SIGKILL` after the grace).
    stopped_at: Option<Instant>,
    slot: Option<usize>,
}

impl Supervisor {
    fn new(config: &PreFork) -> io::Result<Self> {
        let target = config.workers;
        let max_target = config
            .max_workers
            .unwrap_or(DEFAULT_MAX_WORKERS)
            .max(target);
        let min_target = config
            .spare
            .map_or(1, |(min, _)| min.max(1))
            .min(max_target);
        // Room for a full set of workers plus a full set still retiring after a reload; a worker
        // beyond that (reloads in quick succession) simply is not counted as busy.
        let slots = 2 * max_target;
        Ok(Supervisor {
            target,
            min_target,
            max_target,
            spare: config.spare,
            worker_timeout: config.worker_timeout,
            sized_at: Instant::now(),
            max_requests: config.max_requests,
            max_requests_jitter: config.max_requests_jitter,
            workers: Children::default(),
            busy: Arc::new(SharedCounters::new(slots)?),
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
        H: Handles<T::Kind>,
    {
        if self.respawn_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.respawn_at = None;
        while self.workers.iter().filter(|w| !w.meta.retiring).count() < self.target {
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
        H: Handles<T::Kind>,
    {
        let slot = self.free_slots.pop();
        if let Some(flag) = slot.and_then(|s| self.busy.get(s)) {
            flag.store(0, Ordering::SeqCst);
        }
        let jitter = match self.max_requests_jitter {
            0 => 0,
            j => random() % (j + 1),
        };
        let orders = worker::Orders {
            supervisor: self.pid,
            max_requests: self.max_requests.map(|m| m.saturating_add(jitter)),
            busy: slot.map(|s| (self.busy.clone(), s)),
        };
        let meta = WorkerMeta {
            started: Instant::now(),
            retiring: false,
            stopped_at: None,
            slot,
        };
        match self
            .workers
            .spawn(meta, |blocked| worker::run(core, blocked, orders))
        {
            Ok(pid) => {
                let shared = core.shared();
                shared.emit(Event::Worker { pid, started: true });
                shared.emit(Event::ChildSpawned);
                shared
                    .counters()
                    .set(Gauge::WorkersLive, self.workers.len() as u64);
                Ok(())
            }
            Err(e) => {
                self.free_slots.extend(slot);
                Err(e)
            }
        }
    }

    /// Tells every serving worker to finish its current request and exit.
    fn retire_all(&mut self, why: &str) {
        let mut n = 0;
        for w in self.workers.iter_mut().filter(|w| !w.meta.retiring) {
            sys::kill(w.pid, nix::sys::signal::Signal::SIGTERM);
            w.meta.retiring = true;
            n += 1;
        }
        if n > 0 {
            log::info!("{why}: retiring {n} worker(s)");
        }
    }

    /// Whether the supervisor must look at its workers every [`SUPERVISE_EVERY`].
    fn supervises(&self) -> bool {
        self.spare.is_some()
            || self.worker_timeout.is_some()
            || self.workers.iter().any(|w| w.meta.stopped_at.is_some())
    }

    /// Grows (`+1`) or shrinks (`-1`) the target by one worker, within its bounds; a shrink retires
    /// an idle worker (or, with none idle, a busy one once its request is done).
    fn resize(&mut self, by: isize) {
        let target = self
            .target
            .saturating_add_signed(by)
            .clamp(self.min_target, self.max_target);
        if target == self.target {
            log::info!(
                "PreFork already at {target} worker(s) (bounds {}..={})",
                self.min_target,
                self.max_target
            );
            return;
        }
        if target < self.target {
            self.retire_one();
        }
        log::info!("PreFork: {} -> {target} worker(s)", self.target);
        self.target = target;
    }

    /// Retires one worker that serves now: an idle one if there is one.
    fn retire_one(&mut self) {
        let busy = self.busy.clone();
        let is_busy = |w: &Child<WorkerMeta>| {
            w.meta
                .slot
                .and_then(|s| busy.get(s))
                .is_some_and(|b| b.load(Ordering::SeqCst) != 0)
        };
        let mut serving: Vec<&mut Child<WorkerMeta>> = self
            .workers
            .iter_mut()
            .filter(|w| !w.meta.retiring)
            .collect();
        serving.sort_by_key(|w| is_busy(w));
        if let Some(w) = serving.into_iter().next() {
            sys::kill(w.pid, nix::sys::signal::Signal::SIGTERM);
            w.meta.retiring = true;
        }
    }

    /// One look at the workers: stops those stuck on a request past `worker_timeout` (and kills
    /// those that ignored it), and takes a sizing step.
    fn supervise(&mut self, shared: &Shared) {
        let now = Instant::now();
        if let Some(timeout) = self.worker_timeout {
            let now_ms = sys::monotonic_ms();
            let limit = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            let busy = self.busy.clone();
            for w in self.workers.iter_mut() {
                if let Some(at) = w.meta.stopped_at {
                    if now.duration_since(at) >= super::children::KILL_GRACE {
                        sys::kill(w.pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    continue;
                }
                let since = w
                    .meta
                    .slot
                    .and_then(|s| busy.get(s))
                    .map_or(0, |b| b.load(Ordering::SeqCst));
                if since == 0 || now_ms.saturating_sub(since) <= limit {
                    continue;
                }
                // Replaced at once (it is retiring now); reported here, not again when it dies.
                sys::kill(w.pid, nix::sys::signal::Signal::SIGTERM);
                w.meta.stopped_at = Some(now);
                w.meta.retiring = true;
                shared.emit(Event::ChildKilled);
                shared.report(
                    None,
                    &RequestError::ChildFailed(format!(
                        "worker {} was busy on one request for over {timeout:?} (worker_timeout): \
                         stopped, and replaced",
                        w.pid
                    )),
                );
            }
        }
        let Some((min_spare, max_spare)) = self.spare else {
            return;
        };
        if now.duration_since(self.sized_at) < SUPERVISE_EVERY {
            return;
        }
        let serving = self.workers.iter().filter(|w| !w.meta.retiring).count();
        let idle = serving.saturating_sub(self.busy_serving());
        if idle < min_spare && self.target < self.max_target {
            self.sized_at = now;
            self.target += 1;
            log::debug!("PreFork: {idle} idle worker(s): growing to {}", self.target);
        } else if idle > max_spare && self.target > self.min_target && serving >= self.target {
            self.sized_at = now;
            self.target -= 1;
            self.retire_one();
            log::debug!(
                "PreFork: {idle} idle worker(s): shrinking to {}",
                self.target
            );
        }
    }

    /// How many of the workers that serve now (not retiring) are inside a request.
    fn busy_serving(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| !w.meta.retiring)
            .filter_map(|w| w.meta.slot.and_then(|s| self.busy.get(s)))
            .filter(|busy| busy.load(Ordering::SeqCst) != 0)
            .count()
    }

    /// Reaps every worker that has exited and schedules replacements for the ones that were not
    /// retiring (unless `shutting_down`).
    fn reap(&mut self, shared: &Shared, shutting_down: bool) {
        let mut exited = Vec::new();
        self.workers.reap(|w, exit| exited.push((w, exit)));
        self.after_exits(exited, shared, shutting_down);
        shared
            .counters()
            .set(Gauge::WorkersLive, self.workers.len() as u64);
    }

    /// Frees the slots of exited workers, reports the ones that died abnormally, and backs off when
    /// they die right after starting (a crash loop).
    fn after_exits(
        &mut self,
        exited: Vec<(Child<WorkerMeta>, ChildExit)>,
        shared: &Shared,
        shutting_down: bool,
    ) {
        for (w, exit) in exited {
            shared.emit(Event::Worker {
                pid: w.pid,
                started: false,
            });
            if let Some(s) = w.meta.slot {
                if let Some(flag) = self.busy.get(s) {
                    flag.store(0, Ordering::SeqCst);
                }
                self.free_slots.push(s);
            }
            let clean = exit == ChildExit::Code(0);
            // During shutdown, a worker ended by a signal was cut by the supervisor itself; a
            // worker stopped for its timeout was reported when it was stopped.
            let cut = (shutting_down && matches!(exit, ChildExit::Signal(_)))
                || w.meta.stopped_at.is_some();
            if !clean && !cut {
                shared.emit(Event::ChildFailed);
                let how = match exit {
                    ChildExit::Code(code) => format!("worker {} exited with status {code}", w.pid),
                    ChildExit::Signal(sig) => {
                        format!("worker {} was killed by signal {sig}", w.pid)
                    }
                };
                shared.report(None, &RequestError::ChildFailed(how));
            }
            if w.meta.retiring || shutting_down {
                continue;
            }
            if !clean && w.meta.started.elapsed() < STARTUP_GRACE {
                self.back_off();
            } else {
                self.backoff = Duration::ZERO;
                log::info!("worker {} exited: replacing it", w.pid);
            }
        }
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

    /// How many workers are inside a request now.
    fn busy(&self) -> usize {
        self.workers
            .iter()
            .filter_map(|w| w.meta.slot.and_then(|s| self.busy.get(s)))
            .filter(|busy| busy.load(Ordering::SeqCst) != 0)
            .count()
    }
}

/// A random number, for jitter: the clock and the pid, mixed (splitmix64). Not for anything secret.
fn random() -> u64 {
    use std::sync::atomic::AtomicU64;
    static STATE: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = nanos ^ (u64::from(std::process::id()) << 32);
    let mut z = STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
