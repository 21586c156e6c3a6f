//! Drains that let requests finish, for every blocking strategy, in the echo example's own process:
//!
//! - a shutdown (`SIGTERM`) or reload (`SIGHUP`, `PreFork`) signal never interrupts a request in
//!   flight — the kernel does not restart a read or write on a socket with a timeout after a signal,
//!   even under `SA_RESTART`, so the crate retries it rather than hand the handler `EINTR`;
//! - requests finish up to the drain deadline, and the summary counts them as drained;
//! - requests still running at the deadline are cut (and counted as cut), and the server then exits.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use util::{ServerProc, TIMEOUT, connect, eventually, holds_for};

const STRATEGIES: [&str; 5] = ["sequential", "threading", "forking", "pool", "prefork"];

/// The echo example under `concurrency` with the given drain deadline, logging to a file.
fn echo(concurrency: &str, shutdown_ms: u64) -> (ServerProc, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = std::process::Command::new(util::example_bin("echo"));
    cmd.args(["--addr", "127.0.0.1:0", "--concurrency", concurrency])
        .args(["--shutdown-timeout-ms", &shutdown_ms.to_string()])
        .env("RUST_LOG", "info")
        .stderr(log.reopen().unwrap());
    if concurrency == "prefork" {
        cmd.args(["--workers", "1"]);
    }
    (ServerProc::start(cmd), log)
}

/// A connection whose request is in its handler: one chunk echoed, the handler waiting for more.
fn request_in_flight(server: &ServerProc) -> TcpStream {
    let mut client = connect(server.socket_addr());
    client.write_all(b"one").unwrap();
    assert_eq!(read_some(&mut client), b"one");
    client
}

fn read_some(client: &mut TcpStream) -> Vec<u8> {
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0; 64];
    let n = client.read(&mut buf).expect("an echo");
    buf[..n].to_vec()
}

/// Whether the server has not closed (or reset) the connection: a read that finds nothing to read.
fn still_open(client: &mut TcpStream) -> bool {
    client
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0; 1];
    matches!(client.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn signal(server: &ServerProc, sig: Signal) {
    kill(Pid::from_raw(server.pid()), sig).unwrap();
}

fn log_of(log: &tempfile::NamedTempFile) -> String {
    std::fs::read_to_string(log.path()).unwrap()
}

#[test]
fn a_shutdown_signal_lets_the_request_in_flight_finish() {
    for concurrency in STRATEGIES {
        let (mut server, log) = echo(concurrency, 20_000);
        let mut client = request_in_flight(&server);
        signal(&server, Signal::SIGTERM);
        // Before the fix, the signal surfaced as EINTR in the handler's read and the connection
        // closed at once.
        holds_for(
            Duration::from_millis(300),
            &format!("{concurrency}: the signal cut the request"),
            || still_open(&mut client),
        );
        client.write_all(b"two").unwrap();
        assert_eq!(read_some(&mut client), b"two", "{concurrency}");
        client.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        let status = server
            .wait_exit(TIMEOUT)
            .expect("the server exits once drained");
        assert_eq!(status.code(), Some(0), "{concurrency}");
        let log = log_of(&log);
        assert!(
            log.contains("in_flight_at_shutdown: 1, drained: 1, cut: 0"),
            "{concurrency}: {log}"
        );
        assert!(!log.contains("Interrupted"), "{concurrency}: {log}");
    }
}

#[test]
fn requests_still_running_at_the_deadline_are_cut() {
    for concurrency in STRATEGIES {
        let (mut server, log) = echo(concurrency, 300);
        let mut client = request_in_flight(&server);
        signal(&server, Signal::SIGTERM);
        // Cut at the deadline: the connection ends although the client never finished.
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest); // EOF, or a reset
        let status = server
            .wait_exit(TIMEOUT)
            .unwrap_or_else(|| panic!("{concurrency} missed its drain deadline"));
        assert_eq!(status.code(), Some(0), "{concurrency}");
        let log = log_of(&log);
        assert!(
            log.contains("in_flight_at_shutdown: 1, drained: 0, cut: 1"),
            "{concurrency}: {log}"
        );
    }
}

#[test]
fn a_prefork_reload_lets_the_request_in_flight_finish() {
    let (mut server, log) = echo("prefork", 20_000);
    let mut client = request_in_flight(&server);
    signal(&server, Signal::SIGHUP);
    // The replacement worker serves new connections while the old one finishes its request.
    assert!(
        eventually(TIMEOUT, || log_of(&log)
            .contains("reload: retiring 1 worker(s)")),
        "no reload: {}",
        log_of(&log)
    );
    let mut fresh = connect(server.socket_addr());
    fresh.write_all(b"fresh").unwrap();
    assert_eq!(read_some(&mut fresh), b"fresh");
    assert!(
        still_open(&mut client),
        "the reload cut the request in flight"
    );
    client.write_all(b"two").unwrap();
    assert_eq!(read_some(&mut client), b"two");
    drop((client, fresh));
    assert_eq!(server.terminate().code(), Some(0));
    assert!(!log_of(&log).contains("Interrupted"), "{}", log_of(&log));
}
