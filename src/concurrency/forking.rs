//! [`Forking`]: a child process per request.

use std::io;
use std::time::Instant;

use super::children::{Child, Children};
use super::sealed::{Strategy, Workers};
use super::starvation::Load;
use super::{Concurrency, NotStarted, PerRequest, Spawn, accept_loop};
use crate::addr::Addr;
use crate::error::RequestError;
use crate::handler::sealed::Handles;
use crate::serving::stats::Gauge;
use crate::serving::{Core, Drained, Event, Job, ServeSummary, Shape, Shared, Ticket};
use crate::sys::signal::{self, Poke};
use crate::sys::{ChildExit, PollFd};
use crate::transport::Transport;
use nix::sys::signal::Signal;

/// What a `Forking` child hears while the server drains: close the connection at a boundary.
const DRAIN_SIGNAL: Signal = Signal::SIGHUP;

/// Serves each request in a new child process: Python's `ForkingMixIn`.
///
/// **Each request runs on a copy of the server's memory.** Whatever a handler changes in memory — a
/// `Mutex<HashMap>` of sessions, a counter, a cache — changes the child's copy and is gone when the
/// child exits: the parent and the other children never see it. Hooks that run in the child
/// ([`handle_error`](crate::Server::handle_error) for the request's own failures) run on a copy too.
/// Keep what requests share outside the process: a database, files, or a state service on a Unix
/// socket (`examples/kv_state.rs` serves one with this crate); or use [`Threading`](crate::Threading)
/// or [`Pool`](crate::Pool), whose requests share one memory.
///
/// - At most [`max_children`](Self::max_children) (default 40, as Python) run at once; the cap is checked
///   *before* forking, and at the cap the server stops accepting until a child exits.
/// - Only the server's own children are reaped, each with `waitpid(pid, WNOHANG)` when its `pidfd`
///   reports it exited — never `waitpid(-1)`, which would steal the exit status of an unrelated child of
///   the same process. No zombie outlives the serving loop's next turn.
/// - A stream child closes its copy of the listener at once, so a slow child cannot keep the port
///   accepting after the server has shut down.
/// - A handler that fails or panics in the child is reported by the child's error hook, and the child
///   exits with status 1; a child killed by a signal is reported by the parent.
///
/// # Notes
/// `fork(2)` copies only the calling thread: serve with `Forking` from a process that has **one thread**,
/// as with Python's `ForkingMixIn` (another thread holding a lock at the fork would leave it locked
/// forever in the child). Needs Linux 5.3+ (`pidfd_open(2)`).
///
/// # Examples
///
/// ```
/// use socketserver::{Forking, Server, StreamRequest, Tcp};
///
/// let strategy = Forking::new().max_children(8);
/// let _server = Server::new(strategy, Tcp::bind("127.0.0.1:0")?, |_r: &mut StreamRequest| Ok(()))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Forking {
    max_children: usize,
    block_on_close: bool,
    children: Children<Request>,
}

/// What the parent keeps about a child's request.
#[derive(Debug)]
struct Request {
    /// Whom the child serves, for the log line if it has to be cut.
    peer: Addr,
    /// The request's place in its peer's count, given back when the child is reaped.
    _ticket: Ticket,
}

impl Default for Forking {
    fn default() -> Self {
        Forking::new()
    }
}

impl Forking {
    /// Python's default cap on concurrent children.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Forking;
    /// assert_eq!(Forking::DEFAULT_MAX_CHILDREN, 40);
    /// let _bigger = Forking::new().max_children(Forking::DEFAULT_MAX_CHILDREN * 4);
    /// ```
    pub const DEFAULT_MAX_CHILDREN: usize = 40;

    /// A process per request, at most 40 at once, blocking on close.
    ///
    /// # Examples
    ///
    /// ```
    /// let _f = socketserver::Forking::new();
    /// ```
    pub fn new() -> Self {
        Forking {
            max_children: Self::DEFAULT_MAX_CHILDREN,
            block_on_close: true,
            children: Children::default(),
        }
    }

    /// Caps concurrent children (Python's `max_children`). Clamped to at least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let _f = socketserver::Forking::new().max_children(4);
    /// ```
    pub fn max_children(mut self, max: usize) -> Self {
        self.max_children = max.max(1);
        self
    }

    /// Whether closing the server waits for children (default `true`, as Python's `block_on_close`).
    /// With `false`, close returns at once and a background thread reaps the children as they exit.
    ///
    /// # Examples
    ///
    /// ```
    /// let _f = socketserver::Forking::new().block_on_close(false);
    /// ```
    pub fn block_on_close(mut self, block: bool) -> Self {
        self.block_on_close = block;
        self
    }
}

/// Reports a child that ended abnormally: 0 is served, 1 a failure the child already reported itself.
fn report_exit(child: &Child<Request>, exit: ChildExit, shared: &Shared) {
    let how = match exit {
        ChildExit::Code(0 | 1) => return,
        ChildExit::Code(code) => format!("{} exited with status {code}", child.pid),
        ChildExit::Signal(sig) => format!("{} was killed by signal {sig}", child.pid),
    };
    shared.emit(Event::ChildFailed);
    shared.report(None, &RequestError::ChildFailed(how));
}

impl<T: Transport, H: Handles<T::Kind>> Strategy<T, H> for Forking {
    const NAME: &'static str = "Forking";
    const SHAPE: Shape = Shape::Processes;

    fn serve(&mut self, core: &mut Core<T, H>) -> io::Result<()> {
        accept_loop::serve(self, core)
    }

    fn close(&mut self, core: &mut Core<T, H>) -> ServeSummary {
        accept_loop::close(self, core)
    }
}

impl<T: Transport, H: Handles<T::Kind>> Concurrency<T, H> for Forking {}
impl PerRequest for Forking {}

impl Workers for Forking {
    fn has_capacity(&mut self) -> bool {
        self.children.len() < self.max_children
    }

    fn watch(&mut self, fds: &mut Vec<PollFd>, _capped: bool) {
        // Always: an exited child is reaped at once, capped or not.
        self.children.watch(fds);
    }

    fn reap(&mut self, ready: &[PollFd], shared: &Shared) {
        // At most `max_children` children, each check one WNOHANG waitpid: cheaper than keeping the
        // poll set's order in step with the child list.
        if ready.iter().any(crate::sys::is_ready) {
            self.children.reap(|c, exit| report_exit(&c, exit, shared));
            shared
                .counters()
                .set(Gauge::WorkersLive, self.children.len() as u64);
        }
    }

    fn start<F>(&mut self, job: Job<F>, spawn: &mut Spawn<'_>) -> Result<(), NotStarted>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let Job {
            run,
            peer,
            ticket,
            cutter,
        } = job;
        // The connection is the child's: the parent keeps no copy (see `Children::spawn`).
        drop(cutter);
        let request = Request {
            peer: peer.clone(),
            _ticket: ticket,
        };
        let release_listener = &mut spawn.release_listener;
        let forked = self.children.spawn(request, |blocked| {
            // The parent's handlers are reset. The parent's drain sends `SIGHUP`, which closes the
            // connection if the handler waits between requests (at its next boundary otherwise);
            // `SIGTERM`, at the drain deadline, ends the child.
            match signal::route(&[DRAIN_SIGNAL], Poke::nothing(), None, &[]) {
                Ok(()) => signal::drain_on(&[DRAIN_SIGNAL]),
                Err(e) => log::warn!("child {}: no idle drain: {e}", std::process::id()),
            }
            // Signals may come in now, and end this child alone.
            drop(blocked);
            release_listener();
            if run() { 0 } else { 1 }
        });
        let counters = spawn.shared.counters();
        counters.set(Gauge::WorkersLive, self.children.len() as u64);
        if forked.is_ok() {
            spawn.shared.emit(Event::ChildSpawned);
        }
        forked.map(drop).map_err(|error| NotStarted {
            error,
            peer: Box::new(peer),
        })
    }

    fn in_flight(&self) -> usize {
        self.children.len()
    }

    fn load(&self) -> Option<Load> {
        Some(Load {
            busy: self.children.len(),
            workers: self.max_children,
            queued: 0,
            knob: "Forking::max_children",
        })
    }

    fn drain(&mut self, deadline: Option<Instant>, shared: &Shared) -> Drained {
        let in_flight = self.children.len();
        let Some(deadline) = deadline.filter(|_| self.block_on_close) else {
            self.children.signal_all(DRAIN_SIGNAL); // the idle ones close and exit
            self.children.reap(|c, exit| report_exit(&c, exit, shared));
            let children = self.children.take();
            if !children.is_empty() {
                // Nobody else will wait for them: reap them in the background as they exit.
                let spawned = std::thread::Builder::new().spawn(move || {
                    for c in children {
                        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(c.pid), None);
                    }
                });
                if let Err(e) = spawned {
                    log::warn!("could not start the child reaper thread: {e}");
                }
            }
            return Drained {
                in_flight,
                finished: in_flight,
                cut: 0,
            };
        };
        // Children waiting between requests close their connections and exit now, the others at
        // their next boundary.
        self.children.signal_all(DRAIN_SIGNAL);
        let force = shared.shutdown().force_fd();
        self.children.wait(deadline, Some(&force), |c, exit| {
            report_exit(&c, exit, shared)
        });
        let cut = self.children.len();
        for c in self.children.iter() {
            shared.emit(Event::Cut {
                peer: Some(&c.meta.peer),
                how: &format!("child {}", c.pid),
            });
            shared.emit(Event::ChildKilled);
        }
        // Cut children are reported above; their deaths by our own signals are not failures.
        self.children.terminate(|_, _| {});
        shared.counters().set(Gauge::WorkersLive, 0);
        Drained {
            in_flight,
            finished: in_flight - cut,
            cut,
        }
    }
}
