//! Per-connection layers: work on a stream connection that is neither the transport's nor the
//! handler's, run between the two: the PROXY protocol, then TLS.
//!
//! A layer has two forms, one per serving model, so that every strategy runs the same layers:
//!
//! - **Blocking** ([`Layer::establish`]): on the worker that serves the connection (a thread, a forked
//!   child, a pre-forked worker, or the serving thread under `Sequential`), before the handler's
//!   `setup`. The accept loop never reads from a connection, so a slow peer stalls only its own
//!   request. A layer may replace the connection (wrap it), its peer address, and record what it learnt
//!   in the connection's [`ConnInfo`].
//! - **Non-blocking** ([`Layer::session`]): the `Reactor`'s event loop feeds each connection's received
//!   bytes to its sessions until they are done, then hands the rest to the codec. The handler's
//!   `on_open` runs once every session is done, so it sees what they learnt (the proxied client, the
//!   TLS handshake). A session that transforms the whole stream wraps the socket first
//!   ([`Session::wrap`]).
//!
//! Layers are registered in one place, [`Layers::push`] (called by the server's builder methods, e.g.
//! [`Server::proxy_protocol`](crate::Server::proxy_protocol)), and run in the order registered.
//! Adding a layer is a file here plus one registration.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::addr::Addr;
use crate::error::RequestError;
use crate::framing::FrameBuf;
use crate::transport::{ConnInfo, Duplex, Incoming};

mod proxy;
#[cfg(feature = "tls")]
mod tls;

pub(crate) use proxy::ProxyLayer;
#[cfg(feature = "tls")]
pub(crate) use tls::TlsLayer;

/// One per-connection layer, in both its forms.
pub(crate) trait Layer: Send + Sync + fmt::Debug {
    /// The blocking form: takes the accepted connection and returns it as the handler should see it.
    ///
    /// # Errors
    /// The layer refused the connection (a malformed header, a failed handshake); it is closed without
    /// running the handler, and the error is reported with the connection's own peer.
    fn establish(&self, incoming: Incoming) -> Result<Incoming, RequestError>;

    /// The non-blocking form: a session for a connection from `peer`, or `None` when this layer has
    /// nothing to do for it (the PROXY protocol for an untrusted peer).
    fn session(&self, peer: &Addr) -> Option<Box<dyn Session>>;

    /// A reload of the server (a `PreFork` reload, before it forks new workers): reads again what
    /// the layer read from files. A failure is the layer's to report; it keeps what it had.
    fn reload(&self) {}
}

/// One connection's non-blocking layer state, fed by the event loop.
pub(crate) trait Session: Send + fmt::Debug {
    /// New bytes are in `input`: consume the ones that belong to the layer, update `peer` and `info`
    /// with what was learnt, and say whether the layer is done with the connection (the rest of
    /// `input` is then the handler's).
    ///
    /// # Errors
    /// The bytes cannot be what the layer expects; the connection is closed.
    fn advance(
        &mut self,
        input: &mut FrameBuf,
        peer: &mut Addr,
        info: &mut ConnInfo,
    ) -> Result<Progress, RequestError>;

    /// Wraps the connection when the layer transforms the whole stream (TLS), before the loop reads
    /// through it: at accept for the first layer, else once the layer before it is done — then
    /// `io` first yields what that layer read past its own part. Most layers only read the start of
    /// the stream, and leave it as it is.
    ///
    /// # Errors
    /// The layer cannot take the connection; it is closed and the error reported.
    fn wrap(&mut self, io: Arc<dyn Duplex>) -> Result<Arc<dyn Duplex>, RequestError> {
        Ok(io)
    }

    /// When the layer gives up waiting for the bytes it needs.
    fn deadline(&self) -> Instant;

    /// The error to report when [`deadline`](Self::deadline) passes first.
    fn timed_out(&self) -> RequestError;
}

/// What [`Session::advance`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More bytes are needed.
    Pending,
    /// The layer is done; what is left of the input is the handler's.
    Done,
}

/// The layers of one server, in the order they run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layers(Vec<Arc<dyn Layer>>);

impl Layers {
    /// Registers `layer` to run after the ones registered before it.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))] // TLS is the layer that runs last
    pub(crate) fn push(&mut self, layer: impl Layer + 'static) {
        self.0.push(Arc::new(layer));
    }

    /// Registers `layer` to run before every other: the PROXY protocol header comes before anything
    /// else on the stream (before a TLS handshake), whichever was configured first.
    pub(crate) fn push_first(&mut self, layer: impl Layer + 'static) {
        self.0.insert(0, Arc::new(layer));
    }

    /// Runs every layer's blocking form over `incoming`, in order.
    ///
    /// # Errors
    /// The first layer that refused the connection.
    pub(crate) fn establish(&self, incoming: Incoming) -> Result<Incoming, RequestError> {
        self.0
            .iter()
            .try_fold(incoming, |incoming, layer| layer.establish(incoming))
    }

    /// Every layer's [`Layer::reload`].
    pub(crate) fn reload(&self) {
        for layer in &self.0 {
            layer.reload();
        }
    }

    /// The non-blocking sessions a new connection from `peer` needs, in order (usually none).
    pub(crate) fn sessions(&self, peer: &Addr) -> Vec<Box<dyn Session>> {
        self.0
            .iter()
            .filter_map(|layer| layer.session(peer))
            .collect()
    }
}

/// A connection some of whose bytes a layer read ahead: reads return those first, then the socket's.
///
/// Layers read in chunks, so the end of a header usually arrives with the first bytes of the
/// application's data; those must reach the handler unchanged.
#[derive(Debug)]
pub(crate) struct Prefixed {
    ahead: Mutex<FrameBuf>,
    inner: Arc<dyn Duplex>,
}

impl Prefixed {
    /// `inner`, with `ahead` to be read before anything else; `inner` itself when nothing was read ahead.
    pub(crate) fn wrap(ahead: &[u8], inner: Arc<dyn Duplex>) -> Arc<dyn Duplex> {
        if ahead.is_empty() {
            return inner;
        }
        let mut buf = FrameBuf::with_capacity(ahead.len());
        buf.extend_from_slice(ahead);
        Arc::new(Prefixed {
            ahead: Mutex::new(buf),
            inner,
        })
    }
}

impl Duplex for Prefixed {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        {
            let mut ahead = self.ahead.lock();
            if !ahead.is_empty() {
                let n = ahead.len().min(buf.len());
                buf[..n].copy_from_slice(&ahead.as_slice()[..n]);
                ahead.consume(n);
                if ahead.is_empty() {
                    ahead.clear();
                }
                return Ok(n);
            }
        }
        self.inner.read(buf)
    }
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_write_timeout(timeout)
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd()
    }
}
