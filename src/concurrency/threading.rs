//! [`Threading`]: a thread per request.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::slot::Slot;
use super::{sealed, Concurrency, Dispatch, SpawnEnv};
use crate::handler::RequestContext;
use crate::sys::{self, PollFd};

/// Serves each request in a new thread: Python's `ThreadingMixIn`.
///
/// Finished threads are joined as they finish, so memory stays proportional to the requests in flight,
/// never to the requests served (Python before 3.7 kept every thread object). A cap,
/// [`max_threads`](Self::max_threads) (default [`DEFAULT_MAX_THREADS`](Self::DEFAULT_MAX_THREADS)),
/// bounds the live threads: at the cap the server stops accepting and the kernel's backlog holds new
/// connections until a thread finishes — a connection storm cannot create unbounded threads, as it can
/// under Python's `ThreadingMixIn`. Raise it for many long-lived connections (or use `Reactor`).
///
/// With [`block_on_close`](Self::block_on_close) (the default, as in Python 3.7+), closing the server
/// waits for running requests, up to the server's shutdown timeout.
///
/// # Examples
///
/// ```
/// use socketserver::{Server, StreamRequest, Tcp, Threading};
///
/// let strategy = Threading::new().max_threads(64);
/// let _server = Server::new(strategy, Tcp::bind("127.0.0.1:0")?, |_r: &mut StreamRequest| Ok(()))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Threading {
    max_threads: Option<usize>,
    block_on_close: bool,
    live: HashMap<u64, JoinHandle<()>>,
    next_id: u64,
    done_tx: Sender<u64>,
    done_rx: Receiver<u64>,
    slot: Arc<Slot>,
}

impl Default for Threading {
    fn default() -> Self {
        Threading::new()
    }
}

impl Threading {
    /// The default cap on live request threads.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Threading;
    /// assert_eq!(Threading::DEFAULT_MAX_THREADS, 1024);
    /// // Many long-lived connections: raise the cap rather than remove it.
    /// let _t = Threading::new().max_threads(4 * Threading::DEFAULT_MAX_THREADS);
    /// ```
    pub const DEFAULT_MAX_THREADS: usize = 1024;

    /// A thread per request, at most [`DEFAULT_MAX_THREADS`](Self::DEFAULT_MAX_THREADS) at once, blocking
    /// on close.
    ///
    /// # Panics
    /// If the process cannot create an `eventfd(2)` (descriptor exhaustion at start-up).
    ///
    /// # Examples
    ///
    /// ```
    /// let _t = socketserver::Threading::new();
    /// ```
    pub fn new() -> Self {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Threading {
            max_threads: Some(Self::DEFAULT_MAX_THREADS),
            block_on_close: true,
            live: HashMap::new(),
            next_id: 0,
            done_tx,
            done_rx,
            slot: Arc::default(),
        }
    }

    /// Caps the number of live request threads (`None` removes the cap). Clamped to at least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let _t = socketserver::Threading::new().max_threads(100);
    /// ```
    pub fn max_threads(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_threads = max.into().map(|m| m.max(1));
        self
    }

    /// Whether closing the server waits for running requests (default `true`). With `false`, running
    /// threads are left to finish on their own.
    ///
    /// # Examples
    ///
    /// ```
    /// let _t = socketserver::Threading::new().block_on_close(false);
    /// ```
    pub fn block_on_close(mut self, block: bool) -> Self {
        self.block_on_close = block;
        self
    }

    fn join_finished(&mut self) -> usize {
        let mut n = 0;
        while let Ok(id) = self.done_rx.try_recv() {
            if let Some(handle) = self.live.remove(&id) {
                // The thread sent its id as its last act; this join returns at once.
                let _ = handle.join();
                n += 1;
            }
        }
        n
    }

    fn at_cap(&self) -> bool {
        self.max_threads.is_some_and(|max| self.live.len() >= max)
    }
}

impl sealed::Sealed for Threading {}
impl Concurrency for Threading {}

/// Sends the thread's id when it ends, however it ends.
struct Finished {
    id: u64,
    done: Sender<u64>,
    slot: Arc<Slot>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.done.send(self.id);
        self.slot.release();
    }
}

impl Dispatch for Threading {
    const CONCURRENT_IN_PROCESS: bool = true;

    fn watch(&mut self, fds: &mut Vec<PollFd>) {
        if self.at_cap() {
            let slot = self.slot.clone();
            slot.watch(fds, || {
                self.join_finished();
                self.at_cap()
            });
        }
    }

    fn reap(&mut self, ready: &[PollFd], _ctx: &RequestContext) {
        if !ready.is_empty() {
            self.slot.reset();
        }
        self.join_finished();
    }

    fn has_capacity(&mut self) -> bool {
        !self.at_cap()
    }

    fn spawn<F>(&mut self, job: F, _env: &SpawnEnv<'_>) -> io::Result<()>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        self.slot.ensure()?;
        let id = self.next_id;
        self.next_id += 1;
        let finished = Finished {
            id,
            done: self.done_tx.clone(),
            slot: self.slot.clone(),
        };
        let handle = std::thread::Builder::new()
            .spawn(move || {
                let _finished = finished;
                job();
            })
            .map_err(|e| sys::context(e, "spawning a request thread"))?;
        self.live.insert(id, handle);
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.live.len()
    }

    fn drain(
        &mut self,
        deadline: Option<Instant>,
        ctx: &RequestContext,
        cut_connections: &mut dyn FnMut(),
    ) -> (usize, usize) {
        let mut finished = self.join_finished();
        let Some(deadline) = deadline.filter(|_| self.block_on_close) else {
            self.live.clear(); // detach: they finish on their own
            return (finished, 0);
        };
        finished += self.wait_live(deadline, Some(ctx.shutdown.force_fd().as_raw_fd()));
        let cut = self.live.len();
        if cut > 0 {
            log::warn!("drain deadline passed: cutting {cut} connection(s)");
            cut_connections();
            // Their reads and writes now fail at once; give the handlers a moment to unwind.
            self.wait_live(Instant::now() + CUT_GRACE, None);
            // A handler that ignores its socket's errors cannot be stopped: detach it.
            self.live.clear();
        }
        (finished, cut)
    }
}

/// How long threads whose connections were cut get to return before they are detached.
const CUT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl Threading {
    /// Joins threads as they finish until none is left or `deadline` passes; returns how many finished.
    fn wait_live(&mut self, deadline: Instant, force: Option<RawFd>) -> usize {
        let mut finished = 0;
        let slot = self.slot.clone();
        slot.wait_until(deadline, force, || {
            finished += self.join_finished();
            self.live.is_empty()
        });
        finished
    }
}
