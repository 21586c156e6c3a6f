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
//! | [`MockStream`](crate::testing::MockStream) | [`Stream`] | [`StreamHandler`](crate::StreamHandler) | — |
//! | [`MockDatagram`](crate::testing::MockDatagram) | [`Datagram`] | [`DatagramHandler`](crate::DatagramHandler) | — |
//!
//! Putting a datagram handler on a stream transport does not compile:
//!
//! ```compile_fail
//! use socketserver::{DatagramRequest, Server, Sequential, Tcp};
//! let handler = |_req: &mut DatagramRequest| Ok(());
//! let _server = Server::<Sequential, Tcp, _>::bind("127.0.0.1:0", handler);
//! ```
//!
//! A transport knows nothing of strategies: it accepts, and says what it accepted. Everything that
//! happens to a request afterwards (admission, layers, the handler) is the server's.
//!
//! # Sealed
//! [`Transport`] and [`Kind`] are sealed while the design settles: the crate's transports and the mock
//! transports of [`testing`](crate::testing) implement them; their plumbing (accepting, the descriptor
//! to poll) is not public API.

// The sealed traits' methods take and return crate-private plumbing types (the serving policy, requests
// on their way to a handler): that is the point of sealing them, so the lint that flags private types
// in reachable signatures does not apply here.
#![allow(private_interfaces)]

use std::io;

use crate::addr::Addr;

mod inet;
mod inherited;
mod phase;
mod request;
mod tcp;
mod udp;
mod unix_datagram;
mod unix_path;
mod unix_stream;

pub use inherited::{InheritedSocket, SocketKind};
pub use tcp::{Tcp, TcpBuilder};
pub use udp::{Udp, UdpBuilder};
pub use unix_datagram::{UnixDatagram, UnixDatagramBuilder};
pub use unix_stream::{PeerCredentials, UnixStream, UnixStreamBuilder, peer_credentials};

pub(crate) use phase::Phase;
pub(crate) use request::{
    Accept, ConnInfo, DatagramSocket, Duplex, Incoming, Packet, Proxied, Request, has_input,
};

/// The plumbing behind the public transport traits: implemented by the crate only, and not callable
/// from outside it (the signal-hook pattern of a sealed trait with private methods).
pub(crate) mod sealed {
    use std::io;
    use std::os::fd::BorrowedFd;

    use super::request::Accept;

    /// What a kind's requests are.
    pub trait KindOf {
        /// One accepted request: a connection, or one datagram.
        type Request: super::request::Request;
    }

    /// How a serving loop takes requests from a transport.
    ///
    /// # Contract
    /// - [`as_fd`](Self::as_fd) is readable whenever [`accept`](Self::accept) may have something;
    ///   serving loops poll it together with their shutdown eventfd.
    /// - `accept` never blocks: it returns [`Accept::WouldBlock`] when nothing is pending.
    /// - Dropping the transport closes the socket (and removes anything it created, such as a Unix
    ///   path, in the process that created it only).
    pub trait Listen {
        /// Stream or datagram: decides which handler trait can serve this transport.
        type Kind: super::Kind;

        /// Takes one pending request without blocking.
        ///
        /// # Errors
        /// The `accept(2)` / `recvfrom(2)` error, for the server to classify and back off from.
        fn accept(&mut self) -> io::Result<Accept<<Self::Kind as KindOf>::Request>>;

        /// The descriptor to poll for readiness.
        fn as_fd(&self) -> BorrowedFd<'_>;
    }

    /// A stream transport whose connections are operating-system sockets an event loop can watch:
    /// every stream transport but the mock one, which is why `Reactor` does not compile with it.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` has no sockets the `Reactor` can poll: serve a `MessageHandler` on Tcp or UnixStream",
        note = "to test a `MessageHandler` without sockets, drive it with `socketserver::testing::MessageDriver`"
    )]
    pub trait Pollable {}
}

/// The two kinds of transport: byte streams ([`Stream`]) and datagrams ([`Datagram`]). The kind decides
/// which handler trait can serve a transport.
///
/// # Sealed
/// Implemented by [`Stream`] and [`Datagram`] only.
///
/// # Examples
///
/// Restricting a function to one kind of transport:
///
/// ```
/// use socketserver::transport::Transport;
///
/// fn kind_name<T: Transport>(_: &T) -> &'static str {
///     let path = std::any::type_name::<T::Kind>();
///     path.rsplit("::").next().unwrap_or(path)
/// }
/// assert_eq!(kind_name(&socketserver::Tcp::bind("127.0.0.1:0")?), "Stream");
/// assert_eq!(kind_name(&socketserver::Udp::bind("127.0.0.1:0")?), "Datagram");
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Kind: sealed::KindOf + Send + 'static {}

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

impl sealed::KindOf for Stream {
    type Request = Incoming;
}
impl Kind for Stream {}

impl sealed::KindOf for Datagram {
    type Request = Packet;
}
impl Kind for Datagram {}

/// A source of requests: a listening socket, and how to take one request from it.
///
/// Generic code names a transport by this trait, and its kind as `T::Kind` (`Transport<Kind = Stream>`
/// for stream transports only).
///
/// # Sealed
/// Implemented by the crate's transports (and the mock transports of [`testing`](crate::testing)).
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
pub trait Transport: sealed::Listen + Send + 'static {
    /// The address the transport is bound to (with the real port after binding port 0).
    ///
    /// # Errors
    /// Whatever `getsockname(2)` reports.
    fn local_addr(&self) -> io::Result<Addr>;
}
