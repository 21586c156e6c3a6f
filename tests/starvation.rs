//! When every worker is held by a connection and more wait, the server says so — once, and again
//! only when it gets worse — instead of locking clients out without a word (Pool and PreFork, whose
//! connections each hold a worker until they close). The echo example, in its own process.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;

use util::{ServerProc, TIMEOUT, connect, eventually};

fn echo(args: &[&str]) -> (ServerProc, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(util::example_bin("echo"));
    cmd.args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(log.reopen().unwrap());
    (ServerProc::start(cmd), log)
}

fn warnings(log: &tempfile::NamedTempFile) -> usize {
    std::fs::read_to_string(log.path())
        .unwrap()
        .matches("have been busy for")
        .count()
}

/// A connection whose request is in a worker (its first byte echoed), then left idle.
fn hold(server: &ServerProc) -> TcpStream {
    let mut conn = connect(server.socket_addr());
    conn.write_all(b"x").unwrap();
    conn
}

#[test]
fn a_pool_whose_workers_are_all_held_says_so_once_and_again_when_it_worsens() {
    let (mut server, log) = echo(&["--concurrency", "pool", "--workers", "2"]);
    let mut held: Vec<TcpStream> = (0..3).map(|_| hold(&server)).collect();
    assert!(
        eventually(TIMEOUT, || warnings(&log) == 1),
        "no warning: {}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("all 2 workers have been busy"), "{text}");
    assert!(text.contains("1 accepted request(s)"), "{text}");
    assert!(
        text.contains("raise the pool's workers (Pool::new)"),
        "{text}"
    );
    // Twice as many waiting: said again.
    held.push(hold(&server));
    assert!(eventually(TIMEOUT, || warnings(&log) == 2));
    drop(held);
    assert!(eventually(TIMEOUT, || std::fs::read_to_string(log.path())
        .unwrap()
        .contains("workers are free again")));
    assert_eq!(warnings(&log), 2, "repeated while nothing changed");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn a_prefork_server_whose_workers_are_all_held_says_so() {
    let (mut server, log) = echo(&["--concurrency", "prefork", "--workers", "1"]);
    let first = hold(&server);
    let second = connect(server.socket_addr()); // waits in the listen backlog
    assert!(
        eventually(TIMEOUT, || warnings(&log) == 1),
        "no warning: {}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("all 1 workers have been busy"), "{text}");
    assert!(text.contains("connections have waited"), "{text}");
    assert!(text.contains("PreFork::new"), "{text}");
    drop((first, second));
    assert_eq!(server.terminate().code(), Some(0));
}
