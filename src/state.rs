//! [`ConnState`]: where a connection is in its life, as a [`Server::conn_state`](crate::Server::conn_state)
//! hook hears it — Go's `http.ConnState`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
pub(crate) type StateHook = std::sync::Arc<dyn Fn(&crate::Addr, ConnState) + Send + Sync>;

/// How long a connection must have waited between requests, with nothing of a next one arrived,
/// before a drain closes it. Long enough that a client streaming into a handler that marks every
/// chunk a boundary (the echo server) is not cut between two chunks; short beside any real idle
/// keep-alive connection. A handler that goes idle during a drain waits this long for a next
/// request before its connection closes.
pub(crate) const IDLE_GRACE_MS: u64 = 100;

/// While a server drains, how often it looks again for connections that went idle (and, for forked
/// children, sends their drain signal again: a signal handler cannot wait for the grace to pass).
pub(crate) const DRAIN_POKE: std::time::Duration = std::time::Duration::from_millis(IDLE_GRACE_MS);

/// Whether a stream connection's handler is inside a request or between two, shared by the
/// request (which says so) and whoever drains the server (which closes the idle ones).
///
/// A drain and a handler going idle race; both sides use sequentially consistent operations in
/// opposite orders — the drain marks the phase draining, then looks whether it is idle; the handler
/// marks it idle, then (at its next read) looks whether it is draining — so at least one of them
/// sees the other, and an idle connection is never left waiting for a request that cannot come.
#[derive(Debug, Default)]
pub(crate) struct Phase {
    idle: AtomicBool,
    /// When it last went idle ([`sys::monotonic_ms`](crate::sys::monotonic_ms)).
    idle_since: AtomicU64,
    draining: AtomicBool,
    /// Cut at the drain deadline: the state hook has heard `Cut`, and hears nothing more.
    cut: AtomicBool,
}

impl Phase {
    /// The handler waits for the next request; returns whether it was busy until now.
    pub(crate) fn set_idle(&self) -> bool {
        let was_busy = !self.idle.load(Ordering::SeqCst);
        if was_busy {
            self.idle_since
                .store(crate::sys::monotonic_ms(), Ordering::SeqCst);
            self.idle.store(true, Ordering::SeqCst);
        }
        was_busy
    }

    /// Bytes of a request arrived; returns whether it was idle until now.
    pub(crate) fn set_busy(&self) -> bool {
        self.idle.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.idle.load(Ordering::SeqCst)
    }

    /// How much of [`IDLE_GRACE_MS`] is left for a next request to start arriving.
    pub(crate) fn grace_left(&self) -> std::time::Duration {
        let since = self.idle_since.load(Ordering::SeqCst);
        let idle_for = crate::sys::monotonic_ms().saturating_sub(since);
        std::time::Duration::from_millis(IDLE_GRACE_MS.saturating_sub(idle_for))
    }

    /// A drain is on: the connection is to end at a boundary. Returns whether it may close now —
    /// idle for [`IDLE_GRACE_MS`] at least — so the drain shuts its reading side and the handler's
    /// waiting read returns end of stream.
    pub(crate) fn drain(&self) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        self.is_idle() && self.grace_left().is_zero()
    }

    /// The drain deadline cut the connection.
    pub(crate) fn set_cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Whether the handler's next read is to end the connection unless a request starts arriving
    /// within [`grace_left`](Self::grace_left): it is between requests, and a drain is on — of this
    /// server, or (in a forked child) of this process.
    pub(crate) fn closing(&self) -> bool {
        self.is_idle()
            && (self.draining.load(Ordering::SeqCst) || crate::sys::signal::draining_child())
    }
}
