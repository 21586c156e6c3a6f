//! [`ConnState`]: where a connection is in its life, as a [`Server::conn_state`](crate::Server::conn_state)
//! hook hears it — Go's `http.ConnState`.

use std::fmt;

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
