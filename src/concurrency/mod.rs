//! Concurrency strategies: who runs a request once it is accepted.
//!
//! | strategy | runs each request | Python |
//! |---|---|---|
//! | [`Sequential`] | inline, in the serving thread, one at a time | `TCPServer` / `UDPServer` |
//! | [`Threading`] | in a new thread (optionally capped) | `ThreadingMixIn` |
//! | [`Forking`] | in a new child process (capped by `max_children`) | `ForkingMixIn` |
//! | [`Pool`] | on one of a fixed set of threads, fed by a bounded queue | — |
//! | [`PreFork`] | in one of a fixed set of worker processes, each accepting on the shared listener | — (Apache prefork, gunicorn sync workers) |
//! | [`Reactor`] | as callbacks of one epoll event loop, for a [`MessageHandler`](crate::handler::MessageHandler) | `selectors`-based servers |
//!
//! Swapping strategies is a one-type change: `Server<Threading, Tcp, Echo>` becomes
//! `Server<Forking, Tcp, Echo>`, with the same handler.
//!
//! Every strategy that runs requests concurrently has a cap; at the cap the serving loop stops accepting
//! (new connections wait in the kernel's listen backlog) and sleeps in `poll(2)` until a worker finishes —
//! no busy loop, no unbounded memory.
//!
//! # Sealed
//! [`Concurrency`] is sealed while the design settles: use the strategies the crate provides.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::addr::Addr;
use crate::handler::RequestContext;
use crate::sys::PollFd;

mod forking;
mod pool;
mod prefork;
mod reactor;
mod sequential;
mod slot;
mod threading;

pub use forking::Forking;
pub use pool::Pool;
pub use prefork::{PreFork, ReloadHandle};
pub use reactor::Reactor;
pub use sequential::Sequential;
pub use threading::Threading;

pub(crate) mod sealed {
    /// Keeps [`Concurrency`](super::Concurrency) closed to outside implementations.
    pub trait Sealed {}
}

/// A concurrency strategy: the `C` of `Server<C, T, H>`.
///
/// # Sealed
/// Implemented by the crate's strategies only, for now.
///
/// # Examples
///
/// As a bound, e.g. to name the strategy a server runs in its log lines:
///
/// ```
/// use socketserver::{Concurrency, Forking, Threading};
///
/// fn strategy_name<C: Concurrency>(_: &C) -> &'static str {
///     let path = std::any::type_name::<C>();
///     path.rsplit("::").next().unwrap_or(path)
/// }
/// assert_eq!(strategy_name(&Threading::new()), "Threading");
/// assert_eq!(strategy_name(&Forking::new()), "Forking");
/// ```
pub trait Concurrency: sealed::Sealed + Send + 'static {}

/// How a strategy takes one accepted request at a time from the shared accept loop and runs it
/// elsewhere (or inline). This is the contract [`Sequential`], [`Threading`], [`Forking`] and [`Pool`]
/// implement (each [`PreFork`] worker runs the same loop sequentially; [`Reactor`] has its own).
///
/// The serving loop calls, in order, on every turn: [`reap`](Dispatch::reap) (collect finished
/// workers), [`has_capacity`](Dispatch::has_capacity) (may we accept?), [`spawn`](Dispatch::spawn) for
/// each accepted request, and, when it must wait, [`watch`](Dispatch::watch) to add the strategy's own
/// descriptors (a child's pidfd, a "slot freed" eventfd) to the `poll(2)` set next to the listener and
/// the shutdown eventfd.
///
/// # Examples
///
/// Reading what a strategy is doing, generically:
///
/// ```
/// use socketserver::concurrency::Dispatch;
/// use socketserver::{Forking, Threading};
///
/// fn idle<D: Dispatch>(strategy: &D) -> bool {
///     strategy.in_flight() == 0
/// }
/// assert!(idle(&Threading::new()));
/// // Threads share the process, so a drain deadline cuts their connections; children get signals.
/// assert!(Threading::CONCURRENT_IN_PROCESS && !Forking::CONCURRENT_IN_PROCESS);
/// ```
pub trait Dispatch: Concurrency {
    /// Whether requests run concurrently inside this process (threads), so that the server tracks their
    /// connections to cut them at a drain deadline. Processes are cut with signals instead.
    const CONCURRENT_IN_PROCESS: bool;

    /// Adds descriptors whose readiness means "a worker finished" to the poll set.
    fn watch(&mut self, fds: &mut Vec<PollFd>);

    /// Collects finished workers; `ready` is the part of the poll set [`watch`](Self::watch) added, as
    /// `poll` left it (empty when called without a poll).
    fn reap(&mut self, ready: &[PollFd], ctx: &RequestContext);

    /// Whether another request may start now.
    fn has_capacity(&mut self) -> bool;

    /// Runs `job` (which serves one request and reports its own failures) inline, on a thread or in a
    /// child process.
    ///
    /// # Errors
    /// The worker could not be started (`fork(2)` or thread creation failed); the request is dropped.
    fn spawn<F>(&mut self, job: F, env: &SpawnEnv<'_>) -> io::Result<()>
    where
        F: FnOnce() -> bool + Send + 'static;

    /// How many requests are running now.
    fn in_flight(&self) -> usize;

    /// Whether this serving loop should end although the server is not shutting down: a pre-forked
    /// worker that is being recycled or replaced leaves its loop between two requests. Checked by the
    /// loop before each accept; `false` for every strategy that serves until shutdown.
    fn retiring(&self) -> bool {
        false
    }

    /// Waits for in-flight requests until `deadline` (`None`: do not wait at all), then cuts whatever is
    /// left, as the strategy can: threads have their connections shut down through `cut_connections`
    /// (so blocked reads return) and get a short grace; children get `SIGTERM`, then `SIGKILL` after a
    /// grace period, and are reaped. Returns `(finished, cut)`.
    fn drain(
        &mut self,
        deadline: Option<Instant>,
        ctx: &RequestContext,
        cut_connections: &mut dyn FnMut(),
    ) -> (usize, usize);
}

/// What a strategy needs to know about the server when starting a worker.
#[derive(Debug)]
pub struct SpawnEnv<'a> {
    /// A forked child closes its copy of this descriptor (the stream listener) first, so a slow child
    /// cannot keep the port accepting after the server has shut down.
    pub(crate) close_in_child: Option<RawFd>,
    /// Who the request is from, for the strategy's own log lines (a child cut at a drain deadline).
    pub(crate) peer: &'a Addr,
}
