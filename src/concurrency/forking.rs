//! [`Forking`]: a child process per request.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{sealed, Concurrency, Dispatch, SpawnEnv};
use crate::addr::Addr;
use crate::error::RequestError;
use crate::handler::RequestContext;
use crate::sys::{self, ChildExit, Forked, PollFd};

/// How long children get between `SIGTERM` and `SIGKILL` when a drain deadline passes.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Serves each request in a new child process: Python's `ForkingMixIn`.
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
    children: Vec<Child>,
}

#[derive(Debug)]
struct Child {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// Whom the child serves, for the log line if it has to be cut.
    peer: Addr,
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
            children: Vec::new(),
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

    /// Reaps every child that has exited (one `waitpid(pid, WNOHANG)` each); returns how many.
    fn reap_exited(&mut self, ctx: &RequestContext) -> usize {
        let before = self.children.len();
        self.children.retain(|c| match sys::try_reap(c.pid) {
            Ok(Some(exit)) => {
                report_exit(c.pid, exit, ctx);
                false
            }
            Ok(None) => true,
            Err(e) => {
                log::warn!("{e}");
                true
            }
        });
        before - self.children.len()
    }
}

fn report_exit(pid: libc::pid_t, exit: ChildExit, ctx: &RequestContext) {
    match exit {
        // 0: served; 1: the child already reported its handler's failure itself.
        ChildExit::Code(0 | 1) => {}
        ChildExit::Code(code) => ctx.report(
            None,
            &RequestError::ChildFailed(format!("{pid} exited with status {code}")),
        ),
        ChildExit::Signal(sig) => ctx.report(
            None,
            &RequestError::ChildFailed(format!("{pid} was killed by signal {sig}")),
        ),
    }
}

impl sealed::Sealed for Forking {}
impl Concurrency for Forking {}

impl Dispatch for Forking {
    const CONCURRENT_IN_PROCESS: bool = false;

    fn watch(&mut self, fds: &mut Vec<PollFd>) {
        fds.extend(
            self.children
                .iter()
                .map(|c| sys::readable(c.pidfd.as_raw_fd())),
        );
    }

    fn reap(&mut self, ready: &[PollFd], ctx: &RequestContext) {
        if ready.iter().any(sys::is_ready) {
            // At most `max_children` children, each check one WNOHANG waitpid: cheaper than keeping
            // the poll set's order in step with the child list.
            self.reap_exited(ctx);
        }
    }

    fn has_capacity(&mut self) -> bool {
        self.children.len() < self.max_children
    }

    fn spawn<F>(&mut self, job: F, env: &SpawnEnv<'_>) -> io::Result<()>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        // Until the child has reset the parent's signal handlers, a signal must not run them there.
        let blocked = crate::signals::Blocked::new()?;
        match sys::fork()? {
            Forked::Child => {
                crate::signals::reset_in_child();
                drop(blocked);
                if let Some(fd) = env.close_in_child {
                    sys::close_raw(fd);
                }
                // The children's pidfds belong to the parent.
                for c in &self.children {
                    sys::close_raw(c.pidfd.as_raw_fd());
                }
                let ok = job();
                sys::exit_child(if ok { 0 } else { 1 });
            }
            Forked::Parent(pid) => {
                drop(blocked);
                let pidfd = match sys::pidfd_open(pid) {
                    Ok(fd) => fd,
                    Err(e) => {
                        // Without a pidfd we cannot wait for this child in poll: wait for it now rather
                        // than leave a zombie. Only happens on kernels older than 5.3.
                        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                        return Err(e);
                    }
                };
                self.children.push(Child {
                    pid,
                    pidfd,
                    peer: env.peer.clone(),
                });
                Ok(())
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.children.len()
    }

    fn drain(
        &mut self,
        deadline: Option<Instant>,
        ctx: &RequestContext,
        _cut_connections: &mut dyn FnMut(),
    ) -> (usize, usize) {
        let mut finished = self.reap_exited(ctx);
        let Some(deadline) = deadline.filter(|_| self.block_on_close) else {
            let children = std::mem::take(&mut self.children);
            let left = children.len();
            if left > 0 {
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
            return (finished, 0);
        };
        finished += self.wait_children(deadline, Some(ctx.shutdown.force_fd().as_raw_fd()), ctx);
        let cut = self.children.len();
        if cut > 0 {
            log::warn!("drain deadline passed: sending SIGTERM to {cut} child(ren)");
            for c in &self.children {
                log::warn!("cutting the request from {} (child {})", c.peer, c.pid);
                sys::kill(c.pid, Signal::SIGTERM);
            }
            self.wait_children(Instant::now() + KILL_GRACE, None, ctx);
            for c in &self.children {
                log::warn!("child {} ignored SIGTERM: sending SIGKILL", c.pid);
                sys::kill(c.pid, Signal::SIGKILL);
            }
            // SIGKILL cannot be ignored: this wait ends as soon as the kernel tears the children down.
            while !self.children.is_empty() {
                let mut fds: Vec<PollFd> = Vec::new();
                self.watch(&mut fds);
                let _ = sys::poll(&mut fds, Some(Duration::from_millis(100)));
                self.reap_exited(ctx);
            }
        }
        (finished, cut)
    }
}

impl Forking {
    /// Waits, reaping, until every child has exited, `deadline` passes, or `force` (an eventfd) becomes
    /// readable; returns how many exited.
    fn wait_children(
        &mut self,
        deadline: Instant,
        force: Option<RawFd>,
        ctx: &RequestContext,
    ) -> usize {
        let mut reaped = 0;
        while !self.children.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let mut fds = vec![sys::readable(force.unwrap_or(-1))];
            self.watch(&mut fds);
            if sys::poll(&mut fds, Some(deadline - now)).is_err() || sys::is_ready(&fds[0]) {
                break;
            }
            reaped += self.reap_exited(ctx);
        }
        reaped
    }
}
