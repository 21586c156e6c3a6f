//! [`StreamHandler`] and [`StreamRequest`]: serving one connection.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

use super::{guarded, RequestContext, Service};
use crate::addr::Addr;
use crate::error::RequestError;
use crate::shutdown::ShutdownHandle;
use crate::transport::{Connection, Incoming, Stream};

/// Serves one connection of a stream transport: Python's `StreamRequestHandler`.
///
/// # Examples
///
/// An echo handler, unit-tested without a socket:
///
/// ```
/// use std::io::{BufRead, Write};
/// use socketserver::{mock::MockConn, StreamHandler, StreamRequest};
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
/// socketserver::mock::run_stream(&Echo, conn)?;
/// assert_eq!(probe.written(), b"hello\nworld\n");
/// assert!(probe.is_closed());
/// # Ok::<(), socketserver::RequestError>(())
/// ```
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

impl<F> StreamHandler for F
where
    F: Fn(&mut StreamRequest) -> anyhow::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        self(req)
    }
}

impl<H: StreamHandler> Service<Stream> for H {
    fn serve(&self, request: Incoming, ctx: &RequestContext) -> Result<(), RequestError> {
        let mut req =
            StreamRequest::new(request, ctx).map_err(|e| RequestError::Handler(e.into()))?;
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
    /// `SO_RCVTIMEO` for each connection: a read waiting longer fails with `WouldBlock`.
    pub read_timeout: Option<Duration>,
    /// `SO_SNDTIMEO` for each connection: a write waiting longer (a peer that does not read) fails.
    pub write_timeout: Option<Duration>,
    /// `TCP_NODELAY` for each connection (TCP only). Default off, as in Python.
    pub nodelay: bool,
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
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            read_timeout: Some(Self::DEFAULT_TIMEOUT),
            write_timeout: Some(Self::DEFAULT_TIMEOUT),
            nodelay: false,
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
/// use socketserver::{mock::{run_stream, MockConn}, StreamRequest};
///
/// let greet = |req: &mut StreamRequest| -> anyhow::Result<()> {
///     let mut name = String::new();
///     req.read_line(&mut name)?;
///     write!(req, "hello, {} from {}", name.trim(), req.peer())?;
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
    conn: Arc<dyn Connection>,
    peer: Addr,
    server: ShutdownHandle,
}

impl StreamRequest {
    pub(crate) fn new(incoming: Incoming, ctx: &RequestContext) -> io::Result<Self> {
        let Incoming { conn, peer } = incoming;
        let opts = &ctx.stream;
        conn.set_read_timeout(opts.read_timeout)?;
        conn.set_write_timeout(opts.write_timeout)?;
        if opts.nodelay {
            conn.set_nodelay(true)?;
        }
        Ok(StreamRequest {
            rfile: BufReader::with_capacity(opts.rbufsize.max(1), Reader(conn.clone())),
            wfile: BufWriter::with_capacity(opts.wbufsize, Writer(conn.clone())),
            conn,
            peer,
            server: ctx.shutdown.clone(),
        })
    }

    /// The peer's address (Python's `client_address`).
    pub fn peer(&self) -> &Addr {
        &self.peer
    }

    /// The server's shutdown handle (Python's `self.server.shutdown`), so a handler can stop the server
    /// — safely, even from inside a request.
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
        let fd = self.conn.raw_fd().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the connection has no socket")
        })?;
        crate::transport::unix_stream::peer_credentials_of(fd)
    }

    /// `shutdown(2)` on the connection: `Shutdown::Write` sends EOF to the peer while still reading.
    ///
    /// # Errors
    /// The socket's error.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.conn.shutdown(how)
    }

    /// Changes this connection's read timeout (`SO_RCVTIMEO`); `None` waits forever.
    ///
    /// # Errors
    /// The `setsockopt(2)` error.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.conn.set_read_timeout(timeout)
    }

    /// Changes this connection's write timeout (`SO_SNDTIMEO`); `None` waits forever.
    ///
    /// # Errors
    /// The `setsockopt(2)` error.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.conn.set_write_timeout(timeout)
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
#[derive(Debug)]
pub struct Reader(Arc<dyn Connection>);

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// The write half of a connection, under [`StreamRequest::wfile`].
#[derive(Debug)]
pub struct Writer(Arc<dyn Connection>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
