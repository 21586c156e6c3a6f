//! Python's `socketserver`, for Rust: a server is a **concurrency strategy**, a **transport** and a
//! **request handler**, composed as one type, `Server<C, T, H>`.
//!
//! ```no_run
//! use std::io::{BufRead, Write};
//! use socketserver::{StreamHandler, StreamRequest, ThreadingTcpServer};
//!
//! struct Echo;
//! impl StreamHandler for Echo {
//!     fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
//!         let mut line = Vec::new();
//!         while req.rfile.read_until(b'\n', &mut line)? > 0 {
//!             req.wfile.write_all(&line)?;
//!             line.clear();
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mut server = ThreadingTcpServer::bind("127.0.0.1:9999", Echo)?; // Server<Threading, Tcp, Echo>
//! println!("listening on {}", server.local_addr());
//! server.serve_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Changing the concurrency model is changing one type: `Server<Forking, Tcp, Echo>` serves each
//! connection in a child process, `Server<Sequential, Tcp, Echo>` one at a time.
//!
//! # The parts
//!
//! - **[`concurrency`]** — who runs a request: [`Sequential`], [`Threading`], [`Forking`], a thread
//!   [`Pool`], pre-forked worker processes ([`PreFork`]). Each caps
//!   what it runs at once and, at the cap, stops accepting rather than growing without bound.
//!   [`Reactor`] serves thousands of connections from epoll event loops, one per CPU.
//! - **[`transport`]** — where requests come from: [`Tcp`] and [`Udp`] (IPv4 and IPv6). A transport
//!   is either a [`Stream`](transport::Stream) or a [`Datagram`](transport::Datagram) kind.
//!   [`UnixStream`] and [`UnixDatagram`] serve Unix sockets (paths, owned like files, and Linux
//!   abstract names).
//! - **[`activation`]** and [`InheritedSocket`] — serving on sockets bound by someone else: systemd
//!   socket activation, a `--listen-fd` from a parent, a supervisor's zero-downtime restart.
//! - **[`handler`]** — what to do with a request: a [`StreamHandler`] for stream transports, a
//!   [`DatagramHandler`] for datagram transports, with Python's `setup` → `handle` → `finish`. A closure
//!   is a handler too. A handler of the wrong kind for the transport does not compile.
//! - **[`reactor`]** — the event-loop model: a non-blocking [`MessageHandler`] called with one decoded
//!   message at a time, which can also message the other connections ([`Conn`]).
//! - **[`testing`]** — the test doubles: scripted connections and datagrams, mock transports that
//!   drive whole servers, and runners that serve one request the way a server does.
//! - **[`Server`]** — the loop: [`serve_forever`](Server::serve_forever), [`handle_request`](Server::handle_request),
//!   a [`ShutdownHandle`] that stops it from anywhere, and Python's hooks
//!   ([`verify_request`](Server::verify_request), [`handle_error`](Server::handle_error),
//!   [`handle_timeout`](Server::handle_timeout), [`service_actions`](Server::service_actions)).
//! - **Deployment** — [`Server::proxy_protocol`] makes handlers see the client behind a trusted load
//!   balancer (HAProxy's PROXY protocol, see [`proxy_protocol`]), under every strategy;
//!   [`Server::max_connections_per_peer`] keeps a few clients from taking every worker; [`PrivDrop`]
//!   gives up root after binding. The guide is `docs/DEPLOYMENT.md`.
//!
//! # Processes and memory
//!
//! Under [`Threading`], [`Pool`], [`Sequential`] and [`Reactor`] every request runs in the server's
//! own process and sees the same memory: a `Mutex<HashMap>` in the handler is shared by all of them.
//! Under [`Forking`] and [`PreFork`] requests run in child processes, each on a *copy* of the
//! handler: what one request changes in memory, no other request and not the parent will ever see.
//! Keep shared state outside the process there (a database, files, or a state service on a Unix
//! socket — `examples/kv_state.rs` is one, served by this crate).
//!
//! # What it does better than Python's
//!
//! - `shutdown()` never blocks, works from inside a handler and before serving starts, and wakes the
//!   loop through an eventfd at once (Python polls every 0.5 s and deadlocks when called from a handler).
//! - Connections have finite default read/write timeouts, so a silent client cannot pin a worker forever.
//! - A handler that panics is reported to the error hook like one that returns `Err`; the server goes on.
//! - `Forking` reaps only its own children (never `waitpid(-1)`), and closes the listener in each child.
//! - `EMFILE` on accept backs off instead of spinning the CPU.
//! - A UDP datagram larger than the buffer is reported, never handed over truncated.
//!
//! # Limits
//!
//! Linux only (eventfd, pidfd, `MSG_TRUNC`). `Forking` and `PreFork` must be used from a
//! single-threaded process, as Python's `ForkingMixIn`.

#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
// Every `unsafe` block lives in `sys/` (the one module allowed it), each with its SAFETY comment.
#![deny(unsafe_code, clippy::undocumented_unsafe_blocks)]
#![doc(test(attr(deny(warnings))))]

pub mod activation;
mod addr;
pub mod concurrency;
mod error;
pub mod framing;
pub mod handler;
mod layer;
pub mod notify;
mod pidfile;
mod privdrop;
pub mod proxy_protocol;
pub mod reactor;
mod server;
mod serving;
mod shutdown;
pub mod signals;
mod state;
#[allow(unsafe_code)]
mod sys;
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
pub mod upgrade;

pub use addr::Addr;
pub use concurrency::{
    Concurrency, Forking, Pool, PreFork, Reactor, ReloadHandle, Sequential, SizeHandle, Threading,
};
pub use error::RequestError;
// The codecs a `MessageHandler` names, reachable the same way as `MessageHandler` and `Conn`.
pub use framing::{FixedSize, LengthPrefixed, Lines, RawBytes};
pub use handler::{DatagramHandler, DatagramRequest, StreamHandler, StreamOptions, StreamRequest};
pub use privdrop::PrivDrop;
pub use reactor::{Conn, MessageHandler};
pub use server::Server;
pub use serving::stats;
pub use serving::{HandleOutcome, ServeSummary};
pub use shutdown::ShutdownHandle;
pub use state::ConnState;
pub use transport::{InheritedSocket, SocketKind, Tcp, Transport, Udp, UnixDatagram, UnixStream};

// The README's Rust snippets are doctests, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Python's `TCPServer`: one connection at a time.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use socketserver::{HandleOutcome, StreamRequest, TcpServer};
///
/// let mut server = TcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
///     req.write_all(b"hello")?;
///     Ok(())
/// })?;
/// let mut client = std::net::TcpStream::connect(server.local_addr().as_inet().unwrap())?;
/// assert_eq!(server.handle_request()?, HandleOutcome::Handled); // served inline
/// let mut reply = String::new();
/// client.read_to_string(&mut reply)?;
/// assert_eq!(reply, "hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub type TcpServer<H> = Server<Sequential, Tcp, H>;
/// Python's `UDPServer`: one datagram at a time.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use socketserver::{DatagramRequest, UdpServer};
///
/// let mut server = UdpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
///     let reply = req.data().to_ascii_uppercase();
///     req.write_all(&reply)?;
///     Ok(())
/// })?;
/// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// client.send_to(b"ping", server.local_addr().as_inet().unwrap())?;
/// server.handle_request()?;
/// let mut buf = [0; 16];
/// let n = client.recv(&mut buf)?;
/// assert_eq!(&buf[..n], b"PING");
/// # Ok::<(), std::io::Error>(())
/// ```
pub type UdpServer<H> = Server<Sequential, Udp, H>;
/// Python's `ThreadingTCPServer`: a thread per connection.
///
/// # Examples
///
/// ```
/// use socketserver::{StreamRequest, ThreadingTcpServer};
///
/// let mut server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
/// println!("listening on {}", server.local_addr());
/// server.shutdown_handle().shutdown(); // stop before serving: serve_forever returns at once
/// assert_eq!(server.serve_forever()?.requests, 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub type ThreadingTcpServer<H> = Server<Threading, Tcp, H>;
/// Python's `ThreadingUDPServer`: a thread per datagram.
///
/// # Examples
///
/// ```
/// use socketserver::{DatagramRequest, ThreadingUdpServer};
///
/// let server = ThreadingUdpServer::bind("127.0.0.1:0", |_r: &mut DatagramRequest| Ok(()))?;
/// println!("listening on {}", server.local_addr());
/// assert_ne!(server.local_addr().as_inet().unwrap().port(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub type ThreadingUdpServer<H> = Server<Threading, Udp, H>;
/// Python's `ForkingTCPServer`: a process per connection.
///
/// # Examples
///
/// Binding does not fork; `serve_forever` does, so call it from a process with one thread (see
/// [`Forking`]).
///
/// ```
/// use socketserver::{ForkingTcpServer, StreamRequest};
///
/// let server = ForkingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
/// println!("listening on {}", server.local_addr());
/// assert!(server.local_addr().as_inet().unwrap().ip().is_loopback());
/// # Ok::<(), std::io::Error>(())
/// ```
pub type ForkingTcpServer<H> = Server<Forking, Tcp, H>;
/// Python's `ForkingUDPServer`: a process per datagram.
///
/// # Examples
///
/// ```
/// use socketserver::{DatagramRequest, ForkingUdpServer};
///
/// let server = ForkingUdpServer::bind("127.0.0.1:0", |_r: &mut DatagramRequest| Ok(()))?;
/// println!("listening on {}", server.local_addr()); // serve_forever forks: one thread only
/// # Ok::<(), std::io::Error>(())
/// ```
pub type ForkingUdpServer<H> = Server<Forking, Udp, H>;
/// A TCP server whose connections run on a fixed pool of threads.
///
/// # Examples
///
/// `bind` sizes the pool from the CPU count; [`Server::new`] takes a configured [`Pool`].
///
/// ```
/// use socketserver::{Pool, PoolTcpServer, StreamRequest, Tcp};
///
/// let server = PoolTcpServer::new(
///     Pool::new(4).queue_capacity(16),
///     Tcp::bind("127.0.0.1:0")?,
///     |_r: &mut StreamRequest| Ok(()),
/// )?;
/// println!("listening on {}", server.local_addr());
/// # Ok::<(), std::io::Error>(())
/// ```
pub type PoolTcpServer<H> = Server<Pool, Tcp, H>;
/// A UDP server whose datagrams run on a fixed pool of threads.
///
/// # Examples
///
/// ```
/// use socketserver::{DatagramRequest, PoolUdpServer};
///
/// let server = PoolUdpServer::bind("127.0.0.1:0", |_r: &mut DatagramRequest| Ok(()))?;
/// assert_ne!(server.local_addr().as_inet().unwrap().port(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub type PoolUdpServer<H> = Server<Pool, Udp, H>;
/// A TCP server whose pre-forked worker processes accept and serve connections.
///
/// # Examples
///
/// The workers are forked by `serve_forever` (from a process with one thread, see [`PreFork`]):
///
/// ```
/// use socketserver::{PreFork, PreForkTcpServer, StreamRequest, Tcp};
///
/// let server = PreForkTcpServer::new(
///     PreFork::new(4).max_requests(10_000),
///     Tcp::bind("127.0.0.1:0")?,
///     |_r: &mut StreamRequest| Ok(()),
/// )?;
/// println!("listening on {}", server.local_addr());
/// # Ok::<(), std::io::Error>(())
/// ```
pub type PreForkTcpServer<H> = Server<PreFork, Tcp, H>;
/// A UDP server whose pre-forked worker processes receive and serve datagrams.
///
/// # Examples
///
/// ```
/// use socketserver::{DatagramRequest, PreForkUdpServer};
///
/// let server = PreForkUdpServer::bind("127.0.0.1:0", |_r: &mut DatagramRequest| Ok(()))?;
/// println!("listening on {}", server.local_addr()); // 2 × CPUs + 1 workers once serving
/// # Ok::<(), std::io::Error>(())
/// ```
pub type PreForkUdpServer<H> = Server<PreFork, Udp, H>;
/// Python's `UnixStreamServer`: one connection at a time.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use socketserver::{StreamRequest, UnixStreamServer};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("app.sock");
/// let mut server = UnixStreamServer::bind(&path, |req: &mut StreamRequest| {
///     req.write_all(b"hi")?;
///     Ok(())
/// })?;
/// let mut client = std::os::unix::net::UnixStream::connect(&path)?;
/// server.handle_request()?;
/// let mut reply = String::new();
/// client.read_to_string(&mut reply)?;
/// assert_eq!(reply, "hi");
/// # Ok::<(), std::io::Error>(())
/// ```
pub type UnixStreamServer<H> = Server<Sequential, UnixStream, H>;
/// Python's `ThreadingUnixStreamServer`: a thread per connection.
///
/// # Examples
///
/// On a Linux abstract address, which leaves no file behind:
///
/// ```
/// use socketserver::{StreamRequest, Threading, ThreadingUnixStreamServer, UnixStream};
///
/// let name = format!("socketserver-doc-{}", std::process::id());
/// let server = ThreadingUnixStreamServer::new(
///     Threading::new(),
///     UnixStream::bind_abstract(&name)?,
///     |_r: &mut StreamRequest| Ok(()),
/// )?;
/// assert_eq!(server.local_addr().to_string(), format!("@{name}"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub type ThreadingUnixStreamServer<H> = Server<Threading, UnixStream, H>;
/// Python's `ForkingUnixStreamServer`: a process per connection.
///
/// # Examples
///
/// ```
/// use socketserver::{ForkingUnixStreamServer, StreamRequest};
///
/// let dir = tempfile::tempdir()?;
/// let server = ForkingUnixStreamServer::bind(dir.path().join("s"), |_r: &mut StreamRequest| Ok(()))?;
/// println!("listening on {}", server.local_addr()); // serve_forever forks: one thread only
/// # Ok::<(), std::io::Error>(())
/// ```
pub type ForkingUnixStreamServer<H> = Server<Forking, UnixStream, H>;
/// Python's `UnixDatagramServer`: one datagram at a time.
///
/// # Examples
///
/// Replies go to the sender's bound address:
///
/// ```
/// use std::io::Write;
/// use std::os::unix::net::UnixDatagram;
/// use socketserver::{DatagramRequest, UnixDatagramServer};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("server.sock");
/// let mut server = UnixDatagramServer::bind(&path, |req: &mut DatagramRequest| {
///     req.write_all(&req.data().len().to_be_bytes())?;
///     Ok(())
/// })?;
/// let client = UnixDatagram::bind(dir.path().join("client.sock"))?;
/// client.send_to(b"four", &path)?;
/// server.handle_request()?;
/// let mut buf = [0; 8];
/// client.recv(&mut buf)?;
/// assert_eq!(usize::from_be_bytes(buf), 4);
/// # Ok::<(), std::io::Error>(())
/// ```
pub type UnixDatagramServer<H> = Server<Sequential, UnixDatagram, H>;
/// Python's `ThreadingUnixDatagramServer`: a thread per datagram.
///
/// # Examples
///
/// ```
/// use socketserver::{DatagramRequest, ThreadingUnixDatagramServer};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("d.sock");
/// let server = ThreadingUnixDatagramServer::bind(&path, |_r: &mut DatagramRequest| Ok(()))?;
/// assert_eq!(server.local_addr().to_string(), path.display().to_string());
/// # Ok::<(), std::io::Error>(())
/// ```
pub type ThreadingUnixDatagramServer<H> = Server<Threading, UnixDatagram, H>;
/// Python's `ForkingUnixDatagramServer`: a process per datagram.
///
/// # Examples
///
/// ```
/// use socketserver::{DatagramRequest, ForkingUnixDatagramServer};
///
/// let dir = tempfile::tempdir()?;
/// let server = ForkingUnixDatagramServer::bind(dir.path().join("d"), |_r: &mut DatagramRequest| Ok(()))?;
/// println!("listening on {}", server.local_addr()); // serve_forever forks: one thread only
/// # Ok::<(), std::io::Error>(())
/// ```
pub type ForkingUnixDatagramServer<H> = Server<Forking, UnixDatagram, H>;
