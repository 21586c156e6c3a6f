//! Hot binary upgrade, as Perl's `Net::Server` (HUP), gunicorn (USR2) and Go's `tableflip` do it:
//! the running process starts its successor — by default its own program, as now on disk, with its
//! own arguments — hands it its listening sockets, and waits for it to say it is ready. Then it
//! stops accepting and drains, as on shutdown, and the successor serves on. No connection is
//! refused meanwhile: both processes accept from the same sockets until the old one closes its
//! copies.
//!
//! - The sockets travel in systemd's socket-activation format (`LISTEN_FDS`, `LISTEN_PID`,
//!   `LISTEN_FDNAMES`, descriptors from 3), so the successor takes them with
//!   [`activation::listen_fds`](crate::activation::listen_fds), by name — the same code that serves
//!   sockets systemd passes.
//! - Readiness: a pipe the successor writes one byte to once as many of its servers as sockets were
//!   passed are serving (a `PreFork` server: once its workers are up). Any server of this crate does
//!   this by itself; nothing to call.
//! - The successor may take over the [PID file](crate::Server::pid_file), which it rewrites once
//!   ready; under systemd the old process sends `MAINPID=` with the successor's pid (the unit needs
//!   `NotifyAccess=all`).
//! - If the successor cannot be started, exits, or is not ready within the deadline (60 s by default),
//!   it is ended (if it still runs) and the old process serves on, reporting why.
//!
//! ```no_run
//! use socketserver::upgrade::Upgrade;
//! use socketserver::{signals, StreamRequest, ThreadingTcpServer};
//!
//! let mut server = ThreadingTcpServer::bind("127.0.0.1:7007", |_r: &mut StreamRequest| Ok(()))?;
//! signals::shutdown_on_signals(&server.shutdown_handle())?;
//! // SIGUSR2 starts the program anew (a new build, after a deploy) and hands it the socket.
//! signals::upgrade_on_sigusr2(Upgrade::new()?.listener("echo", &server)?)?;
//! server.serve_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::activation::{FROM_VAR, READY_FD_VAR, SERVERS_VAR};
use crate::notify::Notifier;
use crate::shutdown::ShutdownHandle;
use crate::sys::{self, ChildExit};

/// A successor of this process is ready: it owns the PID file now (see [`handed_over`]).
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Whether this process handed over to a successor. Its PID file is the successor's from then on,
/// even before the successor has rewritten it: removing the file at exit because it still names
/// this process would race with that rewrite and could remove the successor's file.
pub(crate) fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::SeqCst)
}

/// The most sockets one upgrade passes.
const MAX_SOCKETS: usize = 32;

/// How long an upgrade waits for the successor to be ready, unless told otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// An upgrade: what to start, which sockets to hand over, which servers to stop once the successor
/// is ready (see the [module documentation](self)).
#[derive(Debug)]
pub struct Upgrade {
    program: PathBuf,
    args: Vec<OsString>,
    sockets: Vec<(String, OwnedFd)>,
    servers: Vec<ShutdownHandle>,
    ready_timeout: Duration,
}

/// Why an upgrade did not happen; the old process serves on.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The successor could not be started.
    Spawn(io::Error),
    /// It exited before it was ready.
    Exited {
        /// Its pid.
        pid: u32,
        /// Its exit status, or the signal that ended it, as text.
        status: String,
    },
    /// It was not ready within the deadline, and was ended.
    NotReady {
        /// Its pid.
        pid: u32,
        /// The deadline it missed.
        timeout: Duration,
    },
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeError::Spawn(e) => write!(f, "upgrade: starting the successor failed: {e}"),
            UpgradeError::Exited { pid, status } => {
                write!(f, "upgrade: successor {pid} {status} before it was ready")
            }
            UpgradeError::NotReady { pid, timeout } => write!(
                f,
                "upgrade: successor {pid} was not ready within {timeout:?}; ended it"
            ),
        }
    }
}

impl std::error::Error for UpgradeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpgradeError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

impl Upgrade {
    /// An upgrade to this program — its path as now on disk, so a new build deployed over it is what
    /// starts — with this process's arguments.
    ///
    /// # Errors
    /// The program's path cannot be found (`/proc/self/exe`).
    ///
    /// # Examples
    ///
    /// ```
    /// let upgrade = socketserver::upgrade::Upgrade::new()?;
    /// # drop(upgrade);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<Upgrade> {
        let exe = std::env::current_exe()?;
        // A binary replaced on disk shows as "<path> (deleted)": the path is what to start.
        let program = exe
            .to_str()
            .and_then(|p| p.strip_suffix(" (deleted)"))
            .map_or(exe.clone(), PathBuf::from);
        Ok(Upgrade {
            program,
            args: std::env::args_os().skip(1).collect(),
            sockets: Vec::new(),
            servers: Vec::new(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
        })
    }

    /// Starts `program` with `args` instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::upgrade::Upgrade;
    /// let upgrade = Upgrade::new()?.program("/usr/local/bin/echo-server", ["--addr", "0.0.0.0:7"]);
    /// # drop(upgrade);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn program(
        mut self,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Upgrade {
        self.program = program.into();
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Waits up to `timeout` for the successor to be ready (default 60 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let upgrade = socketserver::upgrade::Upgrade::new()?.ready_timeout(Duration::from_secs(10));
    /// # drop(upgrade);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Upgrade {
        self.ready_timeout = timeout;
        self
    }

    /// Hands `server`'s listening socket to the successor as `name` (its `LISTEN_FDNAMES` entry), and
    /// shuts `server` down once the successor is ready.
    ///
    /// # Errors
    /// `InvalidInput` for a name that is empty, holds `:` or is not printable ASCII, for a server
    /// already closed, or past 32 sockets; `fcntl(2)` failing to duplicate the socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::upgrade::Upgrade;
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// let upgrade = Upgrade::new()?.listener("echo", &server)?;
    /// assert!(Upgrade::new()?.listener("a:b", &server).is_err());
    /// # drop(upgrade);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn listener<C, T, H>(
        mut self,
        name: &str,
        server: &crate::Server<C, T, H>,
    ) -> io::Result<Upgrade>
    where
        C: crate::Concurrency<T, H>,
        T: crate::Transport,
    {
        let printable = |c: char| c.is_ascii_graphic() && c != ':';
        if name.is_empty() || !name.chars().all(printable) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket name {name:?}: printable ASCII without ':' expected"),
            ));
        }
        if self.sockets.len() >= MAX_SOCKETS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("an upgrade hands over at most {MAX_SOCKETS} sockets"),
            ));
        }
        let fd = server.listener_fd().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the server's listener is closed",
            )
        })?;
        let copy = fd
            .try_clone_to_owned()
            .map_err(|e| sys::context(e, "duplicating the listening socket"))?;
        self.sockets.push((name.to_string(), copy));
        self.servers.push(server.shutdown_handle());
        Ok(self)
    }

    /// Starts the successor and waits until it is ready; then shuts down every server given to
    /// [`listener`](Self::listener) (each drains, and its `serve_forever` returns) and returns the
    /// successor's pid. Otherwise the servers serve on.
    ///
    /// # Errors
    /// [`UpgradeError`]: the successor could not start, exited, or was not ready in time.
    ///
    /// # Examples
    ///
    /// A "new build" that exits at once: the upgrade fails, says why, and the server serves on.
    ///
    /// ```
    /// use socketserver::upgrade::{Upgrade, UpgradeError};
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    ///
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// let upgrade = Upgrade::new()?
    ///     .program("/bin/false", Vec::<String>::new())
    ///     .listener("echo", &server)?;
    /// let failed = upgrade.run().unwrap_err();
    /// assert!(matches!(failed, UpgradeError::Exited { .. }), "{failed}");
    /// assert!(!server.shutdown_handle().is_shutdown()); // still serving
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn run(&self) -> Result<u32, UpgradeError> {
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| UpgradeError::Spawn(sys::context(e.into(), "pipe2(2)")))?;
        let names: Vec<&str> = self.sockets.iter().map(|(n, _)| n.as_str()).collect();
        let ready_fd = 3 + self.sockets.len();
        let ours = [
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
            READY_FD_VAR,
            SERVERS_VAR,
            FROM_VAR,
        ];
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !ours.iter().any(|o| k == o))
            .collect();
        env.push(("LISTEN_FDS".into(), self.sockets.len().to_string().into()));
        env.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
        env.push((READY_FD_VAR.into(), ready_fd.to_string().into()));
        env.push((
            SERVERS_VAR.into(),
            self.sockets.len().max(1).to_string().into(),
        ));
        env.push((FROM_VAR.into(), std::process::id().to_string().into()));
        let mut exec = sys::spawn::Exec::new(
            self.program.as_os_str(),
            self.args.iter().map(OsString::as_os_str),
            env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())),
        )
        .map_err(UpgradeError::Spawn)?;
        let mut fds: Vec<_> = self.sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        fds.push(ready_w.as_raw_fd());
        let pid = sys::spawn::spawn(&mut exec, &fds).map_err(UpgradeError::Spawn)?;
        drop(ready_w); // the successor holds the only write end: EOF means it exited
        log::info!(
            "upgrade: started successor {pid} ({}), waiting up to {:?} for it to be ready",
            self.program.display(),
            self.ready_timeout
        );
        let upid = pid.unsigned_abs();
        match wait_ready(&ready_r, Instant::now() + self.ready_timeout) {
            Ready::Yes => {}
            Ready::Closed => {
                return Err(UpgradeError::Exited {
                    pid: upid,
                    status: reap_blocking(pid),
                });
            }
            Ready::TimedOut => {
                end(pid);
                return Err(UpgradeError::NotReady {
                    pid: upid,
                    timeout: self.ready_timeout,
                });
            }
        }
        log::info!("upgrade: successor {pid} is ready; draining this process");
        HANDED_OVER.store(true, Ordering::SeqCst);
        if let Ok(Some(notifier)) = Notifier::from_env()
            && let Err(e) = notifier.send(&format!("MAINPID={pid}\nSTATUS=handed over to {pid}"))
        {
            log::warn!("{e}");
        }
        for server in &self.servers {
            server.shutdown();
        }
        Ok(upid)
    }
}

enum Ready {
    Yes,
    Closed,
    TimedOut,
}

/// Waits for the readiness byte on `pipe` until `deadline`.
fn wait_ready(pipe: &OwnedFd, deadline: Instant) -> Ready {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ready::TimedOut;
        }
        let mut fds = [sys::readable(pipe.as_fd())];
        if sys::poll(&mut fds, Some(deadline - now)).is_err() {
            continue; // EINTR: poll again
        }
        if !sys::is_ready(&fds[0]) {
            continue;
        }
        let mut byte = [0u8; 1];
        return match nix::unistd::read(pipe, &mut byte) {
            Ok(1) => Ready::Yes,
            Err(nix::errno::Errno::EINTR) => continue,
            _ => Ready::Closed,
        };
    }
}

/// Waits for successor `pid` to exit and says how it did.
fn reap_blocking(pid: libc::pid_t) -> String {
    for _ in 0..100 {
        match sys::try_reap(pid) {
            Ok(Some(ChildExit::Code(code))) => return format!("exited with status {code}"),
            Ok(Some(ChildExit::Signal(sig))) => return format!("was killed by signal {sig}"),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return format!("could not be waited for ({e})"),
        }
    }
    end(pid);
    "closed its readiness pipe".to_string()
}

/// Ends successor `pid`: `SIGTERM`, two seconds, `SIGKILL`; reaps it.
fn end(pid: libc::pid_t) {
    sys::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = sys::try_reap(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sys::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}
