//! The echo server: every byte (TCP) or datagram (UDP) comes straight back.
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:0 --transport tcp --concurrency threading
//! ```
//!
//! `--concurrency reactor` serves TCP from one epoll event loop (it refuses UDP: exit 2).
//!
//! The first line on stdout is `listening on <bound address>`, so scripts can find the port; `SIGINT`
//! or `SIGTERM` shuts it down gracefully and it exits 0. Bad flags print usage and exit 2.

mod common;

use std::io::{BufRead, Write};

use clap::{Parser, ValueEnum};
use common::serve as run;
use socketserver::framing::RawBytes;
use socketserver::handler::{Conn, MessageHandler};
use socketserver::{
    DatagramRequest, Forking, Reactor, Sequential, Server, StreamRequest, Tcp, Threading, Udp,
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

/// The event-loop echo: no framing, so every chunk that arrives goes straight back.
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
    use ConcurrencyArg as C;
    use TransportArg as T;
    match (args.transport, args.concurrency) {
        (T::Tcp, C::Sequential) => run(Server::new(Sequential, Tcp::bind(addr)?, echo_stream)?),
        (T::Tcp, C::Threading) => run(Server::new(
            Threading::new(),
            Tcp::bind(addr)?,
            echo_stream,
        )?),
        (T::Tcp, C::Forking) => run(Server::new(Forking::new(), Tcp::bind(addr)?, echo_stream)?),
        (T::Tcp, C::Reactor) => run(Server::new(Reactor::new(), Tcp::bind(addr)?, ReactorEcho)?),
        (T::Udp, C::Reactor) => {
            eprintln!("error: --concurrency reactor serves stream transports only; use it with --transport tcp");
            std::process::exit(2);
        }
        (T::Udp, C::Sequential) => run(Server::new(Sequential, Udp::bind(addr)?, echo_datagram)?),
        (T::Udp, C::Threading) => run(Server::new(
            Threading::new(),
            Udp::bind(addr)?,
            echo_datagram,
        )?),
        (T::Udp, C::Forking) => run(Server::new(
            Forking::new(),
            Udp::bind(addr)?,
            echo_datagram,
        )?),
    }
}
