//! [`Server`]: a concurrency strategy, a transport and a handler, composed.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::addr::Addr;
use crate::concurrency::{Concurrency, Dispatch, SpawnEnv};
use crate::error::RequestError;
use crate::handler::{self, ErrorHook, RequestContext, Service, StreamOptions};
use crate::proxy_protocol::ProxyProtocol;
use crate::shutdown::ShutdownHandle;
use crate::sys;
use crate::transport::{Accept, Connection, Kind, Stream, Tcp, Transport, Udp};

/// How a strategy serves: the link between `Server<C, T, H>` and its strategy `C`.
///
/// It is implemented for every strategy `C` that can run handler `H` on transport `T`: the blocking
/// strategies ([`Sequential`](crate::Sequential), [`Threading`](crate::Threading),
/// [`Forking`](crate::Forking), [`Pool`](crate::Pool), [`PreFork`](crate::PreFork)) serve any handler
/// whose kind matches the transport's, and [`Reactor`](crate::Reactor) serves a
/// [`MessageHandler`](crate::MessageHandler) on a stream transport. A combination that does not make
/// sense has no implementation, so `Server<C, T, H>` for it does not compile.
///
/// # Sealed
/// Implemented by the crate only.
///
/// # Examples
///
/// As a bound, for code that builds a server with whichever strategy the configuration names:
///
/// ```
/// use socketserver::{Pool, Serve, Server, StreamRequest, Tcp, Threading};
///
/// fn bind_with<C: Serve<Tcp, H>, H>(strategy: C, handler: H) -> std::io::Result<Server<C, Tcp, H>> {
///     Server::new(strategy, Tcp::bind("127.0.0.1:0")?, handler)
/// }
/// let threads = bind_with(Threading::new(), |_r: &mut StreamRequest| Ok(()))?;
/// let pool = bind_with(Pool::new(4), |_r: &mut StreamRequest| Ok(()))?;
/// assert_ne!(threads.local_addr(), pool.local_addr());
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Serve<T: Transport, H>: Concurrency + Sized {
    /// Runs the serving loop until shutdown; what [`Server::serve_forever`] calls.
    ///
    /// # Errors
    /// A failure of the loop itself (the listener broke); see [`Server::serve_forever`].
    fn serve_forever(server: &mut Server<Self, T, H>) -> io::Result<ServeSummary>;

    /// Closes the listener and drains in-flight requests; what [`Server::server_close`] and `Drop` call.
    fn server_close(server: &mut Server<Self, T, H>) -> ServeSummary;
}

impl<C, T, H> Serve<T, H> for C
where
    C: Dispatch,
    T: Transport,
    H: Service<T::Kind>,
{
    fn serve_forever(server: &mut Server<C, T, H>) -> io::Result<ServeSummary> {
        let Server { concurrency, core } = server;
        core.run(concurrency, None)?;
        Ok(core.close_listener_and_drain(concurrency))
    }

    fn server_close(server: &mut Server<C, T, H>) -> ServeSummary {
        let Server { concurrency, core } = server;
        core.close_listener_and_drain(concurrency)
    }
}

/// What a serving run did, returned by [`Server::serve_forever`] once it has shut down.
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
    /// Requests accepted and handed to the strategy.
    pub requests: u64,
    /// Requests still running when shutdown began.
    pub in_flight_at_shutdown: usize,
    /// Of those, how many finished before the drain deadline.
    pub drained: usize,
    /// Of those, how many were cut at the deadline (connections shut down, children killed).
    pub cut: usize,
}

/// What [`Server::handle_request`] did.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use socketserver::mock::{MockConn, MockStream};
/// use socketserver::{HandleOutcome, Sequential, Server, StreamRequest};
///
/// let transport = MockStream::new()?;
/// transport.push(MockConn::new());
/// let mut server = Server::new(Sequential, transport, |_r: &mut StreamRequest| Ok(()))?
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
    /// No request came within the server's [`timeout`](Server::timeout); `handle_timeout` ran.
    TimedOut,
    /// Shutdown was requested; nothing was accepted.
    ShutDown,
}

type VerifyHook = Box<dyn FnMut(&Addr) -> bool + Send>;
type PlainHook = Box<dyn FnMut() + Send>;

/// Connections of requests running on threads, so a drain deadline can cut them.
#[derive(Default)]
struct InFlight {
    next: u64,
    conns: HashMap<u64, (Addr, Arc<dyn Connection>)>,
}

/// The first delay after a failed `accept(2)` (Go's `net/http` uses the same 5 ms doubling to 1 s).
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A server: concurrency strategy `C`, transport `T`, handler `H`.
///
/// Python composes `ThreadingMixIn` with `TCPServer` and a `StreamRequestHandler` subclass; here the
/// three are type parameters, and aliases name Python's combinations: [`TcpServer`](crate::TcpServer),
/// [`ThreadingTcpServer`](crate::ThreadingTcpServer), [`ForkingUdpServer`](crate::ForkingUdpServer), ….
/// Changing the concurrency model is changing `C`; the handler stays the same.
///
/// Hooks are set with builder methods named as in Python: [`verify_request`](Self::verify_request),
/// [`handle_error`](Self::handle_error), [`handle_timeout`](Self::handle_timeout),
/// [`service_actions`](Self::service_actions).
///
/// # Examples
///
/// ```
/// use std::io::{BufRead, Read, Write};
/// use socketserver::{StreamHandler, StreamRequest, ThreadingTcpServer};
///
/// struct Echo;
/// impl StreamHandler for Echo {
///     fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
///         let mut line = Vec::new();
///         while req.rfile.read_until(b'\n', &mut line)? > 0 {
///             req.wfile.write_all(&line)?;
///             line.clear();
///         }
///         Ok(())
///     }
/// }
///
/// let mut server = ThreadingTcpServer::bind("127.0.0.1:0", Echo)?;
/// let addr = server.local_addr().as_inet().unwrap();
/// let stop = server.shutdown_handle();
/// let serving = std::thread::spawn(move || server.serve_forever());
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"hello\n")?;
/// client.shutdown(std::net::Shutdown::Write)?;
/// let mut reply = String::new();
/// client.read_to_string(&mut reply)?;
/// assert_eq!(reply, "hello\n");
///
/// stop.shutdown();
/// serving.join().unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server<C, T, H>
where
    C: Serve<T, H>,
    T: Transport,
{
    pub(crate) concurrency: C,
    pub(crate) core: Core<T, H>,
}

/// Everything a server is besides its strategy: the transport, the handler, the hooks and the options.
///
/// Kept apart from the strategy so that a strategy's own serving code (a pre-forked worker, an event
/// loop) can borrow the two independently, and so the accept loop can run under a strategy other than
/// the server's own (each pre-forked worker serves sequentially).
pub(crate) struct Core<T, H> {
    pub(crate) transport: Option<T>,
    pub(crate) handler: Arc<H>,
    pub(crate) local_addr: Addr,
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) timeout: Option<Duration>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) stream: StreamOptions,
    pub(crate) on_error: ErrorHook,
    pub(crate) verify: Option<VerifyHook>,
    pub(crate) on_timeout: Option<PlainHook>,
    pub(crate) service: Option<PlainHook>,
    in_flight: Arc<Mutex<InFlight>>,
    backoff: Duration,
    pub(crate) summary: ServeSummary,
    drained: bool,
}

impl<C, T, H> std::fmt::Debug for Server<C, T, H>
where
    C: Serve<T, H> + std::fmt::Debug,
    T: Transport + std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("concurrency", &self.concurrency)
            .field("transport", &self.core.transport)
            .field("local_addr", &self.core.local_addr)
            .field("timeout", &self.core.timeout)
            .field("stream", &self.core.stream)
            .finish_non_exhaustive()
    }
}

impl<C, H> Server<C, Tcp, H>
where
    C: Serve<Tcp, H> + Default,
{
    /// Binds a TCP server with the default transport options and the strategy's defaults (Python's
    /// `TCPServer(address, Handler)`).
    ///
    /// # Errors
    /// The failing syscall and address (`bind(2) on 127.0.0.1:8080: Address already in use`).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// println!("listening on {}", server.local_addr());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(addr: impl ToSocketAddrs, handler: H) -> io::Result<Self> {
        Server::new(C::default(), Tcp::bind(addr)?, handler)
    }
}

impl<C, H> Server<C, Udp, H>
where
    C: Serve<Udp, H> + Default,
{
    /// Binds a UDP server with the default transport options and the strategy's defaults (Python's
    /// `UDPServer(address, Handler)`).
    ///
    /// # Errors
    /// The failing syscall and address.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{DatagramRequest, UdpServer};
    /// let _server = UdpServer::bind("127.0.0.1:0", |_r: &mut DatagramRequest| Ok(()))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(addr: impl ToSocketAddrs, handler: H) -> io::Result<Self> {
        Server::new(C::default(), Udp::bind(addr)?, handler)
    }
}

impl<C, T, H> Server<C, T, H>
where
    C: Serve<T, H>,
    T: Transport,
{
    /// Composes a server from a configured strategy, a bound transport and a handler.
    ///
    /// # Errors
    /// `eventfd(2)` (for the shutdown handle) or `getsockname(2)` failing.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{Forking, Server, StreamRequest, Tcp};
    /// let _server = Server::new(
    ///     Forking::new().max_children(10),
    ///     Tcp::builder().backlog(128).bind("127.0.0.1:0")?,
    ///     |_r: &mut StreamRequest| Ok(()),
    /// )?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(concurrency: C, transport: T, handler: H) -> io::Result<Self> {
        let local_addr = transport.local_addr()?;
        Ok(Server {
            concurrency,
            core: Core {
                transport: Some(transport),
                handler: Arc::new(handler),
                local_addr,
                shutdown: ShutdownHandle::new()?,
                timeout: None,
                shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
                stream: StreamOptions::default(),
                on_error: Arc::new(handler::log_error),
                verify: None,
                on_timeout: None,
                service: None,
                in_flight: Arc::new(Mutex::new(InFlight::default())),
                backoff: Duration::ZERO,
                summary: ServeSummary::default(),
                drained: false,
            },
        })
    }

    /// How long shutdown waits for in-flight requests before cutting them (default 30 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use socketserver::{StreamRequest, TcpServer};
    ///
    /// type Server = TcpServer<fn(&mut StreamRequest) -> anyhow::Result<()>>;
    /// assert_eq!(Server::DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_secs(30));
    /// // Deployments that restart often: a tenth of the default.
    /// let _server = Server::bind("127.0.0.1:0", |_r| Ok(()))?
    ///     .shutdown_timeout(Server::DEFAULT_SHUTDOWN_TIMEOUT / 10);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

    /// The address the server is bound to (Python's `server_address`), with the real port after binding
    /// port 0.
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// assert_ne!(server.local_addr().as_inet().unwrap().port(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> &Addr {
        &self.core.local_addr
    }

    /// A handle that stops [`serve_forever`](Self::serve_forever) from any thread (Python's
    /// `shutdown()`, but non-blocking and safe to call from a handler).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let mut server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// server.shutdown_handle().shutdown(); // before serving: serve_forever returns at once
    /// server.serve_forever()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.core.shutdown.clone()
    }

    /// The strategy, e.g. to read how many requests are in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::concurrency::Dispatch;
    /// use socketserver::{Server, StreamRequest, Tcp, Threading};
    ///
    /// let server = Server::new(Threading::new(), Tcp::bind("127.0.0.1:0")?, |_r: &mut StreamRequest| Ok(()))?;
    /// assert_eq!(server.concurrency().in_flight(), 0); // not serving yet
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn concurrency(&self) -> &C {
        &self.concurrency
    }

    /// Python's `server.timeout`: how long [`handle_request`](Self::handle_request) waits for a request
    /// before calling `handle_timeout` (`None`, the default, waits forever).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer, HandleOutcome};
    /// let mut server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .timeout(std::time::Duration::from_millis(10));
    /// assert_eq!(server.handle_request()?, HandleOutcome::TimedOut);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.core.timeout = timeout.into();
        self
    }

    /// How long shutdown lets in-flight requests finish before cutting them (default 30 s; zero cuts at
    /// once).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let _server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .shutdown_timeout(std::time::Duration::from_secs(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.core.shutdown_timeout = timeout;
        self
    }

    /// Replaces all per-connection options of a stream server at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamOptions, StreamRequest, TcpServer};
    /// let opts = StreamOptions { nodelay: true, ..StreamOptions::default() };
    /// let _server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?.stream_options(opts);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stream_options(mut self, options: StreamOptions) -> Self {
        self.core.stream = options;
        self
    }

    /// Each connection's read timeout (`None` waits forever; default 60 s).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let _server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .read_timeout(std::time::Duration::from_secs(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.core.stream.read_timeout = timeout.into();
        self
    }

    /// Each connection's write timeout (`None` waits forever; default 60 s).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let _server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?.write_timeout(None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.core.stream.write_timeout = timeout.into();
        self
    }

    /// The longest each connection may last, however it behaves (default `None`); see
    /// [`StreamOptions::connection_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let _server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .connection_timeout(std::time::Duration::from_secs(300));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connection_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.core.stream.connection_timeout = timeout.into();
        self
    }

    /// `TCP_NODELAY` on each connection (default off).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let _server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?.nodelay(true);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.core.stream.nodelay = nodelay;
        self
    }

    /// Python's `verify_request`: called with each peer before its request is served; returning `false`
    /// closes the connection (or drops the datagram) at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{Addr, StreamRequest, TcpServer};
    /// let _server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .verify_request(|peer: &Addr| peer.as_inet().is_some_and(|a| a.ip().is_loopback()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn verify_request(mut self, verify: impl FnMut(&Addr) -> bool + Send + 'static) -> Self {
        self.core.verify = Some(Box::new(verify));
        self
    }

    /// Python's `handle_error`: receives every request failure — a handler's `Err`, a panic, a failed
    /// reply, an accept error (with no peer) — after which the server keeps serving. It runs on the
    /// worker that failed (a thread, or a forked child). The default logs through the `log` facade.
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{Addr, RequestError, StreamRequest, TcpServer};
    /// let _server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .handle_error(|peer: Option<&Addr>, err: &RequestError| eprintln!("{peer:?}: {err}"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle_error(
        mut self,
        hook: impl Fn(Option<&Addr>, &RequestError) + Send + Sync + 'static,
    ) -> Self {
        self.core.on_error = Arc::new(hook);
        self
    }

    /// Python's `handle_timeout`: called when [`handle_request`](Self::handle_request) saw no request
    /// within [`timeout`](Self::timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let _server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .handle_timeout(|| println!("idle"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle_timeout(mut self, hook: impl FnMut() + Send + 'static) -> Self {
        self.core.on_timeout = Some(Box::new(hook));
        self
    }

    /// Python's `service_actions`: called in the serving thread on every turn of `serve_forever`'s loop
    /// (after each request, and whenever the loop wakes), for periodic housekeeping.
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
    /// let turns = Arc::new(AtomicU64::new(0));
    /// let counter = turns.clone();
    /// let _server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .service_actions(move || { counter.fetch_add(1, Ordering::Relaxed); });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn service_actions(mut self, hook: impl FnMut() + Send + 'static) -> Self {
        self.core.service = Some(Box::new(hook));
        self
    }

    /// Python's `serve_forever`: serves until [`shutdown`](ShutdownHandle::shutdown) is requested, then
    /// closes the listener (new connections are refused from then on), lets in-flight requests finish
    /// for up to the [`shutdown_timeout`](Self::shutdown_timeout), cuts the rest, and returns what it
    /// did. Returns at once if shutdown was requested before it was called.
    ///
    /// # Errors
    /// Only failures of the loop itself: `poll(2)` failing, or the listener breaking (`EBADF`,
    /// `EINVAL`). Request failures go to the error hook; transient accept errors (including `EMFILE`)
    /// are reported there too and retried after a back-off.
    ///
    /// # Examples
    ///
    /// Serving on a thread and stopping from another (see [`Server`] for a whole TCP round trip):
    ///
    /// ```
    /// use socketserver::mock::{MockConn, MockStream};
    /// use socketserver::{Server, StreamRequest, Threading};
    ///
    /// let transport = MockStream::new()?;
    /// let feeder = transport.clone();
    /// let (done, served) = std::sync::mpsc::channel();
    /// let mut server = Server::new(Threading::new(), transport, move |_r: &mut StreamRequest| {
    ///     done.send(())?;
    ///     Ok(())
    /// })?;
    /// let stop = server.shutdown_handle();
    /// let serving = std::thread::spawn(move || server.serve_forever());
    ///
    /// feeder.push(MockConn::new());
    /// served.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    /// stop.shutdown();
    /// let summary = serving.join().unwrap()?;
    /// assert_eq!(summary.requests, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn serve_forever(&mut self) -> io::Result<ServeSummary> {
        C::serve_forever(self)
    }

    /// Python's `server_close`: closes the listener and waits for (then cuts) in-flight requests as
    /// shutdown does. Dropping the server does the same.
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamRequest, TcpServer};
    /// let server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// let addr = server.local_addr().as_inet().unwrap();
    /// server.server_close();
    /// assert!(std::net::TcpStream::connect(addr).is_err()); // the port is free again
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn server_close(mut self) -> ServeSummary {
        C::server_close(&mut self)
    }
}

impl<C, T, H> Server<C, T, H>
where
    C: Serve<T, H>,
    T: Transport<Kind = Stream>,
{
    /// Reads a PROXY protocol header (v1 or v2) from each connection of a trusted proxy, so handlers
    /// see the original client as [`peer()`](crate::StreamRequest::peer); connections from anyone else
    /// are served as they are. Off by default. See [`ProxyProtocol`] for the policy.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::proxy_protocol::ProxyProtocol;
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    ///
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .proxy_protocol(ProxyProtocol::trusted(["127.0.0.1", "::1"])?);
    /// println!("listening on {}", server.local_addr());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn proxy_protocol(mut self, config: ProxyProtocol) -> Self {
        self.core.stream.proxy_protocol = Some(config);
        self
    }
}

impl<C, T, H> Server<C, T, H>
where
    C: Dispatch + Serve<T, H>,
    T: Transport,
    H: Service<T::Kind>,
{
    /// Python's `handle_request`: waits up to [`timeout`](Self::timeout) for one request and dispatches
    /// it to the strategy (for `Sequential`, serves it). Calls `handle_timeout` if none came.
    ///
    /// # Errors
    /// As [`serve_forever`](Self::serve_forever).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::{HandleOutcome, StreamRequest, TcpServer};
    ///
    /// let mut server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
    ///     req.write_all(b"hi")?;
    ///     Ok(())
    /// })?;
    /// let _client = std::net::TcpStream::connect(server.local_addr().as_inet().unwrap())?;
    /// assert_eq!(server.handle_request()?, HandleOutcome::Handled);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle_request(&mut self) -> io::Result<HandleOutcome> {
        let timeout = self.core.timeout;
        self.core.run(&mut self.concurrency, Some(timeout))
    }
}

impl<T: Transport, H> Core<T, H> {
    /// The per-request context every request of one serving run shares, built from the current
    /// options when the run starts.
    pub(crate) fn context(&self) -> Arc<RequestContext> {
        Arc::new(RequestContext {
            shutdown: self.shutdown.clone(),
            on_error: self.on_error.clone(),
            stream: self.stream.clone(),
        })
    }

    /// Records a successful accept: the next failure backs off from the minimum again.
    pub(crate) fn accepted(&mut self) {
        self.backoff = Duration::ZERO;
    }

    /// Classifies an accept failure: retry at once, back off (returned), or give up (`Err`).
    pub(crate) fn accept_failed(
        &mut self,
        err: io::Error,
        ctx: &RequestContext,
    ) -> io::Result<Duration> {
        match err.raw_os_error() {
            // The peer gave up before we accepted, or a signal: nothing wrong with the server.
            Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EAGAIN) => {
                Ok(Duration::ZERO)
            }
            // The listener itself is broken: serving cannot go on.
            Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT) => {
                Err(err)
            }
            // EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unknown: report and back off, doubling, so
            // a full descriptor table does not spin the CPU on an always-readable listener.
            _ => {
                ctx.report(None, &RequestError::Accept(err));
                self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                Ok(self.backoff)
            }
        }
    }
}

impl<T, H> Core<T, H>
where
    T: Transport,
    H: Service<T::Kind>,
{
    /// The serving loop. `once: None` serves until shutdown; `Some(timeout)` handles one request.
    pub(crate) fn run<D: Dispatch>(
        &mut self,
        strategy: &mut D,
        once: Option<Option<Duration>>,
    ) -> io::Result<HandleOutcome> {
        let ctx = self.context();
        let deadline = once.flatten().map(|t| Instant::now() + t);
        let mut backoff_until: Option<Instant> = None;
        let mut fds = Vec::with_capacity(8);
        if once.is_none() {
            log::info!("serving on {}", self.local_addr);
        }
        loop {
            if self.shutdown.is_shutdown() || strategy.retiring() {
                return Ok(HandleOutcome::ShutDown);
            }
            let Some(transport) = self.transport.as_mut() else {
                return Ok(HandleOutcome::ShutDown);
            };
            let backing_off = backoff_until.is_some_and(|t| Instant::now() < t);
            let can_accept = !backing_off && strategy.has_capacity();
            if can_accept {
                // Accept first and poll only when nothing is pending: under load the poll is skipped.
                match transport.accept() {
                    Ok(Accept::Ready(request)) => {
                        self.accepted();
                        self.dispatch(strategy, request, &ctx);
                        if once.is_some() {
                            return Ok(HandleOutcome::Handled);
                        }
                        self.service_actions_hook();
                        continue;
                    }
                    Ok(Accept::Refused(peer, err)) => {
                        ctx.report(peer.as_ref(), &err);
                        continue;
                    }
                    Ok(Accept::WouldBlock) => {}
                    Err(e) => {
                        backoff_until = Some(Instant::now() + self.accept_failed(e, &ctx)?);
                        continue;
                    }
                }
            }

            fds.clear();
            fds.push(sys::readable(self.shutdown.wake_fd().as_raw_fd()));
            if can_accept {
                fds.push(sys::readable(transport.as_fd().as_raw_fd()));
            }
            let first_strategy_fd = fds.len();
            strategy.watch(&mut fds);
            let now = Instant::now();
            let wait = [deadline, backoff_until.filter(|_| backing_off)]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_duration_since(now));
            sys::poll(&mut fds, wait)?;
            if sys::is_ready(&fds[0]) {
                self.shutdown.mark();
                return Ok(HandleOutcome::ShutDown);
            }
            strategy.reap(&fds[first_strategy_fd..], &ctx);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                if let Some(hook) = self.on_timeout.as_mut() {
                    hook();
                }
                return Ok(HandleOutcome::TimedOut);
            }
            if once.is_none() {
                self.service_actions_hook();
            }
        }
    }

    fn service_actions_hook(&mut self) {
        if let Some(hook) = self.service.as_mut() {
            hook();
        }
    }

    /// Verifies and hands one request to the strategy.
    fn dispatch<D: Dispatch>(
        &mut self,
        strategy: &mut D,
        request: <T::Kind as Kind>::Request,
        ctx: &Arc<RequestContext>,
    ) {
        let peer = <T::Kind as Kind>::peer(&request);
        if let Some(verify) = self.verify.as_mut() {
            if !verify(peer) {
                log::info!("rejected {peer} (verify_request)");
                return; // dropping the request closes the connection
            }
        }
        let peer = peer.clone();
        self.summary.requests += 1;
        let handler = self.handler.clone();
        let job_ctx = ctx.clone();
        let tracked = if D::CONCURRENT_IN_PROCESS {
            <T::Kind as Kind>::connection(&request).map(|conn| self.track(&peer, conn))
        } else {
            None
        };
        let in_flight = self.in_flight.clone();
        let job = move || {
            let ok = handler::run::<T::Kind, H>(&handler, request, &job_ctx);
            if let Some(id) = tracked {
                in_flight.lock().conns.remove(&id);
            }
            ok
        };
        let env = SpawnEnv {
            close_in_child: match (&self.transport, <T::Kind as Kind>::REQUEST_USES_LISTENER) {
                (Some(t), false) => Some(t.as_fd().as_raw_fd()),
                _ => None,
            },
            peer: &peer,
        };
        if let Err(e) = strategy.spawn(job, &env) {
            ctx.report(Some(&peer), &RequestError::Accept(e));
        }
    }

    fn track(&self, peer: &Addr, conn: &Arc<dyn Connection>) -> u64 {
        let mut in_flight = self.in_flight.lock();
        let id = in_flight.next;
        in_flight.next += 1;
        in_flight.conns.insert(id, (peer.clone(), conn.clone()));
        id
    }

    /// Stops accepting (the listener is closed, so new connects are refused), then drains.
    pub(crate) fn close_listener_and_drain<D: Dispatch>(
        &mut self,
        strategy: &mut D,
    ) -> ServeSummary {
        self.transport = None;
        if self.drained {
            return ServeSummary::default();
        }
        let ctx = self.context();
        let in_flight = strategy.in_flight();
        if in_flight > 0 {
            log::info!(
                "shutting down: waiting up to {:?} for {in_flight} request(s)",
                self.shutdown_timeout
            );
        }
        let deadline = Instant::now() + self.shutdown_timeout;
        let conns = self.in_flight.clone();
        let mut cut = move || {
            for (peer, conn) in conns.lock().conns.values() {
                log::warn!("cutting the connection from {peer}");
                let _ = conn.shutdown(Shutdown::Both);
            }
        };
        let (drained, cut) = strategy.drain(Some(deadline), &ctx, &mut cut);
        self.drained = true;
        let mut summary = std::mem::take(&mut self.summary);
        summary.in_flight_at_shutdown = in_flight;
        summary.drained = drained;
        summary.cut = cut;
        log::info!("stopped serving on {}: {summary:?}", self.local_addr);
        summary
    }
}

impl<C, T, H> Drop for Server<C, T, H>
where
    C: Serve<T, H>,
    T: Transport,
{
    fn drop(&mut self) {
        // After serve_forever this only closes nothing twice; after handle_request, or an error, it
        // closes the listener and waits for the workers as `server_close` does.
        C::server_close(self);
    }
}
