//! A drain's close of an idle keep-alive connection lingers, under every strategy (the echo example,
//! in its own process, drained by `SIGTERM`):
//!
//! - a client that sends its next request just as the drain ends its connection — after the drain's
//!   end of stream has left the server — sees end of stream, never a reset. Closing a socket with
//!   that request unread would make the kernel answer it with a reset; the client could not tell a
//!   lost request from a server that crashed, and would not know it may send it again;
//! - a client that neither sends nor closes holds the drain only for the lingering bound (2 s), not
//!   until the drain deadline (60 s here).
//!
//! The request is sent after the client has read the end of stream, so the server has certainly
//! begun closing; then the test waits until the client's kernel has no byte of it left unacknowledged
//! (acknowledged by a lingering server, or answered with a reset) and looks at the connection in
//! `/proc/net/tcp`: still there, half closed, or gone — reset. (A read cannot tell: after end of
//! stream it returns end of stream, reset or not.)

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use util::{ServerProc, TIMEOUT, connect, eventually};

/// `/proc/net/tcp`'s spelling of a loopback IPv4 address.
fn hex(addr: SocketAddr) -> Option<String> {
    match addr {
        SocketAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        )),
        SocketAddr::V6(_) => None,
    }
}

/// The client end of `client` in `/proc/net/tcp`: its state (`08` is `CLOSE_WAIT`: the peer's end of
/// stream came, and this end is still open) and how many bytes it has sent unacknowledged; `None`
/// once the connection is gone from the table — reset.
fn client_end(client: &TcpStream) -> Option<(u8, usize)> {
    let local = hex(client.local_addr().ok()?)?;
    let remote = hex(client.peer_addr().ok()?)?;
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
        let unacked = usize::from_str_radix(fields.get(4)?.split(':').next()?, 16).ok()?;
        Some((state, unacked))
    })
}

const CLOSE_WAIT: u8 = 0x08;

/// A connection that has been served once, and is now idle between requests.
fn served_and_idle(server: &ServerProc) -> TcpStream {
    let mut conn = connect(&server.addr);
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.write_all(b"first").unwrap();
    let mut back = [0; 5];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"first");
    conn
}

/// Reads once; the server's end of stream is `Ok(0)`.
fn read_once(conn: &mut TcpStream) -> std::io::Result<usize> {
    let mut byte = [0; 64];
    conn.read(&mut byte)
}

fn a_request_crossing_the_drain_meets_end_of_stream(concurrency: &str) {
    let mut server = ServerProc::example(
        "echo",
        &[
            "--concurrency",
            concurrency,
            "--shutdown-timeout-ms",
            "60000",
        ],
    );
    let mut late = served_and_idle(&server);
    // Sequential serves one connection at a time: the silent client is for the others.
    let silent = (concurrency != "sequential").then(|| served_and_idle(&server));

    let signalled = Instant::now();
    kill(Pid::from_raw(server.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(
        read_once(&mut late).unwrap(),
        0,
        "{concurrency}: no end of stream"
    );
    // The next request, sent after the drain's end of stream: the server takes it (acknowledges it,
    // and drops it), where a closed socket would answer it with a reset.
    late.write_all(b"a request nobody will answer").unwrap();
    assert!(
        eventually(TIMEOUT, || client_end(&late)
            .is_none_or(|(_, unacked)| unacked == 0)),
        "{concurrency}: the request was neither acknowledged nor reset"
    );
    assert_eq!(
        client_end(&late).map(|(state, _)| state),
        Some(CLOSE_WAIT),
        "{concurrency}: the connection was reset: the request met a closed socket"
    );
    assert_eq!(read_once(&mut late).unwrap(), 0, "{concurrency}");
    late.write_all(b"and another")
        .unwrap_or_else(|e| panic!("{concurrency}: {e}: the connection was reset"));
    drop(late); // a client closes on end of stream

    // The silent client saw end of stream too, and holds the drain for the lingering bound only.
    if let Some(mut silent) = silent {
        assert_eq!(read_once(&mut silent).unwrap(), 0, "{concurrency}");
        let status = server.wait_exit(TIMEOUT).unwrap_or_else(|| {
            panic!("{concurrency}: a client that does not close held the drain")
        });
        assert_eq!(status.code(), Some(0), "{concurrency}");
        drop(silent);
    } else {
        let status = server.wait_exit(TIMEOUT).expect("the server did not exit");
        assert_eq!(status.code(), Some(0), "{concurrency}");
    }
    println!(
        "{concurrency}: the server exited {:?} after SIGTERM",
        signalled.elapsed()
    );
}

#[test]
fn threading() {
    a_request_crossing_the_drain_meets_end_of_stream("threading");
}

#[test]
fn pool() {
    a_request_crossing_the_drain_meets_end_of_stream("pool");
}

#[test]
fn sequential() {
    a_request_crossing_the_drain_meets_end_of_stream("sequential");
}

#[test]
fn forking() {
    a_request_crossing_the_drain_meets_end_of_stream("forking");
}

#[test]
fn prefork() {
    a_request_crossing_the_drain_meets_end_of_stream("prefork");
}

#[test]
fn reactor() {
    a_request_crossing_the_drain_meets_end_of_stream("reactor");
}
