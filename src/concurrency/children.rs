//! [`Children`]: the child processes a strategy forked ([`Forking`]'s per-request children,
//! [`PreFork`]'s workers), watched through pidfds, reaped one by one, and terminated at a deadline.
//!
//! Only our own children are ever waited for — `waitpid(pid, WNOHANG)` per child whose pidfd reported
//! its exit, never `waitpid(-1)`, which would steal the exit status of an unrelated child of the same
//! process.
//!
//! [`Forking`]: super::Forking
//! [`PreFork`]: super::PreFork

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::sys::signal::Blocked;
use crate::sys::{self, ChildExit, Forked, PollFd};

/// How long children get between `SIGTERM` and `SIGKILL` once the drain deadline has passed.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

/// The signals a serving process may route to handlers (shutdown, reload): blocked around `fork(2)` so
/// that a new child never runs the parent's handlers before it has reset them.
const HANDLED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR2,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// One child process, with what its owner keeps about it.
#[derive(Debug)]
pub(crate) struct Child<M> {
    pub(crate) pid: libc::pid_t,
    pidfd: OwnedFd,
    pub(crate) meta: M,
}

/// A strategy's child processes.
#[derive(Debug)]
pub(crate) struct Children<M> {
    list: Vec<Child<M>>,
}

impl<M> Default for Children<M> {
    fn default() -> Self {
        Children { list: Vec::new() }
    }
}

impl<M> Children<M> {
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Child<M>> {
        self.list.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Child<M>> {
        self.list.iter_mut()
    }

    /// Forks a child that runs `body` and exits with the code it returns; the parent records the
    /// child with `meta` and returns its pid.
    ///
    /// In the child, the signal handlers the parent routed are reset to their defaults first, and the
    /// parent's pidfds are closed; `body` gets the signal mask to restore once its own handlers are in
    /// place (the parent's handled signals stay blocked until then, so none is lost or misrouted).
    ///
    /// # Errors
    /// `fork(2)` or `pidfd_open(2)` failing; the child, if there is one, is then killed and reaped.
    pub(crate) fn spawn(
        &mut self,
        meta: M,
        body: impl FnOnce(Blocked) -> i32,
    ) -> io::Result<libc::pid_t> {
        let blocked = Blocked::new(&HANDLED)?;
        match sys::fork()? {
            Forked::Child => {
                sys::signal::reset_in_child();
                // The siblings' pidfds are the parent's: close this process's copies.
                self.list.clear();
                let code = body(blocked);
                sys::exit_child(code)
            }
            Forked::Parent(pid) => {
                drop(blocked);
                // What the child's body holds (a request's connection) is the child's now: the
                // parent's copies close before it asks for a pidfd, so that one descriptor is free
                // even when the table was full.
                drop(body);
                let pidfd = match sys::pidfd_open(pid) {
                    Ok(fd) => fd,
                    Err(e) => {
                        // Without a pidfd the child cannot be watched: end it now rather than leave it
                        // unsupervised or a zombie. Only happens on kernels older than 5.3.
                        sys::kill(pid, Signal::SIGKILL);
                        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                        return Err(e);
                    }
                };
                self.list.push(Child { pid, pidfd, meta });
                Ok(pid)
            }
        }
    }

    /// Adds every child's pidfd (readable once it exits) to `fds`.
    pub(crate) fn watch(&self, fds: &mut Vec<PollFd>) {
        fds.extend(self.list.iter().map(|c| sys::readable(c.pidfd.as_fd())));
    }

    /// Reaps every child that has exited (one `waitpid(pid, WNOHANG)` each), handing each to
    /// `on_exit`; returns how many.
    pub(crate) fn reap(&mut self, mut on_exit: impl FnMut(Child<M>, ChildExit)) -> usize {
        let mut reaped = 0;
        let mut i = 0;
        while i < self.list.len() {
            match sys::try_reap(self.list[i].pid) {
                Ok(Some(exit)) => {
                    on_exit(self.list.swap_remove(i), exit);
                    reaped += 1;
                }
                Ok(None) => i += 1,
                Err(e) => {
                    log::warn!("{e}");
                    i += 1;
                }
            }
        }
        reaped
    }

    /// Waits, reaping, until every child has exited, `deadline` passes, or `force` (a forced shutdown)
    /// becomes readable; returns how many were reaped.
    pub(crate) fn wait(
        &mut self,
        deadline: Instant,
        force: Option<&impl AsFd>,
        mut on_exit: impl FnMut(Child<M>, ChildExit),
    ) -> usize {
        let mut reaped = 0;
        while !self.list.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let mut fds = vec![force.map_or_else(|| sys::readable_raw(-1), sys::readable)];
            self.watch(&mut fds);
            if sys::poll(&mut fds, Some(deadline - now)).is_err() || sys::is_ready(&fds[0]) {
                break;
            }
            reaped += self.reap(&mut on_exit);
        }
        reaped
    }

    /// Sends `sig` to every child.
    pub(crate) fn signal_all(&self, sig: Signal) {
        for c in &self.list {
            sys::kill(c.pid, sig);
        }
    }

    /// Ends every child still running: `SIGTERM`, [`KILL_GRACE`] to exit, then `SIGKILL`; all are
    /// reaped before this returns.
    pub(crate) fn terminate(&mut self, mut on_exit: impl FnMut(Child<M>, ChildExit)) {
        if self.list.is_empty() {
            return;
        }
        self.signal_all(Signal::SIGTERM);
        self.wait(Instant::now() + KILL_GRACE, None::<&OwnedFd>, &mut on_exit);
        if self.list.is_empty() {
            return;
        }
        for c in &self.list {
            log::warn!("child {} ignored SIGTERM: sending SIGKILL", c.pid);
        }
        self.signal_all(Signal::SIGKILL);
        // SIGKILL cannot be ignored: this ends as soon as the kernel has torn the children down.
        while !self.list.is_empty() {
            self.wait(
                Instant::now() + Duration::from_millis(100),
                None::<&OwnedFd>,
                &mut on_exit,
            );
        }
    }

    /// Lets go of the children without waiting (they keep running): for a drain that does not block.
    pub(crate) fn take(&mut self) -> Vec<Child<M>> {
        std::mem::take(&mut self.list)
    }
}
