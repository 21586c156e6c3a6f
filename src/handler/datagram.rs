//! [`DatagramHandler`] and [`DatagramRequest`]: serving one datagram.

use std::io::{self, Write};

use super::Env;
use super::sealed::Handles;
use crate::addr::Addr;
use crate::error::{RequestError, guarded};
use crate::shutdown::ShutdownHandle;
use crate::transport::{Datagram, Packet};

/// Serves one datagram of a datagram transport: Python's `DatagramRequestHandler`.
///
/// Whatever the handler writes to [`DatagramRequest::wfile`] is sent back to the peer as **one** datagram
/// from the server's socket once the request succeeds; writing nothing sends nothing.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use socketserver::{testing::run_datagram, DatagramHandler, DatagramRequest};
///
/// struct Upper;
/// impl DatagramHandler for Upper {
///     fn handle(&self, req: &mut DatagramRequest) -> anyhow::Result<()> {
///         let reply = req.data().to_ascii_uppercase();
///         req.wfile.write_all(&reply)?;
///         Ok(())
///     }
/// }
///
/// let reply = run_datagram(&Upper, b"ping")?;
/// assert_eq!(reply.as_deref(), Some(&b"PING"[..]));
/// # Ok::<(), socketserver::RequestError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `DatagramHandler`, which datagram transports (Udp, UnixDatagram) need; a `StreamHandler` is served on Tcp or UnixStream, a `MessageHandler` under `Reactor`",
    label = "not a `DatagramHandler`",
    note = "a closure is a `DatagramHandler` when it takes `&mut DatagramRequest`, returns `anyhow::Result<()>` (not `io::Result`) and is `Send + Sync + 'static` (it may capture `Arc`s, not `Rc`s, `Cell`s or borrowed values)"
)]
pub trait DatagramHandler: Send + Sync + 'static {
    /// Runs before [`handle`](Self::handle). If it fails, neither `handle` nor `finish` runs.
    ///
    /// # Errors
    /// Any error; reported to the server's error hook with the peer.
    fn setup(&self, req: &mut DatagramRequest) -> anyhow::Result<()> {
        let _ = req;
        Ok(())
    }

    /// Serves the datagram in `req.data()`, writing any reply to `req.wfile`.
    ///
    /// # Errors
    /// Any error; reported to the server's error hook with the peer, and no reply is sent.
    fn handle(&self, req: &mut DatagramRequest) -> anyhow::Result<()>;

    /// Runs after `handle`, even when `handle` failed or panicked.
    ///
    /// # Errors
    /// Any error; reported like `handle`'s.
    fn finish(&self, req: &mut DatagramRequest) -> anyhow::Result<()> {
        let _ = req;
        Ok(())
    }
}

// As for `StreamHandler`: the diagnostic names the trait, not the closure impl.
#[diagnostic::do_not_recommend]
impl<F> DatagramHandler for F
where
    F: Fn(&mut DatagramRequest) -> anyhow::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, req: &mut DatagramRequest) -> anyhow::Result<()> {
        self(req)
    }
}

impl<H: DatagramHandler> Handles<Datagram> for H {
    fn serve(&self, packet: Packet, env: &Env) -> Result<(), RequestError> {
        let Packet { data, peer, socket } = packet;
        let mut req = DatagramRequest {
            data,
            peer,
            wfile: Vec::new(),
            server: env.shutdown.clone(),
        };
        guarded(|| self.setup(&mut req))?;
        let handled = guarded(|| self.handle(&mut req));
        let finished = guarded(|| self.finish(&mut req));
        handled.and(finished)?;
        if !req.wfile.is_empty() {
            socket.send_to(&req.wfile, &req.peer).map_err(|e| {
                RequestError::Reply(crate::sys::context(e, format!("sendto(2) to {}", req.peer)))
            })?;
        }
        Ok(())
    }
}

/// One datagram, as a datagram handler sees it: Python's `self.packet` (here [`data`](Self::data)),
/// `self.wfile`, `self.client_address` and `self.server`.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use socketserver::{testing::run_datagram, DatagramRequest};
///
/// let count = |req: &mut DatagramRequest| -> anyhow::Result<()> {
///     write!(req, "{} bytes", req.data().len())?;
///     Ok(())
/// };
/// assert_eq!(run_datagram(&count, b"abc")?.unwrap(), b"3 bytes");
/// # Ok::<(), socketserver::RequestError>(())
/// ```
#[derive(Debug)]
pub struct DatagramRequest {
    data: Vec<u8>,
    peer: Addr,
    /// The reply, sent as one datagram when the request succeeds (Python's `wfile`). Left empty, nothing
    /// is sent.
    pub wfile: Vec<u8>,
    server: ShutdownHandle,
}

impl DatagramRequest {
    /// The datagram's bytes, whole (Python's `self.packet`; read them as a stream with `&req.data()[..]`,
    /// which implements `BufRead`, where Python would use `rfile`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, Write};
    /// use socketserver::{testing::run_datagram, DatagramRequest};
    /// let count_lines = |req: &mut DatagramRequest| -> anyhow::Result<()> {
    ///     let lines = req.data().lines().count();
    ///     write!(req, "{lines}")?;
    ///     Ok(())
    /// };
    /// assert_eq!(run_datagram(&count_lines, b"a\nb\nc")?.unwrap(), b"3");
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The sender's address (Python's `client_address`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::{testing::run_datagram, DatagramRequest};
    /// let whoami = |req: &mut DatagramRequest| -> anyhow::Result<()> {
    ///     let peer = req.peer().to_string();
    ///     req.write_all(peer.as_bytes())?;
    ///     Ok(())
    /// };
    /// assert_eq!(run_datagram(&whoami, b"?")?.unwrap(), b"127.0.0.1:40000"); // run_datagram's peer
    /// # Ok::<(), socketserver::RequestError>(())
    /// ```
    pub fn peer(&self) -> &Addr {
        &self.peer
    }

    /// The server's shutdown handle.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::testing::MockDatagram;
    /// use socketserver::{DatagramRequest, Sequential, Server};
    ///
    /// let transport = MockDatagram::new()?;
    /// transport.push("quit", "127.0.0.1:9000".parse::<std::net::SocketAddr>().unwrap());
    /// let mut server = Server::new(Sequential::new(), transport, |req: &mut DatagramRequest| {
    ///     if req.data() == b"quit" {
    ///         req.server().shutdown();
    ///     }
    ///     Ok(())
    /// })?;
    /// assert_eq!(server.serve_forever()?.requests, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn server(&self) -> &ShutdownHandle {
        &self.server
    }
}

impl Write for DatagramRequest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wfile.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
