//! The blocking accept loop: take a request, hand it to the strategy's workers, repeat — the serving
//! loop of [`Sequential`](super::Sequential), [`Threading`](super::Threading),
//! [`Forking`](super::Forking), [`Pool`](super::Pool), and of each [`PreFork`](super::PreFork)
//! worker.
//!
//! The loop accepts first and polls only when nothing is pending, so under load it makes no `poll(2)`
//! at all. It polls the shutdown eventfd next to the listener, so `shutdown()` wakes it at once; at
//! the strategy's cap, or while backing off after `EMFILE` or a failed spawn, it leaves the listener
//! out of the poll set and sleeps until a worker finishes.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::sealed::Workers;
use super::starvation::Starvation;
use super::{NotStarted, Spawn};
use crate::handler::sealed::Handles;
use crate::serving::{Core, Event, HandleOutcome, Next, ServeSummary};
use crate::shutdown::ShutdownHandle;
use crate::sys;
use crate::transport::Transport;

/// How long the loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Until shutdown (`serve_forever`).
    Forever,
    /// Until one request has been handed on, or the timeout passed (`handle_request`).
    Once(Option<Duration>),
}

/// Serves with `workers` until shutdown is requested (of the server, or through `also_stop`), or, in
/// [`Mode::Once`], until one request has been handed on.
///
/// # Errors
/// `poll(2)` failing, or the listener breaking.
pub(crate) fn run<W, T, H>(
    workers: &mut W,
    core: &mut Core<T, H>,
    mode: Mode,
    also_stop: Option<&ShutdownHandle>,
) -> io::Result<HandleOutcome>
where
    W: Workers,
    T: Transport,
    H: Handles<T::Kind>,
{
    let deadline = match mode {
        Mode::Once(Some(timeout)) => Some(Instant::now() + timeout),
        _ => None,
    };
    let stopped = |core: &Core<T, H>| {
        core.shutdown().is_shutdown() || also_stop.is_some_and(ShutdownHandle::is_shutdown)
    };
    let mut backoff_until: Option<Instant> = None;
    let mut starvation = Starvation::default();
    let mut capped = false;
    let mut fds = Vec::with_capacity(8);
    loop {
        if stopped(core) || core.is_closed() {
            return Ok(HandleOutcome::ShutDown);
        }
        let backing_off = backoff_until.is_some_and(|t| Instant::now() < t);
        let has_capacity = workers.has_capacity();
        // Counted once per pause at the cap, not once per turn spent waiting there.
        if !has_capacity && !capped {
            core.shared().emit(Event::Capped);
        }
        capped = !has_capacity;
        let can_accept = !backing_off && has_capacity;
        if can_accept {
            match core.next()? {
                Next::Admitted(admitted) => {
                    let job = core.job(admitted);
                    let shared = core.shared().clone();
                    let mut release = || core.release_listener_copy();
                    let mut spawn = Spawn {
                        shared: &shared,
                        release_listener: &mut release,
                    };
                    if let Err(NotStarted { error, peer }) = workers.start(job, &mut spawn) {
                        backoff_until = Some(Instant::now() + core.spawn_failed(&peer, error));
                    }
                    if mode != Mode::Forever {
                        return Ok(HandleOutcome::Handled);
                    }
                    core.service_actions();
                    continue;
                }
                Next::Again => continue,
                Next::BackOff(wait) => {
                    backoff_until = Some(Instant::now() + wait);
                    continue;
                }
                Next::Closed => return Ok(HandleOutcome::ShutDown),
                Next::Idle => {}
            }
        }

        fds.clear();
        fds.push(sys::readable(core.shutdown().wake_fd()));
        if let Some(stop) = also_stop {
            fds.push(sys::readable(stop.wake_fd()));
        }
        if can_accept && let Some(listener) = core.listener() {
            fds.push(sys::readable(listener.as_fd()));
        }
        let first_worker_fd = fds.len();
        workers.watch(&mut fds, !has_capacity);
        let recheck = match mode {
            Mode::Forever => starvation.observe(workers.load(), core.listener()),
            Mode::Once(_) => None,
        };
        let now = Instant::now();
        let heartbeat = core.heartbeat_at().filter(|_| mode == Mode::Forever);
        let wait = [
            deadline,
            backoff_until.filter(|_| backing_off),
            recheck,
            heartbeat,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now));
        sys::poll(&mut fds, wait)?;
        if sys::is_ready(&fds[0]) {
            core.shutdown().mark();
        }
        if let Some(stop) = also_stop
            && fds.get(1).is_some_and(sys::is_ready)
        {
            stop.mark();
        }
        if stopped(core) {
            return Ok(HandleOutcome::ShutDown);
        }
        workers.reap(&fds[first_worker_fd..], core.shared());
        if deadline.is_some_and(|d| Instant::now() >= d) {
            core.timed_out();
            return Ok(HandleOutcome::TimedOut);
        }
        if mode == Mode::Forever {
            core.service_actions();
        }
    }
}

/// `serve_forever` for a [`PerRequest`](super::PerRequest) strategy.
///
/// # Errors
/// As [`run`].
pub(crate) fn serve<W, T, H>(workers: &mut W, core: &mut Core<T, H>) -> io::Result<()>
where
    W: Workers,
    T: Transport,
    H: Handles<T::Kind>,
{
    core.serving(&"");
    run(workers, core, Mode::Forever, None).map(drop)
}

/// Closes the listener, then drains `workers` until the server's drain deadline.
pub(crate) fn close<W: Workers, T, H>(workers: &mut W, core: &mut Core<T, H>) -> ServeSummary {
    if !core.close_listener() {
        return ServeSummary::default();
    }
    let in_flight = workers.in_flight();
    core.draining(in_flight);
    let drained = workers.drain(Some(core.drain_deadline()), core.shared());
    core.finish(drained)
}
