//! [`MockStream`] and [`MockDatagram`]: transports fed with scripted requests, to drive whole servers.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use parking_lot::Mutex;

use super::conn::{MockConn, MockProbe};
use crate::addr::Addr;
use crate::sys::EventFd;
use crate::transport::sealed::{KindOf, Listen};
use crate::transport::{Accept, Datagram, DatagramSocket, Incoming, Packet, Stream, Transport};

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
/// owns the other clone) is serving. See the [module docs](crate::testing) for a whole-server example.
///
/// # Examples
///
/// ```
/// use socketserver::testing::{MockConn, MockStream};
/// let transport = MockStream::new()?;
/// let probe = transport.push(MockConn::new().read("hello"));
/// assert!(!probe.is_closed()); // not served yet
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// `Reactor` serves sockets it can poll, and a `MockStream` has none, so that pair does not
/// compile (it used to, and served nothing); drive a `MessageHandler` with
/// [`MessageDriver`](crate::testing::MessageDriver) instead:
///
/// ```compile_fail
/// # use socketserver::framing::RawBytes;
/// # use socketserver::reactor::{Conn, MessageHandler};
/// # struct Echo;
/// # impl MessageHandler for Echo {
/// #     type Codec = RawBytes;
/// #     fn codec(&self) -> RawBytes { RawBytes }
/// #     fn on_message(&self, c: &mut Conn<'_, RawBytes>, m: Vec<u8>) -> anyhow::Result<()> { Ok(c.send(&m)?) }
/// # }
/// use socketserver::{Reactor, Server, testing::MockStream};
/// let server = Server::new(Reactor::new(), MockStream::new()?, Echo)?; // no `Concurrency` impl
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
    /// use socketserver::{testing::MockStream, HandleOutcome, Sequential, Server, StreamRequest};
    /// let transport = MockStream::new()?;
    /// let mut server = Server::new(Sequential::new(), transport, |_r: &mut StreamRequest| Ok(()))?
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
    /// use socketserver::testing::{MockConn, MockStream};
    /// use socketserver::{Sequential, Server, StreamRequest};
    ///
    /// let transport = MockStream::new()?;
    /// let feeder = transport.clone();
    /// let mut server = Server::new(Sequential::new(), transport, |req: &mut StreamRequest| {
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

impl Transport for MockStream {
    fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Inet(SocketAddr::from(([127, 0, 0, 1], 0))))
    }
}

impl Listen for MockStream {
    type Kind = Stream;

    fn accept(&mut self) -> io::Result<Accept<<Stream as KindOf>::Request>> {
        Ok(match self.queue.pop() {
            Some(conn) => {
                let peer = conn.peer.clone();
                Accept::Ready(Incoming::new(Arc::new(conn), peer))
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
/// use socketserver::testing::MockDatagram;
/// use socketserver::{DatagramRequest, Sequential, Server};
///
/// let transport = MockDatagram::new()?;
/// let peer: std::net::SocketAddr = "192.0.2.7:53".parse().unwrap();
/// transport.push(b"ping", peer);
/// let pong = |req: &mut DatagramRequest| -> anyhow::Result<()> { req.write_all(b"pong")?; Ok(()) };
/// let mut server = Server::new(Sequential::new(), transport.clone(), pong)?;
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
    /// use socketserver::{testing::MockDatagram, DatagramRequest, HandleOutcome, Sequential, Server};
    /// let transport = MockDatagram::new()?;
    /// let mut server = Server::new(Sequential::new(), transport.clone(), |_r: &mut DatagramRequest| Ok(()))?
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
    /// use socketserver::{testing::MockDatagram, Addr, DatagramRequest, Sequential, Server};
    /// let transport = MockDatagram::new()?;
    /// let from: std::net::SocketAddr = "198.51.100.1:5353".parse().unwrap();
    /// transport.push(b"query", from);
    /// let expect = Addr::from(from);
    /// let mut server = Server::new(Sequential::new(), transport, move |req: &mut DatagramRequest| {
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
    /// use socketserver::{testing::MockDatagram, DatagramRequest, Sequential, Server};
    /// let transport = MockDatagram::new()?;
    /// let peer: std::net::SocketAddr = "192.0.2.1:9".parse().unwrap();
    /// transport.push("ping", peer);
    /// transport.push("", peer);
    /// let mut server = Server::new(Sequential::new(), transport.clone(), |req: &mut DatagramRequest| {
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

impl Transport for MockDatagram {
    fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::Inet(SocketAddr::from(([127, 0, 0, 1], 0))))
    }
}

impl Listen for MockDatagram {
    type Kind = Datagram;

    fn accept(&mut self) -> io::Result<Accept<<Datagram as KindOf>::Request>> {
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
pub(super) struct ReplyRecorder {
    pub(super) sent: Mutex<Vec<(Addr, Vec<u8>)>>,
}

impl DatagramSocket for ReplyRecorder {
    fn send_to(&self, buf: &[u8], peer: &Addr) -> io::Result<usize> {
        self.sent.lock().push((peer.clone(), buf.to_vec()));
        Ok(buf.len())
    }
}
