//! Test doubles: serve handlers — and whole servers — without a socket.
//!
//! The test double is part of the public API, as `httptest.ResponseRecorder` is Go's: a handler you
//! unit-test here runs unchanged in production.
//!
//! - [`MockConn`] scripts one connection (chunks of input, read errors) and its [`MockProbe`] tells what
//!   the handler wrote and whether the connection was closed.
//! - [`run_stream`] and [`run_datagram`] run one request through exactly the code path a server uses
//!   (`setup` → `handle` → `finish`, panics caught, output flushed, the connection closed).
//! - [`MockStream`] and [`MockDatagram`] are transports: queue scripted requests, then drive a real
//!   [`Server`](crate::Server) — usually `Sequential` — with `handle_request` or `serve_forever`, so
//!   hooks such as `verify_request`, `handle_error` and shutdown are unit-testable.
//! - [`MessageDriver`] drives a [`MessageHandler`](crate::reactor::MessageHandler) the way the
//!   [`Reactor`](crate::Reactor) does, over scripted connections: what each was sent, which were
//!   closed, what went to the error hook.
//!
//! # Examples
//!
//! A whole server, with its hooks, over scripted requests:
//!
//! ```
//! use std::io::{BufRead, Write};
//! use std::sync::{Arc, Mutex};
//! use socketserver::testing::{MockConn, MockStream};
//! use socketserver::{Addr, HandleOutcome, Sequential, Server, StreamRequest};
//!
//! let transport = MockStream::new()?;
//! let good = transport.push(MockConn::new().read("hi\n").peer("10.0.0.1:1000".parse::<std::net::SocketAddr>().unwrap()));
//! let bad = transport.push(MockConn::new().read("hi\n").peer("10.0.0.2:1000".parse::<std::net::SocketAddr>().unwrap()));
//! let errors = Arc::new(Mutex::new(Vec::new()));
//! let seen = errors.clone();
//!
//! let echo = |req: &mut StreamRequest| -> anyhow::Result<()> {
//!     let mut line = String::new();
//!     req.read_line(&mut line)?;
//!     anyhow::ensure!(req.peer().to_string() != "10.0.0.2:1000", "unlucky peer");
//!     req.write_all(line.as_bytes())?;
//!     Ok(())
//! };
//! let mut server = Server::new(Sequential::new(), transport, echo)?
//!     .handle_error(move |peer: Option<&Addr>, err| seen.lock().unwrap().push(format!("{}: {err}", peer.unwrap())));
//!
//! assert_eq!(server.handle_request()?, HandleOutcome::Handled);
//! assert_eq!(server.handle_request()?, HandleOutcome::Handled);
//! assert_eq!(good.written(), b"hi\n");
//! assert!(bad.written().is_empty() && bad.is_closed());
//! assert_eq!(errors.lock().unwrap().as_slice(), ["10.0.0.2:1000: handler failed: unlucky peer"]);
//! # Ok::<(), std::io::Error>(())
//! ```

// The sealed traits' methods take and return crate-private plumbing types (the serving policy, requests
// on their way to a handler): that is the point of sealing them, so the lint that flags private types
// in reachable signatures does not apply here.
#![allow(private_interfaces)]

mod conn;
mod reactor;
mod run;
mod transports;

pub use conn::{MockConn, MockProbe};
pub use reactor::MessageDriver;
pub use run::{run_datagram, run_stream};
pub use transports::{MockDatagram, MockStream};
