//! [`InheritedSocket`]: a socket this process was handed already bound — by systemd socket activation,
//! by a parent passing `--listen-fd N`, by a supervisor doing a zero-downtime restart — checked and
//! turned into a transport.
//!
//! A descriptor number is easy to get wrong (an off-by-one, a UDP socket where TCP was meant, a file).
//! So the socket is inspected before it is used — its type with `getsockopt(SO_TYPE)`, its family and
//! address with `getsockname(2)`, whether it listens with `SO_ACCEPTCONN` — and a mismatch is an error
//! naming the descriptor and what it really is, instead of a server that fails on its first `accept`.

use std::fmt;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram as StdUnixDatagram, UnixListener};

use nix::sys::socket::{
    self as nsock, AddressFamily, SockType, SockaddrLike, SockaddrStorage, sockopt,
};

use super::{Tcp, Udp, UnixDatagram, UnixStream};
use crate::sys::{self, context};

/// What an inherited socket is, as far as the crate's transports are concerned.
///
/// # Examples
///
/// ```
/// use socketserver::{InheritedSocket, SocketKind};
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let socket = InheritedSocket::from_fd(listener.into())?;
/// assert_eq!(socket.kind(), SocketKind::Tcp);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketKind {
    /// A listening TCP socket (IPv4 or IPv6): becomes [`Tcp`].
    Tcp,
    /// A bound UDP socket: becomes [`Udp`].
    Udp,
    /// A listening Unix stream socket: becomes [`UnixStream`].
    UnixStream,
    /// A bound Unix datagram socket: becomes [`UnixDatagram`].
    UnixDatagram,
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketKind::Tcp => "a listening TCP socket",
            SocketKind::Udp => "a UDP socket",
            SocketKind::UnixStream => "a listening Unix stream socket",
            SocketKind::UnixDatagram => "a Unix datagram socket",
        })
    }
}

/// A bound socket handed to this process, checked to be one the crate can serve on, with the name its
/// parent gave it (systemd's `FileDescriptorName=`), ready to become a transport.
///
/// Get one from [`activation::listen_fds`](crate::activation::listen_fds), or from a descriptor with
/// [`from_fd`](Self::from_fd) / [`from_raw_fd`](Self::from_raw_fd); then convert it with
/// [`into_tcp`](Self::into_tcp), [`into_udp`](Self::into_udp),
/// [`into_unix_stream`](Self::into_unix_stream) or [`into_unix_datagram`](Self::into_unix_datagram)
/// (or `Tcp::try_from(socket)`). A transport built this way does not own a Unix socket's path: the
/// parent created it, so closing leaves it in place.
///
/// # Examples
///
/// ```
/// use socketserver::{InheritedSocket, Sequential, Server, StreamRequest};
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?; // as a parent would have bound it
/// let socket = InheritedSocket::from_fd(listener.into())?;
/// let server = Server::new(Sequential::new(), socket.into_tcp()?, |_r: &mut StreamRequest| Ok(()))?;
/// println!("listening on {}", server.local_addr());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct InheritedSocket {
    fd: OwnedFd,
    kind: SocketKind,
    name: Option<String>,
}

impl InheritedSocket {
    /// Checks that `fd` is a socket the crate can serve on — a listening TCP or Unix stream socket, or
    /// a bound UDP or Unix datagram socket — and records which.
    ///
    /// # Errors
    /// `InvalidInput` naming the descriptor and what it is instead: not a socket, a stream socket that
    /// does not listen, another family or type (raw, netlink, `SOCK_SEQPACKET`). The descriptor is
    /// closed on error.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::InheritedSocket;
    /// let file = std::fs::File::open("/dev/null")?;
    /// let err = InheritedSocket::from_fd(file.into()).unwrap_err();
    /// assert!(err.to_string().contains("not a socket"), "{err}");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> io::Result<InheritedSocket> {
        let kind = inspect(fd.as_fd())?;
        Ok(InheritedSocket {
            fd,
            kind,
            name: None,
        })
    }

    /// Takes ownership of descriptor number `fd` (one a parent process left open across `exec`, as
    /// with a `--listen-fd 3` flag), marks it close-on-exec, and checks it as [`from_fd`](Self::from_fd)
    /// does.
    ///
    /// # Errors
    /// `EBADF` when nothing is open at `fd`; otherwise as [`from_fd`](Self::from_fd).
    ///
    /// # Safety
    /// Nothing else in the process may own or use `fd`: the returned socket (or the error path) closes
    /// it. Descriptors the process inherited and has not wrapped anywhere qualify.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::IntoRawFd;
    /// use socketserver::{InheritedSocket, SocketKind};
    ///
    /// let fd = std::net::UdpSocket::bind("127.0.0.1:0")?.into_raw_fd();
    /// // SAFETY: `fd` was just released by its owner and is used nowhere else.
    /// let socket = unsafe { InheritedSocket::from_raw_fd(fd) }?;
    /// assert_eq!(socket.kind(), SocketKind::Udp);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    // The one `unsafe` outside `sys/`: an `unsafe fn` by contract (the caller vouches that nobody else
    // owns `fd`), whose body only forwards that promise to `sys`.
    #[allow(unsafe_code)]
    pub unsafe fn from_raw_fd(fd: RawFd) -> io::Result<InheritedSocket> {
        // SAFETY: forwarded from this function's own contract.
        let owned = unsafe { sys::claim_inherited_fd(fd) }?;
        InheritedSocket::from_fd(owned)
    }

    /// Attaches a name (systemd's `FileDescriptorName=`), for finding a socket among several.
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::InheritedSocket;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let socket = InheritedSocket::from_fd(listener.into())?.with_name("http");
    /// assert_eq!(socket.name(), Some("http"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The name the parent gave the socket, if any.
    ///
    /// # Examples
    ///
    /// Picking the socket meant for metrics among the ones a parent passed:
    ///
    /// ```
    /// use socketserver::InheritedSocket;
    /// let passed = vec![
    ///     InheritedSocket::from_fd(std::net::TcpListener::bind("127.0.0.1:0")?.into())?.with_name("http"),
    ///     InheritedSocket::from_fd(std::net::TcpListener::bind("127.0.0.1:0")?.into())?.with_name("metrics"),
    /// ];
    /// let metrics = passed.into_iter().find(|s| s.name() == Some("metrics")).unwrap();
    /// let _transport = metrics.into_tcp()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// What the socket is.
    ///
    /// # Examples
    ///
    /// Choosing the transport by what the parent passed:
    ///
    /// ```
    /// use socketserver::{InheritedSocket, SocketKind};
    /// let socket = InheritedSocket::from_fd(std::net::UdpSocket::bind("127.0.0.1:0")?.into())?;
    /// match socket.kind() {
    ///     SocketKind::Tcp => println!("TCP on {}", socket.into_tcp()?.local_addr()),
    ///     SocketKind::Udp => println!("UDP on {}", socket.into_udp()?.local_addr()),
    ///     other => println!("not served here: {other}"),
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    /// The listening TCP socket as a [`Tcp`] transport.
    ///
    /// # Errors
    /// `InvalidInput` when it is another kind of socket; see also [`Tcp::from_listener`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::InheritedSocket;
    /// let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// let err = InheritedSocket::from_fd(udp.into())?.into_tcp().unwrap_err();
    /// assert!(err.to_string().contains("is a UDP socket, not a listening TCP socket"), "{err}");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_tcp(self) -> io::Result<Tcp> {
        let fd = self.expect(SocketKind::Tcp)?;
        Tcp::from_listener(TcpListener::from(fd))
    }

    /// The UDP socket as a [`Udp`] transport.
    ///
    /// # Errors
    /// `InvalidInput` when it is another kind of socket; see also [`Udp::from_socket`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::InheritedSocket;
    /// let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// let transport = InheritedSocket::from_fd(udp.into())?.into_udp()?;
    /// assert!(transport.local_addr().ip().is_loopback());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_udp(self) -> io::Result<Udp> {
        let fd = self.expect(SocketKind::Udp)?;
        Udp::from_socket(UdpSocket::from(fd))
    }

    /// The listening Unix stream socket as a [`UnixStream`] transport (which does not own its path).
    ///
    /// # Errors
    /// `InvalidInput` when it is another kind of socket; see also [`UnixStream::from_listener`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::InheritedSocket;
    /// let dir = tempfile::tempdir()?;
    /// let listener = std::os::unix::net::UnixListener::bind(dir.path().join("s"))?;
    /// let transport = InheritedSocket::from_fd(listener.into())?.into_unix_stream()?;
    /// assert!(!transport.owns_path());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_unix_stream(self) -> io::Result<UnixStream> {
        let fd = self.expect(SocketKind::UnixStream)?;
        UnixStream::from_listener(UnixListener::from(fd))
    }

    /// The Unix datagram socket as a [`UnixDatagram`] transport (which does not own its path).
    ///
    /// # Errors
    /// `InvalidInput` when it is another kind of socket; see also [`UnixDatagram::from_socket`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::InheritedSocket;
    /// let dir = tempfile::tempdir()?;
    /// let socket = std::os::unix::net::UnixDatagram::bind(dir.path().join("d"))?;
    /// let transport = InheritedSocket::from_fd(socket.into())?.into_unix_datagram()?;
    /// assert!(!transport.owns_path()); // the caller bound it, the caller removes it
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_unix_datagram(self) -> io::Result<UnixDatagram> {
        let fd = self.expect(SocketKind::UnixDatagram)?;
        UnixDatagram::from_socket(StdUnixDatagram::from(fd))
    }

    /// The descriptor, for a use the crate's transports do not cover.
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::InheritedSocket;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let fd: std::os::fd::OwnedFd = InheritedSocket::from_fd(listener.into())?.into_fd();
    /// let listener = std::net::TcpListener::from(fd);
    /// assert!(listener.local_addr()?.port() > 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    fn expect(self, want: SocketKind) -> io::Result<OwnedFd> {
        if self.kind == want {
            return Ok(self.fd);
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {}, not {want}", self.describe(), self.kind),
        ))
    }

    /// `fd 3 ("web")`, for error messages.
    fn describe(&self) -> String {
        let fd = self.fd.as_raw_fd();
        match &self.name {
            Some(name) => format!("fd {fd} ({name:?})"),
            None => format!("fd {fd}"),
        }
    }
}

impl AsFd for InheritedSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

macro_rules! try_from_inherited {
    ($($transport:ty => $method:ident),* $(,)?) => {$(
        impl TryFrom<InheritedSocket> for $transport {
            type Error = io::Error;
            /// See the `InheritedSocket` method of the same meaning.
            fn try_from(socket: InheritedSocket) -> io::Result<Self> {
                socket.$method()
            }
        }
    )*};
}

try_from_inherited!(
    Tcp => into_tcp,
    Udp => into_udp,
    UnixStream => into_unix_stream,
    UnixDatagram => into_unix_datagram,
);

/// Finds out what kind of socket `fd` is: `SO_TYPE`, the family from `getsockname(2)`, and for stream
/// sockets `SO_ACCEPTCONN`.
fn inspect(fd: BorrowedFd<'_>) -> io::Result<SocketKind> {
    let raw = fd.as_raw_fd();
    let invalid =
        |what: String| io::Error::new(io::ErrorKind::InvalidInput, format!("fd {raw} {what}"));
    let ty = match nsock::getsockopt(&fd, sockopt::SockType) {
        Ok(ty) => ty,
        Err(nix::errno::Errno::ENOTSOCK) => return Err(invalid("is not a socket".into())),
        Err(e) => {
            return Err(context(
                e.into(),
                format!("getsockopt(SO_TYPE) on fd {raw}"),
            ));
        }
    };
    let local: SockaddrStorage = nsock::getsockname(raw)
        .map_err(|e| context(e.into(), format!("getsockname(2) on fd {raw}")))?;
    let family = local.family();
    let listening = || {
        nsock::getsockopt(&fd, sockopt::AcceptConn)
            .map_err(|e| context(e.into(), format!("getsockopt(SO_ACCEPTCONN) on fd {raw}")))
    };
    let inet = matches!(family, Some(AddressFamily::Inet | AddressFamily::Inet6));
    let unix = family == Some(AddressFamily::Unix);
    let kind = match ty {
        SockType::Stream if inet => SocketKind::Tcp,
        SockType::Datagram if inet => SocketKind::Udp,
        SockType::Stream if unix => SocketKind::UnixStream,
        SockType::Datagram if unix => SocketKind::UnixDatagram,
        other => {
            return Err(invalid(format!(
                "is a {other:?} socket of family {family:?}, which no transport serves"
            )));
        }
    };
    if matches!(kind, SocketKind::Tcp | SocketKind::UnixStream) && !listening()? {
        let what = if kind == SocketKind::Tcp {
            "TCP"
        } else {
            "Unix stream"
        };
        return Err(invalid(format!(
            "is a {what} socket that is not listening (call listen(2) before handing it over)"
        )));
    }
    let unbound = match kind {
        SocketKind::Udp => {
            let port = local.as_sockaddr_in().map(|a| a.port());
            port.or_else(|| local.as_sockaddr_in6().map(|a| a.port())) == Some(0)
        }
        SocketKind::UnixDatagram => local.as_unix_addr().is_some_and(|a| a.is_unnamed()),
        _ => false,
    };
    if unbound {
        return Err(invalid(format!("is {kind} that is not bound")));
    }
    Ok(kind)
}
