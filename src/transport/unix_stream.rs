//! Unix stream sockets: [`UnixStream`], the listening transport of Python's `UnixStreamServer`, its
//! builder, the accepted connection type, and `SO_PEERCRED`.
//!
//! How the socket path is owned (never clobbering, race-free mode, unlink on close by the owner only)
//! is documented on [`UnixStream`], where users read it; the mechanics live in `unix_path`, shared with
//! the datagram transport.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener, UnixStream as StdUnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{self as nsock, SockFlag, SockType, SockaddrLike};

use super::sealed::{KindOf, Listen, Pollable};
use super::unix_path::{self, PathOptions, SocketPath, Target};
use super::{Accept, Duplex, Incoming, Stream, Transport};
use crate::addr::Addr;
use crate::sys::context;

/// A listening Unix stream socket: Python's `UnixStreamServer` transport.
///
/// A Unix socket bound to a path is a file, and the transport owns it as one:
///
/// - **Binding never clobbers.** A path where a server answers is an `AddrInUse` error saying so; a
///   *stale* socket file (left by a server that crashed: nothing answers on it) is replaced only when
///   asked with [`replace_stale(true)`](UnixStreamBuilder::replace_stale); a path that is not a socket
///   is never removed.
/// - **The mode is set race-free.** [`mode(0o600)`](UnixStreamBuilder::mode) is applied to the socket
///   before `bind(2)` creates the file, so the file is never more open than asked, not even for an
///   instant (Linux creates it with the socket inode's mode, less the umask; bits the umask removed
///   are added back with `chmod(2)` right after, which only widens towards the mode asked for).
/// - **Closing removes the path**, but only in the process that bound it (never in a forked child) and
///   only if the path still names the socket it bound (same device and inode): a path another server
///   has since taken over is left alone.
///
/// Linux abstract addresses ([`UnixStream::bind_abstract`]) have no file: nothing to clean up, no
/// permissions (any process in the network namespace can connect), printed as `@name`. Peers are
/// usually `(unnamed)` (clients rarely bind); [`StreamRequest::peer_credentials`](crate::StreamRequest::peer_credentials)
/// says who they are.
///
/// # Examples
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("app.sock");
/// let unix = socketserver::UnixStream::builder().mode(0o600).bind(&path)?;
/// assert_eq!(unix.path(), Some(path.as_path()));
/// drop(unix);
/// assert!(!path.exists()); // closing removed the socket file
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct UnixStream {
    // Declared first so the path goes before the socket closes: no instant where the path is there
    // but nothing can ever answer on it again.
    owned: Option<SocketPath>,
    listener: UnixListener,
    local: UnixSocketAddr,
}

/// Options for binding a [`UnixStream`] listener.
///
/// # Examples
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let unix = socketserver::UnixStream::builder()
///     .backlog(64)
///     .mode(0o660)
///     .replace_stale(true)
///     .bind(dir.path().join("app.sock"))?;
/// assert!(unix.owns_path());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct UnixStreamBuilder {
    backlog: i32,
    path: PathOptions,
}

impl Default for UnixStreamBuilder {
    fn default() -> Self {
        UnixStreamBuilder {
            backlog: libc::SOMAXCONN,
            path: PathOptions::default(),
        }
    }
}

impl UnixStreamBuilder {
    /// The `listen(2)` backlog (default `SOMAXCONN`).
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("app.sock");
    /// let _unix = socketserver::UnixStream::builder().backlog(16).bind(&path)?;
    /// // Queued by the kernel although nothing has accepted it yet.
    /// let _client = std::os::unix::net::UnixStream::connect(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog.min(i32::MAX as u32) as i32;
        self
    }

    /// The socket file's permission bits, e.g. `0o600` for the owner only (default: `0o777` less the
    /// umask, as `bind(2)` makes it). Applied before `bind(2)`, so the file is never wider; connecting
    /// needs write permission. Setting a mode for an abstract address is an error: there is no file.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::fs::PermissionsExt;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("private.sock");
    /// let _unix = socketserver::UnixStream::builder().mode(0o600).bind(&path)?;
    /// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn mode(mut self, mode: u32) -> Self {
        self.path.mode = Some(mode);
        self
    }

    /// Whether a *stale* socket file at the path (nothing answers on it: its server died without
    /// cleaning up) is removed to bind in its place (default off: binding fails and says so). A live
    /// socket and anything that is not a socket are never removed.
    ///
    /// A server that has bound but not yet called `listen(2)` looks stale for that instant: use this
    /// for one instance restarted by a supervisor, not for several racing for the same path.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::UnixStream;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("app.sock");
    /// drop(std::os::unix::net::UnixListener::bind(&path)?); // a crashed server's leftover file
    /// assert!(UnixStream::bind(&path).is_err()); // refused by default
    /// let unix = UnixStream::builder().replace_stale(true).bind(&path)?;
    /// assert!(unix.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn replace_stale(mut self, on: bool) -> Self {
        self.path.replace_stale = on;
        self
    }

    /// Binds to a filesystem path and listens.
    ///
    /// # Errors
    /// The failing syscall and path. A path in use is `AddrInUse` with the reason: a live server there,
    /// a stale socket (and `replace_stale` off), or not a socket. A path longer than 107 bytes is
    /// `InvalidInput`.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::UnixStream;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("app.sock");
    /// let _live = UnixStream::builder().mode(0o660).bind(&path)?;
    /// let err = UnixStream::builder().replace_stale(true).bind(&path).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse); // a live server is never replaced
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(&self, path: impl AsRef<Path>) -> io::Result<UnixStream> {
        self.bind_target(Target::Path(path.as_ref()))
    }

    /// Binds to a Linux abstract address (`@name`): no file is created, so there is nothing to clean up
    /// and no mode; it disappears with the socket.
    ///
    /// # Errors
    /// `bind(2)` failing, e.g. `AddrInUse` when the name is taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{Transport, UnixStream};
    /// let name = format!("socketserver-doc-{}", std::process::id());
    /// let unix = UnixStream::builder().backlog(64).bind_abstract(&name)?;
    /// assert_eq!(unix.path(), None); // no file to remove
    /// assert_eq!(Transport::local_addr(&unix)?.to_string(), format!("@{name}"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_abstract(&self, name: impl AsRef<[u8]>) -> io::Result<UnixStream> {
        self.bind_target(Target::Abstract(name.as_ref()))
    }

    /// Binds to a std Unix address: a path or an abstract name.
    ///
    /// # Errors
    /// As [`bind`](Self::bind) and [`bind_abstract`](Self::bind_abstract); an unnamed address is
    /// `InvalidInput`.
    ///
    /// # Examples
    ///
    /// An address taken from configuration that may name a path or an abstract socket:
    ///
    /// ```
    /// use std::os::linux::net::SocketAddrExt;
    /// use std::os::unix::net::SocketAddr;
    /// let name = format!("socketserver-doc-{}", std::process::id());
    /// let addr = SocketAddr::from_abstract_name(&name)?;
    /// let unix = socketserver::UnixStream::builder().bind_addr(&addr)?;
    /// assert_eq!(unix.local_addr().as_abstract_name(), Some(name.as_bytes()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_addr(&self, addr: &UnixSocketAddr) -> io::Result<UnixStream> {
        self.bind_target(target_of(addr)?)
    }

    fn bind_target(&self, target: Target<'_>) -> io::Result<UnixStream> {
        let (fd, owned) = unix_path::bind(
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            target,
            &self.path,
        )?;
        nsock::listen(
            &fd,
            nsock::Backlog::new(self.backlog).unwrap_or(nsock::Backlog::MAXCONN),
        )
        .map_err(|e| {
            context(
                e.into(),
                format!("listen(2) on {}", unix_path::show(target)),
            )
        })?;
        let mut unix = UnixStream::from_listener(UnixListener::from(fd))?;
        unix.owned = owned;
        Ok(unix)
    }
}

impl UnixStream {
    /// Binds to `path` with the default options (see [`UnixStreamBuilder`]).
    ///
    /// # Errors
    /// See [`UnixStreamBuilder::bind`].
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let unix = socketserver::UnixStream::bind(dir.path().join("s"))?;
    /// assert!(unix.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        UnixStreamBuilder::default().bind(path)
    }

    /// Binds to the Linux abstract address `@name`.
    ///
    /// # Errors
    /// See [`UnixStreamBuilder::bind_abstract`].
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{Transport, UnixStream};
    /// let name = format!("socketserver-doc-{}", std::process::id());
    /// let unix = UnixStream::bind_abstract(&name)?;
    /// assert_eq!(Transport::local_addr(&unix)?.to_string(), format!("@{name}"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_abstract(name: impl AsRef<[u8]>) -> io::Result<UnixStream> {
        UnixStreamBuilder::default().bind_abstract(name)
    }

    /// Options to set before binding.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let unix = socketserver::UnixStream::builder().mode(0o600).bind(dir.path().join("s"))?;
    /// assert!(unix.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> UnixStreamBuilder {
        UnixStreamBuilder::default()
    }

    /// Serves on a listener that already exists (bound by the caller, or inherited). Its path, if any,
    /// is **not** owned: it was not created here, so closing leaves it in place. The listener is
    /// switched to non-blocking mode.
    ///
    /// # Errors
    /// `getsockname(2)` or `fcntl(2)` failing.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let listener = std::os::unix::net::UnixListener::bind(dir.path().join("s"))?;
    /// let unix = socketserver::UnixStream::from_listener(listener)?;
    /// assert!(unix.path().is_some());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_listener(listener: UnixListener) -> io::Result<UnixStream> {
        let local = listener
            .local_addr()
            .map_err(|e| context(e, "getsockname(2) on the Unix listener"))?;
        listener.set_nonblocking(true).map_err(|e| {
            context(
                e,
                format!(
                    "making the listener on {} non-blocking",
                    Addr::Unix(local.clone())
                ),
            )
        })?;
        Ok(UnixStream {
            owned: None,
            listener,
            local,
        })
    }

    /// The bound address: a path, or an abstract name.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let unix = socketserver::UnixStream::bind(dir.path().join("s"))?;
    /// assert!(unix.local_addr().as_pathname().is_some());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> &UnixSocketAddr {
        &self.local
    }

    /// The socket's path, for a path-bound socket (`None` for an abstract one).
    ///
    /// # Examples
    ///
    /// ```
    /// let name = format!("socketserver-doc-{}", std::process::id());
    /// let unix = socketserver::UnixStream::bind_abstract(name)?;
    /// assert_eq!(unix.path(), None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn path(&self) -> Option<&Path> {
        self.local.as_pathname()
    }

    /// Whether closing this transport removes its path: true when it bound the path itself (not when
    /// it was built from an existing or inherited listener, nor for an abstract address).
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// assert!(socketserver::UnixStream::bind(dir.path().join("s"))?.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn owns_path(&self) -> bool {
        self.owned.is_some()
    }
}

impl Transport for UnixStream {
    fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Unix(self.local.clone()))
    }
}

impl Listen for UnixStream {
    type Kind = Stream;

    fn accept(&mut self) -> io::Result<Accept<<Stream as KindOf>::Request>> {
        // std's accept is accept4(SOCK_CLOEXEC); the accepted socket is blocking, as handlers expect.
        match self.listener.accept() {
            Ok((stream, peer)) => Ok(Accept::Ready(Incoming::new(
                Arc::new(UnixConn(stream)),
                Addr::Unix(peer),
            ))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Accept::WouldBlock),
            Err(e) => Err(context(
                e,
                format!("accept(2) on {}", Addr::Unix(self.local.clone())),
            )),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Pollable for UnixStream {}

/// An accepted Unix stream connection.
#[derive(Debug)]
struct UnixConn(StdUnixStream);

impl Duplex for UnixConn {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.0).read(buf)
    }
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.0).write(buf)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.shutdown(how)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.0.set_read_timeout(timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.0.set_write_timeout(timeout)
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Who is on the other end of a Unix stream connection (`SO_PEERCRED`): the process id, user id and
/// group id of the peer as they were when it called `connect(2)`.
///
/// # Examples
///
/// ```
/// use std::os::unix::net::UnixStream;
/// let (a, _b) = UnixStream::pair()?;
/// let cred = socketserver::transport::peer_credentials(&a)?;
/// assert_eq!(cred.pid, std::process::id() as i32);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// The peer's process id.
    pub pid: i32,
    /// The peer's user id.
    pub uid: u32,
    /// The peer's group id.
    pub gid: u32,
}

/// Reads the credentials of a connected Unix socket's peer (`getsockopt(SO_PEERCRED)`), e.g. to let
/// only one user through in a handler or in [`verify_request`](crate::Server::verify_request)'s stead.
///
/// # Errors
/// `getsockopt(2)` failing; `InvalidInput` when the socket is not a Unix socket (TCP sockets report
/// meaningless credentials, so they are refused here rather than trusted).
///
/// # Examples
///
/// ```
/// use std::os::unix::net::UnixStream;
/// let (ours, _theirs) = UnixStream::pair()?;
/// let cred = socketserver::transport::peer_credentials(&ours)?;
/// assert_eq!(cred.uid, nix::unistd::getuid().as_raw()); // the same user is on the other end
///
/// let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
/// assert!(socketserver::transport::peer_credentials(&tcp).is_err()); // not a Unix socket
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn peer_credentials(socket: &impl AsFd) -> io::Result<PeerCredentials> {
    let fd = socket.as_fd().as_raw_fd();
    let local: nsock::SockaddrStorage =
        nsock::getsockname(fd).map_err(|e| context(e.into(), "getsockname(2) for SO_PEERCRED"))?;
    if local.family() != Some(nsock::AddressFamily::Unix) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "SO_PEERCRED: not a Unix socket",
        ));
    }
    let cred = crate::sys::peer_cred(fd)?;
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// The target a std Unix address names.
pub(crate) fn target_of(addr: &UnixSocketAddr) -> io::Result<Target<'_>> {
    if let Some(path) = addr.as_pathname() {
        Ok(Target::Path(path))
    } else if let Some(name) = addr.as_abstract_name() {
        Ok(Target::Abstract(name))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot bind to an unnamed Unix address",
        ))
    }
}
