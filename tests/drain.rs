//! Drains that let requests finish, for every blocking strategy, in the `http_hello` example's own
//! process:
//!
//! - a shutdown (`SIGTERM`) or reload (`SIGHUP`, `PreFork`) signal never interrupts a request in
//!   flight — the kernel does not restart a read or write on a socket with a timeout after a signal,
//!   even under `SA_RESTART`, so the crate retries it rather than hand the handler `EINTR`;
//! - requests finish up to the drain deadline, and the summary counts them as drained;
//! - requests still running at the deadline are cut (and counted as cut), and the server then exits.
//!
//! A request in flight is one whose body has not all arrived: its handler is inside the request, not
//! between two (`tests/idle_drain.rs` has those).

mod util;

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use util::{
    ServerProc, TIMEOUT, eventually, http_keep_alive_client, read_http_response, unread_by_server,
};

const STRATEGIES: [&str; 5] = ["sequential", "threading", "forking", "pool", "prefork"];

/// `http_hello` under `concurrency` with the given drain deadline, logging to a file.
fn http_hello(concurrency: &str, shutdown_ms: u64) -> (ServerProc, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = std::process::Command::new(util::example_bin("http_hello"));
    cmd.args(["--concurrency", concurrency])
        .args(["--shutdown-timeout-ms", &shutdown_ms.to_string()])
        .env("RUST_LOG", "info")
        .stderr(log.reopen().unwrap());
    if concurrency == "prefork" {
        cmd.args(["--workers", "1"]);
    }
    (ServerProc::start(cmd), log)
}

/// A keep-alive connection whose second request is in its handler: one request answered (so the
/// connection is surely accepted and served), then a `GET` with half its body sent.
struct InFlight {
    conn: BufReader<TcpStream>,
}

fn request_in_flight(server: &ServerProc) -> InFlight {
    let mut conn = http_keep_alive_client(server);
    conn.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nfirst")
        .unwrap();
    // The handler has read it, and is inside the request, waiting for the rest of the body.
    assert!(
        eventually(TIMEOUT, || unread_by_server(conn.get_ref()) == Some(0)),
        "the server never read the request"
    );
    InFlight { conn }
}

impl InFlight {
    /// Sends the rest of the body; the response comes whole, then the connection closes (the
    /// server is draining: no next request on it).
    fn finish(mut self, what: &str) {
        self.conn.get_mut().write_all(b"half!").unwrap();
        let (status, body) = read_http_response(&mut self.conn);
        assert_eq!(
            (status.as_str(), body.as_slice()),
            ("HTTP/1.1 200 OK", &b"hello\n"[..]),
            "{what}"
        );
        let mut rest = Vec::new();
        let _ = self.conn.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{what}: more than one response");
    }
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
        let (mut server, log) = http_hello(concurrency, 20_000);
        let request = request_in_flight(&server);
        signal(&server, Signal::SIGTERM);
        // The drain has begun, with the request in it.
        assert!(
            eventually(TIMEOUT, || log_of(&log).contains("shutting down: waiting")),
            "{concurrency}: no drain: {}",
            log_of(&log)
        );
        // Before the fix, the signal surfaced as EINTR in the handler's read and the connection
        // closed at once, the response never sent.
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
        let (mut server, log) = http_hello(concurrency, 300);
        let mut request = request_in_flight(&server);
        signal(&server, Signal::SIGTERM);
        // Cut at the deadline: the server exits although the body never came.
        let status = server
            .wait_exit(TIMEOUT)
            .unwrap_or_else(|| panic!("{concurrency} missed its drain deadline"));
        assert_eq!(status.code(), Some(0), "{concurrency}");
        let mut rest = Vec::new();
        let _ = request.conn.read_to_end(&mut rest); // EOF or a reset, and no response
        assert!(
            rest.is_empty(),
            "{concurrency}: answered a request it never got"
        );
        let log = log_of(&log);
        assert!(
            log.contains("in_flight_at_shutdown: 1, drained: 0, cut: 1"),
            "{concurrency}: {log}"
        );
        let _ = request.conn.get_ref().shutdown(Shutdown::Both);
    }
}

#[test]
fn a_prefork_reload_lets_the_request_in_flight_finish() {
    let (mut server, log) = http_hello("prefork", 20_000);
    let request = request_in_flight(&server);
    signal(&server, Signal::SIGHUP);
    // The replacement worker serves new connections while the old one finishes its request.
    assert!(
        eventually(TIMEOUT, || log_of(&log)
            .contains("reload: retiring 1 worker(s)")),
        "no reload: {}",
        log_of(&log)
    );
    let fresh = http_keep_alive_client(&server);
    request.finish("prefork reload");
    drop(fresh);
    assert_eq!(server.terminate().code(), Some(0));
    assert!(!log_of(&log).contains("Interrupted"), "{}", log_of(&log));
}
