//! [`ServeSummary`] and [`HandleOutcome`]: what serving did.

/// What a serving run did, returned by [`Server::serve_forever`](crate::Server::serve_forever) once it
/// has shut down.
///
/// # Examples
///
/// ```
/// # use socketserver::{StreamRequest, TcpServer};
/// let mut server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
/// server.shutdown_handle().shutdown();
/// let summary = server.serve_forever()?;
/// assert_eq!(summary.requests, 0);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeSummary {
    /// Requests accepted and handed to the strategy (for `Reactor`: connections), in every process of
    /// the server.
    pub requests: u64,
    /// Requests still running when shutdown began.
    pub in_flight_at_shutdown: usize,
    /// Of those, how many finished before the drain deadline.
    pub drained: usize,
    /// Of those, how many were cut at the deadline (connections shut down, children killed).
    pub cut: usize,
}

/// What [`Server::handle_request`](crate::Server::handle_request) did.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use socketserver::testing::{MockConn, MockStream};
/// use socketserver::{HandleOutcome, Sequential, Server, StreamRequest};
///
/// let transport = MockStream::new()?;
/// transport.push(MockConn::new());
/// let mut server = Server::new(Sequential::new(), transport, |_r: &mut StreamRequest| Ok(()))?
///     .timeout(Duration::from_millis(1));
/// assert_eq!(server.handle_request()?, HandleOutcome::Handled);
/// assert_eq!(server.handle_request()?, HandleOutcome::TimedOut); // nothing more queued
/// server.shutdown_handle().shutdown();
/// assert_eq!(server.handle_request()?, HandleOutcome::ShutDown);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleOutcome {
    /// A request was accepted and dispatched (for `Sequential`: served).
    Handled,
    /// No request came within the server's [`timeout`](crate::Server::timeout); `handle_timeout` ran.
    TimedOut,
    /// Shutdown was requested; nothing was accepted.
    ShutDown,
}

/// What a strategy's drain did with the requests in flight when shutdown began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Drained {
    /// Requests running when the drain began.
    pub(crate) in_flight: usize,
    /// Of those, how many finished by the deadline.
    pub(crate) finished: usize,
    /// Of those, how many were cut.
    pub(crate) cut: usize,
}

/// Drains that ran side by side (a `Reactor`'s loops) add up to the run's.
impl std::ops::AddAssign for Drained {
    fn add_assign(&mut self, other: Drained) {
        self.in_flight += other.in_flight;
        self.finished += other.finished;
        self.cut += other.cut;
    }
}
