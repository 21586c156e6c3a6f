//! A drain does not wait on idle connections (Go's `Shutdown`): with 100 idle keep-alive clients and
//! one request in flight, `SIGTERM` closes the idle connections at once, lets the request in flight
//! finish whole, and the server exits as soon as it has — not at the drain deadline (60 s here).
//! Under every strategy that serves connections for long: Threading, Pool, Forking, PreFork and
//! Reactor, each in the echo example's own process. The timings are printed, not asserted (run with
//! `--nocapture` to see them).

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use util::{Bounded, ServerProc, TIMEOUT, connect, spawn_bounded};

const IDLE: usize = 100;
/// More than the loopback socket buffers on both sides hold: the echo is still being written when
/// the signal comes, so the request is in flight.
const IN_FLIGHT_BYTES: usize = 32 << 20;

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// A client that made one request and keeps its connection open.
fn idle_client(server: &ServerProc) -> TcpStream {
    let mut conn = connect(server.socket_addr());
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.write_all(b"hi").unwrap();
    let mut back = [0; 2];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hi");
    conn
}

/// A request in flight: the client sends [`IN_FLIGHT_BYTES`] from a thread and reads nothing yet.
fn request_in_flight(server: &ServerProc) -> (TcpStream, Bounded<()>) {
    let conn = connect(server.socket_addr());
    let mut writer = conn.try_clone().unwrap();
    let sender = spawn_bounded(move || {
        let data: Vec<u8> = (0..IN_FLIGHT_BYTES).map(pattern).collect();
        writer
            .write_all(&data)
            .expect("the request in flight was cut");
    });
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(conn.peek(&mut [0]).expect("an echo"), 1);
    (conn, sender)
}

fn idle_connections_close_at_once(concurrency: &str, sizing: &[&str]) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = std::process::Command::new(util::example_bin("echo"));
    cmd.args(["--addr", "127.0.0.1:0", "--concurrency", concurrency])
        .args(["--shutdown-timeout-ms", "60000"])
        .args(sizing)
        .env("RUST_LOG", "info")
        .stderr(log.reopen().unwrap());
    let mut server = ServerProc::start(cmd);
    let mut idle: Vec<TcpStream> = (0..IDLE).map(|_| idle_client(&server)).collect();
    let (mut slow, sender) = request_in_flight(&server);

    let signalled = Instant::now();
    kill(Pid::from_raw(server.pid()), Signal::SIGTERM).unwrap();
    // Every idle connection ends while the request in flight is still going (nothing of its echo
    // has been read yet, so its handler cannot have finished).
    for conn in &mut idle {
        let mut byte = [0; 1];
        let n = conn
            .read(&mut byte)
            .unwrap_or_else(|e| panic!("{concurrency}: an idle connection was not closed: {e}"));
        assert_eq!(n, 0, "{concurrency}: an idle connection was sent data");
    }
    let idle_closed = signalled.elapsed();
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "{concurrency}: the server did not wait for the request in flight"
    );

    // The request in flight finishes, whole.
    let mut echo = vec![0; IN_FLIGHT_BYTES];
    slow.read_exact(&mut echo)
        .unwrap_or_else(|e| panic!("{concurrency}: the echo broke off: {e}"));
    assert!(
        (0..IN_FLIGHT_BYTES).all(|i| echo[i] == pattern(i)),
        "{concurrency}: the echo differs"
    );
    sender.wait(TIMEOUT);
    slow.shutdown(Shutdown::Write).unwrap();
    let finished = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(rest.is_empty());

    // The server exits once it has: far sooner than the 60 s deadline (TIMEOUT is 20 s).
    let status = server
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("{concurrency}: the server waited for the drain deadline"));
    let exited = finished.elapsed();
    assert_eq!(status.code(), Some(0), "{concurrency}");
    let log = std::fs::read_to_string(log.path()).unwrap();
    let want = format!(
        "in_flight_at_shutdown: {n}, drained: {n}, cut: 0",
        n = IDLE + 1
    );
    assert!(log.contains(&want), "{concurrency}: {log}");
    println!(
        "{concurrency}: {IDLE} idle connections closed {idle_closed:?} after SIGTERM; \
         the server exited {exited:?} after the request in flight finished"
    );
}

#[test]
fn threading() {
    idle_connections_close_at_once("threading", &[]);
}

#[test]
fn pool() {
    idle_connections_close_at_once("pool", &["--workers", "110"]);
}

#[test]
fn forking() {
    idle_connections_close_at_once("forking", &["--max-children", "110"]);
}

#[test]
fn prefork() {
    idle_connections_close_at_once("prefork", &["--workers", "110"]);
}

#[test]
fn reactor() {
    idle_connections_close_at_once("reactor", &[]);
}
