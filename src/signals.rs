//! Opt-in: turn `SIGINT` and `SIGTERM` into a graceful shutdown, and `SIGHUP` into a graceful reload.
//!
//! [`shutdown_on_signals`] installs an async-signal-safe handler whose only act is to write to the
//! server's shutdown eventfd — the same thing [`ShutdownHandle::shutdown`] does — so `serve_forever`
//! stops accepting, drains in-flight requests up to the server's shutdown timeout, and returns. The
//! process then exits normally (status 0), which is what process managers expect of `SIGTERM`.
//!
//! Forked children of the `Forking` strategy restore the default dispositions at once, so a signal sent
//! to a child ends that child only, and never reaches the parent's loop through the shared eventfd.
//!
//! [`reload_on_sighup`] does the same for a [`PreFork`](crate::PreFork) server's
//! [`ReloadHandle`]: `SIGHUP` replaces every worker process gracefully.
//!
//! Writes to a peer that has gone away fail with `EPIPE` rather than killing the process with
//! `SIGPIPE`: the crate sends with `MSG_NOSIGNAL`, and Rust programs ignore `SIGPIPE` from start-up.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use parking_lot::Mutex;

use crate::concurrency::ReloadHandle;
use crate::shutdown::ShutdownHandle;

/// The eventfd the first signal writes to (shutdown), or -1.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// The eventfd later signals write to (cut in-flight requests now), or -1.
static FORCE_FD: AtomicI32 = AtomicI32::new(-1);
/// How many of our signals arrived.
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
/// Keeps the handle (and so its eventfd) alive for as long as the handler may write to it.
static HANDLE: Mutex<Option<ShutdownHandle>> = Mutex::new(None);
/// Whether our handler is installed (forked children then restore the defaults).
static INSTALLED: AtomicBool = AtomicBool::new(false);

const SIGNALS: [Signal; 2] = [Signal::SIGINT, Signal::SIGTERM];

extern "C" fn on_signal(_: libc::c_int) {
    let first = RECEIVED.fetch_add(1, Ordering::SeqCst) == 0;
    write_eventfd(if first { &WAKE_FD } else { &FORCE_FD }.load(Ordering::SeqCst));
}

/// Makes `SIGINT` and `SIGTERM` request a graceful shutdown through `handle`; a second signal cuts the
/// in-flight requests at once ([`ShutdownHandle::force`]) instead of waiting for the drain deadline, as
/// a second Ctrl-C is expected to.
///
/// Call it once the server is bound; a later call moves the signals to another server's handle.
///
/// # Errors
/// `sigaction(2)` failing.
///
/// # Examples
///
/// ```
/// use socketserver::{signals, StreamRequest, ThreadingTcpServer};
///
/// let mut server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
/// signals::shutdown_on_signals(&server.shutdown_handle())?;
/// // A SIGTERM now makes serve_forever drain and return.
/// nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
/// server.serve_forever()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn shutdown_on_signals(handle: &ShutdownHandle) -> io::Result<()> {
    let mut slot = HANDLE.lock();
    RECEIVED.store(0, Ordering::SeqCst);
    WAKE_FD.store(handle.wake_fd().as_raw_fd(), Ordering::SeqCst);
    FORCE_FD.store(handle.force_fd().as_raw_fd(), Ordering::SeqCst);
    *slot = Some(handle.clone());
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in SIGNALS {
        // SAFETY: the handler only performs async-signal-safe operations.
        unsafe { sigaction(sig, &action) }
            .map_err(|e| crate::sys::context(e.into(), format!("sigaction(2) for {sig}")))?;
    }
    INSTALLED.store(true, Ordering::SeqCst);
    Ok(())
}

/// In a freshly forked child: restore the default dispositions if ours were installed.
pub(crate) fn reset_in_child() {
    if RELOAD_INSTALLED.load(Ordering::SeqCst) {
        RELOAD_FD.store(-1, Ordering::SeqCst);
        // SAFETY: installing SIG_DFL is always sound.
        let _ = unsafe {
            sigaction(
                Signal::SIGHUP,
                &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()),
            )
        };
    }
    if INSTALLED.load(Ordering::SeqCst) {
        WAKE_FD.store(-1, Ordering::SeqCst);
        FORCE_FD.store(-1, Ordering::SeqCst);
        for sig in SIGNALS {
            // SAFETY: installing SIG_DFL is always sound.
            let _ = unsafe {
                sigaction(
                    sig,
                    &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()),
                )
            };
        }
    }
}

/// The reload eventfd `SIGHUP` writes to, or -1.
static RELOAD_FD: AtomicI32 = AtomicI32::new(-1);
/// Keeps the reload handle alive for as long as the handler may write to it.
static RELOAD_HANDLE: Mutex<Option<ReloadHandle>> = Mutex::new(None);
/// Whether our `SIGHUP` handler is installed.
static RELOAD_INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    write_eventfd(RELOAD_FD.load(Ordering::SeqCst));
}

/// Makes `SIGHUP` replace a [`PreFork`](crate::PreFork) server's workers gracefully through `handle`
/// (see [`ReloadHandle::reload`]), as `SIGHUP` does for Apache, nginx and gunicorn.
///
/// Opt-in, like [`shutdown_on_signals`]: without it `SIGHUP` keeps its default action (ending the
/// process). A later call moves the signal to another handle. Worker processes restore the default
/// at once, so only the supervisor reloads.
///
/// # Errors
/// `sigaction(2)` failing.
///
/// # Examples
///
/// ```
/// use socketserver::{signals, PreFork};
///
/// let prefork = PreFork::new(4);
/// signals::reload_on_sighup(&prefork.reload_handle())?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn reload_on_sighup(handle: &ReloadHandle) -> io::Result<()> {
    let mut slot = RELOAD_HANDLE.lock();
    RELOAD_FD.store(handle.wake_fd().as_raw_fd(), Ordering::SeqCst);
    *slot = Some(handle.clone());
    let action = SigAction::new(
        SigHandler::Handler(on_sighup),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only performs async-signal-safe operations.
    unsafe { sigaction(Signal::SIGHUP, &action) }
        .map_err(|e| crate::sys::context(e.into(), "sigaction(2) for SIGHUP"))?;
    RELOAD_INSTALLED.store(true, Ordering::SeqCst);
    Ok(())
}

/// The signals that ask a pre-forked worker to retire, and every signal the supervisor handles: the
/// supervisor blocks them around `fork(2)` so a new worker never runs the supervisor's handlers.
pub(crate) const WORKER_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Set in a pre-forked worker once it has been asked to retire.
static RETIRING: AtomicBool = AtomicBool::new(false);
/// The worker's own eventfd the retire handler writes to, or -1.
static RETIRE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_retire(_: libc::c_int) {
    RETIRING.store(true, Ordering::SeqCst);
    write_eventfd(RETIRE_FD.load(Ordering::SeqCst));
}

/// In a pre-forked worker: `SIGTERM`, `SIGINT` and `SIGHUP` ask this worker alone to finish its
/// current request and exit, by writing `fd` (the worker's own eventfd, never the server's shared
/// shutdown eventfd). `SIGTERM` is one-shot (`SA_RESETHAND`): a second `SIGTERM` ends the worker at
/// once, which is how the supervisor cuts a worker that outlives the drain deadline.
pub(crate) fn retire_on_signals(fd: RawFd) -> io::Result<()> {
    RETIRING.store(false, Ordering::SeqCst);
    RETIRE_FD.store(fd, Ordering::SeqCst);
    for sig in WORKER_SIGNALS {
        let flags = if sig == Signal::SIGTERM {
            SaFlags::SA_RESTART | SaFlags::SA_RESETHAND
        } else {
            SaFlags::SA_RESTART
        };
        let action = SigAction::new(SigHandler::Handler(on_retire), flags, SigSet::empty());
        // SAFETY: the handler only performs async-signal-safe operations.
        unsafe { sigaction(sig, &action) }
            .map_err(|e| crate::sys::context(e.into(), format!("sigaction(2) for {sig}")))?;
    }
    Ok(())
}

/// In a pre-forked worker: whether a retire signal has arrived.
pub(crate) fn retire_requested() -> bool {
    RETIRING.load(Ordering::SeqCst)
}

/// Adds one to the eventfd `fd` (if any) from a signal handler.
fn write_eventfd(fd: RawFd) {
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; `one` outlives the call. errno is saved and restored
        // so the interrupted code does not see ours.
        unsafe {
            let saved = *libc::__errno_location();
            libc::write(fd, (&one as *const u64).cast(), 8);
            *libc::__errno_location() = saved;
        }
    }
}

/// Blocks the signals the crate handles (`SIGINT`, `SIGTERM`, `SIGHUP`) until dropped: held around
/// `fork(2)`, so that a child never runs the parent's handlers — which would write to the parent's
/// shared eventfds — before it has reset them. A signal sent meanwhile stays pending and is delivered
/// once the mask is restored, to whichever handler is then in place.
pub(crate) struct Blocked {
    old: SigSet,
}

impl Blocked {
    /// `sigprocmask(2)`: blocks the signals, remembering the previous mask.
    pub(crate) fn new() -> io::Result<Blocked> {
        let mut blocked = SigSet::empty();
        for sig in WORKER_SIGNALS {
            blocked.add(sig);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&blocked),
            Some(&mut old),
        )
        .map_err(|e| crate::sys::context(e.into(), "sigprocmask(2)"))?;
        Ok(Blocked { old })
    }

    /// The mask to restore, for a child that restores it itself once its handlers are in place.
    pub(crate) fn old_mask(&self) -> &SigSet {
        &self.old
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&self.old),
            None,
        );
    }
}
