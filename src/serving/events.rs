//! The event point: every lifecycle event of a server — from its accept loop, its event loop, its
//! worker threads, forked children and pre-forked workers alike — passes through [`Events::emit`].
//!
//! Counting and logging hang off it today; anything that watches a server (metrics, connection-state
//! hooks) hangs off it next, without a change to any serving loop. With nothing listening it costs a
//! few relaxed atomic additions and the `log` crate's level check per request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::stats::{Counter, Stats};
use super::summary::ServeSummary;
use crate::addr::Addr;
use crate::error::RequestError;
use crate::state::ConnState;

/// The error hook's shape: the peer (when there is one) and what went wrong.
pub(crate) type ErrorHook = Arc<dyn Fn(Option<&Addr>, &RequestError) + Send + Sync>;

/// Something that happened to a server.
pub(crate) enum Event<'a> {
    /// A serving loop started.
    Serving {
        local: &'a Addr,
        how: &'a dyn fmt::Display,
    },
    /// A request was admitted.
    Accepted { peer: &'a Addr },
    /// A request was refused before it reached a worker.
    Rejected { peer: &'a Addr, by: Rejection },
    /// A request's handler started (for `Reactor`: a connection opened).
    Started { peer: &'a Addr },
    /// A request ended (for `Reactor`: a connection closed).
    Finished {
        peer: &'a Addr,
        elapsed: Duration,
        outcome: Outcome,
    },
    /// Something failed: a request, an accept, a worker. Goes to the error hook.
    Failed {
        peer: Option<&'a Addr>,
        error: &'a RequestError,
    },
    /// A connection changed state (Go's `ConnState`): told to the state hook, if there is one.
    State { peer: &'a Addr, state: ConnState },
    /// The server reached its cap and stopped accepting for a while.
    Capped,
    /// A child process started (`Forking`, `PreFork`).
    ChildSpawned,
    /// A child process ended abnormally.
    ChildFailed,
    /// A child process was killed by the server.
    ChildKilled,
    /// A request was cut at the drain deadline: its connection shut down, its process signalled.
    /// (`peer` is unknown for a pre-forked worker cut in the middle of a request.)
    Cut {
        peer: Option<&'a Addr>,
        how: &'a str,
    },
    /// Shutdown began with requests in flight.
    Draining { in_flight: usize, timeout: Duration },
    /// A worker process started or ended (`PreFork`).
    Worker { pid: i32, started: bool },
    /// A serving loop ended.
    Stopped {
        local: &'a Addr,
        summary: &'a ServeSummary,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// `verify_request` returned `false`.
    Verify,
    /// The peer already had `limit` connections open.
    PerPeer { limit: usize },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Verify => f.write_str("verify_request"),
            Rejection::PerPeer { limit } => {
                write!(f, "max_connections_per_peer: {limit} already open")
            }
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Failed,
    Panicked,
}

impl Outcome {
    pub(crate) fn of(result: &Result<(), RequestError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Ok,
            Err(RequestError::Panicked(_)) => Outcome::Panicked,
            Err(_) => Outcome::Failed,
        }
    }
}

pub(crate) use crate::state::StateHook;

/// Where a server's events go.
#[derive(Clone)]
pub(crate) struct Events {
    stats: Stats,
    on_error: ErrorHook,
    on_state: Option<StateHook>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(stats: Stats) -> Self {
        Events {
            stats,
            on_error: Arc::new(report_error),
            on_state: None,
        }
    }

    /// Sets the connection-state hook (`Server::conn_state`).
    pub(crate) fn set_state_hook(&mut self, hook: StateHook) {
        self.on_state = Some(hook);
    }

    /// Whether anyone listens for connection states (so loops can skip working them out).
    pub(crate) fn wants_states(&self) -> bool {
        self.on_state.is_some()
    }

    /// Replaces the error hook (`Server::handle_error`).
    pub(crate) fn set_error_hook(&mut self, hook: ErrorHook) {
        self.on_error = hook;
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The one place every event goes.
    pub(crate) fn emit(&self, event: Event<'_>) {
        let stats = self.stats.counters();
        match event {
            Event::Serving { local, how } => log::info!("serving on {local}{how}"),
            Event::Accepted { peer } => {
                stats.add(Counter::Accepted, 1);
                log::trace!("accepted {peer}");
            }
            Event::Rejected { peer, by } => {
                let counter = match by {
                    Rejection::Verify => Counter::RejectedVerify,
                    Rejection::PerPeer { .. } => Counter::RejectedPerPeer,
                };
                stats.add(counter, 1);
                log::info!("rejected {peer} ({by})");
            }
            Event::Started { peer } => {
                stats.add(Counter::Started, 1);
                log::trace!("request from {peer} started");
            }
            Event::Finished {
                peer,
                elapsed,
                outcome,
            } => {
                stats.add(Counter::Finished, 1);
                stats.observe(elapsed);
                log::trace!("request from {peer} ended after {elapsed:?}: {outcome:?}");
                match outcome {
                    Outcome::Ok => {}
                    Outcome::Failed => stats.add(Counter::Failed, 1),
                    Outcome::Panicked => stats.add(Counter::Panicked, 1),
                }
            }
            Event::Failed { peer, error } => (self.on_error)(peer, error),
            Event::State { peer, state } => {
                if let Some(hook) = &self.on_state {
                    hook(peer, state);
                }
            }
            Event::Capped => stats.add(Counter::Capped, 1),
            Event::ChildSpawned => stats.add(Counter::ChildrenSpawned, 1),
            Event::ChildFailed => stats.add(Counter::ChildrenFailed, 1),
            Event::ChildKilled => stats.add(Counter::ChildrenKilled, 1),
            Event::Cut { peer, how } => {
                stats.add(Counter::Cut, 1);
                if let (Some(hook), Some(peer)) = (&self.on_state, peer) {
                    hook(peer, ConnState::Cut);
                }
                match peer {
                    Some(peer) => log::warn!("drain deadline passed: cutting {how} from {peer}"),
                    None => log::warn!("drain deadline passed: cutting {how}"),
                }
            }
            Event::Draining { in_flight, timeout } => {
                log::info!("shutting down: waiting up to {timeout:?} for {in_flight} request(s)");
            }
            Event::Worker { pid, started } => {
                if started {
                    log::debug!("started worker {pid}");
                } else {
                    log::debug!("worker {pid} exited");
                }
            }
            Event::Stopped { local, summary } => {
                log::info!("stopped serving on {local}: {summary:?}");
            }
        }
    }
}

/// The default error hook, Python's `handle_error`: one line per failure with the peer and the error
/// chain — through the `log` facade when a logger would record it, on standard error otherwise, so a
/// server without a logger is never silent about its failures.
pub(crate) fn report_error(peer: Option<&Addr>, err: &RequestError) {
    let line = match peer {
        Some(p) => format!("request from {p}: {err}"),
        None => err.to_string(),
    };
    if log::max_level() >= log::LevelFilter::Error {
        log::error!("{line}");
    } else {
        eprintln!("socketserver: {line}");
    }
}
