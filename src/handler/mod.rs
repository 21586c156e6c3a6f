//! Handlers: what to do with one request.
//!
//! Implement [`StreamHandler`] for connection-oriented transports (TCP, Unix streams) and
//! [`DatagramHandler`] for datagram transports (UDP, Unix datagrams) — Python's
//! `StreamRequestHandler` and `DatagramRequestHandler`. Both have Python's `setup` → `handle` → `finish`
//! order: if `setup` fails, neither `handle` nor `finish` runs; if `handle` fails or panics, `finish`
//! still runs, and the first failure goes to the server's error hook.
//!
//! For the event-loop strategy, [`Reactor`](crate::Reactor), implement [`MessageHandler`] instead: it is
//! called with one decoded message at a time and replies by queuing bytes through [`Conn`], never
//! blocking.
//!
//! One handler value serves every request (it is shared, so `&self`); per-request state lives in the
//! request or on the stack of `handle`. A closure taking `&mut StreamRequest` (or `&mut DatagramRequest`)
//! and returning `anyhow::Result<()>` is a handler too.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::addr::Addr;
use crate::error::RequestError;
use crate::shutdown::ShutdownHandle;
use crate::transport::Kind;

mod conn;
mod datagram;
mod message;
mod proxy;
mod stream;

pub use conn::{Broadcast, Conn, ConnId, SendError};
pub use datagram::{DatagramHandler, DatagramRequest};
pub use message::MessageHandler;
pub use stream::{Reader, StreamHandler, StreamOptions, StreamRequest, Writer};

/// The error hook's shape: the peer (when there is one) and what went wrong.
pub(crate) type ErrorHook = Arc<dyn Fn(Option<&Addr>, &RequestError) + Send + Sync>;

/// What every request of one server shares: built once per `serve_forever`, cloned into workers.
#[derive(Clone)]
pub struct RequestContext {
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) on_error: ErrorHook,
    pub(crate) stream: StreamOptions,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl RequestContext {
    /// Reports a failure through the error hook.
    pub(crate) fn report(&self, peer: Option<&Addr>, err: &RequestError) {
        (self.on_error)(peer, err);
    }
}

/// The default error hook: log through the `log` facade, as Python's `handle_error` prints a traceback.
pub(crate) fn log_error(peer: Option<&Addr>, err: &RequestError) {
    match peer {
        Some(p) => log::error!("request from {p}: {err}"),
        None => log::error!("{err}"),
    }
}

/// A handler that can serve requests of transport kind `K`: [`StreamHandler`]s serve
/// [`Stream`](crate::transport::Stream) transports and [`DatagramHandler`]s serve
/// [`Datagram`](crate::transport::Datagram) transports. This is how `Server<C, T, H>` refuses, at compile
/// time, a handler of the wrong kind for its transport.
///
/// # Sealed
/// Implemented for every `StreamHandler` and every `DatagramHandler`; implement those instead.
///
/// # Examples
///
/// As a bound, for code that serves any handler on a transport of the matching kind:
///
/// ```
/// use std::io::Write;
/// use socketserver::handler::Service;
/// use socketserver::mock::{MockConn, MockDatagram, MockStream};
/// use socketserver::{DatagramRequest, HandleOutcome, Sequential, Server, StreamRequest, Transport};
///
/// fn serve_one<T: Transport, H: Service<T::Kind>>(transport: T, handler: H) -> std::io::Result<HandleOutcome> {
///     Server::new(Sequential, transport, handler)?.handle_request()
/// }
///
/// let stream = MockStream::new()?;
/// let probe = stream.push(MockConn::new());
/// serve_one(stream, |req: &mut StreamRequest| { req.write_all(b"hi")?; Ok(()) })?;
/// assert_eq!(probe.written(), b"hi");
///
/// let datagrams = MockDatagram::new()?;
/// datagrams.push("x", "127.0.0.1:9".parse::<std::net::SocketAddr>().unwrap());
/// serve_one(datagrams.clone(), |req: &mut DatagramRequest| { req.write_all(b"y")?; Ok(()) })?;
/// assert_eq!(datagrams.replies().len(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Service<K: Kind>: Send + Sync + 'static {
    /// Runs the whole request (setup, handle, finish, reply), catching panics.
    ///
    /// # Errors
    /// The first failure of the request, for the server to report.
    fn serve(&self, request: K::Request, ctx: &RequestContext) -> Result<(), RequestError>;
}

/// Runs one hook of a handler, turning both `Err` and a panic into a [`RequestError`].
pub(crate) fn guarded<R>(f: impl FnOnce() -> anyhow::Result<R>) -> Result<R, RequestError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(RequestError::Handler(e)),
        Err(payload) => Err(RequestError::from_panic(payload)),
    }
}

/// Serves one request and reports its failure, if any; returns whether it succeeded. This is the one
/// body every concurrency strategy runs for a request, on whatever thread or process it chose.
pub(crate) fn run<K: Kind, H: Service<K>>(
    handler: &H,
    request: K::Request,
    ctx: &RequestContext,
) -> bool {
    let peer = K::peer(&request).clone();
    match handler.serve(request, ctx) {
        Ok(()) => true,
        Err(e) => {
            ctx.report(Some(&peer), &e);
            false
        }
    }
}
