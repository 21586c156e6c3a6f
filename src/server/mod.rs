//! [`Server`]: a concurrency strategy, a transport and a handler, composed.
//!
//! The server is the public face: its builder methods set the serving policy's options and hooks, and
//! `serve_forever` hands the whole to the strategy. Every `bind` constructor is in [`bind`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::addr::Addr;
use crate::concurrency::{Concurrency, Mode, PerRequest, run_accept_loop};
use crate::error::RequestError;
use crate::handler::StreamOptions;
use crate::handler::sealed::Handles;
use crate::layer::ProxyLayer;
use crate::proxy_protocol::ProxyProtocol;
use crate::serving::stats::Stats;
use crate::serving::{self, Core, HandleOutcome, ServeSummary};
use crate::shutdown::ShutdownHandle;
use crate::state::ConnState;
use crate::transport::{Stream, Transport};

mod bind;

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
    C: Concurrency<T, H>,
    T: Transport,
{
    concurrency: C,
    core: Core<T, H>,
}

impl<C, T, H> std::fmt::Debug for Server<C, T, H>
where
    C: Concurrency<T, H> + std::fmt::Debug,
    T: Transport,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("concurrency", &self.concurrency)
            .field("local_addr", self.core.local_addr())
            .field("timeout", &self.core.timeout())
            .field("stream", self.core.stream_options())
            .finish_non_exhaustive()
    }
}

impl<C, T, H> Server<C, T, H>
where
    C: Concurrency<T, H>,
    T: Transport,
{
    /// Composes a server from a configured strategy, a bound transport and a handler.
    ///
    /// # Errors
    /// `eventfd(2)` (for the shutdown handle), `mmap(2)` (for the counters its forked workers share) or
    /// `getsockname(2)` failing.
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
        Ok(Server {
            core: Core::new(transport, handler, C::NAME, C::SHAPE)?,
            concurrency,
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
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = serving::DEFAULT_SHUTDOWN_TIMEOUT;

    /// Tells systemd how the server is doing (`READY=1`, `STOPPING=1`, watchdog pings, …) through
    /// `notifier` — usually [`Notifier::from_env()`](crate::notify::Notifier::from_env), which is
    /// `None` when the process was not started by systemd. See [`notify`](crate::notify).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::notify::Notifier;
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .notify(Notifier::from_env()?);
    /// # drop(server);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn notify(mut self, notifier: impl Into<Option<crate::notify::Notifier>>) -> Self {
        self.core.set_notifier(notifier.into());
        self
    }

    /// Writes this process's pid to `path` once the server is ready, atomically, and removes the
    /// file when it stops (unless another process has taken it over since, as an upgrade's successor
    /// does). Refused while the file names another running process.
    ///
    /// # Errors
    /// `AlreadyExists` naming the running process; the file existing but unreadable.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let dir = tempfile::tempdir()?;
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .pid_file(dir.path().join("echo.pid"))?;
    /// # drop(server);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pid_file(mut self, path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        let claimed =
            crate::pidfile::PidFile::claim(path.as_ref(), crate::activation::predecessor())?;
        self.core.set_pid_file(claimed);
        Ok(self)
    }

    /// The listening socket, while it is open (what an upgrade hands over).
    pub(crate) fn listener_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.core.listener()
    }

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
        self.core.local_addr()
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
        self.core.shutdown().clone()
    }

    /// A live view of the server's figures — connections, requests, their durations, the strategy's
    /// workers — to read at any time from any thread, while serving and after (see [`Stats`]).
    /// Counts made in `Forking` children and `PreFork` workers are included.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
    /// let stats = server.stats(); // Send + Clone: hand it to a metrics thread
    /// let now = stats.snapshot();
    /// assert_eq!((now.strategy, now.accepted, now.open), ("Threading", 0, 0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// A hook told of every change in a connection's state — Go's `ConnState`: new, active, idle
    /// (between requests), closed, cut (see [`ConnState`]). It runs where the connection is served:
    /// in the accept loop for `New`, in the worker (a thread, or a `Forking`/`PreFork` child
    /// process, where it works on a *copy* of whatever it captured) for the rest; so it must be
    /// quick, and it cannot count across processes (use [`stats`](Self::stats) for that).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicI64, Ordering};
    /// use socketserver::{ConnState, StreamRequest, ThreadingTcpServer};
    ///
    /// let idle = Arc::new(AtomicI64::new(0)); // connections waiting for their next request
    /// let gauge = idle.clone();
    /// let _server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .conn_state(move |_peer, state| match state {
    ///         ConnState::Idle => { gauge.fetch_add(1, Ordering::Relaxed); }
    ///         ConnState::Active => { gauge.fetch_sub(1, Ordering::Relaxed); }
    ///         _ => {}
    ///     });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn conn_state(mut self, hook: impl Fn(&Addr, ConnState) + Send + Sync + 'static) -> Self {
        self.core.set_state_hook(Arc::new(hook));
        self
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
        self.core.set_timeout(timeout.into());
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
        self.core.set_shutdown_timeout(timeout);
        self
    }

    /// Replaces all per-connection options of a stream server at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # use socketserver::{StreamOptions, StreamRequest, TcpServer};
    /// let opts = StreamOptions { wbufsize: 8192, ..StreamOptions::default() }; // buffered replies
    /// let _server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?.stream_options(opts);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stream_options(mut self, options: StreamOptions) -> Self {
        *self.core.stream_options_mut() = options;
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
        self.core.stream_options_mut().read_timeout = timeout.into();
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
        self.core.stream_options_mut().write_timeout = timeout.into();
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
        self.core.stream_options_mut().connection_timeout = timeout.into();
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
        self.core.set_verify(Box::new(verify));
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
        self.core.set_error_hook(Arc::new(hook));
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
        self.core.set_timeout_hook(Box::new(hook));
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
        self.core.set_service_hook(Box::new(hook));
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
    /// use socketserver::testing::{MockConn, MockStream};
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
        let served = self.concurrency.serve(&mut self.core);
        // Drain whether the loop ended by shutdown or by an error.
        let summary = self.concurrency.close(&mut self.core);
        served.map(|()| summary)
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
        self.concurrency.close(&mut self.core)
    }
}

impl<C, T, H> Server<C, T, H>
where
    C: Concurrency<T, H>,
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
        // Before TLS, whichever was set first: the header precedes the handshake on the stream.
        self.core.layers_mut().push_first(ProxyLayer::new(config));
        self
    }

    /// At most `max` connections open at once from one IP address (`None`, the default: no limit). A
    /// connection past the limit is closed at once, before any worker sees it, and counted as
    /// rejected; so a few slow or idle clients cannot take every thread, child or worker from the
    /// others. IPv4-mapped IPv6 peers count as their IPv4 address; Unix-socket peers are not limited.
    /// Behind a trusted proxy every client has the proxy's address: set the limit at the proxy instead.
    /// Under [`PreFork`](crate::PreFork), each worker serves one connection at a time, so the limit
    /// applies within each worker only.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    /// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?
    ///     .max_connections_per_peer(16);
    /// println!("listening on {}", server.local_addr());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_connections_per_peer(mut self, max: impl Into<Option<usize>>) -> Self {
        self.core.set_max_connections_per_peer(max.into());
        self
    }
}

/// TLS (the `tls` feature).
#[cfg(feature = "tls")]
impl<C, T, H> Server<C, T, H>
where
    C: Concurrency<T, H>,
    T: Transport<Kind = Stream>,
{
    /// Serves every connection over TLS with `tls` (see [`tls`](crate::tls)): the handshake runs on
    /// the connection's worker within the handshake timeout, before the handler's `setup`; the handler
    /// reads and writes plain bytes and finds what was negotiated in
    /// [`StreamRequest::tls`](crate::StreamRequest::tls). Under every strategy — with `PreFork`, each
    /// worker does its own handshakes; under `Reactor`, the handshake advances inside the event loop
    /// and `on_open` runs once it is done ([`Conn::tls`](crate::Conn::tls)). Behind a trusted proxy
    /// ([`proxy_protocol`](Self::proxy_protocol)), the PROXY header is read first, then the handshake.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use socketserver::tls::Tls;
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    ///
    /// let tls = Tls::builder().cert("cert.pem", "key.pem").build()?;
    /// let server = ThreadingTcpServer::bind("0.0.0.0:8443", |_r: &mut StreamRequest| Ok(()))?
    ///     .tls(tls.clone()); // keep `tls` to reload it
    /// # drop(server);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tls(mut self, tls: crate::tls::Tls) -> Self {
        self.core
            .layers_mut()
            .push(crate::layer::TlsLayer::new(tls));
        self
    }
}

impl<C, T, H> Server<C, T, H>
where
    C: Concurrency<T, H> + PerRequest,
    T: Transport,
    H: Handles<T::Kind>,
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
        let mode = Mode::Once(self.core.timeout());
        run_accept_loop(&mut self.concurrency, &mut self.core, mode, None)
    }
}

impl<C, T, H> Drop for Server<C, T, H>
where
    C: Concurrency<T, H>,
    T: Transport,
{
    fn drop(&mut self) {
        // After serve_forever this closes nothing twice; after handle_request, or an error, it closes
        // the listener and waits for the workers as `server_close` does.
        self.concurrency.close(&mut self.core);
    }
}
