//! What the two echo servers share: arguments, the listening socket, the `listening on` line and
//! the signalfd that ends them. Everything here runs once at start-up, so it is the same for both;
//! only the per-request I/O differs between `epoll-echo` and `uring-echo`.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// How many bytes one receive takes from one connection at most (the crate's Reactor: 64 KiB).
pub const READ_CHUNK: usize = 64 * 1024;

/// A connection whose peer does not take its echo stops being read once this much is queued
/// (back-pressure; reading resumes once the queue is sent).
pub const MAX_QUEUED: usize = 1024 * 1024;

/// The parsed command line: `--addr HOST:PORT` plus the named numeric options a server accepts.
pub struct Args {
    pub addr: String,
    /// `(name, value)` for each `--name VALUE` the server declared, defaults filled in.
    pub numbers: Vec<(&'static str, u64)>,
}

impl Args {
    /// The value of the declared numeric option `name`.
    pub fn number(&self, name: &str) -> u64 {
        self.numbers
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }
}

/// Parses `--addr HOST:PORT` and the declared `--NAME VALUE` numeric options (with defaults).
/// `Err` carries the message for the usage error (exit status 2).
pub fn parse_args(numbers: &[(&'static str, u64)]) -> Result<Args, String> {
    let mut addr = None;
    let mut values: Vec<(&'static str, u64)> = numbers.to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err("help requested".into());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--addr" {
            addr = Some(value);
            continue;
        }
        let slot = values
            .iter_mut()
            .find(|(name, _)| flag.strip_prefix("--") == Some(name))
            .ok_or_else(|| format!("unknown argument {flag:?}"))?;
        slot.1 = value
            .parse()
            .map_err(|e| format!("{flag} {value:?}: {e}"))?;
    }
    Ok(Args {
        addr: addr.ok_or("--addr is required")?,
        numbers: values,
    })
}

/// Binds a non-blocking listener and prints `listening on ADDR` as the first line of stdout.
pub fn listen(addr: &str) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local: SocketAddr = listener.local_addr()?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {local}")?;
    out.flush()?;
    Ok(listener)
}

/// Blocks SIGINT and SIGTERM and returns a non-blocking signalfd that becomes readable when one
/// arrives: the event loop watches it like any descriptor and returns (exit status 0).
pub fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: plain signal-set manipulation on a zeroed local sigset_t; signalfd gets a valid set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Accepts one pending connection as a non-blocking, close-on-exec descriptor (`None`: none
/// pending).
pub fn accept(listener: &TcpListener) -> io::Result<Option<OwnedFd>> {
    // SAFETY: accept4 on our listener; null address pointers are allowed.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd >= 0 {
        // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock => Ok(None),
        // A connection that died in the backlog, or an interrupted call: try the next one.
        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// Runs `serve` and turns its outcome into the process's exit status, with the usage text for
/// argument errors.
pub fn main_with(
    name: &str,
    usage: &str,
    numbers: &[(&'static str, u64)],
    serve: impl FnOnce(&Args) -> io::Result<()>,
) -> std::process::ExitCode {
    let args = match parse_args(numbers) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{name}: {msg}\nusage: {usage}");
            return std::process::ExitCode::from(2);
        }
    };
    match serve(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
