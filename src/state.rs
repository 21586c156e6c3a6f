//! [`ConnState`]: where a connection is in its life, as a [`Server::conn_state`](crate::Server::conn_state)
//! hook hears it — Go's `http.ConnState`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// A connection's state. A hook set with [`Server::conn_state`](crate::Server::conn_state) hears
/// each change:
///
/// `New` → `Active` → (`Idle` → `Active` →)* `Closed`, or `Cut` when the drain deadline ends it.
///
/// `Idle` means "between requests, at a message boundary, waiting for the next one": a blocking
/// handler says so with [`StreamRequest::idle`](crate::StreamRequest::idle) before it waits for the
/// next request of a keep-alive connection (only the handler knows where its protocol's boundaries
/// are); under `Reactor` a connection is idle once every complete message it sent has been handled
/// and nothing more has arrived.
///
/// # Examples
///
/// Counting connections by state, as a load balancer's health check might:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use socketserver::{ConnState, StreamRequest, ThreadingTcpServer};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
///     .conn_state(move |_peer, state| log.lock().unwrap().push(state));
/// # drop(server);
/// assert!(seen.lock().unwrap().is_empty()); // nothing served yet
/// assert_eq!(ConnState::Idle.to_string(), "idle");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnState {
    /// Accepted, and admitted; nothing handled yet.
    New,
    /// A request is being read or handled.
    Active,
    /// Between requests, waiting for the next one.
    Idle,
    /// Closed: the request ended, or the peer left.
    Closed,
    /// Cut at the drain deadline.
    Cut,
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnState::New => "new",
            ConnState::Active => "active",
            ConnState::Idle => "idle",
            ConnState::Closed => "closed",
            ConnState::Cut => "cut",
        })
    }
}

/// The connection-state hook's shape (`Server::conn_state`).
pub(crate) type StateHook = std::sync::Arc<dyn Fn(&crate::addr::Addr, ConnState) + Send + Sync>;

/// Whether a stream connection's handler is inside a request or between two, shared by the
/// request (which says so) and whoever drains the server (which closes the idle ones).
///
/// A drain and a handler going idle race; both sides use sequentially consistent operations in
/// opposite orders — the drain marks the phase draining, then looks whether it is idle; the handler
/// marks it idle, then (at its next read) looks whether it is draining — so at least one of them
/// sees the other, and an idle connection is never left waiting for a request that cannot come.
///
/// What no server can avoid, Go's included: a request that arrives just as its idle connection is
/// closed is lost (its client sees the connection close without an answer, as HTTP clients expect
/// of keep-alive connections, and retries). Here that window also spans the instant between a read
/// that took a request's first bytes and the phase turning busy.
#[derive(Debug, Default)]
pub(crate) struct Phase {
    idle: AtomicBool,
    /// Bytes of a first request have arrived. Until then the connection is new, not idle: its client
    /// has just connected, and its request is on its way (Go's `StateNew`), so a drain lets it come.
    started: AtomicBool,
    draining: AtomicBool,
    /// Cut at the drain deadline: the state hook has heard `Cut`, and hears nothing more.
    cut: AtomicBool,
}

impl Phase {
    /// The handler waits for the next request; returns whether it was busy until now.
    pub(crate) fn set_idle(&self) -> bool {
        !self.idle.swap(true, Ordering::SeqCst)
    }

    /// Bytes of a request arrived; returns whether it was idle until now.
    pub(crate) fn set_busy(&self) -> bool {
        self.started.store(true, Ordering::Relaxed);
        self.idle.swap(false, Ordering::SeqCst)
    }

    /// Between two requests: idle, after a first one.
    pub(crate) fn is_idle(&self) -> bool {
        self.idle.load(Ordering::SeqCst) && self.started.load(Ordering::Relaxed)
    }

    /// A drain is on: the connection is to end at a boundary. Returns whether it is at one now — then
    /// the drain shuts its reading side (unless a next request is already arriving), so the
    /// handler's waiting read returns end of stream.
    pub(crate) fn drain(&self) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        self.is_idle()
    }

    /// The drain deadline cut the connection.
    pub(crate) fn set_cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Whether the handler's next read is to end the connection (unless a next request is already
    /// arriving): it is between requests, and a drain is on — of this server, or (in a forked child)
    /// of this process.
    pub(crate) fn closing(&self) -> bool {
        self.is_idle()
            && (self.draining.load(Ordering::SeqCst) || crate::sys::signal::draining_child())
    }
}
