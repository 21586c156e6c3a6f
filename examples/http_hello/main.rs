//! An HTTP/1.1 "hello" server on a [`StreamHandler`], as Python's `http.server` sits on `socketserver`:
//! `GET /` answers `hello\n`; connections stay open between requests (keep-alive) and pipelined
//! requests are answered in order.
//!
//! ```text
//! cargo run --release --example http_hello -- --addr 127.0.0.1:8080 --concurrency threading
//! curl -i http://127.0.0.1:8080/
//! wrk -t1 -c16 -d5s http://127.0.0.1:8080/
//! ```
//!
//! It is small but not naive about the protocol:
//!
//! - the request head (request line and header fields) is read with limits: 8 KiB and 100 fields at
//!   most (431 beyond), and a malformed head gets 400 and the connection is closed;
//! - HTTP/1.1 keeps the connection open unless the client sends `Connection: close`; HTTP/1.0 closes it
//!   unless the client sends `Connection: keep-alive`; an HTTP/1.1 request needs exactly one `Host`;
//! - every response has `Content-Length` and `Date`; `HEAD /` gets the headers of `GET /`; other
//!   methods on `/` get 405 with `Allow`, other paths 404; a `Content-Length` body is read and skipped
//!   (over 1 MiB: 413 and close), a `Transfer-Encoding` body gets 501 and close (no transfer coding is
//!   implemented, so the body cannot be skipped);
//! - responses are buffered and sent once no further pipelined request is already waiting, so each
//!   keep-alive request costs one read and one write;
//! - a connection idle for `--keep-alive-timeout-secs` between requests is closed quietly;
//! - on closing after an error the server stops sending, then reads briefly what the client still
//!   sends before closing, so the client is not reset before it has read the response.
//!
//! `--metrics-addr HOST:PORT` serves the server's live figures at `http://HOST:PORT/metrics` for
//! Prometheus (built with `--features prometheus`).
//!
//! `--tls-cert PATH --tls-key PATH` serves HTTPS (built with `--features tls`): the same handler, over
//! TLS; `--tls-client-ca PATH` requires client certificates signed by that CA, `--tls-alpn http/1.1`
//! offers ALPN, and `SIGHUP` re-reads the certificate files (except under `prefork`, where it replaces
//! the workers, which keep the certificates read at start):
//!
//! ```text
//! cargo run --release --features tls --example http_hello -- --addr 127.0.0.1:8443 \
//!     --tls-cert cert.pem --tls-key key.pem
//! curl --cacert ca.pem https://localhost:8443/
//! ```
//!
//! The first line on stdout is `listening on <bound address>`; `SIGINT` or `SIGTERM` shuts it down
//! gracefully (idle keep-alive connections are cut after `--shutdown-timeout-ms`) and it exits 0. Bad
//! flags print usage and exit 2.

#[path = "../common/mod.rs"]
mod common;
mod date;
mod request;

use std::io::{self, BufRead, Write};
use std::net::Shutdown;
use std::time::Duration;

use clap::Parser;
use common::cli::{self, ConcurrencyArgs, MetricsArgs, PeerArgs, Strategy, TlsArgs};
use socketserver::{
    Concurrency, Sequential, Server, StreamHandler, StreamOptions, StreamRequest, Tcp,
};

use request::{Head, Parsed, Version};

#[derive(Parser, Debug)]
#[command(
    about = "HTTP/1.1 keep-alive server answering GET / with hello",
    mut_arg("max_per_peer", |a| a.default_value("32"))
)]
struct Args {
    /// Address to bind, `host:port` (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    #[command(flatten)]
    concurrency: ConcurrencyArgs,
    #[command(flatten)]
    peers: PeerArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Seconds a connection may last, however busy; 0 for no limit.
    #[arg(long, default_value_t = 600)]
    connection_timeout: u64,
    /// How long a connection may wait for its next request before it is closed.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    keep_alive_timeout_secs: u64,
    /// How long shutdown waits for open connections before cutting them, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    shutdown_timeout_ms: u64,
}

/// The body of `GET /`.
const HELLO: &[u8] = b"hello\n";
/// The largest request body read (and skipped) to keep a connection open.
const MAX_BODY: u64 = 1024 * 1024;
/// On closing after an error: how long, and how much, to read what the client is still sending.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// Serves HTTP requests on one connection until it closes.
struct Hello;

impl StreamHandler for Hello {
    fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        let mut line = Vec::with_capacity(256);
        loop {
            req.idle(); // between requests: a drain may close the connection here
            let head = match request::read_head(&mut req.rfile, &mut line)? {
                Parsed::Request(head) => head,
                Parsed::Closed => return Ok(()),
                Parsed::Reject(status) => {
                    log::debug!("{}: rejected with {status}", req.peer());
                    respond(&mut req.wfile, status, Version::Http11, false, true)?;
                    return lingering_close(req);
                }
            };
            if head.content_length > MAX_BODY {
                respond(&mut req.wfile, 413, head.version, false, true)?;
                return lingering_close(req);
            }
            // A client waiting for `100 Continue` may never send its body: answer, then close.
            let unsent_body = head.expect_continue && head.content_length > 0;
            if !unsent_body && !skip_body(req, head.content_length)? {
                return Ok(()); // the client left in the middle of its body
            }
            let close = head.close || unsent_body || req.server().is_shutdown();
            let (status, head_only) = route(&head);
            respond(&mut req.wfile, status, head.version, head_only, close)?;
            if close {
                return lingering_close(req);
            }
            // Pipelined requests already buffered are answered before anything is sent.
            if req.rfile.buffer().is_empty() {
                req.wfile.flush()?;
            }
        }
    }
}

/// The status for a request, and whether the response has headers only (`HEAD`).
fn route(head: &Head) -> (u16, bool) {
    match (head.path.as_str(), head.method.as_str()) {
        ("/", "GET") => (200, false),
        ("/", "HEAD") => (200, true),
        ("/", _) => (405, false),
        (_, "HEAD") => (404, true),
        _ => (404, false),
    }
}

/// Reads and drops a `Content-Length` body; `false` if the connection ended first.
fn skip_body(req: &mut StreamRequest, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let skipped = io::copy(&mut io::Read::take(&mut req.rfile, len), &mut io::sink())?;
    Ok(skipped == len)
}

/// Writes one response (buffered in `wfile`).
fn respond(
    w: &mut impl Write,
    status: u16,
    version: Version,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let reason = reason(status);
    let error_body;
    let body: &[u8] = if status == 200 {
        HELLO
    } else {
        error_body = format!("{reason}\n");
        error_body.as_bytes()
    };
    write!(w, "HTTP/1.1 {status} {reason}\r\nDate: ")?;
    w.write_all(&date::now())?;
    write!(
        w,
        "\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        body.len()
    )?;
    if status == 405 {
        w.write_all(b"Allow: GET, HEAD\r\n")?;
    }
    if close {
        w.write_all(b"Connection: close\r\n")?;
    } else if version == Version::Http10 {
        w.write_all(b"Connection: keep-alive\r\n")?;
    }
    w.write_all(b"\r\n")?;
    if !head_only {
        w.write_all(body)?;
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Sends what is buffered and the end of the stream, then reads (briefly, boundedly) whatever the
/// client still sends: closing with unread data would make the kernel reset the connection, and a
/// reset can destroy the response before the client has read it.
fn lingering_close(req: &mut StreamRequest) -> anyhow::Result<()> {
    req.wfile.flush()?;
    // The peer may already be gone; nothing more to do for it then.
    if req.shutdown(Shutdown::Write).is_err() || req.set_read_timeout(Some(LINGER)).is_err() {
        return Ok(());
    }
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match req.rfile.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(chunk) => {
                let n = chunk.len();
                req.rfile.consume(n);
                drained += n;
            }
        }
    }
    Ok(())
}

/// Serves under `concurrency` with the HTTP connection options: the keep-alive timeout as the read
/// timeout, `TCP_NODELAY` (a response is one write, and must not wait for an ACK), buffered responses.
fn run<C: Concurrency<Tcp, Hello>>(concurrency: C, args: &Args) -> anyhow::Result<()> {
    let options = StreamOptions {
        read_timeout: Some(Duration::from_secs(args.keep_alive_timeout_secs)),
        wbufsize: 16 * 1024,
        ..StreamOptions::default()
    };
    let tcp = Tcp::builder().nodelay(true).bind(args.addr.as_str())?;
    let server = Server::new(concurrency, tcp, Hello)?
        .stream_options(options)
        .connection_timeout(
            (args.connection_timeout > 0).then(|| Duration::from_secs(args.connection_timeout)),
        )
        .max_connections_per_peer(args.peers.limit())
        .shutdown_timeout(Duration::from_millis(args.shutdown_timeout_ms));
    let server = args.tls.serve_over(server, args.concurrency.concurrency)?;
    common::serve_with(
        server,
        common::Ops {
            metrics: args.metrics.metrics_addr,
            ..common::Ops::default()
        },
    )
}

fn main() -> anyhow::Result<()> {
    let args: Args = common::parse_args();
    args.concurrency.check();
    args.tls.check(args.concurrency.concurrency, None, false);
    common::init_logging();
    let c = &args.concurrency;
    match c.concurrency {
        Strategy::Sequential => run(Sequential::new(), &args),
        Strategy::Threading => run(c.threading(), &args),
        Strategy::Forking => run(c.forking(), &args),
        Strategy::Pool => run(c.pool(), &args),
        Strategy::Prefork => {
            // SIGHUP replaces the workers gracefully.
            let prefork = c.prefork();
            socketserver::signals::reload_on_sighup(&prefork.reload_handle())?;
            run(prefork, &args)
        }
        Strategy::Reactor => cli::refuse(
            "--concurrency reactor needs an event-loop handler; this server's handler blocks \
             (use sequential, threading, forking, pool or prefork)",
        ),
    }
}
