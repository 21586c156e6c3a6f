//! UDP: [`Udp`], the datagram transport.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use nix::sys::socket::{SockFlag, SockType};

use super::inet::{BindOptions, bind_first, bound_socket};
use super::sealed::{KindOf, Listen};
use super::{Accept, Datagram, DatagramSocket, Packet, Transport};
use crate::addr::Addr;
use crate::sys::{self, context};

/// The default receive buffer: the largest UDP payload over IPv4, so no valid datagram is cut.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 65_535;

/// A bound UDP socket: Python's `UDPServer` transport.
///
/// Each datagram is one request. It is received into a buffer of [`max_packet_size`](UdpBuilder::max_packet_size)
/// bytes (default 65,535) with `MSG_TRUNC`, so a larger datagram is *detected* and reported to the
/// error hook as [`RequestError::DatagramTruncated`](crate::RequestError::DatagramTruncated) rather than handed to the handler cut short (Python's
/// `UDPServer` silently truncates at 8,192).
///
/// # Examples
///
/// ```
/// let udp = socketserver::Udp::bind("127.0.0.1:0")?;
/// assert_ne!(udp.local_addr().port(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Udp {
    socket: Arc<UdpReply>,
    local: SocketAddr,
    buf: Vec<u8>,
}

/// Options for binding a [`Udp`] socket, applied before `bind(2)`.
///
/// # Examples
///
/// ```
/// let _udp = socketserver::Udp::builder().max_packet_size(1500).bind("127.0.0.1:0")?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct UdpBuilder {
    max_packet_size: usize,
    opts: BindOptions,
}

impl Default for UdpBuilder {
    fn default() -> Self {
        UdpBuilder {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            opts: BindOptions::default(),
        }
    }
}

impl UdpBuilder {
    /// The receive buffer size: the largest datagram served (default 65,535). Larger ones are reported,
    /// not served. Clamped to at least 1.
    ///
    /// # Examples
    ///
    /// A datagram over the limit reaches the error hook, not the handler:
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use socketserver::{DatagramRequest, RequestError, Sequential, Server, Udp};
    ///
    /// let udp = Udp::builder().max_packet_size(4).bind("127.0.0.1:0")?;
    /// let errors = Arc::new(Mutex::new(Vec::new()));
    /// let seen = errors.clone();
    /// let mut server = Server::new(Sequential::new(), udp, |_r: &mut DatagramRequest| Ok(()))?
    ///     .handle_error(move |_peer, err| seen.lock().unwrap().push(matches!(err, RequestError::DatagramTruncated { .. })));
    ///
    /// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// client.send_to(b"too long", server.local_addr().as_inet().unwrap())?;
    /// client.send_to(b"ok", server.local_addr().as_inet().unwrap())?;
    /// server.handle_request()?; // reports the first datagram, serves the second
    /// assert_eq!(*errors.lock().unwrap(), [true]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes.max(1);
        self
    }

    /// `SO_REUSEADDR` (default off, as in Python's `UDPServer`: for UDP it lets two sockets share a port).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Udp;
    /// let first = Udp::builder().reuse_addr(true).bind("127.0.0.1:0")?;
    /// let second = Udp::builder().reuse_addr(true).bind(first.local_addr())?;
    /// assert_eq!(first.local_addr(), second.local_addr());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reuse_addr(mut self, on: bool) -> Self {
        self.opts.reuse_addr = on;
        self
    }

    /// `SO_REUSEPORT` (default off): several sockets share the port; the kernel spreads datagrams.
    ///
    /// # Examples
    ///
    /// One socket per worker process, all on one port:
    ///
    /// ```
    /// use socketserver::Udp;
    /// let first = Udp::builder().reuse_port(true).bind("127.0.0.1:0")?;
    /// let second = Udp::builder().reuse_port(true).bind(first.local_addr())?;
    /// assert_eq!(first.local_addr(), second.local_addr());
    /// assert!(Udp::bind(first.local_addr()).is_err()); // a socket without it is refused
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.opts.reuse_port = on;
        self
    }

    /// `socket(2)`, `setsockopt(2)`, `bind(2)`; each resolved address is tried in turn.
    ///
    /// # Errors
    /// The failing syscall and address; the socket is closed on failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Udp;
    /// let udp = Udp::builder().max_packet_size(1500).bind("127.0.0.1:0")?;
    /// let err = Udp::builder().bind(udp.local_addr()).unwrap_err(); // taken
    /// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    /// assert!(err.to_string().starts_with("bind(2) on 127.0.0.1:"), "{err}");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(&self, addr: impl ToSocketAddrs) -> io::Result<Udp> {
        bind_first(addr, |addr| {
            let fd = bound_socket(addr, SockType::Datagram, SockFlag::empty(), &self.opts)?;
            Udp::from_socket_sized(UdpSocket::from(fd), self.max_packet_size)
        })
    }
}

impl Udp {
    /// Binds with the default options (see [`UdpBuilder`]).
    ///
    /// # Errors
    /// The failing syscall and address.
    ///
    /// # Examples
    ///
    /// ```
    /// let _udp = socketserver::Udp::bind("[::1]:0")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Udp> {
        UdpBuilder::default().bind(addr)
    }

    /// Options to set before binding.
    ///
    /// # Examples
    ///
    /// ```
    /// let _udp = socketserver::Udp::builder().reuse_port(true).bind("127.0.0.1:0")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> UdpBuilder {
        UdpBuilder::default()
    }

    /// Serves on a socket that is already bound (by the caller, or inherited), with the default buffer.
    ///
    /// # Errors
    /// `getsockname(2)` or `fcntl(2)` failing.
    ///
    /// # Examples
    ///
    /// ```
    /// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// let _udp = socketserver::Udp::from_socket(socket)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_socket(socket: UdpSocket) -> io::Result<Udp> {
        Udp::from_socket_sized(socket, DEFAULT_MAX_PACKET_SIZE)
    }

    fn from_socket_sized(socket: UdpSocket, max_packet_size: usize) -> io::Result<Udp> {
        let local = socket
            .local_addr()
            .map_err(|e| context(e, "getsockname(2) on the UDP socket"))?;
        // Blocking, so that replies sent from worker threads wait for buffer space instead of failing
        // with EAGAIN; the receive side never blocks because it uses MSG_DONTWAIT.
        socket
            .set_nonblocking(false)
            .map_err(|e| context(e, format!("making the socket on {local} blocking")))?;
        Ok(Udp {
            socket: Arc::new(UdpReply(socket)),
            local,
            buf: vec![0; max_packet_size],
        })
    }

    /// The bound address, with the real port after binding port 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let udp = socketserver::Udp::bind("127.0.0.1:0")?;
    /// println!("listening on {}", udp.local_addr());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Transport for Udp {
    fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Inet(self.local))
    }
}

impl Listen for Udp {
    type Kind = Datagram;

    fn accept(&mut self) -> io::Result<Accept<<Datagram as KindOf>::Request>> {
        let fd = self.socket.0.as_raw_fd();
        let (len, from) = match sys::recv_from_trunc(fd, &mut self.buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Accept::WouldBlock),
            Err(e) => return Err(context(e, format!("recvfrom(2) on {}", self.local))),
        };
        let Some(from) = from else {
            return Ok(Accept::WouldBlock);
        };
        let peer = Addr::Inet(from);
        Ok(Packet::received(&self.buf, len, peer, &self.socket))
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.0.as_fd()
    }
}

/// The UDP socket as replies see it.
#[derive(Debug)]
struct UdpReply(UdpSocket);

impl DatagramSocket for UdpReply {
    fn send_to(&self, buf: &[u8], peer: &Addr) -> io::Result<usize> {
        let Some(to) = peer.as_inet() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send a UDP reply to {peer}"),
            ));
        };
        self.0.send_to(buf, to)
    }
}
