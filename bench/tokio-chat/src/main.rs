//! Baseline for the chat fan-out benchmark (issue 16, item 5): a line-based chat room written the
//! way tokio's documentation and examples suggest — one `tokio::sync::broadcast` channel for the
//! room, one task per connection, `tokio_util::codec::LinesCodec` framing, and `select!` between
//! reading the client's next line and receiving the room's next message. A receiver that falls
//! more than `--capacity` messages behind gets `RecvError::Lagged` and skips what it missed, as
//! tokio's broadcast channel does.
//!
//! `tokio-chat --addr 127.0.0.1:0 [--capacity 1024] [--max-line 1024] [--flush-each]`
//!
//! The wire protocol is `examples/chat.rs`'s: a newcomer gets `* welcome ADDR, N other(s) here`,
//! the others `* ADDR joined`; every line a client sends goes to every *other* client as
//! `ADDR: line`; `* ADDR left` when it goes; a line over `--max-line` gets
//! `* line too long (N bytes, max M bytes): goodbye` and the connection is closed.
//!
//! Writes: after receiving one message the task also takes whatever else is already waiting in
//! the channel (`try_recv`) and writes it all with one flush (`SinkExt::feed`, then `flush`), so a
//! busy room costs one `write` per batch, not one per line. `--flush-each` writes and flushes each
//! line on its own (`SinkExt::send`), the plainest version.
//!
//! Prints `listening on <addr>` as its first stdout line and exits 0 on SIGTERM/SIGINT.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec, LinesCodecError};

const USAGE: &str =
    "usage: tokio-chat --addr HOST:PORT [--capacity N] [--max-line BYTES] [--flush-each]";

#[derive(Clone, Copy, Debug)]
struct Config {
    capacity: usize,
    max_line: usize,
    flush_each: bool,
}

/// A message in the room: who sent it (so its sender can skip it) and the line to relay.
type Msg = (u64, Arc<str>);

fn main() -> ExitCode {
    let (addr, config) = match parse_args() {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("tokio-chat: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio-chat: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(addr, config)) {
        Ok(()) => {
            // Don't wait for connection tasks still blocked on their peers.
            runtime.shutdown_background();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokio-chat: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse_args() -> Result<(String, Config), String> {
    let mut addr = None;
    let mut config = Config {
        capacity: 1024,
        max_line: 1024,
        flush_each: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let mut number = |what: &str| -> Result<usize, String> {
            let v = value()?;
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{what} must be a positive integer, got {v:?}"))
        };
        match flag.as_str() {
            "--addr" => addr = Some(value()?),
            "--capacity" => config.capacity = number("--capacity")?,
            "--max-line" => config.max_line = number("--max-line")?,
            "--flush-each" => config.flush_each = true,
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((addr.ok_or("--addr is required")?, config))
}

/// Runs until SIGTERM or SIGINT arrives.
async fn serve(addr: String, config: Config) -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind(&addr).await?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    tokio::select! {
        r = accept_loop(listener, config) => r,
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

async fn accept_loop(listener: TcpListener, config: Config) -> io::Result<()> {
    let (tx, _) = broadcast::channel::<Msg>(config.capacity);
    let mut next_id = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                next_id += 1;
                // Subscribe here, in accept order, so a client hears every client that joins after it.
                let rx = tx.subscribe();
                let tx = tx.clone();
                let id = next_id;
                tokio::spawn(async move {
                    let _ = client(stream, peer, id, tx, rx, config).await;
                });
            }
            Err(e) => {
                eprintln!("tokio-chat: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn client(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    tx: broadcast::Sender<Msg>,
    mut rx: broadcast::Receiver<Msg>,
    config: Config,
) -> Result<(), LinesCodecError> {
    let (reader, writer) = stream.into_split();
    let mut lines = FramedRead::new(reader, LinesCodec::new_with_max_length(config.max_line));
    let mut out = FramedWrite::new(writer, LinesCodec::new());

    let others = tx.receiver_count().saturating_sub(1);
    out.send(format!("* welcome {peer}, {others} other(s) here"))
        .await?;
    let _ = tx.send((id, format!("* {peer} joined").into()));

    let result = loop {
        tokio::select! {
            line = lines.next() => match line {
                Some(Ok(line)) => {
                    let line = line.trim_end_matches('\r');
                    let _ = tx.send((id, format!("{peer}: {line}").into()));
                }
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    let max = config.max_line;
                    let notice = format!("* line too long (at least {max} bytes, max {max} bytes): goodbye");
                    let _ = out.send(notice).await;
                    break Ok(());
                }
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            msg = rx.recv() => match msg {
                Ok((from, text)) => {
                    if let Err(e) = relay(&mut out, &mut rx, id, from, text, config.flush_each).await {
                        break Err(e);
                    }
                }
                // Fell behind: the oldest messages are gone; go on with the ones still there.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break Ok(()),
            },
        }
    };
    let _ = tx.send((id, format!("* {peer} left").into()));
    result
}

/// Writes `text` (unless this client sent it) and, unless `flush_each`, every message already
/// waiting in the channel, then flushes once.
async fn relay(
    out: &mut FramedWrite<tokio::net::tcp::OwnedWriteHalf, LinesCodec>,
    rx: &mut broadcast::Receiver<Msg>,
    id: u64,
    from: u64,
    text: Arc<str>,
    flush_each: bool,
) -> Result<(), LinesCodecError> {
    if flush_each {
        if from != id {
            out.send(&*text).await?;
        }
        return Ok(());
    }
    if from != id {
        out.feed(&*text).await?;
    }
    loop {
        match rx.try_recv() {
            Ok((from, text)) => {
                if from != id {
                    out.feed(&*text).await?;
                }
            }
            Err(TryRecvError::Lagged(_)) => continue,
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    SinkExt::<&str>::flush(out).await
}
