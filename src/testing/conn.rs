//! [`MockConn`] and [`MockProbe`]: one scripted connection, and what the handler did with it.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use parking_lot::Mutex;

use crate::addr::Addr;
use crate::transport::Duplex;

/// The peer a mock request comes from unless told otherwise.
pub(super) fn default_peer() -> Addr {
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
/// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
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
    pub(super) peer: Addr,
    /// An unconnected TCP socket, so that a handler setting socket options through
    /// [`StreamRequest`](crate::StreamRequest)'s `AsFd` runs unchanged in a unit test.
    socket: OwnedFd,
}

impl Default for MockConn {
    fn default() -> Self {
        MockConn::new()
    }
}

impl MockConn {
    /// A connection from `127.0.0.1:40000` that sends nothing and then end-of-file.
    ///
    /// # Panics
    /// If the process is out of descriptors for the connection's placeholder socket (see
    /// [`StreamRequest`'s `AsFd`](crate::StreamRequest#impl-AsFd-for-StreamRequest)).
    ///
    /// # Examples
    ///
    /// ```
    /// let conn = socketserver::testing::MockConn::new();
    /// assert!(conn.probe().written().is_empty());
    /// ```
    pub fn new() -> Self {
        let socket = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket(2) for a MockConn's placeholder socket");
        MockConn {
            script: Mutex::new(VecDeque::new()),
            state: Arc::new(Mutex::new(ProbeState::default())),
            peer: default_peer(),
            socket,
        }
    }

    /// Appends a chunk the client sends; the handler's reads see it after the earlier chunks.
    ///
    /// # Examples
    ///
    /// ```
    /// let _conn = socketserver::testing::MockConn::new().read("GET ").read(b"/\r\n");
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
    /// let _conn = socketserver::testing::MockConn::new().read_error(std::io::ErrorKind::TimedOut);
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
    /// let _conn = socketserver::testing::MockConn::new().peer(peer);
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
    /// let conn = socketserver::testing::MockConn::new();
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

impl Duplex for MockConn {
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

    fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Observes a [`MockConn`]: what was written to it and whether it was closed.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
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
    /// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
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
    /// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
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
    /// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
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
    /// use socketserver::{testing::{run_stream, MockConn}, StreamRequest};
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
