//! The notes' interactive TCP and UDP clients, for the `echo` example or any echo server: read a
//! line, send it, print the reply; an empty line (or end of input) quits.
//!
//! ```text
//! cargo run --example echo -- --addr 127.0.0.1:7000 &
//! cargo run --example echo_client -- --addr 127.0.0.1:7000                  # TCP
//! cargo run --example echo_client -- --addr 127.0.0.1:7000 --transport udp  # (with echo --transport udp)
//! ```
//!
//! The prompt is shown only when stdin is a terminal, so piped output is exactly the replies.
//!
//! Over TCP a line is sent with its `\n`, and the reply is read up to the echoed `\n` however many
//! reads it takes (the notes' single `recv(1024)` prints half a reply, or two replies at once, when
//! the stream splits or merges them). Over UDP a line is one datagram and the reply is one datagram.
//! Either way, a reply that does not come within `--timeout` seconds is an error (exit 1), not a hang.

mod common;

use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "echo_client",
    about = "Interactive echo client: send a line, print the reply"
)]
struct Args {
    /// The server's address.
    #[arg(long)]
    addr: String,
    /// Transport.
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    transport: TransportArg,
    /// Seconds to wait for each reply.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TransportArg {
    Tcp,
    Udp,
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
    let server = args
        .addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", args.addr))?
        .next()
        .with_context(|| format!("{} resolves to no address", args.addr))?;
    let mut echo: Box<dyn Echo> = match args.transport {
        TransportArg::Tcp => Box::new(TcpEcho::connect(server, timeout)?),
        TransportArg::Udp => Box::new(UdpEcho::connect(server, timeout)?),
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

struct TcpEcho {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    server: SocketAddr,
}

impl TcpEcho {
    fn connect(server: SocketAddr, timeout: Duration) -> anyhow::Result<TcpEcho> {
        let stream = TcpStream::connect_timeout(&server, timeout)
            .with_context(|| format!("connecting to {server}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        Ok(TcpEcho {
            reader: BufReader::new(stream),
            writer,
            server,
        })
    }
}

impl Echo for TcpEcho {
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
    server: SocketAddr,
}

impl UdpEcho {
    fn connect(server: SocketAddr, timeout: Duration) -> anyhow::Result<UdpEcho> {
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

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
