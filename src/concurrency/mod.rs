//! Concurrency strategies: who runs a request once it is accepted.
//!
//! | strategy | runs each request | Python |
//! |---|---|---|
//! | [`Sequential`] | inline, in the serving thread, one at a time | `TCPServer` / `UDPServer` |
//! | [`Threading`] | in a new thread (optionally capped) | `ThreadingMixIn` |
//! | [`Forking`] | in a new child process (capped by `max_children`) | `ForkingMixIn` |
//! | [`Pool`] | on one of a fixed set of threads, fed by a bounded queue | — |
//! | [`PreFork`] | in one of a fixed set of worker processes, each accepting on the shared listener | — (Apache prefork, gunicorn sync workers) |
//! | [`Reactor`] | as callbacks of one epoll event loop, for a [`MessageHandler`](crate::reactor::MessageHandler) | `selectors`-based servers |
//!
//! Swapping strategies is a one-type change: `Server<Threading, Tcp, Echo>` becomes
//! `Server<Pool, Tcp, Echo>`, with the same handler. Every strategy is built the same way,
//! `Strategy::new()` (or `Default`), and configured with builder methods.
//!
//! **Under `Forking` and `PreFork`, requests run in other processes**, on a copy of the handler:
//! state a handler keeps in memory (a `Mutex<HashMap>`, a counter) is not shared between requests
//! served by different processes, and changes made in a child never reach the parent. See
//! [`Forking`] for what to do instead.
//!
//! Every strategy that runs requests concurrently has a cap; at the cap the serving loop stops accepting
//! (new connections wait in the kernel's listen backlog) and sleeps until a worker finishes — no busy
//! loop, no unbounded memory. A connection holds its worker (a thread, a child, a pre-forked worker)
//! until it closes, so under `Pool` and `PreFork` idle persistent connections can take every worker:
//! size them for the connections you keep open, or use `Threading` or `Reactor`.
//!
//! # Sealed
//! [`Concurrency`] is sealed while the design settles: use the strategies the crate provides. Its
//! plumbing (how a strategy serves, how it drains) is not public API.

// The sealed traits' methods take and return crate-private plumbing types (the serving policy, requests
// on their way to a handler): that is the point of sealing them, so the lint that flags private types
// in reachable signatures does not apply here.
#![allow(private_interfaces)]

use std::io;
use std::time::Instant;

use crate::serving::{Core, Drained, Job, ServeSummary, Shared};
use crate::sys::PollFd;

mod accept_loop;
mod children;
mod forking;
mod in_flight;
mod pool;
mod prefork;
mod reactor;
mod sequential;
mod starvation;
mod threading;

pub(crate) use accept_loop::{Mode, run as run_accept_loop};
pub use forking::Forking;
pub use pool::Pool;
pub use prefork::{PreFork, ReloadHandle, SizeHandle};
pub use reactor::Reactor;
pub use sequential::Sequential;
pub use threading::Threading;

/// The plumbing behind [`Concurrency`] and [`PerRequest`] (the signal-hook pattern: public traits whose
/// methods live on a sealed supertrait, so they are neither implementable nor callable outside the
/// crate).
pub(crate) mod sealed {
    use super::*;

    /// How a strategy serves `Core<T, H>`.
    pub trait Strategy<T, H> {
        /// Its name, for figures and logs.
        const NAME: &'static str;
        /// Which figures make sense for it.
        const SHAPE: crate::serving::Shape;

        /// Serves until shutdown is requested, or the loop itself fails.
        ///
        /// # Errors
        /// The loop failed (`poll(2)`, `epoll_wait(2)`, the listener broke).
        fn serve(&mut self, core: &mut Core<T, H>) -> io::Result<()>;

        /// Stops accepting, lets in-flight requests finish until the drain deadline, cuts the rest, and
        /// returns the run's summary. Called after `serve`, and by `server_close` and `Drop`; every
        /// call after the first returns an empty summary.
        fn close(&mut self, core: &mut Core<T, H>) -> ServeSummary;
    }

    /// How a strategy takes accepted requests, one at a time, from the server's accept loop (the
    /// contract of [`PerRequest`] strategies). The loop calls, on every turn: [`reap`](Self::reap)
    /// (collect finished workers), [`has_capacity`](Self::has_capacity) (may it accept?),
    /// [`start`](Self::start) for each admitted request, and, when it must wait,
    /// [`watch`](Self::watch) to add the strategy's own descriptors (a child's pidfd, a "worker
    /// finished" eventfd) to its `poll(2)` set.
    pub trait Workers {
        /// Whether another request may start now.
        fn has_capacity(&mut self) -> bool;

        /// Adds descriptors whose readiness means "a worker finished" to the poll set. `capped` is
        /// what [`has_capacity`](Self::has_capacity) told the loop this turn (negated): the loop left
        /// the listener out of the poll set on that answer, so a strategy must not decide again —
        /// a worker finishing in between would leave the poll waiting on neither.
        fn watch(&mut self, fds: &mut Vec<PollFd>, capped: bool);

        /// Collects finished workers; `ready` is the part of the poll set [`watch`](Self::watch)
        /// added, as `poll` left it (empty when called without a poll).
        fn reap(&mut self, ready: &[PollFd], shared: &Shared);

        /// Runs `job` inline, on a thread or in a child process.
        ///
        /// # Errors
        /// The worker could not be started (`fork(2)` or thread creation failed): the job, and with
        /// it the connection, is dropped; the loop reports it and backs off.
        fn start<F>(&mut self, job: Job<F>, spawn: &mut Spawn<'_>) -> Result<(), NotStarted>
        where
            F: FnOnce() -> bool + Send + 'static;

        /// How many requests are running (or queued) now.
        fn in_flight(&self) -> usize;

        /// How busy the workers are, for the loop's starvation warning (`None`: this strategy has no
        /// workers to run out of, e.g. `Sequential`).
        fn load(&self) -> Option<super::starvation::Load> {
            None
        }

        /// Waits for in-flight requests until `deadline` (`None`: do not wait), then cuts whatever is
        /// left, as the strategy can: connections of requests running in this process are shut down
        /// (so blocked reads return); children get `SIGTERM`, then `SIGKILL` after a grace period.
        fn drain(&mut self, deadline: Option<Instant>, shared: &Shared) -> Drained;
    }
}

/// What a strategy may need from the accept loop when it starts a worker.
pub(crate) struct Spawn<'a> {
    /// What every request shares (the drain's clock, the event point).
    pub(crate) shared: &'a std::sync::Arc<Shared>,
    /// For a worker that is a copy of this process (a forked child): drops its copy of the listener.
    pub(crate) release_listener: &'a mut dyn FnMut(),
}

/// A worker that could not be started, and whose request it was.
#[derive(Debug)]
pub(crate) struct NotStarted {
    pub(crate) error: io::Error,
    /// Boxed: the error path is rare, and the result of every start stays small.
    pub(crate) peer: Box<crate::addr::Addr>,
}

/// A concurrency strategy that can serve handler `H` on transport `T`: the `C` of `Server<C, T, H>`.
///
/// Every strategy implements it for the combinations that make sense: the blocking strategies
/// ([`Sequential`], [`Threading`], [`Forking`], [`Pool`], [`PreFork`]) for any handler whose kind
/// matches the transport's ([`StreamHandler`](crate::StreamHandler) on stream transports,
/// [`DatagramHandler`](crate::DatagramHandler) on datagram transports), and [`Reactor`] for a
/// [`MessageHandler`](crate::reactor::MessageHandler) on a socket stream transport. A combination that
/// does not make sense has no implementation, so `Server<C, T, H>` for it does not compile.
///
/// # Sealed
/// Implemented by the crate's strategies only.
///
/// # Examples
///
/// As a bound, for code that builds a server with whichever strategy the configuration names:
///
/// ```
/// use socketserver::{Concurrency, Pool, Server, StreamRequest, Tcp, Threading};
///
/// fn bind_with<C, H>(strategy: C, handler: H) -> std::io::Result<Server<C, Tcp, H>>
/// where
///     C: Concurrency<Tcp, H>,
/// {
///     Server::new(strategy, Tcp::bind("127.0.0.1:0")?, handler)
/// }
/// let threads = bind_with(Threading::new(), |_r: &mut StreamRequest| Ok(()))?;
/// let pool = bind_with(Pool::new(4), |_r: &mut StreamRequest| Ok(()))?;
/// assert_ne!(threads.local_addr(), pool.local_addr());
/// # Ok::<(), std::io::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot serve the handler `{H}` on the transport `{T}`: use a blocking strategy with a `StreamHandler` on Tcp/UnixStream or a `DatagramHandler` on Udp/UnixDatagram, or `Reactor` with a `MessageHandler` on Tcp/UnixStream",
    label = "not a strategy for this transport and handler",
    note = "the blocking strategies are Sequential, Threading, Forking, Pool and PreFork",
    note = "in generic code, bound the strategy: `{Self}: Concurrency<{T}, {H}>`"
)]
pub trait Concurrency<T, H>: sealed::Strategy<T, H> + Send + 'static {}

/// A strategy that takes accepted requests one at a time from the server's own accept loop:
/// [`Sequential`], [`Threading`], [`Forking`] and [`Pool`]. These are the strategies with Python's
/// [`handle_request`](crate::Server::handle_request) ([`PreFork`]'s workers and [`Reactor`]'s event
/// loop accept by themselves, so they only `serve_forever`).
///
/// # Sealed
/// Implemented by the crate's strategies only.
///
/// # Examples
///
/// ```
/// use socketserver::concurrency::PerRequest;
/// use socketserver::{Pool, Sequential};
///
/// fn one_at_a_time<C: PerRequest>(_: &C) -> bool {
///     true
/// }
/// assert!(one_at_a_time(&Sequential::new()) && one_at_a_time(&Pool::new(2)));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `handle_request`: it accepts by itself",
    note = "`handle_request` is for Sequential, Threading, Forking and Pool; serve PreFork and Reactor with `serve_forever`"
)]
pub trait PerRequest: sealed::Workers + Send + 'static {}
