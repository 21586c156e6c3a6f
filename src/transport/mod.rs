//! Transports: where requests come from.
//!
//! A transport owns the listening socket (or, for datagrams, the one bound socket) and turns readiness on
//! it into requests. There are two [`Kind`]s of transport, and the kind decides which handler trait can
//! serve it:
//!
//! | transport | kind | handler | Python |
//! |---|---|---|---|
//! | [`Tcp`] | [`Stream`] | [`StreamHandler`](crate::StreamHandler) | `TCPServer` |
//! | [`Udp`] | [`Datagram`] | [`DatagramHandler`](crate::DatagramHandler) | `UDPServer` |
//! | [`UnixStream`] | [`Stream`] | [`StreamHandler`](crate::StreamHandler) | `UnixStreamServer` |
//! | [`UnixDatagram`] | [`Datagram`] | [`DatagramHandler`](crate::DatagramHandler) | `UnixDatagramServer` |
//! | [`MockStream`] | [`Stream`] | [`StreamHandler`](crate::StreamHandler) | — |
//! | [`MockDatagram`] | [`Datagram`] | [`DatagramHandler`](crate::DatagramHandler) | — |
//!
//! Putting a datagram handler on a stream transport does not compile:
//!
//! ```compile_fail
//! use socketserver::{DatagramRequest, Server, Sequential, Tcp};
//! let handler = |_req: &mut DatagramRequest| Ok(());
//! let _server = Server::<Sequential, Tcp, _>::bind("127.0.0.1:0", handler);
//! ```
//!
//! # Sealed
//! [`Transport`] and [`Connection`] are sealed while the design settles: the crate's transports and mock
//! transports implement them; outside implementations are not supported yet.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::addr::Addr;
use crate::error::RequestError;

mod inet;
mod inherited;
pub mod mock;
mod tcp;
mod udp;
mod unix_datagram;
mod unix_path;
pub(crate) mod unix_stream;

pub use inherited::{InheritedSocket, SocketKind};
pub use mock::{MockDatagram, MockStream};
pub use tcp::{Tcp, TcpBuilder};
pub use udp::{Udp, UdpBuilder};
pub use unix_datagram::{UnixDatagram, UnixDatagramBuilder};
pub use unix_stream::{peer_credentials, PeerCredentials, UnixStream, UnixStreamBuilder};

pub(crate) mod sealed {
    /// Keeps the transport traits closed to outside implementations (see the module's `# Sealed` note).
    pub trait Sealed {}
}

/// The two kinds of transport: byte streams and datagrams. Each names the request type its transports
/// produce, which in turn decides which handler trait can serve them.
///
/// # Examples
///
/// Code generic over any transport reaches a request's peer through its kind:
///
/// ```
/// use socketserver::mock::{MockConn, MockStream};
/// use socketserver::transport::{Accept, Kind, Transport};
/// use socketserver::Addr;
///
/// /// Takes one pending request, if any, and says whom it is from.
/// fn next_peer<T: Transport>(transport: &mut T) -> std::io::Result<Option<Addr>> {
///     Ok(match transport.accept()? {
///         Accept::Ready(request) => Some(<T::Kind as Kind>::peer(&request).clone()),
///         _ => None,
///     })
/// }
/// let mut transport = MockStream::new()?;
/// transport.push(MockConn::new().peer("10.1.2.3:4000".parse::<std::net::SocketAddr>().unwrap()));
/// assert_eq!(next_peer(&mut transport)?.unwrap().to_string(), "10.1.2.3:4000");
/// assert_eq!(next_peer(&mut transport)?, None); // nothing pending
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Kind: sealed::Sealed + Send + 'static {
    /// What one accepted request is: a connection, or one datagram.
    type Request: Send + 'static;

    /// Whether a request keeps using the transport's own socket (datagram replies are sent from it), so
    /// a forked child must keep its copy open. Stream children close their copy of the listener.
    const REQUEST_USES_LISTENER: bool;

    /// The peer a request came from.
    fn peer(request: &Self::Request) -> &Addr;

    /// The request's connection, for stream requests: what a drain deadline shuts down.
    fn connection(request: &Self::Request) -> Option<&Arc<dyn Connection>>;
}

/// Connection-oriented byte streams (TCP, Unix stream sockets): one request is one connection.
///
/// # Examples
///
/// Restricting a function to stream transports:
///
/// ```
/// use socketserver::transport::{Stream, Transport};
///
/// fn describe<T: Transport<Kind = Stream>>(transport: &T) -> std::io::Result<String> {
///     Ok(format!("connections on {}", transport.local_addr()?))
/// }
/// let tcp = socketserver::Tcp::bind("127.0.0.1:0")?;
/// assert!(describe(&tcp)?.starts_with("connections on 127.0.0.1:"));
/// // `describe(&socketserver::Udp::bind("127.0.0.1:0")?)` does not compile.
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub enum Stream {}

/// Message-oriented transports (UDP, Unix datagram sockets): one request is one datagram.
///
/// # Examples
///
/// ```
/// use socketserver::transport::{Datagram, Transport};
///
/// fn describe<T: Transport<Kind = Datagram>>(transport: &T) -> std::io::Result<String> {
///     Ok(format!("datagrams on {}", transport.local_addr()?))
/// }
/// let udp = socketserver::Udp::bind("127.0.0.1:0")?;
/// assert_eq!(describe(&udp)?, format!("datagrams on {}", udp.local_addr()));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub enum Datagram {}

impl sealed::Sealed for Stream {}
impl sealed::Sealed for Datagram {}

impl Kind for Stream {
    type Request = Incoming;
    const REQUEST_USES_LISTENER: bool = false;
    fn peer(request: &Incoming) -> &Addr {
        &request.peer
    }
    fn connection(request: &Incoming) -> Option<&Arc<dyn Connection>> {
        Some(&request.conn)
    }
}

impl Kind for Datagram {
    type Request = Packet;
    const REQUEST_USES_LISTENER: bool = true;
    fn peer(request: &Packet) -> &Addr {
        &request.peer
    }
    fn connection(_: &Packet) -> Option<&Arc<dyn Connection>> {
        None
    }
}

/// An accepted stream connection on its way to a handler.
///
/// # Examples
///
/// ```
/// use socketserver::mock::{MockConn, MockStream};
/// use socketserver::transport::{Accept, Incoming, Transport};
///
/// let mut transport = MockStream::new()?;
/// transport.push(MockConn::new());
/// let Accept::Ready(incoming): Accept<Incoming> = transport.accept()? else {
///     panic!("a connection was queued");
/// };
/// println!("{incoming:?}"); // what the serving loop hands to the strategy
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Incoming {
    pub(crate) conn: Arc<dyn Connection>,
    pub(crate) peer: Addr,
}

/// A received datagram on its way to a handler, with the socket its reply is sent from.
///
/// # Examples
///
/// ```
/// use socketserver::mock::MockDatagram;
/// use socketserver::transport::{Accept, Packet, Transport};
///
/// let mut transport = MockDatagram::new()?;
/// transport.push("ping", "127.0.0.1:5000".parse::<std::net::SocketAddr>().unwrap());
/// let Accept::Ready(packet): Accept<Packet> = transport.accept()? else {
///     panic!("a datagram was queued");
/// };
/// println!("{packet:?}");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Packet {
    pub(crate) data: Vec<u8>,
    pub(crate) peer: Addr,
    pub(crate) socket: Arc<dyn DatagramSocket>,
}

/// What one call to [`Transport::accept`] produced.
///
/// # Examples
///
/// ```
/// use socketserver::mock::{MockConn, MockStream};
/// use socketserver::transport::{Accept, Transport};
///
/// let mut transport = MockStream::new()?;
/// assert!(matches!(transport.accept()?, Accept::WouldBlock)); // poll `as_fd()`, then try again
/// transport.push(MockConn::new());
/// assert!(matches!(transport.accept()?, Accept::Ready(_)));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub enum Accept<R> {
    /// A request to serve.
    Ready(R),
    /// Nothing is waiting; poll the transport's descriptor.
    WouldBlock,
    /// Something arrived but cannot be served (a datagram larger than the buffer, say): report it.
    Refused(Option<Addr>, RequestError),
}

/// A source of requests: a listening socket and how to take one request from it.
///
/// # Contract
/// - [`as_fd`](Self::as_fd) is readable whenever [`accept`](Self::accept) may have something;
///   the serving loop polls it together with its shutdown eventfd.
/// - `accept` never blocks: it returns [`Accept::WouldBlock`] when nothing is pending.
/// - Dropping the transport closes the socket (and removes anything it created, such as a Unix path).
///
/// # Sealed
/// Implemented by the crate's transports only, for now.
///
/// # Examples
///
/// A function that works with any transport, e.g. to announce where a server listens:
///
/// ```
/// use socketserver::{Tcp, Transport, Udp};
///
/// fn announce<T: Transport>(transport: &T) -> std::io::Result<String> {
///     Ok(format!("listening on {}", transport.local_addr()?))
/// }
/// let tcp = Tcp::bind("127.0.0.1:0")?;
/// let udp = Udp::bind("127.0.0.1:0")?;
/// assert_eq!(announce(&tcp)?, format!("listening on {}", tcp.local_addr()));
/// assert_eq!(announce(&udp)?, format!("listening on {}", udp.local_addr()));
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Transport: sealed::Sealed + Send + 'static {
    /// Stream or datagram: decides which handler trait can serve this transport.
    type Kind: Kind;

    /// The address the transport is bound to (with the real port after binding port 0).
    ///
    /// # Errors
    /// Whatever `getsockname(2)` reports.
    fn local_addr(&self) -> io::Result<Addr>;

    /// Takes one pending request without blocking.
    ///
    /// # Errors
    /// The `accept(2)` / `recvfrom(2)` error, for the server to report and back off from.
    fn accept(&mut self) -> io::Result<Accept<<Self::Kind as Kind>::Request>>;

    /// The descriptor to poll for readiness.
    fn as_fd(&self) -> BorrowedFd<'_>;
}

/// One accepted byte-stream connection, as the handler layer uses it: reads and writes through `&self`
/// (like `&TcpStream`), so a request's reader and writer can share it.
///
/// # Sealed
/// Implemented by the crate's connections (TCP, Unix, mock) only.
///
/// # Examples
///
/// ```
/// use socketserver::mock::MockConn;
/// use socketserver::transport::Connection;
///
/// /// Echoes one chunk; reads and writes take `&self`, so both halves can share one connection.
/// fn echo_once(conn: &dyn Connection) -> std::io::Result<usize> {
///     let mut buf = [0; 64];
///     let n = conn.read(&mut buf)?;
///     conn.write(&buf[..n])
/// }
/// let conn = MockConn::new().read("ping");
/// let probe = conn.probe();
/// assert_eq!(echo_once(&conn)?, 4);
/// assert_eq!(probe.written(), b"ping");
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Connection: sealed::Sealed + Send + Sync + fmt::Debug {
    /// `recv(2)`.
    ///
    /// # Errors
    /// The socket's error; `WouldBlock`/`TimedOut` once the read timeout passes.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// `send(2)` (with `MSG_NOSIGNAL`: a vanished peer is `EPIPE`, never `SIGPIPE`).
    ///
    /// # Errors
    /// The socket's error; `WouldBlock`/`TimedOut` once the write timeout passes.
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    /// `shutdown(2)`.
    ///
    /// # Errors
    /// The socket's error (`ENOTCONN` once the peer is gone).
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// `SO_RCVTIMEO`; `None` blocks forever.
    ///
    /// # Errors
    /// The `setsockopt(2)` error.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// `SO_SNDTIMEO`; `None` blocks forever.
    ///
    /// # Errors
    /// The `setsockopt(2)` error.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// `TCP_NODELAY` where the transport has it; a no-op elsewhere.
    ///
    /// # Errors
    /// The `setsockopt(2)` error.
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let _ = nodelay;
        Ok(())
    }
    /// The socket's descriptor, if it has one (the mock connection does not).
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

/// The socket a datagram reply is sent from.
///
/// # Sealed
/// Implemented by the crate's datagram transports only.
///
/// # Examples
///
/// The crate creates these sockets for its datagram transports and sends a handler's reply (its
/// [`wfile`](crate::DatagramRequest::wfile)) through one; code generic over them looks like this:
///
/// ```
/// use socketserver::transport::DatagramSocket;
/// use socketserver::Addr;
///
/// /// Sends `message` to every peer, stopping at the first failure.
/// fn notify_all(socket: &dyn DatagramSocket, peers: &[Addr], message: &[u8]) -> std::io::Result<()> {
///     for peer in peers {
///         socket.send_to(message, peer)?;
///     }
///     Ok(())
/// }
/// # let _ = notify_all;
/// ```
pub trait DatagramSocket: sealed::Sealed + Send + Sync + fmt::Debug {
    /// `sendto(2)`: sends `buf` as one datagram to `peer`.
    ///
    /// # Errors
    /// The socket's error, or `InvalidInput` when `peer` is not an address this socket can reach.
    fn send_to(&self, buf: &[u8], peer: &Addr) -> io::Result<usize>;
}
