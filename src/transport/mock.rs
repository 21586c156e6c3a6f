//! Mock transports: serve handlers — and whole servers — without a socket.
//!
//! The test double is part of the public API, as `httptest.ResponseRecorder` is Go's: a handler you
//! unit-test here runs unchanged in production.
//!
//! - [`MockConn`] scripts one connection (chunks of input, read errors) and its [`MockProbe`] tells what
//!   the handler wrote and whether the connection was closed.
//! - [`run_stream`] and [`run_datagram`] run one request through exactly the code path a server uses
//!   (`setup` → `handle` → `finish`, panics caught, output flushed, the connection closed).
//! - [`MockStream`] and [`MockDatagram`] are transports: queue scripted requests, then drive a real
//!   [`Server`](crate::Server) — usually `Sequential` — with `handle_request` or `serve_forever`, so
//!   hooks such as `verify_request`, `handle_error` and shutdown are unit-testable.
//!
//! # Examples
//!
//! A whole server, with its hooks, over scripted requests:
//!
//! ```
//! use std::io::{BufRead, Write};
//! use std::sync::{Arc, Mutex};
//! use socketserver::mock::{MockConn, MockStream};
//! use socketserver::{Addr, HandleOutcome, Sequential, Server, StreamRequest};
//!
//! let transport = MockStream::new()?;
//! let good = transport.push(MockConn::new().read("hi\n").peer("10.0.0.1:1000".parse::<std::net::SocketAddr>().unwrap()));
//! let bad = transport.push(MockConn::new().read("hi\n").peer("10.0.0.2:1000".parse::<std::net::SocketAddr>().unwrap()));
//! let errors = Arc::new(Mutex::new(Vec::new()));
//! let seen = errors.clone();
//!
//! let echo = |req: &mut StreamRequest| -> anyhow::Result<()> {
//!     let mut line = String::new();
//!     req.read_line(&mut line)?;
//!     anyhow::ensure!(req.peer().to_string() != "10.0.0.2:1000", "unlucky peer");
//!     req.write_all(line.as_bytes())?;
//!     Ok(())
//! };
//! let mut server = Server::<Sequential, _, _>::new(Sequential, transport, echo)?
//!     .handle_error(move |peer: Option<&Addr>, err| seen.lock().unwrap().push(format!("{}: {err}", peer.unwrap())));
//!
//! assert_eq!(server.handle_request()?, HandleOutcome::Handled);
//! assert_eq!(server.handle_request()?, HandleOutcome::Handled);
//! assert_eq!(good.written(), b"hi\n");
//! assert!(bad.written().is_empty() && bad.is_closed());
//! assert_eq!(errors.lock().unwrap().as_slice(), ["10.0.0.2:1000: handler failed: unlucky peer"]);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{
    sealed, Accept, Connection, Datagram, DatagramSocket, Incoming, Kind, Packet, Stream, Transport,
};
use crate::addr::Addr;
use crate::error::RequestError;
use crate::handler::{DatagramHandler, RequestContext, Service, StreamHandler, StreamOptions};
use crate::shutdown::ShutdownHandle;
use crate::sys::EventFd;

/// The peer a mock request comes from unless told otherwise.
fn default_peer() -> Addr {
    Addr::Inet(SocketAddr::from(([127, 0, 0, 1], 40000)))
}

#[derive(Debug)]
enum Step {
    Data(Vec<u8>),
    Error(io::ErrorKind),
}

#[derive(Debug, Default)]
struct ProbeState {
    written: Vec<u8>,
    read_shut: bool,
    write_shut: bool,
    closed: bool,
}

/// A scripted connection: what the "client" sends, chunk by chunk, and what the handler wrote back.
///
/// Each `read` by the handler returns at most one scripted chunk (so framing code meets the same short
/// reads a real socket gives); after the last chunk, reads return end-of-file. Writes after the handler
/// shut the write side down fail with `BrokenPipe`, as on a socket.
///
/// # Examples
///
/// ```
/// use std::io::Read;
/// use socketserver::{mock::{run_stream, MockConn}, StreamRequest};
///
/// let conn = MockConn::new().read("ab").read_error(std::io::ErrorKind::ConnectionReset);
/// let handler = |req: &mut StreamRequest| -> anyhow::Result<()> {
///     let mut all = Vec::new();
///     req.read_to_end(&mut all)?; // fails on the scripted reset
///     Ok(())
/// };
/// let err = run_stream(&handler, conn).unwrap_err();
/// assert!(err.to_string().contains("reset"), "{err}");
/// ```
#[derive(Debug)]
pub struct MockConn {
    script: Mutex<VecDeque<Step>>,
    state: Arc<Mutex<ProbeState>>,
    peer: Addr,
}

impl Default for MockConn {
    fn default() -> Self {
        MockConn::new()
    }
}

impl MockConn {
    /// A connection from `127.0.0.1:40000` that sends nothing and then end-of-file.
    ///
    /// # Examples
    ///
    /// ```
    /// let conn = socketserver::mock::MockConn::new();
    /// assert!(conn.probe().written().is_empty());
    /// ```
    pub fn new() -> Self {
        MockConn {
            script: Mutex::new(VecDeque::new()),
            state: Arc::new(Mutex::new(ProbeState::default())),
            peer: default_peer(),
        }
    }

    /// Appends a chunk the client sends; the handler's reads see it after the earlier chunks.
    ///
    /// # Examples
    ///
    /// ```
    /// let _conn = socketserver::mock::MockConn::new().read("GET ").read(b"/\r\n");
    /// ```
    pub fn read(self, chunk: impl AsRef<[u8]>) -> Self {
        self.script
            .lock()
            .push_back(Step::Data(chunk.as_ref().to_vec()));
        self
    }

    /// Appends a read failure (`TimedOut` for a silent client, `ConnectionReset` for a vanished one).
    ///
    /// # Examples
    ///
    /// ```
    /// let _conn = socketserver::mock::MockConn::new().read_error(std::io::ErrorKind::TimedOut);
    /// ```
    pub fn read_error(self, kind: io::ErrorKind) -> Self {
        self.script.lock().push_back(Step::Error(kind));
        self
    }

    /// Sets the peer address the handler sees.
    ///
    /// # Examples
    ///
    /// ```
    /// let peer: std::net::SocketAddr = "[::1]:5000".parse().unwrap();
    /// let _conn = socketserver::mock::MockConn::new().peer(peer);
    /// ```
    pub fn peer(mut self, peer: impl Into<Addr>) -> Self {
        self.peer = peer.into();
        self
    }

    /// A probe that keeps observing the connection after it is handed to a handler or a server.
    ///
    /// # Examples
    ///
    /// ```
    /// let conn = socketserver::mock::MockConn::new();
    /// let probe = conn.probe();
    /// drop(conn);
    /// assert!(probe.is_closed());
    /// ```
    pub fn probe(&self) -> MockProbe {
        MockProbe {
            state: self.state.clone(),
        }
    }
}

impl Drop for MockConn {
    fn drop(&mut self) {
        self.state.lock().closed = true;
    }
}

impl sealed::Sealed for MockConn {}

impl Connection for MockConn {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.state.lock().read_shut || buf.is_empty() {
            return Ok(0);
        }
        let mut script = self.script.lock();
        match script.pop_front() {
            None => Ok(0),
            Some(Step::Error(kind)) => Err(io::Error::new(kind, format!("scripted {kind}"))),
            Some(Step::Data(mut chunk)) => {
                let n = chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    chunk.drain(..n);
                    script.push_front(Step::Data(chunk));
                }
                Ok(n)
            }
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock();
        if state.write_shut {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            ));
        }
        state.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let mut state = self.state.lock();
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            state.read_shut = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            state.write_shut = true;
        }
        Ok(())
    }

    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }

    fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// Observes a [`MockConn`]: what was written to it and whether it was closed.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use socketserver::{mock::{run_stream, MockConn}, StreamRequest};
///
/// let conn = MockConn::new();
/// let probe = conn.probe();
/// run_stream(&|req: &mut StreamRequest| { req.write_all(b"bye")?; Ok(()) }, conn).unwrap();
/// assert_eq!(probe.written_str(), "bye");
/// assert!(probe.is_closed());
/// ```
#[derive(Debug, Clone)]
pub struct MockProbe {
    state: Arc<Mutex<ProbeState>>,
}

impl MockProbe {
    /// Every byte the handler wrote, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::{mock::{run_stream, MockConn}, StreamRequest};
    /// let conn = MockConn::new();
    /// let probe = conn.probe();
    /// run_stream(&|req: &mut StreamRequest| { req.write_all(&[0, 1, 255])?; Ok(()) }, conn)?;
    /// assert_eq!(probe.written(), [0, 1, 255]);
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn written(&self) -> Vec<u8> {
        self.state.lock().written.clone()
    }

    /// The bytes written, as text (invalid UTF-8 replaced).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, Write};
    /// use socketserver::{mock::{run_stream, MockConn}, StreamRequest};
    /// let shout = |req: &mut StreamRequest| -> anyhow::Result<()> {
    ///     let mut line = String::new();
    ///     req.read_line(&mut line)?;
    ///     req.write_all(line.to_uppercase().as_bytes())?;
    ///     Ok(())
    /// };
    /// let conn = MockConn::new().read("hey\n");
    /// let probe = conn.probe();
    /// run_stream(&shout, conn)?;
    /// assert_eq!(probe.written_str(), "HEY\n");
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn written_str(&self) -> String {
        String::from_utf8_lossy(&self.state.lock().written).into_owned()
    }

    /// Whether the connection was closed: dropped by the server, or shut down in both directions.
    ///
    /// # Examples
    ///
    /// A failing handler still gets its connection closed:
    ///
    /// ```
    /// use socketserver::{mock::{run_stream, MockConn}, StreamRequest};
    /// let conn = MockConn::new();
    /// let probe = conn.probe();
    /// let failing = |_req: &mut StreamRequest| -> anyhow::Result<()> { anyhow::bail!("no") };
    /// assert!(run_stream(&failing, conn).is_err());
    /// assert!(probe.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        let state = self.state.lock();
        state.closed || (state.read_shut && state.write_shut)
    }

    /// Whether the handler shut down the write side (sent end-of-file to the peer).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use std::net::Shutdown;
    /// use socketserver::{mock::{run_stream, MockConn}, StreamRequest};
    /// let conn = MockConn::new();
    /// let probe = conn.probe();
    /// run_stream(&|req: &mut StreamRequest| {
    ///     req.write_all(b"that's all")?;
    ///     req.shutdown(Shutdown::Write)?; // EOF to the peer
    ///     Ok(())
    /// }, conn)?;
    /// assert!(probe.is_write_shut());
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn is_write_shut(&self) -> bool {
        self.state.lock().write_shut
    }
}

/// A context for one request served outside a server: fresh shutdown handle, default options, no hook.
fn standalone_context() -> Result<RequestContext, RequestError> {
    let shutdown = ShutdownHandle::new().map_err(|e| RequestError::Handler(e.into()))?;
    Ok(RequestContext {
        shutdown,
        on_error: Arc::new(|_, _| {}),
        stream: StreamOptions::default(),
    })
}

/// Serves one scripted connection with `handler`, exactly as a server would (setup → handle → finish,
/// panics caught, `wfile` flushed, the connection closed), and returns the request's first failure.
///
/// # Errors
/// What the server would report to its error hook for this request.
///
/// # Examples
///
/// ```
/// use socketserver::{mock::{run_stream, MockConn}, RequestError, StreamRequest};
///
/// let panicky = |_req: &mut StreamRequest| -> anyhow::Result<()> { panic!("bug") };
/// let err = run_stream(&panicky, MockConn::new()).unwrap_err();
/// assert!(matches!(err, RequestError::Panicked(ref m) if m == "bug"));
/// ```
pub fn run_stream<H: StreamHandler>(handler: &H, conn: MockConn) -> Result<(), RequestError> {
    let ctx = standalone_context()?;
    let peer = conn.peer.clone();
    let incoming = Incoming {
        conn: Arc::new(conn),
        peer,
    };
    Service::<Stream>::serve(handler, incoming, &ctx)
}

/// Serves one datagram `data` from `127.0.0.1:40000` with `handler`, as a server would, and returns the
/// reply datagram it would send (`None` when the handler wrote nothing).
///
/// # Errors
/// What the server would report to its error hook for this datagram.
///
/// # Examples
///
/// ```
/// use socketserver::{mock::run_datagram, DatagramRequest};
/// let silent = |_req: &mut DatagramRequest| -> anyhow::Result<()> { Ok(()) };
/// assert_eq!(run_datagram(&silent, b"x")?, None);
/// # Ok::<(), socketserver::RequestError>(())
/// ```
pub fn run_datagram<H: DatagramHandler>(
    handler: &H,
    data: &[u8],
) -> Result<Option<Vec<u8>>, RequestError> {
    let ctx = standalone_context()?;
    let socket = Arc::new(ReplyRecorder::default());
    let packet = Packet {
        data: data.to_vec(),
        peer: default_peer(),
        socket: socket.clone(),
    };
    Service::<Datagram>::serve(handler, packet, &ctx)?;
    let reply = socket.sent.lock().pop().map(|(_, bytes)| bytes);
    Ok(reply)
}

/// A queue of scripted requests that is readable (for the serving loop's `poll`) while non-empty.
#[derive(Debug)]
struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    ready: EventFd,
}

impl<T> Queue<T> {
    fn new() -> io::Result<Self> {
        Ok(Queue {
            items: Mutex::new(VecDeque::new()),
            ready: EventFd::new(true)?,
        })
    }

    fn push(&self, item: T) {
        self.items.lock().push_back(item);
        self.ready.notify();
    }

    fn pop(&self) -> Option<T> {
        let item = self.items.lock().pop_front();
        if item.is_some() {
            self.ready.take();
        }
        item
    }
}

/// A stream transport fed with scripted connections: drive a real server without sockets.
///
/// Clones share one queue, so a test can keep a clone to push more connections while the server (which
/// owns the other clone) is serving. See the [module docs](self) for a whole-server example.
///
/// # Examples
///
/// ```
/// use socketserver::mock::{MockConn, MockStream};
/// let transport = MockStream::new()?;
/// let probe = transport.push(MockConn::new().read("hello"));
/// assert!(!probe.is_closed()); // not served yet
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MockStream {
    queue: Arc<Queue<MockConn>>,
}

impl MockStream {
    /// An empty transport.
    ///
    /// # Errors
    /// `eventfd(2)` failing (descriptor exhaustion).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{mock::MockStream, HandleOutcome, Sequential, Server, StreamRequest};
    /// let transport = MockStream::new()?;
    /// let mut server = Server::new(Sequential, transport, |_r: &mut StreamRequest| Ok(()))?
    ///     .timeout(std::time::Duration::from_millis(1));
    /// assert_eq!(server.handle_request()?, HandleOutcome::TimedOut); // nothing queued
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<Self> {
        Ok(MockStream {
            queue: Arc::new(Queue::new()?),
        })
    }

    /// Queues a connection for the server to accept; returns its probe.
    ///
    /// # Examples
    ///
    /// Pushing from a clone while the server, which owns the transport, is serving:
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::mock::{MockConn, MockStream};
    /// use socketserver::{Sequential, Server, StreamRequest};
    ///
    /// let transport = MockStream::new()?;
    /// let feeder = transport.clone();
    /// let mut server = Server::new(Sequential, transport, |req: &mut StreamRequest| {
    ///     req.write_all(b"served")?;
    ///     req.server().shutdown(); // one request, then stop
    ///     Ok(())
    /// })?;
    /// let probe = feeder.push(MockConn::new());
    /// server.serve_forever()?;
    /// assert_eq!(probe.written_str(), "served");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn push(&self, conn: MockConn) -> MockProbe {
        let probe = conn.probe();
        self.queue.push(conn);
        probe
    }
}

impl sealed::Sealed for MockStream {}

impl Transport for MockStream {
    type Kind = Stream;

    fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Inet(SocketAddr::from(([127, 0, 0, 1], 0))))
    }

    fn accept(&mut self) -> io::Result<Accept<<Stream as Kind>::Request>> {
        Ok(match self.queue.pop() {
            Some(conn) => {
                let peer = conn.peer.clone();
                Accept::Ready(Incoming {
                    conn: Arc::new(conn),
                    peer,
                })
            }
            None => Accept::WouldBlock,
        })
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.ready.as_fd()
    }
}

/// A datagram transport fed with scripted datagrams; records the replies the server sends.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use socketserver::mock::MockDatagram;
/// use socketserver::{DatagramRequest, Sequential, Server};
///
/// let transport = MockDatagram::new()?;
/// let peer: std::net::SocketAddr = "192.0.2.7:53".parse().unwrap();
/// transport.push(b"ping", peer);
/// let pong = |req: &mut DatagramRequest| -> anyhow::Result<()> { req.write_all(b"pong")?; Ok(()) };
/// let mut server = Server::<Sequential, _, _>::new(Sequential, transport.clone(), pong)?;
/// server.handle_request()?;
/// assert_eq!(transport.replies(), vec![(peer.into(), b"pong".to_vec())]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MockDatagram {
    queue: Arc<Queue<(Vec<u8>, Addr)>>,
    replies: Arc<ReplyRecorder>,
}

impl MockDatagram {
    /// An empty transport.
    ///
    /// # Errors
    /// `eventfd(2)` failing (descriptor exhaustion).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{mock::MockDatagram, DatagramRequest, HandleOutcome, Sequential, Server};
    /// let transport = MockDatagram::new()?;
    /// let mut server = Server::new(Sequential, transport.clone(), |_r: &mut DatagramRequest| Ok(()))?
    ///     .timeout(std::time::Duration::from_millis(1));
    /// assert_eq!(server.handle_request()?, HandleOutcome::TimedOut);
    /// assert!(transport.replies().is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<Self> {
        Ok(MockDatagram {
            queue: Arc::new(Queue::new()?),
            replies: Arc::new(ReplyRecorder::default()),
        })
    }

    /// Queues a datagram from `peer`.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{mock::MockDatagram, Addr, DatagramRequest, Sequential, Server};
    /// let transport = MockDatagram::new()?;
    /// let from: std::net::SocketAddr = "198.51.100.1:5353".parse().unwrap();
    /// transport.push(b"query", from);
    /// let expect = Addr::from(from);
    /// let mut server = Server::new(Sequential, transport, move |req: &mut DatagramRequest| {
    ///     anyhow::ensure!(req.data() == b"query" && *req.peer() == expect);
    ///     Ok(())
    /// })?
    /// .handle_error(|_, err| panic!("{err}"));
    /// server.handle_request()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn push(&self, data: impl AsRef<[u8]>, peer: impl Into<Addr>) {
        self.queue.push((data.as_ref().to_vec(), peer.into()));
    }

    /// Every reply sent so far, with its destination, in order.
    ///
    /// # Examples
    ///
    /// A handler that writes nothing sends no reply:
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::{mock::MockDatagram, DatagramRequest, Sequential, Server};
    /// let transport = MockDatagram::new()?;
    /// let peer: std::net::SocketAddr = "192.0.2.1:9".parse().unwrap();
    /// transport.push("ping", peer);
    /// transport.push("", peer);
    /// let mut server = Server::new(Sequential, transport.clone(), |req: &mut DatagramRequest| {
    ///     if !req.data().is_empty() {
    ///         req.write_all(b"pong")?;
    ///     }
    ///     Ok(())
    /// })?;
    /// server.handle_request()?;
    /// server.handle_request()?;
    /// assert_eq!(transport.replies(), [(peer.into(), b"pong".to_vec())]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn replies(&self) -> Vec<(Addr, Vec<u8>)> {
        self.replies.sent.lock().clone()
    }
}

impl sealed::Sealed for MockDatagram {}

impl Transport for MockDatagram {
    type Kind = Datagram;

    fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Inet(SocketAddr::from(([127, 0, 0, 1], 0))))
    }

    fn accept(&mut self) -> io::Result<Accept<<Datagram as Kind>::Request>> {
        Ok(match self.queue.pop() {
            Some((data, peer)) => Accept::Ready(Packet {
                data,
                peer,
                socket: self.replies.clone(),
            }),
            None => Accept::WouldBlock,
        })
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.ready.as_fd()
    }
}

/// Records datagram replies instead of sending them.
#[derive(Debug, Default)]
struct ReplyRecorder {
    sent: Mutex<Vec<(Addr, Vec<u8>)>>,
}

impl sealed::Sealed for ReplyRecorder {}

impl DatagramSocket for ReplyRecorder {
    fn send_to(&self, buf: &[u8], peer: &Addr) -> io::Result<usize> {
        self.sent.lock().push((peer.clone(), buf.to_vec()));
        Ok(buf.len())
    }
}

// `run` is the path servers take; keep the mock path honest by using the same function in tests.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_through_the_hook() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut ctx = standalone_context().unwrap();
        ctx.on_error =
            Arc::new(move |p, e| s.lock().push(format!("{:?} {e}", p.map(|p| p.to_string()))));
        let failing =
            |_: &mut crate::StreamRequest| -> anyhow::Result<()> { anyhow::bail!("nope") };
        let conn = MockConn::new();
        let incoming = Incoming {
            peer: conn.peer.clone(),
            conn: Arc::new(conn),
        };
        assert!(!crate::handler::run::<Stream, _>(&failing, incoming, &ctx));
        assert_eq!(
            seen.lock().as_slice(),
            ["Some(\"127.0.0.1:40000\") handler failed: nope"]
        );
    }
}
