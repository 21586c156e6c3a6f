//! [`MessageDriver`]: a [`MessageHandler`] driven by scripted connections, without sockets.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use super::conn::{MockConn, MockProbe};
use crate::addr::Addr;
use crate::concurrency::Reactor;
use crate::reactor::engine::Engine;
use crate::reactor::{ConnId, MessageHandler};
use crate::serving::{Shape, Shared, Ticket};
use crate::shutdown::ShutdownHandle;

/// Drives a [`MessageHandler`] the way a [`Reactor`] does — the same decoding, callbacks, output
/// bounds, pacing and closing code — over scripted connections instead of sockets: connect clients,
/// feed them bytes, and check what each was sent and which were closed.
///
/// Everything happens at once, in the calling thread: each call runs every callback it causes and
/// delivers every queued byte (a scripted client reads everything it is sent) before it returns.
///
/// # Examples
///
/// A two-client chat: every line goes to the other client.
///
/// ```
/// use socketserver::framing::Lines;
/// use socketserver::reactor::{Conn, MessageHandler};
/// use socketserver::testing::MessageDriver;
///
/// struct Chat;
/// impl MessageHandler for Chat {
///     type Codec = Lines;
///     fn codec(&self) -> Lines {
///         Lines::with_max_line_len(1024)
///     }
///     fn on_open(&self, conn: &mut Conn<'_, Lines>) -> anyhow::Result<()> {
///         conn.send(b"welcome")?;
///         Ok(())
///     }
///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
///         let me = conn.id();
///         conn.broadcast_except(me, &line)?;
///         Ok(())
///     }
/// }
///
/// let mut chat = MessageDriver::new(Chat)?;
/// let alice = chat.connect("192.0.2.1:5000".parse::<std::net::SocketAddr>().unwrap());
/// let bob = chat.connect("192.0.2.2:6000".parse::<std::net::SocketAddr>().unwrap());
/// chat.send(alice, "hi bob\n");
/// assert_eq!(chat.sent_text(bob), "welcome\nhi bob\n");
/// assert_eq!(chat.sent_text(alice), "welcome\n"); // not echoed to its sender
/// chat.hang_up(alice);
/// assert!(chat.is_closed(alice) && !chat.is_closed(bob));
/// assert!(chat.errors().is_empty());
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct MessageDriver<H: MessageHandler> {
    engine: Engine<H>,
    probes: HashMap<ConnId, MockProbe>,
    errors: Arc<Mutex<Vec<String>>>,
    shutdown: ShutdownHandle,
}

impl<H: MessageHandler> std::fmt::Debug for MessageDriver<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageDriver")
            .field("connections", &self.engine.conns.slab.len())
            .field("errors", &self.errors.lock().len())
            .finish_non_exhaustive()
    }
}

impl<H: MessageHandler> MessageDriver<H> {
    /// A driver for `handler`, with the `Reactor`'s default
    /// [write buffer limit](Reactor::write_buffer_limit).
    ///
    /// # Errors
    /// `eventfd(2)` or `mmap(2)` failing (descriptor or memory exhaustion).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{framing::RawBytes, reactor::{Conn, MessageHandler}};
    /// # struct Echo;
    /// # impl MessageHandler for Echo {
    /// #     type Codec = RawBytes;
    /// #     fn codec(&self) -> RawBytes { RawBytes }
    /// #     fn on_message(&self, c: &mut Conn<'_, RawBytes>, m: Vec<u8>) -> anyhow::Result<()> { Ok(c.send(&m)?) }
    /// # }
    /// let mut echo = socketserver::testing::MessageDriver::new(Echo)?;
    /// let client = echo.connect("127.0.0.1:40000".parse::<std::net::SocketAddr>().unwrap());
    /// echo.send(client, "ping");
    /// assert_eq!(echo.sent_to(client), b"ping");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(handler: H) -> io::Result<Self> {
        Self::with_write_buffer_limit(handler, Reactor::DEFAULT_WRITE_BUFFER_LIMIT)
    }

    /// A driver whose connections' queued output is bounded by `bytes`, as
    /// [`Reactor::write_buffer_limit`] bounds it.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{framing::RawBytes, reactor::{Conn, MessageHandler}};
    /// # struct Quiet;
    /// # impl MessageHandler for Quiet {
    /// #     type Codec = RawBytes;
    /// #     fn codec(&self) -> RawBytes { RawBytes }
    /// #     fn on_message(&self, _c: &mut Conn<'_, RawBytes>, _m: Vec<u8>) -> anyhow::Result<()> { Ok(()) }
    /// # }
    /// let _driver = socketserver::testing::MessageDriver::with_write_buffer_limit(Quiet, 4096)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_write_buffer_limit(handler: H, bytes: usize) -> io::Result<Self> {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let report = move |peer: Option<&Addr>, err: &crate::RequestError| {
            let line = match peer {
                Some(p) => format!("{p}: {err}"),
                None => err.to_string(),
            };
            seen.lock().push(line);
        };
        let shared = Shared::standalone(Arc::new(report), "Reactor", Shape::EventLoop)?;
        let shutdown = shared.shutdown().clone();
        Ok(MessageDriver {
            engine: Engine::new(Arc::new(handler), Arc::new(shared), bytes.max(1), None),
            probes: HashMap::new(),
            errors,
            shutdown,
        })
    }

    /// A client connects from `peer`: the handler's `on_open` runs. Returns the connection's id, as
    /// the handler sees it.
    ///
    /// # Examples
    ///
    /// See [`MessageDriver`].
    pub fn connect(&mut self, peer: impl Into<Addr>) -> ConnId {
        let conn = MockConn::new().peer(peer);
        let probe = conn.probe();
        let peer = conn.peer.clone();
        let Some(id) = self
            .engine
            .insert(Arc::new(conn), peer, Ticket::unlimited())
        else {
            unreachable!("a driver's server has no layers that could refuse a connection");
        };
        self.probes.insert(id, probe);
        self.engine.start(id);
        self.settle();
        id
    }

    /// Client `id` sends `bytes` (in one read, as they would arrive in one segment): every message
    /// they complete is delivered.
    ///
    /// # Examples
    ///
    /// See [`MessageDriver`].
    pub fn send(&mut self, id: ConnId, bytes: impl AsRef<[u8]>) {
        self.engine.received(id, bytes.as_ref());
        self.settle();
    }

    /// Client `id` closes its side: a last partial message is handed over if the codec allows, and
    /// the connection closes (`on_close` runs) once what is queued for it is sent.
    ///
    /// # Examples
    ///
    /// See [`MessageDriver`].
    pub fn hang_up(&mut self, id: ConnId) {
        self.engine.input_ended(id);
        self.settle();
    }

    /// Every byte connection `id` was sent so far (what the client read), framed by the codec.
    ///
    /// # Examples
    ///
    /// See [`new`](Self::new).
    pub fn sent_to(&self, id: ConnId) -> Vec<u8> {
        self.probes
            .get(&id)
            .map(MockProbe::written)
            .unwrap_or_default()
    }

    /// [`sent_to`](Self::sent_to), as text (invalid UTF-8 replaced).
    ///
    /// # Examples
    ///
    /// See [`MessageDriver`].
    pub fn sent_text(&self, id: ConnId) -> String {
        String::from_utf8_lossy(&self.sent_to(id)).into_owned()
    }

    /// Whether connection `id` was closed (by the handler, by an error, or after hanging up).
    ///
    /// # Examples
    ///
    /// See [`MessageDriver`].
    pub fn is_closed(&self, id: ConnId) -> bool {
        self.engine.conns.slab.get(id).is_none()
    }

    /// How many connections are open.
    ///
    /// # Examples
    ///
    /// See [`MessageDriver`].
    pub fn open_connections(&self) -> usize {
        self.engine.conns.slab.len()
    }

    /// Every failure reported to the error hook so far, as `peer: error` lines (a callback's `Err`
    /// or panic, undecodable input).
    ///
    /// # Examples
    ///
    /// See [`MessageDriver`].
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().clone()
    }

    /// Whether a callback asked the server to shut down (`conn.server().shutdown()`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{framing::RawBytes, reactor::{Conn, MessageHandler}};
    /// struct Stopper;
    /// impl MessageHandler for Stopper {
    ///     type Codec = RawBytes;
    ///     fn codec(&self) -> RawBytes { RawBytes }
    ///     fn on_message(&self, conn: &mut Conn<'_, RawBytes>, _m: Vec<u8>) -> anyhow::Result<()> {
    ///         conn.server().shutdown();
    ///         Ok(())
    ///     }
    /// }
    /// let mut driver = socketserver::testing::MessageDriver::new(Stopper)?;
    /// let c = driver.connect("127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap());
    /// driver.send(c, "stop");
    /// assert!(driver.is_shutdown());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.is_shutdown()
    }

    /// What the event loop does after each event, with a socket that takes everything.
    fn settle(&mut self) {
        // The loop's clock, as an event loop reads it once a turn.
        self.engine.conns.now = std::time::Instant::now();
        loop {
            if let Some(id) = self.engine.conns.dirty.pop() {
                if self.engine.flush(id) == crate::reactor::engine::Flush::Close {
                    self.engine.conns.doomed.push(id);
                }
            } else if let Some(id) = self.engine.conns.doomed.pop() {
                self.engine.close(id);
            } else if !self.engine.release_one() {
                return;
            }
        }
    }
}
