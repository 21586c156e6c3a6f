//! [`Mesh`]: the event loops of one [`Reactor`](crate::Reactor), and the mail between them.
//!
//! Each loop owns its connections outright (their sockets, buffers and timers are touched by its
//! thread only), so nothing on a loop's fast path takes a lock. What one loop's handler does to a
//! connection of another loop — a message, a broadcast, a disconnect — travels as [`Mail`]: queued
//! in the target loop's mailbox, which wakes it through an eventfd in its epoll set. A loop posts
//! everything one turn produced in one batch (one lock, at most one wake-up per target), and mail from
//! one loop to another arrives in the order it was posted: what one sender sends to one receiver
//! keeps its order.
//!
//! The bounded-output rules hold across loops exactly: each connection of a reactor with several
//! loops has a [`Backlog`], the bytes queued for it *or on their way to it*, which a sender's loop
//! reserves before it posts a message. So a message that would take another loop's connection past
//! its bound is refused at once ([`SendError::Full`](super::SendError::Full)), and a sender that takes
//! one past half of it is held back, as for a connection of its own loop. The receiver's loop wakes
//! the loops holding senders back once it is down to a quarter.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use super::id::ConnId;
use super::send::SendError;
use crate::addr::Addr;
use crate::serving::Admitted;
use crate::sys::EventFd;
use crate::transport::Incoming;

/// What one loop asks of another.
pub(crate) enum Mail {
    /// A connection the accepting loop gave this one to serve.
    Adopt(Admitted<Incoming>),
    /// Bytes, already framed by the sender's codec and reserved in `to`'s [`Backlog`].
    Send { to: ConnId, bytes: Vec<u8> },
    /// The same for each of `to`.
    Broadcast { to: Vec<ConnId>, bytes: Arc<[u8]> },
    /// Close this connection at once.
    Disconnect(ConnId),
    /// A connection this loop holds senders back for caught up (or closed): look again.
    Recheck,
    /// A connection closed while the accepting loop was at the connection cap: look at the listener
    /// again.
    Room,
}

/// The output of one connection as every loop sees it: the bytes queued for it, or reserved for
/// messages on their way to it, and which loops hold senders back until it catches up.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    bytes: AtomicUsize,
    /// One bit per loop (its number modulo 64) holding a sender back for it.
    watchers: AtomicU64,
}

impl Backlog {
    /// `n` more bytes are queued for it.
    pub(crate) fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::SeqCst);
    }

    /// `n` of its bytes were sent (or dropped). When that leaves it at `low_water` or under, returns
    /// the loops to wake (bits, see [`Mesh::recheck`]); they are woken once per watch.
    pub(crate) fn took(&self, n: usize, low_water: usize) -> u64 {
        if n == 0 {
            return 0;
        }
        let before = self
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                Some(b.saturating_sub(n))
            })
            .unwrap_or(0);
        if before.saturating_sub(n) <= low_water {
            self.watchers.swap(0, Ordering::SeqCst)
        } else {
            0
        }
    }

    /// The connection closed: nothing is queued for it any more. Returns the loops to wake.
    pub(crate) fn closed(&self) -> u64 {
        self.bytes.store(0, Ordering::SeqCst);
        self.watchers.swap(0, Ordering::SeqCst)
    }
}

/// One loop's mailbox, and what the others may know of it.
struct Lane {
    mail: Mutex<Vec<Mail>>,
    /// A wake-up is on its way: posting more needs no second one.
    notified: AtomicBool,
    wake: EventFd,
    /// Connections it serves, or was given and has not taken in yet.
    open: AtomicUsize,
    /// Its loop has ended: mail to it is refused.
    closed: AtomicBool,
    /// The peer address of each of its connections, by slot, for [`Conn::peer_of`] from other loops.
    ///
    /// [`Conn::peer_of`]: super::Conn::peer_of
    peers: RwLock<Vec<Option<Entry>>>,
}

/// What other loops may know of one connection.
struct Entry {
    generation: u32,
    addr: Addr,
    backlog: Arc<Backlog>,
}

/// The loops of one `Reactor`. Shared by all of them (behind an `Arc`).
pub(crate) struct Mesh {
    lanes: Box<[Lane]>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("loops", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// A mesh of `loops` loops (at least one, at most `u16::MAX`).
    ///
    /// # Errors
    /// `eventfd(2)` failing.
    pub(crate) fn new(loops: usize) -> std::io::Result<Arc<Mesh>> {
        let loops = loops.clamp(1, usize::from(u16::MAX));
        let lanes = (0..loops)
            .map(|_| {
                Ok(Lane {
                    mail: Mutex::new(Vec::new()),
                    notified: AtomicBool::new(false),
                    wake: EventFd::new(false)?,
                    open: AtomicUsize::new(0),
                    closed: AtomicBool::new(false),
                    peers: RwLock::new(Vec::new()),
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Arc::new(Mesh {
            lanes: lanes.into_boxed_slice(),
        }))
    }

    pub(crate) fn loops(&self) -> usize {
        self.lanes.len()
    }

    /// The descriptor that becomes readable when mail for `shard` arrives.
    pub(crate) fn wake_fd(&self, shard: u16) -> BorrowedFd<'_> {
        self.lanes[usize::from(shard)].wake.as_fd()
    }

    /// Appends `batch` (emptied) to `shard`'s mailbox and wakes its loop, unless a wake-up is already
    /// on its way. Returns `false`, leaving `batch` as it is, if that loop has ended.
    pub(crate) fn post(&self, shard: u16, batch: &mut Vec<Mail>) -> bool {
        let Some(lane) = self.lanes.get(usize::from(shard)) else {
            return false;
        };
        let mut mail = lane.mail.lock();
        // Looked at under the lock `close` takes: nothing is appended after a loop took its last mail.
        if lane.closed.load(Ordering::Acquire) {
            return false;
        }
        mail.append(batch);
        drop(mail);
        // Posted before the flag is looked at: a loop that cleared the flag takes this batch with
        // the rest, or is woken for it.
        if !lane.notified.swap(true, Ordering::AcqRel) {
            lane.wake.notify();
        }
        true
    }

    /// Takes `shard`'s mail into `into` (which must be empty), in the order it was posted.
    pub(crate) fn take(&self, shard: u16, into: &mut Vec<Mail>) {
        let lane = &self.lanes[usize::from(shard)];
        lane.wake.take();
        // Cleared before taking: what is posted from now on wakes the loop again.
        lane.notified.store(false, Ordering::Release);
        std::mem::swap(&mut *lane.mail.lock(), into);
    }

    /// `shard`'s loop is ending: later mail is refused (its senders keep it), and what is queued is
    /// handed back, for the loop to serve the connections among it before it ends.
    pub(crate) fn close(&self, shard: u16) -> Vec<Mail> {
        let lane = &self.lanes[usize::from(shard)];
        let mut mail = lane.mail.lock();
        lane.closed.store(true, Ordering::Release);
        std::mem::take(&mut *mail)
    }

    /// The loop a new connection goes to: the one serving the fewest, the first of equals. Counted
    /// there at once, so a burst of accepts spreads before the loops have taken them in.
    pub(crate) fn place(&self) -> u16 {
        let (shard, lane) = self
            .lanes
            .iter()
            .enumerate()
            .min_by_key(|(_, lane)| lane.open.load(Ordering::Relaxed))
            .unwrap_or((0, &self.lanes[0]));
        lane.open.fetch_add(1, Ordering::Relaxed);
        shard as u16
    }

    /// A connection of `shard`'s (or given to it) closed, or was never taken in.
    pub(crate) fn closed_one(&self, shard: u16) {
        let lane = &self.lanes[usize::from(shard)];
        let _ = lane
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// `shard` took in a connection that was not placed on it (one that a loop that had ended could
    /// not take).
    pub(crate) fn adopt_here(&self, shard: u16) {
        self.lanes[usize::from(shard)]
            .open
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open in all loops (and given to a loop, not yet taken in).
    pub(crate) fn open(&self) -> usize {
        self.lanes
            .iter()
            .map(|lane| lane.open.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections open in `shard`'s loop.
    pub(crate) fn open_in(&self, shard: u16) -> usize {
        self.lanes
            .get(usize::from(shard))
            .map_or(0, |lane| lane.open.load(Ordering::Relaxed))
    }

    /// Records `id`'s peer address, for other loops' [`peer_of`](Self::peer_of), and returns its
    /// backlog, which the loop keeps up to date.
    pub(crate) fn register(&self, id: ConnId, addr: &Addr) -> Arc<Backlog> {
        let backlog = Arc::new(Backlog::default());
        let mut peers = self.lanes[usize::from(id.shard())].peers.write();
        let slot = id.index() as usize;
        if peers.len() <= slot {
            peers.resize_with(slot + 1, || None);
        }
        peers[slot] = Some(Entry {
            generation: id.generation(),
            addr: addr.clone(),
            backlog: backlog.clone(),
        });
        backlog
    }

    /// `id` closed.
    pub(crate) fn unregister(&self, id: ConnId) {
        let mut peers = self.lanes[usize::from(id.shard())].peers.write();
        if let Some(slot) = peers.get_mut(id.index() as usize)
            && slot
                .as_ref()
                .is_some_and(|e| e.generation == id.generation())
        {
            *slot = None;
        }
    }

    /// Runs `f` on `id`'s entry, if it is open.
    fn with_entry<R>(&self, id: ConnId, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        let lane = self.lanes.get(usize::from(id.shard()))?;
        let peers = lane.peers.read();
        peers
            .get(id.index() as usize)?
            .as_ref()
            .filter(|e| e.generation == id.generation())
            .map(f)
    }

    /// The peer address of `id`, if it is open (in any loop).
    pub(crate) fn peer_of(&self, id: ConnId) -> Option<Addr> {
        self.with_entry(id, |e| e.addr.clone())
    }

    /// Reserves `n` bytes in `to`'s backlog under `limit`; returns whether that takes it past half
    /// the limit (the sender is then held back).
    ///
    /// # Errors
    /// [`SendError::Closed`] if `to` is not open, [`SendError::Full`] (nothing reserved) if `n` more
    /// bytes would take it past `limit`.
    pub(crate) fn reserve(&self, to: ConnId, n: usize, limit: usize) -> Result<bool, SendError> {
        self.with_entry(to, |e| reserve(&e.backlog, n, limit))
            .unwrap_or(Err(SendError::Closed))
    }

    /// Reserves `n` bytes for every open connection of loop `shard` but `except`, telling `each`
    /// how it went for each (as [`reserve`](Self::reserve) would).
    pub(crate) fn reserve_all(
        &self,
        shard: u16,
        except: ConnId,
        n: usize,
        limit: usize,
        mut each: impl FnMut(ConnId, Result<bool, SendError>),
    ) {
        let Some(lane) = self.lanes.get(usize::from(shard)) else {
            return;
        };
        let peers = lane.peers.read();
        for (index, entry) in peers.iter().enumerate() {
            let Some(entry) = entry else { continue };
            let id = ConnId::new(shard, index as u32, entry.generation);
            if id != except {
                each(id, reserve(&entry.backlog, n, limit));
            }
        }
    }

    /// Whether `id` is still behind: open, with more than `low_water` bytes queued. Loop `watcher`
    /// holds a sender back for it until it is not, so it asks to be woken when it catches up; asked
    /// before looking, so the wake-up cannot be missed.
    pub(crate) fn still_behind(&self, id: ConnId, low_water: usize, watcher: u16) -> bool {
        self.with_entry(id, |e| {
            e.backlog
                .watchers
                .fetch_or(1 << (watcher % 64), Ordering::SeqCst);
            e.backlog.bytes.load(Ordering::SeqCst) > low_water
        })
        .unwrap_or(false)
    }

    /// The loops named by `watchers` (bits from [`Backlog::took`]), each to be sent
    /// [`Mail::Recheck`].
    pub(crate) fn recheck(&self, watchers: u64) -> impl Iterator<Item = u16> + '_ {
        (0..self.lanes.len() as u16).filter(move |s| watchers & (1 << (s % 64)) != 0)
    }
}

/// Reserves `n` bytes in `backlog` under `limit` (see [`Mesh::reserve`]).
fn reserve(backlog: &Backlog, n: usize, limit: usize) -> Result<bool, SendError> {
    let before = backlog
        .bytes
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
            (b + n <= limit).then_some(b + n)
        })
        .map_err(|_| SendError::Full)?;
    Ok(before + n > limit / 2)
}

/// Mail a loop produced during one turn, by target loop, posted together at the end of the turn.
#[derive(Default)]
pub(crate) struct Outbox {
    by_shard: Vec<Vec<Mail>>,
    /// Whether any batch is non-empty.
    any: bool,
}

impl Outbox {
    pub(crate) fn push(&mut self, shard: u16, mail: Mail) {
        let shard = usize::from(shard);
        if self.by_shard.len() <= shard {
            self.by_shard.resize_with(shard + 1, Vec::new);
        }
        self.by_shard[shard].push(mail);
        self.any = true;
    }

    /// Posts every batch through `mesh`; what a loop that has ended cannot take goes to
    /// `undelivered`.
    pub(crate) fn post(&mut self, mesh: &Mesh, mut undelivered: impl FnMut(u16, Mail)) {
        if !std::mem::take(&mut self.any) {
            return;
        }
        for (shard, batch) in self.by_shard.iter_mut().enumerate() {
            if !batch.is_empty() && !mesh.post(shard as u16, batch) {
                for mail in batch.drain(..) {
                    undelivered(shard as u16, mail);
                }
            }
        }
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("pending", &self.any)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn woken(mesh: &Mesh) -> bool {
        let mut fds = [crate::sys::readable(mesh.wake_fd(1))];
        crate::sys::poll(&mut fds, Some(std::time::Duration::ZERO)).unwrap() == 1
    }

    fn addr(port: u16) -> Addr {
        Addr::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn mail_arrives_in_order_and_wakes_once() {
        let mesh = Mesh::new(2).unwrap();
        let mut batch: Vec<Mail> = (0..3u8)
            .map(|n| Mail::Send {
                to: ConnId::new(1, 0, 0),
                bytes: vec![n],
            })
            .collect();
        assert!(mesh.post(1, &mut batch));
        assert!(batch.is_empty());
        assert!(mesh.post(1, &mut vec![Mail::Room]));
        assert!(woken(&mesh), "the loop is woken");
        let mut got = Vec::new();
        mesh.take(1, &mut got);
        let order: Vec<u8> = got
            .iter()
            .filter_map(|m| match m {
                Mail::Send { bytes, .. } => Some(bytes[0]),
                _ => None,
            })
            .collect();
        assert_eq!(order, [0, 1, 2]);
        assert!(matches!(got[3], Mail::Room));
        assert!(!woken(&mesh), "the wake-up was taken");
        assert!(mesh.post(1, &mut vec![Mail::Room]));
        assert!(woken(&mesh), "woken again after a take");
    }

    #[test]
    fn mail_to_an_ended_loop_is_refused() {
        let mesh = Mesh::new(2).unwrap();
        assert!(mesh.post(1, &mut vec![Mail::Room]));
        assert_eq!(mesh.close(1).len(), 1, "what was queued is handed back");
        let mut late = vec![Mail::Room];
        assert!(!mesh.post(1, &mut late));
        assert_eq!(late.len(), 1, "left to the sender");
        let mut got = Vec::new();
        mesh.take(1, &mut got);
        assert!(got.is_empty());
    }

    #[test]
    fn places_on_the_least_loaded_loop() {
        let mesh = Mesh::new(3).unwrap();
        assert_eq!(mesh.place(), 0);
        assert_eq!(mesh.place(), 1);
        assert_eq!(mesh.place(), 2);
        mesh.closed_one(1);
        assert_eq!(mesh.open(), 2);
        assert_eq!(mesh.place(), 1);
        assert_eq!(mesh.open(), 3);
        assert_eq!(mesh.open_in(2), 1);
    }

    #[test]
    fn peer_addresses_are_generation_checked() {
        let mesh = Mesh::new(2).unwrap();
        let id = ConnId::new(1, 4, 7);
        let _backlog = mesh.register(id, &addr(9));
        assert_eq!(mesh.peer_of(id), Some(addr(9)));
        assert_eq!(
            mesh.peer_of(ConnId::new(1, 4, 8)),
            None,
            "a later connection in the slot"
        );
        assert_eq!(mesh.peer_of(ConnId::new(0, 4, 7)), None, "another loop");
        mesh.unregister(ConnId::new(1, 4, 6));
        assert_eq!(mesh.peer_of(id), Some(addr(9)), "a stale close leaves it");
        mesh.unregister(id);
        assert_eq!(mesh.peer_of(id), None);
    }

    #[test]
    fn reservations_keep_the_bound_and_wake_watchers_once() {
        let mesh = Mesh::new(3).unwrap();
        let id = ConnId::new(1, 0, 0);
        let backlog = mesh.register(id, &addr(1));
        assert_eq!(mesh.reserve(id, 40, 100), Ok(false));
        assert_eq!(mesh.reserve(id, 20, 100), Ok(true), "past half");
        assert_eq!(mesh.reserve(id, 41, 100), Err(SendError::Full));
        assert_eq!(
            mesh.reserve(ConnId::new(1, 0, 1), 1, 100),
            Err(SendError::Closed)
        );
        assert!(mesh.still_behind(id, 25, 2));
        assert_eq!(backlog.took(30, 25), 0, "30 left: still behind");
        let woken = backlog.took(10, 25);
        assert_eq!(mesh.recheck(woken).collect::<Vec<_>>(), [2]);
        assert_eq!(backlog.took(10, 25), 0, "woken once per watch");
        assert!(!mesh.still_behind(id, 25, 2));
        let other = ConnId::new(1, 1, 0);
        let _b = mesh.register(other, &addr(2));
        let mut seen = Vec::new();
        mesh.reserve_all(1, other, 90, 100, |id, r| seen.push((id, r)));
        assert_eq!(seen, [(id, Ok(true))], "all but `except`, past half");
        seen.clear();
        mesh.reserve_all(1, other, 1, 100, |id, r| seen.push((id, r)));
        assert_eq!(seen, [(id, Err(SendError::Full))]);
    }
}
