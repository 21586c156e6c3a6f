//! [`StreamHandler`] and [`StreamRequest`]: serving one connection.

use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Env;
use super::sealed::Handles;
use crate::addr::Addr;
use crate::error::{RequestError, guarded};
use crate::proxy_protocol::ProxyHeader;
use crate::shutdown::ShutdownHandle;
use crate::state::{ConnState, StateHook};
use crate::transport::{Duplex, Incoming, Phase, Proxied, Stream};

/// Serves one connection of a stream transport: Python's `StreamRequestHandler`.
///
/// # Examples
///
/// An echo handler, unit-tested without a socket:
///
/// ```
/// use std::io::{BufRead, Write};
/// use socketserver::{testing::MockConn, StreamHandler, StreamRequest};
///
/// struct Echo;
/// impl StreamHandler for Echo {
///     fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
///         let mut line = Vec::new();
///         while req.rfile.read_until(b'\n', &mut line)? > 0 {
///             req.wfile.write_all(&line)?;
///             line.clear();
///         }
///         Ok(())
///     }
/// }
///
/// let conn = MockConn::new().read("hello\n").read("world\n");
/// let probe = conn.probe();
/// socketserver::testing::run_stream(&Echo, conn)?;
/// assert_eq!(probe.written(), b"hello\nworld\n");
/// assert!(probe.is_closed());
/// # Ok::<(), socketserver::RequestError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `StreamHandler`, which stream transports (Tcp, UnixStream) need; a `DatagramHandler` is served on Udp or UnixDatagram, a `MessageHandler` under `Reactor`",
    label = "not a `StreamHandler`",
    note = "a closure is a `StreamHandler` when it takes `&mut StreamRequest`, returns `anyhow::Result<()>` (not `io::Result`) and is `Send + Sync + 'static` (it may capture `Arc`s, not `Rc`s, `Cell`s or borrowed values)"
)]
pub trait StreamHandler: Send + Sync + 'static {
    /// Runs before [`handle`](Self::handle). If it fails, neither `handle` nor `finish` runs.
    ///
    /// # Errors
    /// Any error; it is reported to the server's error hook with the peer.
    fn setup(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        let _ = req;
        Ok(())
    }

    /// Serves the connection: read requests from `req.rfile`, write replies to `req.wfile`. The
    /// connection is flushed and closed when the request ends.
    ///
    /// # Errors
    /// Any error; it is reported to the server's error hook with the peer, and the server keeps serving.
    fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()>;

    /// Runs after `handle`, even when `handle` failed or panicked.
    ///
    /// # Errors
    /// Any error; reported like `handle`'s.
    fn finish(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        let _ = req;
        Ok(())
    }
}

// Not recommended in diagnostics: a handler of the wrong kind would otherwise be told it is "not a
// closure" rather than that it is not a `StreamHandler`.
#[diagnostic::do_not_recommend]
impl<F> StreamHandler for F
where
    F: Fn(&mut StreamRequest) -> anyhow::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        self(req)
    }
}

impl<H: StreamHandler> Handles<Stream> for H {
    fn serve(&self, request: Incoming, env: &Env) -> Result<(), RequestError> {
        let mut req = StreamRequest::new(request, env).map_err(RequestError::Connection)?;
        guarded(|| self.setup(&mut req))?;
        let handled = guarded(|| self.handle(&mut req));
        let finished = guarded(|| self.finish(&mut req));
        let flushed = req
            .wfile
            .flush()
            .map_err(|e| RequestError::Handler(e.into()));
        handled.and(finished).and(flushed)
    }
}

/// Per-connection options of stream servers (set through the server's builder methods).
///
/// The defaults differ from Python's in one deliberate way: connections have finite read and write
/// timeouts ([`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT), 60 s), so a client that connects and goes silent
/// cannot pin a worker — or a whole sequential server — forever. Set them to `None` to wait forever.
///
/// # Examples
///
/// ```
/// use socketserver::StreamOptions;
/// let opts = StreamOptions::default();
/// assert_eq!(opts.read_timeout, Some(StreamOptions::DEFAULT_TIMEOUT));
/// assert_eq!(opts.wbufsize, 0); // replies are sent as they are written, like Python's wfile
/// ```
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// `SO_RCVTIMEO` for each connection: a read waiting longer fails with `TimedOut`.
    pub read_timeout: Option<Duration>,
    /// `SO_SNDTIMEO` for each connection: a write waiting longer (a peer that does not read) fails
    /// with `TimedOut`.
    pub write_timeout: Option<Duration>,
    /// The longest a connection may last, however it behaves (default `None`: no limit). The per-read
    /// timeout cannot stop a client that trickles one byte just often enough ("slowloris"); this can.
    /// Once it passes, every read and write fails with `TimedOut`.
    pub connection_timeout: Option<Duration>,
    /// The capacity of `rfile`'s buffer (Python's `rbufsize`); default 8 KiB.
    pub rbufsize: usize,
    /// The capacity of `wfile`'s buffer (Python's `wbufsize`); default 0, so every write goes straight
    /// to the socket and an interactive protocol never waits on an unflushed buffer. Raise it when a
    /// handler makes many small writes per reply.
    pub wbufsize: usize,
}

impl StreamOptions {
    /// The default read and write timeout: long enough for any interactive client, short enough that a
    /// silent one is eventually cut off.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use socketserver::StreamOptions;
    /// assert_eq!(StreamOptions::DEFAULT_TIMEOUT, Duration::from_secs(60));
    /// // Slow clients on a bad network: five times the default.
    /// let _opts = StreamOptions {
    ///     read_timeout: Some(StreamOptions::DEFAULT_TIMEOUT * 5),
    ///     ..StreamOptions::default()
    /// };
    /// ```
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            read_timeout: Some(Self::DEFAULT_TIMEOUT),
            write_timeout: Some(Self::DEFAULT_TIMEOUT),
            connection_timeout: None,
            rbufsize: 8 * 1024,
            wbufsize: 0,
        }
    }
}

/// One connection, as a stream handler sees it: Python's `self.rfile`, `self.wfile`,
/// `self.client_address` and `self.server`.
///
/// `rfile` and `wfile` are separate fields so a handler can use both at once
/// (`std::io::copy(&mut req.rfile, &mut req.wfile)`). The request also implements `Read`, `BufRead` and
/// `Write` itself, delegating to them.
///
/// # Examples
///
/// ```
/// use std::io::{BufRead, Write};
/// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
///
/// let greet = |req: &mut StreamRequest| -> anyhow::Result<()> {
///     let mut name = String::new();
///     req.read_line(&mut name)?;
///     let peer = req.peer().clone();
///     write!(req, "hello, {} from {peer}", name.trim())?;
///     Ok(())
/// };
/// let conn = MockConn::new().read("ann\n");
/// let probe = conn.probe();
/// run_stream(&greet, conn)?;
/// assert_eq!(probe.written_str(), "hello, ann from 127.0.0.1:40000");
/// # Ok::<(), socketserver::RequestError>(())
/// ```
#[derive(Debug)]
pub struct StreamRequest {
    /// Buffered reads from the connection (Python's `rfile`).
    pub rfile: BufReader<Reader>,
    /// Writes to the connection (Python's `wfile`), flushed when the request ends.
    pub wfile: BufWriter<Writer>,
    conn: Arc<dyn Duplex>,
    peer: Addr,
    proxied: Option<Box<Proxied>>,
    #[cfg(feature = "tls")]
    tls: Option<Box<crate::tls::TlsInfo>>,
    server: ShutdownHandle,
}

impl StreamRequest {
    /// The request for a connection the layers have established.
    ///
    /// # Errors
    /// Setting the socket's timeouts failed.
    pub(crate) fn new(incoming: Incoming, env: &Env) -> io::Result<Self> {
        let Incoming {
            conn,
            peer,
            info,
            phase,
        } = incoming;
        phase.set_layered(conn.clone());
        let opts = &env.stream;
        conn.set_read_timeout(opts.read_timeout)?;
        conn.set_write_timeout(opts.write_timeout)?;
        Ok(StreamRequest {
            rfile: BufReader::with_capacity(
                opts.rbufsize.max(1),
                Reader {
                    conn: conn.clone(),
                    timer: Timer::new("read", opts.read_timeout, opts.connection_timeout),
                    phase,
                    told: env.on_state.clone().map(|hook| (hook, peer.clone())),
                    ended: false,
                },
            ),
            wfile: BufWriter::with_capacity(
                opts.wbufsize,
                Writer {
                    conn: conn.clone(),
                    timer: Timer::new("write", opts.write_timeout, opts.connection_timeout),
                },
            ),
            conn,
            peer,
            proxied: info.proxied,
            #[cfg(feature = "tls")]
            tls: info.tls,
            server: env.shutdown.clone(),
        })
    }

    /// The peer's address (Python's `client_address`). Behind a trusted proxy speaking the PROXY
    /// protocol (see [`Server::proxy_protocol`](crate::Server::proxy_protocol)), the original client's.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
    /// let log_peer = |req: &mut StreamRequest| -> anyhow::Result<()> {
    ///     let peer = req.peer().to_string();
    ///     req.write_all(peer.as_bytes())?;
    ///     Ok(())
    /// };
    /// let conn = MockConn::new().peer("192.0.2.4:5555".parse::<std::net::SocketAddr>().unwrap());
    /// let probe = conn.probe();
    /// run_stream(&log_peer, conn)?;
    /// assert_eq!(probe.written_str(), "192.0.2.4:5555");
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn peer(&self) -> &Addr {
        &self.peer
    }

    /// The proxy this connection came through, when a trusted proxy sent a PROXY protocol header;
    /// `None` for a connection straight from its client. [`peer`](Self::peer) is then the client (or,
    /// for a `LOCAL` health check, the proxy itself).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use socketserver::testing::{MockConn, MockStream};
    /// use socketserver::proxy_protocol::ProxyProtocol;
    /// use socketserver::{HandleOutcome, Sequential, Server, StreamRequest};
    /// use std::io::Write;
    ///
    /// let who = |req: &mut StreamRequest| -> anyhow::Result<()> {
    ///     let via = req.proxy_peer().map_or("-".to_string(), |p| p.to_string());
    ///     let reply = format!("{} via {via}", req.peer());
    ///     req.write_all(reply.as_bytes())?;
    ///     Ok(())
    /// };
    /// let transport = MockStream::new()?;
    /// let proxy: SocketAddr = "10.0.0.5:40000".parse().unwrap();
    /// let relayed = transport.push(
    ///     MockConn::new().peer(proxy).read("PROXY TCP4 198.51.100.7 10.0.0.5 5555 443\r\n"),
    /// );
    /// let mut server = Server::new(Sequential::new(), transport, who)?
    ///     .proxy_protocol(ProxyProtocol::trusted(["10.0.0.0/8"]).unwrap());
    /// assert_eq!(server.handle_request()?, HandleOutcome::Handled);
    /// assert_eq!(relayed.written_str(), "198.51.100.7:5555 via 10.0.0.5:40000");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn proxy_peer(&self) -> Option<&Addr> {
        self.proxied.as_ref().map(|p| &p.via)
    }

    /// What the TLS handshake settled — SNI name, ALPN protocol, version, cipher suite, the client's
    /// certificates under mutual TLS — for a connection served over TLS
    /// ([`Server::tls`](crate::Server::tls)); `None` for a plain one. (The `tls` feature.)
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::testing::{run_stream, MockConn};
    /// use socketserver::StreamRequest;
    ///
    /// let check = |req: &mut StreamRequest| -> anyhow::Result<()> {
    ///     anyhow::ensure!(req.tls().is_none()); // a plain connection
    ///     Ok(())
    /// };
    /// run_stream(&check, MockConn::new())?;
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&crate::tls::TlsInfo> {
        self.tls.as_deref()
    }

    /// The PROXY protocol header a trusted proxy sent, with the address the client connected to
    /// (`destination`) and any v2 TLVs; `None` for a connection straight from its client.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::testing::{run_stream, MockConn};
    /// use socketserver::StreamRequest;
    ///
    /// // run_stream serves with the default options, where the PROXY protocol is off.
    /// let check = |req: &mut StreamRequest| -> anyhow::Result<()> {
    ///     anyhow::ensure!(req.proxy_header().is_none() && req.proxy_peer().is_none());
    ///     Ok(())
    /// };
    /// run_stream(&check, MockConn::new().read("PROXY UNKNOWN\r\n"))?;
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn proxy_header(&self) -> Option<&ProxyHeader> {
        self.proxied.as_ref().map(|p| &p.header)
    }

    /// Says that the handler is between requests: the previous one is answered, and it is about to
    /// wait for the next (a keep-alive connection, a line protocol's next command). Until bytes of the
    /// next request arrive, the connection is *idle*: the state hook
    /// ([`Server::conn_state`](crate::Server::conn_state)) hears [`ConnState::Idle`], then
    /// [`ConnState::Active`] when it reads again. If the next request is already buffered (a
    /// pipelining client), the connection stays active.
    ///
    /// A drain (shutdown, a signal, an upgrade) ends an idle connection at once instead of waiting
    /// for its next request, and closes it the way Apache and nginx do, lingering: the peer is sent
    /// end of stream, and the handler's waiting read returns end of stream once the peer has closed
    /// too, or after 2 s. A request the peer sent in between crossed the drain: it is read and
    /// dropped, so the peer sees a clean close, never a reset, and can send it again on a new
    /// connection, as HTTP clients do.
    ///
    /// # Examples
    ///
    /// A line protocol that marks the boundary after each answer:
    ///
    /// ```
    /// use std::io::{BufRead, Write};
    /// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
    ///
    /// let upper = |req: &mut StreamRequest| -> anyhow::Result<()> {
    ///     loop {
    ///         req.idle(); // waiting for the next command
    ///         let mut line = String::new();
    ///         if req.read_line(&mut line)? == 0 {
    ///             return Ok(());
    ///         }
    ///         req.write_all(line.to_uppercase().as_bytes())?;
    ///     }
    /// };
    /// let conn = MockConn::new().read("a\n").read("b\n");
    /// let probe = conn.probe();
    /// run_stream(&upper, conn)?;
    /// assert_eq!(probe.written_str(), "A\nB\n");
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn idle(&mut self) {
        let reader = self.rfile.get_ref();
        // The next request is here already: in the buffer, or held by a layer (TLS records that came
        // with the last one), where neither a drain nor a forked child's drain signal would see it.
        if !self.rfile.buffer().is_empty() || reader.conn.holds_input() {
            return;
        }
        if reader.phase.set_idle() {
            if reader.phase.is_idle() {
                // Between two requests (not before the first): a forked child's drain may close it.
                crate::sys::signal::set_idle_fd(Some(reader.conn.fd().as_raw_fd()));
            }
            reader.tell(ConnState::Idle);
        }
    }

    /// Reads whole messages from the connection, cut by `decoder` — a
    /// [`FramedReader`](crate::framing::FramedReader) that also marks every boundary between two
    /// messages, as [`idle`](Self::idle) does: the state hook hears each one, and a drain closes the
    /// connection at once while it waits for the next message, instead of waiting for the drain
    /// deadline. Write replies through [`get_mut`](crate::framing::FramedReader::get_mut).
    ///
    /// # Examples
    ///
    /// A line protocol whose idle connections a drain closes at once:
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::framing::Lines;
    /// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
    ///
    /// let upper = |req: &mut StreamRequest| -> anyhow::Result<()> {
    ///     let mut lines = req.framed(Lines::new());
    ///     while let Some(line) = lines.read_frame()? {
    ///         let conn = lines.get_mut();
    ///         conn.write_all(&line.to_ascii_uppercase())?;
    ///         conn.write_all(b"\n")?;
    ///     }
    ///     Ok(())
    /// };
    /// let conn = MockConn::new().read("a\nb\n");
    /// let probe = conn.probe();
    /// run_stream(&upper, conn)?;
    /// assert_eq!(probe.written_str(), "A\nB\n");
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn framed<D: crate::framing::Decoder>(
        &mut self,
        decoder: D,
    ) -> crate::framing::FramedReader<&mut StreamRequest, D> {
        crate::framing::FramedReader::with_boundaries(self, decoder, |req| req.idle())
    }

    /// The server's shutdown handle (Python's `self.server.shutdown`), so a handler can stop the server
    /// — safely, even from inside a request.
    ///
    /// # Examples
    ///
    /// A `SHUTDOWN` command that stops the server from inside a request:
    ///
    /// ```
    /// use std::io::BufRead;
    /// use socketserver::testing::{MockConn, MockStream};
    /// use socketserver::{Sequential, Server, StreamRequest};
    ///
    /// let transport = MockStream::new()?;
    /// transport.push(MockConn::new().read("SHUTDOWN\n"));
    /// let mut server = Server::new(Sequential::new(), transport, |req: &mut StreamRequest| {
    ///     let mut line = String::new();
    ///     req.read_line(&mut line)?;
    ///     if line.trim() == "SHUTDOWN" {
    ///         req.server().shutdown(); // returns at once; the server stops after this request
    ///     }
    ///     Ok(())
    /// })?;
    /// assert_eq!(server.serve_forever()?.requests, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn server(&self) -> &ShutdownHandle {
        &self.server
    }

    /// Who is on the other end of a Unix stream connection (`SO_PEERCRED`): pid, uid and gid as of
    /// `connect(2)` — e.g. to serve only the socket owner's user.
    ///
    /// # Errors
    /// `InvalidInput` on a transport other than Unix streams (TCP has no peer credentials);
    /// `getsockopt(2)` failing.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::StreamRequest;
    /// let same_user_only = |req: &mut StreamRequest| -> anyhow::Result<()> {
    ///     let cred = req.peer_credentials()?;
    ///     anyhow::ensure!(cred.uid == nix::unistd::getuid().as_raw(), "uid {} refused", cred.uid);
    ///     Ok(())
    /// };
    /// # let _ = same_user_only;
    /// ```
    pub fn peer_credentials(&self) -> io::Result<crate::transport::PeerCredentials> {
        crate::transport::peer_credentials(self)
    }

    /// `shutdown(2)` on the connection: `Shutdown::Write` sends EOF to the peer while still reading.
    ///
    /// # Errors
    /// The socket's error.
    ///
    /// # Examples
    ///
    /// Telling the peer the reply is complete while the connection stays open:
    ///
    /// ```
    /// use std::io::Write;
    /// use std::net::Shutdown;
    /// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
    /// let conn = MockConn::new();
    /// let probe = conn.probe();
    /// run_stream(&|req: &mut StreamRequest| {
    ///     req.write_all(b"done")?;
    ///     req.shutdown(Shutdown::Write)?;
    ///     Ok(())
    /// }, conn)?;
    /// assert!(probe.is_write_shut());
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.conn.shutdown(how)
    }

    /// Changes this connection's read timeout (`SO_RCVTIMEO`); `None` waits forever. The server's
    /// [`connection_timeout`](crate::Server::connection_timeout), if any, still bounds it, and a read
    /// that times out names this timeout.
    ///
    /// # Errors
    /// The `setsockopt(2)` error.
    ///
    /// # Examples
    ///
    /// A short timeout for the greeting, a long one once the client is known:
    ///
    /// ```
    /// use std::io::BufRead;
    /// use std::time::Duration;
    /// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
    /// let handler = |req: &mut StreamRequest| -> anyhow::Result<()> {
    ///     req.set_read_timeout(Some(Duration::from_secs(5)))?;
    ///     let mut hello = String::new();
    ///     req.read_line(&mut hello)?;
    ///     req.set_read_timeout(Some(Duration::from_secs(300)))?;
    ///     Ok(())
    /// };
    /// run_stream(&handler, MockConn::new().read("HELLO\n"))?;
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let reader = self.rfile.get_mut();
        reader.conn.set_read_timeout(timeout)?;
        reader.timer.set_per_op(timeout);
        Ok(())
    }

    /// Changes this connection's write timeout (`SO_SNDTIMEO`); `None` waits forever.
    ///
    /// # Errors
    /// The `setsockopt(2)` error.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::Duration;
    /// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
    /// let bulk = |req: &mut StreamRequest| -> anyhow::Result<()> {
    ///     req.set_write_timeout(Some(Duration::from_secs(600)))?; // a large download to a slow reader
    ///     req.write_all(&[0; 4096])?;
    ///     Ok(())
    /// };
    /// let conn = MockConn::new();
    /// let probe = conn.probe();
    /// run_stream(&bulk, conn)?;
    /// assert_eq!(probe.written().len(), 4096);
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let writer = self.wfile.get_mut();
        writer.conn.set_write_timeout(timeout)?;
        writer.timer.set_per_op(timeout);
        Ok(())
    }
}

/// The connection's socket, for socket options this crate does not wrap (`SO_KEEPALIVE`, `TCP_CORK`,
/// `IP_TOS`, …) through `nix` or `socket2`. The request keeps owning the socket. A
/// [`MockConn`](crate::testing::MockConn) has an unconnected socket of its own here, so option-setting
/// code runs unchanged in unit tests.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use nix::sys::socket::{getsockopt, setsockopt, sockopt::KeepAlive};
/// use socketserver::{StreamRequest, TcpServer};
///
/// let mut server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
///     setsockopt(&*req, KeepAlive, &true)?;
///     let on = getsockopt(&*req, KeepAlive)?;
///     writeln!(req.wfile, "keepalive={on}")?;
///     Ok(())
/// })?;
/// let mut client = std::net::TcpStream::connect(server.local_addr().as_inet().unwrap())?;
/// server.handle_request()?;
/// let mut reply = String::new();
/// std::io::Read::read_to_string(&mut client, &mut reply)?;
/// assert_eq!(reply, "keepalive=true\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl AsFd for StreamRequest {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.fd()
    }
}

impl Read for StreamRequest {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rfile.read(buf)
    }
}

impl BufRead for StreamRequest {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.rfile.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.rfile.consume(amt)
    }
}

impl Write for StreamRequest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wfile.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.wfile.flush()
    }
}

/// The read half of a connection, under [`StreamRequest::rfile`].
///
/// Reads that time out fail with `ErrorKind::TimedOut` and a message naming the timeout, rather than
/// the `EAGAIN` the socket reports.
///
/// # Examples
///
/// ```
/// use std::io::Read;
/// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
/// let timed_out = |req: &mut StreamRequest| -> anyhow::Result<()> {
///     let mut all = Vec::new();
///     let err = req.rfile.read_to_end(&mut all).unwrap_err();
///     anyhow::ensure!(err.kind() == std::io::ErrorKind::TimedOut);
///     Ok(())
/// };
/// run_stream(&timed_out, MockConn::new().read_error(std::io::ErrorKind::TimedOut))?;
/// # Ok::<(), socketserver::RequestError>(())
/// ```
pub struct Reader {
    conn: Arc<dyn Duplex>,
    timer: Timer,
    /// Whether the handler is between requests ([`StreamRequest::idle`]).
    phase: Arc<Phase>,
    /// The connection-state hook and the peer it is told about, when there is a hook.
    told: Option<(StateHook, Addr)>,
    /// A drain ended the connection and its lingering is over: every read returns end of stream.
    ended: bool,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("conn", &self.conn)
            .field("idle", &self.phase.is_idle())
            .finish_non_exhaustive()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // The descriptor closes with the request; a drain signal must not shut a number reused since.
        crate::sys::signal::set_idle_fd(None);
    }
}

impl Reader {
    fn tell(&self, state: ConnState) {
        if let Some((hook, peer)) = self.told.as_ref().filter(|_| !self.phase.is_cut()) {
            hook(peer, state);
        }
    }

    /// A drain ended the connection between two requests and sent its peer end of stream: reads
    /// and drops whatever the peer still sends — a request that crossed the drain's end of stream —
    /// until the peer closes too, or [`LINGER`](crate::sys::LINGER) passes, or the drain ends the
    /// lingering early. Then every read returns end of stream. Closing the socket with bytes of that
    /// request unread would make the kernel answer with a reset instead of a clean close (Apache's
    /// `lingering_close`, nginx's `lingering_timeout`).
    fn linger(&mut self) -> io::Result<usize> {
        if std::mem::replace(&mut self.ended, true) {
            return Ok(0);
        }
        let deadline = Instant::now() + crate::sys::LINGER;
        let mut sink = [0u8; 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.conn.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.conn.read(&mut sink) {
                Ok(1..) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => break,
            }
        }
        Ok(0)
    }
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.phase.is_shut() {
            return self.linger();
        }
        // Between requests with the server draining, and nothing of a next request here: the
        // connection ends now (bytes already arriving are read: a request that came in just then).
        if self.phase.closing() && !crate::transport::has_input(&*self.conn) && self.phase.shut() {
            let _ = self.conn.shutdown(Shutdown::Write);
            return self.linger();
        }
        let conn = &self.conn;
        let result = loop {
            self.timer.arm(|t| conn.set_read_timeout(t))?;
            match conn.read(buf) {
                // A signal (a drain, a reload) interrupted the read: the kernel does not restart reads
                // on a socket with a receive timeout, even under `SA_RESTART`. The handler must not see
                // it, so read again (`arm` keeps the connection's deadline) — unless the signal was a
                // forked child's drain that took this idle connection.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if crate::sys::signal::child_shut() {
                        break Err(e);
                    }
                }
                result => break result,
            }
        };
        // The drain took the connection while this read waited, in this process or (a forked
        // child's) by its signal: what came is a request that will not be answered.
        if crate::sys::signal::leave_idle() {
            // The signal handler only woke this read (and could not speak TLS): the end of stream
            // is sent from here, through the layers.
            self.phase.set_shut();
            let _ = self.conn.shutdown(Shutdown::Write);
        }
        if self.phase.is_shut() {
            return match result {
                // Bytes of an unanswered request, the wake-up of a forked child's drain (a timeout or
                // a signal), or a failure: linger (which stops at once on a failed socket).
                Ok(1..) | Err(_) => self.linger(),
                // The peer closed too.
                Ok(0) => {
                    self.ended = true;
                    Ok(0)
                }
            };
        }
        let n = result.map_err(|e| self.timer.explain(e))?;
        if n > 0 && self.phase.set_busy() {
            self.tell(ConnState::Active);
        }
        Ok(n)
    }
}

/// The write half of a connection, under [`StreamRequest::wfile`].
///
/// Writes that time out (a peer that does not read) fail with `ErrorKind::TimedOut`.
///
/// # Examples
///
/// `rfile` and `wfile` are separate fields, so one call can copy from one to the other:
///
/// ```
/// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
/// let echo = |req: &mut StreamRequest| -> anyhow::Result<()> {
///     std::io::copy(&mut req.rfile, &mut req.wfile)?;
///     Ok(())
/// };
/// let conn = MockConn::new().read("one ").read("two");
/// let probe = conn.probe();
/// run_stream(&echo, conn)?;
/// assert_eq!(probe.written_str(), "one two");
/// # Ok::<(), socketserver::RequestError>(())
/// ```
#[derive(Debug)]
pub struct Writer {
    conn: Arc<dyn Duplex>,
    timer: Timer,
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let conn = &self.conn;
        loop {
            self.timer.arm(|t| conn.set_write_timeout(t))?;
            match conn.write(buf) {
                // As for reads: a send with a timeout is not restarted after a signal.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result.map_err(|e| self.timer.explain(e)),
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One direction's timeouts: the per-operation timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO`, set once when the
/// request starts) and the connection's overall deadline, which shortens the socket timeout only as the
/// deadline comes closer — so the common case costs no extra syscall per read or write.
#[derive(Debug)]
struct Timer {
    /// `"read"` or `"write"`, for error messages.
    op: &'static str,
    per_op: Option<Duration>,
    deadline: Option<(Instant, Duration)>,
    /// What the socket's timeout is set to now.
    armed: Option<Duration>,
}

impl Timer {
    fn new(op: &'static str, per_op: Option<Duration>, total: Option<Duration>) -> Timer {
        Timer {
            op,
            per_op,
            deadline: total.map(|t| (Instant::now() + t, t)),
            armed: per_op,
        }
    }

    /// The handler set the socket's per-operation timeout itself (and the socket has it now).
    fn set_per_op(&mut self, timeout: Option<Duration>) {
        self.per_op = timeout;
        self.armed = timeout;
    }

    /// Before an operation: fail if the deadline has passed, else make sure the socket's timeout is
    /// the shorter of the per-operation timeout and the time left.
    fn arm(&mut self, set: impl FnOnce(Option<Duration>) -> io::Result<()>) -> io::Result<()> {
        let Some((deadline, total)) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connection_timeout of {total:?} passed"),
            ));
        }
        // SO_RCVTIMEO rounds to microseconds; never arm zero, which would mean "forever".
        let want = match self.per_op {
            Some(per_op) if per_op <= left => per_op,
            _ => left.max(Duration::from_millis(1)),
        };
        if self.armed != Some(want) {
            set(Some(want))?;
            self.armed = Some(want);
        }
        Ok(())
    }

    /// Turns the socket's `EAGAIN` on timeout into `TimedOut`, saying which timeout fired.
    fn explain(&self, err: io::Error) -> io::Error {
        if err.kind() != io::ErrorKind::WouldBlock {
            return err;
        }
        let what = match (self.deadline, self.per_op) {
            (Some((deadline, total)), _)
                if Instant::now() + Duration::from_millis(1) >= deadline =>
            {
                format!("connection_timeout of {total:?} passed")
            }
            (_, Some(t)) => format!("{} timed out after {t:?} ({}_timeout)", self.op, self.op),
            (_, None) => format!("{} timed out", self.op),
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handlers_own_timeout_is_kept_under_the_connection_deadline() {
        let mut timer = Timer::new(
            "read",
            Some(Duration::from_secs(60)),
            Some(Duration::from_secs(30)),
        );
        let mut armed = Vec::new();
        let mut record = |t| {
            armed.push(t);
            Ok(())
        };
        timer.arm(&mut record).unwrap();
        assert!(armed[0].unwrap() <= Duration::from_secs(30), "{armed:?}");
        // The handler shortens its read timeout: the deadline must never lengthen it again.
        timer.set_per_op(Some(Duration::from_secs(5)));
        let mut rearmed = Vec::new();
        for _ in 0..3 {
            timer
                .arm(|t| {
                    rearmed.push(t);
                    Ok(())
                })
                .unwrap();
        }
        assert!(rearmed.is_empty(), "re-armed to {rearmed:?}");
        let err = timer.explain(io::ErrorKind::WouldBlock.into());
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "read timed out after 5s (read_timeout)");
    }
}
