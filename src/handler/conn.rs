//! [`Conn`]: what a [`MessageHandler`](super::MessageHandler) can do with its connection, and with the
//! others of its event loop.

use std::fmt;

use crate::addr::Addr;
use crate::framing::{Encoder, FrameError};
use crate::reactor::Connections;
use crate::shutdown::ShutdownHandle;

/// Names one connection of a [`Reactor`](crate::Reactor) for as long as it is open.
///
/// Ids are reused slots with a generation: an id kept after its connection closed never reaches the
/// connection that took the slot later ([`Conn::send_to`] then reports [`SendError::Closed`]).
///
/// # Examples
///
/// ```
/// use socketserver::handler::{Conn, MessageHandler};
/// use socketserver::framing::Lines;
///
/// /// Tells each client its id.
/// struct WhoAmI;
/// impl MessageHandler for WhoAmI {
///     type Codec = Lines;
///     fn codec(&self) -> Lines { Lines::new() }
///     fn on_message(&self, conn: &mut Conn<'_, Lines>, _line: Vec<u8>) -> anyhow::Result<()> {
///         let me = conn.id().to_string();
///         conn.send(me.as_bytes())?;
///         Ok(())
///     }
/// }
/// let server = socketserver::Server::new(
///     socketserver::Reactor::new(),
///     socketserver::Tcp::bind("127.0.0.1:0")?,
///     WhoAmI,
/// )?;
/// # drop(server);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    pub(crate) fn new(index: u32, generation: u32) -> Self {
        ConnId { index, generation }
    }

    pub(crate) fn index(self) -> u32 {
        self.index
    }

    pub(crate) fn generation(self) -> u32 {
        self.generation
    }

    /// The epoll token of this connection.
    pub(crate) fn token(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    pub(crate) fn from_token(token: u64) -> Self {
        ConnId::new(token as u32, (token >> 32) as u32)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

/// Why a message could not be queued for a connection.
///
/// # Examples
///
/// ```
/// use socketserver::handler::SendError;
/// assert_eq!(SendError::Full.to_string(), "the connection's output buffer is full");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection has closed (or is closing): nothing more can be sent to it.
    Closed,
    /// Its queued output would pass the [write buffer limit](crate::Reactor::write_buffer_limit): the
    /// peer is not reading fast enough. Nothing was queued; drop the message, or
    /// [`disconnect`](Conn::disconnect) the slow peer.
    Full,
    /// The codec cannot frame this item (too long, contains the delimiter).
    Encode(FrameError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("the connection is closed"),
            SendError::Full => f.write_str("the connection's output buffer is full"),
            SendError::Encode(e) => write!(f, "cannot frame the message: {e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

/// What [`Conn::broadcast_except`] did.
///
/// # Examples
///
/// ```
/// let b = socketserver::handler::Broadcast::default();
/// assert_eq!(b.sent, 0);
/// assert!(b.full.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Broadcast {
    /// How many connections the message was queued for.
    pub sent: usize,
    /// The connections whose output buffer was full, which did not get it (allocated only if any).
    pub full: Vec<ConnId>,
}

/// One connection of a [`Reactor`](crate::Reactor), as its [`MessageHandler`](super::MessageHandler)
/// sees it during a callback: reply to it, send to other connections, close it.
///
/// Nothing here touches a socket or blocks. Sends encode the message with the receiving connection's
/// codec and **queue** it; the event loop writes queued bytes when the socket can take them. Closing is
/// likewise carried out by the loop once the callback returns.
///
/// `C` is the handler's codec ([`MessageHandler::Codec`](super::MessageHandler::Codec)).
///
/// # Examples
///
/// ```
/// use socketserver::handler::{Conn, MessageHandler};
/// use socketserver::framing::Lines;
///
/// /// Replies to each line with its length, and hangs up on "bye".
/// struct Lengths;
/// impl MessageHandler for Lengths {
///     type Codec = Lines;
///     fn codec(&self) -> Lines { Lines::with_max_line_len(1024) }
///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
///         if line == b"bye" {
///             conn.close(); // after the queued replies are sent
///         } else {
///             conn.send(line.len().to_string().as_bytes())?;
///         }
///         Ok(())
///     }
/// }
/// let server = socketserver::Server::new(
///     socketserver::Reactor::new(),
///     socketserver::Tcp::bind("127.0.0.1:0")?,
///     Lengths,
/// )?;
/// # drop(server);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Conn<'a, C> {
    id: ConnId,
    peer: Addr,
    conns: &'a mut Connections<C>,
}

impl<C> fmt::Debug for Conn<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer())
            .finish_non_exhaustive()
    }
}

impl<'a, C> Conn<'a, C> {
    /// A view of open connection `id`; `None` if it is not open.
    pub(crate) fn new(id: ConnId, conns: &'a mut Connections<C>) -> Option<Self> {
        let peer = conns.slab.get(id)?.addr.clone();
        Some(Conn { id, peer, conns })
    }

    /// This connection's id, to hand to other connections' [`send_to`](Self::send_to).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address (Python's `client_address`).
    pub fn peer(&self) -> &Addr {
        &self.peer
    }

    /// The address of another open connection.
    pub fn peer_of(&self, id: ConnId) -> Option<&Addr> {
        self.conns.slab.get(id).map(|p| &p.addr)
    }

    /// How many connections the loop has open, this one included.
    pub fn connections(&self) -> usize {
        self.conns.slab.len()
    }

    /// Bytes queued for this connection that the socket has not taken yet.
    pub fn pending(&self) -> usize {
        self.conns.slab.get(self.id).map_or(0, |p| p.output.len())
    }

    /// Closes this connection once everything queued for it has been sent. Nothing more is read from
    /// it; [`on_close`](super::MessageHandler::on_close) runs when it is closed.
    pub fn close(&mut self) {
        self.conns.close_gracefully(self.id);
    }

    /// Closes connection `id` (this one or another) at once, discarding what is queued for it — for a
    /// peer that does not read. Does nothing if it is already closed.
    pub fn disconnect(&mut self, id: ConnId) {
        self.conns.abort(id);
    }

    /// The server's shutdown handle: `conn.server().shutdown()` stops the server from a handler.
    pub fn server(&self) -> &ShutdownHandle {
        &self.conns.shutdown
    }
}

impl<C: Encoder<[u8]>> Conn<'_, C> {
    /// Queues `item`, framed by the codec, for this connection.
    ///
    /// Replies are never refused for being too many: instead the loop stops reading from a connection
    /// while its queue is at the [limit](crate::Reactor::write_buffer_limit), so a peer that sends
    /// requests without reading the replies is paused, not served into unbounded memory.
    ///
    /// # Errors
    /// [`SendError::Encode`] if the codec cannot frame `item`; [`SendError::Closed`] in `on_close`.
    pub fn send(&mut self, item: &[u8]) -> Result<(), SendError> {
        self.conns.send(self.id, item, false)
    }

    /// Queues `item` for another connection.
    ///
    /// # Errors
    /// [`SendError::Closed`] if `id` is not open; [`SendError::Full`] (nothing queued) if it would take
    /// that connection's queue past the limit; [`SendError::Encode`] if the codec cannot frame `item`.
    pub fn send_to(&mut self, id: ConnId, item: &[u8]) -> Result<(), SendError> {
        let bounded = id != self.id;
        self.conns.send(id, item, bounded)
    }

    /// Queues `item` for every open connection except `except` (usually [`self.id()`](Self::id)),
    /// skipping, and listing in [`Broadcast::full`], those whose queue it would take past the limit.
    ///
    /// # Errors
    /// The codec cannot frame `item`.
    pub fn broadcast_except(
        &mut self,
        except: ConnId,
        item: &[u8],
    ) -> Result<Broadcast, FrameError> {
        self.conns.broadcast_except(except, item)
    }
}
