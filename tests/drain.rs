//! Drains that let requests finish, for every blocking strategy, in the echo example's own process:
//!
//! - a shutdown (`SIGTERM`) or reload (`SIGHUP`, `PreFork`) signal never interrupts a request in
//!   flight — the kernel does not restart a read or write on a socket with a timeout after a signal,
//!   even under `SA_RESTART`, so the crate retries it rather than hand the handler `EINTR`;
//! - requests finish up to the drain deadline, and the summary counts them as drained;
//! - requests still running at the deadline are cut (and counted as cut), and the server then exits.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use util::{Bounded, ServerProc, TIMEOUT, connect, eventually, spawn_bounded};

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

/// How much a request in flight sends: more than the loopback socket buffers on both sides hold, so
/// the server is still writing its echo when a signal comes (a connection whose echo is all sent is
/// between messages, and a drain closes it at once — `tests/idle_drain.rs`).
const IN_FLIGHT_BYTES: usize = 32 << 20;

/// The byte at `i` of a request in flight: a pattern, so a lost or repeated chunk shows.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// A connection whose request is in its handler: the client sends [`IN_FLIGHT_BYTES`] from a thread
/// and reads nothing yet, so the handler is blocked writing the echo.
struct InFlight {
    client: TcpStream,
    sender: Bounded<()>,
}

fn request_in_flight(server: &ServerProc) -> InFlight {
    let client = connect(server.socket_addr());
    let mut writer = client.try_clone().unwrap();
    let sender = spawn_bounded(move || {
        let data: Vec<u8> = (0..IN_FLIGHT_BYTES).map(pattern).collect();
        // Fails only when the server cuts the connection (the deadline test).
        let _ = writer.write_all(&data);
    });
    // The echo has begun: the handler has read and is writing.
    let mut first = [0; 1];
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(client.peek(&mut first).expect("an echo"), 1);
    InFlight { client, sender }
}

impl InFlight {
    /// Reads the whole echo back, checks it, and hangs up; the request then ends well.
    fn finish(mut self, what: &str) {
        let mut echo = vec![0; IN_FLIGHT_BYTES];
        self.client
            .read_exact(&mut echo)
            .unwrap_or_else(|e| panic!("{what}: the echo broke off: {e}"));
        if let Some(i) = (0..IN_FLIGHT_BYTES).find(|&i| echo[i] != pattern(i)) {
            panic!("{what}: the echo differs at byte {i}");
        }
        self.sender.wait(TIMEOUT);
        let _ = self.client.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        let _ = self.client.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{what}: more than was sent came back");
    }
}

fn read_some(client: &mut TcpStream) -> Vec<u8> {
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0; 64];
    let n = client.read(&mut buf).expect("an echo");
    buf[..n].to_vec()
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
        let request = request_in_flight(&server);
        signal(&server, Signal::SIGTERM);
        // Before the fix, the signal surfaced as EINTR in the handler's write and the connection
        // closed at once: the echo would break off.
        request.finish(concurrency);
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
        let mut request = request_in_flight(&server);
        signal(&server, Signal::SIGTERM);
        // Cut at the deadline: the server exits although the client never read its echo.
        let status = server
            .wait_exit(TIMEOUT)
            .unwrap_or_else(|| panic!("{concurrency} missed its drain deadline"));
        let mut rest = Vec::new();
        let _ = request.client.read_to_end(&mut rest); // what was echoed, then EOF or a reset
        assert!(rest.len() < IN_FLIGHT_BYTES, "{concurrency}: not cut");
        request.sender.wait(TIMEOUT);
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
    let request = request_in_flight(&server);
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
    request.finish("prefork reload");
    drop(fresh);
    assert_eq!(server.terminate().code(), Some(0));
    assert!(!log_of(&log).contains("Interrupted"), "{}", log_of(&log));
}
