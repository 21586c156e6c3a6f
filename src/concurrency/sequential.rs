//! [`Sequential`]: one request at a time, in the serving thread.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::in_flight::InFlight;
use super::sealed::{Strategy, Workers};
use super::{Concurrency, NotStarted, PerRequest, Spawn, accept_loop};
use crate::handler::sealed::Handles;
use crate::serving::{Core, Drained, Event, Job, ServeSummary, Shape, Shared};
use crate::sys::{self, EventFd, PollFd};
use crate::transport::Transport;

/// Serves one request at a time, in the thread that called `serve_forever`: Python's plain
/// `TCPServer`/`UDPServer`.
///
/// The simplest strategy, right for datagram services and for short requests. A slow client holds up
/// every other one for as long as the stream read/write timeouts allow (60 s by default; see
/// [`StreamOptions`](crate::StreamOptions)).
///
/// The drain deadline holds here too: once shutdown is requested, a request still running after the
/// server's [`shutdown_timeout`](crate::Server::shutdown_timeout) has its connection cut (by a small
/// watchdog thread that sleeps until then), so `serve_forever` returns in time even when a client
/// never finishes.
///
/// # Examples
///
/// ```
/// use socketserver::{Sequential, Server, StreamRequest, Tcp};
/// let _server = Server::new(Sequential::new(), Tcp::bind("127.0.0.1:0")?, |_r: &mut StreamRequest| Ok(()))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Sequential {
    in_flight: Arc<InFlight>,
    watchdog: Option<Watchdog>,
}

impl Sequential {
    /// One request at a time.
    ///
    /// # Examples
    ///
    /// ```
    /// let _s = socketserver::Sequential::new();
    /// ```
    pub fn new() -> Self {
        Sequential::default()
    }
}

impl<T: Transport, H: Handles<T::Kind>> Strategy<T, H> for Sequential {
    const NAME: &'static str = "Sequential";
    const SHAPE: Shape = Shape::Inline;

    fn serve(&mut self, core: &mut Core<T, H>) -> io::Result<()> {
        accept_loop::serve(self, core)
    }

    fn close(&mut self, core: &mut Core<T, H>) -> ServeSummary {
        accept_loop::close(self, core)
    }
}

impl<T: Transport, H: Handles<T::Kind>> Concurrency<T, H> for Sequential {}
impl PerRequest for Sequential {}

impl Workers for Sequential {
    fn has_capacity(&mut self) -> bool {
        true
    }

    fn watch(&mut self, _fds: &mut Vec<PollFd>, _capped: bool) {}

    fn reap(&mut self, _ready: &[PollFd], _shared: &Shared) {}

    fn start<F>(&mut self, job: Job<F>, spawn: &mut Spawn<'_>) -> Result<(), NotStarted>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        if self.watchdog.is_none() {
            match Watchdog::start(spawn.shared.clone(), self.in_flight.clone()) {
                Ok(w) => self.watchdog = Some(w),
                // Serve anyway: only the drain deadline of this request is lost, and the read and
                // write timeouts still bound it.
                Err(e) => log::warn!("no drain watchdog for Sequential: {e}"),
            }
        }
        let _entry = self.in_flight.enter(&job.peer, job.cutter.as_ref());
        (job.run)();
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.in_flight.count()
    }

    fn drain(&mut self, _deadline: Option<Instant>, _shared: &Shared) -> Drained {
        // Requests ran inline and are over by now; what the watchdog saw of the one running when
        // shutdown was asked for is this run's drain.
        self.watchdog.take().map(Watchdog::stop).unwrap_or_default()
    }
}

/// Sleeps until shutdown is requested; then, if a request is running, gives it until the drain
/// deadline and cuts its connection if it is still running.
#[derive(Debug)]
struct Watchdog {
    stop: Arc<EventFd>,
    thread: JoinHandle<Drained>,
}

impl Watchdog {
    fn start(shared: Arc<Shared>, in_flight: Arc<InFlight>) -> io::Result<Watchdog> {
        in_flight.ensure()?;
        let stop = Arc::new(EventFd::new(false)?);
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("socketserver-drain".into())
            .spawn(move || watch(&shared, &in_flight, &stopped))
            .map_err(|e| sys::context(e, "spawning the drain watchdog thread"))?;
        Ok(Watchdog { stop, thread })
    }

    fn stop(self) -> Drained {
        self.stop.notify();
        self.thread.join().unwrap_or_default()
    }
}

fn watch(shared: &Shared, in_flight: &InFlight, stop: &EventFd) -> Drained {
    let shutdown = shared.shutdown();
    let mut fds = [
        sys::readable(shutdown.wake_fd()),
        sys::readable(stop.as_fd()),
    ];
    loop {
        if sys::poll(&mut fds, None).is_err() || sys::is_ready(&fds[1]) {
            return Drained::default();
        }
        if sys::is_ready(&fds[0]) {
            break;
        }
    }
    let in_flight_now = in_flight.count();
    if in_flight_now == 0 {
        return Drained::default();
    }
    shared.emit(Event::Draining {
        in_flight: in_flight_now,
        timeout: shared.drain_timeout(),
    });
    in_flight.drain(shared.drain_deadline(), shared)
}
