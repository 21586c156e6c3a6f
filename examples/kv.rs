//! A key-value server speaking a line protocol: `SET key value` → `OK`, `GET key` → `VALUE value` or
//! `NONE`, `DEL key` → `DELETED` or `NONE`, `QUIT` → `BYE` (the protocol and its limits are in
//! `examples/common/kvproto.rs`).
//!
//! ```text
//! cargo run --release --example kv                                    # threading, map in memory
//! cargo run --release --example kv -- --concurrency pool --workers 8
//! cargo run --release --example kv_state -- --path /tmp/kv.sock     # then, in another terminal:
//! cargo run --release --example kv -- --concurrency forking --state unix:/tmp/kv.sock
//! cargo run --release --example kv -- --concurrency prefork --state unix:/tmp/kv.sock
//! ```
//!
//! Where the map lives is the point of this example:
//!
//! - `--state memory` (the default): in this process, an `Arc<Mutex<HashMap>>` shared by every
//!   request. Correct under `sequential`, `threading` and `pool`, where requests share the process's
//!   memory. Under `forking` and `prefork` each connection is served by a child process working on
//!   its own *copy* of that memory: a `SET` would change the child's copy only, and vanish with it
//!   (under prefork, the map would be split across the workers). So that combination is refused
//!   (exit 2) instead of losing data silently.
//! - `--state unix:PATH`: nowhere here. Every command is forwarded to the state service listening at
//!   `PATH` (`kv_state`, one process owning the one map), so it works under every strategy.
//!
//! `--concurrency reactor` is refused (the handler blocks), as are the datagram transports (the
//! protocol is a stream of lines). The first line on stdout is `listening on <bound address>`;
//! `SIGINT` or `SIGTERM` shuts the server down gracefully and it exits 0. Bad flags exit 2.

mod common;

use std::io::{BufReader, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use common::cli::{self, ConcurrencyArgs, ListenArgs, Strategy, TransportArgs};
use common::kvproto::{self, Command, Line, MAX_LINE, MemoryStore, Reply, Store};
use socketserver::transport::{Stream, peer_credentials};
use socketserver::{
    InheritedSocket, Sequential, Server, SocketKind, StreamHandler, StreamRequest, Tcp, Transport,
    UnixStream, activation,
};

#[derive(Parser, Debug)]
#[command(about = "Key-value server: SET, GET, DEL and QUIT over a line protocol")]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    transport: TransportArgs,
    #[command(flatten)]
    concurrency: ConcurrencyArgs,
    /// Where the map lives: `memory` (this process; not with forking or prefork) or `unix:PATH`
    /// (the kv_state service listening at PATH; any strategy).
    #[arg(long, default_value = "memory", value_parser = parse_state)]
    state: StateArg,
}

#[derive(Clone, Debug)]
enum StateArg {
    Memory,
    Unix(PathBuf),
}

fn parse_state(s: &str) -> Result<StateArg, String> {
    match s.strip_prefix("unix:") {
        _ if s == "memory" => Ok(StateArg::Memory),
        Some(path) if !path.is_empty() => Ok(StateArg::Unix(PathBuf::from(path))),
        _ => Err(format!(
            "{s:?} is neither `memory` nor `unix:PATH` (the socket of a kv_state service)"
        )),
    }
}

/// How long one exchange with the state service may take. It answers from memory under a lock held
/// for one `HashMap` call, so a few seconds means it is wedged or gone; without a limit, a wedged
/// service would pin every one of our workers forever.
const STATE_TIMEOUT: Duration = Duration::from_secs(5);

/// The map held by the state service at `path`.
///
/// One connection per command, not one per client connection: a client may sit idle for minutes
/// between commands, and a held connection would pin one of the service's threads meanwhile, run
/// into its read timeout, and need reconnect-and-retry logic — which could apply a `DEL` twice. A
/// fresh connection per command needs none of that, lets the service restart between any two
/// commands, and costs one local `connect(2)` (tens of microseconds, next to the client's own round
/// trip).
#[derive(Debug, Clone)]
struct RemoteStore {
    path: PathBuf,
}

impl RemoteStore {
    /// Connects, checking that the service runs as our own user: the path may be in a directory
    /// others can write (`/tmp`), and the map must not be handed to whoever bound it first.
    fn connect(&self) -> anyhow::Result<std::os::unix::net::UnixStream> {
        let stream = std::os::unix::net::UnixStream::connect(&self.path)?;
        let theirs = peer_credentials(&stream)?.uid;
        let ours = nix::unistd::geteuid().as_raw();
        if theirs != ours {
            bail!("the service runs as uid {theirs}, not as this server's uid {ours}");
        }
        stream.set_read_timeout(Some(STATE_TIMEOUT))?;
        stream.set_write_timeout(Some(STATE_TIMEOUT))?;
        Ok(stream)
    }

    fn exchange(&self, command: &Command) -> anyhow::Result<Reply> {
        let mut stream = self.connect()?;
        stream.write_all(command.encode().as_bytes())?;
        // The only command on this connection: the service answers it, sees the end of the stream and
        // ends its side, so none of its threads waits on us.
        stream.shutdown(Shutdown::Write)?;
        match kvproto::read_line(&mut BufReader::new(stream), MAX_LINE)? {
            Line::Complete(line) => match Reply::parse(&line) {
                Ok(Reply::Bye) => bail!("replied BYE to {:?}", command.encode().trim_end()),
                Ok(reply) => Ok(reply),
                Err(why) => bail!("sent {why}"),
            },
            Line::TooLong(len) => bail!("sent a reply line of {len} bytes"),
            Line::Eof | Line::Unterminated(_) => bail!("closed the connection without a reply"),
        }
    }
}

impl Store for RemoteStore {
    fn apply(&self, command: &Command) -> Reply {
        match self.exchange(command) {
            Ok(reply) => reply,
            Err(e) => {
                // The client learns that this command failed and may retry; the details (which may
                // name paths and users) go to our log only.
                log::error!("state service at {}: {e:#}", self.path.display());
                Reply::Error("the state service is unavailable; try again".into())
            }
        }
    }
}

/// Where this server keeps the map.
#[derive(Debug, Clone)]
enum State {
    Memory(MemoryStore),
    Remote(RemoteStore),
}

impl Store for State {
    fn apply(&self, command: &Command) -> Reply {
        match self {
            State::Memory(store) => store.apply(command),
            State::Remote(store) => store.apply(command),
        }
    }
}

/// The handler: the protocol loop over whichever store.
#[derive(Debug)]
struct Kv {
    state: State,
}

impl StreamHandler for Kv {
    fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        kvproto::serve_connection(req, &self.state)
    }
}

/// Refuses `--state memory` where requests do not share this process's memory, naming the problem
/// and the fix: the combination compiles and runs, and would lose every write without a word.
fn refuse_unshared_memory(strategy: Strategy) -> ! {
    let why = match strategy {
        Strategy::Forking => {
            "each connection is served by a child process working on its own copy of this \
             server's memory, so every SET would vanish when its connection closes"
        }
        _ => {
            "each worker process works on its own copy of this server's memory, so the map would \
             be split across the workers (and lost when one is replaced)"
        }
    };
    cli::refuse(format!(
        "--state memory cannot be used with --concurrency {strategy}: {why}.\n\
         Keep the map in one process that every worker asks: start the state service \
         (`kv_state --path /tmp/kv.sock`) and pass `--state unix:/tmp/kv.sock`; or use \
         --concurrency threading, pool or sequential, whose requests share one memory."
    ))
}

/// The socket to serve on.
enum Listener {
    Tcp(Tcp),
    Unix(UnixStream),
}

impl Listener {
    /// Binds `--addr` as `--transport` says.
    fn bind(args: &Args) -> anyhow::Result<Listener> {
        let addr = args.listen.addr.as_deref().unwrap_or("127.0.0.1:0");
        Ok(match args.transport.or_tcp() {
            cli::Transport::Tcp => Listener::Tcp(
                Tcp::builder()
                    .reuse_port(args.listen.reuse_port)
                    .bind(addr)?,
            ),
            cli::Transport::Unix => Listener::Unix(match addr.strip_prefix('@') {
                Some(name) => UnixStream::bind_abstract(name)?,
                None => UnixStream::bind(addr)?,
            }),
            cli::Transport::Udp | cli::Transport::UnixDgram => cli::refuse(
                "--transport udp and unix-dgram carry datagrams; kv speaks a stream of lines \
                 (use tcp or unix)",
            ),
        })
    }

    /// Serves on a socket the parent bound (`--listen-fd`, socket activation).
    fn inherited(socket: InheritedSocket, args: &Args) -> anyhow::Result<Listener> {
        let (kind, want) = (socket.kind(), args.transport.transport);
        let (listener, actual) = match kind {
            SocketKind::Tcp => (Listener::Tcp(socket.into_tcp()?), cli::Transport::Tcp),
            SocketKind::UnixStream => (
                Listener::Unix(socket.into_unix_stream()?),
                cli::Transport::Unix,
            ),
            other => bail!("the inherited socket is {other}; kv serves TCP or Unix stream sockets"),
        };
        if let Some(want) = want.filter(|t| *t != actual) {
            bail!("the inherited socket is {kind}, but --transport {want:?} was given");
        }
        Ok(listener)
    }
}

/// Serves `t` under the chosen strategy.
fn serve<T: Transport<Kind = Stream>>(t: T, kv: Kv, c: &ConcurrencyArgs) -> anyhow::Result<()> {
    match c.concurrency {
        Strategy::Sequential => common::serve(Server::new(Sequential::new(), t, kv)?),
        Strategy::Threading => common::serve(Server::new(c.threading(), t, kv)?),
        Strategy::Forking => common::serve(Server::new(c.forking(), t, kv)?),
        Strategy::Pool => common::serve(Server::new(c.pool(), t, kv)?),
        Strategy::Prefork => common::serve(Server::new(c.prefork(), t, kv)?),
        // Refused in `main` before binding; an error here (not `exit`) still removes a Unix socket file.
        Strategy::Reactor => bail!("--concurrency reactor is not served by kv"),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Args = common::parse_args();
    args.concurrency.check();
    let strategy = args.concurrency.concurrency;
    if strategy == Strategy::Reactor {
        cli::refuse(
            "--concurrency reactor needs an event-loop handler; kv's handler blocks (on its \
             client and on the state service): use sequential, threading, forking, pool or prefork",
        );
    }
    let state = match &args.state {
        StateArg::Memory if matches!(strategy, Strategy::Forking | Strategy::Prefork) => {
            refuse_unshared_memory(strategy)
        }
        StateArg::Memory => State::Memory(MemoryStore::default()),
        StateArg::Unix(path) => {
            let store = RemoteStore { path: path.clone() };
            // Fail at start, not on the first client's first command, when the service is not there.
            store.connect().with_context(|| {
                format!(
                    "--state unix:{0}: cannot reach the state service (start it first: \
                     kv_state --path {0})",
                    path.display()
                )
            })?;
            State::Remote(store)
        }
    };
    // Before any thread starts: taking the activation sockets removes environment variables.
    let activated = if args.listen.listen_fd.is_none() && args.listen.addr.is_none() {
        activation::listen_fds().context("socket activation")?
    } else {
        Vec::new()
    };
    common::init_logging();
    let listener = if let Some(fd) = args.listen.listen_fd {
        // SAFETY: descriptor `fd` was left open for us by the parent (that is what --listen-fd
        // means) and nothing else in this process uses it.
        let socket = unsafe { InheritedSocket::from_raw_fd(fd) }
            .with_context(|| format!("--listen-fd {fd}"))?;
        Listener::inherited(socket, &args)?
    } else if let Some(socket) = activated.into_iter().next() {
        Listener::inherited(socket, &args)?
    } else if args.listen.systemd {
        bail!(
            "--systemd: no sockets were passed (LISTEN_FDS/LISTEN_PID are not set for this process)"
        );
    } else {
        Listener::bind(&args)?
    };
    let kv = Kv { state };
    match listener {
        Listener::Tcp(t) => serve(t, kv, &args.concurrency),
        Listener::Unix(t) => serve(t, kv, &args.concurrency),
    }
}
