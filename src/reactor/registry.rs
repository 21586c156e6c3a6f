//! [`Registry`]: the open connections of one event loop, and the work their handlers left for it.

use std::sync::Arc;

use super::id::ConnId;
use super::mesh::{Mail, Mesh, Outbox};
use super::output::Output;
use super::peer::Peer;
use super::send::{Broadcast, SendError};
use super::slab::Slab;
use crate::addr::Addr;
use crate::framing::{Encoder, FrameError};
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
    /// This loop's number among the reactor's loops.
    pub(crate) shard: u16,
    /// The reactor's other loops, when there are any.
    pub(crate) mesh: Option<Arc<Mesh>>,
    /// Mail for other loops, posted at the end of the turn.
    pub(crate) outbox: Outbox,
    /// Read buffers between uses: a chunk read into one can travel to the handler and back out
    /// through the output queue without being copied or allocated again.
    pool: Vec<Vec<u8>>,
    /// Small output buffers between uses: a room's members each get a few lines per turn, and their
    /// queues would otherwise be allocated, grown and freed again every time.
    small: Vec<Vec<u8>>,
    /// How long output that other connections queued may wait for more to join it
    /// ([`Reactor::coalesce`](crate::Reactor::coalesce)); zero: written at once.
    pub(crate) coalesce: std::time::Duration,
    /// Connections whose output waits to be written with more, and since when the first has.
    pub(crate) deferred: Vec<ConnId>,
    pub(crate) deferred_since: Option<std::time::Instant>,
    /// The loop's clock, as it last read it (after each wait for events, and after a turn's events):
    /// what reads and writes stamp a connection's activity with. Idle and write timeouts count
    /// seconds; one clock read a turn serves them as well as one per read and write did.
    pub(crate) now: std::time::Instant,
}

/// The size of a read buffer: how much one read takes from one connection, large enough for
/// throughput, small enough that the loop turns to the others between two (see the event loop's
/// `READ_BURST`).
pub(crate) const BUFFER: usize = 64 * 1024;
/// How many read buffers a loop keeps for reuse (1 MiB), whatever the number of connections.
const POOLED: usize = 16;
/// The largest output buffer kept for reuse among the small ones, and the size a new one starts at.
const SMALL: usize = 4 * 1024;
const SMALL_START: usize = 1024;
/// How many small output buffers a loop keeps for reuse (4 MiB at most).
const SMALL_POOLED: usize = 1024;

/// Gives a queue that holds no storage a small buffer from the loop's `small` ones (or a new one), so
/// a few lines for a connection do not allocate and grow a buffer each time.
fn with_storage(small: &mut Vec<Vec<u8>>, output: &mut Output) {
    if output.unallocated() {
        output.provide(
            small
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(SMALL_START)),
        );
    }
}

impl<C> Registry<C> {
    pub(crate) fn new(
        limit: usize,
        shutdown: ShutdownHandle,
        mesh: Option<(Arc<Mesh>, u16)>,
    ) -> Self {
        let (mesh, shard) = match mesh {
            Some((mesh, shard)) if mesh.loops() > 1 => (Some(mesh), shard),
            _ => (None, 0),
        };
        Registry {
            shard,
            mesh,
            outbox: Outbox::default(),
            pool: Vec::new(),
            small: Vec::new(),
            coalesce: std::time::Duration::ZERO,
            deferred: Vec::new(),
            deferred_since: None,
            slab: Slab::new(shard),
            dirty: Vec::new(),
            doomed: Vec::new(),
            backed_up: Vec::new(),
            queued_bytes: 0,
            paused: 0,
            limit,
            shutdown,
            now: std::time::Instant::now(),
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

    /// Lists `id` for a flush once the coalescing delay is over (at once without one, or when its
    /// queue is already a quarter of the limit): what another connection sent it waits for more to
    /// be written with.
    fn mark_for_others(&mut self, id: ConnId) {
        if self.coalesce.is_zero() {
            self.mark_dirty(id);
            return;
        }
        let limit = self.limit;
        let Some(peer) = self.slab.get_mut(id) else {
            return;
        };
        if peer.output.len() >= limit / 4 {
            self.mark_dirty(id);
        } else if !peer.deferred && !peer.dirty {
            peer.deferred = true;
            self.deferred.push(id);
            self.deferred_since.get_or_insert(self.now);
        }
    }

    /// When the coalescing delay of the waiting output ends, if any waits.
    pub(crate) fn deferred_until(&self) -> Option<std::time::Instant> {
        self.deferred_since.map(|since| since + self.coalesce)
    }

    /// Lists every connection whose output waits for a flush now.
    pub(crate) fn release_deferred(&mut self) {
        self.deferred_since = None;
        for id in std::mem::take(&mut self.deferred) {
            if let Some(peer) = self.slab.get_mut(id) {
                peer.deferred = false;
            }
            self.mark_dirty(id);
        }
    }

    /// Stops reading `id` and closes it once its output is flushed.
    pub(crate) fn close_gracefully(&mut self, id: ConnId) {
        if let Some(peer) = self.slab.get_mut(id) {
            peer.closing = true;
            self.mark_dirty(id);
        }
    }

    /// A read buffer of [`BUFFER`] bytes, from the pool or new.
    pub(crate) fn buffer(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(|| vec![0; BUFFER])
    }

    /// Keeps `storage` for reuse if it is a read buffer's size and the pool has room; frees it
    /// otherwise.
    pub(crate) fn recycle(&mut self, mut storage: Vec<u8>) {
        if storage.capacity() >= BUFFER && self.pool.len() < POOLED {
            // A read buffer's length is its room for reading (a larger one keeps its capacity).
            storage.resize(BUFFER, 0);
            self.pool.push(storage);
        } else if (SMALL_START..=SMALL).contains(&storage.capacity())
            && self.small.len() < SMALL_POOLED
        {
            storage.clear();
            self.small.push(storage);
        }
    }

    /// Whether `id` is served by another loop.
    pub(crate) fn is_remote(&self, id: ConnId) -> bool {
        id.shard() != self.shard
    }

    /// Connections open in every loop.
    pub(crate) fn connections(&self) -> usize {
        match &self.mesh {
            Some(mesh) => mesh.open(),
            None => self.slab.len(),
        }
    }

    /// The peer address of `id`, in whichever loop it is.
    pub(crate) fn peer_of(&self, id: ConnId) -> Option<Addr> {
        if !self.is_remote(id) {
            return self.slab.get(id).map(|p| p.addr.clone());
        }
        self.mesh.as_ref()?.peer_of(id)
    }

    /// Closes `id` at once, discarding its queued output; `id` may be another loop's.
    pub(crate) fn disconnect(&mut self, id: ConnId) {
        if self.is_remote(id) {
            self.outbox.push(id.shard(), Mail::Disconnect(id));
        } else {
            self.abort(id);
        }
    }

    /// Closes `id` at once, discarding its queued output.
    pub(crate) fn abort(&mut self, id: ConnId) {
        if let Some(peer) = self.slab.get_mut(id)
            && !peer.closed
        {
            let dropped = peer.output.len();
            self.queued_bytes = self.queued_bytes.saturating_sub(dropped);
            peer.output.clear();
            self.doomed.push(id);
            self.took(id, dropped);
        }
    }

    /// `n` bytes of `id`'s output were sent or dropped: other loops holding senders back for it
    /// look again once it is down to a quarter of the limit.
    pub(crate) fn took(&mut self, id: ConnId, n: usize) {
        let Some(backlog) = self.slab.get(id).and_then(|p| p.backlog.as_ref()) else {
            return;
        };
        let watchers = backlog.took(n, self.limit / 4);
        self.wake(watchers);
    }

    /// Sends [`Mail::Recheck`] to the loops named by `watchers`.
    pub(crate) fn wake(&mut self, watchers: u64) {
        if watchers == 0 {
            return;
        }
        let Some(mesh) = self.mesh.clone() else {
            return;
        };
        for shard in mesh.recheck(watchers) {
            if shard != self.shard {
                self.outbox.push(shard, Mail::Recheck);
            }
        }
    }

    /// Queues bytes for `to` that another loop framed and reserved in its backlog. Dropped if `to`
    /// has closed meanwhile.
    pub(crate) fn queue_reserved(&mut self, to: ConnId, bytes: &[u8]) {
        let Some(peer) = self.slab.get_mut(to).filter(|p| !p.closed) else {
            return;
        };
        with_storage(&mut self.small, &mut peer.output);
        peer.output.tail().extend_from_slice(bytes);
        self.queued_bytes += bytes.len();
        self.mark_for_others(to);
    }
}

impl<C> Registry<C> {
    /// Appends what `write` puts after `id`'s queued output. With `bounded`, refuses (queuing nothing)
    /// when that would take the queue past the limit; the connection's own replies are not bounded
    /// here, since reading from it pauses instead. Returns whether the queue is now past half the
    /// limit.
    fn queue(
        &mut self,
        id: ConnId,
        bounded: bool,
        write: impl FnOnce(&mut C, &mut Vec<u8>) -> Result<(), FrameError>,
    ) -> Result<bool, SendError> {
        let limit = self.limit;
        let peer = self
            .slab
            .get_mut(id)
            .filter(|p| !p.closed)
            .ok_or(SendError::Closed)?;
        let before = peer.output.len();
        with_storage(&mut self.small, &mut peer.output);
        let tail = peer.output.tail();
        let mark = tail.len();
        let refused = match write(&mut peer.codec, tail) {
            // Nothing of an item that cannot be framed may be sent.
            Err(e) => Some(SendError::Encode(e)),
            Ok(()) if bounded && before + (tail.len() - mark) > limit => Some(SendError::Full),
            Ok(()) => None,
        };
        if let Some(refused) = refused {
            tail.truncate(mark);
            // With nothing else waiting, the storage goes back: an idle connection holds none.
            if let Some(storage) = peer.output.take_storage() {
                self.recycle(storage);
            }
            return Err(refused);
        }
        let after = before + (tail.len() - mark);
        self.queued_bytes += after - before;
        if let Some(backlog) = &peer.backlog {
            backlog.add(after - before);
        }
        if bounded {
            self.mark_for_others(id);
        } else {
            self.mark_dirty(id);
        }
        Ok(bounded && after > limit / 2)
    }
}

impl<C: Encoder<[u8]>> Registry<C> {
    /// Encodes `item` onto `id`'s output (see [`queue`](Self::queue)); a connection of this loop
    /// that a message from another takes past half its limit holds the sender back.
    pub(crate) fn send(&mut self, id: ConnId, item: &[u8], bounded: bool) -> Result<(), SendError> {
        if self.queue(id, bounded, |codec, tail| codec.encode(item, tail))? {
            self.backed_up.push(id);
        }
        Ok(())
    }

    /// Queues `bytes` for `id`, its own reply (unbounded, as [`send`](Self::send) with `bounded`
    /// false): with a codec that frames bytes as they are, the buffer itself when nothing else waits.
    pub(crate) fn send_vec(&mut self, id: ConnId, bytes: Vec<u8>) -> Result<(), SendError> {
        let peer = self
            .slab
            .get_mut(id)
            .filter(|p| !p.closed)
            .ok_or(SendError::Closed)?;
        if !peer.codec.verbatim() {
            self.send(id, &bytes, false)?;
            self.recycle(bytes);
            return Ok(());
        }
        let n = bytes.len();
        let spare = peer.output.append_owned(bytes);
        if let Some(backlog) = &peer.backlog {
            backlog.add(n);
        }
        self.queued_bytes += n;
        self.mark_dirty(id);
        if let Some(spare) = spare {
            self.recycle(spare);
        }
        Ok(())
    }

    /// `from` sends `item` to `to`: queued here if `to` is this loop's, else framed with `from`'s
    /// codec and mailed to `to`'s loop.
    pub(crate) fn send_to(
        &mut self,
        from: ConnId,
        to: ConnId,
        item: &[u8],
    ) -> Result<(), SendError> {
        if !self.is_remote(to) {
            return self.send(to, item, to != from);
        }
        let Some(mesh) = self.mesh.clone() else {
            return Err(SendError::Closed);
        };
        let bytes = self.frame(from, item).map_err(SendError::Encode)?;
        if mesh.reserve(to, bytes.len(), self.limit)? {
            self.backed_up.push(to);
        }
        self.outbox.push(to.shard(), Mail::Send { to, bytes });
        Ok(())
    }

    /// `item` framed by `from`'s codec, for another loop.
    fn frame(&mut self, from: ConnId, item: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut bytes = Vec::new();
        match self.slab.get_mut(from) {
            Some(peer) => peer.codec.encode(item, &mut bytes)?,
            // Not a connection of this loop: nothing to frame with. (Conn ids always are.)
            None => bytes.extend_from_slice(item),
        }
        Ok(bytes)
    }

    /// Sends `item` to every open connection but `except`, in every loop; see
    /// [`Conn::broadcast_except`](super::Conn::broadcast_except).
    pub(crate) fn broadcast_except(
        &mut self,
        from: ConnId,
        except: ConnId,
        item: &[u8],
    ) -> Result<Broadcast, FrameError> {
        let mut result = Broadcast::default();
        // Framed once, by the sender's codec (as for the other loops), and copied to each receiver.
        let framed = self.frame(from, item)?;
        let mut i = 0;
        // Ids are fetched one at a time (`queue` needs `&mut self`) rather than collected first: no
        // allocation per message, however many connections there are.
        while let Some(id) = self.slab.nth_id_from(&mut i) {
            if id == except {
                continue;
            }
            let queued = self.queue(id, true, |_, tail| {
                tail.extend_from_slice(&framed);
                Ok(())
            });
            match queued {
                Ok(behind) => {
                    if behind {
                        self.backed_up.push(id);
                    }
                    result.sent += 1;
                }
                Err(SendError::Full) => result.full.push(id),
                Err(SendError::Closed | SendError::Encode(_)) => {}
            }
        }
        let Some(mesh) = self.mesh.clone() else {
            return Ok(result);
        };
        let mut bytes: Option<Arc<[u8]>> = None;
        let own = self.shard;
        for shard in (0..mesh.loops() as u16).filter(|&s| s != own) {
            if mesh.open_in(shard) == 0 {
                continue;
            }
            let bytes = bytes.get_or_insert_with(|| Arc::from(&framed[..])).clone();
            let mut to = Vec::new();
            let (full, behind) = (&mut result.full, &mut self.backed_up);
            mesh.reserve_all(
                shard,
                except,
                bytes.len(),
                self.limit,
                |id, reserved| match reserved {
                    Ok(past_half) => {
                        to.push(id);
                        if past_half {
                            behind.push(id);
                        }
                    }
                    Err(_) => full.push(id),
                },
            );
            if !to.is_empty() {
                result.forwarded += to.len();
                self.outbox.push(shard, Mail::Broadcast { to, bytes });
            }
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Addr;
    use crate::framing::Lines;
    use crate::reactor::peer::Peer;
    use crate::serving::Ticket;
    use crate::transport::Duplex;
    use std::os::fd::{AsFd, BorrowedFd};

    /// A connection these tests never read or write: the registry only queues for it.
    #[derive(Debug)]
    struct Unused(std::fs::File);

    impl Duplex for Unused {
        fn read(&self, _: &mut [u8]) -> std::io::Result<usize> {
            Ok(0)
        }
        fn write(&self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn shutdown(&self, _: std::net::Shutdown) -> std::io::Result<()> {
            Ok(())
        }
        fn set_read_timeout(&self, _: Option<std::time::Duration>) -> std::io::Result<()> {
            Ok(())
        }
        fn set_write_timeout(&self, _: Option<std::time::Duration>) -> std::io::Result<()> {
            Ok(())
        }
        fn fd(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }
    }

    fn registry(coalesce: std::time::Duration) -> (Registry<Lines>, ConnId, ConnId) {
        let mut r = Registry::new(1000, ShutdownHandle::new().unwrap(), None);
        r.coalesce = coalesce;
        let addr = Addr::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
        let add = |r: &mut Registry<Lines>| {
            let io: Arc<dyn Duplex> = Arc::new(Unused(std::fs::File::open("/dev/null").unwrap()));
            r.slab.insert_with(|_| {
                Peer::new(
                    io,
                    addr.clone(),
                    Vec::new(),
                    Ticket::unlimited(),
                    Lines::new(),
                )
            })
        };
        let (a, b) = (add(&mut r), add(&mut r));
        (r, a, b)
    }

    #[test]
    fn output_from_others_waits_with_a_coalescing_delay_and_replies_do_not() {
        let (mut r, a, b) = registry(std::time::Duration::from_millis(5));
        r.send_to(a, b, b"for b").unwrap();
        assert!(r.dirty.is_empty(), "waits for company");
        assert_eq!(r.deferred, [b]);
        assert!(r.deferred_until().is_some());
        r.send(a, b"a reply", false).unwrap();
        assert_eq!(r.dirty, [a], "a reply goes out at once");
        // A queue at a quarter of the bound goes out at once too.
        r.send_to(a, b, &[b'x'; 300]).unwrap();
        assert_eq!(r.dirty, [a, b]);
        r.release_deferred();
        assert!(r.deferred.is_empty() && r.deferred_until().is_none());
        assert_eq!(r.dirty, [a, b], "listed once");
    }

    #[test]
    fn a_broadcast_is_framed_once_by_the_sender_and_queues_reuse_small_buffers() {
        let (mut r, a, b) = registry(std::time::Duration::ZERO);
        let delivery = r.broadcast_except(a, a, b"hi").unwrap();
        assert_eq!((delivery.sent, delivery.full.len()), (1, 0));
        let peer = r.slab.get_mut(b).unwrap();
        assert_eq!(peer.output.len(), 3, "framed by the sender's codec: `hi\n`");
        // Sent: the storage goes back to the loop's small buffers, and the next queue takes it.
        assert!(peer.output.flush(&*peer.io.clone()).is_ok());
        let storage = peer.output.take_storage().unwrap();
        let at = storage.as_ptr();
        r.recycle(storage);
        assert!(
            r.slab.get(b).unwrap().output.unallocated(),
            "idle: holds no buffer"
        );
        r.send_to(a, b, b"again").unwrap();
        let peer = r.slab.get_mut(b).unwrap();
        assert_eq!(
            peer.output.tail().as_ptr(),
            at,
            "the same buffer, not a new one"
        );
        // So does a queue for bytes another loop framed and reserved.
        let storage = std::mem::take(peer.output.tail());
        peer.output.clear();
        r.recycle(storage);
        r.queue_reserved(b, b"from another loop\n");
        let peer = r.slab.get_mut(b).unwrap();
        assert_eq!(peer.output.tail().as_ptr(), at, "the same buffer again");
        // A read-sized buffer is not kept among the small ones.
        r.recycle(Vec::with_capacity(SMALL + 1));
        assert!(r.small.is_empty());
    }

    #[test]
    fn a_refused_send_leaves_an_idle_connection_holding_no_buffer() {
        let (mut r, a, b) = registry(std::time::Duration::ZERO);
        assert!(matches!(
            r.send_to(a, b, &[b'x'; 2000]),
            Err(SendError::Full)
        ));
        assert!(r.slab.get(b).unwrap().output.unallocated());
        assert_eq!(r.small.len(), 1, "its buffer went back to the loop");
    }

    #[test]
    fn without_a_delay_output_from_others_goes_out_at_once() {
        let (mut r, a, b) = registry(std::time::Duration::ZERO);
        r.send_to(a, b, b"for b").unwrap();
        assert_eq!(r.dirty, [b]);
        assert!(r.deferred_until().is_none());
    }
}
