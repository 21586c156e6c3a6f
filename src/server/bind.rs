//! Python's one-line constructors, `TCPServer(address, Handler)` and friends: every `Server::bind`.
//!
//! Each binds its transport with the default options and builds the strategy with its defaults; for
//! anything else, bind the transport with its builder and use [`Server::new`].

use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;

use super::Server;
use crate::concurrency::Concurrency;
use crate::transport::{Tcp, Udp, UnixDatagram, UnixStream};

impl<C, H> Server<C, Tcp, H>
where
    C: Concurrency<Tcp, H> + Default,
{
    /// Binds a TCP server with the default transport options and the strategy's defaults (Python's
    /// `TCPServer(address, Handler)`).
    ///
    /// # Errors
    /// The failing syscall and address (`bind(2) on 127.0.0.1:8080: Address already in use`).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// println!("listening on {}", server.local_addr());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(addr: impl ToSocketAddrs, handler: H) -> io::Result<Self> {
        Server::new(C::default(), Tcp::bind(addr)?, handler)
    }
}

impl<C, H> Server<C, Udp, H>
where
    C: Concurrency<Udp, H> + Default,
{
    /// Binds a UDP server with the default transport options and the strategy's defaults (Python's
    /// `UDPServer(address, Handler)`).
    ///
    /// # Errors
    /// The failing syscall and address.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{DatagramRequest, UdpServer};
    /// let _server = UdpServer::bind("127.0.0.1:0", |_r: &mut DatagramRequest| Ok(()))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(addr: impl ToSocketAddrs, handler: H) -> io::Result<Self> {
        Server::new(C::default(), Udp::bind(addr)?, handler)
    }
}

impl<C, H> Server<C, UnixStream, H>
where
    C: Concurrency<UnixStream, H> + Default,
{
    /// Binds a Unix stream server to `path` with the default transport options and the strategy's
    /// defaults (Python's `UnixStreamServer(path, Handler)`). The path is removed when the server
    /// closes.
    ///
    /// # Errors
    /// See [`UnixStreamBuilder::bind`](crate::transport::UnixStreamBuilder::bind).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingUnixStreamServer};
    /// let dir = tempfile::tempdir()?;
    /// let server = ThreadingUnixStreamServer::bind(dir.path().join("s"), |_r: &mut StreamRequest| Ok(()))?;
    /// println!("listening on {}", server.local_addr());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(path: impl AsRef<Path>, handler: H) -> io::Result<Self> {
        Server::new(C::default(), UnixStream::bind(path)?, handler)
    }
}

impl<C, H> Server<C, UnixDatagram, H>
where
    C: Concurrency<UnixDatagram, H> + Default,
{
    /// Binds a Unix datagram server to `path` with the default transport options and the strategy's
    /// defaults (Python's `UnixDatagramServer(path, Handler)`). The path is removed when the server
    /// closes.
    ///
    /// # Errors
    /// See [`UnixDatagramBuilder::bind`](crate::transport::UnixDatagramBuilder::bind).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{DatagramRequest, UnixDatagramServer};
    /// let dir = tempfile::tempdir()?;
    /// let server = UnixDatagramServer::bind(dir.path().join("d"), |_r: &mut DatagramRequest| Ok(()))?;
    /// println!("listening on {}", server.local_addr());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(path: impl AsRef<Path>, handler: H) -> io::Result<Self> {
        Server::new(C::default(), UnixDatagram::bind(path)?, handler)
    }
}
