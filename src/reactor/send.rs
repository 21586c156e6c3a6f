//! What sending to a connection can fail with ([`SendError`]), and what a broadcast did
//! ([`Broadcast`]).

use std::fmt;

use super::id::ConnId;
use crate::framing::FrameError;

/// Why a message could not be queued for a connection.
///
/// # Examples
///
/// ```
/// use socketserver::reactor::SendError;
/// assert_eq!(SendError::Full.to_string(), "the connection's output buffer is full");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection has closed (or is closing): nothing more can be sent to it.
    Closed,
    /// Its queued output would pass the [write buffer limit](crate::Reactor::write_buffer_limit): the
    /// peer is not reading fast enough. Nothing was queued; drop the message, or
    /// [`disconnect`](super::Conn::disconnect) the slow peer.
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

/// What [`Conn::broadcast_except`](super::Conn::broadcast_except) did.
///
/// # Examples
///
/// ```
/// let b = socketserver::reactor::Broadcast::default();
/// assert_eq!(b.sent, 0);
/// assert!(b.full.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Broadcast {
    /// How many connections of this event loop the message was queued for.
    pub sent: usize,
    /// The connections whose output buffer was full, which did not get it (allocated only if any).
    pub full: Vec<ConnId>,
    /// How many connections of the *other* event loops (see [`Reactor::threads`]) it was queued
    /// for; those whose buffer was full are in `full` too.
    ///
    /// [`Reactor::threads`]: crate::Reactor::threads
    pub forwarded: usize,
}
