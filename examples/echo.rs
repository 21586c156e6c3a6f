//! The echo server: every byte (TCP) or datagram (UDP) comes straight back.
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:0 --transport tcp --concurrency threading
//! cargo run --release --example echo -- --concurrency pool --workers 8
//! cargo run --release --example echo -- --concurrency prefork --workers 4 --max-requests 1000
//! ```
//!
//! With `--concurrency prefork`, `SIGHUP` replaces the worker processes gracefully.
//! `--concurrency reactor` serves TCP from one epoll event loop (it refuses UDP: exit 2).
//!
//! The first line on stdout is `listening on <bound address>`, so scripts can find the port; `SIGINT`
//! or `SIGTERM` shuts it down gracefully and it exits 0. Bad flags print usage and exit 2.

mod common;

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use socketserver::framing::RawBytes;
use socketserver::handler::{Conn, MessageHandler};
use socketserver::{
    signals, DatagramRequest, Forking, Pool, PreFork, Reactor, Sequential, Serve, Server,
    StreamRequest, Tcp, Threading, Transport, Udp,
};

#[derive(Parser, Debug)]
#[command(about = "Echo server: TCP echoes bytes, UDP echoes datagrams")]
struct Args {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// Transport.
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    transport: TransportArg,
    /// Concurrency strategy.
    #[arg(long, value_enum, default_value_t = ConcurrencyArg::Threading)]
    concurrency: ConcurrencyArg,
    /// Worker threads (pool) or processes (prefork); default: the strategy's own.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<u32>,
    /// Recycle each prefork worker after this many requests.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_requests: Option<u64>,
    /// How long shutdown waits for in-flight requests before cutting them, in milliseconds.
    #[arg(long)]
    shutdown_timeout_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TransportArg {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ConcurrencyArg {
    Sequential,
    Threading,
    Forking,
    Pool,
    Prefork,
    /// One epoll event loop for every connection (TCP only).
    Reactor,
}

/// Echoes whatever arrives, as it arrives, until the client closes.
fn echo_stream(req: &mut StreamRequest) -> anyhow::Result<()> {
    loop {
        let chunk = req.rfile.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        req.wfile.write_all(chunk)?;
        req.rfile.consume(n);
    }
}

/// The same echo for the event loop: every chunk that arrives is queued straight back.
struct ReactorEcho;

impl MessageHandler for ReactorEcho {
    type Codec = RawBytes;
    fn codec(&self) -> RawBytes {
        RawBytes
    }
    fn on_message(&self, conn: &mut Conn<'_, RawBytes>, bytes: Vec<u8>) -> anyhow::Result<()> {
        conn.send(&bytes)?;
        Ok(())
    }
}

/// Sends the datagram back.
fn echo_datagram(req: &mut DatagramRequest) -> anyhow::Result<()> {
    let data = req.data().to_vec();
    req.wfile = data;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    common::init_logging();
    let args: Args = common::parse_args();
    let addr = args.addr.as_str();
    let pool = || {
        args.workers
            .map_or_else(Pool::default, |n| Pool::new(n as usize))
    };
    let prefork = || -> anyhow::Result<PreFork> {
        let strategy = args
            .workers
            .map_or_else(PreFork::default, |n| PreFork::new(n as usize))
            .max_requests(args.max_requests);
        signals::reload_on_sighup(&strategy.reload_handle())?;
        Ok(strategy)
    };
    use ConcurrencyArg as C;
    use TransportArg as T;
    match (args.transport, args.concurrency) {
        (T::Tcp, C::Sequential) => run(
            Server::new(Sequential, Tcp::bind(addr)?, echo_stream)?,
            &args,
        ),
        (T::Tcp, C::Threading) => run(
            Server::new(Threading::new(), Tcp::bind(addr)?, echo_stream)?,
            &args,
        ),
        (T::Tcp, C::Forking) => run(
            Server::new(Forking::new(), Tcp::bind(addr)?, echo_stream)?,
            &args,
        ),
        (T::Tcp, C::Pool) => run(Server::new(pool(), Tcp::bind(addr)?, echo_stream)?, &args),
        (T::Tcp, C::Prefork) => run(
            Server::new(prefork()?, Tcp::bind(addr)?, echo_stream)?,
            &args,
        ),
        (T::Tcp, C::Reactor) => run(
            Server::new(Reactor::new(), Tcp::bind(addr)?, ReactorEcho)?,
            &args,
        ),
        (T::Udp, C::Reactor) => {
            eprintln!("error: --concurrency reactor serves stream transports only; use it with --transport tcp");
            std::process::exit(2);
        }
        (T::Udp, C::Sequential) => run(
            Server::new(Sequential, Udp::bind(addr)?, echo_datagram)?,
            &args,
        ),
        (T::Udp, C::Threading) => run(
            Server::new(Threading::new(), Udp::bind(addr)?, echo_datagram)?,
            &args,
        ),
        (T::Udp, C::Forking) => run(
            Server::new(Forking::new(), Udp::bind(addr)?, echo_datagram)?,
            &args,
        ),
        (T::Udp, C::Pool) => run(Server::new(pool(), Udp::bind(addr)?, echo_datagram)?, &args),
        (T::Udp, C::Prefork) => run(
            Server::new(prefork()?, Udp::bind(addr)?, echo_datagram)?,
            &args,
        ),
    }
}

/// Applies the flags every strategy shares, then serves.
fn run<C, T, H>(mut server: Server<C, T, H>, args: &Args) -> anyhow::Result<()>
where
    C: Serve<T, H>,
    T: Transport,
{
    if let Some(ms) = args.shutdown_timeout_ms {
        server = server.shutdown_timeout(Duration::from_millis(ms));
    }
    common::serve(server)
}
