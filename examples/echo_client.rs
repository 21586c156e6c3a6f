//! The notes' interactive TCP and UDP clients, for the `echo` example or any echo server: read a
//! line, send it, print the reply; an empty line (or end of input) quits.
//!
//! ```text
//! cargo run --example echo -- --addr 127.0.0.1:7000 &
//! cargo run --example echo_client -- --addr 127.0.0.1:7000                  # TCP
//! cargo run --example echo_client -- --addr 127.0.0.1:7000 --transport udp  # (with echo --transport udp)
//! cargo run --example echo_client -- --addr /tmp/echo.sock --transport unix # (with echo --transport unix)
//! ```
//!
//! The prompt is shown only when stdin is a terminal, so piped output is exactly the replies.
//!
//! Over TCP a line is sent with its `\n`, and the reply is read up to the echoed `\n` however many
//! reads it takes (the notes' single `recv(1024)` prints half a reply, or two replies at once, when
//! the stream splits or merges them); a Unix stream socket works the same way. Over UDP (or a Unix
//! datagram socket) a line is one datagram and the reply is one datagram; for a Unix datagram server
//! to have somewhere to reply, the client binds a Linux abstract address of its own.
//! Either way, a reply that does not come within `--timeout` seconds is an error (exit 1), not a hang.

mod common;

use std::fmt::Display;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixStream};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use common::cli::{Transport, TransportArgs};

#[derive(Parser, Debug)]
#[command(
    name = "echo_client",
    about = "Interactive echo client: send a line, print the reply"
)]
struct Args {
    /// The server's address: `host:port`, or for Unix transports a path or `@name` (abstract).
    #[arg(long)]
    addr: String,
    #[command(flatten)]
    transport: TransportArgs,
    /// Seconds to wait for each reply.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// The longest reply line accepted over TCP: a server that never sends `\n` cannot make the client
/// buffer without bound.
const MAX_LINE: u64 = 1024 * 1024;

fn main() {
    let args: Args = common::parse_args();
    if let Err(e) = run(&args) {
        eprintln!("echo_client: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let Some(timeout) = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
    else {
        bail!("bad --timeout {}: want seconds > 0", args.timeout);
    };
    let addr = args.addr.as_str();
    let mut echo: Box<dyn Echo> = match args.transport.or_tcp() {
        Transport::Tcp => {
            let server = resolve(addr)?;
            let stream = TcpStream::connect_timeout(&server, timeout)
                .with_context(|| format!("connecting to {server}"))?;
            Box::new(StreamEcho::new(stream, timeout, server)?)
        }
        Transport::Unix => {
            let stream = UnixStream::connect_addr(&unix_addr(addr)?)
                .with_context(|| format!("connecting to {addr}"))?;
            Box::new(StreamEcho::new(stream, timeout, addr.to_owned())?)
        }
        Transport::Udp => Box::new(UdpEcho::connect(resolve(addr)?, timeout)?),
        Transport::UnixDgram => Box::new(UnixDgramEcho::connect(addr, timeout)?),
    };
    let prompt = io::stdin().is_terminal();
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    let mut line = String::new();
    loop {
        if prompt {
            write!(stdout, "send> ")?;
            stdout.flush()?;
        }
        line.clear();
        if stdin.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let message = line.trim_end_matches(['\n', '\r']);
        if message.is_empty() {
            return Ok(());
        }
        let reply = echo.send(message.as_bytes())?;
        stdout.write_all(&reply)?;
        writeln!(stdout)?;
        stdout.flush()?;
    }
}

/// One request, one reply.
trait Echo {
    /// Sends `message` and returns the reply (over TCP without its line end).
    fn send(&mut self, message: &[u8]) -> anyhow::Result<Vec<u8>>;
}

/// A stream socket (TCP or Unix) with its timeouts and the halves the line protocol needs.
trait Stream: Read + Write + Sized {
    fn try_clone(&self) -> io::Result<Self>;
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl Stream for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

/// Lines over a stream: a line out, the echoed line back.
struct StreamEcho<S, A> {
    reader: BufReader<S>,
    writer: S,
    server: A,
}

impl<S: Stream, A: Display> StreamEcho<S, A> {
    fn new(stream: S, timeout: Duration, server: A) -> anyhow::Result<Self> {
        stream.set_timeouts(timeout)?;
        let writer = stream.try_clone()?;
        Ok(StreamEcho {
            reader: BufReader::new(stream),
            writer,
            server,
        })
    }
}

impl<S: Stream, A: Display> Echo for StreamEcho<S, A> {
    fn send(&mut self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut framed = Vec::with_capacity(message.len() + 1);
        framed.extend_from_slice(message);
        framed.push(b'\n');
        self.writer
            .write_all(&framed)
            .with_context(|| format!("sending to {}", self.server))?;
        let mut reply = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut reply);
        match read {
            Ok(_) if reply.ends_with(b"\n") => {
                reply.pop();
                if reply.ends_with(b"\r") {
                    reply.pop();
                }
                Ok(reply)
            }
            Ok(0) => bail!("{} closed the connection", self.server),
            Ok(_) if reply.len() as u64 >= MAX_LINE => {
                bail!("reply from {} longer than {MAX_LINE} bytes", self.server)
            }
            Ok(_) => bail!("{} closed the connection mid-reply", self.server),
            Err(e) if is_timeout(&e) => bail!("no reply from {} within the timeout", self.server),
            Err(e) => Err(e).with_context(|| format!("receiving from {}", self.server)),
        }
    }
}

struct UdpEcho {
    socket: UdpSocket,
    server: std::net::SocketAddr,
}

impl UdpEcho {
    fn connect(server: std::net::SocketAddr, timeout: Duration) -> anyhow::Result<UdpEcho> {
        let local = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local).context("binding a UDP socket")?;
        // Connected: replies from anyone but the server are dropped by the kernel.
        socket
            .connect(server)
            .with_context(|| format!("connect(2) to {server}"))?;
        socket.set_read_timeout(Some(timeout))?;
        Ok(UdpEcho { socket, server })
    }
}

impl Echo for UdpEcho {
    fn send(&mut self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.socket
            .send(message)
            .with_context(|| format!("sending to {}", self.server))?;
        // 64 KiB holds any UDP payload, so a reply is never cut short.
        let mut buf = vec![0; 64 * 1024];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(buf)
            }
            Err(e) if is_timeout(&e) => bail!("no reply from {} within the timeout", self.server),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                bail!("nothing listens at {} (port unreachable)", self.server)
            }
            Err(e) => Err(e).with_context(|| format!("receiving from {}", self.server)),
        }
    }
}

/// A Unix datagram socket bound to an abstract address of its own, so the server can reply.
struct UnixDgramEcho {
    socket: UnixDatagram,
    server: String,
}

impl UnixDgramEcho {
    fn connect(server: &str, timeout: Duration) -> anyhow::Result<UnixDgramEcho> {
        // Abstract: nothing to clean up on exit, and the pid keeps concurrent clients apart.
        let name = format!("echo_client-{}", std::process::id());
        let local = UnixAddr::from_abstract_name(name.as_bytes())?;
        let socket = UnixDatagram::bind_addr(&local)
            .with_context(|| format!("binding the client socket @{name}"))?;
        socket
            .connect_addr(&unix_addr(server)?)
            .with_context(|| format!("connect(2) to {server}"))?;
        socket.set_read_timeout(Some(timeout))?;
        Ok(UnixDgramEcho {
            socket,
            server: server.to_owned(),
        })
    }
}

impl Echo for UnixDgramEcho {
    fn send(&mut self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.socket
            .send(message)
            .with_context(|| format!("sending to {}", self.server))?;
        let mut buf = vec![0; 64 * 1024];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(buf)
            }
            Err(e) if is_timeout(&e) => bail!("no reply from {} within the timeout", self.server),
            Err(e) => Err(e).with_context(|| format!("receiving from {}", self.server)),
        }
    }
}

/// `host:port` resolved to its first address.
fn resolve(addr: &str) -> anyhow::Result<std::net::SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}

/// A Unix address: `@name` is abstract, anything else a path.
fn unix_addr(addr: &str) -> anyhow::Result<UnixAddr> {
    match addr.strip_prefix('@') {
        Some(name) => UnixAddr::from_abstract_name(name.as_bytes()),
        None => UnixAddr::from_pathname(addr),
    }
    .with_context(|| format!("{addr:?} is not a Unix socket address"))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
