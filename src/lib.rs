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
//!   [`Reactor`] serves thousands of connections from one epoll event loop, with a non-blocking
//!   [`MessageHandler`] that can also message the other connections.
//! - **[`transport`]** — where requests come from: [`Tcp`] and [`Udp`] (IPv4 and IPv6), and the
//!   [`mock`] transports that serve scripted requests without sockets. A transport is either a
//!   [`Stream`](transport::Stream) or a [`Datagram`](transport::Datagram) kind. [`UnixStream`] and
//!   [`UnixDatagram`] serve Unix sockets (paths, owned like files, and Linux abstract names).
//! - **[`activation`]** and [`InheritedSocket`] — serving on sockets bound by someone else: systemd
//!   socket activation, a `--listen-fd` from a parent, a supervisor's zero-downtime restart.
//! - **[`handler`]** — what to do with a request: a [`StreamHandler`] for stream transports, a
//!   [`DatagramHandler`] for datagram transports, with Python's `setup` → `handle` → `finish`. A closure
//!   is a handler too. A handler of the wrong kind for the transport does not compile.
//! - **[`Server`]** — the loop: [`serve_forever`](Server::serve_forever), [`handle_request`](Server::handle_request),
//!   a [`ShutdownHandle`] that stops it from anywhere, and Python's hooks
//!   ([`verify_request`](Server::verify_request), [`handle_error`](Server::handle_error),
//!   [`handle_timeout`](Server::handle_timeout), [`service_actions`](Server::service_actions)).
//! - **Deployment** — [`Server::proxy_protocol`] makes handlers see the client behind a trusted load
//!   balancer (HAProxy's PROXY protocol, see [`proxy_protocol`]); [`PrivDrop`] gives up root after
//!   binding. The guide is `docs/DEPLOYMENT.md`.
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
#![doc(test(attr(deny(warnings))))]

pub mod activation;
mod addr;
pub mod concurrency;
mod error;
pub mod framing;
pub mod handler;
mod privdrop;
pub mod proxy_protocol;
mod reactor;
mod server;
mod shutdown;
pub mod signals;
mod sys;
pub mod transport;

pub use addr::Addr;
pub use concurrency::{
    Concurrency, Forking, Pool, PreFork, Reactor, ReloadHandle, Sequential, Threading,
};
pub use error::RequestError;
pub use handler::{
    DatagramHandler, DatagramRequest, MessageHandler, StreamHandler, StreamOptions, StreamRequest,
};
pub use privdrop::PrivDrop;
pub use server::{HandleOutcome, Serve, ServeSummary, Server};
pub use shutdown::ShutdownHandle;
pub use transport::{mock, Tcp, Transport, Udp};
pub use transport::{InheritedSocket, SocketKind, UnixDatagram, UnixStream};

/// Python's `TCPServer`: one connection at a time.
pub type TcpServer<H> = Server<Sequential, Tcp, H>;
/// Python's `UDPServer`: one datagram at a time.
pub type UdpServer<H> = Server<Sequential, Udp, H>;
/// Python's `ThreadingTCPServer`: a thread per connection.
pub type ThreadingTcpServer<H> = Server<Threading, Tcp, H>;
/// Python's `ThreadingUDPServer`: a thread per datagram.
pub type ThreadingUdpServer<H> = Server<Threading, Udp, H>;
/// Python's `ForkingTCPServer`: a process per connection.
pub type ForkingTcpServer<H> = Server<Forking, Tcp, H>;
/// Python's `ForkingUDPServer`: a process per datagram.
pub type ForkingUdpServer<H> = Server<Forking, Udp, H>;
/// A TCP server whose connections run on a fixed pool of threads.
pub type PoolTcpServer<H> = Server<Pool, Tcp, H>;
/// A UDP server whose datagrams run on a fixed pool of threads.
pub type PoolUdpServer<H> = Server<Pool, Udp, H>;
/// A TCP server whose pre-forked worker processes accept and serve connections.
pub type PreForkTcpServer<H> = Server<PreFork, Tcp, H>;
/// A UDP server whose pre-forked worker processes receive and serve datagrams.
pub type PreForkUdpServer<H> = Server<PreFork, Udp, H>;
/// Python's `UnixStreamServer`: one connection at a time.
pub type UnixStreamServer<H> = Server<Sequential, UnixStream, H>;
/// Python's `ThreadingUnixStreamServer`: a thread per connection.
pub type ThreadingUnixStreamServer<H> = Server<Threading, UnixStream, H>;
/// Python's `ForkingUnixStreamServer`: a process per connection.
pub type ForkingUnixStreamServer<H> = Server<Forking, UnixStream, H>;
/// Python's `UnixDatagramServer`: one datagram at a time.
pub type UnixDatagramServer<H> = Server<Sequential, UnixDatagram, H>;
/// Python's `ThreadingUnixDatagramServer`: a thread per datagram.
pub type ThreadingUnixDatagramServer<H> = Server<Threading, UnixDatagram, H>;
/// Python's `ForkingUnixDatagramServer`: a process per datagram.
pub type ForkingUnixDatagramServer<H> = Server<Forking, UnixDatagram, H>;
