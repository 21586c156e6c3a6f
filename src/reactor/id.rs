//! [`ConnId`]: the name of one of an event loop's connections.

use std::fmt;

/// Names one connection of a [`Reactor`](crate::Reactor) for as long as it is open.
///
/// Ids are reused slots with a generation: an id kept after its connection closed never reaches the
/// connection that took the slot later ([`Conn::send_to`](super::Conn::send_to) then reports [`SendError::Closed`](super::SendError::Closed)).
///
/// # Examples
///
/// ```
/// use socketserver::reactor::{Conn, MessageHandler};
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
