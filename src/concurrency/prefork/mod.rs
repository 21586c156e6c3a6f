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
            self.running = Some(Supervisor::new(self.workers, self.max_requests)?);
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
            let wait = [sup.respawn_at, recheck, core.heartbeat_at()]
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
            if fds.iter().skip(2).any(sys::is_ready) {
                sup.reap(core.shared(), false);
            }
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
    target: usize,
    max_requests: Option<u64>,
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
    slot: Option<usize>,
}

impl Supervisor {
    fn new(target: usize, max_requests: Option<u64>) -> io::Result<Self> {
        // Room for a full set of workers plus a full set still retiring after a reload; a worker
        // beyond that (reloads in quick succession) simply is not counted as busy.
        let slots = 2 * target;
        Ok(Supervisor {
            target,
            max_requests,
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
        let orders = worker::Orders {
            supervisor: self.pid,
            max_requests: self.max_requests,
            busy: slot.map(|s| (self.busy.clone(), s)),
        };
        let meta = WorkerMeta {
            started: Instant::now(),
            retiring: false,
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
            // During shutdown, a worker ended by a signal was cut by the supervisor itself.
            let cut = shutting_down && matches!(exit, ChildExit::Signal(_));
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
