//! [`Registry`]: the open connections of one event loop, and the work their handlers left for it.

use std::fmt;

use super::id::ConnId;
use super::peer::Peer;
use super::slab::Slab;
use crate::framing::{Encoder, FrameError};
use crate::shutdown::ShutdownHandle;

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
    /// How many connections the message was queued for.
    pub sent: usize,
    /// The connections whose output buffer was full, which did not get it (allocated only if any).
    pub full: Vec<ConnId>,
}

/// The loop's connections plus two work lists that handler calls fill and the loop empties after
/// each call: connections with new output to flush, and connections to close at once.
///
/// Handlers never touch a socket: [`Conn`](super::Conn) methods only queue bytes and mark
/// work here, so a handler can neither block the loop on a write nor close a connection out from under
/// an event still being processed.
#[derive(Debug)]
pub(crate) struct Registry<C> {
    pub(crate) slab: Slab<Peer<C>>,
    /// Connections with output to flush (or that finished closing), each listed once (`Peer::dirty`).
    pub(crate) dirty: Vec<ConnId>,
    /// Connections to close at once, their queued output discarded.
    pub(crate) doomed: Vec<ConnId>,
    /// Connections that a message from another one took past half the limit during the current
    /// callback: the loop holds the sender back until they catch up.
    pub(crate) backed_up: Vec<ConnId>,
    /// Bytes queued for all connections, not yet taken by their sockets (for the figures).
    pub(crate) queued_bytes: usize,
    /// Connections whose reading is paused or held back (for the figures).
    pub(crate) paused: usize,
    /// The output bound, in bytes (see [`Reactor::write_buffer_limit`](crate::Reactor::write_buffer_limit)).
    pub(crate) limit: usize,
    pub(crate) shutdown: ShutdownHandle,
}

impl<C> Registry<C> {
    pub(crate) fn new(limit: usize, shutdown: ShutdownHandle) -> Self {
        Registry {
            slab: Slab::new(),
            dirty: Vec::new(),
            doomed: Vec::new(),
            backed_up: Vec::new(),
            queued_bytes: 0,
            paused: 0,
            limit,
            shutdown,
        }
    }

    /// Lists `id` for a flush (once).
    pub(crate) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(peer) = self.slab.get_mut(id)
            && !peer.dirty
        {
            peer.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Stops reading `id` and closes it once its output is flushed.
    pub(crate) fn close_gracefully(&mut self, id: ConnId) {
        if let Some(peer) = self.slab.get_mut(id) {
            peer.closing = true;
            self.mark_dirty(id);
        }
    }

    /// Closes `id` at once, discarding its queued output.
    pub(crate) fn abort(&mut self, id: ConnId) {
        if let Some(peer) = self.slab.get_mut(id)
            && !peer.closed
        {
            self.queued_bytes = self.queued_bytes.saturating_sub(peer.output.len());
            peer.output.clear();
            self.doomed.push(id);
        }
    }
}

impl<C: Encoder<[u8]>> Registry<C> {
    /// Encodes `item` onto `id`'s output. With `bounded`, refuses (queuing nothing) when that would take
    /// the queue past the limit; the connection's own replies are not bounded here, since reading from
    /// it pauses instead.
    pub(crate) fn send(&mut self, id: ConnId, item: &[u8], bounded: bool) -> Result<(), SendError> {
        let limit = self.limit;
        let peer = self
            .slab
            .get_mut(id)
            .filter(|p| !p.closed)
            .ok_or(SendError::Closed)?;
        let before = peer.output.len();
        let tail = peer.output.tail();
        let mark = tail.len();
        if let Err(e) = peer.codec.encode(item, tail) {
            // Nothing of an item that cannot be framed may be sent.
            tail.truncate(mark);
            return Err(SendError::Encode(e));
        }
        let after = before + (tail.len() - mark);
        if bounded && after > limit {
            tail.truncate(mark);
            if tail.is_empty() {
                peer.output.clear();
            }
            return Err(SendError::Full);
        }
        self.queued_bytes += after - before;
        if bounded && after > limit / 2 {
            self.backed_up.push(id);
        }
        self.mark_dirty(id);
        Ok(())
    }

    /// Sends `item` to every open connection but `except`; see [`Conn::broadcast_except`](super::Conn::broadcast_except).
    pub(crate) fn broadcast_except(
        &mut self,
        except: ConnId,
        item: &[u8],
    ) -> Result<Broadcast, FrameError> {
        let mut result = Broadcast::default();
        let mut i = 0;
        // Ids are fetched one at a time (`send` needs `&mut self`) rather than collected first: no
        // allocation per message, however many connections there are.
        while let Some(id) = self.slab.nth_id_from(&mut i) {
            if id == except {
                continue;
            }
            match self.send(id, item, true) {
                Ok(()) => result.sent += 1,
                Err(SendError::Full) => result.full.push(id),
                Err(SendError::Closed) => {}
                Err(SendError::Encode(e)) => return Err(e),
            }
        }
        Ok(result)
    }
}
