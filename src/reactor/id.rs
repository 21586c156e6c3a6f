//! [`ConnId`]: the name of one of an event loop's connections.

use std::fmt;

/// Names one connection of a [`Reactor`](crate::Reactor) for as long as it is open.
///
/// Ids are reused slots with a generation: an id kept after its connection closed never reaches the
/// connection that took the slot later ([`Conn::send_to`](super::Conn::send_to) then reports [`SendError::Closed`](super::SendError::Closed)).
/// An id also names the event loop that serves the connection (a [`Reactor`](crate::Reactor) may
/// run several, [`Reactor::threads`](crate::Reactor::threads)), so any callback can reach any
/// connection by it.
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
    /// The event loop that serves it.
    shard: u16,
    index: u32,
    generation: u32,
}

impl ConnId {
    pub(crate) fn new(shard: u16, index: u32, generation: u32) -> Self {
        ConnId {
            shard,
            index,
            generation,
        }
    }

    /// The event loop that serves it (0 for the first).
    pub(crate) fn shard(self) -> u16 {
        self.shard
    }

    pub(crate) fn index(self) -> u32 {
        self.index
    }

    pub(crate) fn generation(self) -> u32 {
        self.generation
    }

    /// The epoll token of this connection, in its own loop's epoll set.
    pub(crate) fn token(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The connection of loop `shard` that `token` names.
    pub(crate) fn from_token(shard: u16, token: u64) -> Self {
        ConnId::new(shard, token as u32, (token >> 32) as u32)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shard == 0 {
            write!(f, "#{}.{}", self.index, self.generation)
        } else {
            write!(f, "#{}/{}.{}", self.shard, self.index, self.generation)
        }
    }
}
