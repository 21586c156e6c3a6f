//! What a transport hands to the server: requests ([`Incoming`] connections, [`Packet`] datagrams),
//! what accepting produced ([`Accept`]), and the byte stream ([`Duplex`]) and reply socket
//! ([`DatagramSocket`]) behind them.
//!
//! Crate plumbing: the types are `pub` so the sealed transport traits can name them, but this module
//! is private, so nothing here is public API.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use super::Phase;
use crate::addr::Addr;
use crate::error::RequestError;
use crate::proxy_protocol::ProxyHeader;

/// What the serving policy needs of any request, whatever its kind.
pub trait Request: Send + 'static {
    /// Who sent it.
    fn peer(&self) -> &Addr;
    /// Its connection, for stream requests: what a drain deadline shuts down.
    fn connection(&self) -> Option<&Arc<dyn Duplex>>;
    /// Whether a stream request's handler is between requests, for a drain.
    fn phase(&self) -> Option<&Arc<Phase>>;
    /// Passes a stream request through `layers` (the server's per-connection layers); a datagram is
    /// returned as it is.
    fn layered(
        self,
        layers: impl FnOnce(Incoming) -> Result<Incoming, RequestError>,
    ) -> Result<Self, RequestError>
    where
        Self: Sized;
}

impl Request for Incoming {
    fn peer(&self) -> &Addr {
        &self.peer
    }
    fn connection(&self) -> Option<&Arc<dyn Duplex>> {
        Some(&self.conn)
    }
    fn phase(&self) -> Option<&Arc<Phase>> {
        Some(&self.phase)
    }
    fn layered(
        self,
        layers: impl FnOnce(Incoming) -> Result<Incoming, RequestError>,
    ) -> Result<Self, RequestError> {
        layers(self)
    }
}

impl Request for Packet {
    fn peer(&self) -> &Addr {
        &self.peer
    }
    fn connection(&self) -> Option<&Arc<dyn Duplex>> {
        None
    }
    fn phase(&self) -> Option<&Arc<Phase>> {
        None
    }
    fn layered(
        self,
        _: impl FnOnce(Incoming) -> Result<Incoming, RequestError>,
    ) -> Result<Self, RequestError> {
        Ok(self)
    }
}

/// An accepted stream connection on its way to a handler.
#[derive(Debug)]
pub struct Incoming {
    pub(crate) conn: Arc<dyn Duplex>,
    pub(crate) peer: Addr,
    pub(crate) info: ConnInfo,
    pub(crate) phase: Arc<Phase>,
}

impl Incoming {
    /// A connection just accepted from `peer`, which no layer has seen yet.
    pub(crate) fn new(conn: Arc<dyn Duplex>, peer: Addr) -> Incoming {
        Incoming {
            conn,
            peer,
            info: ConnInfo::default(),
            phase: Arc::default(),
        }
    }
}

/// What the per-connection layers learnt about a stream connection, for its handler.
#[derive(Debug, Default)]
pub struct ConnInfo {
    /// The trusted proxy the connection came through, and the PROXY protocol header it sent (boxed: an
    /// event loop keeps this for every connection, and most have none).
    pub(crate) proxied: Option<Box<Proxied>>,
    /// What the TLS handshake settled, under TLS.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Box<crate::tls::TlsInfo>>,
}

/// A trusted proxy's account of a connection.
#[derive(Debug, Clone)]
pub struct Proxied {
    /// The proxy: the connection's own peer.
    pub(crate) via: Addr,
    /// The header it sent.
    pub(crate) header: ProxyHeader,
}

/// A received datagram on its way to a handler, with the socket its reply is sent from.
#[derive(Debug)]
pub struct Packet {
    pub(crate) data: Vec<u8>,
    pub(crate) peer: Addr,
    pub(crate) socket: Arc<dyn DatagramSocket>,
}

impl Packet {
    /// What a datagram transport accepted: `len` bytes (the real length `recvfrom(2)` with
    /// `MSG_TRUNC` reported) received into `buf` from `peer`, with the socket that replies. A datagram
    /// larger than the buffer was cut by the kernel: it is refused and reported, never served short.
    pub(crate) fn received<S: DatagramSocket + 'static>(
        buf: &[u8],
        len: usize,
        peer: Addr,
        socket: &Arc<S>,
    ) -> Accept<Packet> {
        if len > buf.len() {
            let error = RequestError::DatagramTruncated {
                len,
                capacity: buf.len(),
            };
            return Accept::Refused(Some(peer), error);
        }
        Accept::Ready(Packet {
            data: buf[..len].to_vec(),
            peer,
            socket: socket.clone(),
        })
    }
}

/// What one call to [`Listen::accept`](super::sealed::Listen::accept) produced.
#[derive(Debug)]
pub enum Accept<R> {
    /// A request to serve.
    Ready(R),
    /// Nothing is waiting; poll the transport's descriptor.
    WouldBlock,
    /// Something arrived but cannot be served (a datagram larger than the buffer, say): report it.
    Refused(Option<Addr>, RequestError),
}

/// One accepted byte stream, as the crate reads and writes it: through `&self` (like `&TcpStream`), so a
/// request's reader, its writer and a drain deadline can share it.
pub trait Duplex: Send + Sync + fmt::Debug {
    /// `recv(2)`; `WouldBlock` once the read timeout passes.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// `send(2)` with `MSG_NOSIGNAL` (a vanished peer is `EPIPE`, never `SIGPIPE`); `WouldBlock` once
    /// the write timeout passes.
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    /// `shutdown(2)`.
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// `SO_RCVTIMEO`; `None` blocks forever.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// `SO_SNDTIMEO`; `None` blocks forever.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// The socket, for options the crate does not wrap and for an event loop's epoll set.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Writes out what a layer between the caller and the socket still holds of earlier writes (TLS
    /// records a non-blocking socket did not take yet), as far as the socket takes it; returns
    /// whether some is still held, so an event loop keeps watching for writability. A plain socket
    /// holds nothing.
    fn flush_pending(&self) -> io::Result<bool> {
        Ok(false)
    }
    /// Whether a layer between the caller and the socket holds input it has already taken from the
    /// socket, so a [`read`](Self::read) returns bytes (or gets further) without waiting for the
    /// socket: TLS records that came together, of which a read decrypted the first. The socket no
    /// longer shows that input: an event loop reads again instead of waiting for readiness, and a
    /// drain counts it as a next request that has arrived. A plain socket holds none.
    fn holds_input(&self) -> bool {
        false
    }
}

/// Whether input waits on `conn`: held by a layer ([`Duplex::holds_input`]), or in its socket (or the
/// peer closed its side) — what a drain asks before it closes a connection between two requests.
pub(crate) fn has_input(conn: &dyn Duplex) -> bool {
    conn.holds_input() || crate::sys::has_input(conn.fd())
}

/// The socket a datagram reply is sent from.
pub trait DatagramSocket: Send + Sync + fmt::Debug {
    /// `sendto(2)`: sends `buf` as one datagram to `peer`.
    fn send_to(&self, buf: &[u8], peer: &Addr) -> io::Result<usize>;
}
