//! [`ShutdownHandle`]: stop a serving loop from anywhere.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::EventFd;
use crate::sys::signal::Poke;

/// A cloneable, `Send` handle that asks a server to stop: Python's `server.shutdown()`, made safe to call
/// from anywhere.
///
/// [`shutdown`](Self::shutdown) never blocks and may be called any number of times, from any thread,
/// from inside a handler, from a forked child, and before the server has started serving (it then returns
/// at once). It wakes the serving loop through an `eventfd(2)` the loop polls, so the loop reacts within
/// microseconds, without a poll interval (Python's loop wakes every 0.5 s to look).
///
/// # Examples
///
/// ```
/// use socketserver::{StreamRequest, ThreadingTcpServer};
///
/// let mut server = ThreadingTcpServer::bind("127.0.0.1:0", |_req: &mut StreamRequest| Ok(()))?;
/// let stop = server.shutdown_handle();
/// let t = std::thread::spawn(move || stop.shutdown());
/// server.serve_forever()?; // returns once the other thread has asked
/// t.join().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    requested: AtomicBool,
    wake: EventFd,
    /// Readable once the drain deadline is to be treated as passed.
    force: EventFd,
}

impl ShutdownHandle {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(ShutdownHandle {
            inner: Arc::new(Inner {
                requested: AtomicBool::new(false),
                wake: EventFd::new(false)?,
                force: EventFd::new(false)?,
            }),
        })
    }

    /// Asks the server to stop accepting and return from `serve_forever` once in-flight requests are
    /// drained. Non-blocking and idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// let stop = server.shutdown_handle();
    /// stop.shutdown();
    /// stop.shutdown(); // a second call changes nothing
    /// assert!(stop.is_shutdown());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        // Always notify (not only on the first call): a forked child's copy of the flag is not the
        // parent's, and the eventfd is the one thing both processes share.
        self.inner.wake.notify();
    }

    /// Whether shutdown has been requested (in this process, or by a forked child through the shared
    /// eventfd, once the serving loop has seen it).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// assert!(!server.shutdown_handle().is_shutdown());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_shutdown(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Asks for shutdown *and* cuts in-flight requests now instead of waiting for the drain deadline
    /// (what a second `SIGINT` does under [`signals::shutdown_on_signals`](crate::signals::shutdown_on_signals)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let mut server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// server.shutdown_handle().force();
    /// let summary = server.serve_forever()?; // nothing was in flight
    /// assert_eq!(summary.cut, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn force(&self) {
        self.shutdown();
        self.inner.force.notify();
    }

    /// The descriptor drains poll next to their own: readable once [`force`](Self::force) was called.
    pub(crate) fn force_fd(&self) -> BorrowedFd<'_> {
        self.inner.force.as_fd()
    }

    /// What a signal handler does for [`shutdown`](Self::shutdown): set the flag, write the eventfd.
    pub(crate) fn poke(&self) -> Poke {
        Poke::new(&self.inner.requested, self.inner.wake.as_fd())
    }

    /// What a signal handler does for [`force`](Self::force), once shutdown was asked for.
    pub(crate) fn force_poke(&self) -> Poke {
        Poke::new(&self.inner.requested, self.inner.force.as_fd())
    }

    /// Records a shutdown that the loop learnt of through the eventfd (a forked child asked).
    pub(crate) fn mark(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
    }

    /// The descriptor the serving loop polls; readable once shutdown has been requested.
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.inner.wake.as_fd()
    }
}
