//! [`Engine`]: what happens to an event loop's connections between the socket and the handler —
//! layers, decoding, callbacks, pacing, closing — with no socket readiness in it, so the event loop
//! and the test driver ([`testing::MessageDriver`](crate::testing::MessageDriver)) run the same code.

use std::sync::Arc;
use std::time::Instant;

use super::conn::Conn;
use super::id::ConnId;
use super::mesh::{Mail, Mesh};
use super::message::MessageHandler;
use super::output::Flushed;
use super::peer::Peer;
use super::registry::Registry;
use crate::addr::Addr;
use crate::error::{RequestError, guarded};
use crate::framing::{Decoder, FrameBuf};
use crate::layer::{Prefixed, Progress};
use crate::serving::{Event, Outcome, Shared, Ticket};
use crate::state::ConnState;
use crate::transport::Duplex;

/// The connections of one loop and the handler that serves them.
pub(crate) struct Engine<H: MessageHandler> {
    handler: Arc<H>,
    shared: Arc<Shared>,
    pub(crate) conns: Registry<H::Codec>,
    /// Senders held back until the connections they sent to catch up.
    held: Vec<ConnId>,
}

/// What [`Engine::flush`] did, for the loop to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Nothing to do: the connection is gone or closed.
    Nothing,
    /// The connection is to close now (its output is out and it was closing).
    Close,
    /// The connection stays: the loop makes sure its epoll interest is `interest`, and, when output
    /// `started_waiting` for the socket just now, starts its write timer.
    Open {
        interest: u32,
        started_waiting: bool,
    },
}

impl<H: MessageHandler> Engine<H> {
    /// The engine of loop `shard` of `mesh`, or of the only loop.
    pub(crate) fn new(
        handler: Arc<H>,
        shared: Arc<Shared>,
        write_buffer_limit: usize,
        mesh: Option<(Arc<Mesh>, u16)>,
    ) -> Self {
        Engine {
            conns: Registry::new(write_buffer_limit, shared.shutdown().clone(), mesh),
            handler,
            shared,
            held: Vec::new(),
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Takes in an accepted connection from `peer`; [`start`](Self::start) it once the caller is
    /// ready to flush what its handler queues.
    /// `None` when a layer could not take the connection: the error is reported, and dropping the
    /// socket closes it.
    pub(crate) fn insert(
        &mut self,
        io: Arc<dyn Duplex>,
        peer: Addr,
        ticket: Ticket,
    ) -> Option<ConnId> {
        self.shared.emit(Event::Started { peer: &peer });
        let mut layers = self.shared.layers.sessions(&peer);
        // The first layer reads the stream from its start; a later one wraps it when its turn comes.
        let io = match layers.first_mut().map(|layer| layer.wrap(io.clone())) {
            None => io,
            Some(Ok(io)) => io,
            Some(Err(e)) => {
                self.shared.report(Some(&peer), &e);
                if let Some(mesh) = &self.conns.mesh {
                    mesh.closed_one(self.conns.shard);
                }
                return None;
            }
        };
        let codec = self.handler.codec();
        let mesh = self.conns.mesh.as_deref();
        Some(self.conns.slab.insert_with(|id| {
            let mut peer = Peer::new(io, peer, layers, ticket, codec);
            // Other loops may address it: they learn its address and share its backlog.
            peer.backlog = mesh.map(|mesh| mesh.register(id, &peer.addr));
            peer
        }))
    }

    /// Carries out one piece of mail from another loop (all but [`Mail::Adopt`] and
    /// [`Mail::Room`], which are the loop's own business).
    pub(crate) fn apply(&mut self, mail: Mail) {
        match mail {
            Mail::Send { to, bytes } => self.conns.queue_reserved(to, &bytes),
            Mail::Broadcast { to, bytes } => {
                for id in to {
                    self.conns.queue_reserved(id, &bytes);
                }
            }
            Mail::Disconnect(id) => self.conns.abort(id),
            // The loop looks at its held senders after every piece of work.
            Mail::Recheck | Mail::Adopt(_) | Mail::Room => {}
        }
    }

    /// Whether `id`'s next layer took over the stream with bytes already read, which the loop must
    /// read again through it now.
    pub(crate) fn take_reread(&mut self, id: ConnId) -> bool {
        self.conns
            .slab
            .get_mut(id)
            .is_some_and(|p| std::mem::take(&mut p.reread))
    }

    /// Starts `id`: when per-connection layers must see the start of its stream first, returns the
    /// deadline they give it; otherwise runs the handler's `on_open` now.
    pub(crate) fn start(&mut self, id: ConnId) -> Option<Instant> {
        let peer = self.conns.slab.get(id)?;
        let deadline = peer.layers.iter().map(|l| l.deadline()).min();
        if deadline.is_none() {
            self.opened(id);
        }
        deadline
    }

    /// Every layer is done with `id`: the handler sees the connection.
    fn opened(&mut self, id: ConnId) {
        if let Some(peer) = self.conns.slab.get_mut(id) {
            peer.greeted = true;
        }
        let handler = self.handler.clone();
        self.call(id, |conn| handler.on_open(conn));
    }

    /// Bytes arrived on `id` (or none, but a layer may have advanced): through its layers, then
    /// decoded and delivered.
    pub(crate) fn received(&mut self, id: ConnId, bytes: &[u8]) {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        peer.input.extend_from_slice(bytes);
        self.taken_in(id, !bytes.is_empty());
    }

    /// The loop read `n` bytes straight into `id`'s input buffer (see
    /// [`read_target`](Self::read_target)): decoded and delivered.
    pub(crate) fn received_in_place(&mut self, id: ConnId, n: usize) {
        if let Some(peer) = self.conns.slab.get_mut(id) {
            peer.input.filled(n);
        }
        self.taken_in(id, n > 0);
    }

    /// Where the next read from `id` may go without a copy: its input buffer, given a pooled read
    /// buffer when it holds nothing (and no layer stands between), with the connection to read from.
    /// `None`: read elsewhere and hand the bytes to [`received`](Self::received).
    pub(crate) fn read_target(&mut self, id: ConnId) -> Option<(&dyn Duplex, &mut [u8])> {
        let peer = self.conns.slab.get(id)?;
        if !peer.layers.is_empty() || !peer.input.is_empty() {
            return None;
        }
        if peer.input.storage() < super::registry::BUFFER {
            let storage = self.conns.buffer();
            let peer = self.conns.slab.get_mut(id)?;
            let old = std::mem::replace(&mut peer.input, FrameBuf::from_storage(storage));
            self.conns.recycle(old.into_storage());
        }
        let peer = self.conns.slab.get_mut(id)?;
        Some((&*peer.io, peer.input.spare()))
    }

    /// Input taken in on `id`, `any` bytes of it: through its layers, then decoded and delivered.
    fn taken_in(&mut self, id: ConnId, any: bool) {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        peer.last_active = self.conns.now;
        // (No bytes: a layer advanced on its own, a TLS handshake; the handler has seen nothing.)
        if any && peer.state != ConnState::Active {
            peer.state = ConnState::Active;
            self.shared.state(&peer.addr, ConnState::Active);
        }
        if self.advance_layers(id) {
            self.deliver(id, false);
        }
        self.trim_input(id);
    }

    /// Gives `id`'s input buffer back to the pool when it is empty, and moves a few leftover bytes (a
    /// partial frame) out of a large one: an idle connection holds no read buffer.
    pub(crate) fn trim_input(&mut self, id: ConnId) {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        let storage = peer.input.storage();
        if storage == 0 || (!peer.input.is_empty() && peer.input.len() * 4 >= storage) {
            return;
        }
        let mut rest = FrameBuf::new();
        if !peer.input.is_empty() {
            rest.extend_from_slice(peer.input.as_slice());
        }
        let old = std::mem::replace(&mut peer.input, rest);
        self.conns.recycle(old.into_storage());
    }

    /// The peer finished sending: its last input is delivered (now, or once it is no longer held
    /// back) and it closes once its output is sent.
    pub(crate) fn input_ended(&mut self, id: ConnId) {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        if peer.held {
            peer.input_closed = true;
            self.conns.mark_dirty(id);
            return;
        }
        if peer.layers.is_empty() {
            self.deliver(id, true);
        }
        self.conns.close_gracefully(id);
    }

    /// A layer of `id` did not get what it needed by its deadline.
    pub(crate) fn layer_timed_out(&mut self, id: ConnId) {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        let Some(layer) = peer.layers.first() else {
            return; // done since
        };
        let error = layer.timed_out();
        self.fail(id, &error);
    }

    /// Reports `error` for `id` and closes it at once.
    pub(crate) fn fail(&mut self, id: ConnId, error: &RequestError) {
        if let Some(peer) = self.conns.slab.get_mut(id) {
            peer.outcome = Outcome::Failed;
            self.shared.report(Some(&peer.addr), error);
        }
        self.conns.abort(id);
    }

    /// Feeds `id`'s input to its layers; returns whether they are all done (so the input is the
    /// handler's). The last layer finishing opens the connection to the handler.
    fn advance_layers(&mut self, id: ConnId) -> bool {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return false;
        };
        if peer.layers.is_empty() {
            return true;
        }
        while let Some(layer) = peer.layers.first_mut() {
            match layer.advance(&mut peer.input, &mut peer.addr, &mut peer.info) {
                Ok(Progress::Pending) => return false,
                Ok(Progress::Done) => {
                    peer.layers.remove(0);
                    // The next layer takes the stream from here: what was read past the end of this
                    // one's part (the start of a TLS handshake after a PROXY header) is read again
                    // through it, at once (`take_reread`): no readiness event would announce it.
                    if let Some(next) = peer.layers.first_mut() {
                        let rest = Prefixed::wrap(peer.input.as_slice(), peer.io.clone());
                        peer.input = FrameBuf::new();
                        match next.wrap(rest) {
                            Ok(io) => peer.io = io,
                            Err(e) => {
                                self.fail(id, &e);
                                return false;
                            }
                        }
                        peer.reread = true;
                    }
                }
                Err(e) => {
                    self.fail(id, &e);
                    return false;
                }
            }
        }
        peer.layers = Vec::new();
        self.opened(id);
        true
    }

    /// Hands every complete frame of `id`'s input to `on_message`, until the input runs out, the
    /// connection starts closing, or it is held back. At `eof`, the codec may also hand over a final
    /// partial frame.
    fn deliver(&mut self, id: ConnId, eof: bool) {
        loop {
            let Some(peer) = self.conns.slab.get_mut(id) else {
                return;
            };
            if peer.closing || peer.closed || peer.held {
                return;
            }
            let decoded = if eof {
                peer.codec.decode_eof(&mut peer.input)
            } else {
                peer.codec.decode(&mut peer.input)
            };
            match decoded {
                Ok(Some(message)) => {
                    let handler = self.handler.clone();
                    self.call(id, |conn| handler.on_message(conn, message));
                }
                Ok(None) => {
                    if peer.input.is_empty() && peer.state == ConnState::Active {
                        // Every complete message is handled and nothing is left: between requests.
                        peer.state = ConnState::Idle;
                        self.shared.state(&peer.addr, ConnState::Idle);
                    }
                    let close = peer.input.is_empty() && peer.close_at_boundary;
                    if close {
                        self.conns.close_gracefully(id);
                    }
                    return;
                }
                Err(e) => {
                    // The stream can no longer be split into frames: say why, and hang up.
                    peer.input = FrameBuf::new();
                    peer.outcome = Outcome::Failed;
                    let err = anyhow::Error::new(e).context("undecodable input");
                    self.shared
                        .report(Some(&peer.addr), &RequestError::Handler(err));
                    self.conns.close_gracefully(id);
                    return;
                }
            }
        }
    }

    /// The server began draining: closes `id` (once its output is out) if it is between messages,
    /// or as soon as the message it is in the middle of has arrived and been handled.
    pub(crate) fn close_at_boundary(&mut self, id: ConnId) {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        peer.close_at_boundary = true;
        // A new connection's first message is on its way (Go's `StateNew`); bytes waiting in the
        // socket are a message the loop has not read yet. Either closes at its next boundary.
        let between = peer.state != ConnState::New && peer.input.is_empty() && !peer.held;
        if between && !crate::transport::has_input(&*peer.io) {
            self.conns.close_gracefully(id);
        }
    }

    /// Runs one handler callback for `id`; a failure or panic is reported and closes the connection.
    fn call(
        &mut self,
        id: ConnId,
        callback: impl FnOnce(&mut Conn<'_, H::Codec>) -> anyhow::Result<()>,
    ) {
        self.conns.backed_up.clear();
        let Some(mut conn) = Conn::new(id, &mut self.conns) else {
            return;
        };
        if let Err(e) = guarded(|| callback(&mut conn)) {
            self.shared.report(Some(conn.peer()), &e);
            if let Some(peer) = self.conns.slab.get_mut(id) {
                peer.outcome = Outcome::of(&Err(e));
            }
            self.conns.close_gracefully(id);
        }
        self.hold_if_backed_up(id);
    }

    /// Holds sender `id` back when its callback took other connections past half their output limit:
    /// nothing more is read or decoded from it until they are down to a quarter. So a burst from one
    /// connection is paced by its slowest *reading* receiver instead of disconnecting receivers that
    /// cannot keep up with the loop; one that does not read at all is closed by its write timeout,
    /// which releases the sender.
    fn hold_if_backed_up(&mut self, id: ConnId) {
        if self.conns.backed_up.is_empty() {
            return;
        }
        let mut receivers = std::mem::take(&mut self.conns.backed_up);
        receivers.sort_unstable();
        receivers.dedup();
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        if peer.closing || peer.closed {
            return;
        }
        if !peer.held {
            peer.held = true;
            self.held.push(id);
        }
        peer.waiting_on = receivers;
        self.count_paused(id);
        self.conns.mark_dirty(id); // stop reading it
    }

    /// Keeps the figures' count of paused (or held) connections in step with `id`.
    fn count_paused(&mut self, id: ConnId) {
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return;
        };
        let paused = (peer.paused || peer.held) && !peer.closed;
        if paused != peer.counted_paused {
            peer.counted_paused = paused;
            if paused {
                self.conns.paused += 1;
            } else {
                self.conns.paused = self.conns.paused.saturating_sub(1);
            }
        }
    }

    /// Lets go on one held sender whose receivers have caught up (or gone), if there is one: its
    /// buffered input is decoded, reading resumes, and if it had finished sending meanwhile, it
    /// closes now. Returns whether one was released.
    pub(crate) fn release_one(&mut self) -> bool {
        let Some(id) = self.next_released() else {
            return false;
        };
        let eof = self.conns.slab.get(id).is_some_and(|p| p.input_closed);
        self.count_paused(id);
        self.conns.mark_dirty(id); // read it again
        self.deliver(id, eof);
        if eof {
            self.conns.close_gracefully(id);
        }
        true
    }

    /// A held sender whose receivers have caught up (or gone), if any, taken off the held list.
    fn next_released(&mut self) -> Option<ConnId> {
        let low_water = self.conns.limit / 4;
        let slab = &mut self.conns.slab;
        let mesh = self.conns.mesh.as_deref();
        let mut released = None;
        self.held.retain(|&id| {
            if released.is_some() {
                return true;
            }
            let Some(peer) = slab.get(id) else {
                return false; // closed since
            };
            let behind: Vec<ConnId> = peer
                .waiting_on
                .iter()
                .copied()
                .filter(|&r| match mesh {
                    // Another loop's: its loop wakes this one when it catches up.
                    Some(mesh) if r.shard() != id.shard() => {
                        mesh.still_behind(r, low_water, id.shard())
                    }
                    _ => slab
                        .get(r)
                        .is_some_and(|p| !p.closed && p.output.len() > low_water),
                })
                .collect();
            let Some(peer) = slab.get_mut(id) else {
                return false;
            };
            if behind.is_empty() {
                peer.held = false;
                peer.waiting_on = Vec::new();
                released = Some(id);
                return false;
            }
            peer.waiting_on = behind;
            true
        });
        released
    }

    /// Writes what `id` has queued, as far as its socket takes it.
    pub(crate) fn flush(&mut self, id: ConnId) -> Flush {
        let limit = self.conns.limit;
        let Some(peer) = self.conns.slab.get_mut(id) else {
            return Flush::Nothing;
        };
        peer.dirty = false;
        if peer.closed {
            return Flush::Nothing;
        }
        let mut started_waiting = false;
        // Loops holding senders back for this connection, to wake once it has caught up.
        let mut woken = 0;
        // The output's storage once everything is out, for reuse.
        let mut spare = None;
        // What a layer still holds of earlier writes (TLS records) goes out before anything new.
        let flushed = peer
            .output
            .flush(&*peer.io)
            .and_then(|(written, flushed)| match flushed {
                Flushed::All if peer.io.flush_pending()? => Ok((written, Flushed::Partly)),
                _ => Ok((written, flushed)),
            });
        peer.io_pending = matches!(flushed, Ok((_, Flushed::Partly))) && peer.output.is_empty();
        match flushed {
            Ok((written, flushed)) => {
                self.conns.queued_bytes = self.conns.queued_bytes.saturating_sub(written);
                if let Some(backlog) = &peer.backlog {
                    woken = backlog.took(written, limit / 4);
                }
                let now = self.conns.now;
                if written > 0 {
                    peer.last_active = now;
                    peer.last_written = now;
                }
                if flushed == Flushed::All {
                    peer.output_since = None;
                    spare = peer.output.take_storage();
                    if peer.closing {
                        self.conns.wake(woken);
                        return Flush::Close;
                    }
                } else if peer.output_since.is_none() {
                    peer.output_since = Some(now);
                    peer.last_written = now;
                    started_waiting = true;
                }
            }
            Err(e) => {
                log::debug!("writing to {}: {e}", peer.addr);
                self.conns.abort(id);
                return Flush::Nothing;
            }
        }
        let interest = peer.wanted_interest(limit);
        self.conns.wake(woken);
        if let Some(storage) = spare {
            self.conns.recycle(storage);
        }
        self.count_paused(id);
        Flush::Open {
            interest,
            started_waiting,
        }
    }

    /// Closes `id`: `on_close` (if the handler saw it open), then it leaves the loop; returns its
    /// state, so the caller can forget its descriptor. Dropping it closes the socket.
    pub(crate) fn close(&mut self, id: ConnId) -> Option<Peer<H::Codec>> {
        let peer = self.conns.slab.get_mut(id)?;
        if peer.closed {
            return None;
        }
        peer.closed = true;
        if peer.greeted {
            let handler = self.handler.clone();
            self.call(id, |conn| {
                handler.on_close(conn);
                Ok(())
            });
        }
        self.count_paused(id);
        let peer = self.conns.slab.remove(id)?;
        if let Some(mesh) = self.conns.mesh.clone() {
            mesh.unregister(id);
            mesh.closed_one(self.conns.shard);
            if let Some(backlog) = &peer.backlog {
                self.conns.wake(backlog.closed());
            }
        }
        self.conns.queued_bytes = self.conns.queued_bytes.saturating_sub(peer.output.len());
        if !peer.cut {
            self.shared.state(&peer.addr, ConnState::Closed);
            self.shared.emit(Event::Finished {
                peer: &peer.addr,
                elapsed: peer.opened.elapsed(),
                outcome: peer.outcome,
            });
        }
        Some(peer)
    }
}
