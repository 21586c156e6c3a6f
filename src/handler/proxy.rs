//! Reading a trusted proxy's PROXY protocol header at the start of a stream request.
//!
//! This runs on the worker serving the connection, before the handler's `setup`: the accept loop never
//! reads from a connection, so a slow proxy delays only its own request.

use std::io::{self, BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use super::stream::Reader;
use crate::addr::Addr;
use crate::error::RequestError;
use crate::proxy_protocol::{read_header, Command, ProxyHeader, ProxyProtocol};
use crate::transport::Connection;

/// What a trusted proxy told us about a connection.
#[derive(Debug)]
pub(crate) struct Proxied {
    /// The proxy: the connection's own peer.
    pub(crate) via: Addr,
    /// The header it sent.
    pub(crate) header: ProxyHeader,
}

impl Proxied {
    /// The peer the handler should see: the header's source for a relayed connection, the proxy's own
    /// address for `LOCAL` (health checks) and for headers without IP addresses.
    pub(crate) fn client(&self) -> Addr {
        match (self.header.command, self.header.source) {
            (Command::Proxy, Some(source)) => Addr::Inet(source),
            _ => self.via.clone(),
        }
    }
}

/// Reads the header if `peer` is a trusted proxy; `Ok(None)` leaves an untrusted peer's bytes untouched.
///
/// The header is read through `rfile` itself, so whatever the proxy sent after the header stays
/// buffered for the handler. The connection's read timeout is lowered to the time left before the
/// header deadline for every read, and set back to `read_timeout` afterwards.
///
/// # Errors
/// [`RequestError::ProxyHeader`]: the header is malformed or too long (`InvalidData`), the stream ended
/// first (`UnexpectedEof`), the deadline passed (`TimedOut`), or the socket failed.
pub(crate) fn read_trusted_header(
    rfile: &mut BufReader<Reader>,
    conn: &dyn Connection,
    peer: &Addr,
    config: &ProxyProtocol,
    read_timeout: Option<Duration>,
) -> Result<Option<Proxied>, RequestError> {
    if !config.is_trusted(peer) {
        return Ok(None);
    }
    let timeout = config.header_timeout;
    let mut reader = Deadlined {
        inner: rfile,
        conn,
        deadline: Instant::now() + timeout,
    };
    let header = read_header(&mut reader, config.max_v2_len).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no complete PROXY protocol header within {timeout:?}"),
        ),
        _ => e,
    });
    let restored = conn.set_read_timeout(read_timeout);
    let header = header.map_err(RequestError::ProxyHeader)?;
    restored.map_err(|e| RequestError::Handler(e.into()))?;
    Ok(Some(Proxied {
        via: peer.clone(),
        header,
    }))
}

/// `rfile` with a deadline: before each read from the socket, the read timeout becomes the time left.
struct Deadlined<'a> {
    inner: &'a mut BufReader<Reader>,
    conn: &'a dyn Connection,
    deadline: Instant,
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Deadlined<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        // Only an empty buffer makes `fill_buf` read from the socket; that read gets the time left.
        if self.inner.buffer().is_empty() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            // SO_RCVTIMEO cannot be zero (zero means "forever"); `left` is not, and std rounds it up.
            self.conn.set_read_timeout(Some(left))?;
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt)
    }
}
