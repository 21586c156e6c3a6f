//! Signal plumbing: handlers that do what a cross-thread handle does (set a flag, write an eventfd),
//! and the signal mask held around `fork(2)`.
//!
//! A routed signal's handler is async-signal-safe: an atomic store and one `write(2)`, nothing else.
//! Which flag and which eventfd it pokes is kept in statics the handler reads; the caller keeps both
//! alive for as long as the route stands (the public `signals` module keeps every handle it was ever
//! given, so a handler running during a re-route never touches freed memory).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

use super::context;

/// Linux signal numbers are below 65.
const SLOTS: usize = 65;

/// What a handler pokes: a flag it sets and an eventfd it writes, the two halves of a
/// [`ShutdownHandle::shutdown`](crate::ShutdownHandle::shutdown).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Poke {
    flag: *const AtomicBool,
    fd: RawFd,
}

impl Poke {
    /// A poke of `flag` and `fd`. Both must outlive every route that uses this poke.
    pub(crate) fn new(flag: &AtomicBool, fd: BorrowedFd<'_>) -> Poke {
        Poke {
            flag,
            fd: fd.as_raw_fd(),
        }
    }

    /// A poke of nothing: for a route whose work is its drain (see [`drain_on`]).
    pub(crate) fn nothing() -> Poke {
        Poke {
            flag: std::ptr::null(),
            fd: -1,
        }
    }

    /// A poke of eventfd `fd` alone. It must outlive every route that uses this poke.
    pub(crate) fn eventfd(fd: BorrowedFd<'_>) -> Poke {
        Poke {
            flag: std::ptr::null(),
            fd: fd.as_raw_fd(),
        }
    }
}

/// One signal's route, read by the handler.
struct Route {
    first_flag: AtomicPtr<AtomicBool>,
    first_fd: AtomicI32,
    repeat_flag: AtomicPtr<AtomicBool>,
    repeat_fd: AtomicI32,
    /// The signals routed together share one delivery count, kept at the index of the first of them.
    group: AtomicUsize,
    routed: AtomicBool,
    /// The first delivery also drains this (forked child) process's idle connection.
    drain: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // a template for the array below, never used directly
const UNROUTED: Route = Route {
    first_flag: AtomicPtr::new(std::ptr::null_mut()),
    first_fd: AtomicI32::new(-1),
    repeat_flag: AtomicPtr::new(std::ptr::null_mut()),
    repeat_fd: AtomicI32::new(-1),
    group: AtomicUsize::new(0),
    routed: AtomicBool::new(false),
    drain: AtomicBool::new(false),
};
static ROUTES: [Route; SLOTS] = [UNROUTED; SLOTS];
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicUsize = AtomicUsize::new(0);
static DELIVERED: [AtomicUsize; SLOTS] = [ZERO; SLOTS];

/// Whether this process is a forked child of a server (a `Forking` request's process, a `PreFork`
/// worker): one connection at a time, drained by a signal rather than by a drain in this process.
static IN_CHILD: AtomicBool = AtomicBool::new(false);
/// In a forked child: whether its drain signal came.
static CHILD_DRAINING: AtomicBool = AtomicBool::new(false);
/// In a forked child: its connection's descriptor while the handler waits between two requests,
/// else -1 — what the drain signal's handler shuts the reading side of.
static CHILD_IDLE_FD: AtomicI32 = AtomicI32::new(-1);

/// Whether this forked child's drain signal came (always `false` outside forked children).
pub(crate) fn draining_child() -> bool {
    CHILD_DRAINING.load(Ordering::SeqCst)
}

/// A forked child's connection is idle (`Some(fd)`) or busy (`None`); nothing outside forked
/// children, whose connections are drained by their own server instead.
pub(crate) fn set_idle_fd(fd: Option<RawFd>) {
    if IN_CHILD.load(Ordering::Relaxed) {
        CHILD_IDLE_FD.store(fd.unwrap_or(-1), Ordering::SeqCst);
    }
}

/// [`CHILD_IDLE_FD`] once the drain took the idle connection.
const CHILD_SHUT: RawFd = -2;

/// Whether this forked child's drain took its idle connection (always `false` elsewhere).
pub(crate) fn child_shut() -> bool {
    IN_CHILD.load(Ordering::Relaxed) && CHILD_IDLE_FD.load(Ordering::SeqCst) == CHILD_SHUT
}

/// A read on a forked child's connection returned: the connection is no longer idle. Returns
/// whether the drain had taken it first — one atomic swap against the signal handler's
/// compare-and-swap, so exactly one of the two owns the bytes that came.
pub(crate) fn leave_idle() -> bool {
    IN_CHILD.load(Ordering::Relaxed) && CHILD_IDLE_FD.swap(-1, Ordering::SeqCst) == CHILD_SHUT
}

/// The drain of a forked child, from its signal handler: marks it draining, then, if its handler
/// waits between requests with nothing of a next one arrived, takes the connection and wakes its
/// read: a receive timeout of a microsecond (`SO_RCVTIMEO`, which the interrupted read picks up as
/// it restarts; a read that had a timeout returns `EINTR` instead). The reader sees the connection
/// taken, sends the end of stream itself — through the layers, so TLS says `close_notify` first,
/// which a signal handler could not — and lingers (`Reader::linger`). The handler marks the
/// connection idle before it looks at the flag, so one of the two always sees the other.
fn drain_child() {
    CHILD_DRAINING.store(true, Ordering::SeqCst);
    let fd = CHILD_IDLE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: recv(2) and setsockopt(2) are async-signal-safe and take any
        // descriptor number; the byte and the timeval outlive the calls; errno is saved and restored
        // so the interrupted code does not see ours.
        unsafe {
            let saved = *libc::__errno_location();
            let mut byte = 0u8;
            let peeked = libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            );
            // Bytes of a next request already here are read, and the connection closes after it.
            if peeked < 0
                && CHILD_IDLE_FD
                    .compare_exchange(fd, CHILD_SHUT, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                let wake = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 1,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&wake as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
            *libc::__errno_location() = saved;
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    let Some(route) = usize::try_from(sig).ok().and_then(|s| ROUTES.get(s)) else {
        return;
    };
    let group = route.group.load(Ordering::SeqCst);
    let first = DELIVERED
        .get(group)
        .is_none_or(|n| n.fetch_add(1, Ordering::SeqCst) == 0);
    let repeat_fd = route.repeat_fd.load(Ordering::SeqCst);
    let (flag, fd) = if first || repeat_fd < 0 {
        (&route.first_flag, route.first_fd.load(Ordering::SeqCst))
    } else {
        (&route.repeat_flag, repeat_fd)
    };
    if route.drain.load(Ordering::SeqCst) {
        drain_child();
    }
    let flag = flag.load(Ordering::SeqCst);
    // SAFETY: a non-null flag pointer was stored by `route` from a live `&AtomicBool` whose owner keeps
    // it alive while routed (see the module docs); an atomic store is async-signal-safe.
    if let Some(flag) = unsafe { flag.as_ref() } {
        flag.store(true, Ordering::SeqCst);
    }
    write_eventfd(fd);
}

/// Adds one to eventfd `fd` (if any), from a signal handler.
fn write_eventfd(fd: RawFd) {
    if fd < 0 {
        return;
    }
    let one: u64 = 1;
    // SAFETY: write(2) is async-signal-safe and `one` outlives the call; errno is saved and restored so
    // the interrupted code does not see ours.
    unsafe {
        let saved = *libc::__errno_location();
        libc::write(fd, (&one as *const u64).cast(), 8);
        *libc::__errno_location() = saved;
    }
}

/// Routes `signals` to `first` (their first delivery, counted together) and, if given, later deliveries
/// to `repeat`. Signals in `one_shot` revert to their default action once delivered (`SA_RESETHAND`),
/// so the next one ends the process. Handlers restart interrupted syscalls where the kernel allows
/// (`SA_RESTART`).
///
/// # Errors
/// `sigaction(2)` failing.
pub(crate) fn route(
    signals: &[Signal],
    first: Poke,
    repeat: Option<Poke>,
    one_shot: &[Signal],
) -> io::Result<()> {
    let Some(group) = signals.first().map(|&s| s as usize) else {
        return Ok(());
    };
    if let Some(count) = DELIVERED.get(group) {
        count.store(0, Ordering::SeqCst);
    }
    for &sig in signals {
        let Some(route) = ROUTES.get(sig as usize) else {
            continue;
        };
        route
            .first_flag
            .store(first.flag.cast_mut(), Ordering::SeqCst);
        route.first_fd.store(first.fd, Ordering::SeqCst);
        let (flag, fd) = repeat.map_or((std::ptr::null(), -1), |r| (r.flag, r.fd));
        route.repeat_flag.store(flag.cast_mut(), Ordering::SeqCst);
        route.repeat_fd.store(fd, Ordering::SeqCst);
        route.group.store(group, Ordering::SeqCst);
        let mut flags = SaFlags::SA_RESTART;
        if one_shot.contains(&sig) {
            flags |= SaFlags::SA_RESETHAND;
        }
        install(sig, SigHandler::Handler(on_signal), flags)?;
        route.routed.store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// Makes every delivery of each of `signals` (routed already, in a forked child) also drain the
/// child's connection: closed now if its handler waits between requests, at its next boundary
/// otherwise.
pub(crate) fn drain_on(signals: &[Signal]) {
    for &sig in signals {
        if let Some(route) = ROUTES.get(sig as usize) {
            route.drain.store(true, Ordering::SeqCst);
        }
    }
}

/// In a freshly forked child: every routed signal back to its default action, every route forgotten,
/// so the parent's handlers never run here (they would poke the parent's shared eventfds). The
/// job-control signals the parent routes (`SIGTTIN`, `SIGTTOU`: resize a `PreFork` server) are
/// ignored instead, as their default action would *stop* the child — a worker frozen with its share
/// of the listener's connections — whenever they are sent to the whole process group. (A program
/// the child executes inherits them ignored.)
pub(crate) fn reset_in_child() {
    IN_CHILD.store(true, Ordering::SeqCst);
    CHILD_DRAINING.store(false, Ordering::SeqCst);
    CHILD_IDLE_FD.store(-1, Ordering::SeqCst);
    for (sig, route) in ROUTES.iter().enumerate() {
        route.drain.store(false, Ordering::SeqCst);
        if !route.routed.swap(false, Ordering::SeqCst) {
            continue;
        }
        route.first_fd.store(-1, Ordering::SeqCst);
        route.repeat_fd.store(-1, Ordering::SeqCst);
        route
            .first_flag
            .store(std::ptr::null_mut(), Ordering::SeqCst);
        route
            .repeat_flag
            .store(std::ptr::null_mut(), Ordering::SeqCst);
        if let Ok(sig) = Signal::try_from(sig as libc::c_int) {
            let action = match sig {
                Signal::SIGTTIN | Signal::SIGTTOU => SigHandler::SigIgn,
                _ => SigHandler::SigDfl,
            };
            let _ = install(sig, action, SaFlags::empty());
        }
    }
}

fn install(sig: Signal, handler: SigHandler, flags: SaFlags) -> io::Result<()> {
    let action = SigAction::new(handler, flags, SigSet::empty());
    // SAFETY: the only handler installed here is `on_signal`, which performs async-signal-safe
    // operations only; SIG_DFL and SIG_IGN are always sound.
    unsafe { nix::sys::signal::sigaction(sig, &action) }
        .map(drop)
        .map_err(|e| context(e.into(), format!("sigaction(2) for {sig}")))
}

/// Blocks `signals` until dropped: held around `fork(2)`, so that a child never runs the parent's
/// handlers before it has reset them. A signal sent meanwhile stays pending and is delivered once the
/// mask is restored, to whichever handler is then in place.
#[derive(Debug)]
pub(crate) struct Blocked {
    old: SigSet,
}

impl Blocked {
    /// `sigprocmask(2)`: blocks `signals`, remembering the previous mask.
    pub(crate) fn new(signals: &[Signal]) -> io::Result<Blocked> {
        let mut blocked = SigSet::empty();
        for &sig in signals {
            blocked.add(sig);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut old))
            .map_err(|e| context(e.into(), "sigprocmask(2)"))?;
        Ok(Blocked { old })
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = set_mask(&self.old);
    }
}

/// `sigprocmask(SIG_SETMASK)`.
pub(crate) fn set_mask(mask: &SigSet) -> io::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None)
        .map_err(|e| context(e.into(), "sigprocmask(2)"))
}
