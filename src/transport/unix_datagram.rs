//! Unix datagram sockets: [`UnixDatagram`], the transport of Python's `UnixDatagramServer`, and the
//! socket its replies are sent from.
//!
//! Path ownership, replies to unbound senders, the reply timeout and truncation are documented on
//! [`UnixDatagram`]; the path mechanics live in `unix_path`, shared with the stream transport.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixDatagram as StdUnixDatagram};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{SockFlag, SockType};

use super::sealed::{KindOf, Listen};
use super::unix_path::{self, PathOptions, SocketPath, Target};
use super::unix_stream::target_of;
use super::{Accept, Datagram, DatagramSocket, Packet, Transport};
use crate::addr::Addr;
use crate::sys::{self, UnixPeer, context};

/// The default receive buffer, as for UDP: larger datagrams are reported, not served.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 65_535;

/// A bound Unix datagram socket: Python's `UnixDatagramServer` transport.
///
/// The socket path is owned as for [`UnixStream`](super::UnixStream): binding never clobbers a live
/// socket or a file that is not a socket, a stale socket is replaced only with
/// [`replace_stale(true)`](UnixDatagramBuilder::replace_stale), the [`mode`](UnixDatagramBuilder::mode)
/// is set before the file exists, and the path is removed on close by the process that bound it.
///
/// **Replies** go to the address the datagram came from: the client's *bound* path or abstract name.
/// A client sending from an unbound socket has no address; its datagram is still served (one-way
/// protocols such as syslog need no reply), but a reply the handler writes is not sent: the error hook
/// receives a [`RequestError::Reply`](crate::RequestError::Reply) saying the peer is unbound.
///
/// Unlike UDP, a Unix datagram sender *waits* while the receiver's queue is full, so a reply waits at
/// most the [`reply_timeout`](UnixDatagramBuilder::reply_timeout) (default 1 s) — one client that never
/// reads cannot stall the server. Datagrams larger than the receive buffer are reported as
/// [`RequestError::DatagramTruncated`](crate::RequestError::DatagramTruncated)(crate::RequestError::DatagramTruncated), never served cut short.
///
/// # Examples
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let unix = socketserver::UnixDatagram::builder().mode(0o600).bind(dir.path().join("d.sock"))?;
/// assert!(unix.path().is_some());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct UnixDatagram {
    // First, so the path goes before the socket closes.
    owned: Option<SocketPath>,
    socket: Arc<UnixReply>,
    local: UnixSocketAddr,
    buf: Vec<u8>,
    /// The address handed to handlers for unbound senders (std cannot build one from nothing).
    unnamed: UnixSocketAddr,
}

/// Options for binding a [`UnixDatagram`] socket.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let dir = tempfile::tempdir()?;
/// let unix = socketserver::UnixDatagram::builder()
///     .max_packet_size(8192)
///     .reply_timeout(Duration::from_millis(200))
///     .bind(dir.path().join("d.sock"))?;
/// assert!(unix.owns_path());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct UnixDatagramBuilder {
    max_packet_size: usize,
    reply_timeout: Option<Duration>,
    path: PathOptions,
}

impl Default for UnixDatagramBuilder {
    fn default() -> Self {
        UnixDatagramBuilder {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            reply_timeout: Some(UnixDatagram::DEFAULT_REPLY_TIMEOUT),
            path: PathOptions::default(),
        }
    }
}

impl UnixDatagramBuilder {
    /// The receive buffer size: the largest datagram served (default 65,535). Clamped to at least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let _unix = socketserver::UnixDatagram::builder().max_packet_size(512).bind(dir.path().join("log.sock"))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes.max(1);
        self
    }

    /// How long a reply may wait for room in a client's full receive queue before it is dropped and
    /// reported (`SO_SNDTIMEO`; default 1 s; `None` waits forever).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir()?;
    /// let _unix = socketserver::UnixDatagram::builder()
    ///     .reply_timeout(Duration::from_millis(100)) // a stuck client costs the server at most this
    ///     .bind(dir.path().join("d.sock"))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reply_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.reply_timeout = timeout.into();
        self
    }

    /// The socket file's permission bits, applied before the file exists; see
    /// [`UnixStreamBuilder::mode`](super::UnixStreamBuilder::mode). Sending needs write permission.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::fs::PermissionsExt;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("d.sock");
    /// let _unix = socketserver::UnixDatagram::builder().mode(0o620).bind(&path)?;
    /// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o620);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn mode(mut self, mode: u32) -> Self {
        self.path.mode = Some(mode);
        self
    }

    /// Whether a stale socket file at the path may be replaced; see
    /// [`UnixStreamBuilder::replace_stale`](super::UnixStreamBuilder::replace_stale).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::UnixDatagram;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("d.sock");
    /// drop(std::os::unix::net::UnixDatagram::bind(&path)?); // left behind by a crash
    /// assert!(UnixDatagram::bind(&path).is_err());
    /// assert!(UnixDatagram::builder().replace_stale(true).bind(&path)?.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn replace_stale(mut self, on: bool) -> Self {
        self.path.replace_stale = on;
        self
    }

    /// Binds to a filesystem path.
    ///
    /// # Errors
    /// As [`UnixStreamBuilder::bind`](super::UnixStreamBuilder::bind).
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("d.sock");
    /// let unix = socketserver::UnixDatagram::builder().mode(0o600).bind(&path)?;
    /// assert_eq!(unix.path(), Some(path.as_path()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(&self, path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        self.bind_target(Target::Path(path.as_ref()))
    }

    /// Binds to the Linux abstract address `@name`.
    ///
    /// # Errors
    /// `bind(2)` failing, e.g. `AddrInUse` when the name is taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::UnixDatagram;
    /// let name = format!("socketserver-doc-{}", std::process::id());
    /// let unix = UnixDatagram::builder().max_packet_size(1024).bind_abstract(&name)?;
    /// assert_eq!(unix.path(), None);
    /// let err = UnixDatagram::builder().bind_abstract(&name).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_abstract(&self, name: impl AsRef<[u8]>) -> io::Result<UnixDatagram> {
        self.bind_target(Target::Abstract(name.as_ref()))
    }

    /// Binds to a std Unix address: a path or an abstract name.
    ///
    /// # Errors
    /// As [`bind`](Self::bind); an unnamed address is `InvalidInput`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::unix::net::SocketAddr;
    /// let dir = tempfile::tempdir()?;
    /// let addr = SocketAddr::from_pathname(dir.path().join("d.sock"))?;
    /// let unix = socketserver::UnixDatagram::builder().bind_addr(&addr)?;
    /// assert!(unix.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_addr(&self, addr: &UnixSocketAddr) -> io::Result<UnixDatagram> {
        self.bind_target(target_of(addr)?)
    }

    fn bind_target(&self, target: Target<'_>) -> io::Result<UnixDatagram> {
        let (fd, owned) =
            unix_path::bind(SockType::Datagram, SockFlag::empty(), target, &self.path)?;
        let mut unix = UnixDatagram::from_socket_with(StdUnixDatagram::from(fd), self)?;
        unix.owned = owned;
        Ok(unix)
    }
}

impl UnixDatagram {
    /// The default [`reply_timeout`](UnixDatagramBuilder::reply_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::UnixDatagram;
    /// assert_eq!(UnixDatagram::DEFAULT_REPLY_TIMEOUT, std::time::Duration::from_secs(1));
    /// let dir = tempfile::tempdir()?;
    /// let _patient = UnixDatagram::builder()
    ///     .reply_timeout(UnixDatagram::DEFAULT_REPLY_TIMEOUT * 5)
    ///     .bind(dir.path().join("d.sock"))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

    /// Binds to `path` with the default options (see [`UnixDatagramBuilder`]).
    ///
    /// # Errors
    /// See [`UnixDatagramBuilder::bind`].
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let unix = socketserver::UnixDatagram::bind(dir.path().join("d"))?;
    /// assert!(unix.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        UnixDatagramBuilder::default().bind(path)
    }

    /// Binds to the Linux abstract address `@name`.
    ///
    /// # Errors
    /// See [`UnixDatagramBuilder::bind_abstract`].
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{Transport, UnixDatagram};
    /// let name = format!("socketserver-doc-{}", std::process::id());
    /// let unix = UnixDatagram::bind_abstract(&name)?;
    /// assert_eq!(Transport::local_addr(&unix)?.to_string(), format!("@{name}"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_abstract(name: impl AsRef<[u8]>) -> io::Result<UnixDatagram> {
        UnixDatagramBuilder::default().bind_abstract(name)
    }

    /// Options to set before binding.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let unix = socketserver::UnixDatagram::builder().replace_stale(true).bind(dir.path().join("d"))?;
    /// assert!(unix.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> UnixDatagramBuilder {
        UnixDatagramBuilder::default()
    }

    /// Serves on a socket that is already bound (by the caller, or inherited), with the default
    /// options. Its path is not owned: closing leaves it in place.
    ///
    /// # Errors
    /// `getsockname(2)`, `fcntl(2)` or `setsockopt(2)` failing.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let socket = std::os::unix::net::UnixDatagram::bind(dir.path().join("d"))?;
    /// let unix = socketserver::UnixDatagram::from_socket(socket)?;
    /// assert!(!unix.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_socket(socket: StdUnixDatagram) -> io::Result<UnixDatagram> {
        UnixDatagram::from_socket_with(socket, &UnixDatagramBuilder::default())
    }

    fn from_socket_with(
        socket: StdUnixDatagram,
        opts: &UnixDatagramBuilder,
    ) -> io::Result<UnixDatagram> {
        let local = socket
            .local_addr()
            .map_err(|e| context(e, "getsockname(2) on the Unix datagram socket"))?;
        let shown = Addr::Unix(local.clone());
        // Blocking, so a reply waits (up to the reply timeout) for room in the client's queue; the
        // receive side never blocks because it uses MSG_DONTWAIT.
        socket
            .set_nonblocking(false)
            .map_err(|e| context(e, format!("making the socket on {shown} blocking")))?;
        socket
            .set_write_timeout(opts.reply_timeout)
            .map_err(|e| context(e, format!("setsockopt(SO_SNDTIMEO) on {shown}")))?;
        let unnamed = StdUnixDatagram::unbound()
            .and_then(|s| s.local_addr())
            .map_err(|e| context(e, "socket(AF_UNIX)"))?;
        Ok(UnixDatagram {
            owned: None,
            socket: Arc::new(UnixReply(socket)),
            local,
            buf: vec![0; opts.max_packet_size],
            unnamed,
        })
    }

    /// The bound address: a path, or an abstract name.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let unix = socketserver::UnixDatagram::bind(dir.path().join("d"))?;
    /// println!("listening on {:?}", unix.local_addr());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> &UnixSocketAddr {
        &self.local
    }

    /// The socket's path, for a path-bound socket.
    ///
    /// # Examples
    ///
    /// ```
    /// let name = format!("socketserver-doc-{}", std::process::id());
    /// let unix = socketserver::UnixDatagram::bind_abstract(name)?;
    /// assert_eq!(unix.path(), None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn path(&self) -> Option<&Path> {
        self.local.as_pathname()
    }

    /// Whether closing this transport removes its path (it bound the path itself).
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// assert!(socketserver::UnixDatagram::bind(dir.path().join("d"))?.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn owns_path(&self) -> bool {
        self.owned.is_some()
    }

    fn peer_addr(&self, peer: UnixPeer) -> io::Result<UnixSocketAddr> {
        match peer {
            UnixPeer::Path(p) => UnixSocketAddr::from_pathname(p),
            UnixPeer::Abstract(name) => UnixSocketAddr::from_abstract_name(name),
            UnixPeer::Unnamed => Ok(self.unnamed.clone()),
        }
    }
}

impl Transport for UnixDatagram {
    fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Unix(self.local.clone()))
    }
}

impl Listen for UnixDatagram {
    type Kind = Datagram;

    fn accept(&mut self) -> io::Result<Accept<<Datagram as KindOf>::Request>> {
        let fd = self.socket.0.as_raw_fd();
        let (len, from) = match sys::recv_from_unix_trunc(fd, &mut self.buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Accept::WouldBlock),
            Err(e) => {
                let what = format!("recvfrom(2) on {}", Addr::Unix(self.local.clone()));
                return Err(context(e, what));
            }
        };
        // The kernel only reports addresses std can represent; should one not fit, serve the datagram
        // as from an unbound sender rather than drop it.
        let peer = Addr::Unix(
            self.peer_addr(from)
                .unwrap_or_else(|_| self.unnamed.clone()),
        );
        Ok(Packet::received(&self.buf, len, peer, &self.socket))
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.0.as_fd()
    }
}

/// The Unix datagram socket as replies see it.
#[derive(Debug)]
struct UnixReply(StdUnixDatagram);

impl DatagramSocket for UnixReply {
    fn send_to(&self, buf: &[u8], peer: &Addr) -> io::Result<usize> {
        match peer.as_unix() {
            Some(to) if !to.is_unnamed() => self.0.send_to_addr(buf, to),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the sender's socket is unbound, so there is no address to reply to; no reply sent",
            )),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send a Unix datagram reply to {peer}"),
            )),
        }
    }
}
