//! The echo server: every byte (TCP, Unix stream) or datagram (UDP, Unix datagram) comes straight back.
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:0 --transport tcp --concurrency threading
//! cargo run --release --example echo -- --concurrency pool --workers 8
//! cargo run --release --example echo -- --concurrency prefork --workers 4 --max-requests 1000
//! cargo run --release --example echo -- --concurrency reactor
//! cargo run --release --example echo -- --transport unix --addr /tmp/echo.sock --mode 600
//! cargo run --release --example echo -- --transport unix-dgram --addr @echo   # abstract address
//! ```
//!
//! With `--concurrency prefork`, `SIGHUP` replaces the worker processes gracefully, `SIGTTIN` and
//! `SIGTTOU` add and remove one, `--min-spare`/`--max-spare` size the pool by its idle workers, and
//! `--worker-timeout-secs` replaces a worker stuck on one request.
//! `--concurrency reactor` serves stream transports from epoll event loops, one per CPU unless
//! `--workers N` says otherwise (datagram transports: exit 2).
//!
//! Where the socket comes from:
//!
//! - bound here from `--addr` (for Unix transports a path, or `@name` for a Linux abstract address);
//! - `--listen-fd N`: a socket the parent process bound and left open as descriptor `N` (its kind —
//!   TCP, UDP, Unix stream or datagram — is read from the socket itself);
//! - systemd socket activation (`--systemd`, or automatically when `LISTEN_FDS` is set): the first
//!   socket passed, e.g. `systemd-socket-activate -l /tmp/echo.sock echo --systemd`.
//!
//! Scale-out: `--reuse-port` lets several echo processes bind the same TCP (or UDP) port, and
//! `--pid-banner` makes each stream connection start with a `pid <PID>` line naming the process that
//! serves it (the child's pid under `--concurrency forking`), then echo as usual — so a client can see
//! how the kernel spread connections.
//!
//! `--metrics-addr 127.0.0.1:9100` serves the server's live figures (connections, requests, failures,
//! durations, workers) at `http://127.0.0.1:9100/metrics` for Prometheus — under every strategy, the
//! forked children's requests included. It needs the `prometheus` feature (`cargo run --release
//! --features prometheus --example echo -- --metrics-addr 127.0.0.1:9100`).
//!
//! TLS (built with `--features tls`): `--tls-cert PATH --tls-key PATH` serves the stream echo over
//! TLS under every strategy, the reactor included (a datagram transport: exit 2);
//! `--tls-client-ca PATH` requires client certificates signed by that CA, `--tls-alpn h2,http/1.1`
//! offers ALPN, and `SIGHUP` re-reads the certificate files for new connections (under `prefork`
//! as part of replacing the workers). `openssl s_client -connect 127.0.0.1:PORT -CAfile ca.pem -quiet`
//! talks to it.
//!
//! Zero-downtime upgrade: `SIGUSR2` starts the program anew (a new build deployed over it) with the
//! same flags, hands it the listening socket (and the metrics endpoint's), and once it is ready this
//! process stops accepting and drains; `--pid-file PATH` then names the new process. Under systemd
//! (`Type=notify`) it reports `READY=1`, `STOPPING=1`, watchdog pings and `MAINPID=` after an
//! upgrade without a flag.
//!
//! The first line on stdout is `listening on <bound address>`, so scripts can find the port; `SIGINT`
//! or `SIGTERM` shuts it down gracefully and it exits 0. Bad flags print usage and exit 2.

mod common;

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use common::cli::{
    self, ConcurrencyArgs, ListenArgs, MetricsArgs, PeerArgs, Strategy, TlsArgs, TransportArgs,
};
use socketserver::framing::RawBytes;
use socketserver::reactor::{Conn, MessageHandler};
use socketserver::transport::{Datagram, Stream};
use socketserver::{
    Concurrency, DatagramRequest, InheritedSocket, PreFork, Reactor, Sequential, Server,
    SocketKind, StreamOptions, StreamRequest, Tcp, Transport, Udp, UnixDatagram, UnixStream,
    signals,
};

#[derive(Parser, Debug)]
#[command(about = "Echo server: stream transports echo bytes, datagram transports echo datagrams")]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,
    // With --listen-fd or socket activation the transport is read from the socket, and must match
    // --transport if given.
    #[command(flatten)]
    transport: TransportArgs,
    #[command(flatten)]
    concurrency: ConcurrencyArgs,
    #[command(flatten)]
    peers: PeerArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Start each stream connection with a `pid <PID>` line from the serving process, then echo.
    #[arg(long)]
    pid_banner: bool,
    /// Unix socket file mode, in octal (e.g. 600), applied before the file exists.
    #[arg(long, value_parser = parse_mode)]
    mode: Option<u32>,
    /// Replace a stale Unix socket file (one nothing answers on) at --addr.
    #[arg(long)]
    replace_stale: bool,
    /// Write the server's pid to PATH once it is ready (atomically); removed when it exits. Refused
    /// while PATH names another running process.
    #[arg(long, value_name = "PATH")]
    pid_file: Option<std::path::PathBuf>,
    /// How long a `SIGUSR2` upgrade waits for the new process to be ready, in milliseconds (default
    /// 60000); past it the new process is ended and this one serves on.
    #[arg(long, value_name = "MS")]
    upgrade_timeout_ms: Option<u64>,
    /// How long shutdown waits for in-flight requests before cutting them, in milliseconds.
    #[arg(long)]
    shutdown_timeout_ms: Option<u64>,
    /// Read buffer per stream connection, in bytes (default 8 KiB); each read takes at most this much.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    rbufsize: Option<u64>,
    /// Read and write timeout per stream connection, in seconds (default 60, the library's); 0: none.
    /// Under the blocking strategies a read or write that waits with a timeout arms a kernel timer
    /// (1.5-2.5 % of a small request's cost on one core); the reactor keeps its own timers.
    #[arg(long, value_name = "SECS")]
    timeout_secs: Option<u64>,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 600"))
}

/// Echoes whatever arrives, as it arrives, until the client closes.
fn echo_stream(req: &mut StreamRequest) -> anyhow::Result<()> {
    loop {
        // Everything received is echoed: between messages, so a drain may close the connection now.
        req.idle();
        let chunk = req.rfile.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        req.wfile.write_all(chunk)?;
        req.rfile.consume(n);
    }
}

/// `pid <PID>\n`, then the echo: which process serves the connection, for `--reuse-port` scale-out.
fn echo_stream_with_pid(req: &mut StreamRequest) -> anyhow::Result<()> {
    writeln!(req.wfile, "pid {}", std::process::id())?;
    echo_stream(req)
}

/// The same echo for the event loop: every chunk that arrives is queued straight back — the buffer
/// it was read into, not a copy (`send_vec`).
struct ReactorEcho {
    pid_banner: bool,
}

impl MessageHandler for ReactorEcho {
    type Codec = RawBytes;
    fn codec(&self) -> RawBytes {
        RawBytes
    }
    fn on_open(&self, conn: &mut Conn<'_, RawBytes>) -> anyhow::Result<()> {
        if self.pid_banner {
            conn.send(format!("pid {}\n", std::process::id()).as_bytes())?;
        }
        Ok(())
    }
    fn on_message(&self, conn: &mut Conn<'_, RawBytes>, bytes: Vec<u8>) -> anyhow::Result<()> {
        conn.send_vec(bytes)?;
        Ok(())
    }
}

/// Sends the datagram back.
fn echo_datagram(req: &mut DatagramRequest) -> anyhow::Result<()> {
    let data = req.data().to_vec();
    req.wfile = data;
    Ok(())
}

/// The socket to serve on, of whichever transport.
enum Listener {
    Tcp(Tcp),
    Udp(Udp),
    Unix(UnixStream),
    UnixDgram(UnixDatagram),
}

impl Listener {
    /// Binds `--addr` as `--transport` says.
    fn bind(args: &Args) -> anyhow::Result<Listener> {
        let addr = args.listen.addr.as_deref().unwrap_or("127.0.0.1:0");
        let abstract_name = addr.strip_prefix('@');
        let reuse_port = args.listen.reuse_port;
        Ok(match args.transport.or_tcp() {
            cli::Transport::Tcp => Listener::Tcp(Tcp::builder().reuse_port(reuse_port).bind(addr)?),
            cli::Transport::Udp => Listener::Udp(Udp::builder().reuse_port(reuse_port).bind(addr)?),
            cli::Transport::Unix => {
                let mut b = UnixStream::builder().replace_stale(args.replace_stale);
                if let Some(mode) = args.mode {
                    b = b.mode(mode);
                }
                Listener::Unix(match abstract_name {
                    Some(name) => b.bind_abstract(name)?,
                    None => b.bind(addr)?,
                })
            }
            cli::Transport::UnixDgram => {
                let mut b = UnixDatagram::builder().replace_stale(args.replace_stale);
                if let Some(mode) = args.mode {
                    b = b.mode(mode);
                }
                Listener::UnixDgram(match abstract_name {
                    Some(name) => b.bind_abstract(name)?,
                    None => b.bind(addr)?,
                })
            }
        })
    }

    /// The transport, as `--transport` names it.
    fn transport(&self) -> cli::Transport {
        match self {
            Listener::Tcp(_) => cli::Transport::Tcp,
            Listener::Udp(_) => cli::Transport::Udp,
            Listener::Unix(_) => cli::Transport::Unix,
            Listener::UnixDgram(_) => cli::Transport::UnixDgram,
        }
    }

    /// Serves on a socket the parent bound, after checking it is what `--transport` (if given) says.
    fn inherited(socket: InheritedSocket, args: &Args) -> anyhow::Result<Listener> {
        let (kind, what) = (socket.kind(), format!("{socket:?}"));
        let listener = match kind {
            SocketKind::Tcp => Listener::Tcp(socket.into_tcp()?),
            SocketKind::Udp => Listener::Udp(socket.into_udp()?),
            SocketKind::UnixStream => Listener::Unix(socket.into_unix_stream()?),
            SocketKind::UnixDatagram => Listener::UnixDgram(socket.into_unix_datagram()?),
            other => anyhow::bail!("{what}: {other} is not served by this example"),
        };
        let actual = listener.transport();
        if let Some(want) = args.transport.transport.filter(|t| *t != actual) {
            anyhow::bail!("the inherited socket is {kind}, but --transport {want:?} was given");
        }
        Ok(listener)
    }
}

/// Serves a stream transport under the chosen strategy.
fn serve_stream<T>(t: T, args: &Args) -> anyhow::Result<()>
where
    T: Transport<Kind = Stream>,
    Reactor: Concurrency<T, ReactorEcho>,
{
    let handler: StreamEcho = if args.pid_banner {
        echo_stream_with_pid
    } else {
        echo_stream
    };
    let c = &args.concurrency;
    match c.concurrency {
        Strategy::Sequential => run_blocking(Server::new(Sequential::new(), t, handler)?, args),
        Strategy::Threading => run_blocking(Server::new(c.threading(), t, handler)?, args),
        Strategy::Forking => run_blocking(Server::new(c.forking(), t, handler)?, args),
        Strategy::Pool => run_blocking(Server::new(c.pool(), t, handler)?, args),
        Strategy::Prefork => run_blocking(Server::new(prefork(c)?, t, handler)?, args),
        Strategy::Reactor => {
            let handler = ReactorEcho {
                pid_banner: args.pid_banner,
            };
            let server =
                Server::new(c.reactor(), t, handler)?.max_connections_per_peer(args.peers.limit());
            run(args.tls.serve_over(server, c.concurrency)?, args)
        }
    }
}

/// The blocking stream echo: a plain function, for every strategy but the reactor.
type StreamEcho = fn(&mut StreamRequest) -> anyhow::Result<()>;

/// Serves the blocking stream echo with the per-peer limit, and over TLS with `--tls-cert`.
fn run_blocking<C, T>(server: Server<C, T, StreamEcho>, args: &Args) -> anyhow::Result<()>
where
    C: Concurrency<T, StreamEcho>,
    T: Transport<Kind = Stream>,
{
    let server = server.max_connections_per_peer(args.peers.limit());
    let server = args.tls.serve_over(server, args.concurrency.concurrency)?;
    run(server, args)
}

/// Serves a datagram transport under the chosen strategy.
fn serve_datagram<T: Transport<Kind = Datagram>>(t: T, args: &Args) -> anyhow::Result<()> {
    if args.timeout_secs.is_some() {
        cli::refuse("--timeout-secs applies to stream transports (tcp, unix)");
    }
    let c = &args.concurrency;
    match c.concurrency {
        Strategy::Sequential => run(Server::new(Sequential::new(), t, echo_datagram)?, args),
        Strategy::Threading => run(Server::new(c.threading(), t, echo_datagram)?, args),
        Strategy::Forking => run(Server::new(c.forking(), t, echo_datagram)?, args),
        Strategy::Pool => run(Server::new(c.pool(), t, echo_datagram)?, args),
        Strategy::Prefork => run(Server::new(prefork(c)?, t, echo_datagram)?, args),
        Strategy::Reactor => {
            cli::refuse("--concurrency reactor serves stream transports only (tcp, unix)")
        }
    }
}

/// A pre-fork strategy whose workers `SIGHUP` replaces, and `SIGTTIN`/`SIGTTOU` grow and shrink.
fn prefork(c: &ConcurrencyArgs) -> anyhow::Result<PreFork> {
    let strategy = c.prefork();
    signals::reload_on_sighup(&strategy.reload_handle())?;
    signals::resize_on_ttin_ttou(&strategy.size_handle())?;
    Ok(strategy)
}

/// Applies the flags every strategy shares, then serves.
fn run<C, T, H>(mut server: Server<C, T, H>, args: &Args) -> anyhow::Result<()>
where
    C: Concurrency<T, H>,
    T: Transport,
{
    if let Some(ms) = args.shutdown_timeout_ms {
        server = server.shutdown_timeout(Duration::from_millis(ms));
    }
    let mut options = StreamOptions::default();
    if let Some(bytes) = args.rbufsize {
        options.rbufsize = bytes as usize;
    }
    if let Some(secs) = args.timeout_secs {
        let timeout = (secs > 0).then(|| Duration::from_secs(secs));
        options.read_timeout = timeout;
        options.write_timeout = timeout;
    }
    server = server.stream_options(options);
    common::serve_with(
        server,
        common::Ops {
            metrics: args.metrics.metrics_addr,
            pid_file: args.pid_file.clone(),
            upgrade_as: Some("echo"),
            upgrade_timeout: args.upgrade_timeout_ms.map(Duration::from_millis),
        },
    )
}

fn main() -> anyhow::Result<()> {
    let args: Args = common::parse_args();
    args.concurrency.check();
    args.tls
        .check(args.concurrency.concurrency, args.transport.transport, true);
    // Sockets passed by systemd, or by an upgrading predecessor (started with these same flags,
    // --addr included), are served instead of binding.
    let activated = if args.listen.listen_fd.is_none() {
        common::activated("echo")?
    } else {
        None
    };
    common::init_logging();
    let listener = if let Some(fd) = args.listen.listen_fd {
        // SAFETY: descriptor `fd` was left open for us by the parent (that is what --listen-fd
        // means) and nothing else in this process uses it.
        let socket = unsafe { InheritedSocket::from_raw_fd(fd) }
            .with_context(|| format!("--listen-fd {fd}"))?;
        Listener::inherited(socket, &args)?
    } else if let Some(socket) = activated {
        Listener::inherited(socket, &args)?
    } else if args.listen.systemd {
        anyhow::bail!(
            "--systemd: no sockets were passed (LISTEN_FDS/LISTEN_PID are not set for this process)"
        );
    } else {
        Listener::bind(&args)?
    };
    // An inherited socket's transport is known only now.
    args.tls.check(
        args.concurrency.concurrency,
        Some(listener.transport()),
        true,
    );
    match listener {
        Listener::Tcp(t) => serve_stream(t, &args),
        Listener::Udp(t) => serve_datagram(t, &args),
        Listener::Unix(t) => serve_stream(t, &args),
        Listener::UnixDgram(t) => serve_datagram(t, &args),
    }
}
