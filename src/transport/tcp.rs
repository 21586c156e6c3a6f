//! TCP: [`Tcp`], the listening transport, and the connection type it accepts.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{self as nsock, SockFlag, SockType, sockopt};

use super::inet::{BindOptions, bind_first, bound_socket};
use super::sealed::{KindOf, Listen, Pollable};
use super::{Accept, Duplex, Incoming, Stream, Transport};
use crate::addr::Addr;
use crate::sys::context;

/// A listening TCP socket (IPv4 or IPv6): Python's `TCPServer` transport.
///
/// [`Tcp::bind`] uses the defaults a server wants: `SO_REUSEADDR` on (a restarted server can bind again
/// while old connections sit in `TIME_WAIT`), a backlog of `SOMAXCONN`, a non-blocking close-on-exec
/// listener. [`Tcp::builder`] changes them, and turns on `SO_REUSEPORT` for several processes sharing one
/// port.
///
/// # Examples
///
/// ```
/// use socketserver::Tcp;
///
/// let tcp = Tcp::bind("127.0.0.1:0")?;
/// assert_ne!(tcp.local_addr().port(), 0); // the real port the kernel chose
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Tcp {
    listener: TcpListener,
    local: SocketAddr,
}

/// Options for binding a [`Tcp`] listener, all applied before `bind(2)`.
///
/// # Examples
///
/// ```
/// use socketserver::Tcp;
///
/// let tcp = Tcp::builder().backlog(64).reuse_port(true).bind("127.0.0.1:0")?;
/// assert!(tcp.local_addr().ip().is_loopback());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TcpBuilder {
    backlog: i32,
    nodelay: bool,
    opts: BindOptions,
}

impl Default for TcpBuilder {
    fn default() -> Self {
        TcpBuilder {
            backlog: libc::SOMAXCONN,
            nodelay: false,
            opts: BindOptions {
                reuse_addr: true,
                ..BindOptions::default()
            },
        }
    }
}

impl TcpBuilder {
    /// The `listen(2)` backlog: how many completed connections the kernel queues while the server is
    /// busy (or at its concurrency cap). Default `SOMAXCONN`; the kernel caps it at
    /// `net.core.somaxconn`.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Tcp;
    /// let tcp = Tcp::builder().backlog(16).bind("127.0.0.1:0")?;
    /// // Nothing accepts yet, but the kernel completes the handshake and queues the connection.
    /// let _client = std::net::TcpStream::connect(tcp.local_addr())?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog.min(i32::MAX as u32) as i32;
        self
    }

    /// `SO_REUSEADDR` (default on): bind again at once after a restart, despite `TIME_WAIT`.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Tcp;
    /// let port = Tcp::bind("127.0.0.1:0")?.local_addr().port(); // a previous run, now closed
    /// let tcp = Tcp::builder().reuse_addr(true).bind(("127.0.0.1", port))?; // the restart
    /// assert_eq!(tcp.local_addr().port(), port);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reuse_addr(mut self, on: bool) -> Self {
        self.opts.reuse_addr = on;
        self
    }

    /// `SO_REUSEPORT` (default off): let several sockets, in one process or many, bind the same address
    /// and port; the kernel spreads incoming connections between them.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Tcp;
    /// let first = Tcp::builder().reuse_port(true).bind("127.0.0.1:0")?;
    /// let second = Tcp::builder().reuse_port(true).bind(first.local_addr())?;
    /// assert_eq!(first.local_addr(), second.local_addr()); // two listeners, one port
    /// assert!(Tcp::bind(first.local_addr()).is_err()); // a socket without SO_REUSEPORT is refused
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.opts.reuse_port = on;
        self
    }

    /// `IPV6_V6ONLY` for IPv6 addresses: `Some(false)` makes `[::]` accept IPv4 too. Default: the
    /// system's setting.
    ///
    /// # Examples
    ///
    /// ```
    /// let tcp = socketserver::Tcp::builder().only_v6(true).bind("[::1]:0")?;
    /// assert!(tcp.local_addr().is_ipv6());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn only_v6(mut self, on: bool) -> Self {
        self.opts.only_v6 = Some(on);
        self
    }

    /// `TCP_NODELAY` on every accepted connection (default off, as in Python): small writes go out at
    /// once instead of waiting to be coalesced (Nagle's algorithm). Set on the listener, whose accepted
    /// sockets inherit it on Linux, so it costs nothing per connection.
    ///
    /// # Examples
    ///
    /// ```
    /// use nix::sys::socket::{getsockopt, sockopt::TcpNoDelay};
    /// let tcp = socketserver::Tcp::builder().nodelay(true).bind("127.0.0.1:0")?;
    /// let _client = std::net::TcpStream::connect(tcp.local_addr())?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?; // for comparison: off by default
    /// assert!(!getsockopt(&listener, TcpNoDelay)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Creates, configures, binds and listens: `socket(2)`, `setsockopt(2)`, `bind(2)`, `listen(2)`.
    /// Each address `addr` resolves to is tried in turn, as `std::net::TcpListener::bind` does.
    ///
    /// # Errors
    /// The failing syscall and address, e.g. `bind(2) on 127.0.0.1:80: Permission denied`; the socket is
    /// closed on failure, so nothing leaks.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Tcp;
    /// let tcp = Tcp::builder().backlog(64).bind("127.0.0.1:0")?;
    /// let err = Tcp::builder().bind(tcp.local_addr()).unwrap_err(); // taken
    /// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    /// assert!(err.to_string().starts_with("bind(2) on 127.0.0.1:"), "{err}");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(&self, addr: impl ToSocketAddrs) -> io::Result<Tcp> {
        bind_first(addr, |addr| {
            let fd = bound_socket(addr, SockType::Stream, SockFlag::SOCK_NONBLOCK, &self.opts)?;
            let backlog = nsock::Backlog::new(self.backlog).unwrap_or(nsock::Backlog::MAXCONN);
            nsock::listen(&fd, backlog)
                .map_err(|e| context(e.into(), format!("listen(2) on {addr}")))?;
            let tcp = Tcp::from_listener(TcpListener::from(fd))?;
            tcp.set_nodelay(self.nodelay)?;
            Ok(tcp)
        })
    }
}

impl Tcp {
    /// Binds with the default options (see [`TcpBuilder`]).
    ///
    /// # Errors
    /// The failing syscall and address; see [`TcpBuilder::bind`].
    ///
    /// # Examples
    ///
    /// ```
    /// let tcp = socketserver::Tcp::bind("[::1]:0")?;
    /// assert!(tcp.local_addr().is_ipv6());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Tcp> {
        TcpBuilder::default().bind(addr)
    }

    /// Options to set before binding.
    ///
    /// # Examples
    ///
    /// ```
    /// let _tcp = socketserver::Tcp::builder().reuse_addr(false).bind("127.0.0.1:0")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> TcpBuilder {
        TcpBuilder::default()
    }

    /// Serves on a listener that already exists (bound by the caller, or inherited from a parent
    /// process). It is switched to non-blocking mode.
    ///
    /// # Errors
    /// `getsockname(2)` or `fcntl(2)` failing, e.g. when the descriptor is not a bound socket.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let port = listener.local_addr()?.port();
    /// let tcp = socketserver::Tcp::from_listener(listener)?;
    /// assert_eq!(tcp.local_addr().port(), port);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_listener(listener: TcpListener) -> io::Result<Tcp> {
        let local = listener
            .local_addr()
            .map_err(|e| context(e, "getsockname(2) on the listener"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| context(e, format!("making the listener on {local} non-blocking")))?;
        Ok(Tcp { listener, local })
    }

    /// Sets `TCP_NODELAY` for connections accepted from now on (see [`TcpBuilder::nodelay`]); for a
    /// listener that was not built here, such as an inherited one.
    ///
    /// # Errors
    /// The `setsockopt(2)` error.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?; // say, inherited from a parent
    /// let tcp = socketserver::Tcp::from_listener(listener)?;
    /// tcp.set_nodelay(true)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        nsock::setsockopt(&self.listener, sockopt::TcpNoDelay, &on).map_err(|e| {
            context(
                e.into(),
                format!("setsockopt(TCP_NODELAY) on {}", self.local),
            )
        })
    }

    /// The bound address, with the real port after binding port 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let tcp = socketserver::Tcp::bind("127.0.0.1:0")?;
    /// println!("listening on {}", tcp.local_addr());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Transport for Tcp {
    fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Inet(self.local))
    }
}

impl Listen for Tcp {
    type Kind = Stream;

    fn accept(&mut self) -> io::Result<Accept<<Stream as KindOf>::Request>> {
        // std's accept is accept4(SOCK_CLOEXEC); the accepted socket is blocking, as handlers expect,
        // and inherits TCP_NODELAY from the listener.
        match self.listener.accept() {
            Ok((stream, peer)) => Ok(Accept::Ready(Incoming::new(
                Arc::new(TcpConn(stream)),
                Addr::Inet(peer),
            ))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Accept::WouldBlock),
            Err(e) => Err(context(e, format!("accept(2) on {}", self.local))),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Pollable for Tcp {}

/// An accepted TCP connection.
#[derive(Debug)]
struct TcpConn(TcpStream);

impl Duplex for TcpConn {
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
