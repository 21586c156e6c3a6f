//! systemd socket activation: serve on sockets systemd (or `systemd-socket-activate`, or any manager
//! speaking the protocol) bound for this process.
//!
//! The protocol (`sd_listen_fds(3)`): the manager binds the sockets, starts the service with them open
//! as descriptors 3, 4, …, and sets `LISTEN_FDS` (how many), `LISTEN_PID` (the pid they are meant for:
//! a child of the service that inherited the environment must ignore them) and, optionally,
//! `LISTEN_FDNAMES` (colon-separated names, from `FileDescriptorName=`).
//!
//! [`listen_fds`] reads that, claims the descriptors (once per process) and marks them close-on-exec,
//! returning each socket checked and named as an [`InheritedSocket`]. The variables stay in the
//! environment: `LISTEN_PID` names this process, so a program it starts ignores them.
//!
//! ```no_run
//! use socketserver::{activation, Server, StreamRequest, Tcp, Threading};
//!
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
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::OnceLock;

use parking_lot::Mutex;

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

/// The environment variables of the protocol, in the order [`parse`] takes their values.
///
/// # Examples
///
/// Handing sockets to a child process in the protocol's format (the child's pid is only known once it
/// runs, so a wrapper, or a `pre_exec` hook, sets `LISTEN_PID`):
///
/// ```
/// use socketserver::activation::VARIABLES;
/// let [pid, fds, names] = VARIABLES;
/// assert_eq!((pid, fds, names), ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"));
/// let mut child = std::process::Command::new("true");
/// child.env(fds, "1").env(names, "http");
/// # let _ = (child, pid);
/// ```
pub const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

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
/// It reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, and for each announced descriptor checks
/// it is open, sets close-on-exec (so programs this process starts do not inherit the sockets) and
/// inspects it as [`InheritedSocket::from_fd`] does. The descriptors are claimed once per process: a
/// second call returns nothing, so no socket is ever owned twice. The variables are left as they are
/// (`LISTEN_PID` names this process, so a program it starts ignores them), which keeps this safe to
/// call at any time, from any thread.
///
/// # Errors
/// `InvalidData` for malformed variables (see [`parse`]); `EBADF` naming an announced descriptor that
/// is not open; `InvalidInput` for one that is not a socket a transport can serve. Every descriptor
/// claimed is closed then.
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
    let text = |var: &str| -> io::Result<Option<String>> {
        match env::var_os(var) {
            None => Ok(None),
            Some(v) => v.into_string().map(Some).map_err(|v| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{var}={v:?} is not UTF-8"),
                )
            }),
        }
    };
    let [pid, fds, names] = VARIABLES;
    let (pid, fds, names) = (text(pid)?, text(fds)?, text(names)?);
    let announced = parse(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?;
    if announced.is_empty() {
        return Ok(Vec::new());
    }
    let Some(claimed) = sys::claim_activation_fds(LISTEN_FDS_START, announced.len()) else {
        return Ok(Vec::new());
    };
    claimed
        .into_iter()
        .zip(announced.iter())
        .map(|(owned, (_, name))| {
            let owned =
                owned.map_err(|e| sys::context(e, format!("LISTEN_FDS descriptor {name:?}")))?;
            Ok(InheritedSocket::from_fd(owned)?.with_name(name))
        })
        .collect()
}

/// Tells the successor which descriptor to write its readiness byte to.
pub(crate) const READY_FD_VAR: &str = "SOCKETSERVER_UPGRADE_READY_FD";
/// Tells the successor how many of its servers must be serving before it is ready.
pub(crate) const SERVERS_VAR: &str = "SOCKETSERVER_UPGRADE_SERVERS";
/// Tells the successor which process it takes over from (its parent).
pub(crate) const FROM_VAR: &str = "SOCKETSERVER_UPGRADE_FROM";
// ---- a successor's side of an upgrade (see `crate::upgrade`) ----
//
// Here rather than in `upgrade`: taking over from a predecessor is taking inherited sockets, and
// the serving policy, which tells the predecessor once this process serves, sits below `upgrade`.

/// This process as an upgrade's successor: its readiness pipe and how many servers must be serving.
struct Successor {
    pipe: Option<OwnedFd>,
    servers_left: usize,
}

static SUCCESSOR: OnceLock<Mutex<Successor>> = OnceLock::new();

/// The process this one takes over from, if it was started by an upgrade (its parent): a PID file
/// naming it may be taken over.
pub(crate) fn predecessor() -> Option<u32> {
    let from: u32 = std::env::var(FROM_VAR).ok()?.parse().ok()?;
    (from == std::os::unix::process::parent_id()).then_some(from)
}

fn successor() -> &'static Mutex<Successor> {
    SUCCESSOR.get_or_init(|| {
        let pipe = predecessor().and_then(|_| {
            let fd: i32 = std::env::var(READY_FD_VAR).ok()?.parse().ok()?;
            sys::claim_upgrade_ready_fd(fd).ok()
        });
        let servers_left = std::env::var(SERVERS_VAR)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        Mutex::new(Successor { pipe, servers_left })
    })
}

/// A server of this process is serving: once as many are as sockets were handed over, tells the
/// predecessor (if this process is a successor) that it is ready.
pub(crate) fn server_ready() {
    let mut s = successor().lock();
    if s.pipe.is_none() {
        return;
    }
    s.servers_left = s.servers_left.saturating_sub(1);
    if s.servers_left == 0
        && let Some(pipe) = s.pipe.take()
    {
        let _ = std::io::Write::write_all(&mut std::fs::File::from(pipe), b"1");
    }
}
