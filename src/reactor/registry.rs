//! [`Registry`]: the open connections of one event loop, and the work their handlers left for it.

use super::conn::{Broadcast, ConnId, SendError};
use super::peer::Peer;
use super::slab::Slab;
use crate::framing::Encoder;
use crate::shutdown::ShutdownHandle;

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
        peer.codec.encode(item, tail).map_err(SendError::Encode)?;
        if bounded && before + (tail.len() - mark) > limit {
            tail.truncate(mark);
            if tail.is_empty() {
                peer.output.clear();
            }
            return Err(SendError::Full);
        }
        self.mark_dirty(id);
        Ok(())
    }

    /// Sends `item` to every open connection but `except`; see [`Conn::broadcast_except`](super::Conn::broadcast_except).
    pub(crate) fn broadcast_except(
        &mut self,
        except: ConnId,
        item: &[u8],
    ) -> Result<Broadcast, crate::framing::FrameError> {
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
