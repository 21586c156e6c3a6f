//! [`Stats`]: the server's counters, in memory its forked children share.

use std::io;
use std::sync::atomic::Ordering;

use crate::sys::SharedCounters;

/// What is counted. Each is one `AtomicU64` in a `MAP_SHARED` mapping made before any fork, so a
/// count made in a `Forking` child or a `PreFork` worker is the parent's count too: a server's figures
/// are the whole server's, whichever process served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// Requests admitted (passed `verify_request` and the per-peer limit) and handed on.
    Accepted,
    /// Requests refused by `verify_request` or the per-peer limit.
    Rejected,
    /// Requests whose handler started.
    Started,
    /// Requests whose handler returned (however).
    Finished,
    /// Of those, how many failed (an error of the handler or of a layer).
    Failed,
    /// Of those, how many panicked.
    Panicked,
    /// Requests cut at a drain deadline.
    Cut,
}

impl Counter {
    const ALL: [Counter; 7] = [
        Counter::Accepted,
        Counter::Rejected,
        Counter::Started,
        Counter::Finished,
        Counter::Failed,
        Counter::Panicked,
        Counter::Cut,
    ];

    fn index(self) -> usize {
        // Each counter gets a cache line of its own (8 counters of 8 bytes apart), so workers
        // counting different things on different cores do not fight over one line.
        self as usize * 8
    }
}

/// The counters of one server.
#[derive(Debug)]
pub(crate) struct Stats {
    counters: SharedCounters,
}

impl Stats {
    /// Maps the counters, all zero.
    ///
    /// # Errors
    /// `mmap(2)` failing.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Stats {
            counters: SharedCounters::new(Counter::ALL.len() * 8)?,
        })
    }

    pub(crate) fn add(&self, counter: Counter, n: u64) {
        if let Some(c) = self.counters.get(counter.index()) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, counter: Counter) -> u64 {
        self.counters
            .get(counter.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}
