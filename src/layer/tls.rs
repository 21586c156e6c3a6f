//! The TLS layer: a connection that reads and writes plain bytes through rustls, in both serving
//! models.
//!
//! - Blocking: the handshake runs on the connection's worker within a deadline, then the handler
//!   reads and writes through [`TlsStream`].
//! - Non-blocking (`Reactor`): the connection's socket is wrapped in a [`TlsStream`] at once, and the
//!   handshake advances as the loop reads; a [`Session`] holds the handler back until it is done (or
//!   failed, or past its deadline), then records what was negotiated. Records that the socket would
//!   not take yet stay in rustls and are reported by [`Duplex::flush_pending`], so the loop keeps
//!   watching for writability.

use std::io::{self, BufRead, Read, Write};
use std::net::Shutdown;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls::ServerConnection;

use super::{Layer, Progress, Session};
use crate::addr::Addr;
use crate::error::RequestError;
use crate::tls::{Tls, TlsInfo};
use crate::transport::{Duplex, Incoming};

/// How long sending `close_notify` may wait for the connection's lock when it closes: a writer
/// blocked on a peer that does not read holds it, and closing must not wait for that peer.
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_millis(100);

/// Serves every connection over TLS with the server's [`Tls`] configuration as it is when the
/// connection is accepted.
#[derive(Debug)]
pub(crate) struct TlsLayer {
    tls: Tls,
}

impl TlsLayer {
    pub(crate) fn new(tls: Tls) -> Self {
        TlsLayer { tls }
    }
}

impl Layer for TlsLayer {
    fn establish(&self, mut incoming: Incoming) -> Result<Incoming, RequestError> {
        no_delay(&*incoming.conn);
        let mut tls = ServerConnection::new(self.tls.current()).map_err(tls_error)?;
        let timeout = self.tls.handshake_timeout();
        handshake(&mut tls, &*incoming.conn, Instant::now() + timeout, timeout)?;
        incoming.info.tls = Some(Box::new(info_of(&tls)));
        incoming.conn = Arc::new(TlsStream::new(tls, incoming.conn, false));
        Ok(incoming)
    }

    fn reload(&self) {
        match self.tls.reload() {
            Ok(()) => log::info!("TLS: certificates reloaded"),
            Err(e) => log::error!("TLS: reload failed, the old certificates stay: {e}"),
        }
    }

    fn session(&self, _peer: &Addr) -> Option<Box<dyn Session>> {
        Some(Box::new(TlsSession {
            tls: self.tls.clone(),
            stream: None,
            deadline: Instant::now() + self.tls.handshake_timeout(),
        }))
    }
}

/// A `Reactor` connection's handshake: wraps its socket, and is done once the handshake is.
#[derive(Debug)]
struct TlsSession {
    tls: Tls,
    /// The wrapped socket, once [`Session::wrap`] ran.
    stream: Option<Arc<TlsStream>>,
    deadline: Instant,
}

impl Session for TlsSession {
    fn wrap(&mut self, io: Arc<dyn Duplex>) -> Result<Arc<dyn Duplex>, RequestError> {
        no_delay(&*io);
        let tls = ServerConnection::new(self.tls.current()).map_err(tls_error)?;
        let stream = Arc::new(TlsStream::new(tls, io, true));
        self.stream = Some(stream.clone());
        Ok(stream)
    }

    fn advance(
        &mut self,
        _input: &mut crate::framing::FrameBuf,
        _peer: &mut Addr,
        info: &mut crate::transport::ConnInfo,
    ) -> Result<Progress, RequestError> {
        let Some(stream) = &self.stream else {
            return Ok(Progress::Done);
        };
        if let Some(e) = stream.failure.lock().take() {
            return Err(RequestError::Tls(e));
        }
        let tls = stream.tls.lock();
        if tls.is_handshaking() {
            return Ok(Progress::Pending);
        }
        info.tls = Some(Box::new(info_of(&tls)));
        Ok(Progress::Done)
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn timed_out(&self) -> RequestError {
        RequestError::Tls(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the TLS handshake did not complete within {:?}",
                self.tls.handshake_timeout()
            ),
        ))
    }
}

/// The largest TLS record and then some: one socket read takes at most this.
const RECORD: usize = 16 * 1024 + 256;

/// Runs the handshake over `sock` until it completes, fails or `deadline` passes.
fn handshake(
    tls: &mut ServerConnection,
    sock: &dyn Duplex,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), RequestError> {
    let timed_out = || {
        RequestError::Tls(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the TLS handshake did not complete within {timeout:?}"),
        ))
    };
    // The socket's timeouts follow the time left, so a trickling client cannot stretch the handshake
    // past its deadline (by more than `SLACK`); set again only once they run that far ahead of it,
    // not before every read and write. The request's own timeouts are set after the layers ran.
    const SLACK: Duration = Duration::from_millis(50);
    let mut armed: Option<Duration> = None;
    while tls.is_handshaking() || tls.wants_write() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        if armed.is_none_or(|armed| armed > left + SLACK) {
            sock.set_read_timeout(Some(left))
                .and_then(|()| sock.set_write_timeout(Some(left)))
                .map_err(RequestError::Tls)?;
            armed = Some(left);
        }
        if tls.wants_write() {
            match tls.write_tls(&mut SockIo(sock)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
                Err(e) => return Err(RequestError::Tls(e)),
            }
            continue;
        }
        match tls.read_tls(&mut SockIo(sock)) {
            Ok(0) => {
                return Err(RequestError::Tls(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the TLS handshake",
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
            Err(e) => return Err(RequestError::Tls(e)),
        }
        if let Err(e) = tls.process_new_packets() {
            // Tell the client why: everything queued — under TLS 1.3 the ServerHello may come before
            // the alert — as far as it listens, within the deadline (the socket's timeouts).
            while tls.wants_write() {
                match tls.write_tls(&mut SockIo(sock)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            return Err(tls_error(e));
        }
    }
    Ok(())
}

/// `TCP_NODELAY`: TLS writes whole records, and after a handshake a server sends its session tickets
/// and then its first reply; with Nagle's algorithm the reply would wait for the peer to acknowledge
/// the tickets, which a Linux peer delays by up to 40 ms. (Not a TCP socket: nothing to do.)
fn no_delay(conn: &dyn Duplex) {
    let _ = nix::sys::socket::setsockopt(&conn.fd(), nix::sys::socket::sockopt::TcpNoDelay, &true);
}

fn tls_error(e: rustls::Error) -> RequestError {
    RequestError::Tls(io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What the handshake settled.
fn info_of(tls: &ServerConnection) -> TlsInfo {
    TlsInfo {
        server_name: tls.server_name().map(str::to_owned),
        alpn: tls.alpn_protocol().map(<[u8]>::to_vec),
        version: match tls.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        },
        cipher_suite: tls
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or_default()
            .to_owned(),
        peer_certificates: tls
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default(),
    }
}

/// A connection's socket as `io::Read` and `io::Write`, for rustls.
struct SockIo<'a>(&'a dyn Duplex);

impl Read for SockIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for SockIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    /// rustls hands over each flight as several records at once: they go out in one `send(2)`, one
    /// segment (the default would send the first record alone, and the peer would wait for the rest,
    /// with delayed acknowledgements in between).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match bufs.iter().filter(|b| !b.is_empty()).count() {
            0 => Ok(0),
            1 => self
                .0
                .write(bufs.iter().find(|b| !b.is_empty()).map_or(&[], |b| &b[..])),
            _ => {
                let mut all = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
                for b in bufs {
                    all.extend_from_slice(b);
                }
                self.0.write(&all)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Ciphertext read from the socket: `buf[start..end]` is still to be handed to rustls.
#[derive(Debug)]
struct Inbox {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// A TLS connection: plain bytes in and out, TLS records on the socket.
///
/// The reading and the writing half are used from one thread each at most (`rfile` and `wfile`),
/// and must not wait for each other: a read waits for the socket *without* the rustls lock, and
/// takes it only to hand over what came.
///
/// Over a non-blocking socket (`Reactor`), reads and writes return `WouldBlock` as the socket does,
/// the handshake advances as reads come, and records the socket did not take wait in rustls until
/// [`flush_pending`](Duplex::flush_pending).
#[derive(Debug)]
struct TlsStream {
    tls: Mutex<ServerConnection>,
    sock: Arc<dyn Duplex>,
    /// The reading half's ciphertext, read from the socket and not yet handed to rustls.
    received: Mutex<Inbox>,
    nonblocking: bool,
    /// Why the connection failed before its handshake completed, for the session to report.
    failure: Mutex<Option<io::Error>>,
}

impl TlsStream {
    fn new(tls: ServerConnection, sock: Arc<dyn Duplex>, nonblocking: bool) -> Self {
        TlsStream {
            tls: Mutex::new(tls),
            sock,
            received: Mutex::new(Inbox {
                buf: vec![0; RECORD].into_boxed_slice(),
                start: 0,
                end: 0,
            }),
            nonblocking,
            failure: Mutex::new(None),
        }
    }

    /// Writes whatever rustls has queued (records, alerts, `close_notify`): blocking as the socket's
    /// write timeout allows, or as far as a non-blocking socket takes it (`WouldBlock` then, the rest
    /// kept).
    fn flush_records(&self, tls: &mut ServerConnection) -> io::Result<()> {
        while tls.wants_write() {
            match tls.write_tls(&mut SockIo(&*self.sock)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// As [`flush_records`](Self::flush_records), where a full non-blocking socket is no failure.
    fn flush_what_fits(&self, tls: &mut ServerConnection) -> io::Result<()> {
        match self.flush_records(tls) {
            Err(e) if self.nonblocking && e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Sends `close_notify` once, unless the writing half holds the lock for longer than a moment,
    /// or no handshake completed (there is no session to close).
    fn close_notify(&self) {
        if let Some(mut tls) = self.tls.try_lock_for(CLOSE_NOTIFY_WAIT)
            && !tls.is_handshaking()
        {
            tls.send_close_notify();
            let _ = self.flush_records(&mut tls);
        }
    }

    /// Records `e` as the reason a handshake failed, for the session to report; returns it.
    fn failed(&self, tls: &ServerConnection, e: io::Error) -> io::Error {
        if tls.is_handshaking() {
            *self.failure.lock() = Some(io::Error::new(e.kind(), e.to_string()));
        }
        e
    }
}

impl Duplex for TlsStream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut received = self.received.lock();
        loop {
            {
                let mut tls = self.tls.lock();
                match tls.reader().read(buf) {
                    Ok(n) => return Ok(n), // 0: the peer's close_notify
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        let e = if tls.is_handshaking() {
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the client closed the connection during the TLS handshake",
                            )
                        } else {
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "TLS: the peer closed the connection without close_notify (a truncated close)",
                            )
                        };
                        return Err(self.failed(&tls, e));
                    }
                    Err(e) => return Err(self.failed(&tls, e)),
                }
            }
            // rustls takes ciphertext only while it holds no plaintext (its plaintext buffer is
            // bounded), so it is handed over one `read_tls` at a time, the rest kept for later.
            let received = &mut *received;
            if received.start == received.end {
                let n = self.sock.read(&mut received.buf)?;
                received.start = 0;
                received.end = n;
            }
            let mut tls = self.tls.lock();
            let mut fed = &received.buf[received.start..received.end];
            // An empty `fed` hands over the end of stream; rustls then tells a clean close from a
            // truncated one.
            let used = tls.read_tls(&mut fed)?;
            received.start += used;
            if let Err(e) = tls.process_new_packets() {
                // Tell the peer why (the alert rustls queued), as far as it listens.
                let _ = self.flush_what_fits(&mut tls);
                let e = io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"));
                return Err(self.failed(&tls, e));
            }
            // The handshake's next flight, session tickets, key updates: out as far as they go.
            self.flush_what_fits(&mut tls)?;
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut tls = self.tls.lock();
        // Records still waiting go first: until they are out, a non-blocking socket takes nothing.
        self.flush_records(&mut tls)?;
        if buf.is_empty() {
            return Ok(0);
        }
        let n = tls.writer().write(&buf[..buf.len().min(RECORD)])?;
        self.flush_what_fits(&mut tls)?;
        Ok(n)
    }

    fn flush_pending(&self) -> io::Result<bool> {
        let mut tls = self.tls.lock();
        self.flush_what_fits(&mut tls)?;
        Ok(tls.wants_write())
    }

    /// Ciphertext read and not yet handed to rustls, or plaintext rustls decrypted and no read took
    /// (the peer's `close_notify` counts: a read returns its end of stream).
    fn holds_input(&self) -> bool {
        // A read in progress holds `received`, and returns what is held before it waits: nothing is
        // left for another read.
        let Some(received) = self.received.try_lock() else {
            return false;
        };
        if received.start < received.end {
            return true;
        }
        // A writer holds the session while the socket takes its records. Not knowing, say held: a
        // drain then ends the connection at its next boundary rather than now.
        self.tls.try_lock().is_none_or(|mut tls| {
            !matches!(tls.reader().fill_buf(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        })
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        // Not for `Both`: that is a cut at the drain deadline, which must not wait for a writer.
        if how == Shutdown::Write {
            self.close_notify();
        }
        self.sock.shutdown(how)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(timeout)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.sock.fd()
    }
}

impl Drop for TlsStream {
    /// The request is over: the peer hears `close_notify` before the socket closes.
    fn drop(&mut self) {
        self.close_notify();
    }
}
