//! Descriptor leaks, counted exactly. A count of this process's descriptors means something only while
//! nothing else in the process opens any, so these tests are in a binary of their own and take a lock:
//! one runs at a time, and no slack is allowed.

mod util;

use std::io::BufRead;
use std::io::Write;
use std::net::TcpListener;
use std::sync::Mutex;

use socketserver::{Concurrency, Server, StreamRequest, Tcp};
use util::{Serving, TIMEOUT, eventually, fd_count, round_trip};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding the lock poisons it; the others still run alone.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn me() -> i32 {
    std::process::id() as i32
}

/// Echoes lines until the client closes.
fn line_echo(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut line = String::new();
    while req.rfile.read_line(&mut line)? > 0 {
        req.wfile.write_all(line.as_bytes())?;
        line.clear();
    }
    Ok(())
}

#[test]
fn bind_failure_is_clear_and_leaks_nothing() {
    let _serial = serial();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let before = fd_count(me());
    for _ in 0..50 {
        let err = Tcp::builder().reuse_addr(false).bind(addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let text = err.to_string();
        assert!(
            text.contains("bind(2)") && text.contains(&addr.to_string()),
            "{text}"
        );
    }
    // Nothing else runs in this process: a single leaked socket shows.
    assert_eq!(fd_count(me()), before, "failed binds leaked descriptors");
}

fn many_connections_leak_nothing<C>(strategy: C)
where
    C: Concurrency<Tcp, fn(&mut StreamRequest) -> anyhow::Result<()>>,
{
    let _serial = serial();
    let server = Server::new(
        strategy,
        Tcp::bind("127.0.0.1:0").unwrap(),
        line_echo as fn(&mut StreamRequest) -> anyhow::Result<()>,
    )
    .unwrap();
    let server = Serving::start(server);
    assert_eq!(round_trip(server.addr, b"warm up\n"), b"warm up\n");
    let before = fd_count(me());
    for i in 0..1000 {
        let msg = format!("{i}\n");
        assert_eq!(round_trip(server.addr, msg.as_bytes()), msg.as_bytes());
    }
    // The server closes each connection after its handler returns, which may be just after the
    // client saw EOF: the count settles back to exactly where it was.
    assert!(
        eventually(TIMEOUT, || fd_count(me()) == before),
        "descriptors went from {before} to {}",
        fd_count(me())
    );
    assert_eq!(server.finish().requests, 1001);
}

#[test]
fn thousand_connections_sequential() {
    many_connections_leak_nothing(socketserver::Sequential::new());
}

#[test]
fn thousand_connections_threading() {
    many_connections_leak_nothing(socketserver::Threading::new());
}
