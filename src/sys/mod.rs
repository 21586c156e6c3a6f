//! The operating-system layer: every raw syscall the crate makes lives here.
//!
//! The rest of the crate talks to this module only through small, safe wrappers with one contract each:
//! [`EventFd`] wakes a blocked loop, [`poll`] waits on a set of descriptors, [`pidfd_open`] turns a child
//! process into a descriptor that becomes readable when the child exits (so children are reaped without a
//! `SIGCHLD` handler and without `waitpid(-1)`), and [`fork`] / [`exit_child`] are the two halves of the
//! forking strategies. Keeping them here, as mio keeps `src/sys/`, means the unsafe surface is one file.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd as NixEventFd};

pub(crate) mod epoll;
pub(crate) mod signal;
pub(crate) mod spawn;

/// Wraps an `io::Error` so that it says which operation failed on what, keeping its `ErrorKind`.
///
/// Library errors must name the syscall and the address (`bind(2) on 127.0.0.1:80: Address already in
/// use`): a bare `os error 98` in a log tells an operator nothing.
pub(crate) fn context(err: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// A Linux `eventfd(2)`: a counter that is readable while non-zero.
///
/// Used as the self-pipe that lets another thread (or a forked child) wake a loop blocked in
/// [`poll`], and, in semaphore mode, as a readable "items pending" signal for the mock transports.
#[derive(Debug)]
pub(crate) struct EventFd(NixEventFd);

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd; `semaphore` makes every read take one unit.
    pub(crate) fn new(semaphore: bool) -> io::Result<Self> {
        let mut flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        if semaphore {
            flags |= EfdFlags::EFD_SEMAPHORE;
        }
        NixEventFd::from_flags(flags)
            .map(EventFd)
            .map_err(|e| context(e.into(), "eventfd(2)"))
    }

    /// Adds one to the counter, waking every poller. Never blocks.
    pub(crate) fn notify(&self) {
        // EAGAIN only if the counter would overflow u64::MAX - 1: it is then readable anyway.
        let _ = self.0.write(1);
    }

    /// Takes from the counter (all of it, or one unit in semaphore mode); returns whether anything was taken.
    pub(crate) fn take(&self) -> bool {
        self.0.read().is_ok()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// One descriptor to wait on, and what was seen on it.
pub(crate) type PollFd = libc::pollfd;

/// Makes a [`PollFd`] that waits for readability of `fd`. The caller keeps `fd` open while polling.
pub(crate) fn readable(fd: impl AsFd) -> PollFd {
    readable_raw(fd.as_fd().as_raw_fd())
}

/// [`readable`] for a raw descriptor; `-1` makes an entry `poll` ignores.
pub(crate) fn readable_raw(fd: RawFd) -> PollFd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Whether `poll` reported the descriptor ready (readable, hung up or in error: all need attention).
pub(crate) fn is_ready(p: &PollFd) -> bool {
    p.revents != 0
}

/// `poll(2)` on `fds` for at most `timeout` (`None` waits forever). Returns how many are ready.
///
/// `EINTR` is retried with the remaining time, so a signal never shortens a caller's timeout into a
/// spurious "timed out".
pub(crate) fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so a 0.5 ms wait does not become a busy 0 ms poll.
                let ms = left.as_micros().div_ceil(1000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(context(err, "poll(2)"));
        }
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when process `pid` (our child) exits.
///
/// This is how the forking strategies wait for "a child finished" together with "shutdown requested" in
/// one `poll`, without installing a process-wide `SIGCHLD` handler.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(context(
            io::Error::last_os_error(),
            format!("pidfd_open(2) for pid {pid}"),
        ));
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Which side of a `fork` we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    /// In the parent; the child's pid.
    Parent(libc::pid_t),
    /// In the child.
    Child,
}

/// `fork(2)`.
///
/// # Safety contract (documented on the forking strategies)
/// The child runs ordinary Rust code (the handler), which is only sound when the process had one thread at
/// the time of the fork. The strategies that call this say so in their docs, as Python's `ForkingMixIn` does.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: see the contract above; the child only runs the handler and then `exit_child`.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent(child.as_raw())),
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Err(e) => Err(context(e.into(), "fork(2)")),
    }
}

/// Ends a forked child at once with `code`, after flushing the standard streams.
///
/// `_exit(2)` rather than `exit(3)`: the child must not run the parent's `atexit` handlers or destructors
/// (which would, for example, unlink the parent's Unix socket path).
pub(crate) fn exit_child(code: i32) -> ! {
    use std::io::Write;
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: `_exit` is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// `waitpid(pid, WNOHANG)`: `Some(status)` once the child has exited and been reaped, `None` while it runs.
///
/// Only ever called with a pid we forked ourselves: `waitpid(-1)` would steal the exit status of children
/// that other code in the process owns.
pub(crate) fn try_reap(pid: libc::pid_t) -> io::Result<Option<ChildExit>> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => Ok(None),
        Ok(WaitStatus::Exited(_, code)) => Ok(Some(ChildExit::Code(code))),
        Ok(WaitStatus::Signaled(_, sig, _)) => Ok(Some(ChildExit::Signal(sig as i32))),
        Ok(_) => Ok(None),
        // Already reaped (ECHILD) counts as gone: the pid is no longer ours to wait for.
        Err(nix::errno::Errno::ECHILD) => Ok(Some(ChildExit::Code(0))),
        Err(e) => Err(context(e.into(), format!("waitpid(2) for pid {pid}"))),
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildExit {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

/// Milliseconds on the monotonic clock (`clock_gettime(CLOCK_MONOTONIC)`, async-signal-safe): for
/// timestamps kept in atomics and read in signal handlers.
pub(crate) fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call fills in; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1000)
        .saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

/// How long a connection a drain ended between two requests waits for its peer to close too,
/// reading and dropping what still comes (a lingering close): long enough for a request already on
/// its way to arrive and for the peer to see end of stream, short enough not to hold a drain.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether bytes are waiting to be read on stream socket `fd` (or it has reached end of stream),
/// without taking any and without blocking: `recv(2)` with `MSG_PEEK | MSG_DONTWAIT`.
pub(crate) fn has_input(fd: BorrowedFd<'_>) -> bool {
    let mut byte = [0u8; 1];
    nix::sys::socket::recv(
        fd.as_raw_fd(),
        &mut byte,
        nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    )
    .is_ok()
}

/// Whether process `pid` exists (`kill(pid, 0)`: it may belong to another user — `EPERM` — and
/// still exist).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    }
}

/// Sends `sig` to our child `pid`; a child that is already gone is not an error.
pub(crate) fn kill(pid: libc::pid_t, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// `recvfrom(2)` with `MSG_TRUNC | MSG_DONTWAIT`: receives one datagram without blocking into `buf` and
/// returns its *real* length (which exceeds `buf.len()` when the datagram was cut — for Unix datagrams
/// since Linux 3.4) and the sender's address as the kernel wrote it, with that address's length.
fn recvfrom_trunc(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, libc::sockaddr_storage, libc::socklen_t)> {
    // SAFETY: all-zero is a valid sockaddr_storage, which is large enough for every family.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` and `storage` are valid for writes of the lengths passed.
    let n = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, storage, len))
}

/// [`recvfrom_trunc`] on an internet socket: the datagram's real length and its sender.
pub(crate) fn recv_from_trunc(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<std::net::SocketAddr>)> {
    let (n, storage, _) = recvfrom_trunc(fd, buf)?;
    Ok((n, inet_from_storage(&storage)))
}

/// Converts a kernel `sockaddr_storage` holding `AF_INET` or `AF_INET6` into a std address.
fn inet_from_storage(storage: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large enough for.
            let a: &libc::sockaddr_in =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(
                SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}

/// Counters in memory shared with forked children: a `MAP_SHARED | MAP_ANONYMOUS` mapping of zeroed
/// `AtomicU64`s, so that a supervisor can read what its worker processes count (requests served, who
/// is busy) without a pipe or a message per request.
pub(crate) struct SharedCounters {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    len: usize,
}

// SAFETY: the mapping holds only atomics, which are safe to share; the pointer is never re-pointed.
unsafe impl Send for SharedCounters {}
// SAFETY: as above.
unsafe impl Sync for SharedCounters {}

impl SharedCounters {
    /// Maps `len` counters, all zero.
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        let len = len.max(1);
        let bytes = len * std::mem::size_of::<std::sync::atomic::AtomicU64>();
        // SAFETY: an anonymous mapping with no address hint; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(context(
                io::Error::last_os_error(),
                "mmap(2) of shared counters",
            ));
        }
        // Anonymous mappings are zero-filled, and an all-zero AtomicU64 is 0; mmap never returns null
        // on success.
        let ptr = std::ptr::NonNull::new(ptr.cast())
            .ok_or_else(|| io::Error::other("mmap(2) returned a null mapping"))?;
        Ok(SharedCounters { ptr, len })
    }

    /// Counter `i`, if there is one.
    pub(crate) fn get(&self, i: usize) -> Option<&std::sync::atomic::AtomicU64> {
        // SAFETY: `i < len` keeps the access inside the mapping, which lives as long as `self`.
        (i < self.len).then(|| unsafe { &*self.ptr.as_ptr().add(i) })
    }
}

impl Drop for SharedCounters {
    fn drop(&mut self) {
        let bytes = self.len * std::mem::size_of::<std::sync::atomic::AtomicU64>();
        // SAFETY: unmaps exactly the mapping `new` made; no reference into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), bytes);
        }
    }
}

impl std::fmt::Debug for SharedCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCounters")
            .field("len", &self.len)
            .finish()
    }
}

/// `prctl(PR_SET_PDEATHSIG)`: the kernel sends `sig` to this process when its parent exits, so a
/// worker never outlives its supervisor by accident.
pub(crate) fn set_parent_death_signal(sig: nix::sys::signal::Signal) -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(context(
            io::Error::last_os_error(),
            "prctl(2) PR_SET_PDEATHSIG",
        ));
    }
    Ok(())
}

/// The sender of a Unix datagram, as `recvfrom(2)` reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UnixPeer {
    /// Bound to a filesystem path.
    Path(std::path::PathBuf),
    /// Bound to a Linux abstract name (without the leading NUL).
    Abstract(Vec<u8>),
    /// Not bound: there is no address to reply to.
    Unnamed,
}

/// [`recvfrom_trunc`] on an `AF_UNIX` datagram socket: the datagram's real length and its sender.
pub(crate) fn recv_from_unix_trunc(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, UnixPeer)> {
    let (n, storage, len) = recvfrom_trunc(fd, buf)?;
    // SAFETY: the storage is larger than, and aligned at least as strictly as, a sockaddr_un, and the
    // kernel filled it in as one for this AF_UNIX socket.
    let addr = unsafe { &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
    Ok((n, unix_peer(addr, len as usize)))
}

/// Decodes the `len` bytes of `addr` the kernel filled in: no path bytes is an unbound sender, a leading
/// NUL an abstract name (every byte after it counts), otherwise a path up to its terminating NUL.
fn unix_peer(addr: &libc::sockaddr_un, len: usize) -> UnixPeer {
    use std::os::unix::ffi::OsStrExt;
    let offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let path_len = len.saturating_sub(offset).min(addr.sun_path.len());
    let bytes: Vec<u8> = addr.sun_path[..path_len].iter().map(|&c| c as u8).collect();
    match bytes.split_first() {
        None => UnixPeer::Unnamed,
        Some((0, name)) => UnixPeer::Abstract(name.to_vec()),
        Some(_) => {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            let path = std::ffi::OsStr::from_bytes(&bytes[..end]);
            UnixPeer::Path(path.into())
        }
    }
}

/// Set once the socket-activation descriptors have been claimed, so they are never owned twice.
static ACTIVATION_CLAIMED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Takes ownership of the `count` descriptors from `first` that a service manager passed to this
/// process (`LISTEN_FDS`), as [`claim_inherited_fd`] does for each — once per process: `None` when
/// they were claimed already.
pub(crate) fn claim_activation_fds(first: RawFd, count: usize) -> Option<Vec<io::Result<OwnedFd>>> {
    use std::sync::atomic::Ordering;
    if ACTIVATION_CLAIMED.swap(true, Ordering::SeqCst) {
        return None;
    }
    let claimed = (0..count)
        .map(|i| {
            let fd = RawFd::try_from(i)
                .ok()
                .and_then(|i| first.checked_add(i))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "descriptor number overflow")
                })?;
            // SAFETY: the manager passed these descriptors to this process for it to own (the
            // caller checked LISTEN_PID); `ACTIVATION_CLAIMED` ensures they are wrapped once, and
            // nothing else in the crate touches them.
            unsafe { claim_inherited_fd(fd) }
        })
        .collect();
    Some(claimed)
}

/// Takes ownership of descriptor `fd`, where an upgrading predecessor put the write end of its
/// readiness pipe for this process (see `upgrade`). Once per process: a second call fails.
///
/// # Errors
/// `AlreadyExists` on a second call; `EBADF` if `fd` is not open.
pub(crate) fn claim_upgrade_ready_fd(fd: RawFd) -> io::Result<OwnedFd> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static CLAIMED: AtomicBool = AtomicBool::new(false);
    if CLAIMED.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the upgrade readiness descriptor was claimed already",
        ));
    }
    // SAFETY: the predecessor handed this descriptor to this process for it to own (the caller
    // checked that the variables naming it come from our parent); `CLAIMED` ensures it is wrapped
    // once, and nothing else in the crate touches it.
    unsafe { claim_inherited_fd(fd) }
}

/// Takes ownership of descriptor `fd`, handed to this process by its parent (systemd's `LISTEN_FDS`, a
/// `--listen-fd` flag), after checking that it is open, and marks it close-on-exec so it is not leaked
/// into programs this process runs.
///
/// # Safety
/// Nothing else in the process may own or use `fd`: from now on the returned `OwnedFd` closes it.
pub(crate) unsafe fn claim_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not a valid descriptor number"),
        ));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; an unopened number fails with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(context(io::Error::last_os_error(), format!("fd {fd}")));
    }
    // SAFETY: as above, for F_SETFD on a descriptor we now know is open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(context(
            io::Error::last_os_error(),
            format!("fcntl(F_SETFD, FD_CLOEXEC) on fd {fd}"),
        ));
    }
    // SAFETY: the descriptor is open and, by the caller's contract, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `getsockopt(SO_PEERCRED)`: the pid, uid and gid of a connected Unix socket's peer.
pub(crate) fn peer_cred(fd: RawFd) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for writes of `len` bytes; a closed descriptor fails with EBADF.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(context(
            io::Error::last_os_error(),
            "getsockopt(SO_PEERCRED)",
        ));
    }
    Ok(cred)
}
