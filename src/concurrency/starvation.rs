//! [`Starvation`]: says so when every worker is busy and requests have been waiting for one for a
//! while — a strategy whose connections each hold a worker until they close (a pool of threads or
//! processes, a capped thread or child count) is otherwise silent while idle persistent connections
//! lock everyone else out.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::sys;

/// How long every worker must have been busy, with requests waiting, before the server says so.
const AFTER: Duration = Duration::from_secs(3);
/// How often a loop that is starved looks again (it sleeps otherwise until a worker finishes).
const RECHECK: Duration = Duration::from_secs(1);

/// How a strategy's workers are doing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Workers inside a request.
    pub(crate) busy: usize,
    /// How many workers there can be.
    pub(crate) workers: usize,
    /// Requests accepted and waiting for a worker (a pool's queue).
    pub(crate) queued: usize,
    /// What to change, for the warning: "`Pool::new(workers)`".
    pub(crate) knob: &'static str,
}

/// One serving loop's watch for starvation.
#[derive(Debug, Default)]
pub(crate) struct Starvation {
    /// Since when every worker has been busy with requests waiting.
    since: Option<Instant>,
    /// What was said last in this episode: how many were waiting (0: accepted connections only known
    /// to be in the backlog).
    reported: Option<usize>,
}

impl Starvation {
    /// Looks at `load` (and, when every worker is busy, at whether connections wait in `listener`'s
    /// backlog); warns once starvation has lasted [`AFTER`], and again only when it grows. Returns
    /// when to look again, while every worker is busy.
    pub(crate) fn observe(
        &mut self,
        load: Option<Load>,
        listener: Option<BorrowedFd<'_>>,
    ) -> Option<Instant> {
        let Some(load) = load.filter(|l| l.busy >= l.workers) else {
            return self.relieved();
        };
        let backlog = listener.is_some_and(|fd| {
            let mut fds = [sys::readable(fd)];
            sys::poll(&mut fds, Some(Duration::ZERO)).is_ok_and(|n| n > 0)
        });
        if load.queued == 0 && !backlog {
            // Every worker is busy but nobody waits: not starved, but keep looking while saturated
            // (a connection may join the backlog, which a loop at its cap does not watch).
            self.relieved();
            return Some(Instant::now() + RECHECK);
        }
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let waited = now - since;
        if waited >= AFTER && self.reported.is_none_or(|n| load.queued >= 2 * n.max(1)) {
            let waiting = match (load.queued, backlog) {
                (0, _) => "connections have".to_string(),
                (n, false) => format!("{n} accepted request(s) have"),
                (n, true) => format!("{n} accepted request(s) and more connections have"),
            };
            log::warn!(
                "all {} workers have been busy for {}s while {waiting} waited for one: a connection \
                 holds its worker until it closes, so idle persistent connections lock out the rest; \
                 raise {}, limit connections per client (Server::max_connections_per_peer), or \
                 serve persistent connections with Threading or Reactor",
                load.workers,
                waited.as_secs(),
                load.knob,
            );
            self.reported = Some(load.queued);
        }
        Some(now + RECHECK)
    }

    fn relieved(&mut self) -> Option<Instant> {
        if self.reported.take().is_some() {
            log::info!("workers are free again: no request is waiting");
        }
        self.since = None;
        None
    }
}
