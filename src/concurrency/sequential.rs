//! [`Sequential`]: one request at a time, in the serving thread.

use std::io;
use std::time::Instant;

use super::{sealed, Concurrency, Dispatch, SpawnEnv};
use crate::handler::RequestContext;
use crate::sys::PollFd;

/// Serves one request at a time, in the thread that called `serve_forever`: Python's plain
/// `TCPServer`/`UDPServer`.
///
/// The simplest strategy, right for datagram services and for short requests. A slow client holds up
/// every other one for as long as the stream read/write timeouts allow (60 s by default; see
/// [`StreamOptions`](crate::StreamOptions)).
///
/// # Examples
///
/// ```
/// use socketserver::{Sequential, Server, StreamRequest, Tcp};
/// let _server = Server::<Sequential, Tcp, _>::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Sequential;

impl sealed::Sealed for Sequential {}
impl Concurrency for Sequential {}

impl Dispatch for Sequential {
    const CONCURRENT_IN_PROCESS: bool = false;

    fn watch(&mut self, _fds: &mut Vec<PollFd>) {}

    fn reap(&mut self, _ready: &[PollFd], _ctx: &RequestContext) {}

    fn has_capacity(&mut self) -> bool {
        true
    }

    fn spawn<F>(&mut self, job: F, _env: &SpawnEnv<'_>) -> io::Result<()>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        job();
        Ok(())
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn drain(
        &mut self,
        _deadline: Option<Instant>,
        _ctx: &RequestContext,
        _cut_connections: &mut dyn FnMut(),
    ) -> (usize, usize) {
        (0, 0)
    }
}
