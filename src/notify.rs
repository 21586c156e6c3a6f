//! systemd's service notifications (`sd_notify(3)`), without libsystemd: one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! address).
//!
//! Give a server a [`Notifier`] with [`Server::notify`](crate::Server::notify) and it says what a
//! `Type=notify` (or `Type=notify-reload`) unit needs to hear:
//!
//! | when | what |
//! |---|---|
//! | serving (a `PreFork` supervisor: once its workers are up) | `READY=1`, `STATUS=serving on <addr> (<strategy>)` |
//! | a `PreFork` reload starts, and once the new workers are up | `RELOADING=1` with `MONOTONIC_USEC=`, then `READY=1` |
//! | shutdown starts | `STOPPING=1`, `STATUS=draining` |
//! | every half `WATCHDOG_USEC`, from the serving loop itself | `WATCHDOG=1`, `STATUS=` with live figures |
//!
//! The watchdog pings come from the loop that accepts connections, not from a thread of their own,
//! so a wedged loop stops pinging and systemd restarts the service (under `Sequential`, which serves
//! inline, `WatchdogSec=` must exceed the longest request). Only the process that made the notifier
//! sends: a forked child's copy stays silent.
//!
//! # Examples
//!
//! ```
//! use socketserver::notify::Notifier;
//! use socketserver::{StreamRequest, ThreadingTcpServer};
//!
//! // Under systemd, NOTIFY_SOCKET is set and the server reports in; elsewhere this is None.
//! let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
//!     .notify(Notifier::from_env()?);
//! # drop(server);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use crate::sys;

/// Where a server's notifications go (see the [module documentation](self)).
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
    /// The process that made it: the only one that sends (forked children hold copies).
    owner: u32,
}

impl Notifier {
    /// The notifier systemd asked for: `NOTIFY_SOCKET`, and the watchdog interval `WATCHDOG_USEC`
    /// when `WATCHDOG_PID` is unset or names this process. `Ok(None)` when `NOTIFY_SOCKET` is not
    /// set (not started by systemd, or not as `Type=notify`).
    ///
    /// # Errors
    /// `InvalidData` for a malformed `NOTIFY_SOCKET` or `WATCHDOG_USEC`; `socket(2)` failing.
    ///
    /// # Examples
    ///
    /// ```
    /// let notifier = socketserver::notify::Notifier::from_env()?;
    /// println!("started by systemd as Type=notify: {}", notifier.is_some());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let socket = socket
            .to_str()
            .ok_or_else(|| invalid("NOTIFY_SOCKET is not UTF-8"))?;
        let mut notifier = Notifier::new(socket)?;
        let for_us = std::env::var("WATCHDOG_PID")
            .map_or(true, |pid| pid.trim() == std::process::id().to_string());
        if let (Ok(usec), true) = (std::env::var("WATCHDOG_USEC"), for_us) {
            let usec: u64 = usec
                .trim()
                .parse()
                .map_err(|_| invalid(format!("WATCHDOG_USEC={usec:?} is not a number")))?;
            if usec > 0 {
                notifier = notifier.watchdog(Duration::from_micros(usec));
            }
        }
        Ok(Some(notifier))
    }

    /// A notifier sending to `socket`: a path, or `@name` for an abstract address (what systemd
    /// puts in `NOTIFY_SOCKET`).
    ///
    /// # Errors
    /// `InvalidData` for an empty or relative name; `socket(2)` failing.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::notify::Notifier;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("notify");
    /// let systemd = std::os::unix::net::UnixDatagram::bind(&path)?;
    /// Notifier::new(path.to_str().unwrap())?.send("STATUS=hello")?;
    /// let mut buf = [0; 64];
    /// let n = systemd.recv(&mut buf)?;
    /// assert_eq!(&buf[..n], b"STATUS=hello");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(socket: &str) -> io::Result<Notifier> {
        let addr = if let Some(name) = socket.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if socket.starts_with('/') {
            SocketAddr::from_pathname(socket)?
        } else {
            return Err(invalid(format!(
                "NOTIFY_SOCKET={socket:?}: neither an absolute path nor @name"
            )));
        };
        let socket = UnixDatagram::unbound()
            .map_err(|e| sys::context(e, "socket(2) for the notify socket"))?;
        Ok(Notifier {
            socket,
            addr,
            watchdog: None,
            owner: std::process::id(),
        })
    }

    /// Pings the watchdog every half `interval` (systemd's `WatchdogSec=`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use socketserver::notify::Notifier;
    /// let n = Notifier::new("@example")?.watchdog(Duration::from_secs(10));
    /// assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(10)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn watchdog(mut self, interval: Duration) -> Notifier {
        self.watchdog = Some(interval);
        self
    }

    /// The watchdog interval, if systemd set one.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(socketserver::notify::Notifier::new("@x")?.watchdog_interval(), None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (`KEY=VALUE` lines) as one datagram. Does nothing in a process other than the
    /// one that made the notifier (a forked child).
    ///
    /// # Errors
    /// `sendto(2)` failing, e.g. nothing listens on the socket.
    ///
    /// # Examples
    ///
    /// See [`Notifier::new`].
    pub fn send(&self, state: &str) -> io::Result<()> {
        if std::process::id() != self.owner {
            return Ok(());
        }
        self.socket
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(drop)
            .map_err(|e| sys::context(e, format_args!("sending {state:?} to NOTIFY_SOCKET")))
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// `MONOTONIC_USEC=` for `RELOADING=1`: the monotonic clock now, in microseconds.
pub(crate) fn monotonic_usec() -> u64 {
    sys::monotonic_ms().saturating_mul(1000)
}
