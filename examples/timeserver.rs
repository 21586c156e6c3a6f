//! The notes' UDP time server: every datagram is answered with the server's current local time,
//! in ISO 8601 / RFC 3339 form with the UTC offset (`2025-11-27T23:31:05+01:00`), which people
//! read at a glance and programs parse without guessing the time zone.
//!
//! ```text
//! cargo run --example timeserver -- --addr 127.0.0.1:0                   # serve
//! cargo run --example timeserver -- --client --addr 127.0.0.1:PORT       # ask, print the reply
//! ```
//!
//! The server prints `listening on <bound address>` first and exits 0 on `SIGINT`/`SIGTERM`. The
//! local time zone is the process's (`TZ`, else `/etc/localtime`), read once at the first reply.
//!
//! The client sends one datagram and prints the reply. UDP may lose either datagram, so it asks up
//! to three times within `--timeout` seconds, and fails with a clear message (exit 1) when no reply
//! comes, or when the host reports that nothing listens on that port.

mod common;

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use common::cli::{self, ConcurrencyArgs, Strategy};
use socketserver::{Concurrency, DatagramRequest, Sequential, Server, Udp};

#[derive(Parser, Debug)]
#[command(
    name = "timeserver",
    about = "UDP time server: replies to every datagram with the local time (ISO 8601)",
    // A reply takes microseconds: one at a time is the right default, as in the notes.
    mut_arg("concurrency", |a| a.default_value("sequential"))
)]
struct Args {
    /// Address to bind (server; port 0 picks a free port) or to ask (client).
    #[arg(long)]
    addr: Option<String>,
    /// Ask the server at --addr for the time, print it, and exit.
    #[arg(long, requires = "addr")]
    client: bool,
    /// Client: seconds to wait for a reply, over all attempts.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    #[command(flatten)]
    concurrency: ConcurrencyArgs,
}

fn main() {
    let args: Args = common::parse_args();
    args.concurrency.check();
    let result = if args.client {
        let addr = args.addr.as_deref().unwrap_or_default();
        ask(addr, args.timeout).map(|reply| println!("{reply}"))
    } else {
        common::init_logging();
        serve(
            args.addr.as_deref().unwrap_or("127.0.0.1:0"),
            &args.concurrency,
        )
    };
    if let Err(e) = result {
        eprintln!("timeserver: {e:#}");
        std::process::exit(1);
    }
}

fn serve(addr: &str, c: &ConcurrencyArgs) -> anyhow::Result<()> {
    let udp = Udp::bind(addr)?;
    match c.concurrency {
        Strategy::Sequential => run(Sequential::new(), udp),
        Strategy::Threading => run(c.threading(), udp),
        Strategy::Forking => run(c.forking(), udp),
        Strategy::Pool => run(c.pool(), udp),
        Strategy::Prefork => run(c.prefork(), udp),
        Strategy::Reactor => cli::refuse(
            "--concurrency reactor serves stream transports only; the time server is UDP",
        ),
    }
}

fn run<C: Concurrency<Udp, fn(&mut DatagramRequest) -> anyhow::Result<()>>>(
    strategy: C,
    udp: Udp,
) -> anyhow::Result<()> {
    let handler: fn(&mut DatagramRequest) -> anyhow::Result<()> = reply_time;
    common::serve(Server::new(strategy, udp, handler)?)
}

/// Whatever the datagram says, the reply is the time.
fn reply_time(req: &mut DatagramRequest) -> anyhow::Result<()> {
    let now = local_time(SystemTime::now())?;
    log::debug!("{}: {now}", req.peer());
    req.wfile = now.into_bytes();
    Ok(())
}

/// `when` in the local time zone, as `YYYY-MM-DDTHH:MM:SS±HH:MM`.
fn local_time(when: SystemTime) -> io::Result<String> {
    let secs = when
        .duration_since(UNIX_EPOCH)
        .map_err(|_| io::Error::other("the clock is before 1970"))?
        .as_secs();
    let secs = libc::time_t::try_from(secs).map_err(|_| io::Error::other("time out of range"))?;
    let mut tm = MaybeUninit::<libc::tm>::uninit();
    // SAFETY: both pointers are valid for the call; `localtime_r` is the thread-safe variant and
    // fully initialises `tm` when it returns non-null.
    let tm = unsafe {
        if libc::localtime_r(&secs, tm.as_mut_ptr()).is_null() {
            return Err(io::Error::last_os_error());
        }
        tm.assume_init()
    };
    let offset = tm.tm_gmtoff; // seconds east of UTC
    let sign = if offset < 0 { '-' } else { '+' };
    let offset = offset.unsigned_abs();
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        offset / 3600,
        offset / 60 % 60,
    ))
}

/// The client: ask `addr` for the time, retrying within `timeout` seconds.
fn ask(addr: &str, timeout: f64) -> anyhow::Result<String> {
    const ATTEMPTS: u32 = 3;
    let Some(timeout) = Duration::try_from_secs_f64(timeout)
        .ok()
        .filter(|t| !t.is_zero())
    else {
        bail!("bad --timeout {timeout}: want seconds > 0");
    };
    let server: SocketAddr = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(local).context("binding a UDP socket")?;
    // Connected: the kernel drops datagrams from anyone else, and reports ICMP "port unreachable".
    socket
        .connect(server)
        .with_context(|| format!("connect(2) to {server}"))?;
    socket.set_read_timeout(Some(timeout / ATTEMPTS))?;
    let mut buf = [0; 512];
    for _ in 0..ATTEMPTS {
        socket
            .send(b"time?")
            .with_context(|| format!("sending to {server}"))?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                return Ok(String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                bail!("no time server at {server} (port unreachable)")
            }
            Err(e) => return Err(e).with_context(|| format!("receiving from {server}")),
        }
    }
    bail!("no reply from {server} within {timeout:?} ({ATTEMPTS} attempts)")
}
