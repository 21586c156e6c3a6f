//! `max_connections_per_peer` (`echo --max-per-peer`): idle connections from one address can no
//! longer take every thread, child or worker from everyone else. Each strategy runs in the echo
//! example's own process.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use util::{ServerProc, TIMEOUT, connect, connect_from, eventually};

const LIMIT: usize = 16;
const IDLE: usize = 40;

/// Whether the server closed `conn` (EOF or a reset), without waiting.
fn closed(conn: &TcpStream) -> bool {
    conn.set_nonblocking(true).unwrap();
    let mut buf = [0; 1];
    let closed = match (&mut &*conn).read(&mut buf) {
        Ok(0) => true,
        Ok(_) => panic!("an idle connection was sent data"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    conn.set_nonblocking(false).unwrap();
    closed
}

fn one_address_cannot_lock_out_another(concurrency: &str, extra: &[&str]) {
    let limit = LIMIT.to_string();
    let mut args = vec!["--concurrency", concurrency, "--max-per-peer", &limit];
    args.extend_from_slice(extra);
    let mut server = ServerProc::example("echo", &args);
    let addr = server.socket_addr();
    let mut idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(addr)).collect();

    // Another address is served at once. Connections are accepted in order, so by the time it is,
    // every idle one has been admitted or refused.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr);
    other.set_read_timeout(Some(TIMEOUT)).unwrap();
    other.write_all(b"hello").unwrap();
    let mut reply = [0; 5];
    other
        .read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{concurrency}: the second address was locked out: {e}"));
    assert_eq!(&reply, b"hello");

    // Exactly the connections past the limit were closed at once; the first ones are being served.
    assert!(
        eventually(TIMEOUT, || idle.iter().filter(|c| closed(c)).count()
            >= IDLE - LIMIT),
        "{concurrency}: the connections past the limit were not closed"
    );
    let open: Vec<usize> = (0..IDLE).filter(|&i| !closed(&idle[i])).collect();
    assert_eq!(open.len(), LIMIT, "{concurrency}: open {open:?}");

    // When one closes, the address has room again.
    idle.remove(open[0]);
    assert!(
        eventually(TIMEOUT, || {
            let mut again = connect(addr);
            again
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            again.write_all(b"again").is_ok() && {
                let mut buf = [0; 5];
                again.read_exact(&mut buf).is_ok() && &buf == b"again"
            }
        }),
        "{concurrency}: no room after one connection closed"
    );
    drop((idle, other));
    assert_eq!(server.terminate().code(), Some(0), "{concurrency}");
}

#[test]
fn threading() {
    one_address_cannot_lock_out_another("threading", &[]);
}

#[test]
fn forking() {
    one_address_cannot_lock_out_another("forking", &[]);
}

#[test]
fn pool() {
    // More workers than the limit: the limit is what keeps them from being taken by one address.
    one_address_cannot_lock_out_another("pool", &["--workers", "32"]);
}

#[test]
fn reactor() {
    one_address_cannot_lock_out_another("reactor", &[]);
}
