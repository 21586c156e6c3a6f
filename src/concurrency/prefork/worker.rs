//! One pre-forked worker process: its signals, and how it runs the shared accept loop — one request at
//! a time, inline, until it is told to retire or has served `max_requests`.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::concurrency::sealed::Workers;
use crate::concurrency::{Mode, NotStarted, Spawn, run_accept_loop};
use crate::handler::sealed::Handles;
use crate::serving::{Core, Drained, Job, Shared};
use crate::shutdown::ShutdownHandle;
use crate::sys::signal::{self, Blocked};
use crate::sys::{self, PollFd, SharedCounters};
use crate::transport::Transport;

/// The signals that ask a worker to retire: `SIGTERM` from the supervisor (a reload, a shutdown, a
/// recycle), and `SIGINT`/`SIGHUP` sent to the worker alone. `SIGTERM` is one-shot: a second one ends
/// the worker at once, which is how the supervisor cuts a worker that outlives the drain deadline.
const RETIRE_ON: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// What the supervisor tells a new worker.
pub(super) struct Orders {
    /// The supervisor's pid: a worker whose parent is already someone else retires at once.
    pub(super) supervisor: libc::pid_t,
    pub(super) max_requests: Option<u64>,
    /// The worker's "inside a request since" timestamp in memory the supervisor reads.
    pub(super) busy: Option<(Arc<SharedCounters>, usize)>,
}

/// The worker's life, in the child process; returns its exit status.
pub(super) fn run<T, H>(core: &mut Core<T, H>, blocked: Blocked, orders: Orders) -> i32
where
    T: Transport,
    H: Handles<T::Kind>,
{
    // A panic must never unwind into the supervisor's code, which this process also holds.
    match catch_unwind(AssertUnwindSafe(|| serve(core, blocked, orders))) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            log::error!("worker {}: {e}", std::process::id());
            1
        }
        Err(_) => {
            log::error!("worker {} panicked", std::process::id());
            1
        }
    }
}

fn serve<T, H>(core: &mut Core<T, H>, blocked: Blocked, orders: Orders) -> io::Result<()>
where
    T: Transport,
    H: Handles<T::Kind>,
{
    // The worker's own stop: retire signals poke it, never the server's shared shutdown eventfd.
    let retire = ShutdownHandle::new()?;
    signal::route(&RETIRE_ON, retire.poke(), None, &[Signal::SIGTERM])?;
    // Retiring also closes the connection now if its handler waits between requests, and at its next
    // boundary otherwise.
    signal::drain_on(&RETIRE_ON);
    // The signals blocked around the fork were held for exactly this moment: deliver them now.
    drop(blocked);
    // If the supervisor dies, retire rather than serve on unsupervised.
    sys::set_parent_death_signal(Signal::SIGTERM)?;
    if std::os::unix::process::parent_id() as libc::pid_t != orders.supervisor {
        return Ok(()); // it died before the line above
    }
    let mut worker = WorkerLoop {
        retire: retire.clone(),
        served: 0,
        max_requests: orders.max_requests,
        busy: orders.busy,
    };
    run_accept_loop(&mut worker, core, Mode::Forever, Some(&retire))?;
    Ok(())
}

/// How one worker takes requests from the accept loop: inline, counting, flagging itself busy.
struct WorkerLoop {
    retire: ShutdownHandle,
    served: u64,
    max_requests: Option<u64>,
    busy: Option<(Arc<SharedCounters>, usize)>,
}

impl WorkerLoop {
    /// Marks the worker inside a request (since now: the supervisor's `worker_timeout` reads it)
    /// or idle (`0`).
    fn set_busy(&self, busy: bool) {
        if let Some(flag) = self.busy.as_ref().and_then(|(c, slot)| c.get(*slot)) {
            let since = if busy { sys::monotonic_ms().max(1) } else { 0 };
            flag.store(since, Ordering::SeqCst);
        }
    }
}

impl Workers for WorkerLoop {
    fn has_capacity(&mut self) -> bool {
        true
    }

    fn watch(&mut self, _fds: &mut Vec<PollFd>, _capped: bool) {}

    fn reap(&mut self, _ready: &[PollFd], _shared: &Shared) {}

    fn start<F>(&mut self, job: Job<F>, _spawn: &mut Spawn<'_>) -> Result<(), NotStarted>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        self.set_busy(true);
        (job.run)();
        self.set_busy(false);
        self.served += 1;
        if self.max_requests.is_some_and(|max| self.served >= max) {
            // Recycled: leave the loop before the next accept; the supervisor starts a replacement.
            self.retire.shutdown();
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn drain(&mut self, _deadline: Option<Instant>, _shared: &Shared) -> Drained {
        Drained::default()
    }
}
