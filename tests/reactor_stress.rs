//! Many clients at once, each sending differently, against the Reactor's echo on two loops: every
//! byte comes back, in order, and a half-closed connection gets its whole echo and then its end of
//! stream. The paths it drives are those where an edge-triggered loop can lose input it was told of
//! only once: reading paused at the output bound and resumed, bursts cut short, an end of stream that
//! came with the last bytes, lines split across reads (the scratch path) and chunks handed over whole
//! (the in-place path). A lost wake-up fails a client's read after [`TIMEOUT`], not the whole run.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use socketserver::framing::Lines;
use socketserver::reactor::{Conn, MessageHandler};
use socketserver::{Reactor, Server, Tcp};
use util::{PassThrough, Serving, TIMEOUT, spawn_bounded};

/// How many clients run at once, and the most one sends (past an eighth of it).
const CLIENTS: u64 = 24;
const MOST: usize = 1 << 20;

/// A small, seeded generator (xorshift64*): each client's behaviour is fixed by its number, so a
/// failure names a case that can be run again.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number in `1..=most`, small ones as likely as large ones in scale.
    fn size(&mut self, most: usize) -> usize {
        let bits = 1 + self.next() % (usize::BITS - most.leading_zeros()) as u64;
        (self.next() % (1 << bits)) as usize % most + 1
    }
}

struct LineEcho;

impl MessageHandler for LineEcho {
    type Codec = Lines;
    fn codec(&self) -> Lines {
        Lines::with_max_line_len(1 << 16)
    }
    fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
        conn.send(&line)?;
        Ok(())
    }
}

/// What client `n` sends: its bytes (lines of random length when `lines`), and whether it shuts its
/// writing side once they are out.
fn script(n: u64, lines: bool) -> (Vec<u8>, bool) {
    let mut rng = Rng::new(n);
    let total = MOST / 8 + rng.size(MOST);
    let mut bytes = Vec::with_capacity(total + 1);
    while bytes.len() < total {
        if lines {
            let len = rng.size(4000) - 1;
            let at = n as usize + bytes.len();
            bytes.extend((0..len).map(|i| b'a' + ((at + i) % 26) as u8));
            bytes.push(b'\n');
        } else {
            bytes.push(((n as usize * 7 + bytes.len()) % 251) as u8);
        }
    }
    (bytes, rng.next().is_multiple_of(2))
}

/// Client `n`: a writer thread sends its script in chunks of random size, while this thread reads
/// the echo in reads of random size (a slow reader: the server's output for it reaches the bound
/// and its reading pauses). Returns what came back before the end of stream or, for a client that
/// does not half-close, once as many bytes as it sent came back.
fn client(addr: std::net::SocketAddr, n: u64, lines: bool) -> (Vec<u8>, Vec<u8>) {
    let (sent, half_close) = script(n, lines);
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut rng = Rng::new(n ^ 0xABCD);
    let to_send = sent.clone();
    let writing = spawn_bounded(move || {
        let mut rng = Rng::new(n ^ 0x1234);
        let mut at = 0;
        while at < to_send.len() {
            let end = (at + rng.size(100_000)).min(to_send.len());
            writer.write_all(&to_send[at..end]).unwrap();
            at = end;
        }
        if half_close {
            writer.shutdown(Shutdown::Write).unwrap();
        }
    });
    let mut reader = stream;
    let mut back = Vec::with_capacity(sent.len());
    let mut buf = vec![0; 1 << 16];
    loop {
        if !half_close && back.len() >= sent.len() {
            break;
        }
        let want = rng.size(buf.len());
        match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(got) => back.extend_from_slice(&buf[..got]),
            Err(e) => panic!(
                "client {n} (lines: {lines}, half-close: {half_close}): {e} after {} of {} bytes",
                back.len(),
                sent.len()
            ),
        }
    }
    writing.wait(TIMEOUT);
    (sent, back)
}

fn run<H: MessageHandler>(handler: H, lines: bool) {
    let reactor = Reactor::new().threads(2).write_buffer_limit(16 * 1024);
    let server = Server::new(reactor, Tcp::bind("127.0.0.1:0").unwrap(), handler).unwrap();
    let serving = Serving::start(server);
    let addr = serving.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| spawn_bounded(move || client(addr, n, lines)))
        .collect();
    for (n, client) in clients.into_iter().enumerate() {
        let (sent, back) = client.wait(2 * TIMEOUT);
        assert!(
            back == sent,
            "client {n}: {} bytes back of {} sent, first difference at {:?}",
            back.len(),
            sent.len(),
            sent.iter().zip(&back).position(|(a, b)| a != b)
        );
    }
    let summary = serving.finish();
    assert_eq!(summary.cut, 0, "{summary:?}");
}

#[test]
fn every_byte_comes_back_whatever_the_clients_do() {
    run(PassThrough, false);
}

#[test]
fn every_line_comes_back_whatever_the_clients_do() {
    run(LineEcho, true);
}
