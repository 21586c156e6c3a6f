//! Handlers: what to do with one request.
//!
//! Implement [`StreamHandler`] for connection-oriented transports (TCP, Unix streams) and
//! [`DatagramHandler`] for datagram transports (UDP, Unix datagrams) — Python's
//! `StreamRequestHandler` and `DatagramRequestHandler`. Both have Python's `setup` → `handle` → `finish`
//! order: if `setup` fails, neither `handle` nor `finish` runs; if `handle` fails or panics, `finish`
//! still runs, and the first failure goes to the server's error hook.
//!
//! For the event-loop strategy, [`Reactor`](crate::Reactor), implement
//! [`MessageHandler`](crate::reactor::MessageHandler) instead (in [`reactor`](crate::reactor)): it is
//! called with one decoded message at a time and replies by queuing bytes, never blocking.
//!
//! One handler value serves every request (it is shared, so `&self`); per-request state lives in the
//! request or on the stack of `handle`. A closure taking `&mut StreamRequest` (or `&mut DatagramRequest`)
//! and returning `anyhow::Result<()>` is a handler too.
//!
//! # Under `Forking` and `PreFork`
//! A request served in a child process runs on a *copy* of the handler: whatever the handler changes
//! in its own memory (a counter, a `Mutex<HashMap>`) changes the child's copy only, and is gone when
//! the child exits. Keep state that requests share outside the process (a database, a file, a state
//! service on a Unix socket), or use `Threading`, `Pool` or `Sequential`.

// The sealed traits' methods take and return crate-private plumbing types (the serving policy, requests
// on their way to a handler): that is the point of sealing them, so the lint that flags private types
// in reachable signatures does not apply here.
#![allow(private_interfaces)]

use crate::error::RequestError;
use crate::shutdown::ShutdownHandle;
use crate::state::StateHook;
use crate::transport::Kind;
use crate::transport::sealed::KindOf;

mod datagram;
mod stream;

pub use datagram::{DatagramHandler, DatagramRequest};
pub use stream::{Reader, StreamHandler, StreamOptions, StreamRequest, Writer};

/// The plumbing that ties a handler trait to the transport kind it serves (not public API).
pub(crate) mod sealed {
    use super::{Env, KindOf, RequestError};

    /// A handler that can serve the requests of transport kind `K`: every [`StreamHandler`] serves
    /// [`Stream`](crate::transport::Stream) transports and every [`DatagramHandler`] serves
    /// [`Datagram`](crate::transport::Datagram) transports. This is how `Server<C, T, H>` refuses, at
    /// compile time, a handler of the wrong kind for its transport.
    ///
    /// [`StreamHandler`]: super::StreamHandler
    /// [`DatagramHandler`]: super::DatagramHandler
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not known to serve `{K}` transports: serve a `StreamHandler` with Tcp or UnixStream, a `DatagramHandler` with Udp or UnixDatagram; in generic code, bound the strategy with `Concurrency<T, H>`",
        label = "not known to serve this transport's kind",
        note = "`Reactor` serves a `MessageHandler` instead, on Tcp or UnixStream",
        note = "a closure handler takes `&mut StreamRequest` or `&mut DatagramRequest`, returns `anyhow::Result<()>` and is `Send + Sync + 'static`"
    )]
    pub trait Handles<K: super::Kind>: Send + Sync + 'static {
        /// Runs the whole request (setup, handle, finish, reply), catching panics.
        ///
        /// # Errors
        /// The first failure of the request, for the server to report.
        fn serve(&self, request: <K as KindOf>::Request, env: &Env) -> Result<(), RequestError>;
    }
}

/// What a request sees of its server: the shutdown handle (`req.server()`) and the per-connection
/// options.
#[derive(Clone)]
pub(crate) struct Env {
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) stream: StreamOptions,
    /// The connection-state hook, for a request's own state changes (idle, active again).
    pub(crate) on_state: Option<StateHook>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Env {
    /// An environment for one request served outside a server, as the test runners serve them.
    ///
    /// # Errors
    /// `eventfd(2)` failing.
    pub(crate) fn standalone() -> std::io::Result<Env> {
        Ok(Env {
            shutdown: ShutdownHandle::new()?,
            stream: StreamOptions::default(),
            on_state: None,
        })
    }
}
