//! systemd socket activation: serve on sockets systemd (or `systemd-socket-activate`, or any manager
//! speaking the protocol) bound for this process.
//!
//! The protocol (`sd_listen_fds(3)`): the manager binds the sockets, starts the service with them open
//! as descriptors 3, 4, …, and sets `LISTEN_FDS` (how many), `LISTEN_PID` (the pid they are meant for:
//! a child of the service that inherited the environment must ignore them) and, optionally,
//! `LISTEN_FDNAMES` (colon-separated names, from `FileDescriptorName=`).
//!
//! [`listen_fds`] reads that, claims the descriptors, marks them close-on-exec and removes the three
//! variables, returning each socket checked and named as an [`InheritedSocket`]:
//!
//! ```no_run
//! use socketserver::{activation, Server, StreamRequest, Tcp, Threading};
//!
//! // First thing in main, before any thread starts (see `listen_fds`).
//! let mut sockets = activation::listen_fds()?;
//! let transport = match sockets.pop() {
//!     Some(socket) => socket.into_tcp()?, // started by systemd
//!     None => Tcp::bind("127.0.0.1:8080")?, // started by hand
//! };
//! let mut server = Server::new(Threading::new(), transport, |_r: &mut StreamRequest| Ok(()))?;
//! server.serve_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The parsing is the pure function [`parse`], which takes the variables' values as arguments, so it
//! can be tested (and reused) without touching the process environment.

use std::env;
use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys;
use crate::transport::InheritedSocket;

/// The first descriptor the protocol passes (after stdin, stdout and stderr): `SD_LISTEN_FDS_START`.
///
/// # Examples
///
/// ```
/// use socketserver::activation::{parse, LISTEN_FDS_START};
/// assert_eq!(LISTEN_FDS_START, 3);
/// let announced = parse(Some("7"), Some("2"), None, 7)?;
/// let fds: Vec<i32> = announced.iter().map(|(fd, _)| fd).collect();
/// assert_eq!(fds, [LISTEN_FDS_START, LISTEN_FDS_START + 1]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub const LISTEN_FDS_START: RawFd = 3;

/// The name a socket gets when `LISTEN_FDNAMES` is not set, as in systemd.
///
/// # Examples
///
/// ```
/// use socketserver::activation::{parse, UNKNOWN_NAME};
/// let announced = parse(Some("7"), Some("1"), None, 7)?; // no LISTEN_FDNAMES
/// assert!(announced.iter().all(|(_, name)| name == UNKNOWN_NAME));
/// # Ok::<(), std::io::Error>(())
/// ```
pub const UNKNOWN_NAME: &str = "unknown";

/// The environment variables of the protocol, removed by [`listen_fds`].
///
/// # Examples
///
/// The variables are removed even when they announce sockets for another process, so that programs
/// this one starts do not take them for theirs:
///
/// ```
/// use socketserver::activation::{listen_fds, VARIABLES};
/// std::env::set_var("LISTEN_PID", "1"); // meant for pid 1, not for us
/// std::env::set_var("LISTEN_FDS", "1");
/// assert!(listen_fds()?.is_empty());
/// assert!(VARIABLES.iter().all(|var| std::env::var_os(var).is_none()));
/// # Ok::<(), std::io::Error>(())
/// ```
pub const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Set once the descriptors have been claimed, so they are never owned twice.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// What the protocol's variables announce: descriptors `first .. first + count`, and their names.
///
/// # Examples
///
/// ```
/// use socketserver::activation::parse;
/// let announced = parse(Some("42"), Some("2"), Some("http:metrics"), 42)?;
/// let fds: Vec<(i32, &str)> = announced.iter().collect();
/// assert_eq!(fds, [(3, "http"), (4, "metrics")]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Announced {
    count: usize,
    names: Option<Vec<String>>,
}

impl Announced {
    /// How many descriptors were passed.
    ///
    /// # Examples
    ///
    /// ```
    /// let announced = socketserver::activation::parse(Some("7"), Some("3"), None, 7)?;
    /// assert_eq!(announced.len(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing was passed (no activation, or one meant for another process).
    ///
    /// # Examples
    ///
    /// ```
    /// let announced = socketserver::activation::parse(Some("1"), Some("3"), None, 7)?;
    /// assert!(announced.is_empty()); // LISTEN_PID names another process
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each descriptor with its name (`"unknown"` without `LISTEN_FDNAMES`), in order from fd 3.
    ///
    /// # Examples
    ///
    /// ```
    /// let announced = socketserver::activation::parse(Some("7"), Some("1"), None, 7)?;
    /// assert_eq!(announced.iter().collect::<Vec<_>>(), [(3, "unknown")]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (RawFd, &str)> + '_ {
        (0..self.count).map(move |i| {
            let name = self.names.as_ref().and_then(|n| n.get(i));
            // `parse` caps count so that the descriptor number fits a RawFd.
            let fd = LISTEN_FDS_START + i as RawFd;
            (fd, name.map_or(UNKNOWN_NAME, String::as_str))
        })
    }
}

/// Interprets the protocol's three variables for the process `our_pid`, as `sd_listen_fds(3)` does:
///
/// - no `LISTEN_PID`, or one that is not `our_pid`: nothing was passed to *this* process (empty);
/// - `LISTEN_FDS` is how many descriptors, from [`LISTEN_FDS_START`];
/// - `LISTEN_FDNAMES`, when set, has exactly that many colon-separated names.
///
/// # Errors
/// `InvalidData` naming the variable when a value is not a number, the count would run past the
/// largest descriptor number, or the names do not match the count.
///
/// # Examples
///
/// ```
/// use socketserver::activation::parse;
/// assert!(parse(None, None, None, 7)?.is_empty()); // not socket-activated
/// assert!(parse(Some("7"), Some("two"), None, 7).is_err());
/// assert!(parse(Some("7"), Some("2"), Some("only-one"), 7).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn parse(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    our_pid: u32,
) -> io::Result<Announced> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let Some(pid) = listen_pid else {
        return Ok(Announced::default());
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|e| invalid(format!("LISTEN_PID={pid:?} is not a process id: {e}")))?;
    if pid != our_pid {
        return Ok(Announced::default());
    }
    let Some(fds) = listen_fds else {
        return Ok(Announced::default());
    };
    let count: usize = fds
        .trim()
        .parse()
        .map_err(|e| invalid(format!("LISTEN_FDS={fds:?} is not a count: {e}")))?;
    if count > (RawFd::MAX - LISTEN_FDS_START) as usize {
        return Err(invalid(format!(
            "LISTEN_FDS={count} runs past the largest descriptor number"
        )));
    }
    let names = match listen_fdnames {
        None => None,
        Some(names) => {
            let names: Vec<String> = if count == 0 && names.is_empty() {
                Vec::new()
            } else {
                names.split(':').map(str::to_owned).collect()
            };
            if names.len() != count {
                return Err(invalid(format!(
                    "LISTEN_FDNAMES={:?} has {} name(s) for LISTEN_FDS={count} descriptor(s)",
                    listen_fdnames.unwrap_or_default(),
                    names.len()
                )));
            }
            Some(names)
        }
    };
    Ok(Announced { count, names })
}

/// The sockets this process was socket-activated with, named and checked; empty when it was not
/// (or when they were already taken by an earlier call).
///
/// It reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, **removes them from the environment**
/// (so programs this process starts do not believe the sockets are theirs), and for each announced
/// descriptor checks it is open, sets close-on-exec (so those programs do not inherit the sockets
/// either) and inspects it as [`InheritedSocket::from_fd`] does.
///
/// # Call it first
/// Removing environment variables is not thread-safe: another thread reading the environment at the
/// same moment (`getenv` in C code, `std::env::var`) may read freed memory — which is why
/// `std::env::remove_var` is `unsafe` from edition 2024. Call `listen_fds` at the start of `main`,
/// before any thread is started.
///
/// # Errors
/// `InvalidData` for malformed variables (see [`parse`]); `EBADF` naming an announced descriptor that
/// is not open; `InvalidInput` for one that is not a socket a transport can serve. The variables are
/// removed even then, and every descriptor already claimed is closed.
///
/// # Examples
///
/// ```
/// // Not started by systemd: nothing to serve on, and that is not an error.
/// let sockets = socketserver::activation::listen_fds()?;
/// assert!(sockets.is_empty());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn listen_fds() -> io::Result<Vec<InheritedSocket>> {
    let vars: Vec<Option<OsString>> = VARIABLES.iter().map(env::var_os).collect();
    for var in VARIABLES {
        // See "Call it first" above for why this is sound only before threads start.
        env::remove_var(var);
    }
    let text = |i: usize| -> io::Result<Option<String>> {
        match vars.get(i).cloned().flatten() {
            None => Ok(None),
            Some(v) => v.into_string().map(Some).map_err(|v| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}={v:?} is not UTF-8", VARIABLES[i]),
                )
            }),
        }
    };
    let (pid, fds, names) = (text(0)?, text(1)?, text(2)?);
    let announced = parse(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?;
    if announced.is_empty() || CLAIMED.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    announced
        .iter()
        .map(|(fd, name)| {
            // SAFETY: the manager passed these descriptors to this process for it to own; `CLAIMED`
            // ensures they are wrapped once, and nothing else in the crate touches them.
            let owned = unsafe { sys::claim_inherited_fd(fd) }
                .map_err(|e| sys::context(e, format!("LISTEN_FDS descriptor {name:?}")))?;
            Ok(InheritedSocket::from_fd(owned)?.with_name(name))
        })
        .collect()
}
