//! `epoll-echo --addr HOST:PORT`: one thread, one level-triggered epoll set, every connection: the
//! shape of the crate's Reactor loop without its engine. Per readable connection, one `recv` of up
//! to 64 KiB into one shared buffer, then `send` of those bytes at once; what the socket does not
//! take is queued and the connection watches for writability instead of readability until the
//! queue is sent (back-pressure). Prints `listening on ADDR`; exits 0 on SIGINT/SIGTERM.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use uring_bench::{READ_CHUNK, accept, listen, main_with, signal_fd};

const USAGE: &str = "epoll-echo --addr HOST:PORT";
const LISTENER: u64 = u64::MAX;
const SIGNAL: u64 = u64::MAX - 1;
/// Readiness reports one `epoll_wait` returns at most (the crate's: 1024).
const EVENTS: usize = 1024;
/// Connections accepted per listener wake-up at most (the crate's: 64).
const ACCEPT_BATCH: usize = 64;

fn main() -> std::process::ExitCode {
    main_with("epoll-echo", USAGE, &[], |args| {
        let listener = listen(&args.addr)?;
        EpollEcho::new(listener)?.run()
    })
}

struct Conn {
    fd: OwnedFd,
    /// Bytes received but not yet sent (the socket was full), from `sent` on.
    queued: Vec<u8>,
    sent: usize,
}

struct EpollEcho {
    epoll: OwnedFd,
    listener: TcpListener,
    signals: OwnedFd,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Slots closed during the current batch of events: reused only after it, so that a later
    /// report in the same batch cannot reach a new connection in an old connection's slot.
    closed: Vec<usize>,
    buf: Box<[u8]>,
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl EpollEcho {
    fn new(listener: TcpListener) -> io::Result<Self> {
        // SAFETY: epoll_create1 returns a fresh descriptor that we own from here on.
        let epoll = unsafe {
            use std::os::fd::FromRawFd;
            OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?)
        };
        let signals = signal_fd()?;
        let this = EpollEcho {
            epoll,
            listener,
            signals,
            conns: Vec::new(),
            free: Vec::new(),
            closed: Vec::new(),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
        };
        this.ctl(
            libc::EPOLL_CTL_ADD,
            this.listener.as_raw_fd(),
            libc::EPOLLIN,
            LISTENER,
        )?;
        this.ctl(
            libc::EPOLL_CTL_ADD,
            this.signals.as_raw_fd(),
            libc::EPOLLIN,
            SIGNAL,
        )?;
        Ok(this)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: libc::c_int, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: valid epoll and target descriptors, `ev` outlives the call.
        cvt(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            // SAFETY: `events` has room for EVENTS entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    -1,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events[..n as usize] {
                let (flags, token) = (ev.events, ev.u64);
                match token {
                    SIGNAL => return Ok(()),
                    LISTENER => self.accept()?,
                    slot => self.ready(slot as usize, flags),
                }
            }
            self.free.append(&mut self.closed);
        }
    }

    fn accept(&mut self) -> io::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            let fd = match accept(&self.listener) {
                Ok(Some(fd)) => fd,
                Ok(None) => return Ok(()),
                Err(e) => {
                    // EMFILE and the like: keep serving the connections we have.
                    eprintln!("epoll-echo: accept: {e}");
                    return Ok(());
                }
            };
            let slot = self.free.pop().unwrap_or(self.conns.len());
            if let Err(e) = self.ctl(
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                libc::EPOLLIN,
                slot as u64,
            ) {
                eprintln!("epoll-echo: watching a connection: {e}");
                if slot < self.conns.len() {
                    self.free.push(slot);
                }
                continue;
            }
            let conn = Conn {
                fd,
                queued: Vec::new(),
                sent: 0,
            };
            if slot == self.conns.len() {
                self.conns.push(Some(conn));
            } else {
                self.conns[slot] = Some(conn);
            }
        }
        Ok(())
    }

    fn ready(&mut self, slot: usize, flags: u32) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return; // closed earlier in this batch
        };
        let fd = conn.fd.as_raw_fd();
        let outcome = if flags & libc::EPOLLERR as u32 != 0 {
            Step::Close
        } else if !conn.queued.is_empty() {
            if flags & libc::EPOLLOUT as u32 != 0 {
                flush(conn)
            } else {
                Step::Keep
            }
        } else if flags & (libc::EPOLLIN | libc::EPOLLHUP) as u32 != 0 {
            echo(conn, &mut self.buf)
        } else {
            Step::Keep
        };
        let interest = match outcome {
            Step::Keep => return,
            Step::Close => {
                self.close(slot);
                return;
            }
            Step::WatchWrite => libc::EPOLLOUT,
            Step::WatchRead => libc::EPOLLIN,
        };
        if let Err(e) = self.ctl(libc::EPOLL_CTL_MOD, fd, interest, slot as u64) {
            eprintln!("epoll-echo: epoll_ctl: {e}");
            self.close(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) {
            // Dropping the descriptor closes it, which also removes it from the epoll set.
            drop(conn);
            self.closed.push(slot);
        }
    }
}

enum Step {
    Keep,
    Close,
    WatchWrite,
    WatchRead,
}

/// One `recv` into the shared buffer and one `send` of what it got; the rest is queued.
fn echo(conn: &mut Conn, buf: &mut [u8]) -> Step {
    let fd = conn.fd.as_raw_fd();
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let n = match n {
        0 => return Step::Close,
        n if n > 0 => n as usize,
        _ => {
            return if would_block() {
                Step::Keep
            } else {
                Step::Close
            };
        }
    };
    let sent = match send(fd, &buf[..n]) {
        Ok(sent) => sent,
        Err(()) => return Step::Close,
    };
    if sent == n {
        return Step::Keep;
    }
    conn.queued.extend_from_slice(&buf[sent..n]);
    conn.sent = 0;
    Step::WatchWrite
}

/// Sends queued bytes until the socket is full or the queue is empty.
fn flush(conn: &mut Conn) -> Step {
    let fd = conn.fd.as_raw_fd();
    while conn.sent < conn.queued.len() {
        match send(fd, &conn.queued[conn.sent..]) {
            Ok(0) => return Step::Keep, // full: wait for the next writability report
            Ok(n) => conn.sent += n,
            Err(()) => return Step::Close,
        }
    }
    conn.queued.clear();
    conn.sent = 0;
    Step::WatchRead
}

/// One `send`: `Ok(bytes taken)`, 0 when the socket is full; `Err` when the connection is broken.
fn send(fd: RawFd, bytes: &[u8]) -> Result<usize, ()> {
    // SAFETY: `bytes` is valid for its length; MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE.
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
    if n >= 0 {
        Ok(n as usize)
    } else if would_block() {
        Ok(0)
    } else {
        Err(())
    }
}

fn would_block() -> bool {
    matches!(
        io::Error::last_os_error().kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
