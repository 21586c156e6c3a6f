//! `uring-echo --addr HOST:PORT [--bufs N] [--entries N]`: one thread, one io_uring, every
//! connection. Multishot accept on the listener; per connection one multishot recv that takes
//! 64 KiB buffers from a provided-buffer ring; each received buffer is sent back as it is (no copy)
//! and returns to the ring when its send completes. At most one send per connection is in flight
//! (two sends on one stream socket could complete out of order); what arrives meanwhile is copied
//! to a queue and sent next. Every send of a loop turn goes to the kernel in that turn's one
//! `io_uring_enter` (submit and wait). Prints `listening on ADDR`; exits 0 on SIGINT/SIGTERM.
//!
//! With `--fixed N` the accepted sockets are direct descriptors (a registered file table of N slots,
//! filled by the multishot accept itself, closed with an io_uring close): no file-table lookup per
//! operation. Off by default, so that both servers look sockets up the same way.
//!
//! Ring set-up: `SINGLE_ISSUER | DEFER_TASKRUN` (completions are processed only when this thread
//! asks for them, i.e. once per turn), falling back to `COOP_TASKRUN` and then to none on kernels
//! that refuse them; the mode is printed on stderr.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd, Fixed, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use uring_bench::{MAX_QUEUED, READ_CHUNK, listen, main_with, signal_fd};

const USAGE: &str = "uring-echo --addr HOST:PORT [--bufs N (power of two, <= 32768; default 512)] \
                     [--entries N (submission queue; default 4096)] \
                     [--fixed N (0: ordinary descriptors, the default; N > 0: a registered table of N \
                     direct descriptors, accepted into and used by index)]";
const BGID: u16 = 0;

// user_data: kind in the top byte, connection slot below.
const ACCEPT: u64 = 1 << 56;
const ACCEPT_RETRY: u64 = 2 << 56;
const SIGNAL: u64 = 3 << 56;
const RECV: u64 = 4 << 56;
const SEND: u64 = 5 << 56;
const CANCEL: u64 = 6 << 56;
const CLOSE: u64 = 7 << 56;
const KIND: u64 = 0xff << 56;

fn main() -> std::process::ExitCode {
    main_with(
        "uring-echo",
        USAGE,
        &[("bufs", 512), ("entries", 4096), ("fixed", 0)],
        |args| {
            let bufs = u16::try_from(args.number("bufs"))
                .ok()
                .filter(|n| n.is_power_of_two() && *n <= 32768)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "--bufs: a power of two up to 32768",
                    )
                })?;
            let entries = u32::try_from(args.number("entries"))
                .ok()
                .filter(|n| (1..=32768).contains(n))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "--entries: 1 to 32768")
                })?;
            let fixed = u32::try_from(args.number("fixed"))
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "--fixed: too large"))?;
            let listener = listen(&args.addr)?;
            UringEcho::new(listener, entries, bufs, fixed)?.run()
        },
    )
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping; the kernel picks the (page-aligned) address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping `new` made.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The provided-buffer ring: `count` buffers of READ_CHUNK bytes, handed to the kernel through a
/// ring of descriptors whose tail this thread advances (once per turn, in `publish`).
struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    count: u16,
    /// The tail as written locally; the kernel sees it at the next `publish`.
    tail: u16,
}

impl BufRing {
    fn new(count: u16) -> io::Result<Self> {
        let ring = Mapping::new(usize::from(count) * std::mem::size_of::<BufRingEntry>())?;
        let bufs = Mapping::new(usize::from(count) * READ_CHUNK)?;
        let mut this = BufRing {
            ring,
            bufs,
            count,
            tail: 0,
        };
        for bid in 0..count {
            this.give_back(bid);
        }
        Ok(this)
    }

    fn entries(&self) -> *mut BufRingEntry {
        self.ring.ptr.cast()
    }

    /// Buffer `bid`'s first `len` bytes (what a recv completion reported).
    fn data(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(READ_CHUNK);
        // SAFETY: `bid < count`, checked by the caller via `valid`; the buffer lies inside `bufs`,
        // and the kernel wrote `len` bytes into it and no longer touches it until it is given back.
        unsafe { std::slice::from_raw_parts(self.bufs.ptr.add(usize::from(bid) * READ_CHUNK), len) }
    }

    fn valid(&self, bid: u16) -> bool {
        bid < self.count
    }

    /// Puts buffer `bid` back at the ring's (local) tail.
    fn give_back(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: index < count entries of the ring mapping; the kernel reads entries only up to
        // the published tail, and this one is past it.
        let entry = unsafe { &mut *self.entries().add(index) };
        entry.set_addr(self.bufs.ptr as u64 + u64::from(bid) * READ_CHUNK as u64);
        entry.set_len(READ_CHUNK as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every buffer given back so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field shares the first entry's reserved bytes, inside the mapping; the
        // kernel reads it concurrently, hence the atomic release store.
        unsafe {
            let tail = BufRingEntry::tail(self.entries()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

/// What a send in flight sends from.
enum Source {
    /// A received buffer, sent back as it is; it returns to the ring when the send completes.
    Ring(u16),
    /// Bytes that arrived while another send was in flight.
    Owned(Vec<u8>),
}

struct Sending {
    source: Source,
    off: usize,
    len: usize,
}

/// A connection's socket: an ordinary descriptor, or an index in the registered file table.
enum Socket {
    Fd(OwnedFd),
    Direct(u32),
}

impl Socket {
    fn target(&self) -> Target {
        match self {
            Socket::Fd(fd) => Target::Fd(fd.as_raw_fd()),
            Socket::Direct(index) => Target::Direct(*index),
        }
    }
}

#[derive(Clone, Copy)]
enum Target {
    Fd(RawFd),
    Direct(u32),
}

/// Builds the same operation on either kind of socket.
macro_rules! on {
    ($target:expr, |$fd:ident| $build:expr) => {
        match $target {
            Target::Fd(raw) => {
                let $fd = Fd(raw);
                $build
            }
            Target::Direct(index) => {
                let $fd = Fixed(index);
                $build
            }
        }
    };
}

struct Conn {
    socket: Socket,
    /// The multishot recv is armed (its last completion has not come yet).
    receiving: bool,
    /// Reading stopped: the queue passed MAX_QUEUED, or the buffer ring ran dry.
    paused: bool,
    sending: Option<Sending>,
    queued: Vec<u8>,
    /// Cancellations submitted and not yet completed (the slot is not reused before they are).
    cancels: u32,
    /// End of stream or an error: close once nothing is in flight and the queue is sent.
    closing: bool,
    /// A direct descriptor's close was submitted: the slot is freed by its completion.
    shut: bool,
}

struct UringEcho {
    // Declared first, so dropped first: the kernel lets go of the buffer ring before it is unmapped.
    ring: IoUring,
    bufs: BufRing,
    listener: TcpListener,
    signals: OwnedFd,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections waiting for buffers to come back to the ring before their recv is re-armed.
    starved: Vec<usize>,
    /// Ring buffers held by sends in flight (not available to the kernel).
    held: usize,
    completions: Vec<(u64, i32, u32)>,
    /// The 10 ms back-off after an accept error.
    backoff: Timespec,
    /// Sockets are direct descriptors (`--fixed`); their index is the connection's slot.
    direct: bool,
    stop: bool,
}

fn build_ring(entries: u32) -> io::Result<IoUring> {
    let cq = entries.saturating_mul(4);
    type Setup = fn(&mut io_uring::Builder);
    let attempts: [(&str, Setup); 3] = [
        ("single_issuer+defer_taskrun", |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        }),
        ("coop_taskrun", |b| {
            b.setup_coop_taskrun();
        }),
        ("plain", |_| {}),
    ];
    let mut last = None;
    for (name, set) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq).setup_submit_all();
        set(&mut builder);
        match builder.build(entries) {
            Ok(ring) => {
                eprintln!("uring-echo: ring mode {name}, {entries} sq entries, {cq} cq entries");
                return Ok(ring);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no io_uring set-up tried")))
}

impl UringEcho {
    fn new(listener: TcpListener, entries: u32, bufs: u16, fixed: u32) -> io::Result<Self> {
        let ring = build_ring(entries)?;
        if fixed > 0 {
            ring.submitter().register_files_sparse(fixed)?;
        }
        let bufs = BufRing::new(bufs)?;
        // SAFETY: the ring mapping holds `count` entries, is page-aligned (mmap) and outlives the
        // registration: `ring` is dropped before `bufs`.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring.ptr as u64,
                bufs.count,
                BGID,
                0,
            )?;
        }
        bufs.publish();
        let mut this = UringEcho {
            ring,
            bufs,
            listener,
            signals: signal_fd()?,
            conns: Vec::new(),
            free: Vec::new(),
            starved: Vec::new(),
            held: 0,
            completions: Vec::with_capacity(1024),
            backoff: Timespec::new().nsec(10_000_000),
            direct: fixed > 0,
            stop: false,
        };
        this.arm_accept()?;
        let poll = opcode::PollAdd::new(Fd(this.signals.as_raw_fd()), libc::POLLIN as u32).build();
        this.push(poll.user_data(SIGNAL))?;
        Ok(this)
    }

    /// Queues one submission, flushing the queue to the kernel first if it is full.
    fn push(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        // SAFETY: every buffer an entry points to (ring buffers, a connection's owned bytes, the
        // back-off timespec) stays put until its completion arrives.
        if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
            return Ok(());
        }
        self.ring.submit()?;
        // SAFETY: as above.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("submission queue still full after submitting"))
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        // A direct descriptor is in no process file table, so it takes no close-on-exec flag
        // (the kernel refuses one with EINVAL).
        let flags = if self.direct { 0 } else { libc::SOCK_CLOEXEC };
        let sqe = opcode::AcceptMulti::new(Fd(self.listener.as_raw_fd()))
            .flags(flags)
            .allocate_file_index(self.direct)
            .build()
            .user_data(ACCEPT);
        self.push(sqe)
    }

    fn arm_recv(&mut self, slot: usize) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        conn.receiving = true;
        conn.paused = false;
        let sqe = on!(conn.socket.target(), |fd| opcode::RecvMulti::new(fd, BGID)
            .build())
        .user_data(RECV | slot as u64);
        self.push(sqe)
    }

    fn run(&mut self) -> io::Result<()> {
        while !self.stop {
            self.bufs.publish();
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The completion queue overflowed into the kernel's list: drain it, then go on.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            self.completions.clear();
            self.completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            let mut completions = std::mem::take(&mut self.completions);
            for &(data, res, flags) in &completions {
                let slot = (data & !KIND) as usize;
                match data & KIND {
                    ACCEPT => self.accepted(res, flags)?,
                    ACCEPT_RETRY => self.arm_accept()?,
                    SIGNAL => self.stop = true,
                    RECV => self.received(slot, res, flags)?,
                    SEND => self.sent(slot, res)?,
                    CLOSE => {
                        // A direct descriptor's close finished: its index (the slot) is free again.
                        if res < 0 {
                            eprintln!("uring-echo: close: {}", io::Error::from_raw_os_error(-res));
                        }
                        if let Some(conn) = self.conns.get_mut(slot) {
                            *conn = None;
                        }
                    }
                    CANCEL => {
                        if let Some(Some(conn)) = self.conns.get_mut(slot) {
                            conn.cancels = conn.cancels.saturating_sub(1);
                        }
                        self.resume(slot)?;
                        self.settle(slot)?;
                    }
                    _ => eprintln!("uring-echo: completion with unknown user_data {data:#x}"),
                }
            }
            completions.clear();
            self.completions = completions;
            self.rearm_starved()?;
        }
        Ok(())
    }

    fn accepted(&mut self, res: i32, flags: u32) -> io::Result<()> {
        if !cqueue::more(flags) {
            if res < 0 {
                // EMFILE and the like: retry after a pause rather than spin.
                eprintln!("uring-echo: accept: {}", io::Error::from_raw_os_error(-res));
                let sqe = opcode::Timeout::new(&self.backoff)
                    .build()
                    .user_data(ACCEPT_RETRY);
                self.push(sqe)?;
            } else {
                self.arm_accept()?;
            }
        }
        if res < 0 {
            return Ok(());
        }
        let (socket, slot) = if self.direct {
            // The kernel picked a free index of the table; the slot is that index.
            let index = res as u32;
            (Socket::Direct(index), index as usize)
        } else {
            // SAFETY: a completed accept's result is a fresh descriptor that we now own.
            let fd = unsafe { OwnedFd::from_raw_fd(res as RawFd) };
            (Socket::Fd(fd), self.free.pop().unwrap_or(self.conns.len()))
        };
        if slot >= self.conns.len() {
            self.conns.resize_with(slot + 1, || None);
        }
        if self.conns[slot].is_some() {
            return Err(io::Error::other(format!(
                "accepted into slot {slot}, which is in use"
            )));
        }
        let conn = Conn {
            socket,
            receiving: false,
            paused: false,
            sending: None,
            queued: Vec::new(),
            cancels: 0,
            closing: false,
            shut: false,
        };
        self.conns[slot] = Some(conn);
        self.arm_recv(slot)
    }

    fn received(&mut self, slot: usize, res: i32, flags: u32) -> io::Result<()> {
        let bid = cqueue::buffer_select(flags);
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            if let Some(bid) = bid.filter(|b| self.bufs.valid(*b)) {
                self.bufs.give_back(bid);
            }
            return Ok(());
        };
        if !cqueue::more(flags) {
            conn.receiving = false;
        }
        if res > 0 {
            let Some(bid) = bid.filter(|b| self.bufs.valid(*b)) else {
                eprintln!("uring-echo: recv completion without a valid buffer id");
                conn.closing = true;
                return self.settle(slot);
            };
            let len = res as usize;
            if conn.closing {
                self.bufs.give_back(bid);
            } else if conn.sending.is_none() {
                let sending = Sending {
                    source: Source::Ring(bid),
                    off: 0,
                    len,
                };
                conn.sending = Some(sending);
                self.held += 1;
                self.submit_send(slot)?;
            } else {
                conn.queued.extend_from_slice(self.bufs.data(bid, len));
                self.bufs.give_back(bid);
                if conn.queued.len() > MAX_QUEUED && conn.receiving && !conn.paused {
                    conn.paused = true;
                    self.cancel_recv(slot)?;
                }
            }
        } else if res == -libc::ENOBUFS {
            // Every buffer is out (held by sends in flight): re-armed when one comes back.
            conn.paused = true;
            self.starved.push(slot);
        } else if res == -libc::ECANCELED {
            // Paused for back-pressure (or closing): re-armed once the queue is sent.
            self.resume(slot)?;
        } else {
            // 0: end of stream; < 0: a broken connection.
            conn.closing = true;
        }
        // The kernel may end a multishot recv after data (e.g. when its completion queue
        // overflowed): a connection that is neither paused nor closing reads on.
        if let Some(Some(conn)) = self.conns.get(slot)
            && !conn.receiving
            && !conn.paused
            && !conn.closing
            && conn.cancels == 0
        {
            self.arm_recv(slot)?;
        }
        self.settle(slot)
    }

    fn submit_send(&mut self, slot: usize) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get(slot) else {
            return Ok(());
        };
        let Some(s) = &conn.sending else {
            return Ok(());
        };
        let base = match &s.source {
            Source::Ring(bid) => self.bufs.data(*bid, s.len).as_ptr(),
            Source::Owned(bytes) => bytes.as_ptr(),
        };
        // SAFETY: off < len <= the source's length.
        let ptr = unsafe { base.add(s.off) };
        let len = u32::try_from(s.len - s.off).unwrap_or(u32::MAX);
        let sqe = on!(conn.socket.target(), |fd| opcode::Send::new(fd, ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build())
        .user_data(SEND | slot as u64);
        self.push(sqe)
    }

    fn sent(&mut self, slot: usize, res: i32) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        let Some(mut s) = conn.sending.take() else {
            return Ok(());
        };
        if res > 0 {
            s.off += res as usize;
            if s.off < s.len {
                conn.sending = Some(s);
                return self.submit_send(slot);
            }
        } else {
            // An error (or a send that took nothing): the connection is broken.
            conn.closing = true;
            conn.queued.clear();
        }
        let spare = match s.source {
            Source::Ring(bid) => {
                self.bufs.give_back(bid);
                self.held -= 1;
                None
            }
            Source::Owned(bytes) => Some(bytes),
        };
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        if !conn.queued.is_empty() {
            // Swap the queue out for sending; the sent vector becomes the next queue.
            let mut next = spare.unwrap_or_default();
            next.clear();
            let bytes = std::mem::replace(&mut conn.queued, next);
            let len = bytes.len();
            conn.sending = Some(Sending {
                source: Source::Owned(bytes),
                off: 0,
                len,
            });
            return self.submit_send(slot);
        }
        self.resume(slot)?;
        self.settle(slot)
    }

    /// Re-arms the recv of a connection paused for back-pressure once its queue is sent and its
    /// cancelled recv has finished.
    fn resume(&mut self, slot: usize) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get(slot) else {
            return Ok(());
        };
        let ready = conn.paused
            && !conn.receiving
            && !conn.closing
            && conn.cancels == 0
            && conn.sending.is_none()
            && conn.queued.is_empty();
        if ready && !self.starved.contains(&slot) {
            // (A starved connection is re-armed at the end of the turn instead.)
            self.arm_recv(slot)?;
        }
        Ok(())
    }

    /// At the end of a turn: the connections that found the ring empty read again, unless every
    /// buffer is still held by a send (then the next send completion makes room). The buffers given
    /// back this turn are published before the re-armed recvs reach the kernel.
    fn rearm_starved(&mut self) -> io::Result<()> {
        if self.held >= usize::from(self.bufs.count) {
            return Ok(());
        }
        while let Some(slot) = self.starved.pop() {
            if let Some(Some(conn)) = self.conns.get(slot)
                && !conn.closing
                && !conn.receiving
                && conn.cancels == 0
                && conn.queued.len() <= MAX_QUEUED
            {
                self.arm_recv(slot)?;
            }
        }
        Ok(())
    }

    fn cancel_recv(&mut self, slot: usize) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        conn.cancels += 1;
        let sqe = opcode::AsyncCancel::new(RECV | slot as u64)
            .build()
            .user_data(CANCEL | slot as u64);
        self.push(sqe)
    }

    /// Closes a closing connection once nothing of it is in flight, cancelling its recv first.
    fn settle(&mut self, slot: usize) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        if !conn.closing || conn.shut {
            return Ok(());
        }
        if conn.receiving {
            if conn.cancels == 0 {
                return self.cancel_recv(slot);
            }
            return Ok(());
        }
        if conn.sending.is_some() || conn.cancels > 0 {
            return Ok(());
        }
        // Nothing refers to the slot any more: close the socket and reuse the slot.
        self.starved.retain(|s| *s != slot);
        if let Socket::Direct(index) = conn.socket {
            // The slot stays taken (by a connection that is closing) until the close completes.
            conn.shut = true;
            let sqe = opcode::Close::new(Fixed(index))
                .build()
                .user_data(CLOSE | slot as u64);
            return self.push(sqe);
        }
        self.conns[slot] = None;
        self.free.push(slot);
        Ok(())
    }
}
