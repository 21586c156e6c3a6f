//! A multiplexed, line-based chat server on event loops (one per CPU, or `--loops N`): every line a
//! client sends goes to all the other clients, whichever loop serves them, prefixed with the sender's
//! address, with join and leave notices.
//!
//! ```text
//! cargo run --release --example chat -- --addr 127.0.0.1:0
//! nc 127.0.0.1 PORT   # in two or more terminals
//! ```
//!
//! This is the select/poll chat server of the classic socket tutorials, done right:
//!
//! - **Framing.** Input is cut into lines by `framing::Lines`, so a message split across TCP
//!   segments, or two messages in one, are handled correctly. A line longer than `--max-line` gets a
//!   notice with its length and the connection is closed, as soon as `--max-line` bytes have come
//!   without a line end: a client cannot make the server buffer an endless line. The length is the
//!   line's own when its end has arrived, else "at least" what has — never the bytes that happened
//!   to be buffered behind it.
//! - **Bursts and slow readers.** Each connection's queued output is bounded by `--write-buffer`.
//!   A client that sends faster than the others read is *paced*: the event loop stops reading from it
//!   while what it sent is queued for readers that are behind, and goes on as they catch up — so a
//!   burst of any size reaches every reader, once and in order, and no reader is dropped for being
//!   slower than the loop. A client that stops reading altogether is disconnected once it has taken
//!   nothing for `--write-timeout` seconds, which also lets the senders it held back go on.
//! - **Never blocking.** Broadcasting queues bytes; the event loop writes them as each socket can take
//!   them, so one stuck client never holds up the loop.
//!
//! The first stdout line is `listening on <addr>`; `SIGINT`/`SIGTERM` shut down gracefully (exit 0);
//! bad flags print usage and exit 2.

mod common;

use common::cli::PeerArgs;

use std::time::Duration;

use clap::Parser;
use socketserver::framing::{Decoder, Encoder, FrameBuf, FrameError, Lines};
use socketserver::reactor::{Conn, MessageHandler};
use socketserver::{Reactor, Server, Tcp};

#[derive(Parser, Debug)]
#[command(
    about = "Line-based chat server: each line goes to every other client",
    mut_arg("max_per_peer", |a| a.default_value("8"))
)]
struct Args {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// The longest line a client may send, in bytes.
    #[arg(long, default_value_t = 1024)]
    max_line: usize,
    /// Bound on the output queued for one client, in bytes; senders are paced to keep readers
    /// under it.
    #[arg(long, default_value_t = 64 * 1024)]
    write_buffer: usize,
    #[command(flatten)]
    peers: PeerArgs,
    /// Seconds a client with messages waiting may take none of them before it is disconnected.
    #[arg(long, default_value_t = 10)]
    write_timeout: u64,
    /// Seconds a client may stay silent (neither sending nor receiving) before it is disconnected.
    #[arg(long, default_value_t = 600)]
    idle_timeout: u64,
    /// Milliseconds a client's relayed lines may wait for more to be written with them (fewer,
    /// larger writes in a busy room); 0 writes each at once.
    #[arg(long, default_value_t = 0)]
    coalesce_ms: u64,
    /// Event loops (threads) serving the clients; default: one per CPU.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    loops: Option<u16>,
}

/// Room for the `<sender address>: ` prefix in relayed lines (a bracketed IPv6 address with scope and
/// port is under 64 bytes).
const PREFIX_ROOM: usize = 64;

/// What the chat cuts from a client's bytes.
#[derive(Debug)]
enum Input {
    /// A line, without its terminator.
    Line(Vec<u8>),
    /// A line over `--max-line`: its length, or when its end has not arrived yet, a lower bound.
    TooLong { len: usize, at_least: bool },
}

/// Lines, with an over-long one handed to the handler (so the sender can be told, and told its
/// length) instead of failing the stream.
///
/// `Lines` alone reports a lower bound when it fails — every byte buffered, which for a long line
/// followed by more lines is neither the line's length nor a bound on it (66,175 bytes for a
/// 2,000-byte line). Here the buffer is searched for the line's end once, on that one failure.
struct ChatLines {
    max_line: usize,
    /// Cuts lines of at most `--max-line` bytes.
    decoder: Lines,
    /// Frames relayed lines, which carry the sender's address in front.
    encoder: Lines,
}

impl ChatLines {
    fn new(max_line: usize) -> ChatLines {
        ChatLines {
            max_line,
            decoder: Lines::with_max_line_len(max_line),
            encoder: Lines::with_max_line_len(max_line + PREFIX_ROOM),
        }
    }

    /// `decoded`, with the over-long line at the front of `buf` turned into [`Input::TooLong`] and
    /// dropped from the buffer.
    fn cut(
        &mut self,
        buf: &mut FrameBuf,
        decoded: Result<Option<Vec<u8>>, FrameError>,
    ) -> Result<Option<Input>, FrameError> {
        match decoded {
            Ok(line) => Ok(line.map(Input::Line)),
            Err(FrameError::TooLarge { .. }) => {
                let bytes = buf.as_slice();
                let input = match bytes.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        let len = end - usize::from(end > 0 && bytes[end - 1] == b'\r');
                        buf.consume(end + 1);
                        Input::TooLong {
                            len,
                            at_least: false,
                        }
                    }
                    None => {
                        let len = bytes.len();
                        buf.clear();
                        Input::TooLong {
                            len,
                            at_least: true,
                        }
                    }
                };
                // The decoder's scan position referred to the bytes just dropped.
                self.decoder = Lines::with_max_line_len(self.max_line);
                Ok(Some(input))
            }
            Err(e) => Err(e),
        }
    }
}

impl Decoder for ChatLines {
    type Frame = Input;

    fn decode(&mut self, buf: &mut FrameBuf) -> Result<Option<Input>, FrameError> {
        let decoded = self.decoder.decode(buf);
        self.cut(buf, decoded)
    }

    fn decode_eof(&mut self, buf: &mut FrameBuf) -> Result<Option<Input>, FrameError> {
        let decoded = self.decoder.decode_eof(buf);
        self.cut(buf, decoded)
    }
}

impl Encoder<[u8]> for ChatLines {
    fn encode(&mut self, item: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.encoder.encode(item, out)
    }
}

struct Chat {
    max_line: usize,
}

impl Chat {
    /// Queues `line` for every client but the current one; disconnects those that cannot take it.
    fn relay(conn: &mut Conn<'_, ChatLines>, line: &[u8]) -> anyhow::Result<()> {
        let delivery = conn.broadcast_except(conn.id(), line)?;
        // Senders are paced, so a queue is full only when many clients burst at one reader at once:
        // it misses this line rather than the room stalling; a reader that has stopped reading is
        // disconnected by the write timeout.
        for behind in delivery.full {
            log::warn!(
                "{} ({behind}) is too far behind: a line for it was dropped",
                conn.peer_of(behind)
                    .map_or_else(String::new, |a| a.to_string())
            );
        }
        Ok(())
    }
}

impl MessageHandler for Chat {
    type Codec = ChatLines;

    fn codec(&self) -> ChatLines {
        ChatLines::new(self.max_line)
    }

    fn on_open(&self, conn: &mut Conn<'_, ChatLines>) -> anyhow::Result<()> {
        let others = conn.connections() - 1;
        let welcome = format!("* welcome {}, {others} other(s) here", conn.peer());
        conn.send(welcome.as_bytes())?;
        let joined = format!("* {} joined", conn.peer());
        Self::relay(conn, joined.as_bytes())
    }

    fn on_message(&self, conn: &mut Conn<'_, ChatLines>, input: Input) -> anyhow::Result<()> {
        let mut line = match input {
            Input::Line(line) => line,
            Input::TooLong { len, at_least } => {
                let len = if at_least {
                    format!("at least {len}")
                } else {
                    len.to_string()
                };
                log::info!(
                    "{}: line too long ({len} bytes), disconnecting",
                    conn.peer()
                );
                let max = self.max_line;
                let notice = format!("* line too long ({len} bytes, max {max} bytes): goodbye");
                conn.send(notice.as_bytes())?;
                conn.close();
                return Ok(());
            }
        };
        // A lone `\r` at the end cannot be framed back as a line of its own.
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut relayed = format!("{}: ", conn.peer()).into_bytes();
        relayed.extend_from_slice(&line);
        Self::relay(conn, &relayed)
    }

    fn on_close(&self, conn: &mut Conn<'_, ChatLines>) {
        let left = format!("* {} left", conn.peer());
        if let Err(e) = Self::relay(conn, left.as_bytes()) {
            log::warn!("announcing that {} left: {e}", conn.peer());
        }
    }
}

fn main() -> anyhow::Result<()> {
    common::init_logging();
    let args: Args = common::parse_args();
    let mut reactor = Reactor::new()
        .write_buffer_limit(args.write_buffer)
        .coalesce(Duration::from_millis(args.coalesce_ms));
    if let Some(loops) = args.loops {
        reactor = reactor.threads(usize::from(loops));
    }
    let chat = Chat {
        max_line: args.max_line,
    };
    let server = Server::new(reactor, Tcp::bind(args.addr.as_str())?, chat)?
        .read_timeout(Duration::from_secs(args.idle_timeout))
        .write_timeout(Duration::from_secs(args.write_timeout))
        .max_connections_per_peer(args.peers.limit())
        .shutdown_timeout(Duration::from_secs(5));
    common::serve(server)
}
