//! The PROXY protocol layer: a trusted proxy's header, read before the handler, makes the original
//! client the connection's peer.

use std::io;
use std::time::Instant;

use super::{Layer, Prefixed, Progress, Session};
use crate::addr::Addr;
use crate::error::RequestError;
use crate::framing::FrameBuf;
use crate::proxy_protocol::{Command, Parsed, ProxyProtocol, parse_with_limit};
use crate::transport::{ConnInfo, Incoming, Proxied};

/// How many bytes one blocking read takes while the header is incomplete: a whole v1 header or the
/// usual v2 one in one read; whatever the client sent after it is handed on to the handler.
const CHUNK: usize = 512;

/// Reads a PROXY protocol header from each connection of a trusted proxy (see [`ProxyProtocol`] for
/// the policy); connections from anyone else pass untouched.
#[derive(Debug)]
pub(crate) struct ProxyLayer {
    config: ProxyProtocol,
}

impl ProxyLayer {
    pub(crate) fn new(config: ProxyProtocol) -> Self {
        ProxyLayer { config }
    }
}

impl Layer for ProxyLayer {
    fn establish(&self, mut incoming: Incoming) -> Result<Incoming, RequestError> {
        if !self.config.is_trusted(&incoming.peer) {
            return Ok(incoming);
        }
        let timeout = self.config.header_timeout;
        let deadline = Instant::now() + timeout;
        let timed_out = || {
            RequestError::ProxyHeader(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no complete PROXY protocol header within {timeout:?}"),
            ))
        };
        let mut received = FrameBuf::with_capacity(CHUNK);
        let (header, len) = loop {
            match parse_with_limit(received.as_slice(), self.config.max_v2_len) {
                Ok(Parsed::Complete { header, len }) => break (header, len),
                Ok(Parsed::Incomplete) => {}
                Err(e) => return Err(RequestError::ProxyHeader(e.into())),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            // The socket's timeout becomes the time left, so a trickling proxy cannot stretch the
            // header past its deadline; the request's own timeouts are set after the layers ran.
            incoming
                .conn
                .set_read_timeout(Some(left))
                .map_err(RequestError::ProxyHeader)?;
            match received.read_from(&mut DuplexReader(&*incoming.conn), CHUNK) {
                Ok(0) => {
                    return Err(RequestError::ProxyHeader(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ended before the PROXY protocol header was complete",
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
                Err(e) => return Err(RequestError::ProxyHeader(e)),
            }
        };
        received.consume(len);
        let proxied = Proxied {
            via: incoming.peer.clone(),
            header,
        };
        incoming.peer = client(&proxied);
        incoming.conn = Prefixed::wrap(received.as_slice(), incoming.conn);
        incoming.info.proxied = Some(Box::new(proxied));
        Ok(incoming)
    }

    fn session(&self, peer: &Addr) -> Option<Box<dyn Session>> {
        self.config.is_trusted(peer).then(|| {
            Box::new(ProxySession {
                max_v2_len: self.config.max_v2_len,
                deadline: Instant::now() + self.config.header_timeout,
                timeout: self.config.header_timeout,
            }) as Box<dyn Session>
        })
    }
}

/// The peer the handler should see: the header's source for a relayed connection, the proxy's own
/// address for `LOCAL` (health checks) and for headers without IP addresses.
fn client(proxied: &Proxied) -> Addr {
    match (proxied.header.command, proxied.header.source) {
        (Command::Proxy, Some(source)) => Addr::Inet(source),
        _ => proxied.via.clone(),
    }
}

/// `io::Read` over a shared connection, for [`FrameBuf::read_from`].
struct DuplexReader<'a>(&'a dyn crate::transport::Duplex);

impl io::Read for DuplexReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// A trusted proxy's connection on the event loop, until its header is complete.
#[derive(Debug)]
struct ProxySession {
    max_v2_len: usize,
    deadline: Instant,
    timeout: std::time::Duration,
}

impl Session for ProxySession {
    fn advance(
        &mut self,
        input: &mut FrameBuf,
        peer: &mut Addr,
        info: &mut ConnInfo,
    ) -> Result<Progress, RequestError> {
        match parse_with_limit(input.as_slice(), self.max_v2_len) {
            Ok(Parsed::Incomplete) => Ok(Progress::Pending),
            Ok(Parsed::Complete { header, len }) => {
                input.consume(len);
                let proxied = Proxied {
                    via: peer.clone(),
                    header,
                };
                *peer = client(&proxied);
                info.proxied = Some(Box::new(proxied));
                Ok(Progress::Done)
            }
            Err(e) => Err(RequestError::ProxyHeader(e.into())),
        }
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn timed_out(&self) -> RequestError {
        RequestError::ProxyHeader(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no complete PROXY protocol header within {:?}",
                self.timeout
            ),
        ))
    }
}
